//! Several tideway instances acting as one (`[cluster]`): three real instances with static peers in front
//! of one static app. `max_connections` holds across them, the survivors drop a dead peer's counts
//! after `peer_timeout`, and the internal listener takes nothing without the shared secret.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tideway_e2e::{PATIENCE, Tideway, request, until};
use tideway_testkit::{TestReplica, ws_connect};

#[path = "cluster/partition.rs"]
mod partition;
#[path = "cluster/relay.rs"]
mod relay;
#[path = "cluster/sessions.rs"]
mod sessions;

const SECRET: &str = "a-secret-the-instances-share";

/// Free addresses for `count` internal listeners, known before any instance starts: each call on a
/// loopback network of its own (127.77.n.0/24), where nothing else binds — an ephemeral port of 127.0.0.1
/// handed to another listener of the tests meanwhile cannot take one.
fn free_addresses(count: usize) -> Vec<SocketAddr> {
    static NETWORK: AtomicU8 = AtomicU8::new(1);
    let network = NETWORK.fetch_add(1, Ordering::Relaxed);
    (1..=count)
        .map(|host| {
            let ip = Ipv4Addr::new(127, 77, network, u8::try_from(host).expect("a few hosts"));
            let listener = TcpListener::bind((ip, 0)).expect("a free port");
            listener.local_addr().expect("an address")
        })
        .collect()
}

/// Instance `me` of the three at `cluster`, in front of `replica` with at most `max_connections` each.
fn instance(cluster: &[SocketAddr], me: usize, replica: SocketAddr, max_connections: u32) -> Tideway {
    instance_with(cluster, me, &one_replica(replica, max_connections), &[])
}

/// The app of one replica at `replica`, taking `max_connections`.
fn one_replica(replica: SocketAddr, max_connections: u32) -> String {
    format!(
        "[[app]]\nname = \"app\"\nhosts = [\"app.test\"]\nmax_connections = {max_connections}\nqueue_timeout = \"300ms\"\n\
         [app.static]\naddresses = [\"{replica}\"]\n"
    )
}

/// Instance `me` of the three at `cluster` (named `a`, `b`, `c`), serving `apps` (configuration text),
/// with `env` beside the shared secret.
fn instance_with(cluster: &[SocketAddr], me: usize, apps: &str, env: &[(&str, &str)]) -> Tideway {
    let peers: Vec<SocketAddr> = cluster
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != me)
        .map(|(_, addr)| *addr)
        .collect();
    instance_at(cluster[me], &peers, ["a", "b", "c"][me], apps, env)
}

/// Instance `name` with its internal listener on `listen`, reporting to `peers`.
fn instance_at(
    listen: SocketAddr,
    peers: &[SocketAddr],
    name: &str,
    apps: &str,
    env: &[(&str, &str)],
) -> Tideway {
    let peers: Vec<String> = peers.iter().map(|addr| format!("\"{addr}\"")).collect();
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [cluster]\nlisten = \"{listen}\"\npeers = [{}]\nsecret_env = \"TIDEWAY_TEST_CLUSTER_SECRET\"\n\
         heartbeat = \"200ms\"\npeer_timeout = \"1s\"\n\n{apps}",
        peers.join(", ")
    );
    let mut env = env.to_vec();
    env.extend([("TIDEWAY_TEST_CLUSTER_SECRET", SECRET), ("POD_NAME", name)]);
    Tideway::start_with_env(&config, &env)
}

/// The connections the other instances seat on the app's replica, as `tideway` counts them.
async fn elsewhere(tideway: &Tideway) -> u64 {
    let (status, _, body) = request(tideway.listener("admin"), "GET", "/api/apps/app", &[], "").await;
    if status != 200 {
        return u64::MAX;
    }
    let app: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    app["replicas"][0]["elsewhere"].as_u64().unwrap_or(u64::MAX)
}

/// Waits until `tideway` hears from `count` live peers.
async fn until_peers(tideway: &Tideway, count: u64) {
    until(&format!("{count} live peers"), || async {
        let (_, _, body) = request(tideway.listener("metrics"), "GET", "/metrics", &[], "").await;
        let text = String::from_utf8_lossy(&body).into_owned();
        let live = text
            .lines()
            .find_map(|l| l.strip_prefix("tideway_peers ")?.parse::<u64>().ok());
        live == Some(count)
    })
    .await;
}

/// Waits until `tideway` counts `expected` connections elsewhere on the app's replica.
async fn until_elsewhere(tideway: &Tideway, expected: u64) {
    until(&format!("{expected} connections elsewhere"), || async {
        elsewhere(tideway).await == expected
    })
    .await;
}

#[tokio::test]
async fn max_connections_holds_across_instances_and_a_dead_peers_counts_are_dropped() {
    let replica = TestReplica::start("app-1").await.expect("replica");
    let cluster = free_addresses(3);
    let mut instances: Vec<Tideway> = (0..3).map(|i| instance(&cluster, i, replica.addr(), 4)).collect();

    // Two sessions through a, one through b: each instance sees the others'.
    let mut sessions = Vec::new();
    for (through, count) in [(0, 2), (1, 1)] {
        for _ in 0..count {
            let ws = tokio::time::timeout(PATIENCE, ws_connect(instances[through].addr, "app.test", "/ws"))
                .await
                .expect("a session in time")
                .expect("a session");
            sessions.push(ws);
        }
    }
    until_elsewhere(&instances[2], 3).await;
    until_elsewhere(&instances[0], 1).await;
    until_elsewhere(&instances[1], 2).await;

    // One seat is left in all: c takes it, and then neither c nor a has one.
    let fourth = ws_connect(instances[2].addr, "app.test", "/ws")
        .await
        .expect("the fourth seat");
    until_elsewhere(&instances[0], 2).await;
    for through in [2, 0] {
        match ws_connect(instances[through].addr, "app.test", "/ws").await {
            Err(tideway_testkit::tungstenite::Error::Http(response)) => {
                assert_eq!(
                    response.status(),
                    503,
                    "a full replica: the connection waited, then was refused"
                );
            }
            other => panic!("a fifth connection through instance {through} must find no seat, got {other:?}"),
        }
    }
    assert_eq!(
        replica.open_sessions(),
        4,
        "the replica never held more than max_connections"
    );

    // a dies with its two sessions: the survivors drop its counts once it has been silent for
    // peer_timeout, and its seats are free again.
    instances[0].signal("KILL");
    instances[0].exited().await;
    let died = tokio::time::Instant::now();
    until_elsewhere(&instances[2], 1).await;
    println!(
        "a dead peer's counts dropped after {:?} (peer_timeout 1s)",
        died.elapsed()
    );
    let again = ws_connect(instances[2].addr, "app.test", "/ws").await;
    assert!(again.is_ok(), "a seat of the dead instance's is free: {again:?}");
    drop((sessions, fourth));
}

#[tokio::test]
async fn the_internal_listener_takes_nothing_without_the_secret() {
    let replica = TestReplica::start("app-1").await.expect("replica");
    let cluster = free_addresses(3);
    let tideway = instance(&cluster, 0, replica.addr(), 4);
    let internal = tideway.listener("cluster");
    let report = r#"{"instance":"forger","incarnation":1,"seq":1,"apps":[{"app":"app","demand":99,"replicas":[{"replica":"app-1","connections":99}]}]}"#;
    for headers in [vec![], vec![("authorization", "Bearer guess")]] {
        let (status, _, body) = request(internal, "POST", "/v1/report", &headers, report).await;
        assert_eq!(
            (status.as_u16(), body.len()),
            (401, 0),
            "nothing for a request without the secret"
        );
    }
    assert_eq!(elsewhere(&tideway).await, 0, "the forged report changed nothing");
    let bearer = format!("Bearer {SECRET}");
    let (status, _, answer) = request(
        internal,
        "POST",
        "/v1/report",
        &[("authorization", &bearer)],
        report,
    )
    .await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("its own report, as JSON");
    assert_eq!(
        answer["instance"], "a",
        "a report is answered with the instance's own"
    );
    // A report is taken by the instance's sender task a moment after it is answered, and counts for
    // peer_timeout: sent again, as a peer's heartbeat would, until it shows.
    let seq = AtomicU64::new(1);
    until("with the secret, a report counts", || async {
        let next = seq.fetch_add(1, Ordering::Relaxed) + 1;
        let report = report.replace("\"seq\":1", &format!("\"seq\":{next}"));
        request(
            internal,
            "POST",
            "/v1/report",
            &[("authorization", &bearer)],
            &report,
        )
        .await;
        elsewhere(&tideway).await == 99
    })
    .await;
}

#[tokio::test]
async fn a_burst_spread_over_three_instances_overshoots_by_at_most_the_stated_bound() {
    let replica = TestReplica::start("app-1").await.expect("replica");
    let cluster = free_addresses(3);
    let max = 10;
    let instances: Vec<Tideway> = (0..3)
        .map(|i| instance(&cluster, i, replica.addr(), max))
        .collect();
    for tideway in &instances {
        until_peers(tideway, 2).await;
    }
    let (_, _, view) = request(instances[0].listener("admin"), "GET", "/api/cluster", &[], "").await;
    let view: serde_json::Value = serde_json::from_slice(&view).expect("JSON");
    let peers: Vec<&str> = view["peers"]
        .as_array()
        .map(|peers| peers.iter().filter_map(|p| p["instance"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!((view["instance"].as_str(), peers), (Some("a"), vec!["b", "c"]));
    // Sixty connections at once, twenty through each instance.
    let attempts = (0..60).map(|i| {
        let addr = instances[i % 3].addr;
        async move { ws_connect(addr, "app.test", "/ws").await.ok() }
    });
    let opened: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .flatten()
        .collect();
    let held = replica.open_sessions();
    println!(
        "burst of 60 over 3 instances, max_connections {max}: {} opened, {held} held by the replica, overshoot {}",
        opened.len(),
        held.saturating_sub(max as usize)
    );
    assert!(held >= max as usize, "every seat was taken");
    assert!(
        held <= 3 * max as usize,
        "within the stated worst case, (N - 1) x max_connections over the limit: {held}"
    );
}
