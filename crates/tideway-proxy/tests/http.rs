//! HTTP behaviour users expect from a reverse proxy: routing, header hygiene, limits, HTTP/2, pooling,
//! and failing over when a replica refuses connections.

mod support;

use std::time::Duration;

use tideway_core::{Policy, RejectReason};
use tideway_testkit::{TestReplica, http1_get, refused_addr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

#[tokio::test]
async fn routes_by_host_then_longest_path_prefix() {
    let (a, b) = (
        TestReplica::start("a").await.expect("a"),
        TestReplica::start("b").await.expect("b"),
    );
    let app_a = app("a", Policy::default(), &[a.addr()]);
    let app_b = app("b", Policy::default(), &[b.addr()]);
    let proxy = Proxied::start(vec![
        route(&app_a, "site.test", None),
        route(&app_b, "site.test", Some("/b")),
    ])
    .await;

    for (host, path, expected) in [
        ("site.test", "/", "a"),
        ("SITE.test:8080", "/b", "b"),
        ("site.test", "/b/deeper?x=1", "b"),
        ("site.test", "/bee", "a"),
    ] {
        let (status, headers, body) = http1_get(proxy.addr, host, path).await.expect("a response");
        assert_eq!(status, 200, "{host}{path}");
        assert_eq!(headers["x-backend"], expected, "{host}{path}");
        assert_eq!(
            echo(&body)["path"],
            path,
            "the path reaches the replica unchanged"
        );
    }
    let (status, _, _) = http1_get(proxy.addr, "other.test", "/")
        .await
        .expect("a response");
    assert_eq!(status, 404);
    assert_eq!(a.requests() + b.requests(), 4);
}

#[tokio::test]
async fn never_an_open_proxy() {
    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("a", Policy::default(), &[a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let absolute = raw(
        proxy.addr,
        b"GET http://elsewhere.test/ HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 404"), "{absolute}");
    let connect = raw(
        proxy.addr,
        b"CONNECT site.test:443 HTTP/1.1\r\nHost: site.test:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    let hostless = raw(proxy.addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(hostless.starts_with("HTTP/1.1 400"), "{hostless}");
    assert_eq!(a.requests(), 0);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarded_headers_set() {
    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("a", Policy::default(), &[a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let response = raw(
        proxy.addr,
        b"GET /h HTTP/1.1\r\nHost: site.test\r\nConnection: close, X-Private\r\nX-Private: secret\r\n\
          Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9v\r\n\
          X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Host: spoofed.test\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    let headers = &echo(&bytes::Bytes::copy_from_slice(body.as_bytes()))["headers"];
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the replica: {headers}"
        );
    }
    assert_eq!(headers["x-kept"][0], "yes");
    assert_eq!(headers["host"][0], "site.test");
    assert_eq!(headers["x-forwarded-for"][0], "203.0.113.7, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    assert_eq!(headers["x-forwarded-host"][0], "site.test");
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("a", Policy::default(), &[a.addr()]);
    let settings = tideway_config::ProxySettings {
        max_header_bytes: 4096,
        max_headers: 20,
        ..settings()
    };
    let proxy = Proxied::start_with(settings, vec![route(&app_a, "site.test", None)]).await;

    let big = format!(
        "GET / HTTP/1.1\r\nHost: site.test\r\nX-Big: {}\r\n\r\n",
        "x".repeat(8_000)
    );
    assert!(raw(proxy.addr, big.as_bytes()).await.starts_with("HTTP/1.1 431"));
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: site.test\r\n{many}\r\n");
    assert!(raw(proxy.addr, many.as_bytes()).await.starts_with("HTTP/1.1 431"));

    let (mut h2, _conn) = http2(proxy.addr).await;
    let req = http::Request::get("http://site.test/")
        .header("x-big", "y".repeat(8_000))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("a request");
    let response = h2.send_request(req).await.expect("an HTTP/2 response");
    assert_eq!(response.status(), 431);
    let mut many = http::Request::get("http://site.test/");
    for i in 0..30 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let many = many
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("a request");
    let response = h2.send_request(many).await.expect("an HTTP/2 response");
    assert_eq!(response.status(), 431, "max_headers holds for HTTP/2 too");
    assert_eq!(a.requests(), 0);
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off() {
    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("a", Policy::default(), &[a.addr()]);
    let settings = tideway_config::ProxySettings {
        header_read_timeout: Duration::from_millis(300),
        ..settings()
    };
    let proxy = Proxied::start_with(settings, vec![route(&app_a, "site.test", None)]).await;

    let mut slow = TcpStream::connect(proxy.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: si")
        .await
        .expect("half a head");
    let mut silent = TcpStream::connect(proxy.addr).await.expect("connect");
    for stream in [&mut slow, &mut silent] {
        let mut buf = Vec::new();
        let read = within("the proxy hangs up", stream.read_to_end(&mut buf)).await;
        assert!(
            read.is_err() || buf.is_empty(),
            "no response to an incomplete head: {buf:?}"
        );
    }
    // Between requests a keep-alive connection is not "slow": only an unfinished head is.
    let mut kept = TcpStream::connect(proxy.addr).await.expect("connect");
    kept.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 4096];
    let n = within("a response", kept.read(&mut buf)).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    kept.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("second request");
    let n = within("a second response", kept.read(&mut buf))
        .await
        .expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn http2_clients_are_served_over_http1_replicas() {
    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("a", Policy::default(), &[a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let (mut h2, _conn) = http2(proxy.addr).await;
    let mut same_connection = h2.clone();
    let (first, second) = tokio::join!(
        http2_get(&mut same_connection, "site.test", "/one"),
        http2_get(&mut h2, "site.test", "/two"),
    );
    for ((status, headers, body), path) in [(first, "/one"), (second, "/two")] {
        assert_eq!(status, 200);
        assert_eq!(headers["x-backend"], "a");
        let echo = echo(&body);
        assert_eq!(echo["path"], path);
        assert_eq!(echo["version"], "HTTP/1.1");
        assert_eq!(echo["headers"]["host"][0], "site.test");
        assert_eq!(echo["headers"]["x-forwarded-host"][0], "site.test");
    }
}

#[tokio::test]
async fn replica_connections_are_kept_alive_and_reused() {
    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("a", Policy::default(), &[a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    for _ in 0..20 {
        let (status, _, _) = http1_get(proxy.addr, "site.test", "/").await.expect("a response");
        assert_eq!(status, 200);
    }
    assert_eq!(a.requests(), 20);
    assert_eq!(
        a.accepted(),
        1,
        "20 sequential requests share one replica connection"
    );
}

#[tokio::test]
async fn a_refused_replica_is_skipped_and_the_request_retried() {
    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("a", Policy::default(), &[refused_addr(), a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    for _ in 0..10 {
        let (status, headers, _) = http1_get(proxy.addr, "site.test", "/").await.expect("a response");
        assert_eq!(status, 200);
        assert_eq!(headers["x-backend"], "a");
    }
    assert_eq!(a.requests(), 10);
    assert_eq!(app_a.connections(), 0);
}

#[tokio::test]
async fn no_reachable_replica_is_a_502() {
    let app_a = app("a", Policy::default(), &[refused_addr(), refused_addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let (status, _, _) = http1_get(proxy.addr, "site.test", "/").await.expect("a response");
    assert_eq!(status, 502);
    assert_eq!(app_a.stats().rejected(RejectReason::NoReplica), 1);
    assert_eq!(app_a.connections(), 0);
}

/// Sends `req` over `h2` and returns the status, the headers and the whole body.
async fn http2_send(
    h2: &mut hyper::client::conn::http2::SendRequest<Fed>,
    req: http::Request<Fed>,
) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    use http_body_util::BodyExt;
    let response = within("the response", h2.send_request(req))
        .await
        .expect("an HTTP/2 response");
    let (parts, body) = response.into_parts();
    let body = within("the body", body.collect())
        .await
        .expect("the whole body")
        .to_bytes();
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn http2_bodies_cross_both_ways_over_the_replica_pool_http1_uses() {
    use futures::stream;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;

    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("a", Policy::default(), &[a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;
    let (status, _, _) = http1_get(proxy.addr, "site.test", "/").await.expect("a response");
    assert_eq!(status, 200);

    let (mut h2, _conn) = http2_with::<Fed>(proxy.addr).await;
    let uri = |path: &str| format!("http://site.test{path}");
    // A body of unknown length goes up chunked.
    let pieces =
        stream::iter(["one ", "two ", "three"].map(|piece| Ok(Frame::data(bytes::Bytes::from(piece)))));
    let req = http::Request::post(uri("/streamed"))
        .body(StreamBody::new(pieces).boxed())
        .expect("a request");
    let (status, _, body) = http2_send(&mut h2, req).await;
    assert_eq!(status, 200);
    let streamed = echo(&body);
    assert_eq!(streamed["body_len"], 13);
    assert_eq!(streamed["headers"]["transfer-encoding"][0], "chunked");
    // A body of known length goes up with it.
    let req = http::Request::put(uri("/sized"))
        .header("content-length", "5")
        .body(Full::new(bytes::Bytes::from_static(b"12345")).boxed())
        .expect("a request");
    let (status, _, body) = http2_send(&mut h2, req).await;
    assert_eq!(status, 200);
    let sized = echo(&body);
    assert_eq!(sized["body_len"], 5);
    assert_eq!(sized["headers"]["content-length"][0], "5");
    assert!(sized["headers"].get("transfer-encoding").is_none());
    // A chunked response comes back as its content.
    let get = |path: &str| {
        http::Request::get(uri(path))
            .body(Fed::default())
            .expect("a request")
    };
    let (status, headers, body) = http2_send(&mut h2, get("/slow?chunks=3&ms=1")).await;
    assert_eq!(status, 200);
    assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\n");
    assert!(!headers.contains_key("transfer-encoding"));
    // A large one of known length, whole; a HEAD response, without a body.
    let (status, headers, body) = http2_send(&mut h2, get("/bytes?n=300000")).await;
    assert_eq!((status.as_u16(), body.len()), (200, 300_000));
    assert_eq!(headers["content-length"], "300000");
    let head = http::Request::head(uri("/bytes?n=10"))
        .body(Fed::default())
        .expect("a request");
    let (status, _, body) = http2_send(&mut h2, head).await;
    assert_eq!((status.as_u16(), body.len()), (200, 0));

    assert_eq!(a.requests(), 6);
    assert_eq!(
        a.accepted(),
        1,
        "both protocols' requests share the replica's one pool"
    );
    eventually("every seat is given back", || app_a.connections() == 0).await;
}

/// A replica that answers every request on every connection with `answer` and closes.
async fn answering(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                let _ = stream.write_all(answer).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http2_requests_fail_over_and_fail_like_http1_ones() {
    // A refused replica is skipped and the request moves.
    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("a", Policy::default(), &[refused_addr(), a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;
    let (mut h2, _conn) = http2(proxy.addr).await;
    for _ in 0..5 {
        let (status, headers, _) = http2_get(&mut h2, "site.test", "/").await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-backend"], "a");
    }
    // A request written to a replica that then drops it unanswered is never sent again: 502.
    let (status, _, _) = http2_get(&mut h2, "site.test", "/drop-next").await;
    assert_eq!(status, 200);
    let accepted = a.accepted();
    let (status, _, _) = http2_get(&mut h2, "site.test", "/again").await;
    assert_eq!(status, 502, "the replica may have acted on it");
    assert_eq!(
        a.accepted(),
        accepted,
        "nothing was sent again on a new connection"
    );

    // An answer that is not HTTP tideway can relay is a 502; so is one that breaks off mid-head.
    for (answer, text) in [
        (
            &b"HTTP/1.1 2x0 OK\r\n\r\n"[..],
            "the replica sent a malformed response\n",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-", "the replica failed to answer\n"),
    ] {
        let bad = app("bad", Policy::default(), &[answering(answer).await]);
        let proxy = Proxied::start(vec![route(&bad, "bad.test", None)]).await;
        let (mut h2, _conn) = http2(proxy.addr).await;
        let (status, _, body) = http2_get(&mut h2, "bad.test", "/").await;
        assert_eq!((status.as_u16(), &body[..]), (502, text.as_bytes()));
        eventually("the seat is given back", || bad.connections() == 0).await;
    }
}

#[tokio::test]
async fn an_http2_stream_from_a_replica_whose_drain_ran_out_is_cut_with_reason_drain() {
    use http_body_util::BodyExt;
    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("a", Policy::default(), &[a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;
    let (mut h2, _conn) = http2(proxy.addr).await;
    let req = http::Request::get("http://site.test/slow?chunks=1000&ms=20")
        .body(http_body_util::Empty::new())
        .expect("a request");
    let response = within("the head", h2.send_request(req))
        .await
        .expect("a response");
    let mut body = response.into_body();
    let first = within("a first chunk", body.frame())
        .await
        .expect("a frame")
        .expect("data");
    assert!(first.is_data());
    assert_eq!(app_a.connections(), 1);

    proxy.proxy.evict(&app_a.replicas()[0]);
    let cut = within("the stream's end", async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => {}
                Some(Err(_)) => return true,
                None => return false,
            }
        }
    })
    .await;
    assert!(cut, "the stream is reset, not ended as if whole");
    eventually("the seat is given back", || app_a.connections() == 0).await;
    assert_eq!(app_a.stats().closed(tideway_core::CloseReason::Drain), 1);
}
