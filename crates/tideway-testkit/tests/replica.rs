//! Every route of the fake backend, exercised with real clients over loopback.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tideway_testkit::tungstenite::Message;
use tideway_testkit::tungstenite::protocol::CloseFrame;
use tideway_testkit::tungstenite::protocol::frame::coding::CloseCode;
use tideway_testkit::{TestReplica, http1_get, refused_addr, ws_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(5);

async fn backend(name: &str) -> TestReplica {
    TestReplica::start(name).await.expect("backend binds 127.0.0.1:0")
}

/// A hyper HTTP/1.1 client on one TCP connection; the connection task ends with the test.
async fn connect(backend: &TestReplica) -> http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(backend.addr()).await.expect("connect");
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    sender
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "app.test")
        .body(Full::default())
        .expect("valid request")
}

/// Sends raw bytes and reads the response head (up to the blank line).
async fn raw_request(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read head");
        assert_eq!(n, 1, "EOF inside the response head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("ASCII head")
}

#[tokio::test]
async fn default_route_echoes_the_request_as_json() {
    let backend = backend("blue").await;
    let (status, headers, body) = http1_get(backend.addr(), "app.test", "/some/path?q=1")
        .await
        .expect("GET");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-backend"], "blue");
    assert_eq!(headers["content-type"], "application/json");
    let json: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(json["backend"], "blue");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/some/path?q=1");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["headers"]["host"], serde_json::json!(["app.test"]));
    assert_eq!(json["body_len"], 0);
    assert_eq!(backend.name(), "blue");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn default_route_counts_body_bytes_and_repeated_headers() {
    let backend = backend("blue").await;
    let mut sender = connect(&backend).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/upload")
        .header("host", "app.test")
        .header("X-Multi", "a")
        .header("x-multi", "b")
        .body(Full::new(Bytes::from(vec![7u8; 1234])))
        .expect("valid request");
    let response = sender.send_request(request).await.expect("POST");
    let body = response.collect().await.expect("body").to_bytes();
    let json: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["body_len"], 1234);
    assert_eq!(json["headers"]["x-multi"], serde_json::json!(["a", "b"]));
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let backend = backend("blue").await;
    let mut sender = connect(&backend).await;
    for _ in 0..3 {
        sender.ready().await.expect("connection reusable");
        let response = sender.send_request(get("/")).await.expect("GET");
        assert_eq!(response.status(), StatusCode::OK);
        response.collect().await.expect("body");
    }
    assert_eq!(backend.accepted(), 1);
    assert_eq!(backend.requests(), 3);
}

#[tokio::test]
async fn slow_streams_chunks_with_pauses() {
    let backend = backend("blue").await;
    let mut sender = connect(&backend).await;
    let started = Instant::now();
    let response = sender
        .send_request(get("/slow?chunks=3&ms=40"))
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body frame").into_data() {
            chunks.push(data);
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(120));
    assert_eq!(chunks.concat(), b"chunk 0\nchunk 1\nchunk 2\n");
    // 40 ms apart, the chunks arrive as separate reads: the body really streams.
    assert!(chunks.len() > 1, "{chunks:?}");
}

#[tokio::test]
async fn delay_waits_before_the_headers() {
    let backend = backend("blue").await;
    let started = Instant::now();
    let (status, _, body) = http1_get(backend.addr(), "app.test", "/delay?ms=100")
        .await
        .expect("GET");
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(status, StatusCode::OK);
    let json: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(json["path"], "/delay?ms=100");
}

#[tokio::test]
async fn status_route_answers_the_requested_code() {
    let backend = backend("green").await;
    let (status, headers, body) = http1_get(backend.addr(), "app.test", "/status/418")
        .await
        .expect("GET");
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert_eq!(headers["x-backend"], "green");
    assert!(body.is_empty());
    let (status, _, _) = http1_get(backend.addr(), "app.test", "/status/nope")
        .await
        .expect("GET");
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn abort_sends_headers_and_part_of_the_body_then_closes() {
    let backend = backend("blue").await;

    // On the wire: the full head, 10 of the 1000 promised bytes, then EOF.
    let mut stream = TcpStream::connect(backend.addr()).await.expect("connect");
    let head = raw_request(&mut stream, "GET /abort HTTP/1.1\r\nhost: app.test\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-length: 1000"), "{head}");
    let mut rest = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .expect("backend closes the connection")
        .expect("read body");
    assert_eq!(rest, b"0123456789");

    // Through hyper: the head arrives, the body fails.
    let mut sender = connect(&backend).await;
    let response = sender.send_request(get("/abort")).await.expect("head");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.collect().await.is_err());
    assert!(http1_get(backend.addr(), "app.test", "/abort").await.is_err());
}

#[tokio::test]
async fn websocket_echoes_and_answers_whoami() {
    let backend = backend("blue").await;
    let mut ws = ws_connect(backend.addr(), "app.test", "/ws")
        .await
        .expect("WebSocket handshake");
    assert!(backend.wait_open_sessions(1, WAIT).await);

    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("reply").expect("frame"),
        Message::text("hello")
    );
    ws.send(Message::binary(vec![1u8, 2, 3])).await.expect("send");
    assert_eq!(
        ws.next().await.expect("reply").expect("frame"),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.send(Message::text("whoami")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("reply").expect("frame"),
        Message::text("blue")
    );
    ws.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .expect("send");
    assert_eq!(
        ws.next().await.expect("reply").expect("frame"),
        Message::Pong(Bytes::from_static(b"p"))
    );

    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "timeout".into(),
    }))
    .await
    .expect("close");
    // The backend answers the Close and ends the stream.
    while let Some(Ok(_)) = ws.next().await {}
    assert!(backend.wait_open_sessions(0, WAIT).await);
    assert_eq!(backend.close_codes(), [1001]);
}

#[tokio::test]
async fn websocket_close_message_makes_the_backend_close_normally() {
    let backend = backend("blue").await;
    let mut ws = ws_connect(backend.addr(), "app.test", "/ws")
        .await
        .expect("WebSocket handshake");
    ws.send(Message::text("close")).await.expect("send");
    let Message::Close(Some(frame)) = ws.next().await.expect("frame").expect("close frame") else {
        panic!("expected a Close frame with a code");
    };
    assert_eq!(frame.code, CloseCode::Normal);
    // tungstenite replies to the Close; the backend then ends the session.
    while let Some(Ok(_)) = ws.next().await {}
    assert!(backend.wait_open_sessions(0, WAIT).await);
    assert_eq!(backend.close_codes(), [1000]);
}

#[tokio::test]
async fn websocket_route_rejects_plain_requests_and_bad_keys() {
    let backend = backend("blue").await;
    let (status, _, _) = http1_get(backend.addr(), "app.test", "/ws").await.expect("GET");
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let mut stream = TcpStream::connect(backend.addr()).await.expect("connect");
    let head = raw_request(
        &mut stream,
        "GET /ws HTTP/1.1\r\nhost: app.test\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: not-a-key\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(backend.open_sessions(), 0);
}

#[tokio::test]
async fn echo_upgrade_tunnels_raw_bytes() {
    let backend = backend("blue").await;
    let mut stream = TcpStream::connect(backend.addr()).await.expect("connect");
    let head = raw_request(
        &mut stream,
        "GET /tunnel HTTP/1.1\r\nhost: app.test\r\nupgrade: echo\r\nconnection: Upgrade\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    assert_eq!(backend.open_sessions(), 1);

    stream.write_all(b"raw bytes\0\xff").await.expect("write");
    let mut echoed = [0u8; 11];
    stream.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"raw bytes\0\xff");

    stream.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("EOF");
    assert!(rest.is_empty());
    assert!(backend.wait_open_sessions(0, WAIT).await);
}

#[tokio::test]
async fn abort_sessions_drops_every_open_session_without_close_frames() {
    let backend = backend("blue").await;
    let mut first = ws_connect(backend.addr(), "app.test", "/ws")
        .await
        .expect("WebSocket handshake");
    let mut second = ws_connect(backend.addr(), "app.test", "/ws")
        .await
        .expect("WebSocket handshake");
    let mut tunnel = TcpStream::connect(backend.addr()).await.expect("connect");
    raw_request(
        &mut tunnel,
        "GET / HTTP/1.1\r\nhost: app.test\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n",
    )
    .await;
    assert!(backend.wait_open_sessions(3, WAIT).await);

    backend.abort_sessions();
    assert!(backend.wait_open_sessions(0, WAIT).await);
    for ws in [&mut first, &mut second] {
        let end = timeout(WAIT, ws.next()).await.expect("stream ends");
        assert!(
            !matches!(end, Some(Ok(Message::Close(_)))),
            "abort must not send a Close frame: {end:?}"
        );
    }
    let mut buf = [0u8; 8];
    let n = timeout(WAIT, tunnel.read(&mut buf))
        .await
        .expect("tunnel ends")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(backend.close_codes().is_empty());

    // Sessions opened afterwards are unaffected.
    let mut third = ws_connect(backend.addr(), "app.test", "/ws")
        .await
        .expect("WebSocket handshake");
    third.send(Message::text("whoami")).await.expect("send");
    assert_eq!(
        third.next().await.expect("reply").expect("frame"),
        Message::text("blue")
    );
    assert_eq!(backend.open_sessions(), 1);
}

#[tokio::test]
async fn wait_open_sessions_gives_up_at_the_deadline() {
    let backend = backend("blue").await;
    let started = Instant::now();
    assert!(!backend.wait_open_sessions(1, Duration::from_millis(50)).await);
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[tokio::test]
async fn dropping_the_backend_stops_its_listener_and_sessions() {
    let backend = backend("blue").await;
    let addr = backend.addr();
    let mut ws = ws_connect(addr, "app.test", "/ws")
        .await
        .expect("WebSocket handshake");
    assert!(backend.wait_open_sessions(1, WAIT).await);
    drop(backend);

    let end = timeout(WAIT, ws.next()).await.expect("session ends");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))));
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "listener still accepting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn refused_addr_refuses_connections() {
    let err = TcpStream::connect(refused_addr())
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}
