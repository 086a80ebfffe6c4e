//! Where replicas come from. Each orchestrator fills an app's replica set ([`tideway_core::App`]) and,
//! where it can, changes it on demand; the data plane only ever sees the replica set.

mod static_list;

pub use static_list::static_replicas;
