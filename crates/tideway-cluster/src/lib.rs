//! Several tideway instances acting as one (`[cluster]`). Each instance reports its counts — per app, the
//! connections it seats on each replica and its demand — to its peers when they change and at a
//! heartbeat, over an internal listener that takes only requests carrying the shared secret. Each keeps
//! the peers' latest reports and writes their sums into the replicas and apps it runs, so that admission
//! against `max_connections` and the scaling rule see the total, not one instance's share.
//!
//! A client whose affinity cookie brings it back through another instance than the one holding its
//! session has that session handed over: its seat moves with it (`handover`).
//!
//! Only apps whose replicas every instance shares are reported: static and Kubernetes ones. A local
//! app's replicas are each instance's own child processes.

mod handover;
mod metrics;
mod peers;
mod report;
mod secret;
mod sender;
mod server;
mod view;

pub use metrics::ClusterMetrics;
pub use peers::{Peers, Totals};
pub use report::{AppReport, ReplicaReport, Report};
pub use secret::constant_time_eq;
pub use sender::Cluster;
pub use view::{ClusterView, PeerView};
