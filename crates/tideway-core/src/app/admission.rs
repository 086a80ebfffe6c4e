//! Admission: seating a connection on a replica under `max_connections`, queueing it fairly when every
//! replica is full, and giving the seat back on every exit path.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::App;
use crate::balance::{self, NoSeat};
use crate::clock::Timestamp;
use crate::close::RejectReason;
use crate::replica::{Replica, ReplicaId, ReplicaState};
use crate::scaling::replicas_needed;

/// A seat on a replica: the connection is counted while this value lives.
///
/// Dropping it is the only way to give the seat back, so a connection is uncounted on every exit path —
/// completion, error, client or upstream abort, a panicking task — and a waiting connection takes the freed
/// seat at once.
#[must_use = "the connection is counted only while its seat lives"]
pub struct Seat {
    app: Arc<App>,
    replica: Arc<Replica>,
    on_drop: OnDrop,
}

/// What dropping a [`Seat`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnDrop {
    /// Gives it back and seats the next waiter on it.
    Release,
    /// Gives it back only: the seat was offered to a waiter that had left, under the queue's lock.
    ReleaseQuietly,
    /// Nothing: the seat moved into a [`HeldSeat`].
    Nothing,
}

/// A seat the app's own state keeps (a session's, through its grace). It refers to its app weakly, so
/// what an app holds never keeps the app alive: an app that goes away takes its sessions with it, and
/// their seats go back to their replicas.
pub(crate) struct HeldSeat {
    app: Weak<App>,
    replica: Arc<Replica>,
}

/// A connection waiting in an app's queue for a seat.
///
/// The data plane implements it over a one-shot channel; keeping it a trait keeps this crate free of any
/// async runtime.
pub trait Waiter: Send {
    /// True once the connection stopped waiting (timed out, client gone); it is then skipped.
    fn is_abandoned(&self) -> bool;
    /// Hands the waiter its seat, or gives the seat back if the waiter is gone.
    fn offer(self: Box<Self>, seat: Seat) -> Result<(), Seat>;
}

/// The queue already holds `max_queued` waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// What happened to a connection that asked for a seat.
#[derive(Debug)]
pub enum Admission {
    /// Seated now.
    Seated(Seat),
    /// No seat now; the connection may wait in the queue.
    Wait,
    /// No ready replica; waiting only helps if one is on its way.
    NoReplica,
}

/// What a new connection does about its seat: the data plane's rule, shared with `tideway simulate` so a
/// replayed connection waits exactly as a real one would.
#[derive(Debug)]
pub enum Entry {
    /// Seated now.
    Seated(Seat),
    /// Wait in the queue for up to `timeout`, then be refused as `timed_out`.
    Wait {
        /// How long it may wait: `queue_timeout`, or `startup_timeout` while the app has no ready replica
        /// and starts them on demand.
        timeout: std::time::Duration,
        /// The refusal once that time is out.
        timed_out: RejectReason,
    },
    /// Refused now.
    Refused(RejectReason),
}

/// The app's FIFO of connections waiting for a seat, and how many there are (read without the lock).
pub(super) struct Queue {
    waiting: AtomicUsize,
    entries: Mutex<VecDeque<Box<dyn Waiter>>>,
}

impl App {
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

    /// Connections waiting in the queue (including any that gave up and were not yet swept out).
    pub fn queued(&self) -> usize {
        self.queue.waiting.load(Ordering::SeqCst)
    }

    /// Asks for a seat for a new connection. Connections already waiting go first: while the queue is not
    /// empty, a newcomer is told to wait behind them even if a seat has just freed.
    pub fn admit(self: &Arc<Self>) -> Admission {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        if self.queued() > 0 {
            return Admission::Wait;
        }
        match self.seat_excluding(&[]) {
            Ok(seat) => Admission::Seated(seat),
            Err(NoSeat::Full) => Admission::Wait,
            Err(NoSeat::NoReplica) => Admission::NoReplica,
        }
    }

    /// Asks for a seat for a new connection, and says how long it may wait if none is free. With no ready
    /// replica, an app that starts them on demand makes every connection wait for the first one — up to
    /// `startup_timeout`, whether it is the first to wait or queued behind others; if starts failed and
    /// back off with none under way, waiting could only end in that timeout, so it is refused at once.
    pub fn enter(self: &Arc<Self>) -> Entry {
        let cold = self.is_on_demand() && !self.has_ready_replica();
        if cold && !self.has_replica_on_its_way() && self.starts_paused_for().is_some() {
            return Entry::Refused(RejectReason::NoReplica);
        }
        let policy = self.policy.load();
        match self.admit() {
            Admission::Seated(seat) => Entry::Seated(seat),
            Admission::Wait | Admission::NoReplica if cold => Entry::Wait {
                timeout: policy.startup_timeout,
                timed_out: RejectReason::StartupTimeout,
            },
            Admission::Wait => Entry::Wait {
                timeout: policy.queue_timeout,
                timed_out: RejectReason::QueueTimeout,
            },
            Admission::NoReplica => Entry::Refused(RejectReason::NoReplica),
        }
    }

    /// A seat on a replica not in `tried`, ignoring the queue: for a connection that was already admitted and
    /// must move because its replica refused the TCP connection.
    pub fn seat_excluding(self: &Arc<Self>, tried: &[ReplicaId]) -> Result<Seat, NoSeat> {
        let replica = self.take_seat(tried)?;
        Ok(Seat {
            app: Arc::clone(self),
            replica,
            on_drop: OnDrop::Release,
        })
    }

    /// A seat on `replica` alone, if it takes connections, has room, and nobody waits in the queue (who
    /// would go first): for a session returning to the replica it was on. This instance's allowance does
    /// not stop it — the seat it comes back to was given back a moment ago, here or at the instance it
    /// came from, and is not a new one the peers have not heard of (README, "Several instances").
    pub(crate) fn seat_on(self: &Arc<Self>, replica: &Arc<Replica>) -> Option<Seat> {
        let policy = self.policy.load();
        let open = replica.takes_connections() && replica.is_reachable(self.now());
        if self.queued() > 0 || !open || !replica.try_take_room(policy.max_connections) {
            return None;
        }
        self.seat_taken(&policy);
        Some(Seat {
            app: Arc::clone(self),
            replica: Arc::clone(replica),
            on_drop: OnDrop::Release,
        })
    }

    /// A seat on `replica` that another instance gave up for a session whose client came here (if the
    /// replica takes connections): taken past `max_connections` and the allowance, since this instance's
    /// view still counts that seat at the instance that gave it up — the total stays what it was.
    pub(crate) fn transferred_seat_on(self: &Arc<Self>, replica: &Arc<Replica>) -> Option<Seat> {
        if !replica.takes_connections() {
            return None;
        }
        replica.take_transferred_seat();
        self.seat_taken(&self.policy.load());
        Some(Seat {
            app: Arc::clone(self),
            replica: Arc::clone(replica),
            on_drop: OnDrop::Release,
        })
    }

    /// Queues a connection for the next free seat (FIFO). It may be seated before this returns.
    pub fn enqueue(self: &Arc<Self>, waiter: Box<dyn Waiter>) -> Result<(), QueueFull> {
        let capacity = usize::try_from(self.policy.load().max_queued).unwrap_or(usize::MAX);
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

    /// Connections seated plus connections waiting, here and (as last reported) at the other instances:
    /// what the scaling rule sizes the app for.
    pub fn demand(&self) -> u64 {
        self.local_demand() + self.elsewhere_demand.load(Ordering::Acquire)
    }

    /// Connections seated plus connections waiting at this instance: what it reports to the others.
    pub fn local_demand(&self) -> u64 {
        self.seated.load(Ordering::SeqCst) + self.queued() as u64
    }

    /// Records the demand the other instances last reported in all; the scaler hears of it if that
    /// changes the replicas needed.
    pub fn set_elsewhere_demand(&self, demand: u64) {
        let before = self.demand();
        self.elsewhere_demand.store(demand, Ordering::Release);
        let policy = self.policy.load();
        if replicas_needed(&policy, before) != replicas_needed(&policy, self.demand()) {
            self.scale.raise();
        }
    }

    /// Raises the scale signal if moving from `before` to the current demand changes the replicas needed.
    fn demand_moved(&self, before: u64) {
        self.counts_changed();
        let policy = self.policy.load();
        if replicas_needed(&policy, before) != replicas_needed(&policy, self.demand()) {
            self.scale.raise();
        }
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
            self.leaving.load(Ordering::Relaxed),
        )?;
        self.seat_taken(&policy);
        Ok(replica)
    }

    /// Counts a seat just taken in the app's demand; the scaler hears of it if that changes the replicas
    /// needed.
    fn seat_taken(&self, policy: &crate::Policy) {
        let before = self.seated.fetch_add(1, Ordering::SeqCst) + self.queued() as u64;
        self.counts_changed();
        let before = before + self.elsewhere_demand.load(Ordering::Acquire);
        if replicas_needed(policy, before) != replicas_needed(policy, before + 1) {
            self.scale.raise();
        }
    }

    /// Gives a seat back: the replica's count and the app's demand drop; the scaler hears of it if that
    /// changes the replicas needed or empties a draining replica further.
    fn release_seat(&self, replica: &Replica) {
        replica.release_seat();
        let before = self.seated.fetch_sub(1, Ordering::SeqCst) + self.queued() as u64;
        self.counts_changed();
        let before = before + self.elsewhere_demand.load(Ordering::Acquire);
        let policy = self.policy.load();
        if replica.state() == ReplicaState::Draining
            || replicas_needed(&policy, before) != replicas_needed(&policy, before - 1)
        {
            self.scale.raise();
        }
    }

    pub(crate) fn dispatch(self: &Arc<Self>) {
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
            let seat = Seat {
                app: Arc::clone(self),
                replica,
                on_drop: OnDrop::Release,
            };
            if let Err(mut unwanted) = waiter.offer(seat) {
                unwanted.on_drop = OnDrop::ReleaseQuietly;
            }
        }
        self.queue.waiting.store(entries.len(), Ordering::SeqCst);
    }
}

impl Queue {
    pub(super) fn new() -> Self {
        Queue {
            waiting: AtomicUsize::new(0),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Box<dyn Waiter>>> {
        // The queue holds no invariant a panicking holder could break half-way, so a poisoned lock is usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Seat {
    /// The replica the connection is seated on.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// The app the connection belongs to.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The seat, to be kept by the app's own state.
    pub(crate) fn into_held(mut self) -> HeldSeat {
        self.on_drop = OnDrop::Nothing;
        HeldSeat {
            app: Arc::downgrade(&self.app),
            replica: Arc::clone(&self.replica),
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if self.on_drop != OnDrop::Nothing {
            self.app.release_seat(&self.replica);
        }
        if self.on_drop == OnDrop::Release {
            self.app.dispatch();
        }
    }
}

impl Drop for HeldSeat {
    /// Gives the seat back like a connection's; once the app is gone, to the replica alone.
    fn drop(&mut self) {
        match self.app.upgrade() {
            Some(app) => {
                app.release_seat(&self.replica);
                app.dispatch();
            }
            None => self.replica.release_seat(),
        }
    }
}

impl fmt::Debug for Seat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seat")
            .field("app", &self.app.name)
            .field("replica", &self.replica.name())
            .finish()
    }
}

#[cfg(test)]
mod tests;
