//! `affinity = "cookie"`: a session's connections go to one replica and count once, for as long as any is
//! open and for `reconnect_grace` after.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tideway_core::{Affinity, Policy};
use tideway_testkit::Backend;
use tideway_testkit::tokio_tungstenite::client_async;
use tideway_testkit::tungstenite::client::IntoClientRequest;
use tokio::net::TcpStream;

use support::*;

fn sticky(max_connections: u32, grace_ms: u64) -> Policy {
    Policy {
        max_connections,
        affinity: Affinity::Cookie,
        reconnect_grace: Duration::from_millis(grace_ms),
        ..Policy::default()
    }
}

/// A GET carrying `cookie`: the replica that answered and the session cookie issued, if any.
async fn get(addr: SocketAddr, cookie: Option<&str>) -> (String, Option<String>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::get("/").header("host", "site.test");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let response = sender
        .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let backend = response.headers()["x-backend"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let issued = response.headers().get("set-cookie").map(|c| {
        c.to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_owned()
    });
    response.into_body().collect().await.expect("body");
    (backend, issued)
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

#[tokio::test]
async fn a_session_sticks_to_its_replica_and_counts_once() {
    let (a, b) = (
        Backend::start("a").await.expect("a"),
        Backend::start("b").await.expect("b"),
    );
    let app_a = app("app", sticky(5, 300), &[a.addr(), b.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let (home, cookie) = get(proxy.addr, None).await;
    let cookie = cookie.expect("a session cookie is issued");
    assert!(cookie.starts_with("tideway-app="), "{cookie}");
    assert_eq!(
        app_a.connections(),
        1,
        "the session keeps its seat between requests"
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
    assert_eq!(app_a.session_count(), 0);
}

#[tokio::test]
async fn forged_cookies_get_a_new_session() {
    let a = Backend::start("a").await.expect("a");
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

#[tokio::test]
async fn a_session_cannot_hold_more_than_max_connections_on_one_seat() {
    let a = Backend::start("a").await.expect("a");
    let app_a = app("app", sticky(2, 60_000), &[a.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let (_, cookie) = get(proxy.addr, None).await;
    let cookie = cookie.expect("cookie");
    let _first = ws_with_cookie(proxy.addr, &cookie).await;
    let _second = ws_with_cookie(proxy.addr, &cookie).await;
    assert_eq!(app_a.connections(), 1);
    let _third = ws_with_cookie(proxy.addr, &cookie).await;
    assert_eq!(
        app_a.connections(),
        2,
        "beyond max_connections a session's connection takes its own seat"
    );
}
