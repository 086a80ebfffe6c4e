//! Apps declared as `TidewayApp` resources (`[kubernetes] tidewayapps`): their watch, which feeds the
//! fleet beside the file's apps, and what the leader writes back — each resource's status and an Event
//! per scaling decision.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::DynamicObject;
use tideway_config::{AppConfig, Config, KubernetesSettings};
use tideway_core::ReplicaState;
use tideway_orchestrate::kubernetes::{
    ApiServer, AppEvents, Condition, DecisionStatus, DeclaredApp, RefusedResource, Regarding, Resolution,
    ResourceKey, StatusWriter, TidewayAppStatus, resolve, watch_apps,
};
use tideway_proxy::Proxy;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::fleet::{AppView, Fleet, FleetView};

/// How often the leader looks at its resource apps to write what changed (each resource's writes are
/// further limited by `status_interval`).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The resources as last listed; `None` until the first listing.
pub(crate) type Listed = watch::Receiver<Option<Vec<Arc<DynamicObject>>>>;

/// Watches the `TidewayApp` resources `settings` asks for, through `api`.
pub(crate) fn watch(api: &ApiServer, settings: &KubernetesSettings) -> Listed {
    let (listed, receiver) = watch::channel(None);
    let api = api.clone();
    let scope = settings.tidewayapps;
    tokio::spawn(async move {
        // Without a client there is nothing to list; the API server said why.
        let Ok(client) = api.client().await else {
            return;
        };
        let mut resources = watch_apps(client, scope, Arc::clone(api.metrics())).boxed();
        while let Some(all) = resources.next().await {
            if listed.send(Some(all)).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Logs how `next` differs from `previous`: resources taken as apps, and those refused, once each.
fn log_changes(previous: &Resolution, next: &Resolution) {
    for app in &next.apps {
        if !previous.apps.iter().any(|p| p.key == app.key) {
            info!(namespace = %app.key.namespace, resource = %app.key.name, "app declared by a TidewayApp");
        }
    }
    for refusal in &next.refused {
        if !previous.refused.contains(refusal) {
            warn!(namespace = %refusal.key.namespace, resource = %refusal.key.name, reason = refusal.reason, problems = %refusal.message, "TidewayApp refused; other apps are not disturbed");
        }
    }
}

/// The apps in force: the file's and, with `[kubernetes] tidewayapps`, those the resources declare.
pub(crate) struct Declared {
    /// The resources as last listed.
    resources: Vec<Arc<DynamicObject>>,
    /// How they were last sorted into apps and refusals, for the reporter.
    resolution: watch::Sender<Arc<Resolution>>,
}

impl Declared {
    /// No resources yet.
    pub(crate) fn new() -> Self {
        Declared {
            resources: Vec::new(),
            resolution: watch::channel(Arc::default()).0,
        }
    }

    /// How the resources are sorted, each time that changes.
    pub(crate) fn resolution(&self) -> watch::Receiver<Arc<Resolution>> {
        self.resolution.subscribe()
    }

    /// Takes `resources` as the resources in force.
    pub(crate) fn set_resources(&mut self, resources: Vec<Arc<DynamicObject>>) {
        self.resources = resources;
    }

    /// Brings the fleet in line with the file `file` and the resources, and routes to its apps; returns
    /// the apps in force.
    pub(crate) fn apply(&self, file: &Config, proxy: &Proxy, fleet: &mut Fleet) -> Vec<AppConfig> {
        let next = resolve(&file.apps, &self.resources, &file.defaults);
        log_changes(&self.resolution.borrow(), &next);
        let declared = next.apps.iter().map(|app| app.config.clone());
        let apps: Vec<AppConfig> = file.apps.iter().cloned().chain(declared).collect();
        self.resolution.send_replace(Arc::new(next));
        proxy.set_routes(fleet.apply(&apps));
        apps
    }
}

/// While this instance leads, writes each resource's status and records an Event per scaling decision
/// and per refused spec; a follower writes nothing.
pub(crate) async fn report(
    api: ApiServer,
    settings: KubernetesSettings,
    fleet: FleetView,
    resolution: watch::Receiver<Arc<Resolution>>,
) {
    let Ok(client) = api.client().await else {
        return;
    };
    let mut writer = StatusWriter::new(
        client.clone(),
        settings.status_interval,
        Arc::clone(api.metrics()),
    );
    let events = AppEvents::new(client, api.identity(), Arc::clone(api.metrics()));
    let leadership = api.leadership();
    let mut reporter = Reporter::default();
    let mut ticks = tokio::time::interval(REPORT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let resolution = Arc::clone(&resolution.borrow());
        let views = fleet.load();
        let leads = leadership.leads();
        let news = reporter.news(&resolution, &views, leads);
        if !leads {
            // What the leader wrote meanwhile is not known: a new lead writes everything anew.
            writer.write(Vec::new()).await;
            continue;
        }
        writer.write(statuses(&resolution, &views)).await;
        for (regarding, news) in news {
            let regarding = Regarding {
                key: &regarding.0,
                uid: regarding.1.as_deref(),
            };
            match &news {
                News::Decision(decision) => events.decided(&regarding, decision).await,
                News::Refused { reason, message } => events.refused(&regarding, reason, message).await,
            }
        }
    }
}

/// What has happened since the last look, to record as Events.
#[derive(Default)]
struct Reporter {
    /// Per app, how many decisions were seen.
    seen: HashMap<String, u64>,
    /// Refusals seen, by resource, generation and message.
    refused: HashSet<(ResourceKey, Option<i64>, String)>,
}

enum News {
    Decision(tideway_orchestrate::DecisionRecord),
    Refused { reason: &'static str, message: String },
}

type Subject = (ResourceKey, Option<String>);

impl Reporter {
    /// Decisions and refusals new since the last look. While `leads` is false, decisions are only marked
    /// seen (the leader made and records them) and refusals are forgotten.
    fn news(&mut self, resolution: &Resolution, views: &[AppView], leads: bool) -> Vec<(Subject, News)> {
        let mut news = Vec::new();
        let mut seen = HashMap::new();
        for app in &resolution.apps {
            let Some(scaling) = view_of(views, app).and_then(|view| view.scaling.as_ref()) else {
                continue;
            };
            // An app seen for the first time is new to the fleet too: every decision of its loop is news.
            let before = self.seen.get(&app.config.name).copied().unwrap_or(0);
            let (decisions, total) = scaling.decisions().since(before);
            seen.insert(app.config.name.clone(), total);
            if leads {
                let subject = (app.key.clone(), app.uid.clone());
                news.extend(
                    decisions
                        .into_iter()
                        .map(|d| (subject.clone(), News::Decision(d))),
                );
            }
        }
        self.seen = seen;
        // A refusal is news to each new leader: it cannot know whether the last one recorded it.
        let mut refused = HashSet::new();
        for refusal in resolution.refused.iter().filter(|_| leads) {
            let id = (refusal.key.clone(), refusal.generation, refusal.message.clone());
            if !self.refused.contains(&id) {
                let news_of = News::Refused {
                    reason: refusal.reason,
                    message: refusal.message.clone(),
                };
                news.push(((refusal.key.clone(), refusal.uid.clone()), news_of));
            }
            refused.insert(id);
        }
        self.refused = refused;
        news
    }
}

/// The app a resource declares, as the fleet runs it.
fn view_of<'a>(views: &'a [AppView], app: &DeclaredApp) -> Option<&'a AppView> {
    views
        .iter()
        .find(|view| !view.removed && view.config.name == app.config.name)
}

/// Every resource's status now.
fn statuses(resolution: &Resolution, views: &[AppView]) -> Vec<(ResourceKey, TidewayAppStatus)> {
    let apps = resolution.apps.iter().filter_map(|app| {
        let view = view_of(views, app)?;
        Some((app.key.clone(), status(view, app.generation)))
    });
    let refused = resolution
        .refused
        .iter()
        .map(|r| (r.key.clone(), refused_status(r)));
    apps.chain(refused).collect()
}

/// The status of a running app.
fn status(view: &AppView, generation: Option<i64>) -> TidewayAppStatus {
    let app = &view.app;
    let policy = app.policy();
    let replicas = app.replicas();
    let ready = replicas
        .iter()
        .filter(|r| r.state() == ReplicaState::Ready)
        .count();
    let ready = u32::try_from(ready).unwrap_or(u32::MAX);
    let connections: u64 = view
        .replicas()
        .iter()
        .map(|r| u64::from(r.total_connections()))
        .sum();
    let capacity = u64::from(ready) * u64::from(policy.max_connections);
    let occupancy = if capacity == 0 {
        0.0
    } else {
        // Three decimals: finer would change the status at every connection.
        (connections as f64 / capacity as f64 * 1000.0).round() / 1000.0
    };
    let desired = u32::try_from(view.desired_replicas()).unwrap_or(u32::MAX);
    let last = view.scaling.as_ref().and_then(|s| s.decisions().recent().pop());
    let problem = view.problem.as_ref().and_then(|p| p.borrow().clone());
    let listed = view.is_listed();
    let needed = tideway_core::replicas_needed(&policy, app.demand());
    let ready_condition = match &problem {
        Some(problem) => condition("Ready", false, "BackendUnavailable", problem),
        None if ready > 0 => condition(
            "Ready",
            true,
            "ReplicasReady",
            &format!("{ready} of {} replicas ready", replicas.len()),
        ),
        None if desired == 0 => condition(
            "Ready",
            true,
            "ScaledToZero",
            "no replicas: the first request starts one and waits for it",
        ),
        None => condition("Ready", false, "NoReadyReplicas", "no replica is ready yet"),
    };
    let active = match &problem {
        Some(problem) => condition("ScalingActive", false, "BackendUnavailable", problem),
        None if !listed => condition(
            "ScalingActive",
            false,
            "NotListed",
            "waiting for the first listing of the Service's endpoints",
        ),
        None => condition(
            "ScalingActive",
            true,
            "ScalingByConnections",
            "the replica count follows the connections",
        ),
    };
    let limited = limited(needed, &policy);
    TidewayAppStatus {
        replicas: u32::try_from(replicas.len()).unwrap_or(u32::MAX),
        ready_replicas: ready,
        connections,
        occupancy,
        desired_replicas: desired,
        last_scale_time: last
            .as_ref()
            .map(|d| humantime::format_rfc3339_seconds(d.at).to_string()),
        last_decision: last.map(|d| DecisionStatus {
            direction: d.direction.as_str().to_owned(),
            reason: d.reason.as_str().to_owned(),
            from: d.from,
            to: d.to,
            demand: d.demand,
        }),
        observed_generation: generation,
        conditions: vec![ready_condition, active, limited],
    }
}

/// `ScalingLimited`: whether the count demand wants (`needed`, before clamping) is outside the policy's
/// bounds, as an HPA says it of its own.
fn limited(needed: u64, policy: &tideway_core::Policy) -> Condition {
    let (min, max) = (policy.min_instances, policy.max_instances);
    if needed > u64::from(max) {
        let message = format!("demand wants {needed} replicas; max_instances is {max}");
        condition("ScalingLimited", true, "TooManyReplicas", &message)
    } else if needed < u64::from(min) {
        let message = format!("demand wants {needed} replicas; min_instances is {min}");
        condition("ScalingLimited", true, "TooFewReplicas", &message)
    } else {
        let message = "the count demand wants is within min_instances and max_instances";
        condition("ScalingLimited", false, "DesiredWithinRange", message)
    }
}

/// The status of a resource that is not an app.
fn refused_status(refusal: &RefusedResource) -> TidewayAppStatus {
    TidewayAppStatus {
        observed_generation: refusal.generation,
        conditions: vec![
            condition("Ready", false, refusal.reason, &refusal.message),
            condition("ScalingActive", false, refusal.reason, &refusal.message),
        ],
        ..TidewayAppStatus::default()
    }
}

/// A condition whose transition time the status writer sets.
fn condition(kind: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        kind: kind.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_is_limited_outside_the_bounds_only() {
        let policy = tideway_core::Policy {
            min_instances: 2,
            max_instances: 4,
            ..tideway_core::Policy::default()
        };
        let reason = |needed| {
            let c = limited(needed, &policy);
            (c.status, c.reason)
        };
        assert_eq!(reason(1), ("True".into(), "TooFewReplicas".into()));
        assert_eq!(reason(2), ("False".into(), "DesiredWithinRange".into()));
        assert_eq!(reason(4), ("False".into(), "DesiredWithinRange".into()));
        assert_eq!(reason(5), ("True".into(), "TooManyReplicas".into()));
        assert_eq!(
            limited(5, &policy).message,
            "demand wants 5 replicas; max_instances is 4"
        );
    }
}
