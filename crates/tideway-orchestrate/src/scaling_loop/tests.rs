//! The scaling loop over an orchestrator that starts replicas at once, on tokio's paused clock: what it starts
//! and drains, what it records, and how it counts a replaced backend's replicas.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use tideway_core::{Admission, Policy, Seat, SpawnThreshold, Waiter};
use tokio::time::Instant;

use super::*;

/// Tokio's clock as timestamps, so that paused time drives the loop's timers and its readings alike.
struct TokioClock(Instant);

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let millis = Instant::now().saturating_duration_since(self.0).as_millis();
        Timestamp::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
    }
}

/// An orchestrator whose replicas start and are ready at once, and which reports what it was asked.
struct FakeOrchestrator {
    app: Arc<App>,
    clock: Arc<dyn Clock>,
    events: mpsc::UnboundedSender<ReplicaEvent>,
    started: AtomicU16,
    stopped: Mutex<Vec<String>>,
}

impl Orchestrator for FakeOrchestrator {
    fn start(&self, count: u32) {
        for _ in 0..count {
            let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            let name = format!("{}-{n}", self.app.name());
            let addr = SocketAddr::from(([127, 0, 0, 1], 40_000 + n));
            let replica = Arc::new(Replica::new(name, addr, ReplicaState::Starting, self.clock.now()));
            let id = replica.id();
            let _ = self.events.send(ReplicaEvent::Started(replica));
            let _ = self.events.send(ReplicaEvent::Ready(id));
        }
    }

    fn stop(&self, replica: &Arc<Replica>) {
        self.stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(replica.name().to_owned());
        let _ = self.events.send(ReplicaEvent::Exited {
            id: replica.id(),
            expected: true,
            detail: "stopped".to_owned(),
        });
    }

    fn shutdown(&self) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// An app under a running scaling loop, with its orchestrator and a way to make its replicas die.
struct Running {
    app: Arc<App>,
    orchestrator: Arc<FakeOrchestrator>,
    handle: ScalingHandle,
}

fn policy(min: u32, max: u32, max_connections: u32) -> Policy {
    Policy {
        min_instances: min,
        max_instances: max,
        max_connections,
        spawn_threshold: SpawnThreshold::new(100).expect("a threshold"),
        scale_down_delay: Duration::from_secs(600),
        ..Policy::default()
    }
}

fn run(name: &str, policy: Policy, predecessors: Vec<Predecessor>) -> Running {
    run_led(name, policy, predecessors, Leadership::always(), true)
}

/// Like [`run`], leading as `leadership` says, the backend's listing sent first if `listed`.
fn run_led(
    name: &str,
    policy: Policy,
    predecessors: Vec<Predecessor>,
    leadership: Leadership,
    listed: bool,
) -> Running {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock(Instant::now()));
    let app = App::new(name, policy, Arc::clone(&clock));
    let (events, receiver) = mpsc::unbounded_channel();
    let orchestrator = Arc::new(FakeOrchestrator {
        app: Arc::clone(&app),
        clock: Arc::clone(&clock),
        events,
        started: AtomicU16::new(0),
        stopped: Mutex::default(),
    });
    let metrics = Arc::new(ScalingMetrics::register(&prometheus::Registry::new()).expect("metrics"));
    let evict: Evict = Arc::new(|_: &Replica| {});
    if listed {
        let _ = orchestrator.events.send(ReplicaEvent::Listed);
    }
    let orchestration = Orchestration {
        orchestrator: Arc::clone(&orchestrator) as Arc<dyn Orchestrator>,
        events: receiver,
        leadership,
    };
    let handle = ScalingLoop::spawn(
        Arc::clone(&app),
        orchestration,
        evict,
        clock,
        metrics,
        predecessors,
    );
    Running {
        app,
        orchestrator,
        handle,
    }
}

impl Running {
    fn ready(&self) -> usize {
        self.app
            .replicas()
            .iter()
            .filter(|r| r.state() == ReplicaState::Ready)
            .count()
    }

    fn decisions(&self) -> Vec<DecisionRecord> {
        self.handle.decisions().recent()
    }

    /// Seats `n` connections (the loop sees them as demand).
    fn seat(&self, n: usize) -> Vec<Seat> {
        (0..n)
            .filter_map(|_| match self.app.admit() {
                Admission::Seated(guard) => Some(guard),
                _ => None,
            })
            .collect()
    }

    /// One more connection, waiting in the queue; its seat arrives on the returned channel.
    fn queue_one(&self) -> Receiver<Seat> {
        let (offer, seat) = sync_channel(1);
        self.app
            .enqueue(Box::new(Queued(offer)))
            .expect("room in the queue");
        seat
    }

    /// The replica named `name` dies on its own.
    fn kill(&self, name: &str) {
        let replicas = self.app.replicas();
        let victim = replicas.iter().find(|r| r.name() == name).expect("the replica");
        let _ = self.orchestrator.events.send(ReplicaEvent::Exited {
            id: victim.id(),
            expected: false,
            detail: "killed".to_owned(),
        });
    }
}

/// A connection waiting in the app's queue; its seat arrives on the channel.
struct Queued(SyncSender<Seat>);

impl Waiter for Queued {
    fn is_abandoned(&self) -> bool {
        false
    }

    fn offer(self: Box<Self>, seat: Seat) -> Result<(), Seat> {
        self.0.try_send(seat).map_err(|error| match error {
            TrySendError::Full(seat) | TrySendError::Disconnected(seat) => seat,
        })
    }
}

/// Polls `check` (on tokio's paused clock, which moves on while the test waits) until it holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..2_000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Each decision moves on from where the one before it left the app.
fn assert_from_follows_on(decisions: &[DecisionRecord]) {
    for pair in decisions.windows(2) {
        assert_eq!(pair[1].from, pair[0].to, "{decisions:#?}");
    }
}

#[tokio::test(start_paused = true)]
async fn min_instances_are_started_at_once_and_recorded() {
    let running = run("a", policy(2, 5, 4), Vec::new());
    eventually("two replicas are ready", || running.ready() == 2).await;
    let decisions = running.decisions();
    assert_eq!(decisions.len(), 1);
    let first = &decisions[0];
    assert_eq!(
        (first.direction, first.reason, first.from, first.to),
        (Direction::Up, ScaleReason::MinInstances, 0, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn demand_starts_replicas_and_each_decision_follows_on_from_the_last() {
    let running = run("a", policy(1, 5, 2), Vec::new());
    eventually("one replica is ready", || running.ready() == 1).await;
    let mut seats = running.seat(2);
    // A third connection waits in the queue: demand 3 needs two replicas.
    assert!(matches!(running.app.admit(), Admission::Wait));
    let seat = running.queue_one();
    eventually("a second replica is ready", || running.ready() == 2).await;
    seats.push(seat.try_recv().expect("the waiter got the new replica's seat"));
    let decisions = running.decisions();
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    assert_eq!(decisions[1].reason, ScaleReason::Threshold);
    assert_from_follows_on(&decisions);
    drop(seats);
}

#[tokio::test(start_paused = true)]
async fn a_lost_replica_is_a_decision_of_its_own_then_replaced() {
    let running = run("a", policy(2, 5, 4), Vec::new());
    eventually("two replicas are ready", || running.ready() == 2).await;
    running.kill("a-1");
    eventually("a replacement is ready", || {
        running.ready() == 2 && running.orchestrator.started.load(Ordering::SeqCst) == 3
    })
    .await;
    let decisions = running.decisions();
    assert_eq!(decisions.len(), 3, "{decisions:#?}");
    let (loss, replacement) = (&decisions[1], &decisions[2]);
    assert_eq!(
        (loss.direction, loss.reason, loss.lost.as_deref()),
        (Direction::Down, ScaleReason::ReplicaLost, Some("a-1"))
    );
    assert_eq!(
        (replacement.direction, replacement.reason),
        (Direction::Up, ScaleReason::ReplicaLost)
    );
    assert_from_follows_on(&decisions);
}

#[tokio::test(start_paused = true)]
async fn a_spare_lost_is_recorded_and_not_replaced() {
    let running = run("a", policy(1, 5, 1), Vec::new());
    eventually("one replica is ready", || running.ready() == 1).await;
    let seats = running.seat(1);
    let seat = running.queue_one();
    eventually("a second replica is ready", || running.ready() == 2).await;
    drop(seats);
    drop(seat);
    // Demand is gone, but scale_down_delay keeps the spare: losing it needs no replacement.
    running.kill("a-2");
    eventually("the loss is recorded", || {
        running.decisions().iter().any(|d| d.lost.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        running.orchestrator.started.load(Ordering::SeqCst),
        2,
        "nothing replaced the spare"
    );
    let decisions = running.decisions();
    assert_from_follows_on(&decisions);
    assert_eq!(decisions.last().map(|d| (d.from, d.to)), Some((2, 1)));
}

#[tokio::test(start_paused = true)]
async fn a_replaced_backends_replicas_count_against_max_instances_until_they_go() {
    let old = run("a", policy(2, 3, 1), Vec::new());
    eventually("the old backend's two replicas are ready", || old.ready() == 2).await;
    let held = old.seat(1);
    old.handle.retire();
    // The old backend drains: its idle replica stops at once, the one holding a connection stays.
    eventually("the idle old replica is gone", || old.app.replicas().len() == 1).await;

    let new = run("a", policy(2, 3, 1), vec![old.handle.as_predecessor()]);
    eventually("the new backend starts what the ceiling allows", || {
        new.ready() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        new.orchestrator.started.load(Ordering::SeqCst),
        2,
        "two new and one old replica: max_instances = 3"
    );
    // Demand for a third replica waits for the old one to go.
    let seats = new.seat(2);
    let seat = new.queue_one();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        new.orchestrator.started.load(Ordering::SeqCst),
        2,
        "capped while the old replica runs"
    );
    drop(held);
    eventually("the old replica is gone", || old.app.replicas().is_empty()).await;
    eventually("the room it left is used", || new.ready() == 3).await;
    assert!(
        seat.try_recv().is_ok(),
        "the waiter is seated on the third replica"
    );
    drop(seats);
}

#[tokio::test(start_paused = true)]
async fn decisions_wait_for_the_backends_listing_and_for_the_lead() {
    let (lead, leading) = tokio::sync::watch::channel(false);
    let running = run_led(
        "a",
        policy(1, 5, 4),
        Vec::new(),
        Leadership::elected(leading),
        false,
    );
    let started = || running.orchestrator.started.load(Ordering::SeqCst);
    // The paused clock runs ahead while the loop has nothing to do.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(started(), 0, "nothing before the listing");
    let _ = running.orchestrator.events.send(ReplicaEvent::Listed);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(started(), 0, "nothing while another instance leads");
    assert!(running.decisions().is_empty());
    lead.send(true).expect("the loop listens");
    eventually("min_instances started by the new leader", || running.ready() == 1).await;
}

#[tokio::test(start_paused = true)]
async fn a_count_lowered_by_someone_else_holds_for_the_delay_and_its_pod_is_no_loss() {
    let running = run("a", policy(1, 5, 1), Vec::new());
    eventually("one replica is ready", || running.ready() == 1).await;
    let seats = running.seat(1);
    assert!(matches!(running.app.admit(), Admission::Wait));
    let waiting = running.queue_one();
    eventually("two replicas are ready", || running.ready() == 2).await;
    let _seats = (seats, waiting.try_recv().expect("the second replica's seat"));

    // Someone sets the count to 1; the ReplicaSet controller removes a pod.
    let _ = running
        .orchestrator
        .events
        .send(ReplicaEvent::Resized { from: 2, to: 1 });
    running.kill("a-2");
    eventually("the pod gone", || running.app.replicas().len() == 1).await;
    let decisions = running.decisions();
    let last = decisions.last().expect("a decision");
    assert_eq!(
        (last.direction, last.reason, last.from, last.to),
        (Direction::Down, ScaleReason::External, 2, 1),
        "{decisions:#?}"
    );
    assert!(
        decisions.iter().all(|d| d.reason != ScaleReason::ReplicaLost),
        "the pod the outside scale-down removed is no loss"
    );

    // Demand still wants two: not before scale_down_delay (600 s) does tideway raise the count again.
    tokio::time::sleep(Duration::from_secs(590)).await;
    assert_eq!(
        running.orchestrator.started.load(Ordering::SeqCst),
        2,
        "the outside count holds"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    eventually("tideway's rule again after the delay", || running.ready() == 2).await;
    let last = running.decisions().last().cloned().expect("a decision");
    assert_eq!(
        (last.direction, last.reason, last.from, last.to),
        (Direction::Up, ScaleReason::Threshold, 1, 2)
    );
}

#[test]
fn a_reader_of_the_log_sees_each_decision_once_and_the_newest_when_it_fell_behind() {
    let log = DecisionLog::default();
    let decision = |to| DecisionRecord {
        at: std::time::SystemTime::UNIX_EPOCH,
        direction: Direction::Up,
        reason: ScaleReason::Threshold,
        from: to - 1,
        to,
        demand: 0,
        revived: Vec::new(),
        window: Vec::new(),
        drained: Vec::new(),
        lost: None,
    };
    assert_eq!(log.since(0), (Vec::new(), 0));
    log.push(decision(1));
    log.push(decision(2));
    let (new, seen) = log.since(0);
    assert_eq!((new.len(), seen), (2, 2));
    log.push(decision(3));
    let (new, seen) = log.since(seen);
    assert_eq!((new, seen), (vec![decision(3)], 3));
    for to in 4..=(3 + REMEMBERED_DECISIONS as u32 + 5) {
        log.push(decision(to));
    }
    let (new, seen) = log.since(seen);
    assert_eq!(new.len(), REMEMBERED_DECISIONS, "the newest that are remembered");
    assert_eq!(
        new.last().map(|d| d.to),
        Some(3 + REMEMBERED_DECISIONS as u32 + 5)
    );
    assert_eq!(log.since(seen).0, []);
}

#[tokio::test(start_paused = true)]
async fn a_scale_up_takes_back_a_draining_replica_and_a_pending_drain_is_marked_leaving() {
    let policy = Policy {
        scale_down_delay: Duration::from_secs(10),
        ..policy(1, 5, 2)
    };
    let running = run("a", policy, Vec::new());
    eventually("one replica is ready", || running.ready() == 1).await;
    let mut on_first = running.seat(2);
    let waiting = running.queue_one();
    eventually("a second replica is ready", || running.ready() == 2).await;
    let on_second = waiting.try_recv().expect("the waiter got the new replica's seat");
    let named = |name: &str| {
        let replicas = running.app.replicas();
        Arc::clone(replicas.iter().find(|r| r.name() == name).expect("the replica"))
    };
    // Demand falls to one replica's worth: the younger of two equally busy replicas is leaving.
    drop(on_first.pop());
    eventually("a-2 is marked leaving", || named("a-2").is_leaving()).await;
    assert!(!named("a-1").is_leaving());
    tokio::time::sleep(Duration::from_secs(11)).await;
    eventually("a-2 drains with its session", || {
        named("a-2").state() == ReplicaState::Draining
    })
    .await;
    // Demand rises again: a-2 is taken back, nothing is started.
    let more = running.seat(1);
    eventually("a-2 is ready again", || {
        named("a-2").state() == ReplicaState::Ready
    })
    .await;
    assert_eq!(running.orchestrator.started.load(Ordering::SeqCst), 2);
    let decisions = running.decisions();
    let last = decisions.last().expect("decisions");
    assert_eq!(
        (last.direction, last.revived.clone(), last.from, last.to),
        (Direction::Up, vec!["a-2".to_owned()], 1, 2)
    );
    let drain = &decisions[decisions.len() - 2];
    let counts: Vec<u32> = drain.window.iter().map(|count| count.desired).collect();
    assert_eq!(
        counts,
        [1],
        "the drain followed ten seconds of one replica's worth: {drain:?}"
    );
    assert_from_follows_on(&decisions);
    drop((on_first, on_second, more));
}
