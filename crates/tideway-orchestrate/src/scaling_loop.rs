//! One app's scaling loop: wakes when demand crosses a threshold, a replica changes, or a delay falls due;
//! asks the pure [`Scaler`] what to do; starts replicas through its orchestrator; drains replicas before
//! stopping exactly those.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tideway_core::{
    App, ArrivalRate, Clock, Decision, Direction, Headroom, Observation, Replica, ReplicaId, ReplicaState,
    ScaleReason, Scaler, Signal, Timestamp, WindowCount,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::metrics::ScalingMetrics;
use crate::orchestrator::{Leadership, Orchestration, Orchestrator, ReplicaEvent};

/// Closes, through the data plane, the connections still open on a replica whose `drain_timeout` passed.
pub type Evict = Arc<dyn Fn(&Replica) + Send + Sync>;

/// How many decisions an app remembers for operators.
const REMEMBERED_DECISIONS: usize = 50;
/// First pause after a failed start; doubles with each consecutive failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between start attempts of an app that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A scaling decision as operators see it: what was done, why, and from which inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    /// Wall-clock time of the decision.
    pub at: SystemTime,
    /// Up or down.
    pub direction: Direction,
    /// Why.
    pub reason: ScaleReason,
    /// Replicas in place or on their way (not draining) before the decision: the `to` of the previous one,
    /// unless a replica was lost or failed to start since.
    pub from: u32,
    /// Replicas wanted after it.
    pub to: u32,
    /// Demand (connections seated and waiting) at the time.
    pub demand: u64,
    /// Draining replicas taken back, by name (a scale-up's, before it starts any).
    pub revived: Vec<String>,
    /// The stabilization window the decision was taken from, oldest first: each desired count and how
    /// long it held (empty for a decision that is not the scaler's).
    pub window: Vec<WindowCount>,
    /// Replicas drained, by name (empty for a scale-up).
    pub drained: Vec<String>,
    /// The replica lost, by name, for a `replica_lost` record of a ready replica that exited.
    pub lost: Option<String>,
}

/// The recent decisions of one app, newest last.
#[derive(Debug, Default)]
pub struct DecisionLog {
    recent: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    /// The newest decisions.
    records: VecDeque<DecisionRecord>,
    /// How many decisions were ever recorded.
    total: u64,
}

/// Controls a running scaling loop.
pub struct ScalingHandle {
    retire: CancellationToken,
    stop: CancellationToken,
    task: JoinHandle<()>,
    predecessor: Predecessor,
    status: ScalingStatus,
}

/// What operators see of a running scaling loop: its recent decisions, whether its backend listed the
/// replicas it had, whether this instance scales.
#[derive(Clone)]
pub struct ScalingStatus {
    decisions: Arc<DecisionLog>,
    listed: Arc<AtomicBool>,
    leadership: Leadership,
}

impl ScalingStatus {
    /// The app's recent decisions.
    pub fn decisions(&self) -> &Arc<DecisionLog> {
        &self.decisions
    }

    /// Whether the backend has reported the replicas that existed before it (the pods of a Deployment):
    /// until then the app may have replicas it does not know of.
    pub fn is_listed(&self) -> bool {
        self.listed.load(Ordering::Acquire)
    }

    /// Whether this instance scales the app.
    pub fn leads(&self) -> bool {
        self.leadership.leads()
    }
}

/// An earlier backend of an app under the same name, replaced by a reload, whose replicas still drain:
/// they count against the new backend's `max_instances`, and each one that goes lets it start another.
#[derive(Clone)]
pub struct Predecessor {
    app: Arc<App>,
    /// Raised each time one of its replicas is gone.
    room: Arc<Signal>,
}

/// What the loop needs to run an app.
pub struct ScalingLoop {
    app: Arc<App>,
    orchestrator: Arc<dyn Orchestrator>,
    events: mpsc::UnboundedReceiver<ReplicaEvent>,
    leadership: Leadership,
    /// Whether the loop led at its last turn: losing the lead abandons its drains.
    led: bool,
    /// Whether the backend reported the replicas that existed before it: decisions wait for it.
    listed: Arc<AtomicBool>,
    evict: Evict,
    clock: Arc<dyn Clock>,
    metrics: Arc<ScalingMetrics>,
    decisions: Arc<DecisionLog>,
    scaler: Scaler,
    /// The app's arrivals over the last minute, for `headroom = "auto"`.
    arrivals: ArrivalRate,
    /// How long the app's last replica took to become ready, for `headroom = "auto"`.
    cold_start: Option<Duration>,
    lost: u32,
    failed_starts: u32,
    pending_starts: u32,
    backoff: Backoff,
    drains: HashMap<ReplicaId, Drain>,
    retiring: bool,
    /// Raised each time a replica leaves the set, for a successor waiting for room.
    room: Arc<Signal>,
    /// Replaced backends of this app still draining.
    predecessors: Vec<Predecessor>,
    /// The last change of the count by someone else, while it holds.
    outside: Option<Outside>,
    /// Replicas an outside scale-down will take away: their departure is no loss.
    departures: u32,
    /// Replicas that were ready and are not now: their return is no start-up.
    unready: HashSet<ReplicaId>,
}

/// Someone else changed the app's count: for one `scale_down_delay`, tideway does not move it back.
#[derive(Debug)]
struct Outside {
    /// The way they moved it.
    direction: Direction,
    until: Timestamp,
}

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    until: Option<Timestamp>,
}

/// The replicas a decision moved, by name.
struct Changed {
    revived: Vec<String>,
    drained: Vec<String>,
}

#[derive(Debug)]
struct Drain {
    deadline: Timestamp,
    evicted_until: Option<Timestamp>,
    stop_requested: bool,
}

impl DecisionLog {
    /// The remembered decisions, oldest first.
    pub fn recent(&self) -> Vec<DecisionRecord> {
        self.lock().records.iter().cloned().collect()
    }

    /// The remembered decisions recorded after the first `seen`, oldest first, and how many were recorded
    /// in all: the `seen` of the next look, for a reader that reports each decision once.
    pub fn since(&self, seen: u64) -> (Vec<DecisionRecord>, u64) {
        let recorded = self.lock();
        let new = usize::try_from(recorded.total.saturating_sub(seen)).unwrap_or(usize::MAX);
        let skip = recorded.records.len().saturating_sub(new);
        (
            recorded.records.iter().skip(skip).cloned().collect(),
            recorded.total,
        )
    }

    fn push(&self, record: DecisionRecord) {
        let mut recorded = self.lock();
        if recorded.records.len() == REMEMBERED_DECISIONS {
            recorded.records.pop_front();
        }
        recorded.records.push_back(record);
        recorded.total += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Ready once a replica of any of `predecessors` is gone.
fn poll_room(predecessors: &[Predecessor], cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
    let mut room = std::task::Poll::Pending;
    for predecessor in predecessors {
        if predecessor.room.poll_raised(cx).is_ready() {
            room = std::task::Poll::Ready(());
        }
    }
    room
}

impl ScalingHandle {
    /// This backend as a predecessor of the one that replaces it.
    pub fn as_predecessor(&self) -> Predecessor {
        self.predecessor.clone()
    }

    /// The app's recent decisions.
    pub fn decisions(&self) -> &Arc<DecisionLog> {
        &self.status.decisions
    }

    /// What operators see of the loop.
    pub fn status(&self) -> ScalingStatus {
        self.status.clone()
    }

    /// The app left the configuration: drain every replica, stop them, and end the loop.
    pub fn retire(&self) {
        self.retire.cancel();
    }

    /// Tideway is stopping: stop every replica now and wait until they are gone.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            error!(%error, "scaling loop failed");
        }
    }

    /// True once the loop ended (a retired app finished draining).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl ScalingLoop {
    /// Starts the scaling loop of `app` over `orchestration`; `predecessors` are the app's replaced
    /// backends still draining.
    pub fn spawn(
        app: Arc<App>,
        orchestration: Orchestration,
        evict: Evict,
        clock: Arc<dyn Clock>,
        metrics: Arc<ScalingMetrics>,
        predecessors: Vec<Predecessor>,
    ) -> ScalingHandle {
        metrics.track(app.name());
        let decisions = Arc::new(DecisionLog::default());
        let retire = CancellationToken::new();
        let stop = CancellationToken::new();
        let room = Arc::new(Signal::default());
        let listed = Arc::new(AtomicBool::new(false));
        let leadership = orchestration.leadership.clone();
        let predecessor = Predecessor {
            app: Arc::clone(&app),
            room: Arc::clone(&room),
        };
        let scaling = ScalingLoop {
            app,
            orchestrator: orchestration.orchestrator,
            events: orchestration.events,
            led: orchestration.leadership.leads(),
            leadership: orchestration.leadership,
            listed: Arc::clone(&listed),
            evict,
            clock,
            metrics,
            decisions: Arc::clone(&decisions),
            scaler: Scaler::default(),
            arrivals: ArrivalRate::default(),
            cold_start: None,
            lost: 0,
            failed_starts: 0,
            pending_starts: 0,
            backoff: Backoff::default(),
            drains: HashMap::new(),
            retiring: false,
            room,
            predecessors,
            outside: None,
            departures: 0,
            unready: HashSet::new(),
        };
        let task = tokio::spawn(scaling.run(retire.clone(), stop.clone()));
        ScalingHandle {
            retire,
            stop,
            task,
            predecessor,
            status: ScalingStatus {
                decisions,
                listed,
                leadership,
            },
        }
    }

    async fn run(mut self, retire: CancellationToken, stop: CancellationToken) {
        self.app.set_on_demand(true);
        loop {
            while let Ok(event) = self.events.try_recv() {
                self.on_event(event);
            }
            let now = self.clock.now();
            let leads = self.leadership.leads();
            if self.led && !leads {
                self.abandon_drains();
            }
            self.led = leads;
            if self.retiring && self.orchestrator.replicas_outlive_it() {
                info!(
                    app = self.app.name(),
                    "app removed from the configuration: its replicas are left as they are"
                );
                break;
            }
            if leads && self.listed.load(Ordering::Acquire) {
                if self.retiring {
                    self.drain_everything(now);
                } else {
                    self.decide(now);
                }
                self.progress_drains(now);
            }
            if self.retiring && self.app.replicas().is_empty() {
                break;
            }
            let next = self.next_wake(now);
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    self.orchestrator.shutdown().await;
                    break;
                }
                () = retire.cancelled(), if !self.retiring => {
                    info!(app = self.app.name(), "app removed from the configuration: draining");
                    self.retiring = true;
                }
                event = self.events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                () = poll_fn(|cx| self.app.poll_scale_signal(cx)) => {}
                () = self.leadership.changed() => {}
                () = poll_fn(|cx| poll_room(&self.predecessors, cx)), if !self.retiring => {}
                () = tokio::time::sleep(next.map_or(Duration::MAX, |at| at.saturating_since(now))), if next.is_some() => {}
            }
        }
        self.app.set_on_demand(false);
    }

    /// Asks the scaler and acts on its decision, then marks the replicas a pending scale-down would drain
    /// so balancing prefers the others.
    fn decide(&mut self, now: Timestamp) {
        self.act(now);
        self.app.mark_leaving(&self.scaler.leaving(&self.app.observe()));
    }

    fn act(&mut self, now: Timestamp) {
        let policy = self.app.policy();
        let mut observation = self.app.observe();
        observation.lost = self.lost;
        observation.failed_starts = self.failed_starts;
        observation.pending_starts = self.pending_starts;
        self.predecessors.retain(|p| !p.app.replicas().is_empty());
        let retiring: usize = self.predecessors.iter().map(|p| p.app.replicas().len()).sum();
        observation.retiring = u32::try_from(retiring).unwrap_or(u32::MAX);
        if policy.headroom == Headroom::Auto {
            self.arrivals.observe(now, self.app.arrivals());
            observation.headroom = self.cold_start.map_or(0, |cold_start| {
                self.arrivals.headroom(observation.demand, cold_start)
            });
        }
        for view in &mut observation.replicas {
            view.revivable = self
                .drains
                .get(&view.id)
                .is_some_and(|drain| !drain.stop_requested && drain.evicted_until.is_none());
        }
        let Some(decision) = self.scaler.decide(&policy, &observation, now) else {
            return;
        };
        let from = self.in_place(&observation);
        self.outside = self.outside.take().filter(|outside| outside.until > now);
        if let Some(outside) = &self.outside
            && decision
                .direction()
                .is_some_and(|direction| direction != outside.direction)
        {
            info!(
                app = self.app.name(),
                wanted = decision.desired,
                count = from,
                hold_ms = outside.until.saturating_since(now).as_millis() as u64,
                "the count set by someone else holds: decision postponed"
            );
            return;
        }
        if decision.start > 0 {
            if let Some(until) = self.backoff.until.filter(|until| *until > now) {
                // Keep the reasons for the start that will happen once the backoff ends.
                info!(
                    app = self.app.name(),
                    wanted = decision.start,
                    retry_in_ms = until.saturating_since(now).as_millis() as u64,
                    "start postponed after failed starts"
                );
                return;
            }
            self.lost = 0;
            self.failed_starts = 0;
            self.pending_starts += decision.start;
            self.orchestrator.start(decision.start);
        }
        let revived = self.revive(&decision);
        let drained = self.begin_drains(&decision, now, policy.drain_timeout);
        self.record(&decision, from, observation.demand, Changed { revived, drained });
    }

    /// Replicas not draining, counting those asked for and not reported yet: what a decision moves from.
    fn in_place(&self, observation: &Observation) -> u32 {
        let active = observation
            .replicas
            .iter()
            .filter(|r| r.state != ReplicaState::Draining)
            .count();
        u32::try_from(active)
            .unwrap_or(u32::MAX)
            .saturating_add(self.pending_starts)
    }

    /// Takes back the draining replicas `decision` names: they take new connections again.
    fn revive(&mut self, decision: &Decision) -> Vec<String> {
        let replicas = self.app.replicas();
        let mut revived = Vec::new();
        for id in &decision.revive {
            if let Some(replica) = replicas.iter().find(|r| r.id() == *id)
                && self.drains.remove(id).is_some()
            {
                replica.set_state(ReplicaState::Ready);
                revived.push(replica.name().to_owned());
            }
        }
        if !revived.is_empty() {
            self.app.replicas_changed();
        }
        revived
    }

    fn begin_drains(&mut self, decision: &Decision, now: Timestamp, drain_timeout: Duration) -> Vec<String> {
        let replicas = self.app.replicas();
        let mut drained = Vec::new();
        for id in &decision.drain {
            if let Some(replica) = replicas.iter().find(|r| r.id() == *id) {
                self.begin_drain(replica, now, drain_timeout);
                drained.push(replica.name().to_owned());
            }
        }
        if !drained.is_empty() {
            self.app.replicas_changed();
        }
        drained
    }

    fn begin_drain(&mut self, replica: &Replica, now: Timestamp, drain_timeout: Duration) {
        replica.set_state(ReplicaState::Draining);
        self.drains.entry(replica.id()).or_insert(Drain {
            deadline: now.saturating_add(drain_timeout),
            evicted_until: None,
            stop_requested: false,
        });
    }

    fn drain_everything(&mut self, now: Timestamp) {
        let drain_timeout = self.app.policy().drain_timeout;
        let replicas = self.app.replicas();
        let fresh: Vec<_> = replicas
            .iter()
            .filter(|r| !self.drains.contains_key(&r.id()))
            .collect();
        for replica in &fresh {
            self.begin_drain(replica, now, drain_timeout);
        }
        if !fresh.is_empty() {
            self.app.replicas_changed();
        }
    }

    /// Stops drained replicas: as soon as their last connection ended, or after `drain_timeout` (closing
    /// what remains, gracefully, through the data plane) plus `close_grace`.
    fn progress_drains(&mut self, now: Timestamp) {
        let replicas = self.app.replicas();
        let close_grace = self.app.policy().close_grace;
        self.drains.retain(|id, _| replicas.iter().any(|r| r.id() == *id));
        for replica in replicas.iter() {
            let Some(drain) = self.drains.get_mut(&replica.id()) else {
                continue;
            };
            if drain.stop_requested {
                continue;
            }
            let evicted_long_enough = drain.evicted_until.is_some_and(|until| until <= now);
            // Drained when no instance seats a connection on it (other instances' as they last
            // reported, with `[cluster]`).
            if replica.total_connections() == 0 || evicted_long_enough {
                info!(
                    app = self.app.name(),
                    replica = replica.name(),
                    "drained: stopping replica"
                );
                self.orchestrator.stop(replica);
                drain.stop_requested = true;
            } else if drain.deadline <= now && drain.evicted_until.is_none() {
                warn!(
                    app = self.app.name(),
                    replica = replica.name(),
                    connections = replica.total_connections(),
                    "drain_timeout passed: closing the remaining connections"
                );
                (self.evict)(replica);
                drain.evicted_until = Some(now.saturating_add(close_grace));
            }
        }
    }

    /// This instance no longer leads: the replicas it was draining take connections again (the new
    /// leader decides which to drain), and its starts asked for are no longer awaited.
    fn abandon_drains(&mut self) {
        let replicas = self.app.replicas();
        self.app.mark_leaving(&[]);
        for replica in replicas.iter() {
            if self.drains.remove(&replica.id()).is_some() && replica.state() == ReplicaState::Draining {
                replica.set_state(ReplicaState::Ready);
            }
        }
        self.app.replicas_changed();
        self.pending_starts = 0;
        self.outside = None;
        info!(
            app = self.app.name(),
            "no longer the leader: another instance scales"
        );
    }

    fn on_event(&mut self, event: ReplicaEvent) {
        let app = Arc::clone(&self.app);
        match event {
            ReplicaEvent::Listed => self.listed.store(true, Ordering::Release),
            ReplicaEvent::Unready(id) => {
                if let Some(replica) = app.replicas().iter().find(|r| r.id() == id)
                    && replica.state() == ReplicaState::Ready
                {
                    replica.set_state(ReplicaState::Starting);
                    app.replicas_changed();
                    self.unready.insert(id);
                    warn!(
                        app = app.name(),
                        replica = replica.name(),
                        "replica no longer ready: no new connections until it is"
                    );
                }
            }
            ReplicaEvent::Terminating(id) => {
                let Some(replica) = app.replicas().iter().find(|r| r.id() == id).cloned() else {
                    return;
                };
                if self.drains.contains_key(&id) || replica.state() == ReplicaState::Draining {
                    return;
                }
                let was = replica.state();
                replica.set_state(ReplicaState::Draining);
                app.replicas_changed();
                self.departed(&replica, was, "it is terminating");
            }
            ReplicaEvent::Resized { from, to } => self.resized(from, to),
            ReplicaEvent::Started(replica) => {
                self.pending_starts = self.pending_starts.saturating_sub(1);
                let mut replicas = (*app.replicas()).clone();
                replicas.push(replica);
                app.set_replicas(replicas);
            }
            ReplicaEvent::Ready(id) => {
                if let Some(replica) = app.replicas().iter().find(|r| r.id() == id)
                    && replica.state() == ReplicaState::Starting
                {
                    replica.set_state(ReplicaState::Ready);
                    app.replicas_changed();
                    if self.unready.remove(&id) {
                        info!(app = app.name(), replica = replica.name(), "replica ready again");
                        return;
                    }
                    self.backoff = Backoff::default();
                    app.resume_starts();
                    let startup = self.clock.now().saturating_since(replica.started_at());
                    self.cold_start = Some(startup);
                    self.metrics.ready(app.name(), startup);
                    info!(
                        app = app.name(),
                        replica = replica.name(),
                        startup_ms = startup.as_millis() as u64,
                        "replica ready"
                    );
                }
            }
            ReplicaEvent::StartFailed { id, error } => {
                let name = match self.remove(id) {
                    Some((replica, _)) => replica.name().to_owned(),
                    // Never reported as started: it was still counted as a pending start.
                    None => {
                        self.pending_starts = self.pending_starts.saturating_sub(1);
                        String::new()
                    }
                };
                self.failed_starts += 1;
                self.metrics.start_failed(app.name());
                let pause = self.backoff.fail(self.clock.now());
                app.pause_starts(self.clock.now().saturating_add(pause));
                error!(app = app.name(), replica = %name, %error, retry_in_ms = pause.as_millis() as u64, "replica failed to start");
            }
            ReplicaEvent::Exited { id, expected, detail } => {
                let drained_by_us = self.drains.contains_key(&id);
                let was_ready = self.unready.contains(&id);
                let Some((replica, state)) = self.remove(id) else {
                    return;
                };
                if expected {
                    info!(app = app.name(), replica = replica.name(), %detail, "replica stopped");
                    return;
                }
                match state {
                    ReplicaState::Ready => self.departed(&replica, state, &detail),
                    ReplicaState::Starting if was_ready => {
                        self.departed(&replica, ReplicaState::Ready, &detail)
                    }
                    ReplicaState::Starting if self.departures > 0 => self.departed(&replica, state, &detail),
                    ReplicaState::Draining if !drained_by_us => {
                        info!(app = app.name(), replica = replica.name(), %detail, "replica gone");
                    }
                    ReplicaState::Starting => {
                        self.failed_starts += 1;
                        self.metrics.start_failed(app.name());
                        let pause = self.backoff.fail(self.clock.now());
                        app.pause_starts(self.clock.now().saturating_add(pause));
                        error!(app = app.name(), replica = replica.name(), %detail, retry_in_ms = pause.as_millis() as u64, "replica exited while starting");
                    }
                    ReplicaState::Draining => {
                        warn!(app = app.name(), replica = replica.name(), %detail, "draining replica exited");
                    }
                }
            }
        }
    }

    /// A replica that was `was` is going or gone unasked: an outside scale-down's, or a loss.
    fn departed(&mut self, replica: &Replica, was: ReplicaState, detail: &str) {
        let app = self.app.name();
        if self.departures > 0 {
            self.departures -= 1;
            info!(
                app,
                replica = replica.name(),
                detail,
                "replica removed by the outside scale-down"
            );
        } else if was == ReplicaState::Ready {
            warn!(app, replica = replica.name(), detail, "replica lost");
            self.lost += 1;
            if self.led {
                self.record_loss(replica);
            }
        } else {
            warn!(app, replica = replica.name(), detail, "starting replica lost");
        }
    }

    /// Someone else set the count from `from` to `to`: recorded as a decision of theirs; for one
    /// `scale_down_delay` tideway does not move the count back, so that it and another writer meet at most
    /// once per delay instead of answering each other's every write.
    fn resized(&mut self, from: u32, to: u32) {
        let direction = if to > from { Direction::Up } else { Direction::Down };
        if to == from || !self.led {
            return;
        }
        let now = self.clock.now();
        if direction == Direction::Down {
            self.departures = self.departures.saturating_add(from - to);
        }
        self.outside = Some(Outside {
            direction,
            until: now.saturating_add(self.app.policy().scale_down_delay),
        });
        let demand = self.app.demand();
        let reason = ScaleReason::External;
        self.metrics.count(self.app.name(), direction, reason);
        warn!(
            app = self.app.name(),
            direction = direction.as_str(),
            reason = reason.as_str(),
            from,
            to,
            demand,
            "scaling decision by someone else: it holds for scale_down_delay"
        );
        self.decisions.push(DecisionRecord {
            at: SystemTime::now(),
            direction,
            reason,
            from,
            to,
            demand,
            revived: Vec::new(),
            window: Vec::new(),
            drained: Vec::new(),
            lost: None,
        });
    }

    /// Takes a replica out of the app's set (no new connections reach it); returns it and its last state.
    fn remove(&mut self, id: ReplicaId) -> Option<(Arc<Replica>, ReplicaState)> {
        self.drains.remove(&id);
        self.unready.remove(&id);
        let replicas = self.app.replicas();
        let removed = replicas.iter().find(|r| r.id() == id).cloned()?;
        let state = removed.state();
        let kept = replicas.iter().filter(|r| r.id() != id).cloned().collect();
        self.app.set_replicas(kept);
        self.room.raise();
        Some((removed, state))
    }

    fn record(&self, decision: &Decision, from: u32, demand: u64, changed: Changed) {
        let Changed { revived, drained } = changed;
        let Some(direction) = decision.direction() else {
            return;
        };
        self.metrics.decision(self.app.name(), decision);
        info!(
            app = self.app.name(),
            direction = direction.as_str(),
            reason = decision.reason.as_str(),
            from,
            to = decision.desired,
            demand,
            start = decision.start,
            revive = ?revived,
            drain = ?drained,
            "scaling decision"
        );
        let window = self
            .scaler
            .window(self.clock.now(), self.app.policy().scale_down_delay);
        self.decisions.push(DecisionRecord {
            at: SystemTime::now(),
            direction,
            reason: decision.reason,
            from,
            to: decision.desired,
            demand,
            revived,
            window,
            drained,
            lost: None,
        });
    }

    /// A ready replica exited unasked: recorded as a decision of its own, whether or not a replacement
    /// follows (the next decision starts one if the app needs it), so the log reads as a sequence.
    fn record_loss(&self, replica: &Replica) {
        let observation = self.app.observe();
        let to = self.in_place(&observation);
        let from = to.saturating_add(1);
        let reason = ScaleReason::ReplicaLost;
        self.metrics
            .count(self.app.name(), Direction::Down, ScaleReason::ReplicaLost);
        info!(
            app = self.app.name(),
            direction = Direction::Down.as_str(),
            reason = reason.as_str(),
            from,
            to,
            demand = observation.demand,
            lost = replica.name(),
            "scaling decision"
        );
        self.decisions.push(DecisionRecord {
            at: SystemTime::now(),
            direction: Direction::Down,
            reason,
            from,
            to,
            demand: observation.demand,
            revived: Vec::new(),
            window: Vec::new(),
            drained: Vec::new(),
            lost: Some(replica.name().to_owned()),
        });
    }

    fn next_wake(&self, now: Timestamp) -> Option<Timestamp> {
        let policy = self.app.policy();
        let drain_times = self
            .drains
            .values()
            .filter(|d| !d.stop_requested)
            .map(|d| match d.evicted_until {
                Some(until) => until,
                None => d.deadline,
            });
        self.scaler
            .next_check(policy.scale_down_delay)
            .into_iter()
            .chain(self.backoff.until.filter(|until| *until > now))
            .chain(
                self.outside
                    .as_ref()
                    .map(|o| o.until)
                    .filter(|until| *until > now),
            )
            .chain(drain_times)
            .min()
    }
}

impl Backoff {
    /// Records a failed start; returns the pause before the next one.
    fn fail(&mut self, now: Timestamp) -> Duration {
        let pause = FIRST_BACKOFF
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_BACKOFF);
        self.failures += 1;
        self.until = Some(now.saturating_add(pause));
        pause
    }
}

#[cfg(test)]
mod tests;
