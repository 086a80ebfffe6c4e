//! `max_connections` as a hard cap, the FIFO queue behind it, and connection accounting that returns to
//! zero on every exit path; balancing between replicas.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tideway_core::{Balance, CloseReason, Policy, RejectReason};
use tideway_testkit::tungstenite::Message;
use tideway_testkit::{TestReplica, http1_get, ws_connect};
use tokio::net::TcpStream;

use support::*;

fn capped(max_connections: u32, max_queued: u32, queue_timeout: Duration) -> Policy {
    Policy {
        max_connections,
        max_queued,
        queue_timeout,
        ..Policy::default()
    }
}

#[tokio::test]
async fn a_third_websocket_waits_for_a_seat_and_gets_the_first_one_freed() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", capped(2, 10, PATIENCE), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let mut first = ws_connect(proxy.addr, "site.test", "/ws").await.expect("first");
    let mut second = ws_connect(proxy.addr, "site.test", "/ws").await.expect("second");
    assert_eq!(app_a.connections(), 2);
    let third = tokio::spawn(ws_connect(proxy.addr, "site.test", "/ws"));
    eventually("the third connection is queued", || app_a.queued() == 1).await;
    assert_eq!(
        backend.open_sessions(),
        2,
        "the replica never sees more than max_connections"
    );

    first.close(None).await.expect("close the first");
    let mut third = within("the third is admitted", third)
        .await
        .expect("task")
        .expect("third");
    third.send(Message::text("whoami")).await.expect("send");
    let reply = within("an echo", third.next())
        .await
        .expect("a message")
        .expect("ok");
    assert_eq!(reply, Message::text("a"));
    assert_eq!(app_a.connections(), 2);
    assert_eq!(app_a.queued(), 0);

    second.close(None).await.expect("close");
    third.close(None).await.expect("close");
    eventually("every seat is released", || app_a.connections() == 0).await;
    eventually("the replica saw every session end", || {
        backend.open_sessions() == 0
    })
    .await;
}

#[tokio::test]
async fn a_waiter_that_times_out_gets_503_with_retry_after() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", capped(2, 10, Duration::from_millis(200)), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let _first = ws_connect(proxy.addr, "site.test", "/ws").await.expect("first");
    let _second = ws_connect(proxy.addr, "site.test", "/ws").await.expect("second");
    let (status, headers, _) = http1_get(proxy.addr, "site.test", "/").await.expect("a response");
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(app_a.stats().rejected(RejectReason::QueueTimeout), 1);
    assert_eq!(app_a.queued(), 0, "the timed-out waiter left the queue");
    assert_eq!(app_a.connections(), 2);
}

#[tokio::test]
async fn a_full_queue_answers_503_at_once() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", capped(2, 1, Duration::from_secs(600)), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let _first = ws_connect(proxy.addr, "site.test", "/ws").await.expect("first");
    let _second = ws_connect(proxy.addr, "site.test", "/ws").await.expect("second");
    let waiting = tokio::spawn(http1_get(proxy.addr, "site.test", "/"));
    eventually("one connection queued", || app_a.queued() == 1).await;
    let (status, headers, _) = within(
        "503 without waiting 10 minutes",
        http1_get(proxy.addr, "site.test", "/"),
    )
    .await
    .expect("a response");
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "60");
    assert_eq!(app_a.stats().rejected(RejectReason::QueueFull), 1);
    waiting.abort();
}

#[tokio::test]
async fn seats_are_released_on_every_exit_path() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", capped(4, 10, PATIENCE), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    // The client vanishes without a close frame.
    let ws = ws_connect(proxy.addr, "site.test", "/ws").await.expect("ws");
    assert_eq!(app_a.connections(), 1);
    drop(ws);
    eventually("a vanished client's seat is released", || {
        app_a.connections() == 0
    })
    .await;
    assert_eq!(app_a.stats().closed(CloseReason::Client), 1);

    // The replica drops its sessions.
    let _ws = ws_connect(proxy.addr, "site.test", "/ws").await.expect("ws");
    let _other = ws_connect(proxy.addr, "site.test", "/ws").await.expect("ws");
    backend.wait_open_sessions(2, PATIENCE).await;
    backend.abort_sessions();
    eventually("aborted sessions release their seats", || {
        app_a.connections() == 0
    })
    .await;
    assert_eq!(app_a.stats().closed(CloseReason::Upstream), 2);

    // The replica fails mid-body.
    let truncated = http1_get(proxy.addr, "site.test", "/abort").await;
    assert!(truncated.is_err(), "the client sees the body cut short");
    eventually("a failed body releases its seat", || app_a.connections() == 0).await;
    assert_eq!(app_a.stats().closed(CloseReason::Upstream), 3);

    // The client leaves mid-body.
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/slow?chunks=50&ms=100")
        .header("host", "site.test")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let mut body = sender.send_request(req).await.expect("response").into_body();
    within("a first chunk", body.frame())
        .await
        .expect("a frame")
        .expect("data");
    assert_eq!(app_a.connections(), 1, "a streaming response holds its seat");
    drop(body);
    conn.abort();
    eventually("an abandoned response releases its seat", || {
        app_a.connections() == 0
    })
    .await;
    eventually("and counts as the client leaving", || {
        app_a.stats().closed(CloseReason::Client) == 2
    })
    .await;

    // A plain request completes.
    let (status, _, _) = http1_get(proxy.addr, "site.test", "/").await.expect("response");
    assert_eq!(status, 200);
    assert_eq!(app_a.connections(), 0);
}

#[tokio::test]
async fn least_connections_spreads_and_pack_fills_in_order() {
    let (a, b) = (
        TestReplica::start("a").await.expect("a"),
        TestReplica::start("b").await.expect("b"),
    );
    let spread = app("spread", capped(3, 10, PATIENCE), &[a.addr(), b.addr()]);
    let packed = app(
        "packed",
        Policy {
            balance: Balance::Pack,
            ..capped(3, 10, PATIENCE)
        },
        &[a.addr(), b.addr()],
    );
    let proxy = Proxied::start(vec![
        route(&spread, "spread.test", None),
        route(&packed, "packed.test", None),
    ])
    .await;

    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(ws_connect(proxy.addr, "spread.test", "/ws").await.expect("ws"));
    }
    let counts: Vec<u32> = spread.replicas().iter().map(|r| r.connections()).collect();
    assert_eq!(counts, [2, 2]);
    assert!(a.wait_open_sessions(2, PATIENCE).await && b.wait_open_sessions(2, PATIENCE).await);

    for _ in 0..4 {
        sessions.push(ws_connect(proxy.addr, "packed.test", "/ws").await.expect("ws"));
    }
    let counts: Vec<u32> = packed.replicas().iter().map(|r| r.connections()).collect();
    assert_eq!(counts, [3, 1]);
}

#[tokio::test]
async fn a_websocket_whose_replica_vanishes_gets_a_close_frame_1011() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", capped(4, 10, PATIENCE), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let mut ws = ws_connect(proxy.addr, "site.test", "/ws").await.expect("ws");
    backend.wait_open_sessions(1, PATIENCE).await;
    // The replica's socket goes away without a close frame, as when its process is killed.
    backend.abort_sessions();
    let close = loop {
        match within("a close frame", ws.next()).await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(
        close.map(|f| u16::from(f.code)),
        Some(1011),
        "a server error, not an abnormal closure"
    );
    eventually("the seat is released", || app_a.connections() == 0).await;
    assert_eq!(app_a.stats().closed(CloseReason::Upstream), 1);
}
