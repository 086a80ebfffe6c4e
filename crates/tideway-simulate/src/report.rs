//! Several candidate policies replayed over one trace, and the table `tideway simulate` prints.

use std::fmt::Write;
use std::time::Duration;

use tideway_core::Policy;

use crate::engine::{Startup, replay};
use crate::figures::{Figures, Sample, ideal};
use crate::trace::Arrival;

/// A policy to try, and how the table names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `base`, or the keys that differ from it (`scale_down_delay=30s`).
    pub label: String,
    /// The policy.
    pub policy: Policy,
}

/// One candidate's replay beside the ideal rule under its policy.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Which policy.
    pub candidate: Candidate,
    /// What its replay cost and did.
    pub figures: Figures,
    /// Over time.
    pub samples: Vec<Sample>,
    /// The ideal rule under the same `max_connections`, `spawn_threshold`, `min_instances` and
    /// `max_instances`.
    pub ideal: Figures,
    /// The ideal rule over time.
    pub ideal_samples: Vec<Sample>,
}

/// Every candidate's outcome over one trace.
#[derive(Clone, Debug)]
pub struct Report {
    /// How much time was replayed: until the last connection would end if seated on arrival.
    pub horizon: Duration,
    /// In candidate order.
    pub outcomes: Vec<Outcome>,
}

/// Replays `arrivals` (one app's) under each candidate, replicas starting as `startup` says.
pub fn simulate(arrivals: &[Arrival], candidates: &[Candidate], startup: &Startup, seed: u64) -> Report {
    let horizon = arrivals.iter().map(|a| a.at + a.held).max().unwrap_or_default();
    let outcomes = candidates
        .iter()
        .map(|candidate| {
            let (figures, samples) = replay(arrivals, &candidate.policy, startup, seed, horizon);
            let (ideal, ideal_samples) = ideal(arrivals, &candidate.policy, horizon);
            Outcome {
                candidate: candidate.clone(),
                figures,
                samples,
                ideal,
                ideal_samples,
            }
        })
        .collect();
    Report { horizon, outcomes }
}

impl Outcome {
    /// Replica-seconds as a multiple of the ideal rule's.
    pub fn cost_ratio(&self) -> f64 {
        if self.ideal.replica_seconds > 0.0 {
            self.figures.replica_seconds / self.ideal.replica_seconds
        } else {
            0.0
        }
    }
}

impl Report {
    /// The table: the ideal rule under the first candidate's policy, then one row per candidate.
    pub fn table(&self) -> String {
        let mut rows = vec![
            [
                "policy",
                "replica-s",
                "x ideal",
                "peak",
                "decisions",
                "reversals",
                "queued",
                "wait p50",
                "wait p95",
                "wait max",
                "rejected",
                "cut",
            ]
            .map(str::to_owned),
        ];
        if let Some(first) = self.outcomes.first() {
            rows.push(row("ideal rule", &first.ideal, None));
        }
        for outcome in &self.outcomes {
            rows.push(row(
                &outcome.candidate.label,
                &outcome.figures,
                Some(outcome.cost_ratio()),
            ));
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|column| rows.iter().map(|r| r[column].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &rows {
            for (column, cell) in row.iter().enumerate() {
                if column == 0 {
                    let _ = write!(out, "{cell:<width$}", width = widths[0]);
                } else {
                    let _ = write!(out, "  {cell:>width$}", width = widths[column]);
                }
            }
            out.push('\n');
        }
        out
    }
}

fn row(label: &str, figures: &Figures, ratio: Option<f64>) -> [String; 12] {
    let rejected = if figures.rejected.is_empty() {
        "0".to_owned()
    } else {
        figures
            .rejected
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    [
        label.to_owned(),
        format!("{:.1}", figures.replica_seconds),
        ratio.map_or_else(|| "1.00".to_owned(), |r| format!("{r:.2}")),
        figures.peak_replicas.to_string(),
        figures.decisions.to_string(),
        figures.direction_changes.to_string(),
        figures.queued.to_string(),
        seconds(figures.wait_percentile(50)),
        seconds(figures.wait_percentile(95)),
        seconds(figures.waits.last().copied().unwrap_or_default()),
        rejected,
        figures.cut.to_string(),
    ]
}

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
