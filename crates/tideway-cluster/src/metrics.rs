//! The cluster's metrics: which peers are live, how stale their counts are, what fails.

use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::view::PeerView;

/// The metrics of `[cluster]`, registered on the registry they are given.
pub struct ClusterMetrics {
    up: IntGaugeVec,
    age: GaugeVec,
    received: IntCounterVec,
    send_failures: IntCounterVec,
    live: IntGauge,
}

impl ClusterMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = ClusterMetrics {
            up: IntGaugeVec::new(
                Opts::new(
                    "tideway_peer_up",
                    "1 while the peer's last report is within peer_timeout, else 0.",
                ),
                &["peer"],
            )?,
            age: GaugeVec::new(
                Opts::new(
                    "tideway_peer_report_age_seconds",
                    "How long ago the peer's last report came: how stale its counts are.",
                ),
                &["peer"],
            )?,
            received: IntCounterVec::new(
                Opts::new(
                    "tideway_peer_reports_received_total",
                    "Reports received from the peer.",
                ),
                &["peer"],
            )?,
            send_failures: IntCounterVec::new(
                Opts::new(
                    "tideway_peer_send_failures_total",
                    "Reports that could not be sent to a peer's address.",
                ),
                &["address"],
            )?,
            live: IntGauge::new("tideway_peers", "Peers whose last report is within peer_timeout.")?,
        };
        registry.register(Box::new(metrics.up.clone()))?;
        registry.register(Box::new(metrics.age.clone()))?;
        registry.register(Box::new(metrics.received.clone()))?;
        registry.register(Box::new(metrics.send_failures.clone()))?;
        registry.register(Box::new(metrics.live.clone()))?;
        Ok(metrics)
    }

    pub(crate) fn received(&self, peer: &str) {
        self.received.with_label_values(&[peer]).inc();
        self.up.with_label_values(&[peer]).set(1);
    }

    pub(crate) fn gone(&self, peer: &str) {
        self.up.with_label_values(&[peer]).set(0);
    }

    pub(crate) fn ages(&self, live: &[PeerView]) {
        for peer in live {
            self.age
                .with_label_values(&[&peer.instance])
                .set(peer.report_age_seconds);
        }
        self.live.set(i64::try_from(live.len()).unwrap_or(i64::MAX));
    }

    /// Shows the peer at `address` with no send failure yet, so its series exists (at 0) before any.
    pub(crate) fn sending_to(&self, address: &str) {
        self.send_failures.with_label_values(&[address]);
    }

    pub(crate) fn send_failed(&self, address: &str) {
        self.send_failures.with_label_values(&[address]).inc();
    }
}
