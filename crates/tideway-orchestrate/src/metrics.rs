//! The scaling loops' metrics, registered on the registry they are given.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tideway_core::{Decision, Direction, ScaleReason};

/// Bucket bounds (seconds) for replica start-up: a few milliseconds for a native server to minutes for a
/// heavy interpreter.
const COLD_START_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Told of each cold start (the app, how long its replica took to become ready): the connection trace
/// records them for `tideway simulate --startup observed`.
pub type ColdStartObserver = Arc<dyn Fn(&str, Duration) + Send + Sync>;

/// Scaling decisions and replica start-ups, per app.
pub struct ScalingMetrics {
    decisions: IntCounterVec,
    cold_start: HistogramVec,
    start_failures: IntCounterVec,
    cold_start_observer: OnceLock<ColdStartObserver>,
}

impl ScalingMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = ScalingMetrics {
            decisions: IntCounterVec::new(
                Opts::new(
                    "tideway_scale_decisions_total",
                    "Scaling decisions taken, by direction and reason.",
                ),
                &["app", "direction", "reason"],
            )?,
            cold_start: HistogramVec::new(
                HistogramOpts::new(
                    "tideway_cold_start_seconds",
                    "Time from a replica's start to its first passed readiness check.",
                )
                .buckets(COLD_START_BUCKETS.to_vec()),
                &["app"],
            )?,
            start_failures: IntCounterVec::new(
                Opts::new(
                    "tideway_replica_start_failures_total",
                    "Replicas that could not start, exited while starting, or were not ready in time.",
                ),
                &["app"],
            )?,
            cold_start_observer: OnceLock::new(),
        };
        registry.register(Box::new(metrics.decisions.clone()))?;
        registry.register(Box::new(metrics.cold_start.clone()))?;
        registry.register(Box::new(metrics.start_failures.clone()))?;
        Ok(metrics)
    }

    /// Removes the series of an app that left the configuration.
    pub fn forget_app(&self, app: &str) {
        // Series that were never created are not worth reporting.
        let _ = self.cold_start.remove_label_values(&[app]);
        let _ = self.start_failures.remove_label_values(&[app]);
        for direction in Direction::ALL {
            for reason in ScaleReason::ALL {
                let _ = self
                    .decisions
                    .remove_label_values(&[app, direction.as_str(), reason.as_str()]);
            }
        }
    }

    /// Creates the app's series at zero, so a counter with nothing to count yet is exported (and its
    /// increase reads as 0) instead of being absent.
    pub(crate) fn track(&self, app: &str) {
        self.cold_start.with_label_values(&[app]);
        self.start_failures.with_label_values(&[app]);
    }

    pub(crate) fn decision(&self, app: &str, decision: &Decision) {
        if let Some(direction) = decision.direction() {
            self.decisions
                .with_label_values(&[app, direction.as_str(), decision.reason.as_str()])
                .inc();
        }
    }

    /// A decision not taken by the scaler: a loss, or someone else's count.
    pub(crate) fn count(&self, app: &str, direction: Direction, reason: ScaleReason) {
        self.decisions
            .with_label_values(&[app, direction.as_str(), reason.as_str()])
            .inc();
    }

    /// Has `observer` told of every cold start from now on; set once.
    pub fn observe_cold_starts(&self, observer: ColdStartObserver) {
        // Set once at start; a second observer would be a wiring mistake, and the first stays.
        let _ = self.cold_start_observer.set(observer);
    }

    pub(crate) fn ready(&self, app: &str, startup: Duration) {
        self.cold_start
            .with_label_values(&[app])
            .observe(startup.as_secs_f64());
        if let Some(observer) = self.cold_start_observer.get() {
            observer(app, startup);
        }
    }

    pub(crate) fn start_failed(&self, app: &str) {
        self.start_failures.with_label_values(&[app]).inc();
    }
}
