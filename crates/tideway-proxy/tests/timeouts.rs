//! `max_connection_age` and `inactive_timeout` on HTTP/1.1, HTTP/2 and WebSocket connections, with short
//! real durations. (Paused-time tests of the same rules live next to the tunnel code.)

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tideway_core::{CloseReason, Policy};
use tideway_testkit::tungstenite::Message;
use tideway_testkit::tungstenite::protocol::frame::coding::CloseCode;
use tideway_testkit::{RawResponse, TestReplica, ws_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

fn aged(age_ms: u64) -> Policy {
    Policy {
        max_connection_age: Some(Duration::from_millis(age_ms)),
        close_grace: Duration::from_secs(2),
        ..Policy::default()
    }
}

fn idle(inactive_ms: u64) -> Policy {
    Policy {
        inactive_timeout: Some(Duration::from_millis(inactive_ms)),
        close_grace: Duration::from_secs(2),
        ..Policy::default()
    }
}

/// Reads one HTTP/1.1 response from `stream`.
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    tideway_testkit::read_response(stream, &mut Vec::new(), PATIENCE).await
}

async fn assert_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = within("the proxy closes the connection", stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_err() || rest.is_empty(),
        "unexpected bytes: {}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test]
async fn http1_age_finishes_the_response_in_flight_with_connection_close() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", aged(400), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET /delay?ms=900 HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("request");
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 200, "{}", response.head);
    assert_eq!(response.header("connection"), Some("close"), "{}", response.head);
    assert_closed(&mut stream).await;
    assert_eq!(app_a.stats().closed(CloseReason::MaxAge), 1);
    assert_eq!(app_a.connections(), 0);
}

#[tokio::test]
async fn http1_idle_keepalive_connections_close_after_inactive_timeout() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", idle(1_000), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    // Requests every 100 ms keep it open well past the timeout...
    for _ in 0..12 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .await
            .expect("request");
        assert_eq!(read_response(&mut stream).await.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...silence closes it. An idle keep-alive connection holds no counted connection: nothing is counted.
    assert_closed(&mut stream).await;
    assert_eq!(app_a.stats().closed(CloseReason::Inactive), 0);

    // A request whose response stays silent past the timeout is a counted connection closed for
    // inactivity: the response still completes, with `Connection: close`.
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET /delay?ms=2000 HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("request");
    let response = read_response(&mut stream).await;
    assert_eq!(response.header("connection"), Some("close"), "{}", response.head);
    assert_closed(&mut stream).await;
    assert_eq!(app_a.stats().closed(CloseReason::Inactive), 1);
}

#[tokio::test]
async fn http2_age_sends_goaway_and_finishes_open_streams() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", aged(400), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let (mut h2, conn) = http2(proxy.addr).await;
    let (status, _, body) = http2_get(&mut h2, "site.test", "/delay?ms=900").await;
    assert_eq!(status, 200, "the stream open at GOAWAY completes");
    assert_eq!(echo(&body)["path"], "/delay?ms=900");
    within("the connection ends after GOAWAY", conn)
        .await
        .expect("task")
        .expect("a clean end");
    assert_eq!(app_a.stats().closed(CloseReason::MaxAge), 1);
}

#[tokio::test]
async fn http2_inactivity_closes_the_connection_though_the_client_pings() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", idle(400), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    // A client that keeps pinging: PING frames are the protocol's, not application data.
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut h2, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(50))
        .keep_alive_while_idle(true)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    // A response streaming slower than the limit in total, but never silent that long, keeps it open.
    let (status, _, body) = http2_get(&mut h2, "site.test", "/slow?chunks=6&ms=150").await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), "chunk 0\n".len() * 6);
    let opened = tokio::time::Instant::now();
    within("inactivity ends the connection", conn)
        .await
        .expect("task")
        .expect("a clean end (GOAWAY)");
    assert!(
        opened.elapsed() >= Duration::from_millis(350),
        "closed after {:?}: too early for inactivity",
        opened.elapsed()
    );
}

#[tokio::test]
async fn websocket_age_closes_both_sides_with_1001() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", aged(300), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let mut ws = ws_connect(proxy.addr, "site.test", "/ws").await.expect("ws");
    let close = loop {
        match within("a close frame", ws.next()).await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    eventually("the replica got 1001 too", || {
        backend.close_codes().contains(&1001)
    })
    .await;
    eventually("the seat is released", || app_a.connections() == 0).await;
    eventually("the close is counted", || {
        app_a.stats().closed(CloseReason::MaxAge) == 1
    })
    .await;
}

#[tokio::test]
async fn websocket_pings_do_not_count_as_activity_but_messages_do() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", idle(1_000), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let mut chatty = ws_connect(proxy.addr, "site.test", "/ws").await.expect("ws");
    let mut pinging = ws_connect(proxy.addr, "site.test", "/ws").await.expect("ws");
    for i in 0..15 {
        chatty
            .send(Message::text(format!("hello {i}")))
            .await
            .expect("send");
        assert_eq!(
            within("an echo", chatty.next())
                .await
                .expect("message")
                .expect("ok"),
            Message::text(format!("hello {i}"))
        );
        pinging.send(Message::Ping(vec![1].into())).await.expect("ping");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut pongs = 0;
    let close = loop {
        match within("a close frame", pinging.next()).await {
            Some(Ok(Message::Pong(_))) => pongs += 1,
            Some(Ok(Message::Close(frame))) => break frame,
            other => panic!("expected pongs then a close frame, got {other:?}"),
        }
    };
    assert!(pongs >= 1, "pings crossed the proxy");
    assert_eq!(
        close.map(|f| f.code),
        Some(CloseCode::Away),
        "pings did not keep the socket alive"
    );
    chatty
        .send(Message::text("still here"))
        .await
        .expect("the chatty socket is open");
    assert_eq!(
        within("an echo", chatty.next())
            .await
            .expect("message")
            .expect("ok"),
        Message::text("still here")
    );
    eventually("the idle tunnel is counted", || {
        app_a.stats().closed(CloseReason::Inactive) == 1
    })
    .await;
}

#[tokio::test]
async fn raw_upgrades_are_tunneled_and_closed_on_age() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", aged(300), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET /tunnel HTTP/1.1\r\nHost: site.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("upgrade request");
    let mut head = vec![0u8; 1024];
    let n = within("101", stream.read(&mut head)).await.expect("read");
    let head = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"ping through the tunnel").await.expect("write");
    let mut echoed = [0u8; 23];
    within("the echo", stream.read_exact(&mut echoed))
        .await
        .expect("echo");
    assert_eq!(&echoed, b"ping through the tunnel");
    assert_closed(&mut stream).await;
    eventually("the seat is released", || app_a.connections() == 0).await;
    eventually("the close is counted", || {
        app_a.stats().closed(CloseReason::MaxAge) == 1
    })
    .await;
}
