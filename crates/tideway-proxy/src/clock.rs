//! The runtime's monotonic clock, as the timestamps core logic works with.

use std::time::Duration;

use tideway_core::{Clock, Timestamp};
use tokio::time::Instant;

/// Converts between tokio's clock and core [`Timestamp`]s.
///
/// Built on `tokio::time::Instant` so that tests with paused time drive every timeout deterministically.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeClock {
    epoch: Instant,
}

impl RuntimeClock {
    /// A clock whose epoch is now. Create one per process and share it: timestamps from different clocks
    /// do not compare.
    pub fn new() -> Self {
        RuntimeClock {
            epoch: Instant::now(),
        }
    }

    /// The tokio instant of a timestamp, to arm a timer for it (a timestamp past what the clock can
    /// hold is read as far in the future).
    pub fn instant(&self, at: Timestamp) -> Instant {
        later(self.epoch, Duration::from_millis(at.as_millis()))
    }

    /// The timestamp of a tokio instant (the epoch, for one before it).
    pub fn timestamp(&self, at: Instant) -> Timestamp {
        let millis = at.saturating_duration_since(self.epoch).as_millis();
        Timestamp::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    /// Now, as a timestamp.
    pub fn now(&self) -> Timestamp {
        let millis = self.epoch.elapsed().as_millis();
        Timestamp::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
    }
}

impl Default for RuntimeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for RuntimeClock {
    fn now(&self) -> Timestamp {
        RuntimeClock::now(self)
    }
}

/// How far off "never" is, for instants past what the clock can hold.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `at + by`, saturating at far in the future instead of overflowing.
pub(crate) fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .or_else(|| at.checked_add(FAR_FUTURE))
        .unwrap_or(at)
}
