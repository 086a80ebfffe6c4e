//! Time as a value. Core logic never reads a clock itself: the runtime injects one, tests use [`ManualClock`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A point on the process's monotonic clock, in milliseconds since the clock's epoch.
///
/// Milliseconds are fine enough for every timeout tideway enforces and small enough to live in an
/// `AtomicU64`, which is how per-connection and per-replica times are shared without locks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's epoch.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `millis` after the epoch, as stored in atomics.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the epoch, for storing in atomics.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The instant `d` later, saturating instead of overflowing so "never" can be expressed with huge durations.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Where core logic gets "now" from when it cannot be handed a timestamp (a guard dropped in a destructor).
pub trait Clock: Send + Sync + 'static {
    /// The current time on the monotonic clock.
    fn now(&self) -> Timestamp;
}

/// A clock that only moves when told to: deterministic tests of time-based rules.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock(AtomicU64::new(start.as_millis()))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}
