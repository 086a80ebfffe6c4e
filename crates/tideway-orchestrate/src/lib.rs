//! Where replicas come from. An orchestrator runs an app's replicas (local child processes; a static app
//! has a fixed list of addresses; [`kubernetes`] reads a Service's endpoints into replicas); the app's
//! [`ScalingLoop`] decides how many there should be and which to drain. The data plane only ever sees the
//! app's replica set.

pub mod kubernetes;
pub mod local;
mod metrics;
mod orchestrator;
mod scaling_loop;
mod static_list;

pub use metrics::{ColdStartObserver, ScalingMetrics};
pub use orchestrator::{Leadership, Orchestration, Orchestrator, ReplicaEvent};
pub use scaling_loop::{
    DecisionLog, DecisionRecord, Evict, Predecessor, ScalingHandle, ScalingLoop, ScalingStatus,
};
pub use static_list::static_replicas;
