//! The scaling policy (`docs/glossary.md`, "Scaling"), as a pure function of what the app looks like now:
//! how many replicas it needs, which to start or drain, and why.

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
    /// Demand stayed low for `scale_down_delay`.
    Idle,
    /// A replica failed to become ready within `startup_timeout`, or exited while starting.
    Startup,
    /// A ready replica exited or disappeared.
    ReplicaLost,
    /// Someone else changed the replica count (on Kubernetes: `kubectl scale`, an HPA, a GitOps apply).
    External,
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
}

/// A scaling action and its explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Replicas the app should have (not draining), within `min_instances..=max_instances`.
    pub desired: u32,
    /// Replicas to start now.
    pub start: u32,
    /// Replicas to drain now.
    pub drain: Vec<ReplicaId>,
    /// Why.
    pub reason: ScaleReason,
}

/// The scaler's memory between decisions: since when demand has been lower than the replicas in place.
///
/// Pure and synchronous; the runtime calls [`Scaler::decide`] whenever something changed and at
/// [`Scaler::next_check`] for time-based transitions.
#[derive(Clone, Debug, Default)]
pub struct Scaler {
    low_since: Option<Timestamp>,
    last_desired: Option<u32>,
}

/// Replicas needed for `demand` connections before clamping: `ceil(demand / (max_connections ×
/// spawn_threshold / 100))`, computed exactly in integers.
pub fn replicas_needed(policy: &Policy, demand: u64) -> u64 {
    let per_replica = u64::from(policy.max_connections) * u64::from(policy.spawn_threshold.percent());
    (demand * 100).div_ceil(per_replica.max(1))
}

impl Decision {
    /// Up, down, or neither (a decision that only records a cap).
    pub fn direction(&self) -> Option<Direction> {
        if self.start > 0 {
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
    /// Decides what to do now. Returns `None` when nothing is to be done.
    ///
    /// - Scale up at once to the desired count; the capacity of `starting` replicas counts, so a burst
    ///   does not overshoot; never beyond `max_instances` counting starting and draining replicas, those of
    ///   a replaced backend included.
    /// - Scale down only after demand stayed below the replicas in place for `scale_down_delay` (any rise
    ///   of the desired count restarts the wait), never below `min_instances`, draining the replicas with
    ///   the fewest connections (the youngest among equals).
    pub fn decide(&mut self, policy: &Policy, observation: &Observation, now: Timestamp) -> Option<Decision> {
        let needed = replicas_needed(policy, observation.demand);
        let desired = u32::try_from(needed)
            .unwrap_or(u32::MAX)
            .clamp(policy.min_instances, policy.max_instances);
        let rose = self.last_desired.is_some_and(|last| desired > last);
        self.last_desired = Some(desired);
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

        if desired > active_count {
            self.low_since = None;
            let wanted = desired - active_count;
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
            return (start > 0).then_some(Decision {
                desired,
                start,
                drain: Vec::new(),
                reason,
            });
        }
        if desired == active_count {
            self.low_since = None;
            return None;
        }
        if rose || self.low_since.is_none() {
            self.low_since = Some(now);
        }
        let low_since = self.low_since?;
        if now.saturating_since(low_since) < policy.scale_down_delay {
            return None;
        }
        self.low_since = None;
        let mut candidates = active;
        candidates.sort_by(|a, b| {
            a.connections
                .cmp(&b.connections)
                .then(b.started_at.cmp(&a.started_at))
        });
        // Pending starts cannot be drained yet; the next decision sees them as replicas.
        let drain: Vec<ReplicaId> = candidates
            .iter()
            .take((active_count - desired) as usize)
            .map(|r| r.id)
            .collect();
        if drain.is_empty() {
            return None;
        }
        Some(Decision {
            desired,
            start: 0,
            drain,
            reason: ScaleReason::Idle,
        })
    }

    /// When the pending scale-down (if any) falls due, for the runtime's timer.
    pub fn next_check(&self, scale_down_delay: Duration) -> Option<Timestamp> {
        self.low_since.map(|since| since.saturating_add(scale_down_delay))
    }
}

#[cfg(test)]
mod tests;
