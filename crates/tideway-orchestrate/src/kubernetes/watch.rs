//! Watching a Service's EndpointSlices (never polling them): every change of any of its slices gives the
//! app's endpoints anew. The watch resumes by itself when the API server ends it, and lists again when
//! its version is gone; while the API server is unreachable the last endpoints stay in force.

use futures::{Stream, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tracing::warn;

use super::endpoints::{EndpointView, PortRef, endpoints};

/// The label an EndpointSlice names its Service by.
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The endpoints of `service` in `namespace` on `port`, each time they change: the first once the slices
/// were first listed. Watch failures are logged and retried with backoff; they end nothing.
pub fn watch_endpoints(
    client: Client,
    namespace: &str,
    service: &str,
    port: PortRef,
) -> impl Stream<Item = Vec<EndpointView>> + Send + 'static {
    let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().labels(&format!("{SERVICE_NAME}={service}"));
    let (reader, writer) = reflector::store();
    let service = service.to_owned();
    reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .filter_map(move |event| {
            let (reader, port, service) = (reader.clone(), port.clone(), service.clone());
            async move {
                match event {
                    Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                        let slices: Vec<EndpointSlice> = reader.state().iter().map(|s| (**s).clone()).collect();
                        Some(endpoints(&slices, &port))
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
                    Err(error) => {
                        warn!(%service, %error, "EndpointSlice watch failed; the last endpoints stay in force");
                        None
                    }
                }
            }
        })
}
