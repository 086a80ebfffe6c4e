//! `affinity = "cookie"`: a session's connections all go to its replica and count once there; a session
//! is tentative until its client sends the cookie back, and only a confirmed one keeps its seat for
//! `reconnect_grace` after its last connection.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tideway_core::{Affinity, Policy};
use tideway_testkit::TestReplica;
use tideway_testkit::tokio_tungstenite::client_async;
use tideway_testkit::tungstenite::client::IntoClientRequest;
use tokio::net::TcpStream;

use support::*;

fn sticky(max_connections: u32, grace_ms: u64) -> Policy {
    Policy {
        max_connections,
        affinity: Affinity::Cookie,
        reconnect_grace: Duration::from_millis(grace_ms),
        queue_timeout: Duration::from_millis(300),
        ..Policy::default()
    }
}

/// A GET carrying `cookie`: the replica that answered and the session cookie issued, if any.
async fn get(addr: SocketAddr, cookie: Option<&str>) -> (String, Option<String>) {
    get_path(addr, "/", cookie).await
}

/// A GET of `path` carrying `cookie`; it must succeed.
async fn get_path(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (String, Option<String>) {
    let (status, backend, issued) = try_get(addr, path, cookie).await;
    assert_eq!(status, 200);
    (backend.expect("a replica answered"), issued)
}

/// A GET of `path` carrying `cookie`: the status, the replica that answered (if one did) and the session
/// cookie issued, if any.
async fn try_get(
    addr: SocketAddr,
    path: &str,
    cookie: Option<&str>,
) -> (u16, Option<String>, Option<String>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", "site.test");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let response = sender
        .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("response");
    let status = response.status().as_u16();
    let backend = response
        .headers()
        .get("x-backend")
        .map(|b| b.to_str().expect("ascii").to_owned());
    let issued = response.headers().get("set-cookie").map(|c| {
        c.to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_owned()
    });
    response.into_body().collect().await.expect("body");
    (status, backend, issued)
}

async fn ws_with_cookie(
    addr: SocketAddr,
    cookie: &str,
) -> tideway_testkit::tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut req = "ws://site.test/ws".into_client_request().expect("request");
    req.headers_mut()
        .insert("cookie", cookie.parse().expect("header"));
    let stream = TcpStream::connect(addr).await.expect("connect");
    client_async(req, stream).await.expect("websocket").0
}

/// Starts a session and sends its cookie back once, as a browser does with its second request.
async fn confirmed_session(addr: SocketAddr) -> (String, String) {
    let (home, cookie) = get(addr, None).await;
    let cookie = cookie.expect("a session cookie is issued");
    let (again, issued) = get(addr, Some(&cookie)).await;
    assert_eq!(again, home);
    assert_eq!(issued, None);
    (home, cookie)
}

#[tokio::test]
async fn a_session_sticks_to_its_replica_and_counts_once() {
    let (a, b) = (
        TestReplica::start("a").await.expect("a"),
        TestReplica::start("b").await.expect("b"),
    );
    let app_a = app("app", sticky(5, 300), &[a.addr(), b.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let (home, cookie) = get(proxy.addr, None).await;
    let cookie = cookie.expect("a session cookie is issued");
    assert!(cookie.starts_with("tideway-app="), "{cookie}");
    assert_eq!(
        app_a.connections(),
        0,
        "a tentative session gives its seat back with its last connection"
    );

    let ws = ws_with_cookie(proxy.addr, &cookie).await;
    for _ in 0..6 {
        let (backend, issued) = get(proxy.addr, Some(&cookie)).await;
        assert_eq!(
            backend, home,
            "every connection of the session goes to its replica"
        );
        assert_eq!(issued, None, "a live session is not reissued");
    }
    assert_eq!(
        app_a.connections(),
        1,
        "a WebSocket and requests of one session hold one seat"
    );
    let other = if home == "a" { &b } else { &a };
    assert_eq!(other.requests(), 0);

    drop(ws);
    eventually("the grace passes and the seat is released", || {
        app_a.connections() == 0
    })
    .await;
    eventually("the session is forgotten", || app_a.session_count() == 0).await;
}

#[tokio::test]
async fn clients_that_ignore_cookies_hold_no_seat_after_their_request() {
    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("app", sticky(1, 60_000), &[a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    for _ in 0..5 {
        let (status, _, issued) = try_get(proxy.addr, "/", None).await;
        assert_eq!(
            status, 200,
            "a one-seat app still serves a client that drops its cookies"
        );
        assert!(issued.is_some());
    }
    assert_eq!(app_a.connections(), 0);
    assert_eq!(app_a.session_counts().confirmed, 0);
}

#[tokio::test]
async fn all_connections_of_a_session_reach_its_replica_and_hold_one_seat() {
    let (a, b) = (
        TestReplica::start("a").await.expect("a"),
        TestReplica::start("b").await.expect("b"),
    );
    let app_a = app("app", sticky(1, 60_000), &[a.addr(), b.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;
    let (home, cookie) = confirmed_session(proxy.addr).await;

    // A browser loading a page: six connections at once, each a slow request, and a WebSocket.
    let _ws = ws_with_cookie(proxy.addr, &cookie).await;
    let accepted = a.accepted() + b.accepted();
    let loads: Vec<_> = (0..6)
        .map(|_| {
            let cookie = cookie.clone();
            tokio::spawn(async move { try_get(proxy.addr, "/delay?ms=500", Some(&cookie)).await })
        })
        .collect();
    // One of them may reuse the kept-alive replica connection; the others need connections of their own.
    eventually("the six requests are in flight", || {
        a.accepted() + b.accepted() >= accepted + 5
    })
    .await;
    assert_eq!(
        app_a.connections(),
        1,
        "one session, one seat, however many connections"
    );
    assert_eq!(app_a.demand(), 1, "extra connections of a session are not demand");
    for load in loads {
        let (status, backend, _) = load.await.expect("request task");
        assert_eq!(status, 200);
        assert_eq!(backend.as_deref(), Some(home.as_str()));
    }
}

/// A confirmed session of an app on one replica whose sessions may hold `max_session_connections`.
async fn limited_session(
    max_session_connections: u32,
) -> (TestReplica, Arc<tideway_core::App>, Proxied, String) {
    let a = TestReplica::start("a").await.expect("a");
    let policy = Policy {
        max_session_connections,
        ..sticky(5, 60_000)
    };
    let app_a = app("app", policy, &[a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;
    let (_, cookie) = confirmed_session(proxy.addr).await;
    (a, app_a, proxy, cookie)
}

#[tokio::test]
async fn past_max_session_connections_a_connection_waits_for_its_session() {
    let (a, app_a, proxy, cookie) = limited_session(2).await;

    let first = ws_with_cookie(proxy.addr, &cookie).await;
    let _second = ws_with_cookie(proxy.addr, &cookie).await;
    let third = {
        let cookie = cookie.clone();
        tokio::spawn(async move { ws_with_cookie(proxy.addr, &cookie).await })
    };
    eventually("two WebSockets are open", || a.open_sessions() == 2).await;
    assert!(
        !third.is_finished(),
        "the third connection waits in its session's queue"
    );
    assert_eq!(app_a.connections(), 1);
    assert_eq!(app_a.queued(), 0, "it is not in the app's queue");
    drop(first);
    let _third = within("the third WebSocket opens once one closed", third)
        .await
        .expect("task");
    eventually("two WebSockets are open again", || a.open_sessions() == 2).await;
}

#[tokio::test]
async fn a_session_whose_queue_is_full_or_slow_gets_503_with_retry_after() {
    let (_a, app_a, proxy, cookie) = limited_session(1).await;

    let _ws = ws_with_cookie(proxy.addr, &cookie).await;
    let request =
        format!("GET / HTTP/1.1\r\nHost: site.test\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n");
    let answer = raw(proxy.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert_eq!(
        app_a.stats().rejected(tideway_core::RejectReason::SessionLimit),
        1
    );
}

#[tokio::test]
async fn a_session_whose_replica_is_gone_is_placed_again_and_its_cookie_reissued() {
    let (a, b) = (
        TestReplica::start("a").await.expect("a"),
        TestReplica::start("b").await.expect("b"),
    );
    let app_a = app("app", sticky(5, 60_000), &[a.addr(), b.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;
    let (home, cookie) = confirmed_session(proxy.addr).await;

    let remaining: Vec<_> = app_a
        .replicas()
        .iter()
        .filter(|r| r.name() != (if home == "a" { a.addr() } else { b.addr() }).to_string())
        .cloned()
        .collect();
    app_a.set_replicas(remaining);
    let (moved, issued) = get(proxy.addr, Some(&cookie)).await;
    assert_ne!(moved, home);
    let issued = issued.expect("the cookie is written again");
    let session = |cookie: &str| cookie.split('.').next().map(str::to_owned);
    assert_eq!(session(&issued), session(&cookie), "the same session");
    assert_ne!(issued, cookie, "naming its new replica");
    let (again, reissued) = get(proxy.addr, Some(&issued)).await;
    assert_eq!(again, moved, "the session lives on its new replica");
    assert_eq!(reissued, None);
    let (stale, rewritten) = get(proxy.addr, Some(&cookie)).await;
    assert_eq!(stale, moved, "this instance knows where the session lives");
    // Session and replica, the fields before the expiry.
    let placed = |cookie: &str| cookie.split('.').take(2).collect::<Vec<_>>().join(".");
    let rewritten = rewritten.expect("a stale cookie is rewritten");
    assert_eq!(
        placed(&rewritten),
        placed(&issued),
        "to name the replica the session lives on"
    );
    assert_eq!(app_a.connections(), 1);
}

#[tokio::test]
async fn forged_cookies_get_a_new_session() {
    let a = TestReplica::start("a").await.expect("a");
    let app_a = app("app", sticky(5, 60_000), &[a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let forged = "tideway-app=0123456789abcdef0123456789abcdef";
    let (_, issued) = get(proxy.addr, Some(forged)).await;
    let issued = issued.expect("a fresh session");
    assert_ne!(issued, forged);
    let (_, garbage) = get(proxy.addr, Some("tideway-app=<script>")).await;
    assert!(garbage.is_some());
    assert_eq!(app_a.session_count(), 2);
}
