//! What a proxied connection holds on its replica: a seat of its own, or a share of its session's.

use std::sync::Arc;

use tideway_core::{App, ConnectionGuard, Replica, SessionSeat};

/// A connection's claim on its replica, released when dropped.
#[derive(Debug)]
pub(crate) enum Seat {
    /// A connection counted on its own.
    Own(ConnectionGuard),
    /// A connection of a cookie-affinity session, which counts once for all its connections.
    Session(SessionSeat),
}

impl Seat {
    /// The replica the connection goes to.
    pub(crate) fn replica(&self) -> &Arc<Replica> {
        match self {
            Seat::Own(seat) => seat.replica(),
            Seat::Session(seat) => seat.replica(),
        }
    }

    /// The app the connection belongs to.
    pub(crate) fn app(&self) -> &Arc<App> {
        match self {
            Seat::Own(seat) => seat.app(),
            Seat::Session(seat) => seat.app(),
        }
    }

    /// The same claim moved onto `other`'s replica, for a connection whose replica failed it before
    /// anything was sent; the old seat is given back.
    pub(crate) fn move_to(self, other: ConnectionGuard) -> Seat {
        match self {
            Seat::Own(_) => Seat::Own(other),
            Seat::Session(share) => Seat::Session(share.move_to(other)),
        }
    }
}
