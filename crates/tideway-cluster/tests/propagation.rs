//! Two instances' cluster parts in one process, over real TCP on 127.0.0.1: a seat taken at one is
//! counted at the other, and given back, at the other too (the delays are printed, median and p99, as
//! the figure for the propagation delay); a replica one drains takes no new connection at the other. One runtime thread: each change waits only for the report, not
//! for a scheduler's turn on another thread.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tideway_cluster::{Cluster, ClusterMetrics};
use tideway_config::ClusterSettings;
use tideway_core::{Admission, App, ManualClock, Policy, Replica, ReplicaState, Timestamp};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SECRET: &[u8] = b"shared";

/// One instance's app over one replica and its cluster part, listening on `listener`, reporting to
/// `peer`.
fn instance(
    name: &str,
    listener: TcpListener,
    peer: SocketAddr,
    stop: &CancellationToken,
) -> (Arc<App>, Cluster) {
    let settings = ClusterSettings {
        listen: listener.local_addr().expect("an address"),
        peers: vec![peer],
        peer_service: None,
        peer_port: None,
        secret_file: None,
        secret_env: None,
        heartbeat: Duration::from_secs(1),
        peer_timeout: Duration::from_secs(3),
    };
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1)));
    let app = App::new("app", Policy::default(), clock);
    let replica = Replica::new(
        "app-1",
        SocketAddr::from(([127, 0, 0, 1], 9)),
        ReplicaState::Ready,
        Timestamp::from_millis(1),
    );
    app.set_replicas(vec![Arc::new(replica)]);
    let metrics = Arc::new(ClusterMetrics::register(&prometheus::Registry::new()).expect("metrics"));
    let cluster = Cluster::spawn(&settings, name, SECRET.into(), listener, metrics, stop.clone());
    cluster.set_apps(vec![Arc::clone(&app)]);
    (app, cluster)
}

/// Instances `a` and `b`, each the other's peer.
async fn pair(stop: &CancellationToken) -> ((Arc<App>, Cluster), (Arc<App>, Cluster)) {
    let a_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let b_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let (a_addr, b_addr) = (
        a_listener.local_addr().expect("addr"),
        b_listener.local_addr().expect("addr"),
    );
    let a = instance("a", a_listener, b_addr, stop);
    let b = instance("b", b_listener, a_addr, stop);
    (a, b)
}

/// Waits, yielding, until `done` holds; how long that took.
async fn time_until(done: impl Fn() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the count never arrived"
        );
        tokio::task::yield_now().await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_seat_taken_at_one_instance_is_counted_at_the_other() {
    let stop = CancellationToken::new();
    let ((a, _a_cluster), (b, _b_cluster)) = pair(&stop).await;
    let seen_at_b = || b.replicas()[0].elsewhere();
    // The first report opens the connection: not part of the figure.
    let Admission::Seated(first) = a.admit() else {
        panic!("a seat")
    };
    time_until(|| seen_at_b() == 1).await;
    drop(first);
    time_until(|| seen_at_b() == 0).await;

    let mut delays = Vec::new();
    for _ in 0..200 {
        let Admission::Seated(seat) = a.admit() else {
            panic!("a seat")
        };
        delays.push(time_until(|| seen_at_b() == 1).await);
        assert_eq!(b.demand(), 1, "b's scaler sees a's demand");
        drop(seat);
        delays.push(time_until(|| seen_at_b() == 0).await);
    }
    delays.sort();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    println!(
        "propagation delay over {} changes: median {:?}, p99 {:?}, max {:?}",
        delays.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    stop.cancel();
}

#[tokio::test]
async fn a_replica_one_instance_drains_takes_no_new_connection_at_the_other() {
    let stop = CancellationToken::new();
    let ((a, _a_cluster), (b, _b_cluster)) = pair(&stop).await;
    // b holds a connection on the replica; a, the leader, drains it.
    let Admission::Seated(held) = b.admit() else {
        panic!("a seat")
    };
    time_until(|| a.replicas()[0].elsewhere() == 1).await;
    a.replicas()[0].set_state(ReplicaState::Draining);
    a.replicas_changed();
    time_until(|| b.replicas()[0].is_drained_elsewhere()).await;
    assert!(
        matches!(b.admit(), Admission::NoReplica),
        "no new connection at b either"
    );
    assert_eq!(
        a.replicas()[0].total_connections(),
        1,
        "the drain waits for b's connection"
    );
    drop(held);
    time_until(|| a.replicas()[0].total_connections() == 0).await;
    // The drain called off: the replica takes connections everywhere again.
    a.replicas()[0].set_state(ReplicaState::Ready);
    a.replicas_changed();
    time_until(|| !b.replicas()[0].is_drained_elsewhere()).await;
    assert!(matches!(b.admit(), Admission::Seated(_)));
    stop.cancel();
}
