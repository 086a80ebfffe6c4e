//! Replica sets for the unit tests of this crate: one builder instead of one per test module.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::replica::{Replica, ReplicaState};

/// `n` ready replicas named `r0`, `r1`, … on 127.0.0.1:9000, :9001, … (nothing listens: the core does no
/// I/O), oldest first.
pub(crate) fn ready_replicas(n: usize) -> Vec<Arc<Replica>> {
    (0..n)
        .map(|i| replica_at(&format!("r{i}"), i, ReplicaState::Ready))
        .collect()
}

/// A replica named `name` in `state`, the `i`-th of its set.
pub(crate) fn replica_at(name: &str, i: usize, state: ReplicaState) -> Arc<Replica> {
    let port = 9000 + u16::try_from(i).unwrap_or(u16::MAX - 9000);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Arc::new(Replica::new(name, addr, state, Timestamp::ZERO))
}
