//! The pure heart of tideway: what a connection costs, where it may go, when it must close, and how many
//! replicas an app needs. Nothing here performs I/O or reads a clock; time is passed in (see [`Clock`]) so
//! every rule can be tested exhaustively and deterministically.
//!
//! `docs/architecture.md` shows where each decision is taken and who acts on it.

mod affinity;
mod app;
mod balance;
mod clock;
mod close;
mod deadline;
mod headroom;
mod policy;
mod recent;
mod replica;
mod scaling;
mod signal;
#[cfg(test)]
mod testing;

pub use affinity::{
    Affinity, GaveUp, JoinSession, Placement, SessionCounts, SessionGrant, SessionId, SessionQueue,
    SessionQueueFull, SessionWaiter, Share,
};
pub use app::admission::{Admission, Entry, QueueFull, Seat, Waiter};
pub use app::{App, AppId, AppStats};
pub use balance::{Balance, NoSeat};
pub use clock::{Clock, ManualClock, Timestamp};
pub use close::{CloseReason, RejectReason};
pub use deadline::{ConnectionTimeouts, ConnectionTimes, TimeoutVerdict, jittered_age};
pub use headroom::{ArrivalRate, Headroom};
pub use policy::{Policy, PolicyProblem, SpawnThreshold};
pub use recent::RECENT_MINUTES;
pub use replica::{Replica, ReplicaId, ReplicaState, UNLIMITED};
pub use scaling::{
    Decision, Direction, Observation, ReplicaView, ScaleReason, Scaler, WindowCount, replicas_needed,
};
pub use signal::Signal;
