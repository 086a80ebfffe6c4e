//! `body_read_timeout` and `response_timeout`: a client that stalls its request body and a replica that
//! stalls its response are given up on, their seats freed, and a client that leaves while the replica
//! takes none of its body frees its seat at once.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tideway_core::{App, CloseReason, Policy};
use tideway_testkit::TestReplica;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use support::*;

fn stalls(body_read_ms: u64, response_ms: u64) -> Policy {
    Policy {
        body_read_timeout: Duration::from_millis(body_read_ms),
        response_timeout: Duration::from_millis(response_ms),
        ..Policy::default()
    }
}

/// A replica that accepts connections and then neither reads nor answers: the connections are held
/// open until the test ends.
async fn mute_replica() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

/// A replica that reads a request head, sends `answer`, then stalls with the connection open.
async fn stalling_replica(answer: &'static [u8]) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(answer).await;
            held.push(stream);
        }
    });
    (addr, task)
}

fn seated(app: &App) -> u32 {
    app.replicas().iter().map(|r| r.connections()).sum()
}

#[tokio::test]
async fn http1_a_stalled_request_body_gets_408_and_frees_its_seat() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", stalls(300, 60_000), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .expect("half a body");
    eventually("the request is seated", || seated(&app_a) == 1).await;
    let mut response = Vec::new();
    within("the proxy gives up", stream.read_to_end(&mut response))
        .await
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    assert!(response.contains("the request body stalled"), "{response}");
    assert_eq!(seated(&app_a), 0);
    assert_eq!(app_a.stats().closed(CloseReason::BodyTimeout), 1);
}

#[tokio::test]
async fn http1_a_body_that_keeps_coming_is_never_cut() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", stalls(400, 60_000), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 6\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("head");
    // Six bytes 100 ms apart: 600 ms in all, longer than the timeout, no pause as long.
    for byte in b"abcdef" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(&[*byte]).await.expect("a byte");
    }
    let mut response = Vec::new();
    within("the response", stream.read_to_end(&mut response))
        .await
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(response.contains(r#""body_len":6"#), "{response}");
    assert_eq!(app_a.stats().closed(CloseReason::BodyTimeout), 0);
}

#[tokio::test]
async fn http1_a_replica_that_never_answers_gets_504() {
    let (addr, _replica) = mute_replica().await;
    let app_a = app("a", stalls(60_000, 300), &[addr]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let response = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 504 "), "{response}");
    assert!(
        response.contains("the replica did not answer in time"),
        "{response}"
    );
    assert_eq!(seated(&app_a), 0);
    assert_eq!(app_a.stats().closed(CloseReason::ResponseTimeout), 1);
}

#[tokio::test]
async fn http1_a_response_that_stalls_midway_is_cut_and_counted() {
    let (addr, _replica) =
        stalling_replica(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nthe first part").await;
    let app_a = app("a", stalls(60_000, 300), &[addr]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let response = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(response.ends_with("the first part"), "{response}");
    assert_eq!(seated(&app_a), 0);
    assert_eq!(app_a.stats().closed(CloseReason::ResponseTimeout), 1);
}

#[tokio::test]
async fn http1_a_slow_response_that_keeps_coming_is_never_cut() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", stalls(60_000, 400), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    // Six chunks 100 ms apart: longer than the timeout in all, no pause as long.
    let response = raw(
        proxy.addr,
        b"GET /slow?chunks=6&ms=100 HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(
        response.ends_with("0\r\n\r\n"),
        "the whole chunked body: {response}"
    );
    assert_eq!(app_a.stats().closed(CloseReason::ResponseTimeout), 0);
}

#[tokio::test]
async fn http1_a_client_that_leaves_while_the_replica_reads_nothing_frees_its_seat() {
    let (addr, _replica) = mute_replica().await;
    // Both timeouts far beyond the test: only noticing the client's departure frees the seat.
    let app_a = app("a", stalls(600_000, 600_000), &[addr]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1000000000\r\n\r\n")
        .await
        .expect("head");
    eventually("the request is seated", || seated(&app_a) == 1).await;
    // Fill every buffer on the way until the upload blocks: the proxy's write to the replica blocks too.
    // Then abort: a FIN would queue behind the unsent bytes, a reset arrives at once.
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 256 * 1024 * 1024 {
        match tokio::time::timeout(Duration::from_millis(300), stream.write_all(&chunk)).await {
            Ok(written) => {
                written.expect("upload");
                sent += chunk.len();
            }
            Err(_) => break,
        }
    }
    stream.set_zero_linger().expect("linger");
    drop(stream);
    eventually("the departed client's seat is freed", || seated(&app_a) == 0).await;
    assert_eq!(app_a.stats().closed(CloseReason::Client), 1);
}

#[tokio::test]
async fn http2_a_stalled_request_body_gets_408_and_frees_its_seat() {
    let backend = TestReplica::start("a").await.expect("backend");
    let app_a = app("a", stalls(300, 60_000), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let (mut h2, _conn) = http2_with::<Fed>(proxy.addr).await;
    let (mut feed, body) = futures::channel::mpsc::channel::<Bytes>(1);
    feed.try_send(Bytes::from_static(b"01234")).expect("first part");
    let body = StreamBody::new(body.map(|bytes| Ok(Frame::data(bytes))));
    let req = http::Request::post("http://site.test/echo")
        .header("content-length", "10")
        .body(BoxBody::new(body))
        .expect("request");
    let response = within("the proxy gives up", h2.send_request(req))
        .await
        .expect("a response");
    assert_eq!(response.status(), 408);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"the request body stalled\n");
    assert_eq!(seated(&app_a), 0);
    assert_eq!(app_a.stats().closed(CloseReason::BodyTimeout), 1);
    drop(feed);
}

#[tokio::test]
async fn http2_a_replica_that_never_answers_gets_504() {
    let (addr, _replica) = mute_replica().await;
    let app_a = app("a", stalls(60_000, 300), &[addr]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let (mut h2, _conn) = http2(proxy.addr).await;
    let (status, _, body) = within("the proxy gives up", http2_get(&mut h2, "site.test", "/")).await;
    assert_eq!(status, 504);
    assert_eq!(&body[..], b"the replica did not answer in time\n");
    assert_eq!(seated(&app_a), 0);
    assert_eq!(app_a.stats().closed(CloseReason::ResponseTimeout), 1);
}

#[tokio::test]
async fn http2_a_response_that_stalls_midway_is_reset_and_counted() {
    let (addr, _replica) =
        stalling_replica(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nthe first part").await;
    let app_a = app("a", stalls(60_000, 300), &[addr]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let (mut h2, _conn) = http2(proxy.addr).await;
    let req = http::Request::get("http://site.test/")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = within("the head", h2.send_request(req)).await.expect("head");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = within("the first part", body.frame()).await;
    let first = first
        .and_then(Result::ok)
        .and_then(|f: Frame<Bytes>| f.into_data().ok());
    assert_eq!(first.as_deref(), Some(&b"the first part"[..]));
    let rest = within("the stream is reset", body.frame()).await;
    assert!(matches!(rest, Some(Err(_))), "{rest:?}");
    eventually("the seat is freed", || seated(&app_a) == 0).await;
    assert_eq!(app_a.stats().closed(CloseReason::ResponseTimeout), 1);
}

#[tokio::test]
async fn http2_a_client_that_leaves_while_the_replica_reads_nothing_frees_its_seat() {
    let (addr, _replica) = mute_replica().await;
    let app_a = app("a", stalls(600_000, 600_000), &[addr]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let stream = TcpStream::connect(proxy.addr)
        .await
        .expect("connect to the proxy");
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake::<_, _, Fed>(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    let driver = tokio::spawn(conn);
    let (mut feed, body) = futures::channel::mpsc::channel::<Bytes>(4);
    let req = http::Request::post("http://site.test/upload")
        .body(BoxBody::new(StreamBody::new(
            body.map(|bytes| Ok(Frame::data(bytes))),
        )))
        .expect("request");
    let response = tokio::spawn(h2.send_request(req));
    eventually("the upload is seated", || seated(&app_a) == 1).await;
    for _ in 0..8 {
        if feed.try_send(Bytes::from(vec![b'x'; 64 * 1024])).is_err() {
            break;
        }
    }
    // The client goes away: its connection with it.
    response.abort();
    driver.abort();
    drop(feed);
    eventually("the departed client's seat is freed", || seated(&app_a) == 0).await;
}
