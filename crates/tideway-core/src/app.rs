//! One routed application: its policy, its replicas, its counters and its sessions, read on every
//! connection and written rarely. Seating connections on it is [`admission`]'s.

pub(crate) mod admission;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::affinity::Sessions;
use crate::clock::{Clock, Timestamp};
use crate::close::{CloseReason, RejectReason};
use crate::policy::Policy;
use crate::recent::Recent;
use crate::replica::{Replica, ReplicaId, ReplicaState};
use crate::scaling::{Observation, ReplicaView};
use crate::signal::Signal;
use admission::Queue;

/// One routed application as the data plane sees it: its policy, its replicas and the connections waiting.
///
/// The policy and the replica set are read on every connection and written rarely (reload, scaling), so
/// each sits behind an `ArcSwap`: readers never block, writers swap in a new value whole.
pub struct App {
    id: AppId,
    name: Arc<str>,
    clock: Arc<dyn Clock>,
    policy: ArcSwap<Policy>,
    replicas: ArcSwap<Vec<Arc<Replica>>>,
    queue: Queue,
    rotation: AtomicUsize,
    seated: AtomicU64,
    /// New connections that asked for a seat, ever: read by the scaling loop for the arrival rate.
    arrivals: AtomicU64,
    /// Whether some replica is marked leaving: balancing reads the marks only then.
    leaving: AtomicBool,
    /// Demand at the other instances, as they last reported it in all.
    elsewhere_demand: AtomicU64,
    scale: Signal,
    /// Raised at every change of this instance's counts, for the one that reports them to the others.
    counts: Signal,
    /// Whether anyone listens to `counts`: until then, raising it is skipped (one load per change).
    counts_watched: AtomicBool,
    on_demand: AtomicBool,
    /// Until when starts are held back after failed ones, in milliseconds plus one; 0 = not held back.
    starts_paused_until: AtomicU64,
    stats: AppStats,
    sessions: Sessions,
}

/// Identity of an app for the life of the process, by which other layers key what they keep per app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppId(u64);

impl AppId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        AppId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
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

impl App {
    /// An app with no replicas yet.
    pub fn new(name: impl Into<Arc<str>>, policy: Policy, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(App {
            id: AppId::next(),
            name: name.into(),
            clock: Arc::clone(&clock),
            policy: ArcSwap::from_pointee(policy),
            replicas: ArcSwap::from_pointee(Vec::new()),
            queue: Queue::new(),
            rotation: AtomicUsize::new(0),
            seated: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            leaving: AtomicBool::new(false),
            elsewhere_demand: AtomicU64::new(0),
            scale: Signal::default(),
            counts: Signal::default(),
            counts_watched: AtomicBool::new(false),
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
        })
    }

    /// Identity for the life of the process: an app replaced on reload under the same name is another app.
    pub fn id(&self) -> AppId {
        self.id
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
        self.counts_changed();
    }

    /// To be called after a replica in the set changed state (say, became ready or started draining)
    /// so waiters can use it, and the other instances hear of it.
    pub fn replicas_changed(self: &Arc<Self>) {
        self.dispatch();
        self.counts_changed();
    }

    /// To be called after other instances' counts on the replicas fell: waiters take the seats, and the
    /// scaler looks again (a draining replica may now be empty everywhere).
    pub fn elsewhere_fell(self: &Arc<Self>) {
        self.dispatch();
        self.scale.raise();
    }

    /// Whether any replica takes new connections now: ready, and not in connect-failure backoff. An app
    /// whose only replica just refused a connection has none, and its connections wait for the next.
    pub fn has_ready_replica(&self) -> bool {
        let now = self.now();
        self.replicas
            .load()
            .iter()
            .any(|r| r.takes_connections() && r.is_reachable(now))
    }

    /// Connections seated on any of the app's replicas.
    pub fn connections(&self) -> u64 {
        self.replicas
            .load()
            .iter()
            .map(|r| u64::from(r.connections()))
            .sum()
    }

    /// Close and rejection counters.
    pub fn stats(&self) -> &AppStats {
        &self.stats
    }

    /// Ready once demand crossed a point where the scaling rule asks for a different replica count, a
    /// connection left a draining replica, or the policy changed, since the last time it was ready.
    /// This is the scaling loop's wake-up: it costs nothing to admissions that change nothing.
    pub fn poll_scale_signal(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.scale.poll_raised(cx)
    }

    /// Ready once this instance's counts changed (a seat taken or given back, the queue moved) since the
    /// last time it was ready: the wake-up of the task that reports them to the other instances. Raises
    /// coalesce, so a burst costs it one look.
    pub fn poll_counts_changed(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.counts_watched.store(true, Ordering::Relaxed);
        self.counts.poll_raised(cx)
    }

    /// Tells the one that reports this instance's counts that they changed, if anyone does.
    pub(crate) fn counts_changed(&self) {
        if self.counts_watched.load(Ordering::Relaxed) {
            self.counts.raise();
        }
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

    /// Marks the replicas in `leaving` — those a pending scale-down would drain ([`crate::Scaler::leaving`])
    /// — and no other: balancing seats new connections elsewhere while others have room, so they empty
    /// sooner.
    pub fn mark_leaving(&self, leaving: &[ReplicaId]) {
        for replica in self.replicas.load().iter() {
            replica.set_leaving(leaving.contains(&replica.id()));
        }
        self.leaving.store(!leaving.is_empty(), Ordering::Relaxed);
    }

    /// New connections that asked for a seat since the app was created (for `headroom = "auto"`).
    pub fn arrivals(&self) -> u64 {
        self.arrivals.load(Ordering::Relaxed)
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
                    connections: r.total_connections(),
                    started_at: r.started_at(),
                    revivable: false,
                })
                .collect(),
            lost: 0,
            failed_starts: 0,
            pending_starts: 0,
            retiring: 0,
            headroom: 0,
        }
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
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
