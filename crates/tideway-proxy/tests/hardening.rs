//! Cases where a careless proxy hangs, leaks a seat, or forwards what it should not.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tideway_core::{CloseReason, Policy, RejectReason};
use tideway_testkit::{TestReplica, http1_get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

#[tokio::test]
async fn a_stalled_upload_never_holds_up_another_request() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", Policy::default(), &[backend.addr()]);
    // A long connect timeout: a regression would make the second request wait on the stalled connection.
    let settings = tideway_config::ProxySettings {
        upstream_connect_timeout: Duration::from_secs(60),
        ..settings()
    };
    let proxy = Proxied::start_with(settings, vec![route(&app_a, "site.test", None)]).await;

    // The replica answers 413 without reading the body; the client never sends the rest of it.
    let mut uploader = TcpStream::connect(proxy.addr).await.expect("connect");
    uploader
        .write_all(
            b"POST /status/413 HTTP/1.1\r\nHost: site.test\r\nContent-Length: 100000\r\n\r\n0123456789",
        )
        .await
        .expect("partial upload");
    let mut head = [0u8; 64];
    let n = within("the early answer", uploader.read(&mut head))
        .await
        .expect("read");
    assert!(head[..n].starts_with(b"HTTP/1.1 413"));

    let (status, _, _) = within("another request", http1_get(proxy.addr, "site.test", "/"))
        .await
        .expect("response");
    assert_eq!(status, 200);
    assert_eq!(
        backend.accepted(),
        2,
        "the connection with a body still on its way was not reused"
    );
}

#[tokio::test]
async fn the_replica_sees_the_host_the_request_was_routed_by() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", Policy::default(), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let response = raw(
        proxy.addr,
        b"GET http://site.test/x HTTP/1.1\r\nHost: internal.other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    let headers = &echo(&Bytes::copy_from_slice(body.as_bytes()))["headers"];
    assert_eq!(headers["host"], serde_json::json!(["site.test"]));
    assert_eq!(headers["x-forwarded-host"], serde_json::json!(["site.test"]));

    let twice = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: site.test\r\nHost: internal.other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn http2_cookie_fields_reach_the_replica_as_one_header() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", Policy::default(), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let (mut h2, _conn) = http2(proxy.addr).await;
    let req = http::Request::get("http://site.test/")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let body = h2
        .send_request(req)
        .await
        .expect("response")
        .into_body()
        .collect()
        .await
        .expect("body");
    assert_eq!(
        echo(&body.to_bytes())["headers"]["cookie"],
        serde_json::json!(["a=1; b=2"])
    );
}

#[tokio::test]
async fn a_request_written_to_a_replica_is_never_sent_again() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", Policy::default(), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    for request in [
        &b"GET /again HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n"[..],
        b"POST /once HTTP/1.1\r\nHost: site.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ] {
        // The replica reads the next request on this kept-alive connection, then drops it unanswered.
        assert_eq!(
            http1_get(proxy.addr, "site.test", "/drop-next")
                .await
                .expect("response")
                .0,
            200
        );
        let response = raw(proxy.addr, request).await;
        assert!(
            response.starts_with("HTTP/1.1 502"),
            "the replica may have acted on it: {response}"
        );
    }
    assert_eq!(
        backend.accepted(),
        2,
        "one connection per drop: nothing was sent again on a new one"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_send_timeout() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", Policy::default(), &[backend.addr()]);
    let settings = tideway_config::ProxySettings {
        send_timeout: Duration::from_millis(300),
        ..settings()
    };
    let proxy = Proxied::start_with(settings, vec![route(&app_a, "site.test", None)]).await;

    let mut reader = TcpStream::connect(proxy.addr).await.expect("connect");
    reader
        .write_all(b"GET /bytes?n=200000000 HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("request");
    eventually("the response is flowing", || app_a.connections() == 1).await;
    eventually("the stalled client is dropped and its seat released", || {
        app_a.connections() == 0
    })
    .await;
    assert_eq!(app_a.stats().closed(CloseReason::Client), 1);
}

#[tokio::test]
async fn during_a_cold_start_every_waiter_waits_for_startup_not_the_queue() {
    let backend = TestReplica::start("a").await.expect("backend");
    let policy = Policy {
        queue_timeout: Duration::from_millis(100),
        startup_timeout: PATIENCE,
        ..Policy::default()
    };
    let app_a = app("a", policy, &[]);
    app_a.set_on_demand(true);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let first = tokio::spawn(http1_get(proxy.addr, "site.test", "/1"));
    let second = tokio::spawn(http1_get(proxy.addr, "site.test", "/2"));
    eventually("both wait", || app_a.queued() == 2).await;
    // Longer than queue_timeout: a waiter held to the queue timeout would have had its 503 by now.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(app_a.queued(), 2);
    let late = tideway_core::Replica::new(
        "late",
        backend.addr(),
        tideway_core::ReplicaState::Ready,
        clock().now(),
    );
    app_a.set_replicas(vec![std::sync::Arc::new(late)]);
    for waiter in [first, second] {
        let (status, _, _) = within("served once a replica is ready", waiter)
            .await
            .expect("task")
            .expect("response");
        assert_eq!(status, 200);
    }
    assert_eq!(app_a.stats().rejected(RejectReason::QueueTimeout), 0);
}
