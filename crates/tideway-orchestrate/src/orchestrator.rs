//! The interface between an app's scaling loop and whatever runs its replicas.

use std::sync::Arc;

use futures::future::BoxFuture;
use tideway_core::{Replica, ReplicaId};

/// Something that happened to a replica, reported by its backend to the app's scaling loop, which alone
/// changes the app's replica set.
#[derive(Debug)]
pub enum ReplicaEvent {
    /// A replica was launched and is starting.
    Started(Arc<Replica>),
    /// The replica passed its readiness check.
    Ready(ReplicaId),
    /// The replica will never be ready: it could not be launched, exited while starting, or did not pass
    /// its readiness check within `startup_timeout`. It is gone (or being stopped).
    StartFailed {
        /// Which replica.
        id: ReplicaId,
        /// What went wrong, for the log.
        error: String,
    },
    /// The replica is gone.
    Exited {
        /// Which replica.
        id: ReplicaId,
        /// True when it was asked to stop; false when it died or disappeared on its own.
        expected: bool,
        /// How it ended, for the log.
        detail: String,
    },
}

/// Runs an app's replicas: the local orchestrator (child processes) or Kubernetes (pods).
pub trait Orchestrator: Send + Sync + 'static {
    /// Launches `count` replicas; each is reported as `Started`, then `Ready` or `StartFailed`.
    fn start(&self, count: u32);
    /// Stops one drained replica; reported as `Exited { expected: true }` once gone.
    fn stop(&self, replica: &Arc<Replica>);
    /// Stops every replica (tideway is stopping) and resolves once all are gone.
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}
