//! Kubernetes mode end to end: the real binary, with its own `kube` client, against the test cluster —
//! a Kubernetes API server subset over real HTTP whose pods are real test replicas — holding only the
//! permissions of the one list the code declares.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tideway_e2e::{PATIENCE, Tideway, config_file};
use tideway_orchestrate::kubernetes::PERMISSIONS;
use tideway_testkit::cluster::{Permission, PodTiming, Resource, StatusCode, TestCluster};
use tideway_testkit::tokio_tungstenite::WebSocketStream;
use tideway_testkit::tungstenite::Message;
use tideway_testkit::{eventually, http1_get, ws_connect};
use tokio::net::TcpStream;

/// A kubeconfig for the test cluster, namespace `apps`, whose token holds exactly the declared
/// permissions.
fn kubeconfig(cluster: &TestCluster) -> std::path::PathBuf {
    let token = cluster.token(
        PERMISSIONS
            .iter()
            .map(|p| Permission::new(p.group, p.resource, p.verb)),
    );
    config_file(&cluster.kubeconfig_as("apps", Some(&token)))
}

/// tideway with app `shiny` on host `shiny.test` as Deployment `shiny`, plus `policy`; a short lease.
fn start(cluster: &TestCluster, identity: &str, policy: &str) -> Tideway {
    start_with_lease(cluster, identity, policy, "1s")
}

/// Like [`start`], with a lease of `lease_duration`.
fn start_with_lease(cluster: &TestCluster, identity: &str, policy: &str, lease_duration: &str) -> Tideway {
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [kubernetes]\nlease_duration = \"{lease_duration}\"\nlease_renew_every = \"100ms\"\n\n\
         [[app]]\nname = \"shiny\"\nhosts = [\"shiny.test\"]\n{policy}\n\
         [app.kubernetes]\ndeployment = \"shiny\"\nport = \"http\"\n"
    );
    let kubeconfig = kubeconfig(cluster);
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 path");
    Tideway::start_with_env(&config, &[("KUBECONFIG", kubeconfig), ("POD_NAME", identity)])
}

fn deployments() -> Resource {
    Resource {
        group: "apps".into(),
        plural: "deployments".into(),
    }
}

/// The Deployment's `spec.replicas`.
fn replicas(cluster: &TestCluster) -> Option<u64> {
    cluster
        .object(&deployments(), "apps", "shiny")
        .and_then(|d| d["spec"]["replicas"].as_u64())
}

/// A metric's value as `tideway` exports it, if it does.
async fn metric(tideway: &Tideway, series: &str) -> Option<f64> {
    let (_, _, body) = http1_get(tideway.listener("metrics"), "metrics", "/metrics")
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn readyz(tideway: &Tideway) -> u16 {
    match http1_get(tideway.listener("metrics"), "metrics", "/readyz").await {
        Ok((status, _, _)) => status.as_u16(),
        Err(_) => 0,
    }
}

/// Waits, polling, until `check` holds for tideway's state read asynchronously.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A WebSocket session through tideway, and the pod that holds it.
async fn session(addr: SocketAddr) -> (WebSocketStream<TcpStream>, String) {
    let mut ws = tokio::time::timeout(PATIENCE, ws_connect(addr, "shiny.test", "/ws"))
        .await
        .expect("a session in time")
        .expect("a session");
    let pod = whoami(&mut ws).await;
    (ws, pod)
}

async fn whoami(ws: &mut WebSocketStream<TcpStream>) -> String {
    ws.send(Message::text("whoami")).await.expect("send");
    match tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("an answer in time")
    {
        Some(Ok(Message::Text(name))) => name.to_string(),
        other => panic!("expected the pod's name, got {other:?}"),
    }
}

/// The time of day of a log event, in seconds.
fn seconds_of_day(event: &serde_json::Value) -> f64 {
    let stamp = event["timestamp"].as_str().expect("a timestamp");
    let time = stamp
        .split_once('T')
        .map(|(_, t)| t.trim_end_matches('Z'))
        .expect("an RFC 3339 time");
    time.split(':')
        .map(|part| part.parse::<f64>().expect("a number"))
        .fold(0.0, |seconds, part| seconds * 60.0 + part)
}

async fn get(addr: SocketAddr) -> u16 {
    match http1_get(addr, "shiny.test", "/").await {
        Ok((status, _, _)) => status.as_u16(),
        Err(_) => 0,
    }
}

/// Waits until exactly one of `a` and `b` leads; returns the leader, then the other.
async fn leader_and_follower(a: Tideway, b: Tideway) -> (Tideway, Tideway) {
    until("one leader", || async {
        let leaders = [
            metric(&a, "tideway_leader").await,
            metric(&b, "tideway_leader").await,
        ];
        leaders.iter().filter(|l| **l == Some(1.0)).count() == 1 && leaders.iter().all(Option::is_some)
    })
    .await;
    if metric(&a, "tideway_leader").await == Some(1.0) {
        (a, b)
    } else {
        (b, a)
    }
}

const POLICY: &str = "min_instances = 1\nmax_instances = 3\nmax_connections = 2\nspawn_threshold = 50\nscale_down_delay = \"300ms\"";

#[tokio::test]
async fn sessions_scale_the_deployment_and_only_the_drained_pod_goes() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster.deploy("apps", "shiny", 1);
    let tideway = start(&cluster, "a", POLICY);
    until("/readyz after the first listing", || async {
        readyz(&tideway).await == 200
    })
    .await;
    until("the leader", || async {
        metric(&tideway, "tideway_leader").await == Some(1.0)
    })
    .await;

    // Two sessions on the one pod: one seat each past the threshold of 50 % of 2 — two pods wanted.
    let (mut kept, first) = session(tideway.addr).await;
    let (mut closing, second) = session(tideway.addr).await;
    assert_eq!(first, second, "one pod was ready");
    eventually("the Deployment scaled to 2", PATIENCE, || {
        replicas(&cluster) == Some(2)
    })
    .await;
    tideway
        .wait_for("replica ready", 2, |f| f["app"] == "shiny")
        .await;

    // One session ends: after the delay a pod drains — the idle new one, not the one holding a session.
    closing.send(Message::Close(None)).await.expect("close");
    eventually("the Deployment back at 1", PATIENCE, || {
        replicas(&cluster) == Some(1)
    })
    .await;
    let stopped = tideway.wait_for("drained: stopping replica", 1, |_| true).await;
    let drained = stopped[0]["fields"]["replica"]
        .as_str()
        .expect("a replica name")
        .to_owned();
    assert_ne!(drained, first, "the busy pod was not drained");
    eventually("the drained pod gone", PATIENCE, || {
        cluster.replica("apps", &drained).is_none()
    })
    .await;
    assert!(cluster.replica("apps", &first).is_some(), "the busy pod stays");
    assert_eq!(whoami(&mut kept).await, first, "the open session was not cut");
    let pods = cluster.object(
        &Resource {
            group: String::new(),
            plural: "pods".into(),
        },
        "apps",
        &first,
    );
    let annotations = pods
        .map(|p| p["metadata"]["annotations"].clone())
        .unwrap_or_default();
    assert!(
        annotations
            .get("controller.kubernetes.io/pod-deletion-cost")
            .is_none(),
        "no deletion cost on the pod that stays: {annotations}"
    );
}

#[tokio::test]
async fn scale_from_zero_holds_the_first_request_until_an_endpoint_is_ready() {
    let timing = PodTiming {
        start_delay: Duration::from_millis(300),
        ..PodTiming::default()
    };
    let cluster = TestCluster::start_with(timing).await.expect("cluster");
    cluster.deploy("apps", "shiny", 0);
    let tideway = start(
        &cluster,
        "a",
        "min_instances = 0\nmax_instances = 2\nstartup_timeout = \"20s\"",
    );
    until("/readyz", || async { readyz(&tideway).await == 200 }).await;
    until("the leader", || async {
        metric(&tideway, "tideway_leader").await == Some(1.0)
    })
    .await;
    assert_eq!(replicas(&cluster), Some(0));

    let asked = tokio::time::Instant::now();
    let addr = tideway.addr;
    let request = tokio::spawn(async move {
        let status = get(addr).await;
        (status, tokio::time::Instant::now())
    });
    let slices = Resource {
        group: "discovery.k8s.io".into(),
        plural: "endpointslices".into(),
    };
    let endpoint_ready = || {
        cluster
            .object(&slices, "apps", "shiny-slice")
            .and_then(|slice| slice["endpoints"].as_array().cloned())
            .is_some_and(|endpoints| endpoints.iter().any(|e| e["conditions"]["ready"] == true))
    };
    eventually("the pod's endpoint ready", PATIENCE, endpoint_ready).await;
    let ready_at = tokio::time::Instant::now();
    let (status, answered_at) = request.await.expect("the request's task");
    assert_eq!(status, 200, "the request waited for the pod");
    let waited = answered_at - asked;
    println!(
        "endpoint ready in the EndpointSlice → held request answered: {:.2} ms",
        answered_at.saturating_duration_since(ready_at).as_secs_f64() * 1000.0
    );
    assert_eq!(replicas(&cluster), Some(1), "the first request scaled from zero");
    assert!(
        waited >= Duration::from_millis(300),
        "it was held while the pod started ({waited:?})"
    );
    let decisions = tideway
        .wait_for("scaling decision", 1, |f| f["direction"] == "up")
        .await;
    assert_eq!(decisions[0]["fields"]["from"], 0);
}

#[tokio::test]
async fn a_count_set_by_someone_else_is_recorded_and_holds_for_the_delay_then_the_rule_applies() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster.deploy("apps", "shiny", 1);
    let tideway = start(&cluster, "a", POLICY);
    until("the leader", || async {
        metric(&tideway, "tideway_leader").await == Some(1.0)
    })
    .await;
    until("/readyz", || async { readyz(&tideway).await == 200 }).await;

    assert!(cluster.scale("apps", "shiny", 3), "kubectl scale --replicas=3");
    let external = tideway
        .wait_for(
            "scaling decision by someone else: it holds for scale_down_delay",
            1,
            |f| f["reason"] == "external",
        )
        .await;
    assert_eq!(
        (
            external[0]["fields"]["from"].as_u64(),
            external[0]["fields"]["to"].as_u64()
        ),
        (Some(1), Some(3))
    );
    tideway
        .wait_for("replica ready", 3, |f| f["app"] == "shiny")
        .await;

    // Idle, the app goes back to min_instances, but not before the count set by someone else held for
    // scale_down_delay (300 ms).
    eventually("the Deployment back at 1", PATIENCE, || {
        replicas(&cluster) == Some(1)
    })
    .await;
    let down = tideway
        .wait_for("scaling decision", 1, |f| f["reason"] == "idle")
        .await;
    assert_eq!(
        (
            down[0]["fields"]["from"].as_u64(),
            down[0]["fields"]["to"].as_u64()
        ),
        (Some(3), Some(1))
    );
    let held = (seconds_of_day(&down[0]) - seconds_of_day(&external[0]) + 86_400.0) % 86_400.0;
    assert!(held >= 0.3, "the outside count held for the delay, not {held} s");
    assert_eq!(
        metric(
            &tideway,
            "tideway_scale_decisions_total{app=\"shiny\",direction=\"up\",reason=\"external\"}"
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn two_instances_route_one_scales_and_the_other_takes_over_when_it_dies() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster.deploy("apps", "shiny", 1);
    let a = start(&cluster, "a", POLICY);
    let b = start(&cluster, "b", POLICY);
    for tideway in [&a, &b] {
        until("/readyz", || async { readyz(tideway).await == 200 }).await;
        until("a ready replica", || async { get(tideway.addr).await == 200 }).await;
    }
    let (mut leader, follower) = leader_and_follower(a, b).await;

    // The leader dies without a word: the other takes the lease over once it lapses.
    leader.signal("KILL");
    leader.exited().await;
    let died = tokio::time::Instant::now();
    until("the follower leads", || async {
        metric(&follower, "tideway_leader").await == Some(1.0)
    })
    .await;
    let failover = died.elapsed();
    println!(
        "leader failover: {:.0} ms (lease 1 s, renewed every 100 ms)",
        failover.as_secs_f64() * 1000.0
    );
    assert!(
        failover < Duration::from_secs(3),
        "within the lease duration and a renewal or two: {failover:?}"
    );

    // And it scales: two sessions through it want a second pod.
    let _sessions = [session(follower.addr).await, session(follower.addr).await];
    eventually("the new leader scaled to 2", PATIENCE, || {
        replicas(&cluster) == Some(2)
    })
    .await;
}

#[tokio::test]
async fn a_leader_that_stops_gives_its_lease_up_and_the_other_takes_over_before_it_would_lapse() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster.deploy("apps", "shiny", 1);
    // A lease of a minute: only a lease given up changes hands within the test's patience.
    let a = start_with_lease(&cluster, "a", POLICY, "60s");
    let b = start_with_lease(&cluster, "b", POLICY, "60s");
    let (mut leader, follower) = leader_and_follower(a, b).await;
    leader.signal("TERM");
    assert!(leader.exited().await.success());
    let stopped = tokio::time::Instant::now();
    leader.wait_for("lease given up", 1, |_| true).await;
    until("the follower leads", || async {
        metric(&follower, "tideway_leader").await == Some(1.0)
    })
    .await;
    println!(
        "failover after a graceful stop: {:.0} ms (lease 60 s, looked at every 100 ms)",
        stopped.elapsed().as_secs_f64() * 1000.0
    );
}

#[tokio::test]
async fn api_server_faults_during_traffic_fail_no_request_and_scaling_resumes() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster.deploy("apps", "shiny", 1);
    let tideway = start(&cluster, "a", POLICY);
    until("/readyz", || async { readyz(&tideway).await == 200 }).await;
    until("a ready replica", || async { get(tideway.addr).await == 200 }).await;

    let faults = [
        "outage",
        "503 with Retry-After",
        "410 on the next watch",
        "watches end",
        "watches stall",
    ];
    for fault in faults {
        match fault {
            "outage" => cluster.outage(),
            "503 with Retry-After" => cluster.fail_next(3, StatusCode::SERVICE_UNAVAILABLE, 1),
            "410 on the next watch" => {
                cluster.expire_next_watch();
                cluster.end_watches();
            }
            "watches end" => cluster.end_watches(),
            _ => cluster.stall_watches(true),
        }
        for i in 0..50 {
            assert_eq!(get(tideway.addr).await, 200, "request {i} during fault {fault}");
        }
        match fault {
            "outage" => cluster.restore().await.expect("restore"),
            "watches stall" => cluster.stall_watches(false),
            _ => {}
        }
    }
    assert!(
        metric(
            &tideway,
            "tideway_kubernetes_watch_restarts_total{resource=\"endpointslices\"}"
        )
        .await
            >= Some(1.0),
        "the watch restarts are counted"
    );
    let (_kept, _) = session(tideway.addr).await;
    let (_other, _) = session(tideway.addr).await;
    eventually("scaling resumed", PATIENCE, || replicas(&cluster) == Some(2)).await;
}
