//! One running instance of an app, and the lock-free counters the data plane updates on every connection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Timestamp;

/// Identity of a replica for the life of the process; names can repeat after a restart, ids never do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(u64);

impl ReplicaId {
    /// A fresh id, distinct from every other in this process.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ReplicaId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a replica is in its life (`docs/glossary.md`): only `Ready` replicas receive new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaState {
    /// Launched, not yet passing its readiness check.
    Starting,
    /// Receives new connections.
    Ready,
    /// Receives no new connections; existing ones finish, then the replica goes away.
    Draining,
}

impl ReplicaState {
    /// The label value used in logs, metrics and the admin API.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Starting => "starting",
            ReplicaState::Ready => "ready",
            ReplicaState::Draining => "draining",
        }
    }

    const fn from_u8(v: u8) -> Self {
        match v {
            0 => ReplicaState::Starting,
            1 => ReplicaState::Ready,
            _ => ReplicaState::Draining,
        }
    }

    const fn to_u8(self) -> u8 {
        match self {
            ReplicaState::Starting => 0,
            ReplicaState::Ready => 1,
            ReplicaState::Draining => 2,
        }
    }
}

/// The allowance of a replica no other instance shares: only `max_connections` limits it.
pub const UNLIMITED: u32 = u32::MAX;

/// Longest a replica is skipped after repeated connect failures, so a dead static address is retried now and then.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First skip after a connect failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// One running instance of an app with its live connection count.
///
/// Shared (`Arc`) between the replica set, the connections seated on it and the orchestrator that owns it.
/// Every field the data plane touches per connection is an atomic, so admission never takes a lock.
pub struct Replica {
    id: ReplicaId,
    name: Box<str>,
    addr: SocketAddr,
    started_at: Timestamp,
    state: AtomicU8,
    connections: AtomicU32,
    /// Connections other tideway instances seat here, as they last reported.
    elsewhere: AtomicU32,
    /// Seats this instance may still take here before it hears from its peers again; [`UNLIMITED`] when
    /// it runs alone.
    allowance: AtomicU32,
    /// Another instance (the leader) drains this replica: no new connections here either.
    drained_elsewhere: AtomicBool,
    /// A pending scale-down will drain this replica: new connections go elsewhere while others have room.
    leaving: AtomicBool,
    connect_failures: AtomicU32,
    unreachable_until: AtomicU64,
}

impl Replica {
    /// A replica named `name` (the `replica` label: process name, pod name or address) listening on `addr`.
    pub fn new(
        name: impl Into<Box<str>>,
        addr: SocketAddr,
        state: ReplicaState,
        started_at: Timestamp,
    ) -> Self {
        Replica {
            id: ReplicaId::next(),
            name: name.into(),
            addr,
            started_at,
            state: AtomicU8::new(state.to_u8()),
            connections: AtomicU32::new(0),
            elsewhere: AtomicU32::new(0),
            allowance: AtomicU32::new(UNLIMITED),
            drained_elsewhere: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            connect_failures: AtomicU32::new(0),
            unreachable_until: AtomicU64::new(0),
        }
    }

    /// Identity for the life of the process.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// Name shown in logs, metrics and the admin API.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Address the data plane connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// When the replica was launched; breaks ties in favour of removing the youngest.
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// Current life-cycle state.
    pub fn state(&self) -> ReplicaState {
        ReplicaState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves the replica to `state`; the app must be told ([`crate::App::replicas_changed`]) so queued
    /// connections can use a replica that became ready.
    pub fn set_state(&self, state: ReplicaState) {
        self.state.store(state.to_u8(), Ordering::Release);
    }

    /// Connections this instance seats on this replica right now.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections other tideway instances seat on this replica, as they last reported.
    pub fn elsewhere(&self) -> u32 {
        self.elsewhere.load(Ordering::Acquire)
    }

    /// Records what the other instances last reported of this replica; the caller tells the app
    /// ([`crate::App::replicas_changed`]) when seats came free, so waiters take them.
    pub fn set_elsewhere(&self, connections: u32) {
        self.elsewhere.store(connections, Ordering::Release);
    }

    /// Connections on this replica from every instance: this one's, and the others' as last reported.
    pub fn total_connections(&self) -> u32 {
        self.connections().saturating_add(self.elsewhere())
    }

    /// Whether another instance drains this replica, as it last reported: it then takes no new
    /// connection from this one either, so the drain can end.
    pub fn is_drained_elsewhere(&self) -> bool {
        self.drained_elsewhere.load(Ordering::Acquire)
    }

    /// Records whether another instance drains this replica.
    pub fn set_drained_elsewhere(&self, drained: bool) {
        self.drained_elsewhere.store(drained, Ordering::Release);
    }

    /// Whether a pending scale-down will drain it ([`crate::App::mark_leaving`]): balancing then seats new
    /// connections on the replicas that will stay while they have room, so this one empties sooner.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    /// Records whether a pending scale-down will drain it ([`crate::App::mark_leaving`] marks an app's).
    pub(crate) fn set_leaving(&self, leaving: bool) {
        self.leaving.store(leaving, Ordering::Relaxed);
    }

    /// Whether it takes new connections here: ready, and drained by no other instance.
    pub fn takes_connections(&self) -> bool {
        self.state() == ReplicaState::Ready && !self.is_drained_elsewhere()
    }

    /// Seats this instance may still take here before it hears from its peers again.
    pub fn allowance(&self) -> u32 {
        self.allowance.load(Ordering::Acquire)
    }

    /// Grants this instance `seats` more seats here until the next grant ([`UNLIMITED`]: no other
    /// instance shares the replica); the caller tells the app ([`crate::App::replicas_changed`]) when
    /// seats were granted, so waiters take them.
    pub fn set_allowance(&self, seats: u32) {
        self.allowance.store(seats, Ordering::Release);
    }

    /// Takes a seat if fewer than `max` are taken, counting those other instances seat here, and if the
    /// allowance has one left. Across instances, the allowance bounds what one instance takes on a view
    /// its peers have not corrected yet.
    pub(crate) fn try_take_seat(&self, max: u32) -> bool {
        // Alone (the common case), the allowance costs one load.
        let limited = self.allowance.load(Ordering::Acquire) != UNLIMITED;
        if limited
            && self
                .allowance
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |seats| match seats {
                    UNLIMITED => Some(UNLIMITED),
                    seats => seats.checked_sub(1),
                })
                .is_err()
        {
            return false;
        }
        if self.try_take_room(max) {
            return true;
        }
        // The allowance's seat was not used: it stays granted.
        if limited {
            let _ = self
                .allowance
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |seats| {
                    (seats != UNLIMITED).then(|| seats.saturating_add(1))
                });
        }
        false
    }

    /// Takes a seat if fewer than `max` are taken, counting those other instances seat here, whatever the
    /// allowance: for a session coming back to its replica, whose seat was just given back — here, or at
    /// the instance it came from. The compare-and-swap makes `max` a hard limit under any concurrency
    /// within this instance, which a load-then-add could overshoot.
    pub(crate) fn try_take_room(&self, max: u32) -> bool {
        let elsewhere = self.elsewhere();
        let mut current = self.connections.load(Ordering::SeqCst);
        loop {
            if current.saturating_add(elsewhere) >= max {
                return false;
            }
            match self.connections.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Takes a seat whatever the count: for one another instance just gave up here, which this instance
    /// still counts at that instance until its next report.
    pub(crate) fn take_transferred_seat(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn release_seat(&self) {
        self.connections.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether new connections may be tried here at `now`: false for a while after connect failures.
    pub fn is_reachable(&self, now: Timestamp) -> bool {
        self.unreachable_until.load(Ordering::Relaxed) <= now.as_millis()
    }

    /// Records a failed connect: the replica is out of routing for a backoff that doubles with each
    /// consecutive failure (0.5 s up to 30 s), so one dead address does not cost every request a failed
    /// connect. Returns the backoff, after which connections waiting for a seat may try it again.
    pub fn record_connect_failure(&self, now: Timestamp) -> Duration {
        let failures = self.connect_failures.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = FIRST_BACKOFF.saturating_mul(1 << failures).min(MAX_BACKOFF);
        self.unreachable_until
            .store(now.saturating_add(backoff).as_millis(), Ordering::Relaxed);
        backoff
    }

    /// Records a successful connect, ending any backoff.
    pub fn record_connect_success(&self) {
        if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
            self.unreachable_until.store(0, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("state", &self.state())
            .field("connections", &self.connections())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica() -> std::sync::Arc<Replica> {
        crate::testing::replica_at("r", 0, ReplicaState::Ready)
    }

    #[test]
    fn seats_are_capped() {
        let r = replica();
        assert!(r.try_take_seat(2));
        assert!(r.try_take_seat(2));
        assert!(!r.try_take_seat(2));
        r.release_seat();
        assert!(r.try_take_seat(2));
        assert_eq!(r.connections(), 2);
    }

    #[test]
    fn seats_taken_elsewhere_count_against_the_cap() {
        let r = replica();
        r.set_elsewhere(2);
        assert!(r.try_take_seat(3));
        assert!(!r.try_take_seat(3), "two elsewhere and one here fill three seats");
        assert_eq!((r.connections(), r.total_connections()), (1, 3));
        r.set_elsewhere(0);
        assert!(r.try_take_seat(3));
    }

    #[test]
    fn the_allowance_bounds_the_seats_taken_until_the_next_grant() {
        let r = replica();
        assert_eq!(r.allowance(), UNLIMITED);
        r.set_allowance(2);
        assert!(r.try_take_seat(10));
        assert!(r.try_take_seat(10));
        assert!(!r.try_take_seat(10), "the allowance is used up");
        assert_eq!((r.connections(), r.allowance()), (2, 0));
        r.set_allowance(5);
        r.set_elsewhere(7);
        assert!(r.try_take_seat(10));
        assert!(!r.try_take_seat(10), "full: ten seats taken in all");
        assert_eq!(r.allowance(), 4, "a seat refused for room keeps the allowance");
        r.release_seat();
        assert_eq!(
            r.allowance(),
            4,
            "a seat given back is for the next grant to hand out"
        );
        r.set_allowance(0);
        r.set_elsewhere(7);
        assert!(
            r.try_take_room(10),
            "a returning session needs room, not the allowance"
        );
        assert!(!r.try_take_room(10), "but room it needs");
    }

    #[test]
    fn connect_failures_back_off_exponentially_and_success_resets() {
        let r = replica();
        let t0 = Timestamp::from_millis(1_000);
        r.record_connect_failure(t0);
        assert!(!r.is_reachable(t0.saturating_add(Duration::from_millis(499))));
        assert!(r.is_reachable(t0.saturating_add(Duration::from_millis(500))));
        r.record_connect_failure(t0);
        assert!(!r.is_reachable(t0.saturating_add(Duration::from_millis(999))));
        for _ in 0..40 {
            r.record_connect_failure(t0);
        }
        assert!(r.is_reachable(t0.saturating_add(MAX_BACKOFF)));
        r.record_connect_success();
        assert!(r.is_reachable(t0));
    }

    #[test]
    fn state_round_trips() {
        let r = replica();
        for s in [
            ReplicaState::Starting,
            ReplicaState::Draining,
            ReplicaState::Ready,
        ] {
            r.set_state(s);
            assert_eq!(r.state(), s);
        }
    }
}
