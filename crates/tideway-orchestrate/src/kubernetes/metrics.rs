//! Kubernetes mode's own metrics: how the API server answers, how often watches start over, scale-downs
//! that took another pod than the drained one, and whether this instance leads.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// The metrics of Kubernetes mode, registered on the registry they are given.
pub struct KubernetesMetrics {
    api_errors: IntCounterVec,
    watch_restarts: IntCounterVec,
    mismatches: IntCounterVec,
    leader: IntGauge,
}

impl KubernetesMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = KubernetesMetrics {
            api_errors: IntCounterVec::new(
                Opts::new(
                    "tideway_kubernetes_api_errors_total",
                    "Requests to the Kubernetes API server that failed, by verb and resource.",
                ),
                &["verb", "resource"],
            )?,
            watch_restarts: IntCounterVec::new(
                Opts::new(
                    "tideway_kubernetes_watch_restarts_total",
                    "Watches of the Kubernetes API server that failed and started over, by resource.",
                ),
                &["resource"],
            )?,
            mismatches: IntCounterVec::new(
                Opts::new(
                    "tideway_scale_down_mismatches_total",
                    "Scale-downs after which another pod than the drained one went away.",
                ),
                &["app"],
            )?,
            leader: IntGauge::new(
                "tideway_leader",
                "1 while this instance holds the Lease and scales, else 0.",
            )?,
        };
        registry.register(Box::new(metrics.api_errors.clone()))?;
        registry.register(Box::new(metrics.watch_restarts.clone()))?;
        registry.register(Box::new(metrics.mismatches.clone()))?;
        registry.register(Box::new(metrics.leader.clone()))?;
        Ok(metrics)
    }

    pub(crate) fn api_error(&self, verb: &str, resource: &str) {
        self.api_errors.with_label_values(&[verb, resource]).inc();
    }

    pub(crate) fn watch_restart(&self, resource: &str) {
        self.watch_restarts.with_label_values(&[resource]).inc();
    }

    pub(crate) fn mismatch(&self, app: &str) {
        self.mismatches.with_label_values(&[app]).inc();
    }

    pub(crate) fn leads(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// Creates an app's series at zero.
    pub fn track(&self, app: &str) {
        self.mismatches.with_label_values(&[app]);
    }

    /// Removes the series of an app that left the configuration.
    pub fn forget_app(&self, app: &str) {
        let _ = self.mismatches.remove_label_values(&[app]);
    }
}
