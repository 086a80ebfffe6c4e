//! The Kubernetes orchestrator: an app's replicas are the pods of a Deployment. Starting replicas raises
//! the Deployment's count; stopping a drained one removes exactly its pod; what the pods do comes back
//! from the Service's endpoints. Writes to the API server are made one at a time, in order, and retried
//! with backoff until they go through, so a decision made while the API server fails is neither lost nor
//! made twice. Pods outlive tideway: stopping tideway stops none.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::Client;
use tideway_core::{Clock, Replica};
use tokio::sync::mpsc;
use tracing::warn;

use super::endpoints::{EndpointChange, EndpointReplicas, EndpointView, PortRef};
use super::scale::DeploymentScale;
use super::watch::watch_endpoints;
use crate::orchestrator::{Orchestrator, ReplicaEvent};

/// First pause after a failed write; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest pause between two tries of a write.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Where an app's pods are.
#[derive(Clone, Debug)]
pub struct Target {
    /// The namespace of the Deployment and the Service.
    pub namespace: String,
    /// The Deployment whose pods are the replicas.
    pub deployment: String,
    /// The Service whose endpoints route to them.
    pub service: String,
    /// The Service's port that carries the app.
    pub port: PortRef,
}

/// An app's Deployment as its scaling loop's orchestrator.
///
/// Starting `n` replicas asks for as many pods as the replicas reported so far plus `n` — never fewer than
/// the Deployment already has: its pods that have no endpoint yet are starting capacity, not a reason to
/// ask for more.
pub struct KubernetesOrchestrator {
    writes: mpsc::UnboundedSender<Write>,
    /// Pods asked to stop and not gone yet.
    stopping: Arc<Mutex<HashSet<String>>>,
}

/// One write to the API server.
enum Write {
    /// Have this many pods more than the replicas reported so far.
    Start(u32),
    /// Remove this drained pod.
    Stop(String),
}

impl KubernetesOrchestrator {
    /// The orchestrator of `target`, and the events of its replicas for the scaling loop, once the
    /// Service's endpoints were first listed: the pods that run already are reported first, so the loop's
    /// first decision counts them. It runs until both are dropped.
    pub async fn spawn(
        client: Client,
        target: Target,
        clock: Arc<dyn Clock>,
    ) -> (Self, mpsc::UnboundedReceiver<ReplicaEvent>) {
        let (writes, queue) = mpsc::unbounded_channel();
        let (events, receiver) = mpsc::unbounded_channel();
        let stopping = Arc::new(Mutex::new(HashSet::new()));
        let reported = Arc::new(AtomicU32::new(0));
        let scale = DeploymentScale::new(client.clone(), &target.namespace, &target.deployment);
        tokio::spawn(write_in_order(
            scale,
            queue,
            Arc::clone(&reported),
            target.deployment.clone(),
        ));
        let mut reporter = Reporter {
            replicas: EndpointReplicas::default(),
            reported,
            events,
            stopping: Arc::clone(&stopping),
            clock,
        };
        let mut endpoints = watch_endpoints(client, &target.namespace, &target.service, target.port).boxed();
        if let Some(views) = endpoints.next().await {
            reporter.report(&views);
        }
        tokio::spawn(async move {
            while let Some(views) = endpoints.next().await {
                if !reporter.report(&views) {
                    return;
                }
            }
        });
        (KubernetesOrchestrator { writes, stopping }, receiver)
    }
}

impl Orchestrator for KubernetesOrchestrator {
    fn start(&self, count: u32) {
        // The writer ends only with this orchestrator.
        let _ = self.writes.send(Write::Start(count));
    }

    fn stop(&self, replica: &Arc<Replica>) {
        let name = replica.name().to_owned();
        self.stopping
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone());
        let _ = self.writes.send(Write::Stop(name));
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// Makes the writes one after the other, each retried until it goes through.
async fn write_in_order(
    scale: DeploymentScale,
    mut queue: mpsc::UnboundedReceiver<Write>,
    reported: Arc<AtomicU32>,
    deployment: String,
) {
    while let Some(write) = queue.recv().await {
        let mut pause = FIRST_RETRY;
        loop {
            let written = match &write {
                Write::Start(count) => match scale.replicas().await {
                    Ok(replicas) => {
                        let wanted = reported.load(Ordering::SeqCst).saturating_add(*count);
                        if wanted > replicas {
                            scale.set(wanted).await
                        } else {
                            Ok(())
                        }
                    }
                    Err(error) => Err(error),
                },
                Write::Stop(pod) => match scale.replicas().await {
                    Ok(replicas) => scale.remove(pod, replicas).await,
                    Err(error) => Err(error),
                },
            };
            match written {
                Ok(()) => break,
                Err(error) => {
                    warn!(%deployment, %error, retry_in_ms = pause.as_millis() as u64, "scale write failed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY);
                }
            }
        }
    }
}

/// Tells the scaling loop what the endpoints say: a pod's replica started, turned ready, went — as asked
/// (it was stopped) or not (it died, or someone else removed it).
struct Reporter {
    replicas: EndpointReplicas,
    /// How many replicas are reported and not gone.
    reported: Arc<AtomicU32>,
    events: mpsc::UnboundedSender<ReplicaEvent>,
    stopping: Arc<Mutex<HashSet<String>>>,
    clock: Arc<dyn Clock>,
}

impl Reporter {
    /// Reports what changed with `views`; `false` once the scaling loop is gone.
    fn report(&mut self, views: &[EndpointView]) -> bool {
        for change in self.replicas.apply(views, self.clock.now()) {
            let event = match change {
                EndpointChange::Appeared(replica) => {
                    self.reported.fetch_add(1, Ordering::SeqCst);
                    ReplicaEvent::Started(replica)
                }
                EndpointChange::Ready(id) => ReplicaEvent::Ready(id),
                EndpointChange::Gone(replica) => {
                    self.reported.fetch_sub(1, Ordering::SeqCst);
                    let expected = self
                        .stopping
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(replica.name());
                    ReplicaEvent::Exited {
                        id: replica.id(),
                        expected,
                        detail: "its pod is gone".to_owned(),
                    }
                }
            };
            if self.events.send(event).is_err() {
                return false;
            }
        }
        true
    }
}
