//! Stalls: the waits a peer may not stretch for ever (`body_read_timeout`, `response_timeout`). A body's
//! timer is armed only while it waits on its peer, so a flowing body never touches the timer wheel; how
//! long a replica has kept an exchange waiting is noted with each move and checked when a timer fires.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::clock::later;

/// The body of a `408`: the client paused its request body past `body_read_timeout`.
pub(crate) const BODY_STALLED: &str = "the request body stalled\n";
/// The body of a `504`: the replica kept the request waiting past `response_timeout`.
pub(crate) const RESPONSE_STALLED: &str = "the replica did not answer in time\n";

/// Fires once a peer has been waited on for `limit` without delivering.
pub(crate) struct StallTimer {
    limit: Duration,
    /// Allocated on the first wait only; kept for the next.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl StallTimer {
    /// A timer for waits of at most `limit`.
    pub(crate) fn new(limit: Duration) -> Self {
        StallTimer {
            limit,
            sleep: None,
            armed: false,
        }
    }

    /// Called when the peer has nothing yet: starts the wait if it is not running, and tells whether it
    /// has run out (else `cx` is woken when it would).
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let deadline = later(Instant::now(), self.limit);
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        self.sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }

    /// The peer delivered: the next wait starts afresh. Returns whether a wait was running.
    pub(crate) fn disarm(&mut self) -> bool {
        std::mem::replace(&mut self.armed, false)
    }
}

/// How long a replica has kept an exchange waiting, for `response_timeout`: the time since it last took
/// request bytes or sent response bytes, not counting time spent waiting on the client (for more of its
/// body, or to take the response), which the client's own timeouts govern.
///
/// Both relays of one exchange note their moves here with a clock reading and an uncontended store; the
/// timer that checks it moves only when it fires.
pub(crate) struct ReplicaWait {
    started: Instant,
    /// When the replica last moved the exchange on, or last stopped being waited on: nanoseconds since
    /// `started`.
    moved: AtomicU64,
    /// How many relays are waiting on the client right now.
    on_client: AtomicU8,
}

/// Held while a relay waits on the client: that time is the client's.
pub(crate) struct OnClient<'a>(&'a ReplicaWait);

impl ReplicaWait {
    /// The wait of an exchange whose request is being sent now.
    pub(crate) fn new() -> Self {
        ReplicaWait {
            started: Instant::now(),
            moved: AtomicU64::new(0),
            on_client: AtomicU8::new(0),
        }
    }

    /// The replica moved the exchange on.
    pub(crate) fn moved(&self) {
        let since = Instant::now().saturating_duration_since(self.started);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        self.moved.store(nanos, Ordering::Relaxed);
    }

    /// Marks a wait on the client until the guard drops.
    pub(crate) fn on_client(&self) -> OnClient<'_> {
        self.client_wait_started();
        OnClient(self)
    }

    /// A wait on the client began (for waits that span polls, where a guard cannot be held).
    pub(crate) fn client_wait_started(&self) {
        self.on_client.fetch_add(1, Ordering::Relaxed);
    }

    /// A wait begun with [`ReplicaWait::client_wait_started`] ended.
    pub(crate) fn client_wait_ended(&self) {
        self.on_client.fetch_sub(1, Ordering::Relaxed);
        self.moved();
    }

    /// When the replica will have kept the exchange waiting for `limit`, if it keeps still from now on —
    /// or `None` if it already has.
    pub(crate) fn deadline(&self, limit: Duration) -> Option<Instant> {
        if self.on_client.load(Ordering::Relaxed) > 0 {
            self.moved();
        }
        let moved = Duration::from_nanos(self.moved.load(Ordering::Relaxed));
        let deadline = later(self.started, moved.saturating_add(limit));
        (deadline > Instant::now()).then_some(deadline)
    }

    /// Whether the replica has kept the exchange waiting for `limit`; else `timer` is set to fire when it
    /// would have, and `cx` is woken then.
    pub(crate) fn stalled(&self, limit: Duration, mut timer: Pin<&mut Sleep>, cx: &mut Context<'_>) -> bool {
        while timer.as_mut().poll(cx).is_ready() {
            let Some(deadline) = self.deadline(limit) else {
                return true;
            };
            timer.as_mut().reset(deadline);
        }
        false
    }
}

impl Drop for OnClient<'_> {
    fn drop(&mut self) {
        self.0.client_wait_ended();
    }
}

/// Why a replica's response body could not be passed on to an HTTP/2 client, which sees its stream reset.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The replica closed the connection mid-body, or broke its framing.
    Replica,
    /// The replica paused past `response_timeout`.
    Stalled,
    /// The client paused its request body, still going up, past `body_read_timeout`.
    RequestStalled,
    /// The client's request body, still going up, failed.
    RequestFailed,
    /// The replica's drain ran out of time while the body was still coming.
    Evicted,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyError::Replica => "the replica failed mid-body",
            BodyError::Stalled => "the replica paused past response_timeout",
            BodyError::RequestStalled => "the request body paused past body_read_timeout",
            BodyError::RequestFailed => "the request body failed",
            BodyError::Evicted => "the replica's drain ran out of time",
        })
    }
}

impl std::error::Error for BodyError {}
