//! HTTP/1.1 messages (RFC 9112) as tideway's engine reads and writes them: heads parsed in place and
//! rewritten for the next hop, bodies followed through their framing. Both sides of the engine speak it —
//! the HTTP/1.1 client connections and every request to a replica, whichever protocol its client spoke.

pub(crate) mod framing;
pub(crate) mod head;
