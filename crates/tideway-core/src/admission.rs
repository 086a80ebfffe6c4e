//! Admission: seating a connection on a replica under `max_connections`, queueing it fairly when every
//! replica is full, and giving the seat back on every exit path.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::affinity::Sessions;
use crate::balance::{self, NoSeat};
use crate::clock::{Clock, Timestamp};
use crate::close::{CloseReason, RejectReason};
use crate::policy::Policy;
use crate::recent::Recent;
use crate::replica::{Replica, ReplicaId, ReplicaState};
use crate::scaling::{Observation, ReplicaView, replicas_needed};
use crate::signal::Signal;

/// One routed application as the data plane sees it: its policy, its replicas and the connections waiting.
///
/// The policy and the replica set are read on every connection and written rarely (reload, scaling), so
/// each sits behind an `ArcSwap`: readers never block, writers swap in a new value whole.
pub struct App {
    name: Arc<str>,
    clock: Arc<dyn Clock>,
    policy: ArcSwap<Policy>,
    replicas: ArcSwap<Vec<Arc<Replica>>>,
    queue: Queue,
    rotation: AtomicUsize,
    seated: AtomicU64,
    scale: Signal,
    on_demand: AtomicBool,
    /// Until when starts are held back after failed ones, in milliseconds plus one; 0 = not held back.
    starts_paused_until: AtomicU64,
    stats: AppStats,
    sessions: Sessions,
    attachment: OnceLock<Box<dyn Any + Send + Sync>>,
}

/// A seat on a replica: the connection is counted while this value lives.
///
/// Dropping it is the only way to give the seat back, so a connection is uncounted on every exit path —
/// completion, error, client or upstream abort, a panicking task — and a waiting connection takes the freed
/// seat at once.
#[must_use = "the connection is counted only while the guard lives"]
pub struct ConnectionGuard {
    app: Arc<App>,
    replica: Arc<Replica>,
    dispatch_on_drop: bool,
}

/// A connection waiting in an app's queue for a seat.
///
/// The data plane implements it over a one-shot channel; keeping it a trait keeps this crate free of any
/// async runtime.
pub trait Waiter: Send {
    /// True once the connection stopped waiting (timed out, client gone); it is then skipped.
    fn is_abandoned(&self) -> bool;
    /// Hands the waiter its seat, or gives the seat back if the waiter is gone.
    fn offer(self: Box<Self>, seat: ConnectionGuard) -> Result<(), ConnectionGuard>;
}

/// The queue already holds `queue_size` waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// What happened to a connection that asked for a seat.
#[derive(Debug)]
pub enum Admission {
    /// Seated now.
    Seated(ConnectionGuard),
    /// No seat now; the connection may wait in the queue.
    Wait,
    /// No ready replica; waiting only helps if one is on its way.
    NoReplica,
}

/// Per-app counters of closes and rejections, kept as atomics next to the app so the hot path never
/// touches a metrics registry; exporters read them. Besides the totals, the last minutes' counts, for the
/// status page.
pub struct AppStats {
    clock: Arc<dyn Clock>,
    closed: [AtomicU64; CloseReason::ALL.len()],
    rejected: [AtomicU64; RejectReason::ALL.len()],
    recently_closed: Recent<{ CloseReason::ALL.len() }>,
    recently_rejected: Recent<{ RejectReason::ALL.len() }>,
}

struct Queue {
    waiting: AtomicUsize,
    entries: Mutex<VecDeque<Box<dyn Waiter>>>,
}

impl App {
    /// An app with no replicas yet.
    pub fn new(name: impl Into<Arc<str>>, policy: Policy, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(App {
            name: name.into(),
            clock: Arc::clone(&clock),
            policy: ArcSwap::from_pointee(policy),
            replicas: ArcSwap::from_pointee(Vec::new()),
            queue: Queue {
                waiting: AtomicUsize::new(0),
                entries: Mutex::new(VecDeque::new()),
            },
            rotation: AtomicUsize::new(0),
            seated: AtomicU64::new(0),
            scale: Signal::default(),
            on_demand: AtomicBool::new(false),
            starts_paused_until: AtomicU64::new(0),
            stats: AppStats {
                clock,
                closed: Default::default(),
                rejected: Default::default(),
                recently_closed: Recent::default(),
                recently_rejected: Recent::default(),
            },
            sessions: Sessions::default(),
            attachment: OnceLock::new(),
        })
    }

    /// The app's name: the `app` label everywhere.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Puts a new policy in force for every later decision; waiters are re-examined because a raised
    /// `max_connections` may seat them now.
    pub fn set_policy(self: &Arc<Self>, policy: Policy) {
        self.policy.store(Arc::new(policy));
        self.dispatch();
        self.scale.raise();
    }

    /// The replicas as last set, oldest first.
    pub fn replicas(&self) -> Arc<Vec<Arc<Replica>>> {
        self.replicas.load_full()
    }

    /// Replaces the replica set (ordered oldest first: `pack` fills in this order) and seats waiters on any
    /// new room.
    pub fn set_replicas(self: &Arc<Self>, replicas: Vec<Arc<Replica>>) {
        self.replicas.store(Arc::new(replicas));
        self.dispatch();
    }

    /// To be called after a replica in the set changed state (say, became ready) so waiters can use it.
    pub fn replicas_changed(self: &Arc<Self>) {
        self.dispatch();
    }

    /// Whether any replica takes new connections now: ready, and not in connect-failure backoff. An app
    /// whose only replica just refused a connection has none, and its connections wait for the next.
    pub fn has_ready_replica(&self) -> bool {
        let now = self.now();
        self.replicas
            .load()
            .iter()
            .any(|r| r.state() == ReplicaState::Ready && r.is_reachable(now))
    }

    /// Connections seated on any of the app's replicas.
    pub fn connections(&self) -> u64 {
        self.replicas
            .load()
            .iter()
            .map(|r| u64::from(r.connections()))
            .sum()
    }

    /// Connections waiting in the queue (including any that gave up and were not yet swept out).
    pub fn queued(&self) -> usize {
        self.queue.waiting.load(Ordering::SeqCst)
    }

    /// Close and rejection counters.
    pub fn stats(&self) -> &AppStats {
        &self.stats
    }

    /// Asks for a seat for a new connection. Connections already waiting go first: while the queue is not
    /// empty, a newcomer is told to wait behind them even if a seat has just freed.
    pub fn admit(self: &Arc<Self>) -> Admission {
        if self.queued() > 0 {
            return Admission::Wait;
        }
        match self.seat_excluding(&[]) {
            Ok(guard) => Admission::Seated(guard),
            Err(NoSeat::Full) => Admission::Wait,
            Err(NoSeat::NoReplica) => Admission::NoReplica,
        }
    }

    /// A seat on a replica not in `tried`, ignoring the queue: for a connection that was already admitted and
    /// must move because its replica refused the TCP connection.
    pub fn seat_excluding(self: &Arc<Self>, tried: &[ReplicaId]) -> Result<ConnectionGuard, NoSeat> {
        let replica = self.take_seat(tried)?;
        Ok(ConnectionGuard {
            app: Arc::clone(self),
            replica,
            dispatch_on_drop: true,
        })
    }

    /// A seat on `replica` alone, if it is ready, has room, and nobody waits in the queue (who would go
    /// first): for a session returning to the replica it was on.
    pub(crate) fn seat_on(self: &Arc<Self>, replica: &Arc<Replica>) -> Option<ConnectionGuard> {
        if self.queued() > 0 {
            return None;
        }
        let replica = self.take_seat_among(std::slice::from_ref(replica), &[]).ok()?;
        Some(ConnectionGuard {
            app: Arc::clone(self),
            replica,
            dispatch_on_drop: true,
        })
    }

    /// Queues a connection for the next free seat (FIFO). It may be seated before this returns.
    pub fn enqueue(self: &Arc<Self>, waiter: Box<dyn Waiter>) -> Result<(), QueueFull> {
        let capacity = usize::try_from(self.policy.load().queue_size).unwrap_or(usize::MAX);
        let mut entries = self.queue.lock();
        if entries.len() >= capacity {
            entries.retain(|w| !w.is_abandoned());
            if entries.len() >= capacity {
                self.queue.waiting.store(entries.len(), Ordering::SeqCst);
                return Err(QueueFull);
            }
        }
        let before = self.demand();
        entries.push_back(waiter);
        self.queue.waiting.store(entries.len(), Ordering::SeqCst);
        self.dispatch_locked(&mut entries);
        self.demand_moved(before);
        Ok(())
    }

    /// Removes waiters that gave up, so the queue length reported is the number really waiting. Cheap to
    /// skip: abandoned waiters are also swept whenever the queue is served or full.
    pub fn sweep_queue(&self) {
        if self.queued() > 0 {
            let before = self.demand();
            let mut entries = self.queue.lock();
            entries.retain(|w| !w.is_abandoned());
            self.queue.waiting.store(entries.len(), Ordering::SeqCst);
            drop(entries);
            self.demand_moved(before);
        }
    }

    /// Connections seated plus connections waiting: what the scaling rule sizes the app for.
    pub fn demand(&self) -> u64 {
        self.seated.load(Ordering::SeqCst) + self.queued() as u64
    }

    /// Ready once demand crossed a point where the scaling rule asks for a different replica count, a
    /// connection left a draining replica, or the policy changed, since the last time it was ready.
    /// This is the scaling loop's wake-up: it costs nothing to admissions that change nothing.
    pub fn poll_scale_signal(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.scale.poll_raised(cx)
    }

    /// Declares that replicas are started on demand: a connection that finds none waits for one (up to
    /// `startup_timeout`) instead of being refused.
    pub fn set_on_demand(&self, on_demand: bool) {
        self.on_demand.store(on_demand, Ordering::Relaxed);
    }

    /// Whether replicas are started on demand.
    pub fn is_on_demand(&self) -> bool {
        self.on_demand.load(Ordering::Relaxed)
    }

    /// Declares that no replica will be started before `until` (starts failed and back off). If no replica
    /// is ready or starting, nothing can seat the connections waiting: they are refused now rather than
    /// left to wait out `startup_timeout`, and so is every new one until then.
    pub fn pause_starts(self: &Arc<Self>, until: Timestamp) {
        self.starts_paused_until
            .store(until.as_millis().saturating_add(1), Ordering::SeqCst);
        if !self.has_replica_on_its_way() {
            let before = self.demand();
            let refused: Vec<_> = {
                let mut entries = self.queue.lock();
                let refused = entries.drain(..).collect();
                self.queue.waiting.store(0, Ordering::SeqCst);
                refused
            };
            // Dropped outside the queue's lock: a waiter learns it was refused when its entry is dropped.
            drop(refused);
            self.demand_moved(before);
        }
    }

    /// Starts are no longer held back (a replica became ready).
    pub fn resume_starts(&self) {
        self.starts_paused_until.store(0, Ordering::SeqCst);
    }

    /// How long starts are still held back, if they are.
    pub fn starts_paused_for(&self) -> Option<Duration> {
        let until = self.starts_paused_until.load(Ordering::SeqCst).checked_sub(1)?;
        let left = Timestamp::from_millis(until).saturating_since(self.now());
        (!left.is_zero()).then_some(left)
    }

    /// Whether a connection that finds no seat now can expect one without a new start: a replica is
    /// ready or starting.
    pub fn has_replica_on_its_way(&self) -> bool {
        self.replicas
            .load()
            .iter()
            .any(|r| matches!(r.state(), ReplicaState::Ready | ReplicaState::Starting))
    }

    /// What the scaler needs to decide: demand and every replica's state and load.
    pub fn observe(&self) -> Observation {
        Observation {
            demand: self.demand(),
            replicas: self
                .replicas
                .load()
                .iter()
                .map(|r| ReplicaView {
                    id: r.id(),
                    state: r.state(),
                    connections: r.connections(),
                    started_at: r.started_at(),
                })
                .collect(),
            lost: 0,
            failed_starts: 0,
            pending_starts: 0,
            retiring: 0,
        }
    }

    /// Raises the scale signal if moving from `before` to the current demand changes the replicas needed.
    fn demand_moved(&self, before: u64) {
        let policy = self.policy.load();
        if replicas_needed(&policy, before) != replicas_needed(&policy, self.demand()) {
            self.scale.raise();
        }
    }

    /// Per-app state of another layer (the data plane's session-expiry task), created on first use and
    /// dropped with the app.
    pub fn attachment<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.attachment
            .get_or_init(|| Box::new(init()))
            .downcast_ref::<T>()
    }

    /// The attachment of type `T`, if one was created.
    pub fn existing_attachment<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.attachment.get()?.downcast_ref::<T>()
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn take_seat(&self, tried: &[ReplicaId]) -> Result<Arc<Replica>, NoSeat> {
        self.take_seat_among(&self.replicas.load(), tried)
    }

    fn take_seat_among(
        &self,
        replicas: &[Arc<Replica>],
        tried: &[ReplicaId],
    ) -> Result<Arc<Replica>, NoSeat> {
        let policy = self.policy.load();
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let replica = balance::take_seat(
            replicas,
            policy.balance,
            policy.max_connections,
            self.now(),
            tried,
            rotation,
        )?;
        let before = self.seated.fetch_add(1, Ordering::SeqCst) + self.queued() as u64;
        if replicas_needed(&policy, before) != replicas_needed(&policy, before + 1) {
            self.scale.raise();
        }
        Ok(replica)
    }

    /// Gives a seat back: the replica's count and the app's demand drop; the scaler hears of it if that
    /// changes the replicas needed or empties a draining replica further.
    fn release_seat(&self, replica: &Replica) {
        replica.release_seat();
        let before = self.seated.fetch_sub(1, Ordering::SeqCst) + self.queued() as u64;
        let policy = self.policy.load();
        if replica.state() == ReplicaState::Draining
            || replicas_needed(&policy, before) != replicas_needed(&policy, before - 1)
        {
            self.scale.raise();
        }
    }

    fn dispatch(self: &Arc<Self>) {
        if self.queued() > 0 {
            let before = self.demand();
            let mut entries = self.queue.lock();
            self.dispatch_locked(&mut entries);
            drop(entries);
            self.demand_moved(before);
        }
    }

    /// Seats waiters from the front while seats are free. A seat offered to a waiter that just left is given
    /// back without re-entering dispatch, which would deadlock on the queue lock held here.
    fn dispatch_locked(self: &Arc<Self>, entries: &mut VecDeque<Box<dyn Waiter>>) {
        while let Some(waiter) = entries.pop_front() {
            // The waiter leaves the count before its seat joins it, so demand is never counted twice.
            self.queue.waiting.store(entries.len(), Ordering::SeqCst);
            if waiter.is_abandoned() {
                continue;
            }
            let Ok(replica) = self.take_seat(&[]) else {
                entries.push_front(waiter);
                break;
            };
            let seat = ConnectionGuard {
                app: Arc::clone(self),
                replica,
                dispatch_on_drop: true,
            };
            if let Err(mut unwanted) = waiter.offer(seat) {
                unwanted.dispatch_on_drop = false;
            }
        }
        self.queue.waiting.store(entries.len(), Ordering::SeqCst);
    }
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("replicas", &self.replicas.load().len())
            .field("queued", &self.queued())
            .finish()
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Box<dyn Waiter>>> {
        // The queue holds no invariant a panicking holder could break half-way, so a poisoned lock is usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ConnectionGuard {
    /// The replica the connection is seated on.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// The app the connection belongs to.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.app.release_seat(&self.replica);
        if self.dispatch_on_drop {
            self.app.dispatch();
        }
    }
}

impl fmt::Debug for ConnectionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionGuard")
            .field("app", &self.app.name)
            .field("replica", &self.replica.name())
            .finish()
    }
}

impl AppStats {
    /// Counts one close for `reason`.
    pub fn record_close(&self, reason: CloseReason) {
        self.closed[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.recently_closed.record(reason.index(), self.clock.now());
    }

    /// Closes counted for `reason` in the last [`RECENT_MINUTES`](crate::RECENT_MINUTES) minutes.
    pub fn recently_closed(&self, reason: CloseReason) -> u64 {
        self.recently_closed.count(reason.index(), self.clock.now())
    }

    /// Rejections counted for `reason` in the last [`RECENT_MINUTES`](crate::RECENT_MINUTES) minutes.
    pub fn recently_rejected(&self, reason: RejectReason) -> u64 {
        self.recently_rejected.count(reason.index(), self.clock.now())
    }

    /// Closes counted for `reason` so far.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()].load(Ordering::Relaxed)
    }

    /// Counts one rejection for `reason`.
    pub fn record_reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.recently_rejected.record(reason.index(), self.clock.now());
    }

    /// Rejections counted for `reason` so far.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
