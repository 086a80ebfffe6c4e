//! What one instance tells the others: its counts, whole, each time (a report replaces the last one, so
//! a lost report costs nothing but its delay).

use serde::{Deserialize, Serialize};

/// One instance's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The instance (`POD_NAME`, else host name and process id).
    pub instance: String,
    /// Random for each start of the instance: a restarted instance's first report replaces what its
    /// earlier life reported, and is never added to it.
    pub incarnation: u64,
    /// Increases with each report of one incarnation: a report that arrives after a newer one is
    /// dropped.
    pub seq: u64,
    /// Its shared apps.
    pub apps: Vec<AppReport>,
}

/// One app's counts at one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppReport {
    /// The app's name.
    pub app: String,
    /// Connections seated and waiting at the instance.
    pub demand: u64,
    /// Connections the instance seats on each replica.
    pub replicas: Vec<ReplicaReport>,
}

/// Connections one instance seats on one replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaReport {
    /// The replica's name: the same at every instance (a pod's name, `<app>-<n>` of a static list).
    pub replica: String,
    /// Connections seated on it.
    pub connections: u32,
    /// The instance drains it (a leader scaling down): the others send it no new connections either.
    #[serde(default)]
    pub draining: bool,
}
