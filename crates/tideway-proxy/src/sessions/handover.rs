//! Sessions another instance may hold (`docs/glossary.md`, "handover"): with several instances, a client
//! whose cookie names a session unknown here may have left it, vacant in its reconnect grace, at the
//! instance it reached before. That instance is asked to give it up, so that its seat moves here.

use futures::future::BoxFuture;
use tideway_core::{GaveUp, SessionId};

/// The other instances, as the data plane asks them for a session (the cluster, wired in by the binary).
pub trait SessionHolders: Send + Sync {
    /// Asks the other instances to give up session `id` of `app`, which a client just brought here:
    /// what the one that held it did.
    fn hand_over<'a>(&'a self, app: &'a str, id: SessionId) -> BoxFuture<'a, GaveUp>;
}
