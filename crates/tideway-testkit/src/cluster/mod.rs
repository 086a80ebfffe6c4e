//! A test cluster: the part of a Kubernetes API server tideway uses, over real HTTP on 127.0.0.1, so that
//! tideway's own `kube` client talks to it exactly as to a real cluster.
//!
//! It keeps objects as JSON with the API server's conventions (`resourceVersion` on every object, `409`
//! on a stale one, `generation` moved by spec changes only, the `status` and `scale` subresources, watches
//! that replay from a version, send bookmarks, and get `410 Gone` once their version is gone), and shows
//! the faults real ones do when told to: an outage, error answers with `Retry-After`, a conflict on the
//! next write, a watch that expires, ends or stalls.

mod access;
mod api;
mod controller;
mod discovery;
mod faults;
pub mod manifests;
mod patch;
mod store;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

pub use http::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use access::Permission;
pub use controller::{POD_DELETION_COST, PodTiming};
pub use store::Resource;

use crate::TestReplica;
use controller::Controllers;
use store::{Key, Store};

/// A running test cluster; it stops when dropped.
pub struct TestCluster {
    addr: SocketAddr,
    store: Store,
    controllers: Arc<Controllers>,
    /// The API server's accept loop; `None` during an outage.
    accept: Mutex<Option<JoinHandle<()>>>,
    /// Moved on to cut every open connection, at the start of an outage.
    cut: watch::Sender<u64>,
    controlling: JoinHandle<()>,
}

impl TestCluster {
    /// Starts an empty cluster — its API server on `127.0.0.1:0` and its controllers — whose pods start
    /// and stop as [`PodTiming::default`] says.
    pub async fn start() -> io::Result<TestCluster> {
        Self::start_with(PodTiming::default()).await
    }

    /// Starts an empty cluster whose pods start and stop as `timing` says.
    pub async fn start_with(timing: PodTiming) -> io::Result<TestCluster> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let store = Store::new();
        let cut = watch::channel(0).0;
        let accept = tokio::spawn(serve(listener, store.clone(), cut.subscribe()));
        let (controllers, controlling) = Controllers::spawn(store.clone(), timing);
        Ok(TestCluster {
            addr,
            store,
            controllers,
            accept: Mutex::new(Some(accept)),
            cut,
            controlling,
        })
    }

    /// Takes the API server down: its connections are cut and new ones refused, until
    /// [`TestCluster::restore`]. The controllers and pods run on, as in a real cluster whose API server
    /// is unreachable.
    pub fn outage(&self) {
        if let Some(accept) = self.lock_accept().take() {
            accept.abort();
        }
        self.cut.send_modify(|n| *n += 1);
    }

    /// Brings the API server back on its address after an outage.
    pub async fn restore(&self) -> io::Result<()> {
        // The stopped accept loop lets go of the address once the runtime drops it: moments, at most.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Err(error)
                    if error.kind() == io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                bound => break bound?,
            }
        };
        let accept = tokio::spawn(serve(listener, self.store.clone(), self.cut.subscribe()));
        if let Some(old) = self.lock_accept().replace(accept) {
            old.abort();
        }
        Ok(())
    }

    fn lock_accept(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.accept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers the next `count` requests with `status` (500, 503, 429, …) and `Retry-After: seconds`.
    pub fn fail_next(&self, count: u32, status: StatusCode, seconds: u64) {
        self.store.faults().fail_next(count, status, seconds);
    }

    /// Answers the next write (PUT or PATCH) with `409 Conflict`, as when another writer got there first.
    pub fn conflict_next_write(&self) {
        self.store.faults().conflict_next_write();
    }

    /// While `stalled`, open and new watches send nothing and stay open, as a stuck watch does; what
    /// changes meanwhile comes once they move again.
    pub fn stall_watches(&self, stalled: bool) {
        self.store.faults().stall_watches(stalled);
    }

    /// A bearer token that may do exactly what `permissions` grant (401 for unknown tokens, 403 for
    /// what is not granted); requests without a token may do anything.
    pub fn token(&self, permissions: impl IntoIterator<Item = Permission>) -> String {
        self.store.access().issue(permissions.into_iter().collect())
    }

    /// The replica behind pod `name` in `namespace`, while it runs.
    pub fn replica(&self, namespace: &str, name: &str) -> Option<Arc<TestReplica>> {
        self.controllers.replica(namespace, name)
    }

    /// Deletes a pod at once, as a crash or an eviction does: its replica stops, its sessions are cut.
    pub fn kill_pod(&self, namespace: &str, name: &str) {
        self.controllers.kill(namespace, name);
    }

    /// The API server's URL, as a kubeconfig's `server`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this cluster, with `namespace` as the context's namespace, whose user presents
    /// `token` (see [`TestCluster::token`]), or none (the cluster's administrator).
    pub fn kubeconfig_as(&self, namespace: &str, token: Option<&str>) -> String {
        let user = token.map_or_else(|| "{}".to_owned(), |token| format!("{{token: {token}}}"));
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             users:\n- name: test\n  user: {user}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    \
             user: test\n    namespace: {namespace}\ncurrent-context: test\n",
            self.url()
        )
    }

    /// The object `name` of `resource` in `namespace` (`""` for cluster-scoped ones), as stored.
    pub fn object(&self, resource: &Resource, namespace: &str, name: &str) -> Option<Value> {
        self.store.get(&object_key(resource, namespace, name))
    }

    /// Creates `object` (named by its `metadata.name`) of `resource` in `namespace` (`""` for cluster-scoped
    /// ones), as `kubectl create` would; `false` if it has no name or exists already.
    pub fn create(&self, resource: &Resource, namespace: &str, object: Value) -> bool {
        let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) else {
            return false;
        };
        self.store
            .create(&object_key(resource, namespace, name), object)
            .is_ok()
    }

    /// Replaces the `spec` of object `name` of `resource` in `namespace`, as `kubectl apply` would;
    /// `false` if there is no such object.
    pub fn set_spec(&self, resource: &Resource, namespace: &str, name: &str, spec: Value) -> bool {
        self.change(resource, namespace, name, |object| object["spec"] = spec)
    }

    /// Replaces the `data` of object `name` of `resource` in `namespace` (a Secret's), as `kubectl apply`
    /// would; `false` if there is no such object.
    pub fn set_data(&self, resource: &Resource, namespace: &str, name: &str, data: Value) -> bool {
        self.change(resource, namespace, name, |object| object["data"] = data)
    }

    /// Sets annotation `key` of object `name` of `resource` in `namespace` to `value`, as `kubectl
    /// annotate` would; `false` if there is no such object.
    pub fn annotate(&self, resource: &Resource, namespace: &str, name: &str, key: &str, value: &str) -> bool {
        self.change(resource, namespace, name, |object| {
            object["metadata"]["annotations"][key] = value.into();
        })
    }

    /// Changes object `name` of `resource` in `namespace` as `change` does; `false` if there is none.
    fn change(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> bool {
        self.store
            .update(&object_key(resource, namespace, name), |object| {
                let mut next = object.clone();
                change(&mut next);
                next
            })
            .is_ok()
    }

    /// Deletes object `name` of `resource` in `namespace`, as `kubectl delete` would; `false` if there is
    /// none.
    pub fn delete(&self, resource: &Resource, namespace: &str, name: &str) -> bool {
        self.store.delete(&object_key(resource, namespace, name)).is_ok()
    }

    /// Every object of `resource` in `namespace`, as stored.
    pub fn objects(&self, resource: &Resource, namespace: &str) -> Vec<Value> {
        self.store.list(resource, Some(namespace)).0
    }

    /// Deploys app `name` in `namespace` as [`manifests`] describe it: a Service, and a Deployment of
    /// `replicas` pods.
    pub fn deploy(&self, namespace: &str, name: &str, replicas: u32) {
        for (group, plural, object) in [
            ("", "services", manifests::service(name)),
            ("apps", "deployments", manifests::deployment(name, replicas)),
        ] {
            let resource = Resource {
                group: group.into(),
                plural: plural.into(),
            };
            // A second deploy of the same app changes nothing.
            let _ = self.create(&resource, namespace, object);
        }
    }

    /// Sets Deployment `name`'s `spec.replicas`, as `kubectl scale` or an HPA would; `false` if there is
    /// no such Deployment.
    pub fn scale(&self, namespace: &str, name: &str, replicas: u32) -> bool {
        let deployments = Resource {
            group: "apps".into(),
            plural: "deployments".into(),
        };
        self.change(&deployments, namespace, name, |deployment| {
            deployment["spec"]["replicas"] = replicas.into();
        })
    }

    /// LIST requests served so far: a client that resumes a watch lists nothing, one whose version was
    /// compacted away lists again.
    pub fn lists(&self) -> u64 {
        self.store.lists()
    }

    /// Makes the next watch that resumes from a `resourceVersion` get `410 Gone`, as from a real API
    /// server whose watch window moved past that version: the client must list again.
    pub fn expire_next_watch(&self) {
        self.store.expire_next_watch();
    }

    /// Ends every open watch, as an API server may at any time: clients resume from their last
    /// `resourceVersion`.
    pub fn end_watches(&self) {
        self.store.end_watches();
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.outage();
        self.controlling.abort();
    }
}

/// Where object `name` of `resource` in `namespace` is stored.
fn object_key(resource: &Resource, namespace: &str, name: &str) -> Key {
    Key {
        resource: resource.clone(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

async fn serve(listener: TcpListener, store: Store, cut: watch::Receiver<u64>) {
    while let Ok((stream, _)) = listener.accept().await {
        let store = store.clone();
        let mut cut = cut.clone();
        cut.mark_unchanged();
        tokio::spawn(async move {
            let service = service_fn(move |req| api::handle(store.clone(), req));
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            // A client that leaves mid-request is the client's business; an outage ends the connection.
            tokio::select! {
                _ = connection => {}
                _ = cut.changed() => {}
            }
        });
    }
}
