//! Graceful shutdown: stop accepting, finish what is in flight, close tunnels with 1001, then return.

mod support;

use futures::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tideway_core::{CloseReason, Policy};
use tideway_testkit::tungstenite::Message;
use tideway_testkit::tungstenite::protocol::frame::coding::CloseCode;
use tideway_testkit::{TestReplica, ws_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

#[tokio::test]
async fn shutdown_finishes_in_flight_responses_and_closes_tunnels() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", Policy::default(), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;
    let addr = proxy.addr;

    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/slow?chunks=6&ms=150")
        .header("host", "site.test")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("response headers");
    let mut ws = ws_connect(addr, "site.test", "/ws").await.expect("ws");
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 2048];
    assert!(within("a response", idle.read(&mut buf)).await.expect("read") > 0);

    let served = proxy.shut_down();

    let body = within("the slow body", response.into_body().collect())
        .await
        .expect("complete body")
        .to_bytes();
    assert_eq!(
        body.iter().filter(|b| **b == b'\n').count(),
        6,
        "every chunk arrived"
    );
    within("the client connection closes", conn)
        .await
        .expect("task")
        .expect("clean close");
    let close = loop {
        match within("a close frame", ws.next()).await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    let mut rest = Vec::new();
    let read = within(
        "the idle keep-alive connection closes",
        idle.read_to_end(&mut rest),
    )
    .await;
    assert!(read.is_err() || rest.is_empty());

    drop(ws);
    assert!(
        within("serve returns", served)
            .await
            .expect("task")
            .expect("serve"),
        "everything drained"
    );
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
    assert!(backend.close_codes().contains(&1001));
    assert_eq!(app_a.connections(), 0);
    assert!(app_a.stats().closed(CloseReason::Drain) >= 2);
}
