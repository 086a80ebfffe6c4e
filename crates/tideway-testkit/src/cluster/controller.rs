//! The test cluster's controllers, standing in for the Deployment and ReplicaSet controllers, the
//! kubelet and the EndpointSlice controller: a Deployment's `spec.replicas` becomes pods, a pod becomes a
//! real [`TestReplica`] listening on an address of its own after the start delay, and every Service's
//! pods become the endpoints of its EndpointSlice, with their readiness.
//!
//! Scale-down deletes pods in the ReplicaSet controller's order: pending before running, not ready before
//! ready, the lowest `controller.kubernetes.io/pod-deletion-cost` first, then the youngest. A deleted pod
//! is terminating — its endpoint stays listed with `ready: false, terminating: true` — until its open
//! sessions end or its grace period does; then its replica stops and the pod is gone.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::store::{Key, Resource, Store, now_rfc3339};
use crate::TestReplica;

/// How pods of the test cluster behave.
#[derive(Clone, Copy, Debug)]
pub struct PodTiming {
    /// From a pod's creation to its replica listening and the pod being ready.
    pub start_delay: Duration,
    /// Longest a deleted pod waits for its open sessions to end before its replica stops.
    pub grace: Duration,
}

impl Default for PodTiming {
    fn default() -> Self {
        PodTiming {
            start_delay: Duration::from_millis(50),
            grace: Duration::from_secs(5),
        }
    }
}

/// The annotation the ReplicaSet controller ranks pods by when it scales down.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The running controllers' state: the replica behind each pod.
pub(crate) struct Controllers {
    store: Store,
    timing: PodTiming,
    replicas: Mutex<HashMap<Key, Arc<TestReplica>>>,
    pods_made: AtomicU32,
}

fn resource(group: &str, plural: &str) -> Resource {
    Resource {
        group: group.to_owned(),
        plural: plural.to_owned(),
    }
}

/// A process-wide supply of pod addresses in 127.1.0.0/16, so that clusters of parallel tests never share
/// one; each test process starts at a place of its own (by its id), so that parallel test processes rarely
/// meet, and an address another process holds is skipped ([`Controllers::start_pod`]).
fn next_pod_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 251) << 8;
    let n = start + NEXT.fetch_add(1, Ordering::Relaxed);
    let [_, _, b, c] = (n % 0xffff).to_be_bytes();
    Ipv4Addr::new(127, 1, b, c.max(1))
}

impl Controllers {
    /// Starts the controllers over `store`; they stop when the returned task is aborted.
    pub(crate) fn spawn(store: Store, timing: PodTiming) -> (Arc<Controllers>, tokio::task::JoinHandle<()>) {
        let controllers = Arc::new(Controllers {
            store,
            timing,
            replicas: Mutex::new(HashMap::new()),
            pods_made: AtomicU32::new(0),
        });
        let running = Arc::clone(&controllers);
        let task = tokio::spawn(async move { running.run().await });
        (controllers, task)
    }

    async fn run(self: Arc<Self>) {
        let Some((_, mut changes)) = self.store.changes_after(self.store.version()) else {
            return;
        };
        self.reconcile();
        loop {
            match changes.recv().await {
                Ok(_) | Err(RecvError::Lagged(_)) => self.reconcile(),
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Brings pods in line with their Deployments, Deployments' status with their pods, and EndpointSlices
    /// with their Services' pods.
    fn reconcile(self: &Arc<Self>) {
        let (deployments, _) = self.store.list(&resource("apps", "deployments"), None);
        for deployment in &deployments {
            self.reconcile_deployment(deployment);
        }
        let (services, _) = self.store.list(&resource("", "services"), None);
        for service in &services {
            self.reconcile_endpoints(service);
        }
    }

    fn reconcile_deployment(self: &Arc<Self>, deployment: &Value) {
        let namespace = text(deployment, "/metadata/namespace");
        let name = text(deployment, "/metadata/name");
        let desired = deployment
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let pods = self.pods_of(&namespace, &name);
        let live: Vec<&Value> = pods.iter().filter(|pod| !terminating(pod)).collect();
        let live_count = live.len() as u64;
        if live_count < desired {
            for _ in live_count..desired {
                self.create_pod(deployment, &namespace, &name);
            }
        } else if live_count > desired {
            let mut ranked = live.clone();
            ranked.sort_by_key(|pod| deletion_rank(pod));
            for pod in ranked.into_iter().take((live_count - desired) as usize) {
                self.terminate(&namespace, &text(pod, "/metadata/name"));
            }
        }
        let ready = live.iter().filter(|pod| is_ready(pod)).count();
        let status = json!({
            "observedGeneration": deployment.pointer("/metadata/generation"),
            "replicas": live.len(),
            "updatedReplicas": live.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
        });
        if deployment.get("status") != Some(&status) {
            let key = key("apps", "deployments", &namespace, &name);
            let _ = self.store.update(&key, |current| {
                let mut next = current.clone();
                if let Some(map) = next.as_object_mut() {
                    map.insert("status".into(), status);
                }
                next
            });
        }
    }

    /// The pods a Deployment owns.
    fn pods_of(&self, namespace: &str, deployment: &str) -> Vec<Value> {
        let (pods, _) = self.store.list(&resource("", "pods"), Some(namespace));
        pods.into_iter()
            .filter(|pod| {
                pod.pointer("/metadata/ownerReferences/0/name")
                    .and_then(Value::as_str)
                    == Some(deployment)
            })
            .collect()
    }

    fn create_pod(self: &Arc<Self>, deployment: &Value, namespace: &str, owner: &str) {
        let n = self.pods_made.fetch_add(1, Ordering::Relaxed);
        let name = format!("{owner}-{n:05x}");
        let labels = deployment
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let port = deployment
            .pointer("/spec/template/spec/containers/0/ports/0/containerPort")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(8080);
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment", "name": owner, "uid": deployment.pointer("/metadata/uid") }],
            },
            "spec": { "containers": [{ "name": "app", "ports": [{ "containerPort": port }] }] },
            "status": { "phase": "Pending", "conditions": [{ "type": "Ready", "status": "False" }] },
        });
        let key = key("", "pods", namespace, &name);
        if self.store.create(&key, pod).is_err() {
            return;
        }
        let controllers = Arc::clone(self);
        tokio::spawn(async move { controllers.start_pod(key, port).await });
    }

    /// The kubelet's part: after the start delay, a replica listens at the pod's address and the pod is
    /// ready — unless it was deleted meanwhile.
    async fn start_pod(self: Arc<Self>, key: Key, port: u16) {
        tokio::time::sleep(self.timing.start_delay).await;
        // An address another test process holds is skipped.
        let mut tries = 0;
        let (ip, replica) = loop {
            let ip = next_pod_ip();
            match TestReplica::start_at(&key.name, SocketAddr::from((ip, port))).await {
                Ok(replica) => break (ip, replica),
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && tries < 64 => tries += 1,
                Err(_) => return,
            }
        };
        let started = self.store.update(&key, |current| {
            let mut next = current.clone();
            if terminating(current) {
                return next;
            }
            if let Some(map) = next.as_object_mut() {
                map.insert(
                    "status".into(),
                    json!({
                        "phase": "Running",
                        "podIP": ip.to_string(),
                        "startTime": now_rfc3339(),
                        "conditions": [{ "type": "Ready", "status": "True" }],
                    }),
                );
            }
            next
        });
        if started.is_ok_and(|pod| is_ready(&pod)) {
            self.lock_replicas().insert(key, Arc::new(replica));
        }
    }

    /// Deletes a pod the way a kubelet ends one: terminating first, then gone once its sessions ended or
    /// its grace did.
    fn terminate(self: &Arc<Self>, namespace: &str, name: &str) {
        let key = key("", "pods", namespace, name);
        let marked = self.store.update(&key, |current| {
            let mut next = current.clone();
            super::store::metadata(&mut next).insert("deletionTimestamp".into(), json!(now_rfc3339()));
            if let Some(conditions) = next.pointer_mut("/status/conditions/0/status") {
                *conditions = json!("False");
            }
            next
        });
        if marked.is_err() {
            return;
        }
        let controllers = Arc::clone(self);
        tokio::spawn(async move {
            let replica = controllers.lock_replicas().remove(&key);
            if let Some(replica) = &replica {
                replica.wait_open_sessions(0, controllers.timing.grace).await;
            }
            drop(replica);
            let _ = controllers.store.delete(&key);
        });
    }

    /// Deletes a pod at once, as a crash or an eviction would: its replica stops, its sessions are cut.
    pub(crate) fn kill(&self, namespace: &str, name: &str) {
        let key = key("", "pods", namespace, name);
        drop(self.lock_replicas().remove(&key));
        let _ = self.store.delete(&key);
    }

    /// The replica behind a pod, while it runs.
    pub(crate) fn replica(&self, namespace: &str, name: &str) -> Option<Arc<TestReplica>> {
        self.lock_replicas()
            .get(&key("", "pods", namespace, name))
            .cloned()
    }

    fn lock_replicas(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<TestReplica>>> {
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The EndpointSlice controller's part: one slice per Service, an endpoint per pod it selects that has
    /// an address, ready only while the pod is ready and not terminating.
    fn reconcile_endpoints(&self, service: &Value) {
        let namespace = text(service, "/metadata/namespace");
        let name = text(service, "/metadata/name");
        let Some(selector) = service.pointer("/spec/selector").and_then(Value::as_object) else {
            return;
        };
        let (pods, _) = self.store.list(&resource("", "pods"), Some(&namespace));
        let endpoints: Vec<Value> = pods
            .iter()
            .filter(|pod| {
                selector.iter().all(|(k, v)| pod.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
            })
            .filter_map(|pod| {
                let ip = pod.pointer("/status/podIP").and_then(Value::as_str)?;
                let leaving = terminating(pod);
                Some(json!({
                    "addresses": [ip],
                    "conditions": { "ready": is_ready(pod) && !leaving, "serving": is_ready(pod) || leaving, "terminating": leaving },
                    "targetRef": { "kind": "Pod", "name": pod.pointer("/metadata/name"), "namespace": namespace },
                }))
            })
            .collect();
        let ports: Vec<Value> = service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map(|ports| {
                ports
                    .iter()
                    .map(|port| {
                        json!({
                            "name": port.get("name").cloned().unwrap_or(json!("")),
                            "port": port.get("targetPort").or_else(|| port.get("port")),
                            "protocol": "TCP",
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let slice_name = format!("{name}-slice");
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": slice_name,
                "namespace": namespace,
                "labels": { "kubernetes.io/service-name": name },
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        });
        let key = key("discovery.k8s.io", "endpointslices", &namespace, &slice_name);
        match self.store.get(&key) {
            None => {
                let _ = self.store.create(&key, slice);
            }
            Some(current)
                if current.get("endpoints") != slice.get("endpoints")
                    || current.get("ports") != slice.get("ports") =>
            {
                let _ = self.store.update(&key, |current| {
                    let mut next = current.clone();
                    if let (Some(map), Some(endpoints), Some(ports)) =
                        (next.as_object_mut(), slice.get("endpoints"), slice.get("ports"))
                    {
                        map.insert("endpoints".into(), endpoints.clone());
                        map.insert("ports".into(), ports.clone());
                    }
                    next
                });
            }
            Some(_) => {}
        }
    }
}

fn key(group: &str, plural: &str, namespace: &str, name: &str) -> Key {
    Key {
        resource: resource(group, plural),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

fn text(object: &Value, pointer: &str) -> String {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some()
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True")))
        })
}

/// Where a pod stands in the ReplicaSet controller's order of deletion (lowest goes first): pending before
/// running, not ready before ready, then the lowest deletion cost, then the youngest.
fn deletion_rank(pod: &Value) -> (u8, u8, i64, std::cmp::Reverse<u64>) {
    let running = pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
    let cost = pod
        .pointer(&format!(
            "/metadata/annotations/{}",
            POD_DELETION_COST.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let age = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .and_then(|uid| u64::from_str_radix(uid.rsplit('-').next().unwrap_or_default(), 16).ok())
        .unwrap_or(0);
    (
        u8::from(running),
        u8::from(is_ready(pod)),
        cost,
        std::cmp::Reverse(age),
    )
}
