//! The running apps: one core [`App`] per `[[app]]`, its replicas and, for local apps, its scaling loop;
//! brought in line with each new configuration without disturbing the connections of apps that stay.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use arc_swap::ArcSwap;
use tideway_cluster::Cluster;
use tideway_config::{AppConfig, Backend, KubernetesSettings, KubernetesSpec};
use tideway_core::{App, Clock, Replica};
use tideway_orchestrate::kubernetes::{ApiServer, KubernetesMetrics, KubernetesOrchestrator, Target};
use tideway_orchestrate::local::LocalOrchestrator;
use tideway_orchestrate::{
    Evict, Leadership, Orchestration, Orchestrator, Predecessor, ReplicaEvent, ScalingHandle, ScalingLoop,
    ScalingMetrics, ScalingStatus, static_replicas,
};
use tideway_proxy::{ProxyMetrics, Route, RouteTable, RuntimeClock};
use tokio::sync::{mpsc, watch};
use tracing::info;

/// Longest a stopping tideway waits to give its lease up.
const LEASE_RELEASE: std::time::Duration = std::time::Duration::from_secs(5);

/// An app as the admin API and the metrics see it.
#[derive(Clone)]
pub(crate) struct AppView {
    /// The live app: policy, replicas, counters.
    pub(crate) app: Arc<App>,
    /// Its configuration (routes and backend; the policy in force is the app's own).
    pub(crate) config: AppConfig,
    /// Its scaling loop, for apps that scale: recent decisions, listing, leadership.
    pub(crate) scaling: Option<ScalingStatus>,
    /// Its replaced backends whose replicas still drain: shown and counted with it until they are gone.
    pub(crate) predecessors: Vec<Arc<App>>,
    /// Whether the app left the configuration: it only drains, and is shown until its replicas are gone.
    pub(crate) removed: bool,
    /// Why the app cannot have replicas now (no API server, no Deployment), while that lasts.
    pub(crate) problem: Option<watch::Receiver<Option<String>>>,
}

impl AppView {
    /// Every replica of the app, its replaced backends' (all draining) included, oldest first: an order
    /// that stays put from one look to the next.
    pub(crate) fn replicas(&self) -> Vec<Arc<Replica>> {
        let earlier = self.predecessors.iter().flat_map(|p| p.replicas().to_vec());
        let mut all: Vec<Arc<Replica>> = earlier.chain(self.app.replicas().iter().cloned()).collect();
        all.sort_by_key(|r| r.started_at());
        all
    }

    /// Whether its backend has reported the replicas it had before tideway looked: an app on Kubernetes
    /// may have pods that outlived an earlier tideway.
    pub(crate) fn is_listed(&self) -> bool {
        self.scaling.as_ref().is_none_or(ScalingStatus::is_listed)
    }

    /// Whether this instance scales the app (on Kubernetes, while it leads).
    pub(crate) fn scaled_here(&self) -> bool {
        self.scaling.as_ref().is_some_and(ScalingStatus::leads)
    }

    /// Whether there is anything left to show: a removed app is gone once its last replica is.
    pub(crate) fn is_shown(&self) -> bool {
        !self.removed || !self.replicas().is_empty()
    }

    /// Replicas the app should have now: what the scaling rule asks for demand (within min and max), or the
    /// fixed count of a static app.
    pub(crate) fn desired_replicas(&self) -> u64 {
        match &self.config.backend {
            Backend::Static { addresses } => addresses.len() as u64,
            Backend::Local(_) | Backend::Kubernetes(_) if self.removed => 0,
            Backend::Local(_) | Backend::Kubernetes(_) => {
                let policy = self.app.policy();
                tideway_core::replicas_needed(&policy, self.app.demand())
                    .clamp(u64::from(policy.min_instances), u64::from(policy.max_instances))
            }
        }
    }
}

/// The apps in force, swapped whole after each change: readers never block the fleet.
pub(crate) type FleetView = Arc<ArcSwap<Vec<AppView>>>;

/// The metric sets the fleet's parts record into.
pub(crate) struct FleetMetrics {
    /// The data plane's.
    pub(crate) proxy: Arc<ProxyMetrics>,
    /// The scaling loops'.
    pub(crate) scaling: Arc<ScalingMetrics>,
    /// Kubernetes mode's.
    pub(crate) kubernetes: Arc<KubernetesMetrics>,
}

/// Every app tideway runs, in configuration order, and the removed ones still draining.
pub(crate) struct Fleet {
    clock: RuntimeClock,
    supervisor: PathBuf,
    evict: Evict,
    metrics: FleetMetrics,
    members: Vec<Member>,
    /// Apps removed from the configuration, and replaced backends, still draining.
    retiring: Vec<Member>,
    /// Per app name, the number the next local replica is named with: kept across backend changes and
    /// removals, so no two replicas of one name ever share a replica name.
    numbers: HashMap<String, Arc<AtomicU32>>,
    view: FleetView,
    /// `[kubernetes]` as tideway started with it.
    kubernetes: KubernetesSettings,
    /// The API server, reached once the first Kubernetes app comes.
    api: Option<ApiServer>,
    /// The other instances, told of the apps whose replicas they share.
    cluster: Option<Cluster>,
}

struct Member {
    config: AppConfig,
    app: Arc<App>,
    scaling: Option<ScalingHandle>,
    problem: Option<watch::Receiver<Option<String>>>,
}

impl Fleet {
    /// An empty fleet. `supervisor` is the tideway executable (local replicas run under
    /// `tideway supervise`); `evict` closes a replica's remaining connections when its drain runs out.
    pub(crate) fn new(
        clock: RuntimeClock,
        supervisor: PathBuf,
        evict: Evict,
        metrics: FleetMetrics,
        kubernetes: KubernetesSettings,
    ) -> Self {
        Fleet {
            kubernetes,
            api: None,
            cluster: None,
            clock,
            supervisor,
            evict,
            metrics,
            members: Vec::new(),
            retiring: Vec::new(),
            numbers: HashMap::new(),
            view: FleetView::default(),
        }
    }

    /// Shares the counts of the apps whose replicas every instance shares (static and Kubernetes ones)
    /// with the other instances through `cluster`, from now on.
    pub(crate) fn share_with(&mut self, cluster: Cluster) {
        self.cluster = Some(cluster);
        self.share();
    }

    /// Tells the cluster which apps are shared now.
    fn share(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let shared = self
            .members
            .iter()
            .filter(|m| matches!(m.config.backend, Backend::Static { .. } | Backend::Kubernetes(_)))
            .map(|m| Arc::clone(&m.app));
        cluster.set_apps(shared.collect());
    }

    /// The apps in force, kept up to date by [`Fleet::apply`].
    pub(crate) fn view(&self) -> FleetView {
        Arc::clone(&self.view)
    }

    /// Brings the running apps in line with `configs` and returns the routing table over them.
    ///
    /// An app whose backend is unchanged keeps its replicas and connections; the file's policy is put back
    /// in force if it differs (a change through the admin API lasts until the next reload), and applies
    /// from the next decision. An app whose backend changed is replaced: new replicas start, the old ones drain.
    /// A removed app stops receiving requests at once and drains.
    pub(crate) fn apply(&mut self, configs: &[AppConfig]) -> RouteTable {
        let mut previous = std::mem::take(&mut self.members);
        for config in configs {
            let kept = previous
                .iter()
                .position(|m| m.config.name == config.name && m.config.backend == config.backend)
                .map(|i| previous.swap_remove(i));
            let member = match kept {
                Some(mut member) => {
                    if *member.app.policy() != config.policy {
                        info!(app = %config.name, "policy changed");
                        member.app.set_policy(config.policy.clone());
                    }
                    member.config = config.clone();
                    member
                }
                None => {
                    info!(app = %config.name, "app started");
                    let replaced = previous.iter().filter(|m| m.config.name == config.name);
                    let predecessors = replaced
                        .chain(&self.retiring)
                        .filter(|m| m.config.name == config.name)
                        .filter_map(|m| m.scaling.as_ref().map(ScalingHandle::as_predecessor))
                        .collect();
                    self.start(config, predecessors)
                }
            };
            self.members.push(member);
        }
        for member in previous {
            info!(app = %member.config.name, "app retired: draining its replicas");
            self.retire(member);
        }
        self.retiring
            .retain(|m| m.scaling.as_ref().is_some_and(|s| !s.is_finished()));
        self.view.store(Arc::new(self.views()));
        self.share();
        RouteTable::new(self.members.iter().map(|m| Route {
            app: Arc::clone(&m.app),
            hosts: m.config.hosts.clone(),
            path_prefix: m.config.path_prefix.clone(),
        }))
    }

    /// The apps as shown: those in force, each with its replaced backends still draining, then the removed
    /// ones still draining (the latest of a name first).
    fn views(&self) -> Vec<AppView> {
        let view = |m: &Member, removed| AppView {
            app: Arc::clone(&m.app),
            config: m.config.clone(),
            scaling: m.scaling.as_ref().map(ScalingHandle::status),
            predecessors: Vec::new(),
            removed,
            problem: m.problem.clone(),
        };
        let mut views: Vec<AppView> = self.members.iter().map(|m| view(m, false)).collect();
        for retired in self.retiring.iter().rev() {
            match views.iter_mut().find(|v| v.config.name == retired.config.name) {
                Some(successor) => successor.predecessors.push(Arc::clone(&retired.app)),
                None => views.push(view(retired, true)),
            }
        }
        views
    }

    /// Stops every replica of every app, retiring ones included, and waits until they are gone.
    pub(crate) async fn shutdown(self) {
        let handles = self
            .members
            .into_iter()
            .chain(self.retiring)
            .filter_map(|m| m.scaling);
        futures::future::join_all(handles.map(ScalingHandle::stop)).await;
        if let Some(api) = self.api {
            // A leader gives its lease up; an API server that does not answer lets it lapse instead.
            if tokio::time::timeout(LEASE_RELEASE, api.stop()).await.is_err() {
                tracing::warn!(
                    "the lease was not given up in time; another instance takes over once it lapses"
                );
            }
        }
    }

    fn start(&mut self, config: &AppConfig, predecessors: Vec<Predecessor>) -> Member {
        let clock: Arc<dyn Clock> = Arc::new(self.clock);
        let app = App::new(config.name.as_str(), config.policy.clone(), Arc::clone(&clock));
        let mut problem = None;
        let orchestration = match &config.backend {
            Backend::Static { addresses } => {
                app.set_replicas(static_replicas(app.name(), addresses, clock.now()));
                None
            }
            Backend::Kubernetes(spec) => {
                let (orchestrator, events) =
                    self.kubernetes_orchestrator(&config.name, spec, Arc::clone(&clock));
                problem = Some(orchestrator.problem());
                Some(Orchestration {
                    leadership: self.api().leadership(),
                    orchestrator: Arc::new(orchestrator),
                    events,
                })
            }
            Backend::Local(spec) => {
                let numbers = self
                    .numbers
                    .entry(config.name.clone())
                    .or_insert_with(|| Arc::new(AtomicU32::new(1)));
                let (orchestrator, events) = LocalOrchestrator::new(
                    Arc::clone(&app),
                    spec.clone(),
                    self.supervisor.clone(),
                    Arc::clone(&clock),
                    Arc::clone(numbers),
                );
                Some(Orchestration {
                    orchestrator: Arc::new(orchestrator) as Arc<dyn Orchestrator>,
                    events,
                    leadership: Leadership::always(),
                })
            }
        };
        let scaling = orchestration.map(|orchestration| {
            ScalingLoop::spawn(
                Arc::clone(&app),
                orchestration,
                Arc::clone(&self.evict),
                clock,
                Arc::clone(&self.metrics.scaling),
                predecessors,
            )
        });
        Member {
            config: config.clone(),
            app,
            scaling,
            problem,
        }
    }

    /// The API server, reached the first time an app (or the watch of resource apps) needs it.
    pub(crate) fn api(&mut self) -> &ApiServer {
        self.api
            .get_or_insert_with(|| ApiServer::connect(&self.kubernetes, Arc::clone(&self.metrics.kubernetes)))
    }

    fn kubernetes_orchestrator(
        &mut self,
        app: &str,
        spec: &KubernetesSpec,
        clock: Arc<dyn Clock>,
    ) -> (KubernetesOrchestrator, mpsc::UnboundedReceiver<ReplicaEvent>) {
        self.metrics.kubernetes.track(app);
        let api = self.api().clone();
        let target = Target {
            namespace: spec.namespace.clone(),
            deployment: spec.deployment.clone(),
            service: spec.service.clone(),
            port: spec.port.clone(),
        };
        KubernetesOrchestrator::spawn(&api, app, target, clock)
    }

    fn retire(&mut self, member: Member) {
        // Vacant sessions would hold their seats on the draining replicas for their grace, for clients that
        // can no longer reach them.
        member.app.clear_sessions();
        // An app that stays under the same name (its backend changed) keeps its series.
        if !self.members.iter().any(|m| m.config.name == member.config.name) {
            self.metrics.proxy.forget_app(&member.config.name);
            self.metrics.scaling.forget_app(&member.config.name);
            self.metrics.kubernetes.forget_app(&member.config.name);
        }
        if let Some(scaling) = &member.scaling {
            scaling.retire();
            self.retiring.push(member);
        }
    }
}

#[cfg(test)]
mod tests {
    use tideway_config::Config;

    use super::*;

    fn fleet() -> Fleet {
        let registry = prometheus::Registry::new();
        let metrics = FleetMetrics {
            proxy: Arc::new(ProxyMetrics::register(&registry).expect("proxy metrics")),
            scaling: Arc::new(ScalingMetrics::register(&registry).expect("scaling metrics")),
            kubernetes: Arc::new(KubernetesMetrics::register(&registry).expect("Kubernetes metrics")),
        };
        let evict: Evict = Arc::new(|_: &tideway_core::Replica| {});
        Fleet::new(
            RuntimeClock::new(),
            PathBuf::from("tideway"),
            evict,
            metrics,
            tideway_config::KubernetesSettings::default(),
        )
    }

    /// The apps of a configuration of static apps, each `(name, policy keys, addresses)`.
    fn apps(apps: &[(&str, &str, &str)]) -> Vec<AppConfig> {
        let text: String = apps
            .iter()
            .map(|(name, keys, addresses)| {
                format!(
                    "[[app]]\nname = \"{name}\"\nhosts = [\"{name}.test\"]\n{keys}\n[app.static]\naddresses = [{addresses}]\n"
                )
            })
            .collect();
        text.parse::<Config>().expect("a valid configuration").apps
    }

    fn shown(fleet: &Fleet) -> Vec<String> {
        fleet
            .view()
            .load()
            .iter()
            .filter(|v| v.is_shown())
            .map(|v| v.app.name().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn an_app_that_stays_keeps_its_replicas_and_takes_the_new_policy() {
        let mut fleet = fleet();
        let routes = fleet.apply(&apps(&[
            ("a", "max_connections = 4", "\"127.0.0.1:9001\""),
            ("b", "", "\"127.0.0.1:9002\""),
        ]));
        assert_eq!(routes.apps().len(), 2);
        let before = Arc::clone(&fleet.view().load()[0].app);
        let replica = Arc::clone(&before.replicas()[0]);

        let routes = fleet.apply(&apps(&[("a", "max_connections = 9", "\"127.0.0.1:9001\"")]));
        let after = Arc::clone(&fleet.view().load()[0].app);
        assert!(
            Arc::ptr_eq(&before, &after),
            "the same app, its connections untouched"
        );
        assert!(
            Arc::ptr_eq(&replica, &after.replicas()[0]),
            "and the same replica"
        );
        assert_eq!(after.policy().max_connections, 9);
        assert_eq!(routes.apps().len(), 1);
        assert_eq!(shown(&fleet), ["a"], "a removed static app has nothing to drain");
    }

    #[tokio::test]
    async fn an_app_whose_backend_changed_is_a_new_app() {
        let mut fleet = fleet();
        fleet.apply(&apps(&[("a", "", "\"127.0.0.1:9001\"")]));
        let before = Arc::clone(&fleet.view().load()[0].app);
        fleet.apply(&apps(&[("a", "", "\"127.0.0.1:9001\", \"127.0.0.1:9003\"")]));
        let after = Arc::clone(&fleet.view().load()[0].app);
        assert!(!Arc::ptr_eq(&before, &after));
        let names: Vec<String> = after.replicas().iter().map(|r| r.name().to_owned()).collect();
        assert_eq!(names, ["a-1", "a-2"]);
    }
}
