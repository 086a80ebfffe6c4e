//! A test cluster: the part of a Kubernetes API server tideway uses, over real HTTP on 127.0.0.1, so that
//! tideway's own `kube` client talks to it exactly as to a real cluster.
//!
//! It keeps objects as JSON with the API server's conventions (`resourceVersion` on every object, `409`
//! on a stale one, `generation` moved by spec changes only, the `status` and `scale` subresources, watches
//! that replay from a version, send bookmarks, and get `410 Gone` once their version is compacted).

mod api;
mod controller;
mod patch;
mod store;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use controller::{POD_DELETION_COST, PodTiming};
pub use store::Resource;

use std::sync::Arc;

use crate::TestReplica;
use controller::Controllers;
use store::{Key, Store};

/// A running test cluster; it stops when dropped.
pub struct TestCluster {
    addr: SocketAddr,
    store: Store,
    controllers: Arc<Controllers>,
    accept: JoinHandle<()>,
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
        let accept = tokio::spawn(serve(listener, store.clone()));
        let (controllers, controlling) = Controllers::spawn(store.clone(), timing);
        Ok(TestCluster {
            addr,
            store,
            controllers,
            accept,
            controlling,
        })
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

    /// A kubeconfig for this cluster, with `namespace` as the context's namespace.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    \
             user: test\n    namespace: {namespace}\ncurrent-context: test\n",
            self.url()
        )
    }

    /// The object `name` of `resource` in `namespace` (`""` for cluster-scoped ones), as stored.
    pub fn object(&self, resource: &Resource, namespace: &str, name: &str) -> Option<Value> {
        self.store.get(&Key {
            resource: resource.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
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
        self.accept.abort();
        self.controlling.abort();
    }
}

async fn serve(listener: TcpListener, store: Store) {
    while let Ok((stream, _)) = listener.accept().await {
        let store = store.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| api::handle(store.clone(), req));
            // A client that leaves mid-request is the client's business.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
