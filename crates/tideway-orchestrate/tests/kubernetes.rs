//! Kubernetes mode against the test cluster, over real HTTP through the `kube` client.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use tideway_core::{ReplicaState, Timestamp};
use tideway_orchestrate::kubernetes::{
    DeploymentScale, Election, EndpointView, KubernetesMetrics, PERMISSIONS, POD_DELETION_COST, Permission,
    PortRef, elect, watch_endpoints,
};
use tideway_testkit::cluster::{TestCluster, manifests};

const PATIENCE: Duration = Duration::from_secs(10);

fn metrics() -> std::sync::Arc<KubernetesMetrics> {
    let registry = prometheus::Registry::new();
    std::sync::Arc::new(KubernetesMetrics::register(&registry).expect("metrics"))
}

fn client(cluster: &TestCluster) -> Client {
    Client::try_from(Config::new(cluster.url().parse().expect("a URL"))).expect("a client")
}

async fn app(client: &Client, name: &str, replicas: u32) {
    let service: Service = serde_json::from_value(manifests::service(name)).expect("a service");
    let deployment: Deployment =
        serde_json::from_value(manifests::deployment(name, replicas)).expect("a deployment");
    Api::<Service>::namespaced(client.clone(), "apps")
        .create(&PostParams::default(), &service)
        .await
        .expect("service");
    Api::<Deployment>::namespaced(client.clone(), "apps")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment");
}

/// The endpoints a watch gives, taken until one set satisfies a condition.
struct Endpoints(futures::stream::BoxStream<'static, Vec<EndpointView>>);

impl Endpoints {
    fn watch(client: &Client, service: &str) -> Self {
        Endpoints(
            watch_endpoints(
                client.clone(),
                "apps",
                service,
                PortRef::Name("http".into()),
                metrics(),
            )
            .boxed(),
        )
    }

    async fn until(&mut self, what: &str, done: impl Fn(&[EndpointView]) -> bool) -> Vec<EndpointView> {
        loop {
            let views = tokio::time::timeout(PATIENCE, self.0.next())
                .await
                .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
                .expect("the watch goes on");
            if done(&views) {
                return views;
            }
        }
    }
}

fn states(views: &[EndpointView]) -> Vec<ReplicaState> {
    views.iter().map(|v| v.state).collect()
}

#[tokio::test]
async fn a_services_endpoints_are_watched_into_replicas_named_after_their_pods() {
    let cluster = TestCluster::start().await.expect("cluster");
    let client = client(&cluster);
    app(&client, "shiny", 2).await;
    let mut watch = Endpoints::watch(&client, "shiny");
    let ready = watch
        .until("two ready endpoints", |v| states(v) == [ReplicaState::Ready; 2])
        .await;
    for endpoint in &ready {
        assert!(
            cluster.replica("apps", &endpoint.name).is_some(),
            "{} is a pod",
            endpoint.name
        );
        let (status, headers, _) = tideway_testkit::http1_get(endpoint.addr, "shiny", "/")
            .await
            .expect("an answer");
        assert_eq!(
            (status.as_u16(), headers["x-backend"].to_str().ok()),
            (200, Some(endpoint.name.as_str()))
        );
    }

    // Scaled down, one pod's endpoint goes.
    let scale = DeploymentScale::new(client.clone(), "apps", "shiny");
    scale.set(1).await.expect("scaled");
    let one = watch.until("one endpoint", |v| v.len() == 1).await;
    assert!(
        ready.iter().any(|e| e.name == one[0].name),
        "one of the two stayed"
    );

    // The watch is cut by an outage and retries; once the API server is back the endpoints come again.
    cluster.outage();
    cluster.restore().await.expect("restored");
    scale.set(3).await.expect("scaled");
    watch
        .until("three ready endpoints", |v| states(v) == [ReplicaState::Ready; 3])
        .await;
}

/// A client presenting a token that holds `permissions` and nothing more.
async fn client_with(cluster: &TestCluster, permissions: &[Permission]) -> Client {
    let token = cluster.token(
        permissions
            .iter()
            .map(|p| tideway_testkit::cluster::Permission::new(p.group, p.resource, p.verb)),
    );
    let kubeconfig =
        Kubeconfig::from_yaml(&cluster.kubeconfig_as("apps", Some(&token))).expect("a kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a config");
    Client::try_from(config).expect("a client")
}

#[tokio::test]
async fn a_scale_down_removes_exactly_the_drained_pod_with_only_the_listed_permissions() {
    let cluster = TestCluster::start().await.expect("cluster");
    app(&client(&cluster), "shiny", 3).await;
    let client = client_with(&cluster, PERMISSIONS).await;
    let mut watch = Endpoints::watch(&client, "shiny");
    let ready = watch
        .until("three ready endpoints", |v| states(v) == [ReplicaState::Ready; 3])
        .await;
    let scale = DeploymentScale::new(client.clone(), "apps", "shiny");
    assert_eq!(scale.replicas().await.expect("the count"), 3);

    // The middle pod is neither the oldest nor the youngest: only its mark makes it the one to go.
    let drained = ready[1].name.clone();
    scale.remove(&drained, 3).await.expect("removed");
    let left = watch.until("two endpoints", |v| v.len() == 2).await;
    assert!(left.iter().all(|e| e.name != drained), "{drained} went: {left:?}");
    for endpoint in &left {
        let pod = cluster
            .object(
                &tideway_testkit::cluster::Resource {
                    group: String::new(),
                    plural: "pods".into(),
                },
                "apps",
                &endpoint.name,
            )
            .expect("a pod");
        assert!(
            pod.pointer("/metadata/annotations")
                .and_then(|a| a.get(POD_DELETION_COST))
                .is_none()
        );
    }
    scale.set(3).await.expect("scaled up");
    watch
        .until("three ready endpoints again", |v| {
            states(v) == [ReplicaState::Ready; 3]
        })
        .await;

    // A drained pod that died meanwhile is not there to mark: the count is lowered all the same.
    scale
        .remove("shiny-gone", 3)
        .await
        .expect("removed without a mark");
    assert_eq!(scale.replicas().await.expect("the count"), 2);
    scale.set(3).await.expect("scaled up");

    // Without the permission to mark pods, the removal fails: the list is what the code needs.
    let without: Vec<Permission> = PERMISSIONS
        .iter()
        .copied()
        .filter(|p| p.resource != "pods")
        .collect();
    let scale = DeploymentScale::new(client_with(&cluster, &without).await, "apps", "shiny");
    match scale.remove(&left[0].name, 3).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn one_instance_leads_and_another_takes_over_within_the_lease_duration() {
    let cluster = TestCluster::start().await.expect("cluster");
    let duration = Duration::from_secs(1);
    let election = |identity: &str| Election {
        namespace: "apps".into(),
        lease: "tideway".into(),
        identity: identity.into(),
        duration,
        renew_every: Duration::from_millis(100),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let mut a = elect(
        client_with(&cluster, PERMISSIONS).await,
        election("a"),
        metrics(),
        stop.clone(),
    );
    let mut b = elect(
        client_with(&cluster, PERMISSIONS).await,
        election("b"),
        metrics(),
        stop.clone(),
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let first_leader = loop {
        tokio::select! {
            _ = a.changed() => {}
            _ = b.changed() => {}
            () = tokio::time::sleep_until(deadline) => panic!("nobody leads"),
        }
        let (la, lb) = (*a.borrow(), *b.borrow());
        assert!(!(la && lb), "never two leaders");
        if la || lb {
            break if la { "a" } else { "b" };
        }
    };
    // Both stay as they are for a while: the leader renews, the other waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (*a.borrow(), *b.borrow()),
        (first_leader == "a", first_leader == "b")
    );

    // The leader goes (its process ends: nothing renews the lease any more); the other takes over.
    let (mut survivor, gone) = if first_leader == "a" { (b, a) } else { (a, b) };
    drop(gone);
    let went = tokio::time::Instant::now();
    tokio::time::timeout(PATIENCE, survivor.wait_for(|leads| *leads))
        .await
        .expect("the other takes over")
        .expect("its election runs");
    let failover = went.elapsed();
    println!(
        "leader failover: {} ms (lease duration {} ms)",
        failover.as_millis(),
        duration.as_millis()
    );
    assert!(
        failover < duration * 2 + Duration::from_millis(500),
        "took {failover:?}"
    );
}

/// Tokio's clock, as the binary's.
struct TokioClock(tokio::time::Instant);

impl tideway_core::Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let millis = self.0.elapsed().as_millis();
        Timestamp::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
    }
}

/// App `shiny` of the test cluster under a running scaling loop with `policy`, through a client that
/// holds exactly the listed permissions, leading on a 1 s lease.
struct Scaled {
    app: std::sync::Arc<tideway_core::App>,
    api: tideway_orchestrate::kubernetes::ApiServer,
    /// Where Kubernetes mode's metrics are.
    registry: prometheus::Registry,
    _scaling: tideway_orchestrate::ScalingHandle,
}

impl Scaled {
    async fn start(cluster: &TestCluster, policy: tideway_core::Policy) -> Scaled {
        use tideway_config::KubernetesSettings;
        use tideway_orchestrate::kubernetes::{ApiServer, KubernetesOrchestrator, Target};
        use tideway_orchestrate::{Evict, Orchestration, Orchestrator, ScalingLoop, ScalingMetrics};

        let clock: std::sync::Arc<dyn tideway_core::Clock> =
            std::sync::Arc::new(TokioClock(tokio::time::Instant::now()));
        let app = tideway_core::App::new("shiny", policy, std::sync::Arc::clone(&clock));
        let registry = prometheus::Registry::new();
        let kubernetes = std::sync::Arc::new(KubernetesMetrics::register(&registry).expect("metrics"));
        let settings = KubernetesSettings {
            lease_duration: Duration::from_secs(1),
            lease_renew_every: Duration::from_millis(100),
            ..KubernetesSettings::default()
        };
        let api = ApiServer::with_client(client_with(cluster, PERMISSIONS).await, &settings, kubernetes);
        let target = Target {
            namespace: Some("apps".into()),
            deployment: "shiny".into(),
            service: "shiny".into(),
            port: PortRef::Name("http".into()),
        };
        let (orchestrator, events) =
            KubernetesOrchestrator::spawn(&api, "shiny", target, std::sync::Arc::clone(&clock));
        let metrics =
            std::sync::Arc::new(ScalingMetrics::register(&prometheus::Registry::new()).expect("metrics"));
        let evict: Evict = std::sync::Arc::new(|_: &tideway_core::Replica| {});
        let scaling = ScalingLoop::spawn(
            std::sync::Arc::clone(&app),
            Orchestration {
                orchestrator: std::sync::Arc::new(orchestrator) as std::sync::Arc<dyn Orchestrator>,
                events,
                leadership: api.leadership(),
            },
            evict,
            clock,
            metrics,
            Vec::new(),
        );
        Scaled {
            app,
            api,
            registry,
            _scaling: scaling,
        }
    }
}

/// The app's ready replicas.
fn ready(app: &tideway_core::App) -> usize {
    app.replicas()
        .iter()
        .filter(|r| r.state() == ReplicaState::Ready)
        .count()
}

#[tokio::test]
async fn the_scaling_loop_scales_a_deployment_by_the_connections_it_counts() {
    use tideway_core::{Admission, Policy, SpawnThreshold};

    let cluster = TestCluster::start().await.expect("cluster");
    app(&client(&cluster), "shiny", 1).await;
    let scaled = Scaled::start(
        &cluster,
        Policy {
            min_instances: 1,
            max_instances: 3,
            max_connections: 2,
            spawn_threshold: SpawnThreshold::new(50).expect("a threshold"),
            scale_down_delay: Duration::from_millis(200),
            ..Policy::default()
        },
    )
    .await;
    let shiny = &scaled.app;
    tideway_testkit::eventually("the Deployment's pod as a ready replica", PATIENCE, || {
        ready(shiny) == 1
    })
    .await;

    // Two connections fill one replica past its 50 % threshold: the Deployment is scaled to two.
    let deployment = tideway_testkit::cluster::Resource {
        group: "apps".into(),
        plural: "deployments".into(),
    };
    assert_eq!(
        cluster
            .object(&deployment, "apps", "shiny")
            .map(|d| d["spec"]["replicas"].clone()),
        Some(json!(1)),
        "the running pod counted: nothing more was asked"
    );
    let crossing = tokio::time::Instant::now();
    let seats: Vec<_> = (0..2)
        .filter_map(|_| match shiny.admit() {
            Admission::Seated(seat) => Some(seat),
            _ => None,
        })
        .collect();
    assert_eq!(seats.len(), 2, "one replica's two seats");
    tideway_testkit::eventually("the scale written", PATIENCE, || {
        cluster
            .object(&deployment, "apps", "shiny")
            .is_some_and(|d| d["spec"]["replicas"] == 2)
    })
    .await;
    println!(
        "threshold crossing → scale written: {:.2} ms",
        crossing.elapsed().as_secs_f64() * 1000.0
    );
    tideway_testkit::eventually("a second ready replica", PATIENCE, || ready(shiny) == 2).await;
    let scale = DeploymentScale::new(client(&cluster), "apps", "shiny");
    assert_eq!(scale.replicas().await.expect("the count"), 2);

    // The connections end: after the delay the emptier replica drains and exactly its pod goes.
    drop(seats);
    tideway_testkit::eventually("one replica left", PATIENCE, || shiny.replicas().len() == 1).await;
    assert_eq!(scale.replicas().await.expect("the count"), 1);
    let left = shiny.replicas()[0].name().to_owned();
    assert!(
        cluster.replica("apps", &left).is_some(),
        "{left} is the pod that stayed"
    );
}

#[tokio::test]
async fn a_pending_pod_taken_instead_of_the_drained_one_is_a_mismatch_and_the_drained_pod_is_kept() {
    use tideway_core::{Admission, Policy, SpawnThreshold};
    use tideway_testkit::cluster::PodTiming;

    // Pods take 1.5 s to start: a pod created by a scale-up stays pending, without an endpoint, meanwhile.
    let timing = PodTiming {
        start_delay: Duration::from_millis(1500),
        ..PodTiming::default()
    };
    let cluster = TestCluster::start_with(timing).await.expect("cluster");
    app(&client(&cluster), "shiny", 2).await;
    let scaled = Scaled::start(
        &cluster,
        Policy {
            min_instances: 1,
            max_instances: 3,
            max_connections: 1,
            spawn_threshold: SpawnThreshold::new(100).expect("a threshold"),
            scale_down_delay: Duration::from_millis(200),
            ..Policy::default()
        },
    )
    .await;
    let shiny = &scaled.app;
    tideway_testkit::eventually("two ready replicas", PATIENCE, || ready(shiny) == 2).await;
    tideway_testkit::eventually("the lead", PATIENCE, || scaled.api.leadership().leads()).await;
    // A connection on each pod keeps both.
    let mut seats: Vec<_> = (0..2)
        .filter_map(|_| match shiny.admit() {
            Admission::Seated(seat) => Some(seat),
            _ => None,
        })
        .collect();
    assert_eq!(seats.len(), 2);
    let busy = seats[0].replica().name().to_owned();

    // Someone scales to three (the new pod is pending), then a connection ends: tideway drains the idle
    // pod and lowers the count — and the ReplicaSet controller takes the pending pod first.
    let deployment = tideway_testkit::cluster::Resource {
        group: "apps".into(),
        plural: "deployments".into(),
    };
    let count = || {
        cluster
            .object(&deployment, "apps", "shiny")
            .and_then(|d| d["spec"]["replicas"].as_u64())
    };
    assert!(cluster.scale("apps", "shiny", 3));
    seats.truncate(1);
    let mismatches = || {
        scaled
            .registry
            .gather()
            .iter()
            .filter(|family| family.name() == "tideway_scale_down_mismatches_total")
            .flat_map(|family| {
                family
                    .get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value())
                    .collect::<Vec<_>>()
            })
            .sum::<f64>()
    };
    tideway_testkit::eventually("the mismatch seen", Duration::from_secs(20), || {
        mismatches() == 1.0
    })
    .await;

    // The drained pod was kept and drained again: the busy pod, and only it, remains, with no mark.
    tideway_testkit::eventually("one pod left", Duration::from_secs(20), || {
        count() == Some(1) && shiny.replicas().len() == 1
    })
    .await;
    assert_eq!(shiny.replicas()[0].name(), busy);
    let pod = cluster
        .object(
            &tideway_testkit::cluster::Resource {
                group: String::new(),
                plural: "pods".into(),
            },
            "apps",
            &busy,
        )
        .expect("the busy pod");
    assert!(
        pod.pointer("/metadata/annotations")
            .and_then(|a| a.get(POD_DELETION_COST))
            .is_none(),
        "no mark left: {pod}"
    );
    assert_eq!(mismatches(), 1.0);
}
