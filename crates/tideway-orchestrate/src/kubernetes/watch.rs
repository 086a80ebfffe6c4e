//! Watching the API server (never polling it): a Service's EndpointSlices, a Deployment's count, and a
//! TLS Secret's certificate. A
//! watch resumes by itself when the API server ends it, and lists again when its version is gone; while
//! the API server is unreachable, the last state seen stays in force.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tideway_config::PortRef;
use tracing::warn;

use super::endpoints::{EndpointView, endpoints};
use super::metrics::KubernetesMetrics;

/// The label an EndpointSlice names its Service by.
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The endpoints of `service` in `namespace` on `port`, each time they change: the first once the slices
/// were first listed. Watch failures are logged, counted and retried with backoff; they end nothing.
pub fn watch_endpoints(
    client: Client,
    namespace: &str,
    service: &str,
    port: PortRef,
    metrics: Arc<KubernetesMetrics>,
) -> impl Stream<Item = Vec<EndpointView>> + Send + 'static {
    let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().labels(&format!("{SERVICE_NAME}={service}"));
    let (reader, writer) = reflector::store();
    let service = service.to_owned();
    reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .filter_map(move |event| {
            let seen = match event {
                Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                    let slices: Vec<EndpointSlice> = reader.state().iter().map(|s| (**s).clone()).collect();
                    Some(endpoints(&slices, &port))
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
                Err(error) => {
                    failed(&metrics, "endpointslices", &error);
                    warn!(%service, %error, "EndpointSlice watch failed; the last endpoints stay in force");
                    None
                }
            };
            std::future::ready(seen)
        })
}

/// The `spec.replicas` of Deployment `name` in `namespace`, each time it is seen to change.
pub fn watch_replicas(
    client: Client,
    namespace: &str,
    name: &str,
    metrics: Arc<KubernetesMetrics>,
) -> impl Stream<Item = u32> + Send + 'static {
    let api: Api<Deployment> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let name = name.to_owned();
    watcher(api, config).default_backoff().filter_map(move |event| {
        let replicas = match event {
            Ok(watcher::Event::Apply(deployment) | watcher::Event::InitApply(deployment)) => deployment
                .spec
                .and_then(|spec| spec.replicas)
                .and_then(|replicas| u32::try_from(replicas).ok()),
            Ok(_) => None,
            Err(error) => {
                failed(&metrics, "deployments", &error);
                warn!(deployment = %name, %error, "Deployment watch failed; it resumes");
                None
            }
        };
        std::future::ready(replicas)
    })
}

/// The PEM chain and key of a `kubernetes.io/tls` Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSecret {
    /// `tls.crt`.
    pub chain: Vec<u8>,
    /// `tls.key`.
    pub key: Vec<u8>,
}

/// The certificate of Secret `name` in `namespace` each time it changes: `None` when it is gone or lacks
/// `tls.crt` or `tls.key`.
pub fn watch_tls_secret(
    client: Client,
    namespace: &str,
    name: &str,
    metrics: Arc<KubernetesMetrics>,
) -> impl Stream<Item = Option<TlsSecret>> + Send + 'static {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let name = name.to_owned();
    watcher(api, config).default_backoff().filter_map(move |event| {
        let seen = match event {
            Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                let data = secret.data.unwrap_or_default();
                let field = |key: &str| data.get(key).map(|bytes| bytes.0.clone());
                Some(
                    field("tls.crt")
                        .zip(field("tls.key"))
                        .map(|(chain, key)| TlsSecret { chain, key }),
                )
            }
            Ok(watcher::Event::Delete(_)) => Some(None),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(error) => {
                failed(&metrics, "secrets", &error);
                warn!(secret = %name, %error, "Secret watch failed; it resumes");
                None
            }
        };
        std::future::ready(seen)
    })
}

/// Counts a failed watch: a restart, and an error of the request that failed.
fn failed(metrics: &KubernetesMetrics, resource: &str, error: &watcher::Error) {
    let verb = match error {
        watcher::Error::InitialListFailed(_) => "list",
        _ => "watch",
    };
    metrics.api_error(verb, resource);
    metrics.watch_restart(resource);
}
