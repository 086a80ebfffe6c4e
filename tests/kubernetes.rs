//! Kubernetes mode end to end: the real binary, with its own `kube` client, against the test cluster —
//! a Kubernetes API server subset over real HTTP whose pods are real test replicas — holding only the
//! permissions of the one list the code declares.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tideway_e2e::{PATIENCE, Tideway, config_file, dashboard_metrics, exports, families, until};
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
    start_config(
        cluster,
        identity,
        &format!("lease_duration = \"{lease_duration}\""),
        policy,
    )
}

/// tideway with `[kubernetes]` keys `kubernetes` (renewing its lease every 100 ms) and file app `shiny`
/// (see [`start`]) with `policy`.
fn start_config(cluster: &TestCluster, identity: &str, kubernetes: &str, policy: &str) -> Tideway {
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [kubernetes]\nlease_renew_every = \"100ms\"\n{kubernetes}\n\n\
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

/// A WebSocket session through tideway to `shiny`, and the pod that holds it.
async fn session(addr: SocketAddr) -> (WebSocketStream<TcpStream>, String) {
    session_on(addr, "shiny.test").await
}

/// A WebSocket session through tideway to the app on `host`, and the pod that holds it.
async fn session_on(addr: SocketAddr, host: &str) -> (WebSocketStream<TcpStream>, String) {
    let mut ws = tokio::time::timeout(PATIENCE, ws_connect(addr, host, "/ws"))
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
    get_on(addr, "shiny.test").await
}

async fn get_on(addr: SocketAddr, host: &str) -> u16 {
    match http1_get(addr, host, "/").await {
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
async fn the_leader_scales_on_the_demand_of_every_instance() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster.deploy("apps", "shiny", 1);
    let internal: Vec<SocketAddr> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))
        .collect::<Result<_, _>>()
        .expect("free ports");
    let secret = config_file("a-secret-the-instances-share");
    let joined = |me: usize| {
        format!(
            "lease_duration = \"1s\"\n\n[cluster]\nlisten = \"{}\"\npeers = [\"{}\"]\nsecret_file = \"{}\"\n\
             heartbeat = \"200ms\"\npeer_timeout = \"1s\"",
            internal[me],
            internal[1 - me],
            secret.display()
        )
    };
    let a = start_config(&cluster, "a", &joined(0), POLICY);
    let b = start_config(&cluster, "b", &joined(1), POLICY);
    for tideway in [&a, &b] {
        until("/readyz", || async { readyz(tideway).await == 200 }).await;
        until("a ready replica", || async { get(tideway.addr).await == 200 }).await;
        until("the other instance heard", || async {
            metric(tideway, "tideway_peers").await == Some(1.0)
        })
        .await;
    }
    let (leader, follower) = leader_and_follower(a, b).await;
    // One session through each: each instance alone wants one pod, the two together want two.
    let _sessions = [session(leader.addr).await, session(follower.addr).await];
    eventually("the leader scaled to 2 on the total", PATIENCE, || {
        replicas(&cluster) == Some(2)
    })
    .await;

    // The dashboard's Kubernetes and peer panels have their metrics: with a peer heard, and once the API
    // server went away for a while.
    cluster.outage();
    let wanted: Vec<String> = dashboard_metrics()
        .into_iter()
        .filter(|name| {
            name.starts_with("tideway_peer")
                || name.starts_with("tideway_kubernetes_")
                || name == "tideway_leader"
        })
        .collect();
    assert!(
        wanted.len() >= 6,
        "the dashboard shows the instances and Kubernetes: {wanted:?}"
    );
    until(
        "every Kubernetes and peer metric of the dashboard exported",
        || async {
            let Ok((_, _, body)) = http1_get(leader.listener("metrics"), "metrics", "/metrics").await else {
                return false;
            };
            let exposition = String::from_utf8_lossy(&body).into_owned();
            let exported = families(&exposition);
            wanted.iter().all(|name| exports(&exported, name))
        },
    )
    .await;
    cluster.restore().await.expect("restore");
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
        "429 with Retry-After",
        "409 on the next write",
        "410 on the next watch",
        "watches end",
        "watches stall",
    ];
    for fault in faults {
        match fault {
            "outage" => cluster.outage(),
            "503 with Retry-After" => cluster.fail_next(3, StatusCode::SERVICE_UNAVAILABLE, 1),
            "429 with Retry-After" => cluster.fail_next(3, StatusCode::TOO_MANY_REQUESTS, 1),
            "409 on the next write" => cluster.conflict_next_write(),
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

fn tidewayapps() -> Resource {
    Resource {
        group: "tideway.dev".into(),
        plural: "tidewayapps".into(),
    }
}

/// A `TidewayApp` `name` in namespace `apps` with `spec`.
fn tidewayapp(name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "tideway.dev/v1alpha1",
        "kind": "TidewayApp",
        "metadata": { "name": name },
        "spec": spec,
    })
}

/// Resource `name`'s condition `kind`: its status, reason and message.
fn condition(cluster: &TestCluster, name: &str, kind: &str) -> Option<(String, String, String)> {
    let object = cluster.object(&tidewayapps(), "apps", name)?;
    let conditions = object.pointer("/status/conditions")?.as_array()?.clone();
    let found = conditions.into_iter().find(|c| c["type"] == kind)?;
    let text = |key: &str| found[key].as_str().unwrap_or_default().to_owned();
    Some((text("status"), text("reason"), text("message")))
}

/// Resource `name`'s status field at `pointer`.
fn status_of(cluster: &TestCluster, name: &str, pointer: &str) -> serde_json::Value {
    cluster
        .object(&tidewayapps(), "apps", name)
        .and_then(|o| o.pointer(&format!("/status{pointer}")).cloned())
        .unwrap_or_default()
}

/// The Events recorded about resource `name`, as `(type, reason, note)`.
fn events_of(cluster: &TestCluster, name: &str) -> Vec<(String, String, String)> {
    let events = Resource {
        group: "events.k8s.io".into(),
        plural: "events".into(),
    };
    let text = |event: &serde_json::Value, key: &str| event[key].as_str().unwrap_or_default().to_owned();
    cluster
        .objects(&events, "apps")
        .iter()
        .filter(|e| e["regarding"]["kind"] == "TidewayApp" && e["regarding"]["name"] == name)
        .map(|e| (text(e, "type"), text(e, "reason"), text(e, "note")))
        .collect()
}

#[tokio::test]
async fn tidewayapps_run_beside_the_file_apps_and_the_leader_reports_their_status_and_decisions() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster.deploy("apps", "shiny", 1);
    cluster.deploy("apps", "web", 1);
    let web = serde_json::json!({
        "hosts": ["web.test"], "min_instances": 1, "max_instances": 3, "max_connections": 2,
        "spawn_threshold": 50, "scale_down_delay": "300ms",
        "kubernetes": { "deployment": "web", "port": "http" },
    });
    let mut broken = web.clone();
    broken["hosts"] = serde_json::json!(["broken.test"]);
    broken["min_instances"] = 5.into();
    broken["kubernetes"]["deployment"] = "other".into();
    let mut clash = web.clone();
    clash["hosts"] = serde_json::json!(["clash.test"]);
    for (name, spec) in [("web", web), ("broken", broken.clone()), ("shiny", clash)] {
        assert!(cluster.create(&tidewayapps(), "apps", tidewayapp(name, spec)));
    }
    let tideway = start_config(
        &cluster,
        "a",
        "tidewayapps = \"namespace\"\nstatus_interval = \"1s\"",
        POLICY,
    );
    until("/readyz after the first listings", || async {
        readyz(&tideway).await == 200
    })
    .await;
    until("the resource's app answers", || async {
        get_on(tideway.addr, "web.test").await == 200
    })
    .await;
    assert_eq!(get(tideway.addr).await, 200, "the file's app answers too");
    assert_eq!(
        get_on(tideway.addr, "broken.test").await,
        404,
        "a refused resource has no route"
    );

    eventually("web's status", PATIENCE, || {
        condition(&cluster, "web", "Ready")
            .is_some_and(|(status, reason, _)| status == "True" && reason == "ReplicasReady")
            && status_of(&cluster, "web", "/ready_replicas") == 1
            && status_of(&cluster, "web", "/observed_generation") == 1
    })
    .await;
    let active = condition(&cluster, "web", "ScalingActive").map(|c| (c.0, c.1));
    assert_eq!(active, Some(("True".into(), "ScalingByConnections".into())));
    let limited = condition(&cluster, "web", "ScalingLimited").map(|c| (c.0, c.1));
    assert_eq!(
        limited,
        Some(("True".into(), "TooFewReplicas".into())),
        "idle, demand wants none: min_instances holds the count, as an HPA says it"
    );
    eventually("the refused resources' statuses", PATIENCE, || {
        condition(&cluster, "broken", "Ready").is_some() && condition(&cluster, "shiny", "Ready").is_some()
    })
    .await;
    let refused = condition(&cluster, "broken", "Ready").expect("a condition on the refused resource");
    assert_eq!((refused.0.as_str(), refused.1.as_str()), ("False", "InvalidSpec"));
    assert!(
        refused.2.contains("spec.max_instances: "),
        "names the field: {}",
        refused.2
    );
    let clash = condition(&cluster, "shiny", "Ready").expect("a condition on the clashing resource");
    assert_eq!(
        (clash.0.as_str(), clash.1.as_str()),
        ("False", "NameTaken"),
        "{}",
        clash.2
    );
    eventually("a warning Event on the refused resource", PATIENCE, || {
        events_of(&cluster, "broken")
            .iter()
            .any(|(kind, reason, _)| kind == "Warning" && reason == "InvalidSpec")
    })
    .await;

    // Two sessions on web's one pod: past its threshold, a second pod — a decision, an Event, a status.
    let _sessions = [
        session_on(tideway.addr, "web.test").await,
        session_on(tideway.addr, "web.test").await,
    ];
    eventually(
        "web's Deployment scaled to 2, seen in its status",
        PATIENCE,
        || {
            status_of(&cluster, "web", "/last_decision/direction") == "up"
                && status_of(&cluster, "web", "/desired_replicas") == 2
                && status_of(&cluster, "web", "/connections") == 2
                && status_of(&cluster, "web", "/last_scale_time").is_string()
        },
    )
    .await;
    eventually("an Event of the decision", PATIENCE, || {
        events_of(&cluster, "web").iter().any(|(kind, reason, note)| {
            kind == "Normal" && reason == "ScaledUp" && note.starts_with("up 1 -> 2 replicas (threshold")
        })
    })
    .await;

    // The refused spec fixed: an app, whose missing Deployment is its own problem alone.
    broken["min_instances"] = 1.into();
    assert!(cluster.set_spec(&tidewayapps(), "apps", "broken", broken));
    eventually("the fixed resource's status", PATIENCE, || {
        status_of(&cluster, "broken", "/observed_generation") == 2
            && condition(&cluster, "broken", "Ready").is_some_and(|(status, reason, message)| {
                status == "False"
                    && reason == "BackendUnavailable"
                    && message == "Deployment apps/other not found"
            })
    })
    .await;
    assert_eq!(
        get_on(tideway.addr, "web.test").await,
        200,
        "the others undisturbed"
    );
}

/// `kubectl` with `args`, against the test cluster as its administrator, with a discovery cache of its own;
/// its standard output, or its standard error on failure.
async fn kubectl(cluster: &TestCluster, args: &[&str]) -> Result<String, String> {
    let home = config_file("").with_extension("kubectl");
    let kubeconfig = config_file(&cluster.kubeconfig_as("apps", None));
    let run = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("cache"))
        .args(args)
        .env("HOME", &home)
        .output();
    let output = tokio::time::timeout(PATIENCE, run)
        .await
        .map_err(|_| "kubectl did not finish".to_owned())?
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test]
async fn kubectl_get_tidewayapps_shows_the_printer_columns_with_live_values() {
    use kube::CustomResourceExt;
    let cluster = TestCluster::start().await.expect("cluster");
    let crd =
        serde_json::to_value(tideway_orchestrate::kubernetes::TidewayApp::crd()).expect("the CRD as JSON");
    let crds = Resource {
        group: "apiextensions.k8s.io".into(),
        plural: "customresourcedefinitions".into(),
    };
    assert!(cluster.create(&crds, "", crd));
    cluster.deploy("apps", "shiny", 1);
    cluster.deploy("apps", "web", 1);
    let web = serde_json::json!({
        "hosts": ["web.test", "www.web.test"], "min_instances": 1, "max_instances": 4, "max_connections": 8,
        "kubernetes": { "deployment": "web", "port": "http" },
    });
    assert!(cluster.create(&tidewayapps(), "apps", tidewayapp("web", web)));
    let tideway = start_config(
        &cluster,
        "a",
        "tidewayapps = \"namespace\"\nstatus_interval = \"1s\"",
        POLICY,
    );
    eventually("web's status", PATIENCE, || {
        status_of(&cluster, "web", "/ready_replicas") == 1
    })
    .await;
    let _session = session_on(tideway.addr, "web.test").await;
    eventually("the session in web's status", PATIENCE, || {
        status_of(&cluster, "web", "/connections") == 1
    })
    .await;

    let table = kubectl(&cluster, &["get", "tidewayapps", "-n", "apps"])
        .await
        .expect("kubectl get");
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "HOSTS",
            "MIN",
            "MAX",
            "READY",
            "CONNECTIONS",
            "OCCUPANCY",
            "AGE"
        ],
        "{table}"
    );
    assert_eq!(
        lines[1][..7],
        [
            "web",
            r#"["web.test","www.web.test"]"#,
            "1",
            "4",
            "1",
            "1",
            "0.125"
        ],
        "{table}"
    );
    let short = kubectl(
        &cluster,
        &[
            "get",
            "twa",
            "web",
            "-n",
            "apps",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
        ],
    )
    .await;
    assert_eq!(
        short.as_deref(),
        Ok("ReplicasReady"),
        "the short name, and the status as JSON"
    );
}

#[tokio::test]
async fn a_new_leader_clears_the_deletion_cost_mark_a_stopped_one_left() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster.deploy("apps", "shiny", 2);
    let pods = Resource {
        group: String::new(),
        plural: "pods".into(),
    };
    let names = || -> Vec<String> {
        let pods = cluster.objects(&pods, "apps");
        pods.iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    eventually("two running pods", PATIENCE, || {
        let names = names();
        names.len() == 2 && names.iter().all(|name| cluster.replica("apps", name).is_some())
    })
    .await;
    let names = names();
    // A leader stopped between marking a pod and lowering the count: its mark is left behind.
    let cheapest = i32::MIN.to_string();
    assert!(cluster.annotate(
        &pods,
        "apps",
        &names[0],
        "controller.kubernetes.io/pod-deletion-cost",
        &cheapest
    ));
    assert!(cluster.annotate(
        &pods,
        "apps",
        &names[1],
        "controller.kubernetes.io/pod-deletion-cost",
        "100"
    ));

    let tideway = start(&cluster, "a", "min_instances = 2\nmax_instances = 3");
    tideway
        .wait_for("stale deletion-cost mark cleared", 1, |f| {
            f["pod"] == names[0].as_str()
        })
        .await;
    let cost = |name: &str| {
        cluster.object(&pods, "apps", name).and_then(|p| {
            p["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
                .as_str()
                .map(str::to_owned)
        })
    };
    assert_eq!(cost(&names[0]), None, "tideway's mark is gone");
    assert_eq!(
        cost(&names[1]).as_deref(),
        Some("100"),
        "a cost someone else set stays"
    );
    assert_eq!(replicas(&cluster), Some(2), "and no pod went");
}

#[tokio::test]
async fn instances_find_each_other_through_their_headless_service_and_share_counts() {
    let cluster = TestCluster::start().await.expect("cluster");
    let replica = tideway_testkit::TestReplica::start("app-1")
        .await
        .expect("replica");
    // Three instances, as three pods of one Deployment would be: one port, an address each (loopback
    // addresses here; the test cluster takes them in EndpointSlices, as real API servers do not).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let names = ["a", "b", "c"];
    let endpoints: Vec<serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            serde_json::json!({
                "addresses": [format!("127.0.0.{}", i + 1)],
                "conditions": { "ready": true, "serving": true, "terminating": false },
                "targetRef": { "kind": "Pod", "name": name },
            })
        })
        .collect();
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": { "name": "tideway-peers-1", "labels": { "kubernetes.io/service-name": "tideway-peers" } },
        "addressType": "IPv4",
        "ports": [{ "name": "cluster", "port": port, "protocol": "TCP" }],
        "endpoints": endpoints,
    });
    let slices = Resource {
        group: "discovery.k8s.io".into(),
        plural: "endpointslices".into(),
    };
    assert!(cluster.create(&slices, "apps", slice));
    let kubeconfig = kubeconfig(&cluster);
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 path");
    let instances: Vec<Tideway> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let config = format!(
                "[proxy]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                 [cluster]\nlisten = \"127.0.0.{}:{port}\"\npeer_service = \"tideway-peers\"\npeer_port = \"cluster\"\n\
                 secret_env = \"TIDEWAY_TEST_CLUSTER_SECRET\"\nheartbeat = \"200ms\"\npeer_timeout = \"1s\"\n\n\
                 [[app]]\nname = \"app\"\nhosts = [\"app.test\"]\nmax_connections = 4\n\
                 [app.static]\naddresses = [\"{}\"]\n",
                i + 1,
                replica.addr()
            );
            Tideway::start_with_env(
                &config,
                &[
                    ("KUBECONFIG", kubeconfig),
                    ("POD_NAME", name),
                    ("TIDEWAY_TEST_CLUSTER_SECRET", "shared"),
                ],
            )
        })
        .collect();
    for tideway in &instances {
        until("two peers found and heard", || async {
            metric(tideway, "tideway_peers").await == Some(2.0)
        })
        .await;
    }
    let _session = tokio::time::timeout(PATIENCE, ws_connect(instances[0].addr, "app.test", "/ws"))
        .await
        .expect("a session in time")
        .expect("a session");
    for tideway in &instances[1..] {
        until("a's session counted", || async {
            let (_, _, body) =
                tideway_e2e::request(tideway.listener("admin"), "GET", "/api/apps/app", &[], "").await;
            let app: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            app["replicas"][0]["elsewhere"] == 1
        })
        .await;
    }
}

/// A `kubernetes.io/tls` Secret's `data`: the chain and key of `issued`, base64 as the API carries them.
fn tls_data(issued: &tideway_e2e::pki::Issued) -> serde_json::Value {
    use base64::Engine as _;
    let encode = |path: &std::path::Path| {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).expect("read the PEM"))
    };
    serde_json::json!({ "tls.crt": encode(&issued.chain), "tls.key": encode(&issued.key) })
}

fn secrets() -> Resource {
    Resource {
        group: String::new(),
        plural: "secrets".into(),
    }
}

#[tokio::test]
async fn a_tidewayapps_certificate_comes_from_its_secret_and_follows_its_changes() {
    let cluster = TestCluster::start().await.expect("cluster");
    cluster.deploy("apps", "shiny", 1);
    cluster.deploy("apps", "web", 1);
    let pki = tideway_e2e::pki::Pki::create();
    let default = pki.issue("default", &["default.test"]);
    let first = pki.issue("first", &["web.test"]);
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": { "name": "web-tls" }, "data": tls_data(&first),
    });
    assert!(cluster.create(&secrets(), "apps", secret));
    let web = serde_json::json!({
        "hosts": ["web.test"], "min_instances": 1,
        "kubernetes": { "deployment": "web", "port": "http" },
        "tls": { "secretName": "web-tls" },
    });
    assert!(cluster.create(&tidewayapps(), "apps", tidewayapp("web", web)));
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\ntls_certificate = \"{}\"\ntls_key = \"{}\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [kubernetes]\nlease_renew_every = \"100ms\"\ntidewayapps = \"namespace\"\n\n\
         [[app]]\nname = \"shiny\"\nhosts = [\"shiny.test\"]\n{POLICY}\n\
         [app.kubernetes]\ndeployment = \"shiny\"\nport = \"http\"\n",
        default.chain.display(),
        default.key.display()
    );
    let kubeconfig = kubeconfig(&cluster);
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 path");
    let tideway = Tideway::start_with_env(&config, &[("KUBECONFIG", kubeconfig), ("POD_NAME", "a")]);
    let tls = tideway.wait_for("TLS listening", 1, |_| true).await[0]["fields"]["listen"]
        .as_str()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .expect("the TLS listener");
    let presents = |expected: rustls_pki_types::CertificateDer<'static>| {
        let pki = pki.clone();
        async move {
            match tideway_e2e::pki::connect(&pki, tls, "web.test", &[]).await {
                Ok(stream) => tideway_e2e::pki::presented(&stream) == expected,
                Err(_) => false,
            }
        }
    };
    until("web.test gets its Secret's certificate", || {
        presents(first.der.clone())
    })
    .await;
    // A session over TLS, open through the changes below.
    let stream = tideway_e2e::pki::connect(&pki, tls, "web.test", &[b"http/1.1"])
        .await
        .expect("TLS");
    let upgrade =
        tideway_testkit::tungstenite::client::IntoClientRequest::into_client_request("wss://web.test/ws")
            .expect("request");
    let (mut ws, _) = tideway_testkit::tokio_tungstenite::client_async(upgrade, stream)
        .await
        .expect("wss upgrade");

    // The Secret is renewed (cert-manager rewrites it): new handshakes get the new certificate.
    let second = pki.issue("second", &["web.test"]);
    assert!(cluster.set_data(&secrets(), "apps", "web-tls", tls_data(&second)));
    until("web.test gets the renewed certificate", || {
        presents(second.der.clone())
    })
    .await;

    // A broken renewal (another certificate's key) is refused, and the renewed one stays.
    let mut broken = tls_data(&second);
    broken["tls.key"] = tls_data(&first)["tls.key"].clone();
    assert!(cluster.set_data(&secrets(), "apps", "web-tls", broken));
    let refused = tideway
        .wait_for(
            "new certificate refused, the previous one stays in force",
            1,
            |fields| fields["certificate"] == "secret apps/web-tls",
        )
        .await;
    assert!(
        refused[0]["fields"]["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("does not match")
    );
    assert!(
        presents(second.der.clone()).await,
        "the refused certificate is not used"
    );

    ws.send(Message::text("still here")).await.expect("send");
    let echo = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("an echo in time");
    assert_eq!(
        echo.expect("a frame").expect("a message"),
        Message::text("still here")
    );
    let expiry = "tideway_tls_certificate_expiry_seconds{certificate=\"secret apps/web-tls\"}";
    assert_eq!(metric(&tideway, expiry).await, Some(second.not_after as f64));
}
