//! The [`TestReplica`] handle, its accept loop and per-connection HTTP/1.1 serving.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::routes;
use crate::session::{State, stopped};

/// A fake app replica: HTTP/1.1 + WebSocket on `127.0.0.1:<ephemeral>`, stops when dropped.
///
/// Integration tests put one or more of these behind tideway and assert on what reached them.
pub struct TestReplica {
    state: Arc<State>,
    addr: SocketAddr,
    /// Dropped (and sent on) with the backend: every connection and session task watches it.
    shutdown: watch::Sender<()>,
    accept: JoinHandle<()>,
}

/// What every request handler of one TCP connection needs.
pub(crate) struct ConnCtx {
    pub(crate) state: Arc<State>,
    pub(crate) shutdown: watch::Receiver<()>,
    /// Notified by the `/abort` body: the connection task then drops the socket mid-response.
    pub(crate) kill: Notify,
    /// Set by `/drop-next`: the next request on this connection gets no answer, the socket is dropped.
    pub(crate) drop_next: AtomicBool,
}

/// An address on 127.0.0.1 where nothing listens (bind an ephemeral port, drop the listener): connects are refused.
///
/// Tests of "upstream refused" paths use it. If no port can be bound at all, it falls back to
/// `127.0.0.1:1` (tcpmux), which nothing listens on in practice.
pub fn refused_addr() -> SocketAddr {
    let fallback = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));
    StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .unwrap_or(fallback)
}

impl TestReplica {
    /// Binds `127.0.0.1:0` and starts serving; `name` shows up in `x-backend`, the JSON echo and `whoami`.
    pub async fn start(name: &str) -> io::Result<TestReplica> {
        Self::start_on(name, 0).await
    }

    /// Like [`TestReplica::start`], on `127.0.0.1:port` (a replica started by tideway's local orchestrator
    /// listens where `PORT` says).
    pub async fn start_on(name: &str, port: u16) -> io::Result<TestReplica> {
        Self::start_at(name, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
    }

    /// Like [`TestReplica::start`], on `addr` (a pod of the test cluster listens on an address of its own
    /// in 127.0.0.0/8, at its container's port).
    pub async fn start_at(name: &str, addr: SocketAddr) -> io::Result<TestReplica> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(name));
        let (shutdown, shutdown_rx) = watch::channel(());
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&state), shutdown_rx));
        Ok(TestReplica {
            state,
            addr,
            shutdown,
            accept,
        })
    }

    /// Where the backend listens, to put into tideway's upstream list.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name given to [`TestReplica::start`], to tell replicas apart in assertions.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// TCP connections accepted so far (tests of upstream keep-alive pooling compare it with requests sent).
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// WebSocket / raw-upgrade sessions currently open on this backend.
    ///
    /// A session is counted from just before its `101` is sent until its socket is dropped.
    pub fn open_sessions(&self) -> usize {
        self.state.open_sessions.load(Ordering::SeqCst)
    }

    /// Requests fully handled so far.
    ///
    /// A request counts once its handler has produced the response head (after reading the whole
    /// request body for the echo routes); streamed bodies may still be in flight.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Waits until `open_sessions() == n`, polling every few ms; returns `false` if `deadline` passes first.
    ///
    /// Sessions end asynchronously (after a close handshake, an EOF or [`TestReplica::abort_sessions`]), so
    /// tests wait for the count instead of reading it once.
    pub async fn wait_open_sessions(&self, n: usize, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        loop {
            if self.open_sessions() == n {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Closes every open WebSocket/raw session abruptly (TCP drop, no close frame): "upstream abort" tests.
    ///
    /// Sessions opened after this call are not affected. The sockets close asynchronously; use
    /// [`TestReplica::wait_open_sessions`] to wait for them.
    pub fn abort_sessions(&self) {
        self.state.abort.send_modify(|generation| *generation += 1);
    }

    /// Close codes of every WebSocket Close frame received from peers, in arrival order.
    ///
    /// tideway injects 1001 when it times a tunnel out; tests check the backend really received it.
    /// A Close frame without a code is recorded as 1005 (RFC 6455 "no status received").
    pub fn close_codes(&self) -> Vec<u16> {
        self.state.close_codes()
    }
}

impl Drop for TestReplica {
    fn drop(&mut self) {
        self.accept.abort();
        // Wakes every connection and session task; they drop their sockets and end.
        self.shutdown.send_replace(());
    }
}

impl std::fmt::Debug for TestReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestReplica")
            .field("name", &self.state.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, shutdown: watch::Receiver<()>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                state.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_connection(stream, Arc::clone(&state), shutdown.clone()));
            }
            // Typically EMFILE under load tests: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>, shutdown: watch::Receiver<()>) {
    // Best effort: small test responses should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let ctx = Arc::new(ConnCtx {
        state,
        shutdown: shutdown.clone(),
        kill: Notify::new(),
        drop_next: AtomicBool::new(false),
    });
    let service_ctx = Arc::clone(&ctx);
    let service = service_fn(move |req| routes::handle(Arc::clone(&service_ctx), req));
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        // Connection errors (client went away mid-request, ...) are the client's business in tests.
        _ = conn => {}
        // Dropping `conn` here closes the socket without finishing the response.
        () = ctx.kill.notified() => {}
        () = stopped(shutdown) => {}
    }
}
