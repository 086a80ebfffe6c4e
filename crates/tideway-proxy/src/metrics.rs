//! The data plane's metrics. They are registered on the registry the proxy is given (never a global one),
//! and each app's handles are resolved once and kept with the app, so a request records its metrics with
//! a few atomic additions and no lookup.

use std::time::Duration;

use http::StatusCode;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::tls::CertificateTable;

/// Bucket bounds (seconds) that fit millisecond requests and hour-long sessions alike.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 14400.0,
];

/// The `status` label values, by the first digit of the status code.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Request and connection metrics of the data plane.
pub struct ProxyMetrics {
    requests: IntCounterVec,
    unrouted: IntCounter,
    request_duration: HistogramVec,
    queue_wait: HistogramVec,
    tunnel_duration: HistogramVec,
    tls_handshakes: IntCounterVec,
    tls_certificate_expiry: IntGaugeVec,
    trace_lines_dropped: IntCounter,
}

/// The `outcome` label values of `tideway_tls_handshakes_total`.
pub(crate) const HANDSHAKE_OUTCOMES: [&str; 3] = ["complete", "failed", "timeout"];

/// One app's handles on the proxy metrics, resolved once.
pub(crate) struct AppMetrics {
    requests: [IntCounter; 5],
    request_duration: Histogram,
    queue_wait: Histogram,
    tunnel_duration: Histogram,
}

impl ProxyMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let histogram = |name: &str, help: &str| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
                &["app"],
            )
        };
        let metrics = ProxyMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "tideway_requests_total",
                    "Requests answered, by app and status class.",
                ),
                &["app", "status"],
            )?,
            unrouted: IntCounter::new(
                "tideway_unrouted_requests_total",
                "Requests that matched no app (answered 404), or that tideway refused before routing (400, 405).",
            )?,
            request_duration: histogram(
                "tideway_request_duration_seconds",
                "Time from a request's arrival to the end of its response body.",
            )?,
            queue_wait: histogram(
                "tideway_queue_wait_seconds",
                "Time connections waited for a seat, whether they got one or not.",
            )?,
            tunnel_duration: histogram(
                "tideway_tunnel_duration_seconds",
                "Lifetime of upgraded connections (WebSocket and other tunnels), from the upgrade to the close.",
            )?,
            tls_handshakes: IntCounterVec::new(
                Opts::new(
                    "tideway_tls_handshakes_total",
                    "TLS handshakes on the HTTPS listener, by outcome: complete, failed (refused or broken), timeout.",
                ),
                &["outcome"],
            )?,
            tls_certificate_expiry: IntGaugeVec::new(
                Opts::new(
                    "tideway_tls_certificate_expiry_seconds",
                    "When each certificate in force expires (its notAfter), in seconds since the Unix epoch.",
                ),
                &["certificate"],
            )?,
            trace_lines_dropped: IntCounter::new(
                "tideway_trace_lines_dropped_total",
                "Connection trace lines (trace_log) dropped because the writer fell behind.",
            )?,
        };
        for outcome in HANDSHAKE_OUTCOMES {
            metrics.tls_handshakes.with_label_values(&[outcome]);
        }
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.unrouted.clone()))?;
        registry.register(Box::new(metrics.request_duration.clone()))?;
        registry.register(Box::new(metrics.queue_wait.clone()))?;
        registry.register(Box::new(metrics.tunnel_duration.clone()))?;
        registry.register(Box::new(metrics.tls_handshakes.clone()))?;
        registry.register(Box::new(metrics.tls_certificate_expiry.clone()))?;
        registry.register(Box::new(metrics.trace_lines_dropped.clone()))?;
        Ok(metrics)
    }

    /// Removes the series of an app that left the configuration, so dashboards stop showing it.
    pub fn forget_app(&self, app: &str) {
        for class in STATUS_CLASSES {
            // A series that was never created is not an error worth reporting.
            let _ = self.requests.remove_label_values(&[app, class]);
        }
        for vec in [&self.request_duration, &self.queue_wait, &self.tunnel_duration] {
            let _ = vec.remove_label_values(&[app]);
        }
    }

    /// The counter of trace lines dropped, for the trace log's writer.
    pub fn trace_lines_dropped(&self) -> IntCounter {
        self.trace_lines_dropped.clone()
    }

    /// Counts a TLS handshake that ended with `outcome` (one of [`HANDSHAKE_OUTCOMES`]).
    pub(crate) fn tls_handshake(&self, outcome: &str) {
        self.tls_handshakes.with_label_values(&[outcome]).inc();
    }

    /// Shows the expiry of each certificate of `table`, and of no other.
    pub(crate) fn set_certificates(&self, table: &CertificateTable) {
        self.tls_certificate_expiry.reset();
        for (certificate, _) in table.certificates() {
            self.tls_certificate_expiry
                .with_label_values(&[certificate.source()])
                .set(certificate.not_after());
        }
    }

    pub(crate) fn unrouted(&self) {
        self.unrouted.inc();
    }

    pub(crate) fn for_app(&self, app: &str) -> AppMetrics {
        AppMetrics {
            requests: STATUS_CLASSES.map(|class| self.requests.with_label_values(&[app, class])),
            request_duration: self.request_duration.with_label_values(&[app]),
            queue_wait: self.queue_wait.with_label_values(&[app]),
            tunnel_duration: self.tunnel_duration.with_label_values(&[app]),
        }
    }
}

impl AppMetrics {
    pub(crate) fn request(&self, status: StatusCode, duration: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.request_duration.observe(duration.as_secs_f64());
    }

    pub(crate) fn queue_wait(&self, duration: Duration) {
        self.queue_wait.observe(duration.as_secs_f64());
    }

    pub(crate) fn tunnel(&self, duration: Duration) {
        self.tunnel_duration.observe(duration.as_secs_f64());
    }
}
