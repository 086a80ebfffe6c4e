//! The peers' latest reports, and their sums: what the instance writes into its replicas and apps. Pure:
//! time comes in as arguments.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::report::Report;
use crate::view::PeerView;

/// The latest report of each live peer.
#[derive(Debug)]
pub struct Peers {
    /// This instance: its own reports, sent back by a peer list that names it, are not counted.
    own: String,
    timeout: Duration,
    latest: HashMap<String, Latest>,
}

#[derive(Debug)]
struct Latest {
    report: Report,
    at: Instant,
}

/// The sums of the peers' latest reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    apps: HashMap<String, AppTotals>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct AppTotals {
    demand: u64,
    replicas: HashMap<String, u32>,
    /// Replicas some peer drains.
    draining: HashSet<String>,
}

impl Peers {
    /// No peers yet; `own` is this instance, `timeout` how long a report counts without a newer one.
    pub fn new(own: &str, timeout: Duration) -> Self {
        Peers {
            own: own.to_owned(),
            timeout,
            latest: HashMap::new(),
        }
    }

    /// Takes `report`, received at `now`, unless it is this instance's own or older than the one held
    /// (by incarnation, then sequence): `true` if it changed what the peers count.
    pub fn receive(&mut self, report: Report, now: Instant) -> bool {
        if report.instance == self.own {
            return false;
        }
        match self.latest.get_mut(&report.instance) {
            Some(held) if (held.report.incarnation, held.report.seq) >= (report.incarnation, report.seq) => {
                false
            }
            Some(held) => {
                let changed = held.report.apps != report.apps;
                *held = Latest { report, at: now };
                changed
            }
            None => {
                let instance = report.instance.clone();
                self.latest.insert(instance, Latest { report, at: now });
                true
            }
        }
    }

    /// Drops the peers whose last report is older than the timeout at `now`; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let timeout = self.timeout;
        let gone: Vec<String> = self
            .latest
            .iter()
            .filter(|(_, latest)| latest.at + timeout <= now)
            .map(|(instance, _)| instance.clone())
            .collect();
        for instance in &gone {
            self.latest.remove(instance);
        }
        gone
    }

    /// When the next peer expires if it sends nothing.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.latest.values().map(|latest| latest.at + self.timeout).min()
    }

    /// Whether every live peer is in `heard`.
    pub fn all_in(&self, heard: &HashSet<String>) -> bool {
        self.latest.keys().all(|peer| heard.contains(peer))
    }

    /// How many peers are live.
    pub fn live_count(&self) -> usize {
        self.latest.len()
    }

    /// The live peers with their latest counts, as of `now`, by name.
    pub fn view(&self, now: Instant) -> Vec<PeerView> {
        let mut peers: Vec<PeerView> = self
            .latest
            .iter()
            .map(|(instance, latest)| PeerView {
                instance: instance.clone(),
                report_age_seconds: now.saturating_duration_since(latest.at).as_secs_f64(),
                apps: latest.report.apps.clone(),
            })
            .collect();
        peers.sort_by(|a, b| a.instance.cmp(&b.instance));
        peers
    }

    /// The sums over the live peers.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for latest in self.latest.values() {
            for app in &latest.report.apps {
                let sums = totals.apps.entry(app.app.clone()).or_default();
                sums.demand = sums.demand.saturating_add(app.demand);
                for replica in &app.replicas {
                    let connections = sums.replicas.entry(replica.replica.clone()).or_default();
                    *connections = connections.saturating_add(replica.connections);
                    if replica.draining {
                        sums.draining.insert(replica.replica.clone());
                    }
                }
            }
        }
        totals
    }
}

impl Totals {
    /// The peers' demand for `app`.
    pub fn demand(&self, app: &str) -> u64 {
        self.apps.get(app).map_or(0, |sums| sums.demand)
    }

    /// Whether a peer drains replica `replica` of `app`.
    pub fn draining(&self, app: &str, replica: &str) -> bool {
        self.apps
            .get(app)
            .is_some_and(|sums| sums.draining.contains(replica))
    }

    /// The connections the peers seat on replica `replica` of `app`.
    pub fn connections(&self, app: &str, replica: &str) -> u32 {
        let sums = self.apps.get(app);
        sums.and_then(|sums| sums.replicas.get(replica))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{AppReport, ReplicaReport};

    fn report(instance: &str, incarnation: u64, seq: u64, connections: u32) -> Report {
        Report {
            instance: instance.into(),
            incarnation,
            seq,
            apps: vec![AppReport {
                app: "a".into(),
                demand: u64::from(connections) + 1,
                replicas: vec![ReplicaReport {
                    replica: "a-1".into(),
                    connections,
                    draining: instance == "c",
                }],
            }],
        }
    }

    #[test]
    fn the_peers_latest_reports_are_summed_and_this_instance_is_left_out() {
        let now = Instant::now();
        let mut peers = Peers::new("me", Duration::from_secs(3));
        assert!(peers.receive(report("b", 1, 1, 2), now));
        assert!(peers.receive(report("c", 1, 1, 3), now));
        assert!(!peers.receive(report("me", 1, 1, 9), now), "its own report");
        let totals = peers.totals();
        assert_eq!((totals.connections("a", "a-1"), totals.demand("a")), (5, 7));
        assert_eq!(totals.connections("a", "a-2"), 0);
        assert!(totals.draining("a", "a-1"), "c drains it");
        assert!(!totals.draining("a", "a-2"));
        assert_eq!(totals.demand("other"), 0);
    }

    #[test]
    fn a_report_replaces_the_last_one_and_an_older_one_is_dropped() {
        let now = Instant::now();
        let mut peers = Peers::new("me", Duration::from_secs(3));
        peers.receive(report("b", 1, 5, 2), now);
        assert!(!peers.receive(report("b", 1, 4, 7), now), "out of order");
        assert!(
            !peers.receive(report("b", 1, 6, 2), now),
            "the same counts change nothing"
        );
        assert!(peers.receive(report("b", 1, 7, 1), now));
        assert_eq!(peers.totals().connections("a", "a-1"), 1, "replaced, not added");
        // A restart: a later incarnation starts its sequence over and replaces its earlier life.
        assert!(peers.receive(report("b", 2, 1, 4), now));
        assert_eq!(peers.totals().connections("a", "a-1"), 4, "not double-counted");
        assert!(
            !peers.receive(report("b", 1, 8, 9), now),
            "a report of the earlier life, late"
        );
    }

    #[test]
    fn a_silent_peer_counts_until_its_timeout_then_is_dropped() {
        let start = Instant::now();
        let mut peers = Peers::new("me", Duration::from_secs(3));
        peers.receive(report("b", 1, 1, 2), start);
        peers.receive(report("c", 1, 1, 3), start + Duration::from_secs(2));
        assert_eq!(peers.next_expiry(), Some(start + Duration::from_secs(3)));
        assert!(peers.expire(start + Duration::from_millis(2999)).is_empty());
        assert_eq!(peers.expire(start + Duration::from_secs(3)), ["b"]);
        assert_eq!(peers.totals().connections("a", "a-1"), 3);
        let live = peers.view(start + Duration::from_secs(4));
        let live: Vec<(&str, f64)> = live
            .iter()
            .map(|p| (p.instance.as_str(), p.report_age_seconds))
            .collect();
        assert_eq!(live, [("c", 2.0)]);
    }
}
