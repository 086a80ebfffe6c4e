//! A replica that refuses connections — crashed, or not listening — is out of routing at once, and the
//! requests it refused wait for a seat elsewhere (or for a replica to start) instead of failing.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use tideway_core::{Policy, RejectReason, Replica, ReplicaState};
use tideway_testkit::{TestReplica, http1_get};
use tokio::net::TcpListener;

use support::*;

/// An address on which nothing listens: connecting to it is refused.
async fn refusing_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

fn one_seat_each() -> Policy {
    Policy {
        max_connections: 1,
        ..Policy::default()
    }
}

#[tokio::test]
async fn a_request_the_least_busy_replica_refuses_waits_for_a_seat_on_another() {
    let dead = refusing_address().await;
    let backend = TestReplica::start("b").await.expect("backend");
    let app_a = app("a", one_seat_each(), &[dead, backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    // The live replica's only seat is taken; the dead one looks the least busy.
    let slow = tokio::spawn(http1_get(proxy.addr, "site.test", "/delay?ms=500"));
    eventually("the live replica is full", || {
        app_a.replicas()[1].connections() == 1
    })
    .await;
    let (status, headers, _) = within(
        "a seat on the live replica",
        http1_get(proxy.addr, "site.test", "/x"),
    )
    .await
    .expect("response");
    assert_eq!(status, 200, "it waited in the queue instead of failing");
    assert_eq!(headers["x-backend"], "b");
    let (status, _, _) = slow.await.expect("task").expect("response");
    assert_eq!(status, 200);
    assert_eq!(app_a.stats().rejected(RejectReason::NoReplica), 0);

    // The dead replica is out of routing: later requests go straight to the live one.
    for _ in 0..3 {
        let (status, headers, _) = http1_get(proxy.addr, "site.test", "/y").await.expect("response");
        assert_eq!(status, 200);
        assert_eq!(headers["x-backend"], "b");
    }
    assert!(!app_a.replicas()[0].is_reachable(clock().now()));
}

#[tokio::test]
async fn a_request_the_only_replica_refuses_waits_for_the_replacement() {
    let dead = refusing_address().await;
    let app_a = app("a", Policy::default(), &[dead]);
    // As for an app whose scaling loop starts replicas on demand.
    app_a.set_on_demand(true);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let request = tokio::spawn(http1_get(proxy.addr, "site.test", "/x"));
    eventually("the only replica refused", || {
        !app_a.replicas()[0].is_reachable(clock().now())
    })
    .await;
    assert!(!request.is_finished(), "the request waits for a replica");

    let backend = TestReplica::start("new").await.expect("backend");
    let replacement = Arc::new(Replica::new(
        "a-2",
        backend.addr(),
        ReplicaState::Ready,
        clock().now(),
    ));
    app_a.set_replicas(vec![replacement]);
    app_a.replicas_changed();
    let (status, headers, _) = within("the replacement's answer", request)
        .await
        .expect("task")
        .expect("response");
    assert_eq!(status, 200);
    assert_eq!(headers["x-backend"], "new");
    assert_eq!(app_a.stats().rejected(RejectReason::NoReplica), 0);
}

#[tokio::test]
async fn a_static_app_whose_replicas_all_refuse_answers_502_at_once() {
    let app_a = app("a", Policy::default(), &[refusing_address().await]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;
    for _ in 0..2 {
        let (status, _, body) = within("an answer", http1_get(proxy.addr, "site.test", "/"))
            .await
            .expect("response");
        assert_eq!(status, 502);
        assert_eq!(&body[..], b"no replica could be reached\n");
    }
    assert_eq!(app_a.stats().rejected(RejectReason::NoReplica), 2);
}
