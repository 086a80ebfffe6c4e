//! The metrics registry of the process and the collector that reads the apps' live state at scrape time.
//!
//! What core already tracks (connections per replica, replicas by state, queue, sessions, closes and
//! rejections) is read when Prometheus scrapes, so the data plane pays nothing for it and a replica that
//! is gone simply stops appearing. Event metrics (requests, durations, decisions) are recorded by the
//! proxy and the scaling loops on this same registry.

use std::sync::{Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use tideway_core::{CloseReason, RejectReason, ReplicaState};
use tracing_appender::non_blocking::ErrorCounter;

use crate::fleet::{AppView, FleetView};

/// Reads every app of the fleet when collected.
pub(crate) struct AppsCollector {
    fleet: FleetView,
    families: Families,
    // Collection resets and refills the families: two scrapes at once must not interleave.
    collecting: Mutex<()>,
}

struct Families {
    replica_connections: IntGaugeVec,
    replica_occupancy: GaugeVec,
    app_connections: IntGaugeVec,
    app_capacity: IntGaugeVec,
    app_occupancy: GaugeVec,
    spawn_threshold: GaugeVec,
    replicas: IntGaugeVec,
    desired: IntGaugeVec,
    min_instances: IntGaugeVec,
    max_instances: IntGaugeVec,
    queued_connections: IntGaugeVec,
    sessions: IntGaugeVec,
    closed: IntCounterVec,
    rejected: IntCounterVec,
}

/// Log lines the log writer dropped, read from its counter when collected.
struct DroppedLogLines {
    counter: IntCounter,
    source: ErrorCounter,
    // Two scrapes at once must not both add the same lines.
    collecting: Mutex<()>,
}

/// The process's registry, with the build info and the dropped log lines on it; the parts register their
/// own metrics.
pub(crate) fn registry(dropped_log_lines: ErrorCounter) -> prometheus::Result<Registry> {
    let registry = Registry::new();
    let build = IntGaugeVec::new(
        Opts::new("tideway_build_info", "The running tideway's version."),
        &["version"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(build))?;
    registry.register(Box::new(DroppedLogLines {
        counter: IntCounter::new(
            "tideway_log_lines_dropped_total",
            "Log lines dropped because standard error did not take them in time.",
        )?,
        source: dropped_log_lines,
        collecting: Mutex::new(()),
    }))?;
    Ok(registry)
}

impl Collector for DroppedLogLines {
    fn desc(&self) -> Vec<&Desc> {
        self.counter.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _collecting = self.collecting.lock().unwrap_or_else(PoisonError::into_inner);
        let dropped = u64::try_from(self.source.dropped_lines()).unwrap_or(u64::MAX);
        self.counter.inc_by(dropped.saturating_sub(self.counter.get()));
        self.counter.collect()
    }
}

/// Registers the collector that reads the apps of `fleet` at each scrape.
pub(crate) fn register_apps(registry: &Registry, fleet: FleetView) -> prometheus::Result<()> {
    registry.register(Box::new(AppsCollector::new(fleet)?))
}

impl AppsCollector {
    fn new(fleet: FleetView) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str, labels: &[&str]| IntGaugeVec::new(Opts::new(name, help), labels);
        let ratio = |name: &str, help: &str, labels: &[&str]| GaugeVec::new(Opts::new(name, help), labels);
        let app = &["app"];
        Ok(AppsCollector {
            fleet,
            families: Families {
                replica_connections: gauge(
                    "tideway_replica_connections",
                    "Connections seated on a replica.",
                    &["app", "replica"],
                )?,
                replica_occupancy: ratio(
                    "tideway_replica_occupancy_ratio",
                    "A replica's connections divided by max_connections.",
                    &["app", "replica"],
                )?,
                app_connections: gauge(
                    "tideway_app_connections",
                    "Connections seated on an app's replicas.",
                    app,
                )?,
                app_capacity: gauge(
                    "tideway_app_capacity_connections",
                    "Ready replicas times max_connections.",
                    app,
                )?,
                app_occupancy: ratio(
                    "tideway_app_occupancy_ratio",
                    "An app's connections divided by its capacity (0 without capacity).",
                    app,
                )?,
                spawn_threshold: ratio(
                    "tideway_app_spawn_threshold_ratio",
                    "The occupancy at which the app wants another replica (spawn_threshold / 100).",
                    app,
                )?,
                replicas: gauge("tideway_replicas", "Replicas by state.", &["app", "state"])?,
                desired: gauge(
                    "tideway_desired_replicas",
                    "Replicas the scaling rule asks for now.",
                    app,
                )?,
                min_instances: gauge("tideway_app_min_instances", "The app's min_instances.", app)?,
                max_instances: gauge("tideway_app_max_instances", "The app's max_instances.", app)?,
                queued_connections: gauge(
                    "tideway_app_queued_connections",
                    "Connections waiting for a seat.",
                    app,
                )?,
                sessions: gauge(
                    "tideway_sessions",
                    "Cookie-affinity sessions by state: tentative (cookie not sent back yet) or confirmed.",
                    &["app", "state"],
                )?,
                closed: IntCounterVec::new(
                    Opts::new(
                        "tideway_connections_closed_total",
                        "Connections closed, by reason.",
                    ),
                    &["app", "reason"],
                )?,
                rejected: IntCounterVec::new(
                    Opts::new(
                        "tideway_connections_rejected_total",
                        "Connections refused a seat, by reason.",
                    ),
                    &["app", "reason"],
                )?,
            },
            collecting: Mutex::new(()),
        })
    }
}

impl Families {
    fn all(&self) -> [&dyn Collector; 14] {
        [
            &self.replica_connections,
            &self.replica_occupancy,
            &self.app_connections,
            &self.app_capacity,
            &self.app_occupancy,
            &self.spawn_threshold,
            &self.replicas,
            &self.desired,
            &self.min_instances,
            &self.max_instances,
            &self.queued_connections,
            &self.sessions,
            &self.closed,
            &self.rejected,
        ]
    }

    fn reset(&self) {
        self.replica_connections.reset();
        self.replica_occupancy.reset();
        self.app_connections.reset();
        self.app_capacity.reset();
        self.app_occupancy.reset();
        self.spawn_threshold.reset();
        self.replicas.reset();
        self.desired.reset();
        self.min_instances.reset();
        self.max_instances.reset();
        self.queued_connections.reset();
        self.sessions.reset();
        self.closed.reset();
        self.rejected.reset();
    }

    fn fill(&self, view: &AppView) {
        let app = &view.app;
        let name = app.name();
        let policy = app.policy();
        let max = f64::from(policy.max_connections);
        let replicas = view.replicas();
        let mut by_state = [0i64; 3];
        let mut connections = 0i64;
        for replica in replicas.iter() {
            let seated = replica.connections();
            self.replica_connections
                .with_label_values(&[name, replica.name()])
                .set(i64::from(seated));
            self.replica_occupancy
                .with_label_values(&[name, replica.name()])
                .set(f64::from(seated) / max);
            connections += i64::from(seated);
            by_state[match replica.state() {
                ReplicaState::Starting => 0,
                ReplicaState::Ready => 1,
                ReplicaState::Draining => 2,
            }] += 1;
        }
        for (state, count) in [
            ReplicaState::Starting,
            ReplicaState::Ready,
            ReplicaState::Draining,
        ]
        .iter()
        .zip(by_state)
        {
            self.replicas
                .with_label_values(&[name, state.as_str()])
                .set(count);
        }
        let capacity = by_state[1] * i64::from(policy.max_connections);
        self.app_connections.with_label_values(&[name]).set(connections);
        self.app_capacity.with_label_values(&[name]).set(capacity);
        let occupancy = if capacity > 0 {
            connections as f64 / capacity as f64
        } else {
            0.0
        };
        self.app_occupancy.with_label_values(&[name]).set(occupancy);
        self.spawn_threshold
            .with_label_values(&[name])
            .set(f64::from(policy.spawn_threshold.percent()) / 100.0);
        let desired = i64::try_from(view.desired_replicas()).unwrap_or(i64::MAX);
        self.desired.with_label_values(&[name]).set(desired);
        self.min_instances
            .with_label_values(&[name])
            .set(i64::from(policy.min_instances));
        self.max_instances
            .with_label_values(&[name])
            .set(i64::from(policy.max_instances));
        self.queued_connections
            .with_label_values(&[name])
            .set(app.queued() as i64);
        let sessions = app.session_counts();
        for (state, count) in [
            ("tentative", sessions.tentative),
            ("confirmed", sessions.confirmed),
        ] {
            self.sessions
                .with_label_values(&[name, state])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        for reason in CloseReason::ALL {
            self.closed
                .with_label_values(&[name, reason.as_str()])
                .inc_by(app.stats().closed(reason));
        }
        for reason in RejectReason::ALL {
            self.rejected
                .with_label_values(&[name, reason.as_str()])
                .inc_by(app.stats().rejected(reason));
        }
    }
}

impl Collector for AppsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.families
            .all()
            .into_iter()
            .flat_map(Collector::desc)
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _collecting = self.collecting.lock().unwrap_or_else(PoisonError::into_inner);
        self.families.reset();
        for view in self.fleet.load().iter().filter(|view| view.is_shown()) {
            self.families.fill(view);
        }
        self.families
            .all()
            .into_iter()
            .flat_map(Collector::collect)
            .collect()
    }
}
