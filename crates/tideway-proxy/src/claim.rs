//! What a proxied connection holds on its replica (`docs/glossary.md`, "claim"): a seat of its own, or a
//! share of its session's.

use std::sync::Arc;

use tideway_core::{App, Replica, Seat, Share};

/// A connection's claim on its replica, released when dropped.
#[derive(Debug)]
pub(crate) enum Claim {
    /// A connection counted on its own.
    Own(Seat),
    /// A connection of a cookie-affinity session, which counts once for all its connections.
    Share(Share),
}

impl Claim {
    /// The replica the connection goes to.
    pub(crate) fn replica(&self) -> &Arc<Replica> {
        match self {
            Claim::Own(seat) => seat.replica(),
            Claim::Share(share) => share.replica(),
        }
    }

    /// The app the connection belongs to.
    pub(crate) fn app(&self) -> &Arc<App> {
        match self {
            Claim::Own(seat) => seat.app(),
            Claim::Share(share) => share.app(),
        }
    }

    /// The same claim moved onto `other`'s replica, for a connection whose replica failed it before
    /// anything was sent; the old seat is given back.
    pub(crate) fn move_to(self, other: Seat) -> Claim {
        match self {
            Claim::Own(_) => Claim::Own(other),
            Claim::Share(share) => Claim::Share(share.move_to(other)),
        }
    }
}
