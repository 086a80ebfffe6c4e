//! Faults the test cluster's API server can be told to show, as real ones do: an outage (connections
//! refused), error answers with `Retry-After`, a conflict on the next write, watches that stall without
//! closing.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use http::StatusCode;
use tokio::sync::watch;

/// The faults in force.
pub(crate) struct Faults {
    /// How many of the next requests get `failure_status`.
    failures: AtomicU32,
    failure_status: AtomicU32,
    retry_after: AtomicU64,
    conflict_next_write: AtomicBool,
    stalled: watch::Sender<bool>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            failures: AtomicU32::new(0),
            failure_status: AtomicU32::new(500),
            retry_after: AtomicU64::new(1),
            conflict_next_write: AtomicBool::new(false),
            stalled: watch::channel(false).0,
        }
    }
}

impl Faults {
    /// The next `count` requests are answered `status` (500, 503, 429…) with `Retry-After: seconds`.
    pub(crate) fn fail_next(&self, count: u32, status: StatusCode, seconds: u64) {
        self.failure_status
            .store(u32::from(status.as_u16()), Ordering::SeqCst);
        self.retry_after.store(seconds, Ordering::SeqCst);
        self.failures.store(count, Ordering::SeqCst);
    }

    /// The error this request gets, if one is due: its status and `Retry-After`.
    pub(crate) fn take_failure(&self) -> Option<(StatusCode, u64)> {
        self.failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()?;
        let status = u16::try_from(self.failure_status.load(Ordering::SeqCst)).ok()?;
        Some((
            StatusCode::from_u16(status).ok()?,
            self.retry_after.load(Ordering::SeqCst),
        ))
    }

    /// The next write (PUT or PATCH) gets `409 Conflict`, as when another writer got there first.
    pub(crate) fn conflict_next_write(&self) {
        self.conflict_next_write.store(true, Ordering::SeqCst);
    }

    /// Whether this write is the one to conflict.
    pub(crate) fn take_conflict(&self) -> bool {
        self.conflict_next_write.swap(false, Ordering::SeqCst)
    }

    /// Open and new watches send nothing (and do not close) while `stalled`.
    pub(crate) fn stall_watches(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// The stall switch, for a watch to wait on.
    pub(crate) fn stall(&self) -> watch::Receiver<bool> {
        self.stalled.subscribe()
    }
}
