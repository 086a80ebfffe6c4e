//! HTTP/1.1 framing through tideway's engine, as raw bytes on the wire: request bodies of every framing,
//! pipelining, `100 Continue`, chunked and close-delimited responses, HTTP/1.0 clients, smuggling, the
//! HTTP/2 preface, and requests in flight on a replica whose drain runs out of time.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tideway_core::{CloseReason, Policy};
use tideway_testkit::{RawResponse, TestReplica};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::*;

/// Reads one response from `stream`, whose earlier bytes are in `pending`.
async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> RawResponse {
    tideway_testkit::read_response(stream, pending, PATIENCE).await
}

async fn proxy_for(backend: &TestReplica) -> (Proxied, std::sync::Arc<tideway_core::App>) {
    let app_a = app("a", Policy::default(), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;
    (proxy, app_a)
}

#[tokio::test]
async fn request_bodies_of_every_framing_reach_the_replica_on_one_kept_connection() {
    let backend = TestReplica::start("a").await.expect("backend");
    let (proxy, _app) = proxy_for(&backend).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut pending = Vec::new();

    stream
        .write_all(b"POST /sized HTTP/1.1\r\nHost: site.test\r\nContent-Length: 11\r\n\r\nhello world")
        .await
        .expect("a sized body");
    let sized = read_response(&mut stream, &mut pending).await;
    assert_eq!(sized.status, 200);
    assert_eq!(echo(&sized.body.into())["body_len"], 11);

    stream
        .write_all(
            b"POST /chunked HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .expect("a first chunk");
    stream
        .write_all(b"6;ext=1\r\n world\r\n0\r\n\r\n")
        .await
        .expect("the rest");
    let chunked = read_response(&mut stream, &mut pending).await;
    assert_eq!(chunked.status, 200);
    let doc = echo(&chunked.body.into());
    assert_eq!(doc["body_len"], 11);
    assert_eq!(doc["headers"]["transfer-encoding"][0], "chunked");

    stream
        .write_all(b"GET /after HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("a plain request");
    let after = read_response(&mut stream, &mut pending).await;
    assert_eq!(echo(&after.body.into())["path"], "/after");
    assert_eq!(backend.requests(), 3);
    assert_eq!(
        backend.accepted(),
        1,
        "the bodies ended where their framing said: one replica connection"
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let backend = TestReplica::start("a").await.expect("backend");
    let (proxy, _app) = proxy_for(&backend).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(
            b"GET /1 HTTP/1.1\r\nHost: site.test\r\n\r\nPOST /2 HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\n\r\nabc\
              GET /3 HTTP/1.1\r\nHost: site.test\r\n\r\n",
        )
        .await
        .expect("three requests at once");
    let mut pending = Vec::new();
    for path in ["/1", "/2", "/3"] {
        let response = read_response(&mut stream, &mut pending).await;
        assert_eq!(echo(&response.body.into())["path"], path);
    }
}

#[tokio::test]
async fn expect_100_continue_is_relayed_before_the_body_is_sent() {
    let backend = TestReplica::start("a").await.expect("backend");
    let (proxy, _app) = proxy_for(&backend).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(
            b"PUT /upload HTTP/1.1\r\nHost: site.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .await
        .expect("the head alone");
    let mut pending = Vec::new();
    let interim = read_response(&mut stream, &mut pending).await;
    assert_eq!(
        interim.status, 100,
        "the replica's 100 Continue reaches the client"
    );
    stream.write_all(b"12345").await.expect("the body");
    let done = read_response(&mut stream, &mut pending).await;
    assert_eq!(done.status, 200);
    assert_eq!(echo(&done.body.into())["body_len"], 5);
}

#[tokio::test]
async fn chunked_responses_pass_through_and_http10_clients_get_them_decoded() {
    let backend = TestReplica::start("a").await.expect("backend");
    let (proxy, _app) = proxy_for(&backend).await;
    let expected = b"chunk 0\nchunk 1\nchunk 2\n".to_vec();

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut pending = Vec::new();
    for _ in 0..2 {
        stream
            .write_all(b"GET /slow?chunks=3&ms=1 HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .await
            .expect("request");
        let response = read_response(&mut stream, &mut pending).await;
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
        assert_eq!(
            response.body, expected,
            "and the connection carries the next request"
        );
    }

    let mut old = TcpStream::connect(proxy.addr).await.expect("connect");
    old.write_all(b"GET /slow?chunks=3&ms=1 HTTP/1.0\r\nHost: site.test\r\n\r\n")
        .await
        .expect("an HTTP/1.0 request");
    let mut pending = Vec::new();
    let response = read_response(&mut old, &mut pending).await;
    assert_eq!(response.status, 200);
    assert!(
        response.header("transfer-encoding").is_none(),
        "{}",
        response.head
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.body, expected, "delimited by the close");
}

#[tokio::test]
async fn a_response_without_framing_ends_with_its_connection() {
    // A replica that answers with neither a length nor chunks, then closes.
    let replica = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let replica_addr: SocketAddr = replica.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = replica.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
                .await;
        }
    });
    let app_a = app("a", Policy::default(), &[replica_addr]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;
    let response = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("Connection: close\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nuntil the end"), "{response}");
    eventually("the seat is released", || app_a.connections() == 0).await;
}

#[tokio::test]
async fn smuggling_shapes_are_refused_before_reaching_a_replica() {
    let backend = TestReplica::start("a").await.expect("backend");
    let (proxy, _app) = proxy_for(&backend).await;
    for request in [
        &b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
        // Read as 0 by a lax parser and as 64 by Python's int(s, 16): the two disagree on where the body ends.
        b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n0x40\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n5 zz\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\nhello",
        b"POST / HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ] {
        let response = raw(proxy.addr, request).await;
        assert!(
            response.starts_with("HTTP/1.1 400") || response.starts_with("HTTP/1.1 501"),
            "{} got {response}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn a_body_broken_after_its_head_was_forwarded_gets_400() {
    let backend = TestReplica::start("a").await.expect("backend");
    let (proxy, app) = proxy_for(&backend).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .expect("a good start");
    eventually("the request is on its replica", || {
        app.replicas()[0].connections() == 1
    })
    .await;
    stream
        .write_all(b"5 zz\r\nworld\r\n0\r\n\r\n")
        .await
        .expect("a bad chunk");
    let mut response = Vec::new();
    within("the answer", stream.read_to_end(&mut response))
        .await
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    assert!(response.contains("malformed chunked body"), "{response}");
    assert_eq!(backend.requests(), 0, "the replica never got a whole request");
}

#[tokio::test]
async fn a_body_stays_a_body_whatever_connection_names() {
    let backend = TestReplica::start("a").await.expect("backend");
    let (proxy, _app) = proxy_for(&backend).await;
    // If Content-Length were dropped as hop-by-hop, the replica would read the body as a second request.
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: site.test\r\n\r\n";
    let mut request = format!(
        "POST /outer HTTP/1.1\r\nHost: site.test\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    )
    .into_bytes();
    request.extend_from_slice(smuggled);
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream.write_all(&request).await.expect("request");
    let mut pending = Vec::new();
    let response = read_response(&mut stream, &mut pending).await;
    let doc = echo(&response.body.into());
    assert_eq!(doc["path"], "/outer");
    assert_eq!(doc["body_len"], smuggled.len());
    // A desynchronised replica connection would answer the next request with the smuggled one's response.
    stream
        .write_all(b"GET /follow HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("the next request");
    let next = read_response(&mut stream, &mut pending).await;
    assert_eq!(echo(&next.body.into())["path"], "/follow");
    assert_eq!(backend.requests(), 2, "two requests, the first with its body");
}

#[tokio::test]
async fn an_http10_request_without_host_reaches_a_hostless_app() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", Policy::default(), &[backend.addr()]);
    let route = tideway_proxy::Route {
        app: std::sync::Arc::clone(&app_a),
        hosts: Vec::new(),
        path_prefix: Some("/old".to_owned()),
    };
    let proxy = Proxied::start(vec![route]).await;
    let response = raw(proxy.addr, b"GET /old/page HTTP/1.0\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    let doc = echo(&bytes::Bytes::copy_from_slice(body.as_bytes()));
    assert_eq!(doc["headers"]["host"][0], backend.addr().to_string());
}

#[tokio::test]
async fn an_http2_preface_split_across_reads_is_still_http2() {
    let backend = TestReplica::start("a").await.expect("backend");
    let (proxy, _app) = proxy_for(&backend).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("half the preface");
    // The rest comes in a later read of the proxy's.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The rest of the preface, then an empty SETTINGS frame.
    stream
        .write_all(b"\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("the rest");
    let mut frame_head = [0u8; 9];
    within("the server's SETTINGS", stream.read_exact(&mut frame_head))
        .await
        .expect("an HTTP/2 frame");
    assert_eq!(frame_head[3], 0x4, "a SETTINGS frame: {frame_head:?}");

    // A method that starts like the preface is no preface.
    let put = raw(
        proxy.addr,
        b"PUT /p HTTP/1.1\r\nHost: site.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(put.starts_with("HTTP/1.1 200"), "{put}");
}

#[tokio::test]
async fn a_request_in_flight_on_an_evicted_replica_is_closed_with_reason_drain() {
    // Evicted before and after the connection's watch subscribes to the replica's signal (at the drain
    // timeout): the first is seen when the timer fires, the second wakes the connection itself.
    for evict_after in [Duration::ZERO, Duration::from_millis(300)] {
        let backend = TestReplica::start("a").await.expect("backend");
        let policy = Policy {
            drain_timeout: Duration::from_millis(100),
            close_grace: Duration::from_millis(200),
            ..Policy::default()
        };
        let app_a = app("a", policy, &[backend.addr()]);
        let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        // Silent for far longer than the test waits: only the eviction can end it.
        stream
            .write_all(b"GET /delay?ms=60000 HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .await
            .expect("request");
        eventually("the request is in flight", || app_a.connections() == 1).await;
        tokio::time::sleep(evict_after).await;
        let replica = app_a.replicas()[0].clone();
        proxy.proxy.evict(&replica);
        let mut rest = Vec::new();
        let read = within(
            "the eviction closes the connection",
            stream.read_to_end(&mut rest),
        )
        .await;
        assert!(read.is_err() || rest.is_empty(), "no response was on its way");
        eventually("the seat is released", || app_a.connections() == 0).await;
        assert_eq!(
            app_a.stats().closed(CloseReason::Drain),
            1,
            "evicted after {evict_after:?}"
        );
        assert_eq!(app_a.stats().closed(CloseReason::Client), 0);
    }
}
