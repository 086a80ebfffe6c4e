//! The scaling policy (`docs/glossary.md`, "Scaling"), as a pure function of what the app looks like now:
//! how many replicas it needs, which to start or drain, and why.

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::policy::Policy;
use crate::replica::{ReplicaId, ReplicaState};

/// Why a scaling decision was taken; the names are the `reason` label in logs, metrics and the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScaleReason {
    /// Occupancy crossed `spawn_threshold`.
    Threshold,
    /// Below the floor `min_instances` (at start, or after losing replicas with little demand).
    MinInstances,
    /// Demand asks for more than `max_instances` allows; the decision is capped.
    MaxInstances,
    /// Every count desired during `scale_down_delay` was below the replicas in place.
    Idle,
    /// A replica failed to become ready within `startup_timeout`, or exited while starting.
    Startup,
    /// A ready replica exited or disappeared.
    ReplicaLost,
    /// Someone else changed the replica count (on Kubernetes: `kubectl scale`, an HPA, a GitOps apply).
    External,
}

/// One count of the stabilization window, as operators see what led to a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowCount {
    /// Replicas desired (or found in place).
    pub desired: u32,
    /// How long it held within the window.
    pub held: Duration,
    /// The highest demand seen while it held.
    pub demand: u64,
}

/// One count of the window as the scaler keeps it.
#[derive(Clone, Copy, Debug)]
struct Held {
    since: Timestamp,
    desired: u32,
    demand: u64,
}

/// Which way a decision moves the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Starts replicas.
    Up,
    /// Drains replicas.
    Down,
}

/// One replica as the scaler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    /// Its identity.
    pub id: ReplicaId,
    /// Starting, ready or draining.
    pub state: ReplicaState,
    /// Connections seated on it.
    pub connections: u32,
    /// When it was launched (younger replicas are drained first among equals).
    pub started_at: Timestamp,
    /// A draining replica the scaler drained and that still runs: a scale-up takes it back before
    /// starting a new one (it is warm, and its sessions are still on it). Not one going away for
    /// another reason (a terminating pod, one past `drain_timeout`).
    pub revivable: bool,
}

/// What the app looks like at the moment of a decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Connections seated plus connections waiting for a seat.
    pub demand: u64,
    /// Every replica, draining ones included.
    pub replicas: Vec<ReplicaView>,
    /// Ready replicas lost since the previous decision.
    pub lost: u32,
    /// Starts that failed since the previous decision.
    pub failed_starts: u32,
    /// Replicas asked for that the backend has not reported yet: starting capacity, not drainable.
    pub pending_starts: u32,
    /// Replicas of the app's replaced backend, still draining their sessions: they run, so they count
    /// against `max_instances`, but they are not the app's to drain or count as capacity.
    pub retiring: u32,
    /// Spare seats to keep beyond the demand (`headroom = "auto"`: [`crate::ArrivalRate::headroom`]).
    pub headroom: u64,
}

/// A scaling action and its explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Replicas the app should have (not draining), within `min_instances..=max_instances`.
    pub desired: u32,
    /// Replicas to start now.
    pub start: u32,
    /// Draining replicas to take back now, before any start.
    pub revive: Vec<ReplicaId>,
    /// Replicas to drain now.
    pub drain: Vec<ReplicaId>,
    /// Why.
    pub reason: ScaleReason,
}

/// The scaler's memory between decisions: the desired counts of the last `scale_down_delay`, its
/// stabilization window.
///
/// Pure and synchronous; the runtime calls [`Scaler::decide`] whenever something changed and at
/// [`Scaler::next_check`] for time-based transitions.
#[derive(Clone, Debug, Default)]
pub struct Scaler {
    /// Each desired count since when it held (and the highest demand meanwhile), oldest first; the last
    /// one holds now. The first may have
    /// begun before the window and still count, as it held at the window's start. Replicas found in
    /// place beyond the window's counts enter it as desired when seen.
    window: VecDeque<Held>,
    /// The replicas in place (not draining) at the last look: more than that, and more than the window
    /// asks for, came unasked.
    in_place: u32,
}

/// Replicas needed for `demand` connections before clamping: `ceil(demand / (max_connections ×
/// spawn_threshold / 100))`, computed exactly in integers.
pub fn replicas_needed(policy: &Policy, demand: u64) -> u64 {
    let per_replica = u64::from(policy.max_connections) * u64::from(policy.spawn_threshold.percent());
    (demand * 100).div_ceil(per_replica.max(1))
}

/// The order replicas are drained in: the fewest connections first, the youngest among equals.
fn drain_order(replicas: &mut [&ReplicaView]) {
    replicas.sort_by(|a, b| {
        a.connections
            .cmp(&b.connections)
            .then(b.started_at.cmp(&a.started_at))
    });
}

impl Decision {
    /// Up, down, or neither (a decision that only records a cap).
    pub fn direction(&self) -> Option<Direction> {
        if self.start > 0 || !self.revive.is_empty() {
            Some(Direction::Up)
        } else if !self.drain.is_empty() {
            Some(Direction::Down)
        } else {
            None
        }
    }
}

impl ScaleReason {
    /// Every reason.
    pub const ALL: [ScaleReason; 7] = [
        ScaleReason::Threshold,
        ScaleReason::MinInstances,
        ScaleReason::MaxInstances,
        ScaleReason::Idle,
        ScaleReason::Startup,
        ScaleReason::ReplicaLost,
        ScaleReason::External,
    ];

    /// The label value used in logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            ScaleReason::Threshold => "threshold",
            ScaleReason::MinInstances => "min_instances",
            ScaleReason::MaxInstances => "max_instances",
            ScaleReason::Idle => "idle",
            ScaleReason::Startup => "startup",
            ScaleReason::ReplicaLost => "replica_lost",
            ScaleReason::External => "external",
        }
    }
}

impl Direction {
    /// Both directions.
    pub const ALL: [Direction; 2] = [Direction::Up, Direction::Down];

    /// The label value used in logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

impl Scaler {
    /// Decides what to do now. Returns `None` when nothing is to be done. The desired count is the rule's
    /// for the demand plus the observation's headroom.
    ///
    /// - Scale up at once to the desired count; the capacity of `starting` replicas counts, so a burst
    ///   does not overshoot; replicas the scaler is draining are taken back first (the busiest first), and
    ///   only then are new ones started, never beyond `max_instances` counting starting and draining
    ///   replicas, those of a replaced backend included.
    /// - Scale down to the highest count desired during the last `scale_down_delay` (the stabilization
    ///   window of the Kubernetes HPA and Knative), as soon as that is below the replicas in place: a dip
    ///   shorter than the delay moves nothing, a fall lasting longer is followed step by step, never below
    ///   what the window still asks for. Never below `min_instances`; the replicas drained are those with
    ///   the fewest connections (the youngest among equals).
    pub fn decide(&mut self, policy: &Policy, observation: &Observation, now: Timestamp) -> Option<Decision> {
        let needed = replicas_needed(policy, observation.demand.saturating_add(observation.headroom));
        let desired = u32::try_from(needed)
            .unwrap_or(u32::MAX)
            .clamp(policy.min_instances, policy.max_instances);
        let pending = observation.pending_starts;
        let total = u32::try_from(observation.replicas.len())
            .unwrap_or(u32::MAX)
            .saturating_add(pending)
            .saturating_add(observation.retiring);
        let active: Vec<&ReplicaView> = observation
            .replicas
            .iter()
            .filter(|r| r.state != ReplicaState::Draining)
            .collect();
        let active_count = u32::try_from(active.len())
            .unwrap_or(u32::MAX)
            .saturating_add(pending);
        self.remember(
            desired,
            active_count,
            observation.demand,
            now,
            policy.scale_down_delay,
        );

        if desired > active_count {
            let wanted = desired - active_count;
            let mut revivable: Vec<&ReplicaView> = observation
                .replicas
                .iter()
                .filter(|r| r.state == ReplicaState::Draining && r.revivable)
                .collect();
            // The busiest first: it would take longest to empty.
            revivable.sort_by(|a, b| {
                b.connections
                    .cmp(&a.connections)
                    .then(b.started_at.cmp(&a.started_at))
            });
            let revive: Vec<ReplicaId> = revivable.iter().take(wanted as usize).map(|r| r.id).collect();
            let wanted = wanted - revive.len() as u32;
            // A replica taken back already counts in `total`: it takes no room under `max_instances`.
            let start = wanted.min(policy.max_instances.saturating_sub(total));
            let reason = if observation.lost > 0 {
                ScaleReason::ReplicaLost
            } else if observation.failed_starts > 0 {
                ScaleReason::Startup
            } else if start < wanted || needed > u64::from(policy.max_instances) {
                ScaleReason::MaxInstances
            } else if needed < u64::from(policy.min_instances) {
                ScaleReason::MinInstances
            } else {
                ScaleReason::Threshold
            };
            return (start > 0 || !revive.is_empty()).then_some(Decision {
                desired,
                start,
                revive,
                drain: Vec::new(),
                reason,
            });
        }
        let target = self.window_high();
        if target >= active_count {
            return None;
        }
        let mut candidates = active;
        drain_order(&mut candidates);
        // Pending starts cannot be drained yet; the next decision sees them as replicas.
        let drain: Vec<ReplicaId> = candidates
            .iter()
            .take((active_count - target) as usize)
            .map(|r| r.id)
            .collect();
        if drain.is_empty() {
            return None;
        }
        Some(Decision {
            desired: target,
            start: 0,
            revive: Vec::new(),
            drain,
            reason: ScaleReason::Idle,
        })
    }

    /// The replicas a pending scale-down would drain if it fell due now — the latest desired count is
    /// below the replicas in place, the window not yet — in the order it would pick them. Balancing seats
    /// new connections elsewhere while others have room ([`crate::App::mark_leaving`]), so these
    /// empty sooner and the drain, when it comes, cuts nothing and waits for less. Empty when no
    /// scale-down is pending.
    pub fn leaving(&self, observation: &Observation) -> Vec<ReplicaId> {
        let Some(Held { desired, .. }) = self.window.back() else {
            return Vec::new();
        };
        let mut active: Vec<&ReplicaView> = observation
            .replicas
            .iter()
            .filter(|r| r.state != ReplicaState::Draining)
            .collect();
        let in_place = active.len().saturating_add(observation.pending_starts as usize);
        let extra = in_place.saturating_sub(*desired as usize);
        drain_order(&mut active);
        active.iter().take(extra).map(|r| r.id).collect()
    }

    /// The window as it stands at `now`, oldest first: each count and how long it held within the last
    /// `delay` — what the latest decision was taken from.
    pub fn window(&self, now: Timestamp, delay: Duration) -> Vec<WindowCount> {
        let start = Timestamp::from_millis(now.as_millis().saturating_sub(delay.as_millis() as u64));
        let ends = self.window.iter().skip(1).map(|held| held.since).chain([now]);
        self.window
            .iter()
            .zip(ends)
            .map(|(count, end)| WindowCount {
                desired: count.desired,
                held: end.saturating_since(count.since.max(start)),
                demand: count.demand,
            })
            .filter(|count| !count.held.is_zero())
            .collect()
    }

    /// When the window's highest count may next fall — the oldest count leaving it — for the runtime's
    /// timer; `None` when the window holds one count, which only a new decision changes.
    pub fn next_check(&self, scale_down_delay: Duration) -> Option<Timestamp> {
        let ended = self.window.get(1)?.since;
        Some(ended.saturating_add(scale_down_delay))
    }

    /// Records that `desired` holds from `now`, and forgets the counts that stopped holding before the
    /// window of `delay` began. Replicas that appear beyond anything the window asks for — there when the
    /// scaler first looks, or come unasked (pods listed late, a count set by someone else) — count as
    /// desired at the moment they are seen, so none is drained before a whole delay has passed.
    fn remember(&mut self, desired: u32, in_place: u32, demand: u64, now: Timestamp, delay: Duration) {
        while let Some(next) = self.window.get(1) {
            if next.since.saturating_add(delay) > now {
                break;
            }
            self.window.pop_front();
        }
        if in_place > self.in_place && in_place > self.window_high() {
            self.window.push_back(Held {
                since: now,
                desired: in_place,
                demand,
            });
        }
        self.in_place = in_place;
        match self.window.back_mut() {
            Some(last) if last.desired == desired => last.demand = last.demand.max(demand),
            _ => self.window.push_back(Held {
                since: now,
                desired,
                demand,
            }),
        }
    }

    /// The highest count desired within the window.
    fn window_high(&self) -> u32 {
        self.window.iter().map(|held| held.desired).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
