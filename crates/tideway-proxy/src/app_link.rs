//! What the data plane keeps per app: its metric handles and whether its session-expiry task runs.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics::AppMetrics;

/// The data plane's per-app state, kept in [`crate::links::Links`] from the app's first request on.
pub(crate) struct AppLink {
    /// The app's metric handles.
    pub(crate) metrics: AppMetrics,
    expiry_started: AtomicBool,
}

impl AppLink {
    /// The state of an app that has had no request yet, recording into `metrics`.
    pub(crate) fn new(metrics: AppMetrics) -> Self {
        AppLink {
            metrics,
            expiry_started: AtomicBool::new(false),
        }
    }

    /// True the first time it is called: the caller starts the app's session-expiry task.
    pub(crate) fn claim_session_expiry(&self) -> bool {
        !self.expiry_started.swap(true, Ordering::AcqRel)
    }
}
