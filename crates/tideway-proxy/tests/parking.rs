//! Idle HTTP/1.1 keep-alive connections are parked (their HTTP state dropped) and woken by the client's
//! next bytes: nothing about this may be visible to the client.

mod support;

use std::time::Duration;

use tideway_core::Policy;
use tideway_testkit::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

async fn response(stream: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 8192];
    let n = within("a response", stream.read(&mut buf)).await.expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_parked_connection_serves_its_next_request_even_in_pieces() {
    let backend = Backend::start("a").await.expect("backend");
    let app_a = app("a", Policy::default(), &[backend.addr()]);
    let proxy = Proxied::start(vec![route(&app_a, "site.test", None)]).await;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET /1 HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("request");
    assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));

    eventually("the idle connection is parked", || {
        proxy.metrics.parked_connections() == 1
    })
    .await;
    stream
        .write_all(b"GET /2 HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("request");
    let second = response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains(r#""path":"/2""#), "{second}");
    assert_eq!(proxy.metrics.parked_connections(), 0, "woken by the request");

    eventually("parked again", || proxy.metrics.parked_connections() == 1).await;
    stream
        .write_all(b"GET /3 HTTP/1.1\r\nHo")
        .await
        .expect("half a head");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream
        .write_all(b"st: site.test\r\n\r\n")
        .await
        .expect("the rest");
    let third = response(&mut stream).await;
    assert!(third.contains(r#""path":"/3""#), "{third}");
    assert_eq!(backend.requests(), 3);
}

#[tokio::test]
async fn limits_still_apply_to_parked_connections() {
    let backend = Backend::start("a").await.expect("backend");
    let app_a = app("a", Policy::default(), &[backend.addr()]);
    let settings = tideway_config::ProxySettings {
        keepalive_timeout: Duration::from_secs(2),
        ..settings()
    };
    let proxy = Proxied::start_with(settings, vec![route(&app_a, "site.test", None)]).await;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("request");
    assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    let read = within(
        "keepalive_timeout closes the parked connection",
        stream.read_to_end(&mut rest),
    )
    .await;
    assert!(read.is_err() || rest.is_empty());
    assert_eq!(proxy.metrics.parked_connections(), 0);

    // And shutdown closes parked connections at once.
    let mut parked = TcpStream::connect(proxy.addr).await.expect("connect");
    parked
        .write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("request");
    assert!(response(&mut parked).await.starts_with("HTTP/1.1 200"));
    eventually("parked", || proxy.metrics.parked_connections() == 1).await;
    let served = proxy.shut_down();
    let mut rest = Vec::new();
    let read = within(
        "shutdown closes the parked connection",
        parked.read_to_end(&mut rest),
    )
    .await;
    assert!(read.is_err() || rest.is_empty());
    assert!(
        within("serve returns", served)
            .await
            .expect("task")
            .expect("serve")
    );
}
