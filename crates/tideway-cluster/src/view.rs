//! What an instance knows of the others, as the admin API and the status page show it: so an operator sees
//! at a glance whether the instances agree.

use serde::Serialize;

use crate::report::AppReport;

/// This instance and the live peers, as of its last heartbeat.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterView {
    /// This instance's name.
    pub instance: String,
    /// The live peers, by name.
    pub peers: Vec<PeerView>,
}

/// One live peer: how stale its counts are, and the counts.
#[derive(Clone, Debug, Serialize)]
pub struct PeerView {
    /// The peer's name.
    pub instance: String,
    /// How long before the view was taken its last report came.
    pub report_age_seconds: f64,
    /// Its counts, per shared app, as it last reported them.
    pub apps: Vec<AppReport>,
}
