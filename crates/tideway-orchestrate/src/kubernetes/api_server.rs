//! The API server as tideway reaches it: one client for every Kubernetes app of the instance (from
//! in-cluster config or `KUBECONFIG`), and one election of the instance that scales.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube::Client;
use tideway_config::KubernetesSettings;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use super::leader::{Election, elect};
use super::metrics::KubernetesMetrics;
use crate::orchestrator::Leadership;

/// Tideway's connection to the API server, shared by its Kubernetes apps. Made once, in the background:
/// apps come up when it is there, and each says so when it cannot be made.
#[derive(Clone)]
pub struct ApiServer {
    client: Shared<BoxFuture<'static, Result<Client, Arc<str>>>>,
    leadership: Leadership,
    metrics: Arc<KubernetesMetrics>,
    stop: CancellationToken,
    election: TaskTracker,
    identity: Arc<str>,
}

impl ApiServer {
    /// Connects as the environment says (`kube::Client::try_default`: the pod's service account, else
    /// `KUBECONFIG`), and runs the election on the Lease of `settings` in the client's namespace.
    pub fn connect(settings: &KubernetesSettings, metrics: Arc<KubernetesMetrics>) -> Self {
        let made = async {
            Client::try_default().await.map_err(|error| {
                let message: Arc<str> = format!("cannot reach the Kubernetes API server: {error}").into();
                error!(problem = %message, "no Kubernetes client");
                message
            })
        };
        Self::over(made.boxed(), settings, metrics)
    }

    /// The API server behind `client`, as tests reach it.
    pub fn with_client(
        client: Client,
        settings: &KubernetesSettings,
        metrics: Arc<KubernetesMetrics>,
    ) -> Self {
        Self::over(std::future::ready(Ok(client)).boxed(), settings, metrics)
    }

    fn over(
        made: BoxFuture<'static, Result<Client, Arc<str>>>,
        settings: &KubernetesSettings,
        metrics: Arc<KubernetesMetrics>,
    ) -> Self {
        let client = made.shared();
        let (leading, receiver) = watch::channel(false);
        let settings = settings.clone();
        let election_metrics = Arc::clone(&metrics);
        let connecting = client.clone();
        let stop = CancellationToken::new();
        let stopping = stop.clone();
        let election = TaskTracker::new();
        let identity: Arc<str> = identity().into();
        let candidate = identity.to_string();
        election.spawn(async move {
            let Ok(client) = connecting.await else {
                return;
            };
            let election = Election {
                namespace: client.default_namespace().to_owned(),
                lease: settings.lease,
                identity: candidate,
                duration: settings.lease_duration,
                renew_every: settings.lease_renew_every,
            };
            info!(lease = %election.lease, namespace = %election.namespace, identity = %election.identity, "taking part in the leader election");
            let mut elected = elect(client, election, Arc::clone(&election_metrics), stopping);
            loop {
                let leads = *elected.borrow_and_update();
                election_metrics.leads(leads);
                if leading.send(leads).is_err() || elected.changed().await.is_err() {
                    return;
                }
            }
        });
        election.close();
        ApiServer {
            client,
            leadership: Leadership::elected(receiver),
            metrics,
            stop,
            election,
            identity,
        }
    }

    /// Ends the election (tideway is stopping): a leader gives the lease up, so another instance takes
    /// over at once. Resolves when that is done.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.election.wait().await;
    }

    /// The client, once made; why not, if it cannot be.
    pub async fn client(&self) -> Result<Client, Arc<str>> {
        self.client.clone().await
    }

    /// Whether this instance scales.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// This instance's name in the election, and as the reporter of its Events.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Where Kubernetes mode's metrics go.
    pub fn metrics(&self) -> &Arc<KubernetesMetrics> {
        &self.metrics
    }
}

/// This instance's name — in the election, to its peers, on its Events: its pod's (`POD_NAME`, from the
/// downward API), else its host's and its process's, so that two instances on one machine differ.
pub fn identity() -> String {
    match std::env::var("POD_NAME") {
        Ok(name) if !name.is_empty() => name,
        _ => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        }
    }
}
