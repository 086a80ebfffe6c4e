//! The watch over one client connection: a single timer for all of its limits (age, inactivity,
//! keep-alive, slow request heads, unread responses), the shutdown signal, and the eviction of the
//! replica its request is on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tideway_config::ProxySettings;
use tideway_core::{CloseReason, Policy, TimeoutVerdict, Timestamp};
use tokio::time::Sleep;
use tracing::debug;

use crate::Shared;
use crate::broadcast::{Broadcast, Subscription};
use crate::client::ClientConn;

pin_project! {
    /// Tells a connection when to start closing gracefully and when to drop it.
    pub(crate) struct Watch {
        #[pin]
        timer: Sleep,
        #[pin]
        shutdown: Subscription,
        // The eviction signal of the replica the request in flight is on (see `ClientConn::serving_on`),
        // subscribed to once it is due (boxed: rare, and a connection between requests should not carry its room).
        eviction: Option<Pin<Box<Subscription>>>,
        replica: Option<(Arc<Broadcast>, Timestamp)>,
        replica_changes: u64,
        client: Arc<ClientConn>,
        shared: Arc<Shared>,
        // The listener settings in force when the connection was accepted: they apply to it for its
        // life, and reading them here spares a load of the shared settings on every poll.
        settings: Arc<ProxySettings>,
        // Set once the connection is closing: past it, the connection is dropped whatever its state.
        hard_deadline: Option<Timestamp>,
    }
}

/// What the watch asks of its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alarm {
    /// Start closing gracefully: HTTP/1.1 sends `Connection: close` with the response in flight, HTTP/2
    /// sends GOAWAY. Raised once.
    Close,
    /// Drop the connection now: a limit that allows no grace (slow head, unread response), or the grace of
    /// a graceful close ran out.
    Cut,
}

impl Watch {
    /// A watch over `client`, in force from now.
    pub(crate) fn new(shared: &Arc<Shared>, client: &Arc<ClientConn>) -> Self {
        let now = shared.clock.now();
        Watch {
            timer: tokio::time::sleep_until(shared.clock.instant(now)),
            shutdown: shared.draining.subscribe(),
            eviction: None,
            replica: None,
            replica_changes: 0,
            client: Arc::clone(client),
            shared: Arc::clone(shared),
            settings: shared.settings.load_full(),
            hard_deadline: None,
        }
    }

    /// Counts a cut that ends a request in flight: unless tideway was closing the connection anyway (and
    /// counted that), it is the client's doing — it stopped reading.
    pub(crate) fn count_cut(&self) {
        if !self.client.is_closing()
            && self.client.in_flight() > 0
            && let Some(app) = self.client.app()
        {
            app.stats().record_close(CloseReason::Client);
        }
    }

    /// Checks the limits; registers the task to be woken when the next one is due.
    pub(crate) fn poll_alarm(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Alarm> {
        let mut this = self.project();
        let clock = this.shared.clock;
        if let Some(replica) = this.client.serving_on_since(this.replica_changes) {
            *this.replica = replica;
            *this.eviction = None;
        }
        loop {
            let now = clock.now();
            if this.hard_deadline.is_none() {
                let closing = if this.shutdown.as_mut().poll(cx).is_ready() {
                    Some((CloseReason::Drain, policy_of(this.client).drain_timeout))
                } else if evicted(this.replica, this.eviction, cx) {
                    Some((CloseReason::Drain, policy_of(this.client).close_grace))
                } else {
                    None
                };
                if let Some((reason, grace)) = closing {
                    begin_close(this.client, reason);
                    *this.hard_deadline = Some(now.saturating_add(grace));
                    return Poll::Ready(Alarm::Close);
                }
            }
            let mut subscribe_at = None;
            if let Some((signal, at)) = this.replica.as_ref()
                && this.eviction.is_none()
            {
                if *at <= now {
                    *this.eviction = Some(Box::pin(signal.subscribe()));
                    continue;
                }
                subscribe_at = Some(*at);
            }
            let due = match *this.hard_deadline {
                Some(deadline) => deadline,
                None => {
                    match this
                        .client
                        .timeouts(this.settings)
                        .evaluate(&this.client.times(), now)
                    {
                        // The exchange in flight is polled before the watch: a check that is due has been made.
                        TimeoutVerdict::Open { next } => match next
                            .into_iter()
                            .chain(subscribe_at)
                            .chain(this.client.check_due().filter(|at| *at > now))
                            .min()
                        {
                            Some(due) => due,
                            None => return Poll::Pending,
                        },
                        TimeoutVerdict::Abort => {
                            debug!(peer = %this.client.peer(), "request head too slow, or response not read: dropped");
                            return Poll::Ready(Alarm::Cut);
                        }
                        TimeoutVerdict::Close(reason) => {
                            begin_close(this.client, reason);
                            *this.hard_deadline =
                                Some(now.saturating_add(policy_of(this.client).close_grace));
                            return Poll::Ready(Alarm::Close);
                        }
                    }
                }
            };
            if due <= now {
                return Poll::Ready(Alarm::Cut);
            }
            // Arm lazily: activity only ever moves deadlines later, so a timer armed too early fires once,
            // finds nothing due and is re-armed; re-arming on every byte would cost far more.
            let at = clock.instant(due);
            let armed = this.timer.deadline();
            if at < armed || armed <= clock.instant(now) {
                this.timer.as_mut().reset(at);
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// The policy of the app the connection last talked to, or the defaults.
fn policy_of(client: &ClientConn) -> Arc<Policy> {
    client.app().map_or_else(Arc::default, |app| app.policy())
}

/// Whether the replica the request in flight is on was evicted.
fn evicted(
    replica: &Option<(Arc<Broadcast>, Timestamp)>,
    subscription: &mut Option<Pin<Box<Subscription>>>,
    cx: &mut Context<'_>,
) -> bool {
    let Some((signal, _)) = replica else {
        return false;
    };
    signal.is_raised()
        || subscription
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
}

/// Marks `client` closing and counts the close against its app — only if requests are in flight: a
/// keep-alive connection between requests holds no connection in the sense tideway counts.
fn begin_close(client: &ClientConn, reason: CloseReason) {
    client.mark_closing();
    if client.in_flight() > 0
        && let Some(app) = client.app()
    {
        app.stats().record_close(reason);
    }
    debug!(peer = %client.peer(), reason = reason.as_str(), "closing client connection");
}
