//! When a connection must close: `max_connection_age`, `inactive_timeout`, the keep-alive limit and the
//! slow-header limit, decided from timestamps alone so the rules are testable without a runtime.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::close::CloseReason;

/// The limits that apply to one client connection or one tunnel; `None` turns a limit off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// Age limit, already jittered (see [`jittered_age`]).
    pub max_age: Option<Duration>,
    /// Longest time without application data in either direction.
    pub inactive: Option<Duration>,
    /// Longest time an HTTP client connection may sit with no request in flight.
    pub keepalive: Option<Duration>,
    /// Longest time from the first byte of an HTTP/1 request head to its end.
    pub header_read: Option<Duration>,
    /// Longest time the client may leave bytes unread that tideway is trying to send it.
    pub send: Option<Duration>,
}

/// What a connection's clock reads: when it started and when things last happened on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionTimes {
    /// Accept (HTTP) or upgrade (tunnel): where the age counts from.
    pub started: Timestamp,
    /// Last application data in either direction.
    pub last_activity: Timestamp,
    /// When the last request in flight ended; `None` while a request is in flight.
    pub kept_alive_since: Option<Timestamp>,
    /// When the first byte of a request head not yet complete arrived.
    pub head_started: Option<Timestamp>,
    /// Since when a write to the client has been waiting for its socket to take bytes.
    pub write_blocked_since: Option<Timestamp>,
}

/// The outcome of looking at a connection's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutVerdict {
    /// Nothing is due; look again at `next` (`None`: nothing falls due unless the connection's state changes).
    Open {
        /// Earliest moment a limit can fall due.
        next: Option<Timestamp>,
    },
    /// A limit was reached: start a graceful close, attributed to this reason.
    Close(CloseReason),
    /// A request head is arriving too slowly, or the client stopped reading: no graceful close can reach
    /// it, so drop the connection.
    Abort,
}

/// `max_age` moved by up to ±10%, so a crowd of connections opened together does not reconnect together.
///
/// `sample` is a uniform random number in `[0, 1)`; the caller supplies it to keep this function pure.
pub fn jittered_age(max_age: Duration, sample: f64) -> Duration {
    max_age.mul_f64(0.9 + 0.2 * sample.clamp(0.0, 1.0))
}

impl ConnectionTimeouts {
    /// Decides whether the connection must close at `now`, and if not, when to look again.
    ///
    /// When several limits are due at once, the slow-header and send limits win (a graceful close cannot
    /// reach such a client), then age, then inactivity; the keep-alive limit reports as `inactive`.
    pub fn evaluate(&self, times: &ConnectionTimes, now: Timestamp) -> TimeoutVerdict {
        let header_due = match (self.header_read, times.head_started) {
            (Some(limit), Some(started)) => Some(started.saturating_add(limit)),
            _ => None,
        };
        let send_due = match (self.send, times.write_blocked_since) {
            (Some(limit), Some(since)) => Some(since.saturating_add(limit)),
            _ => None,
        };
        let age_due = self.max_age.map(|limit| times.started.saturating_add(limit));
        let inactive_due = self
            .inactive
            .map(|limit| times.last_activity.saturating_add(limit));
        let keepalive_due = match (self.keepalive, times.kept_alive_since) {
            (Some(limit), Some(kept_alive_since)) => Some(kept_alive_since.saturating_add(limit)),
            _ => None,
        };

        if header_due.is_some_and(|due| due <= now) || send_due.is_some_and(|due| due <= now) {
            return TimeoutVerdict::Abort;
        }
        if age_due.is_some_and(|due| due <= now) {
            return TimeoutVerdict::Close(CloseReason::MaxAge);
        }
        if inactive_due.is_some_and(|due| due <= now) || keepalive_due.is_some_and(|due| due <= now) {
            return TimeoutVerdict::Close(CloseReason::Inactive);
        }
        let next = [header_due, send_due, age_due, inactive_due, keepalive_due]
            .into_iter()
            .flatten()
            .min();
        TimeoutVerdict::Open { next }
    }
}

#[cfg(test)]
mod tests;
