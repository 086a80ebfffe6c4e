//! Waiting for a seat: the async side of the core's admission queue.

use std::sync::Arc;
use std::time::Duration;

use tideway_core::{
    App, QueueFull, RejectReason, Seat, SessionGrant, SessionQueue, SessionQueueFull, SessionWaiter, Waiter,
};
use tokio::sync::oneshot;

/// A queued connection, reachable through a one-shot channel; it is abandoned once the receiving side
/// (the waiting request) is gone, whether it timed out or its client disconnected.
struct ChannelWaiter(oneshot::Sender<Seat>);

impl Waiter for ChannelWaiter {
    fn is_abandoned(&self) -> bool {
        self.0.is_closed()
    }

    fn offer(self: Box<Self>, seat: Seat) -> Result<(), Seat> {
        self.0.send(seat)
    }
}

/// A connection waiting in its session's queue, reachable the same way.
struct SessionChannelWaiter(oneshot::Sender<SessionGrant>);

impl SessionWaiter for SessionChannelWaiter {
    fn is_abandoned(&self) -> bool {
        self.0.is_closed()
    }

    fn offer(self: Box<Self>, grant: SessionGrant) -> Result<(), SessionGrant> {
        self.0.send(grant)
    }
}

/// Sweeps the queue when a wait ends, so that a waiter that gave up — timed out, or dropped because its
/// client left — is not counted as waiting a moment longer.
struct SweepOnDrop<'a>(&'a App);

/// Waits in `app`'s FIFO queue for up to `timeout` until a seat frees up; a timeout is reported as
/// `timed_out` (the queue timeout, or the startup timeout of a cold start).
pub(crate) async fn wait_for_seat(
    app: &Arc<App>,
    timeout: Duration,
    timed_out: RejectReason,
) -> Result<Seat, RejectReason> {
    // Declared first so it is dropped last, after the receiver: the waiter is abandoned by then.
    let _sweep = SweepOnDrop(app);
    let (offer, seat) = oneshot::channel();
    app.enqueue(Box::new(ChannelWaiter(offer)))
        .map_err(|QueueFull| RejectReason::QueueFull)?;
    match tokio::time::timeout(timeout, seat).await {
        Ok(Ok(seat)) => Ok(seat),
        // The app was dropped from the configuration while this connection waited.
        Ok(Err(_)) => Err(RejectReason::NoReplica),
        Err(_) => Err(timed_out),
    }
}

/// Waits in a session's own queue for up to `timeout` for a share of its seat (or for the duty of placing
/// it); refused as `session_limit` when that queue is full or the time runs out.
pub(crate) async fn wait_in_session(
    queue: SessionQueue,
    timeout: Duration,
) -> Result<SessionGrant, RejectReason> {
    let (offer, grant) = oneshot::channel();
    queue
        .enqueue(Box::new(SessionChannelWaiter(offer)))
        .map_err(|SessionQueueFull| RejectReason::SessionLimit)?;
    match tokio::time::timeout(timeout, grant).await {
        Ok(Ok(grant)) => Ok(grant),
        // The session was forgotten (its app left the configuration) while this connection waited.
        Ok(Err(_)) => Err(RejectReason::NoReplica),
        Err(_) => Err(RejectReason::SessionLimit),
    }
}

impl Drop for SweepOnDrop<'_> {
    fn drop(&mut self) {
        self.0.sweep_queue();
    }
}
