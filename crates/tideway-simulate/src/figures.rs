//! What a replay costs and what its connections went through, and the same for the ideal rule.

use std::collections::BTreeMap;
use std::time::Duration;

use tideway_core::{App, Policy, RejectReason, ReplicaState, Timestamp, replicas_needed};

use crate::trace::Arrival;

/// The figures of one policy over one trace (`tideway simulate --help` explains each).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Replicas running (starting, ready or draining), integrated over the trace: what the app cost.
    pub replica_seconds: f64,
    /// Most replicas running at once.
    pub peak_replicas: u32,
    /// Scaling decisions (starts and drains).
    pub decisions: u32,
    /// Decisions that went the other way from the one before: up after down, or down after up.
    pub direction_changes: u32,
    /// Connections that arrived.
    pub connections: u64,
    /// Connections that found no free seat and waited in the queue.
    pub queued: u64,
    /// Waits of the queued connections that got a seat, shortest first.
    pub waits: Vec<Duration>,
    /// Connections refused, by reason (the `reason` label).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Sessions closed by tideway at a drained replica's `drain_timeout`.
    pub cut: u64,
}

/// One moment of a replay, for the plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// From the start of the trace.
    pub at: Duration,
    /// Connections seated and waiting.
    pub demand: u64,
    /// Seats on ready replicas (`max_connections` each).
    pub capacity: u64,
    /// Replicas running.
    pub replicas: u32,
}

/// The running counts of a replay: its figures as they grow, the replica-milliseconds they will be
/// made of, and the samples for the plot.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) figures: Figures,
    pub(crate) replica_millis: u64,
    pub(crate) samples: Vec<Sample>,
}

impl Tally {
    pub(crate) fn refuse(&mut self, reason: RejectReason) {
        *self.figures.rejected.entry(reason.as_str()).or_default() += 1;
    }

    /// Records the app as it is now, if that differs from the last sample.
    pub(crate) fn sample(&mut self, now: Timestamp, app: &App, max_connections: u32) {
        let replicas = app.replicas();
        let ready = replicas
            .iter()
            .filter(|r| r.state() == ReplicaState::Ready)
            .count() as u64;
        let sample = Sample {
            at: Duration::from_millis(now.as_millis()),
            demand: app.demand(),
            capacity: ready * u64::from(max_connections),
            replicas: u32::try_from(replicas.len()).unwrap_or(u32::MAX),
        };
        self.figures.peak_replicas = self.figures.peak_replicas.max(sample.replicas);
        push_sample(&mut self.samples, sample);
    }

    pub(crate) fn into_figures(mut self, horizon: Duration) -> (Figures, Vec<Sample>) {
        self.figures.waits.sort_unstable();
        self.figures.replica_seconds = self.replica_millis as f64 / 1000.0;
        if let Some(last) = self.samples.last().copied() {
            push_sample(&mut self.samples, Sample { at: horizon, ..last });
        }
        (self.figures, self.samples)
    }
}

/// Keeps one sample per change: a sample equal to the last but for its time is dropped, and one at the
/// same time as the last replaces it.
fn push_sample(samples: &mut Vec<Sample>, sample: Sample) {
    match samples.last_mut() {
        Some(last) if last.at == sample.at => *last = sample,
        Some(last)
            if (last.demand, last.capacity, last.replicas)
                == (sample.demand, sample.capacity, sample.replicas) => {}
        _ => samples.push(sample),
    }
}

/// The ideal rule for reference: every connection seated on arrival, and at every moment exactly
/// `ceil(demand / (max_connections × spawn_threshold))` replicas (within `min_instances..=max_instances`),
/// started and stopped instantly, up to `horizon`.
pub fn ideal(arrivals: &[Arrival], policy: &Policy, horizon: Duration) -> (Figures, Vec<Sample>) {
    let mut changes: Vec<(Duration, i64)> = arrivals
        .iter()
        .flat_map(|a| [(a.at, 1), (a.at + a.held, -1)])
        .filter(|(at, _)| *at <= horizon)
        .collect();
    // Departures first at equal times: a seat given back and taken in one millisecond is one seat.
    changes.sort_unstable();
    let clamp = |demand: u64| {
        u32::try_from(replicas_needed(policy, demand))
            .unwrap_or(u32::MAX)
            .clamp(policy.min_instances, policy.max_instances)
    };
    let mut figures = Figures {
        connections: arrivals.iter().filter(|a| a.at <= horizon).count() as u64,
        ..Figures::default()
    };
    let mut samples = Vec::new();
    let (mut demand, mut at, mut replicas) = (0u64, Duration::ZERO, clamp(0));
    let mut replica_millis: u128 = 0;
    let mut last_direction = None;
    let record = |at: Duration, demand: u64, replicas: u32, samples: &mut Vec<Sample>| {
        let capacity = u64::from(replicas) * u64::from(policy.max_connections);
        push_sample(
            samples,
            Sample {
                at,
                demand,
                capacity,
                replicas,
            },
        );
    };
    record(Duration::ZERO, 0, replicas, &mut samples);
    figures.peak_replicas = replicas;
    for (when, step) in changes {
        replica_millis += u128::from(replicas) * (when - at).as_millis();
        at = when;
        demand = demand.saturating_add_signed(step);
        let wanted = clamp(demand);
        if wanted != replicas {
            let direction = wanted > replicas;
            figures.decisions += 1;
            if last_direction.is_some_and(|last| last != direction) {
                figures.direction_changes += 1;
            }
            last_direction = Some(direction);
            replicas = wanted;
            figures.peak_replicas = figures.peak_replicas.max(replicas);
        }
        record(at, demand, replicas, &mut samples);
    }
    replica_millis += u128::from(replicas) * (horizon.saturating_sub(at)).as_millis();
    record(horizon, demand, replicas, &mut samples);
    figures.replica_seconds = replica_millis as f64 / 1000.0;
    (figures, samples)
}

impl Figures {
    /// The wait below which `percent` of the queued connections that got a seat were seated (nearest
    /// rank); zero when none waited.
    pub fn wait_percentile(&self, percent: u32) -> Duration {
        if self.waits.is_empty() {
            return Duration::ZERO;
        }
        let rank = (self.waits.len() * percent as usize).div_ceil(100).max(1);
        self.waits[rank - 1]
    }

    /// Connections refused, whatever the reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}
