//! One request's record: opened when the request arrives, completed exactly once when its response ends,
//! into the request metrics and the access log.

use std::sync::Arc;

use http::{Method, StatusCode, Uri};
use tideway_core::{App, Replica};
use tokio::time::Instant;
use tracing::info;

use crate::app_link::AppLink;
use crate::client::InFlight;
use crate::metrics::ProxyMetrics;

/// A request on its way through the proxy: also keeps its client connection's "request in flight" mark.
pub(crate) struct Exchange {
    _in_flight: InFlight,
    started: Instant,
    method: Method,
    uri: Uri,
    app: Option<Arc<App>>,
    status: StatusCode,
    bytes: u64,
    metrics: Arc<ProxyMetrics>,
    access_log: bool,
}

/// How a response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its body was sent whole.
    Complete,
    /// The client stopped reading or went away first.
    ClientGone,
    /// The replica failed mid-body.
    UpstreamFailed,
}

impl Exchange {
    /// Opens the record of a request for `uri` routed to `app` (if it was).
    pub(crate) fn open(
        in_flight: InFlight,
        method: Method,
        uri: Uri,
        app: Option<Arc<App>>,
        metrics: Arc<ProxyMetrics>,
        access_log: bool,
    ) -> Self {
        Exchange {
            _in_flight: in_flight,
            started: Instant::now(),
            method,
            uri,
            app,
            status: StatusCode::OK,
            bytes: 0,
            metrics,
            access_log,
        }
    }

    /// Records the status of the response being sent.
    pub(crate) fn responded(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Counts response body bytes passed to the client.
    pub(crate) fn count(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// Completes the record: the request's metrics and its access-log line.
    pub(crate) fn finish(self, replica: Option<&Replica>, outcome: Outcome) {
        let duration = self.started.elapsed();
        match self.app.as_deref().and_then(AppLink::existing) {
            Some(link) => link.metrics.request(self.status, duration),
            None => self.metrics.unrouted(),
        }
        if self.access_log {
            info!(
                target: "tideway::access",
                app = self.app.as_deref().map_or("", App::name),
                replica = replica.map_or("", Replica::name),
                method = %self.method,
                path = self.uri.path(),
                status = self.status.as_u16(),
                duration_ms = duration.as_secs_f64() * 1_000.0,
                bytes = self.bytes,
                outcome = outcome.as_str(),
                "request"
            );
        }
    }
}

impl Outcome {
    /// The value in the access log.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ClientGone => "client_gone",
            Outcome::UpstreamFailed => "upstream_failed",
        }
    }
}
