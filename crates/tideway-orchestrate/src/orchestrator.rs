//! The interface between an app's scaling loop and whatever runs its replicas.

use std::sync::Arc;

use futures::future::BoxFuture;
use tideway_core::{Replica, ReplicaId};
use tokio::sync::{mpsc, watch};

/// Something that happened to a replica, reported by its backend to the app's scaling loop, which alone
/// changes the app's replica set.
#[derive(Debug)]
pub enum ReplicaEvent {
    /// Every replica that exists when the backend came up was reported: the loop decides only from then
    /// on, so that replicas that outlived an earlier tideway (pods) count in its first decision.
    Listed,
    /// A replica was launched and is starting.
    Started(Arc<Replica>),
    /// The replica passed its readiness check.
    Ready(ReplicaId),
    /// A ready replica stopped passing its readiness check (its pod's endpoint turned not ready): it gets
    /// no new connections, its open ones go on, and it counts as starting capacity until it is ready again.
    Unready(ReplicaId),
    /// The replica is going away without being asked (its pod is terminating): it gets no new
    /// connections, its open ones go on until it is gone.
    Terminating(ReplicaId),
    /// Someone else changed the app's replica count (`kubectl scale`, an HPA, a GitOps apply).
    Resized {
        /// The count before.
        from: u32,
        /// The count they set.
        to: u32,
    },
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
    /// Whether the replicas are someone else's to keep when tideway lets the app go (pods of a
    /// Deployment): a removed app then leaves them as they are instead of draining and stopping them.
    fn replicas_outlive_it(&self) -> bool {
        false
    }
}

/// Whether this instance may scale its apps: always on one machine; on Kubernetes, while it holds the
/// Lease. An instance that does not lead still routes: it follows its apps' replicas, and decides nothing.
#[derive(Clone, Debug)]
pub struct Leadership {
    elected: Option<watch::Receiver<bool>>,
}

impl Leadership {
    /// Leadership of a single instance, which always leads.
    pub fn always() -> Self {
        Leadership { elected: None }
    }

    /// Leadership as an election reports it.
    pub fn elected(leading: watch::Receiver<bool>) -> Self {
        Leadership {
            elected: Some(leading),
        }
    }

    /// Whether this instance leads now.
    pub fn leads(&self) -> bool {
        self.elected.as_ref().is_none_or(|leading| *leading.borrow())
    }

    /// Resolves when leadership may have changed; never for an instance that always leads, or once the
    /// election ended.
    pub async fn changed(&mut self) {
        let ended = match &mut self.elected {
            Some(leading) => leading.changed().await.is_err(),
            None => true,
        };
        if ended {
            std::future::pending::<()>().await;
        }
    }
}

/// An app's replicas as its scaling loop drives them: what runs them, what they report, and whether this
/// instance may scale them.
pub struct Orchestration {
    /// Starts and stops replicas.
    pub orchestrator: Arc<dyn Orchestrator>,
    /// What happens to them.
    pub events: mpsc::UnboundedReceiver<ReplicaEvent>,
    /// Whether this instance decides.
    pub leadership: Leadership,
}
