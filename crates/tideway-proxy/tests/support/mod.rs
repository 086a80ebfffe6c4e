//! A proxy on 127.0.0.1:0 in front of testkit backends, and the clients the tests drive it with.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tideway_config::{HostPattern, ProxySettings};
use tideway_core::{App, Policy, Replica, ReplicaState};
use tideway_proxy::{Proxy, ProxyMetrics, Route, RouteTable, RuntimeClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest any test waits for something that should happen quickly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// One clock for apps and proxies, as in the binary.
pub fn clock() -> RuntimeClock {
    static CLOCK: OnceLock<RuntimeClock> = OnceLock::new();
    *CLOCK.get_or_init(RuntimeClock::new)
}

/// A running proxy.
pub struct Proxied {
    pub addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    shutdown: CancellationToken,
    served: JoinHandle<io::Result<bool>>,
}

impl Proxied {
    pub async fn start(routes: Vec<Route>) -> Self {
        Self::start_with(settings(), routes).await
    }

    pub async fn start_with(settings: ProxySettings, routes: Vec<Route>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(ProxyMetrics::register(&prometheus::Registry::new()).expect("metrics"));
        let proxy = Arc::new(Proxy::new(
            settings,
            RouteTable::new(routes),
            tideway_proxy::CookieKeys::random(std::time::Duration::from_secs(86_400)).expect("randomness"),
            clock(),
            metrics,
            shutdown.clone(),
        ));
        let serving = Arc::clone(&proxy);
        let served = tokio::spawn(async move { serving.serve(listener, None).await });
        Proxied {
            addr,
            proxy,
            shutdown,
            served,
        }
    }

    /// Starts shutdown and returns the task that completes when the proxy has drained.
    pub fn shut_down(self) -> JoinHandle<io::Result<bool>> {
        self.shutdown.cancel();
        self.served
    }
}

/// Settings with short limits suited to tests.
pub fn settings() -> ProxySettings {
    ProxySettings {
        header_read_timeout: Duration::from_secs(5),
        keepalive_timeout: Duration::from_secs(30),
        ..ProxySettings::default()
    }
}

/// An app whose replicas are `addrs`, all ready.
pub fn app(name: &str, policy: Policy, addrs: &[SocketAddr]) -> Arc<App> {
    let app = App::new(name, policy, Arc::new(clock()));
    app.set_replicas(
        addrs
            .iter()
            .map(|a| {
                Arc::new(Replica::new(
                    a.to_string(),
                    *a,
                    ReplicaState::Ready,
                    clock().now(),
                ))
            })
            .collect(),
    );
    app
}

/// A route for `app` on `host` (and `prefix`, if any).
pub fn route(app: &Arc<App>, host: &str, prefix: Option<&str>) -> Route {
    Route {
        app: Arc::clone(app),
        hosts: vec![HostPattern::Exact(host.to_owned())],
        path_prefix: prefix.map(str::to_owned),
    }
}

/// Polls `check` every few milliseconds until it holds or [`PATIENCE`] runs out.
pub async fn eventually(what: &str, check: impl FnMut() -> bool) {
    tideway_testkit::eventually(what, PATIENCE, check).await;
}

/// Fails the test if `future` takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tideway_testkit::within(what, PATIENCE, future).await
}

/// Writes `request` on a fresh connection and reads everything until the proxy closes it (or the
/// response is complete, for `Connection: close` requests).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the proxy");
    stream.write_all(request).await.expect("send the request");
    let mut response = Vec::new();
    within(
        "the proxy closes the raw connection",
        stream.read_to_end(&mut response),
    )
    .await
    .expect("read the response");
    String::from_utf8_lossy(&response).into_owned()
}

/// The JSON a testkit backend echoes back.
pub fn echo(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).expect("a JSON echo from the backend")
}

/// A request body the test feeds as it likes (or not at all).
pub type Fed = BoxBody<Bytes, std::convert::Infallible>;

/// An HTTP/2 (prior knowledge) connection to the proxy, and the task driving it.
pub async fn http2(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    JoinHandle<hyper::Result<()>>,
) {
    http2_with(addr).await
}

/// An HTTP/2 connection whose requests carry bodies of type `B`, and the task driving it.
pub async fn http2_with<B>(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    JoinHandle<hyper::Result<()>>,
)
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.expect("connect to the proxy");
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    (sender, tokio::spawn(conn))
}

/// A GET over an HTTP/2 connection: status, headers and the whole body.
pub async fn http2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    authority: &str,
    path: &str,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let req = http::Request::get(format!("http://{authority}{path}"))
        .body(Empty::new())
        .expect("a valid request");
    let response = sender.send_request(req).await.expect("an HTTP/2 response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the whole body").to_bytes();
    (parts.status, parts.headers, body)
}
