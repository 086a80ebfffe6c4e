//! Connections to replicas: opened with a timeout, kept alive between requests in a small per-replica cache.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tideway_config::ProxySettings;
use tideway_core::Replica;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::request_body::UpstreamBody;
use crate::signal::Signal;

/// A ready-to-use HTTP/1.1 connection to a replica, carrying client request bodies as they stream in.
pub(crate) type Sender = http1::SendRequest<UpstreamBody>;

/// How connections to replicas are opened and kept.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UpstreamSettings {
    /// Longest wait for a TCP connect before the replica counts as unreachable.
    pub(crate) connect_timeout: Duration,
    /// Idle connections kept per replica (0: a new connection per request).
    pub(crate) keepalive: usize,
    /// An idle connection older than this is not reused.
    pub(crate) idle_timeout: Duration,
}

/// What the data plane keeps per replica: idle keep-alive connections to reuse, and the signal that
/// closes the replica's connections when its drain runs out of time.
///
/// Hung on the replica itself ([`Replica::attachment`]) so it is found without a lookup and dropped with
/// the replica. Idle connections are last in, first out: the warmest is reused and the others age out.
/// The locks are per replica and held for a push or a pop only.
pub(crate) struct ReplicaLink {
    /// Connections HTTP/1.1 clients' requests went over, at a message boundary.
    streams: Mutex<Vec<(TcpStream, Instant)>>,
    /// Connections of hyper's client, which carries HTTP/2 clients' requests.
    idle: Mutex<Vec<(Sender, Instant)>>,
    evicted: Arc<Signal>,
}

impl ReplicaLink {
    /// The link of `replica`, created on first use.
    pub(crate) fn of(replica: &Replica) -> Option<&ReplicaLink> {
        replica.attachment(|| ReplicaLink {
            streams: Mutex::new(Vec::new()),
            idle: Mutex::new(Vec::new()),
            evicted: Arc::default(),
        })
    }

    /// The link of `replica`, if a connection ever went there.
    pub(crate) fn existing(replica: &Replica) -> Option<&ReplicaLink> {
        replica.existing_attachment()
    }

    /// Raised when the replica's connections must close: its drain ran out of time.
    pub(crate) fn evicted(&self) -> &Arc<Signal> {
        &self.evicted
    }

    /// Keeps a connection whose exchange ended at a message boundary for the next request.
    pub(crate) fn put_stream(&self, stream: TcpStream, settings: &UpstreamSettings) {
        let now = Instant::now();
        let mut idle = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        // Oldest first: those past the idle timeout are closed rather than kept open for nothing.
        let stale = idle
            .iter()
            .take_while(|(_, since)| now.saturating_duration_since(*since) >= settings.idle_timeout)
            .count();
        idle.drain(..stale);
        if idle.len() < settings.keepalive {
            idle.push((stream, now));
        }
    }

    /// The warmest kept connection that is still open and quiet.
    pub(crate) fn take_stream(&self, idle_timeout: Duration) -> Option<TcpStream> {
        loop {
            let (stream, since) = self
                .streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            if since.elapsed() < idle_timeout && is_quiet(&stream) {
                return Some(stream);
            }
        }
    }

    /// Returns a connection whose response ended, for the next request to the same replica.
    pub(crate) fn put(&self, sender: Sender, settings: &UpstreamSettings) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < settings.keepalive {
            idle.push((sender, Instant::now()));
        }
    }

    fn take(&self, idle_timeout: Duration) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < idle_timeout {
                return Some(sender);
            }
        }
        None
    }
}

/// An idle connection the replica has neither closed nor sent anything on: only those can carry a request.
///
/// Reads clear the socket's readiness once they drain it, so a quiet connection is told apart without a
/// system call; only readiness left from before asks the socket itself.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// A new connection to a replica, given up after `timeout`.
pub(crate) async fn connect_stream(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A connection to `replica`, and whether it was reused: a cached one if one is still good, else a new one.
///
/// A cached connection is only cached once its previous exchange ended both ways, so it is ready at once
/// or within the moment its connection task needs to notice; one that is not ready within the connect
/// timeout is dropped rather than waited for.
pub(crate) async fn checkout(replica: &Replica, settings: &UpstreamSettings) -> io::Result<(Sender, bool)> {
    if let Some(cache) = ReplicaLink::of(replica) {
        while let Some(mut sender) = cache.take(settings.idle_timeout) {
            if let Ok(Ok(())) = tokio::time::timeout(settings.connect_timeout, sender.ready()).await {
                return Ok((sender, true));
            }
        }
    }
    Ok((connect(replica.addr(), settings.connect_timeout).await?, false))
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Sender> {
    let stream = connect_stream(addr, timeout).await?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!(%addr, %error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

impl From<&ProxySettings> for UpstreamSettings {
    fn from(settings: &ProxySettings) -> Self {
        UpstreamSettings {
            connect_timeout: settings.upstream_connect_timeout,
            keepalive: settings.upstream_keepalive,
            idle_timeout: settings.upstream_idle_timeout,
        }
    }
}
