//! The replay: a trace's connections arrive, in virtual time, at an [`App`] of tideway's core with a
//! candidate policy — the same admission, queue, balancing and [`Scaler`] that run in production — while
//! a model of the backend starts replicas (after a start-up time) and stops drained ones, as the scaling
//! loop does.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tideway_core::{
    App, ArrivalRate, Clock, Direction, Entry, Headroom, ManualClock, Policy, RejectReason, Replica,
    ReplicaId, ReplicaState, Scaler, Seat, Timestamp, Waiter,
};

use crate::figures::{Figures, Sample, Tally};
use crate::trace::Arrival;

/// How long a replica takes from its start to ready in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Startup {
    /// Always this long.
    Fixed(Duration),
    /// One of these, drawn at random for each start (the cold starts a trace observed).
    Observed(Vec<Duration>),
}

/// What happens at a moment of virtual time. Ordered so that at one millisecond seats are given back
/// before replicas turn ready, waits end and new connections arrive: a seat freed in that millisecond
/// is there for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Connection `n` of the trace ends and gives its seat back.
    Leave(usize),
    /// A started replica passes its readiness check.
    Ready(ReplicaId),
    /// Connection `n` has waited as long as it may.
    GiveUp(usize),
    /// Connection `n` arrives.
    Arrive(usize),
    /// A timer of the scaling loop: a scale-down or a `drain_timeout` falls due.
    Wake,
}

/// A connection waiting in the app's queue: its seat, when offered, goes to the inbox.
struct Queued {
    connection: usize,
    abandoned: Arc<AtomicBool>,
    inbox: Arc<Mutex<Vec<(usize, Seat)>>>,
}

impl Waiter for Queued {
    fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    fn offer(self: Box<Self>, seat: Seat) -> Result<(), Seat> {
        if self.is_abandoned() {
            return Err(seat);
        }
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        inbox.push((self.connection, seat));
        Ok(())
    }
}

struct Waiting {
    abandoned: Arc<AtomicBool>,
    timed_out: RejectReason,
}

/// One replay in progress.
struct Replay<'a> {
    arrivals: &'a [Arrival],
    policy: Policy,
    clock: Arc<ManualClock>,
    app: Arc<App>,
    scaler: Scaler,
    arrival_rate: ArrivalRate,
    cold_start: Option<Duration>,
    events: BinaryHeap<Reverse<(u64, Event)>>,
    wakes: HashSet<u64>,
    seats: HashMap<usize, Seat>,
    waiting: HashMap<usize, Waiting>,
    inbox: Arc<Mutex<Vec<(usize, Seat)>>>,
    drains: HashMap<ReplicaId, Timestamp>,
    startup: Startup,
    rng: fastrand::Rng,
    started: u64,
    tally: Tally,
    last_direction: Option<Direction>,
}

/// Replays `arrivals` (one app's, in arrival order) under `policy` until `horizon`, replicas starting
/// as `startup` says (drawn from `seed`). The app starts with `min_instances` ready replicas, as a
/// running app would be. Connections hold their seats for their traced time; `max_connection_age`,
/// `inactive_timeout` and affinity are not modelled (the trace's durations already reflect them).
pub fn replay(
    arrivals: &[Arrival],
    policy: &Policy,
    startup: &Startup,
    seed: u64,
    horizon: Duration,
) -> (Figures, Vec<Sample>) {
    let clock = Arc::new(ManualClock::new(Timestamp::ZERO));
    let app = App::new("simulated", policy.clone(), Arc::clone(&clock) as Arc<dyn Clock>);
    app.set_on_demand(true);
    let mut replay = Replay {
        arrivals,
        policy: policy.clone(),
        clock,
        app,
        scaler: Scaler::default(),
        arrival_rate: ArrivalRate::default(),
        cold_start: None,
        events: BinaryHeap::new(),
        wakes: HashSet::new(),
        seats: HashMap::new(),
        waiting: HashMap::new(),
        inbox: Arc::default(),
        drains: HashMap::new(),
        startup: startup.clone(),
        rng: fastrand::Rng::with_seed(seed),
        started: 0,
        tally: Tally::default(),
        last_direction: None,
    };
    let warm: Vec<_> = (0..policy.min_instances)
        .map(|_| replay.new_replica(ReplicaState::Ready))
        .collect();
    replay.app.set_replicas(warm);
    for (n, arrival) in arrivals.iter().enumerate() {
        replay.at(arrival.at, Event::Arrive(n));
    }
    replay.run(horizon);
    replay.finish(horizon)
}

impl Replay<'_> {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn at(&mut self, when: Duration, event: Event) {
        let millis = u64::try_from(when.as_millis()).unwrap_or(u64::MAX);
        self.events.push(Reverse((millis, event)));
    }

    fn wake_at(&mut self, when: Timestamp) {
        if self.wakes.insert(when.as_millis()) {
            self.events.push(Reverse((when.as_millis(), Event::Wake)));
        }
    }

    fn run(&mut self, horizon: Duration) {
        let end = u64::try_from(horizon.as_millis()).unwrap_or(u64::MAX);
        while let Some(Reverse((millis, event))) = self.events.pop() {
            if millis > end {
                break;
            }
            self.advance_to(millis);
            match event {
                Event::Arrive(n) => self.arrive(n),
                Event::Leave(n) => drop(self.seats.remove(&n)),
                Event::GiveUp(n) => self.give_up(n),
                Event::Ready(id) => self.ready(id),
                Event::Wake => {
                    self.wakes.remove(&millis);
                }
            }
            self.settle();
        }
        self.advance_to(end);
    }

    /// Moves virtual time forward, counting the replicas that ran meanwhile.
    fn advance_to(&mut self, millis: u64) {
        let now = self.now().as_millis();
        if millis > now {
            let replicas = self.app.replicas().len() as u64;
            self.tally.replica_millis += replicas * (millis - now);
            self.clock.advance(Duration::from_millis(millis - now));
        }
    }

    fn arrive(&mut self, n: usize) {
        self.tally.figures.connections += 1;
        match self.app.enter() {
            Entry::Seated(seat) => self.seated(n, seat),
            Entry::Refused(reason) => self.tally.refuse(reason),
            Entry::Wait { timeout, timed_out } => {
                let abandoned = Arc::new(AtomicBool::new(false));
                let waiter = Queued {
                    connection: n,
                    abandoned: Arc::clone(&abandoned),
                    inbox: Arc::clone(&self.inbox),
                };
                if self.app.enqueue(Box::new(waiter)).is_err() {
                    self.tally.refuse(RejectReason::QueueFull);
                    return;
                }
                self.tally.figures.queued += 1;
                self.waiting.insert(n, Waiting { abandoned, timed_out });
                self.at(self.arrivals[n].at + timeout, Event::GiveUp(n));
            }
        }
    }

    fn seated(&mut self, n: usize, seat: Seat) {
        let now = Duration::from_millis(self.now().as_millis());
        self.at(now + self.arrivals[n].held, Event::Leave(n));
        self.seats.insert(n, seat);
    }

    fn give_up(&mut self, n: usize) {
        if let Some(waiting) = self.waiting.remove(&n) {
            waiting.abandoned.store(true, Ordering::Relaxed);
            self.tally.refuse(waiting.timed_out);
            self.app.sweep_queue();
        }
    }

    fn ready(&mut self, id: ReplicaId) {
        if let Some(replica) = self.app.replicas().iter().find(|r| r.id() == id)
            && replica.state() == ReplicaState::Starting
        {
            replica.set_state(ReplicaState::Ready);
            self.cold_start = Some(self.now().saturating_since(replica.started_at()));
            self.app.replicas_changed();
        }
    }

    /// After an event: hands out the seats offered to waiters, and runs the scaling loop's turn, until
    /// neither has anything left to do.
    fn settle(&mut self) {
        loop {
            let offered = std::mem::take(&mut *self.inbox.lock().unwrap_or_else(PoisonError::into_inner));
            for (n, seat) in offered {
                if self.waiting.remove(&n).is_some() {
                    let waited = self.now().saturating_since(Timestamp::from_millis(
                        u64::try_from(self.arrivals[n].at.as_millis()).unwrap_or(u64::MAX),
                    ));
                    self.tally.figures.waits.push(waited);
                    self.seated(n, seat);
                }
            }
            self.scale();
            self.progress_drains();
            self.tally
                .sample(self.now(), &self.app, self.policy.max_connections);
            if self
                .inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            {
                break;
            }
        }
    }

    /// The scaling loop's turn: ask the scaler, take back, start and drain as it says.
    fn scale(&mut self) {
        let now = self.now();
        let mut observation = self.app.observe();
        if self.policy.headroom == Headroom::Auto {
            self.arrival_rate.observe(now, self.app.arrivals());
            observation.headroom = self.cold_start.map_or(0, |cold_start| {
                self.arrival_rate.headroom(observation.demand, cold_start)
            });
        }
        for view in &mut observation.replicas {
            view.revivable = self.drains.contains_key(&view.id);
        }
        if let Some(decision) = self.scaler.decide(&self.policy, &observation, now) {
            for id in &decision.revive {
                if let Some(replica) = self.app.replicas().iter().find(|r| r.id() == *id)
                    && self.drains.remove(id).is_some()
                {
                    replica.set_state(ReplicaState::Ready);
                }
            }
            if !decision.revive.is_empty() {
                self.app.replicas_changed();
            }
            if let Some(direction) = decision.direction() {
                self.tally.figures.decisions += 1;
                if self.last_direction.is_some_and(|last| last != direction) {
                    self.tally.figures.direction_changes += 1;
                }
                self.last_direction = Some(direction);
            }
            let mut replicas = (*self.app.replicas()).clone();
            for _ in 0..decision.start {
                let replica = self.new_replica(ReplicaState::Starting);
                let took = self.startup_time();
                self.at(
                    Duration::from_millis(now.as_millis()) + took,
                    Event::Ready(replica.id()),
                );
                replicas.push(replica);
            }
            if decision.start > 0 {
                self.app.set_replicas(replicas);
            }
            let deadline = now.saturating_add(self.policy.drain_timeout);
            for id in &decision.drain {
                if let Some(replica) = self.app.replicas().iter().find(|r| r.id() == *id) {
                    replica.set_state(ReplicaState::Draining);
                    self.drains.insert(*id, deadline);
                }
            }
            if !decision.drain.is_empty() {
                self.wake_at(deadline);
                self.app.replicas_changed();
            }
        }
        self.app.mark_leaving(&self.scaler.leaving(&self.app.observe()));
        if let Some(due) = self.scaler.next_check(self.policy.scale_down_delay)
            && due > now
        {
            self.wake_at(due);
        }
    }

    /// Stops drained replicas once empty; at `drain_timeout`, closes what is left on them (sessions cut).
    fn progress_drains(&mut self) {
        let now = self.now();
        let mut gone = Vec::new();
        for replica in self.app.replicas().iter() {
            let Some(deadline) = self.drains.get(&replica.id()) else {
                continue;
            };
            if replica.connections() == 0 {
                gone.push(replica.id());
            } else if *deadline <= now {
                let on_it: Vec<usize> = self
                    .seats
                    .iter()
                    .filter(|(_, seat)| seat.replica().id() == replica.id())
                    .map(|(n, _)| *n)
                    .collect();
                self.tally.figures.cut += on_it.len() as u64;
                for n in on_it {
                    drop(self.seats.remove(&n));
                }
                gone.push(replica.id());
            }
        }
        if !gone.is_empty() {
            for id in &gone {
                self.drains.remove(id);
            }
            let kept = self
                .app
                .replicas()
                .iter()
                .filter(|r| !gone.contains(&r.id()))
                .cloned()
                .collect();
            self.app.set_replicas(kept);
        }
    }

    fn new_replica(&mut self, state: ReplicaState) -> Arc<Replica> {
        self.started += 1;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Arc::new(Replica::new(
            format!("r{}", self.started),
            addr,
            state,
            self.now(),
        ))
    }

    fn startup_time(&mut self) -> Duration {
        match &self.startup {
            Startup::Fixed(took) => *took,
            Startup::Observed(seen) if seen.is_empty() => Duration::ZERO,
            Startup::Observed(seen) => seen[self.rng.usize(..seen.len())],
        }
    }

    fn finish(mut self, horizon: Duration) -> (Figures, Vec<Sample>) {
        // What is still seated or waiting at the horizon is let go without counting as refused.
        for waiting in self.waiting.values() {
            waiting.abandoned.store(true, Ordering::Relaxed);
        }
        self.waiting.clear();
        self.seats.clear();
        let tally = std::mem::take(&mut self.tally);
        tally.into_figures(horizon)
    }
}
