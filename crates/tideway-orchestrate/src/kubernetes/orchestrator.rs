//! The Kubernetes orchestrator: an app's replicas are the pods of a Deployment. Starting replicas raises
//! the Deployment's count; stopping a drained one removes exactly its pod; what the pods do comes back
//! from the Service's endpoints, and a count set by someone else from the Deployment's watch. Writes to
//! the API server are made one at a time, in order, by the leader only, and retried with backoff until
//! they go through, so a decision made while the API server fails is neither lost nor made twice. Pods
//! outlive tideway: stopping tideway stops none.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use tideway_config::PortRef;
use tideway_core::{Clock, Replica};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::api_server::ApiServer;
use super::endpoints::{EndpointChange, EndpointReplicas, EndpointView};
use super::metrics::KubernetesMetrics;
use super::scale::DeploymentScale;
use super::watch::{watch_endpoints, watch_replicas};
use crate::orchestrator::{Leadership, Orchestrator, ReplicaEvent};

/// First pause after a failed request; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest pause between two tries of a request.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How long after the count was lowered for a drained pod that pod must be seen terminating; if it is
/// not, the ReplicaSet controller took another (say, a pending pod, which has no endpoint to watch). Its
/// controller acts within a second in a healthy cluster; a pod kept by mistake corrects itself, since it
/// is drained again.
const SETTLE: Duration = Duration::from_secs(5);

/// Where an app's pods are.
#[derive(Clone, Debug)]
pub struct Target {
    /// The namespace of the Deployment and the Service; `None` = the client's (tideway's own).
    pub namespace: Option<String>,
    /// The Deployment whose pods are the replicas.
    pub deployment: String,
    /// The Service whose endpoints route to them.
    pub service: String,
    /// The Service's port that carries the app.
    pub port: PortRef,
}

/// An app's Deployment as its scaling loop's orchestrator.
///
/// Starting `n` replicas asks for as many pods as the replicas reported so far plus `n` — never fewer than
/// the Deployment already has: its pods that have no endpoint yet are starting capacity, not a reason to
/// ask for more.
pub struct KubernetesOrchestrator {
    writes: mpsc::UnboundedSender<Write>,
    removals: Arc<Removals>,
    problem: watch::Receiver<Option<String>>,
    /// Kept so that the scaling loop's events never end while it runs, even if the app never comes up.
    _events: mpsc::UnboundedSender<ReplicaEvent>,
}

/// One write to the API server.
enum Write {
    /// Have this many pods more than the replicas reported so far.
    Start(u32),
    /// Remove this drained pod.
    Stop(String),
    /// Clear the deletion-cost mark of this pod, which stays.
    Unmark(String),
}

/// The pods asked to stop and not gone yet, and among them those whose count is being lowered — with
/// when it was, once it was.
#[derive(Default)]
struct Removals {
    pods: Mutex<RemovalState>,
}

#[derive(Default)]
struct RemovalState {
    asked: HashSet<String>,
    lowering: HashMap<String, Option<Instant>>,
}

/// What the orchestrator's tasks share.
struct Shared {
    app: String,
    removals: Arc<Removals>,
    /// How many replicas are reported and not gone.
    reported: AtomicU32,
    /// The last count tideway wrote, `u32::MAX` before any: a count seen that differs is someone else's.
    written: AtomicU32,
    metrics: Arc<KubernetesMetrics>,
    leadership: Leadership,
    /// Raised each time a count was lowered for a drained pod.
    lowered: Notify,
}

impl KubernetesOrchestrator {
    /// The orchestrator of app `app` on `target`, and the events of its replicas for the scaling loop.
    /// In the background it waits for the API server and the Deployment (saying why, per app, while either
    /// is missing), then reports the pods that run already and [`ReplicaEvent::Listed`], so the loop's
    /// first decision counts them.
    pub fn spawn(
        api: &ApiServer,
        app: &str,
        target: Target,
        clock: Arc<dyn Clock>,
    ) -> (Self, mpsc::UnboundedReceiver<ReplicaEvent>) {
        let (writes, queue) = mpsc::unbounded_channel();
        let (events, receiver) = mpsc::unbounded_channel();
        let (problems, problem) = watch::channel(None);
        let removals = Arc::new(Removals::default());
        let shared = Arc::new(Shared {
            app: app.to_owned(),
            removals: Arc::clone(&removals),
            reported: AtomicU32::new(0),
            written: AtomicU32::new(u32::MAX),
            metrics: Arc::clone(api.metrics()),
            leadership: api.leadership(),
            lowered: Notify::new(),
        });
        let reporter = Reporter {
            replicas: EndpointReplicas::default(),
            shared: Arc::clone(&shared),
            events: events.clone(),
            writes: writes.clone(),
            clock,
            seen: None,
            kept: false,
            last: Vec::new(),
        };
        tokio::spawn(run(api.clone(), target, shared, reporter, queue, problems));
        let orchestrator = KubernetesOrchestrator {
            writes,
            removals,
            problem,
            _events: events,
        };
        (orchestrator, receiver)
    }

    /// Why the app has no replicas, while it cannot reach them (no API server, no Deployment).
    pub fn problem(&self) -> watch::Receiver<Option<String>> {
        self.problem.clone()
    }
}

impl Orchestrator for KubernetesOrchestrator {
    fn start(&self, count: u32) {
        // The writer ends only with this orchestrator.
        let _ = self.writes.send(Write::Start(count));
    }

    fn stop(&self, replica: &Arc<Replica>) {
        let name = replica.name().to_owned();
        self.removals.lock().asked.insert(name.clone());
        let _ = self.writes.send(Write::Stop(name));
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    fn replicas_outlive_it(&self) -> bool {
        true
    }
}

impl Removals {
    fn lock(&self) -> MutexGuard<'_, RemovalState> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Brings the app up — the client, the Deployment — then writes in order and reports what it sees.
async fn run(
    api: ApiServer,
    target: Target,
    shared: Arc<Shared>,
    mut reporter: Reporter,
    queue: mpsc::UnboundedReceiver<Write>,
    problems: watch::Sender<Option<String>>,
) {
    let client = match api.client().await {
        Ok(client) => client,
        Err(problem) => {
            error!(app = %shared.app, %problem, "the app has no replicas");
            let _ = problems.send(Some(problem.to_string()));
            return;
        }
    };
    let namespace = target
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let target = Resolved {
        namespace: &namespace,
        deployment: &target.deployment,
        service: &target.service,
        port: target.port,
    };
    let scale = DeploymentScale::new(client.clone(), target.namespace, target.deployment);
    let mut pause = FIRST_RETRY;
    let replicas = loop {
        match scale.replicas().await {
            Ok(replicas) => break replicas,
            Err(failure) => {
                shared.metrics.api_error("get", "deployments/scale");
                let problem = match &failure {
                    kube::Error::Api(status) if status.code == 404 => {
                        format!("Deployment {}/{} not found", target.namespace, target.deployment)
                    }
                    other => format!(
                        "cannot read the scale of Deployment {}/{}: {other}",
                        target.namespace, target.deployment
                    ),
                };
                if problems.borrow().as_deref() != Some(problem.as_str()) {
                    error!(app = %shared.app, %problem, retry_in_ms = pause.as_millis() as u64, "the app has no replicas yet");
                    let _ = problems.send(Some(problem));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_RETRY);
            }
        }
    };
    if problems.borrow().is_some() {
        info!(app = %shared.app, deployment = %target.deployment, "Deployment found");
        let _ = problems.send(None);
    }
    reporter.seen = Some(replicas);
    tokio::spawn(write_in_order(scale, queue, Arc::clone(&shared)));
    let metrics = Arc::clone(&shared.metrics);
    let mut endpoints = watch_endpoints(
        client.clone(),
        target.namespace,
        target.service,
        target.port,
        Arc::clone(&metrics),
    )
    .boxed();
    let mut counts = watch_replicas(client, target.namespace, target.deployment, metrics).boxed();
    if let Some(views) = endpoints.next().await
        && !(reporter.report(&views) && reporter.send(ReplicaEvent::Listed))
    {
        return;
    }
    loop {
        let overdue = reporter.next_overdue();
        let going = tokio::select! {
            Some(views) = endpoints.next() => reporter.report(&views),
            Some(count) = counts.next() => reporter.count_seen(count),
            () = shared.lowered.notified() => true,
            () = tokio::time::sleep_until(overdue.unwrap_or_else(Instant::now)), if overdue.is_some() => reporter.check_overdue(),
            else => return,
        };
        if !going {
            return;
        }
    }
}

/// A target whose namespace is known.
struct Resolved<'a> {
    namespace: &'a str,
    deployment: &'a str,
    service: &'a str,
    port: PortRef,
}

/// Makes the writes one after the other, each retried until it goes through — while this instance
/// leads: a write left by an instance that lost the lead is the new leader's to make or not. Each time it
/// comes to lead, it first clears the marks an earlier leader left.
async fn write_in_order(
    scale: DeploymentScale,
    mut queue: mpsc::UnboundedReceiver<Write>,
    shared: Arc<Shared>,
) {
    let mut leadership = shared.leadership.clone();
    // Whether the marks an earlier leader left were cleared since this instance came to lead.
    let mut cleared = false;
    let mut clear_again = FIRST_RETRY;
    loop {
        if !cleared && shared.leadership.leads() {
            cleared = clear_stale_marks(&scale, &shared).await;
            clear_again = if cleared {
                FIRST_RETRY
            } else {
                (clear_again * 2).min(MAX_RETRY)
            };
        }
        let retry = !cleared && shared.leadership.leads();
        let write = tokio::select! {
            write = queue.recv() => match write {
                Some(write) => write,
                None => return,
            },
            () = leadership.changed() => {
                cleared &= shared.leadership.leads();
                continue;
            }
            () = tokio::time::sleep(clear_again), if retry => continue,
        };
        let mut pause = FIRST_RETRY;
        while shared.leadership.leads() {
            let written = match &write {
                Write::Start(count) => start(&scale, &shared, *count).await,
                Write::Stop(pod) => {
                    shared.removals.lock().lowering.insert(pod.clone(), None);
                    match scale.replicas().await {
                        Ok(replicas) => {
                            shared.written.store(replicas.saturating_sub(1), Ordering::SeqCst);
                            let removed = scale.remove(pod, replicas).await;
                            if removed.is_ok() {
                                if let Some(at) = shared.removals.lock().lowering.get_mut(pod) {
                                    *at = Some(Instant::now());
                                }
                                shared.lowered.notify_one();
                            }
                            removed.map_err(|e| ("patch", e))
                        }
                        Err(error) => Err(("get", error)),
                    }
                }
                Write::Unmark(pod) => match scale.unmark(pod).await {
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    unmarked => unmarked.map_err(|e| ("patch", e)),
                },
            };
            match written {
                Ok(()) => break,
                Err((verb, error)) => {
                    shared.metrics.api_error(verb, resource(&write));
                    warn!(app = %shared.app, %error, retry_in_ms = pause.as_millis() as u64, "scale write failed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY);
                }
            }
        }
    }
}

/// Clears the deletion-cost marks of pods this instance is not removing: left by a leader that stopped
/// between marking a pod and seeing it go, a mark would make the ReplicaSet controller take that pod at
/// the next scale-down, drained or not. `false` if the pods could not be listed or a mark not cleared.
async fn clear_stale_marks(scale: &DeploymentScale, shared: &Shared) -> bool {
    let marked = match scale.marked().await {
        Ok(marked) => marked,
        Err(error) => {
            shared.metrics.api_error("list", "pods");
            warn!(app = %shared.app, %error, "cannot look for stale deletion-cost marks; looking again");
            return false;
        }
    };
    let mut cleared = true;
    for pod in marked {
        if shared.removals.lock().asked.contains(&pod) {
            continue;
        }
        match scale.unmark(&pod).await {
            Ok(()) => info!(app = %shared.app, %pod, "stale deletion-cost mark cleared"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                shared.metrics.api_error("patch", "pods");
                warn!(app = %shared.app, %pod, %error, "cannot clear a stale deletion-cost mark; trying again");
                cleared = false;
            }
        }
    }
    cleared
}

/// Raises the count to the replicas reported plus `count`, unless it is that high already.
async fn start(
    scale: &DeploymentScale,
    shared: &Shared,
    count: u32,
) -> Result<(), (&'static str, kube::Error)> {
    let replicas = scale.replicas().await.map_err(|e| ("get", e))?;
    let wanted = shared.reported.load(Ordering::SeqCst).saturating_add(count);
    if wanted <= replicas {
        return Ok(());
    }
    shared.written.store(wanted, Ordering::SeqCst);
    scale.set(wanted).await.map_err(|e| ("patch", e))
}

/// Whether pod `name` has an endpoint in `views` that is not terminating.
fn is_serving(views: &[EndpointView], name: &str) -> bool {
    views
        .iter()
        .any(|view| view.name == name && view.state != tideway_core::ReplicaState::Draining)
}

/// The resource a write failed on, for the API error metric.
fn resource(write: &Write) -> &'static str {
    match write {
        Write::Start(_) => "deployments/scale",
        Write::Stop(_) | Write::Unmark(_) => "pods",
    }
}

/// Tells the scaling loop what the endpoints say — a pod's replica started, turned ready or not ready,
/// is terminating, went (as asked or not) — and what count the Deployment is seen at.
struct Reporter {
    replicas: EndpointReplicas,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<ReplicaEvent>,
    writes: mpsc::UnboundedSender<Write>,
    clock: Arc<dyn Clock>,
    /// The Deployment's count last seen.
    seen: Option<u32>,
    /// A drained pod was kept after a mismatch and must be reported anew.
    kept: bool,
    /// The endpoints last seen.
    last: Vec<EndpointView>,
}

impl Reporter {
    /// Reports what changed with `views`; `false` once the scaling loop is gone.
    fn report(&mut self, views: &[EndpointView]) -> bool {
        self.last = views.to_vec();
        let changes = self.replicas.apply(views, self.clock.now());
        for change in changes {
            let event = match change {
                EndpointChange::Appeared(replica) => {
                    self.shared.reported.fetch_add(1, Ordering::SeqCst);
                    ReplicaEvent::Started(replica)
                }
                EndpointChange::Ready(id) => ReplicaEvent::Ready(id),
                EndpointChange::Unready(id) => ReplicaEvent::Unready(id),
                EndpointChange::Terminating(replica) => {
                    if !self.went_as_asked(replica.name()) {
                        let still_there = |pod: &String, _: &Option<Instant>| is_serving(views, pod);
                        if let Some(kept) = self.take_lowering(still_there)
                            && !self.keep(&kept, &format!("pod {} went instead", replica.name()))
                        {
                            return false;
                        }
                    }
                    ReplicaEvent::Terminating(replica.id())
                }
                EndpointChange::Gone(replica) => {
                    self.shared.reported.fetch_sub(1, Ordering::SeqCst);
                    let expected = self.went_as_asked(replica.name());
                    let mut removals = self.shared.removals.lock();
                    removals.asked.remove(replica.name());
                    removals.lowering.remove(replica.name());
                    drop(removals);
                    ReplicaEvent::Exited {
                        id: replica.id(),
                        expected,
                        detail: "its pod is gone".to_owned(),
                    }
                }
            };
            if !self.send(event) {
                return false;
            }
        }
        // A drained pod kept after a mismatch was forgotten: this look makes it a new replica.
        if std::mem::take(&mut self.kept) {
            return self.report(views);
        }
        true
    }

    /// Whether the pod `name` was asked to stop.
    fn went_as_asked(&self, name: &str) -> bool {
        self.shared.removals.lock().asked.contains(name)
    }

    /// A pod whose count is being lowered and for which `found` holds, taken out of the removals.
    fn take_lowering(&self, found: impl Fn(&String, &Option<Instant>) -> bool) -> Option<String> {
        let mut removals = self.shared.removals.lock();
        let pod = removals
            .lowering
            .iter()
            .find(|(pod, at)| found(pod, at))
            .map(|(pod, _)| pod.clone())?;
        removals.lowering.remove(&pod);
        removals.asked.remove(&pod);
        Some(pod)
    }

    /// When the first drained pod whose count was lowered is due to be seen going.
    fn next_overdue(&self) -> Option<Instant> {
        let removals = self.shared.removals.lock();
        removals.lowering.values().flatten().min().map(|at| *at + SETTLE)
    }

    /// A drained pod still serving [`SETTLE`] after its count was lowered: another pod went instead.
    fn check_overdue(&mut self) -> bool {
        let now = Instant::now();
        let last = self.last.clone();
        let overdue = |pod: &String, at: &Option<Instant>| {
            at.is_some_and(|at| at + SETTLE <= now) && is_serving(&last, pod)
        };
        let Some(kept) = self.take_lowering(overdue) else {
            // Gone in time: nothing to keep.
            let mut removals = self.shared.removals.lock();
            removals
                .lowering
                .retain(|_, at| at.is_none_or(|at| at + SETTLE > now));
            return true;
        };
        if !self.keep(
            &kept,
            "another pod went instead (one without an endpoint, such as a pending pod)",
        ) {
            return false;
        }
        self.kept = false;
        self.report(&last)
    }

    /// The count was lowered for drained pod `kept`, and the ReplicaSet controller took another pod: the
    /// drained one is kept — its mark cleared, reported as a new replica at the next look. Returns `false`
    /// once the scaling loop is gone.
    fn keep(&mut self, kept: &str, went: &str) -> bool {
        self.shared.metrics.mismatch(&self.shared.app);
        warn!(app = %self.shared.app, drained = %kept, went, "scale-down mismatch: another pod than the drained one went; the drained one is kept");
        let _ = self.writes.send(Write::Unmark(kept.to_owned()));
        let Some(replica) = self.replicas.forget(kept) else {
            return true;
        };
        self.shared.reported.fetch_sub(1, Ordering::SeqCst);
        self.kept = true;
        self.send(ReplicaEvent::Exited {
            id: replica.id(),
            expected: true,
            detail: format!("kept as a new replica: {went}"),
        })
    }

    /// The Deployment is seen at `count`: a change tideway did not write is someone else's.
    fn count_seen(&mut self, count: u32) -> bool {
        let before = self.seen.replace(count);
        let ours = self.shared.written.load(Ordering::SeqCst) == count;
        match before {
            Some(from) if from != count && !ours => self.send(ReplicaEvent::Resized { from, to: count }),
            _ => true,
        }
    }

    /// `false` once the scaling loop is gone.
    fn send(&self, event: ReplicaEvent) -> bool {
        self.events.send(event).is_ok()
    }
}
