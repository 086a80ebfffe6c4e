//! What the data plane keeps per app, hung on the app itself: its metric handles and whether its
//! session-expiry task runs.

use std::sync::atomic::{AtomicBool, Ordering};

use tideway_core::App;

use crate::metrics::{AppMetrics, ProxyMetrics};

/// The data plane's per-app state, created on first use and dropped with the app.
pub(crate) struct AppLink {
    /// The app's metric handles.
    pub(crate) metrics: AppMetrics,
    expiry_started: AtomicBool,
}

impl AppLink {
    /// The link of `app`, created with handles on `metrics` if this is the first request for it.
    pub(crate) fn of<'a>(app: &'a App, metrics: &ProxyMetrics) -> Option<&'a AppLink> {
        app.attachment(|| AppLink {
            metrics: metrics.for_app(app.name()),
            expiry_started: AtomicBool::new(false),
        })
    }

    /// The link of `app`, if a request ever reached it.
    pub(crate) fn existing(app: &App) -> Option<&AppLink> {
        app.existing_attachment()
    }

    /// True the first time it is called: the caller starts the app's session-expiry task.
    pub(crate) fn claim_session_expiry(&self) -> bool {
        !self.expiry_started.swap(true, Ordering::AcqRel)
    }
}
