//! Connections to replicas: opened with a timeout, kept alive between requests in a small per-replica cache.

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tideway_config::ProxySettings;
use tideway_core::Replica;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::request_body::UpstreamBody;

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
/// closes the replica's tunnels (cancelled at shutdown, or when a drain runs out of time).
///
/// Hung on the replica itself ([`Replica::attachment`]) so it is found without a lookup and dropped with
/// the replica. Idle connections are last in, first out: the warmest is reused and the others age out.
/// The lock is per replica and held for a push or a pop only.
pub(crate) struct ReplicaLink {
    idle: Mutex<Vec<(Sender, Instant)>>,
    closing: CancellationToken,
}

impl ReplicaLink {
    /// The link of `replica`, created on first use; its tunnels close when `shutdown` is cancelled.
    pub(crate) fn of<'r>(replica: &'r Replica, shutdown: &CancellationToken) -> Option<&'r ReplicaLink> {
        replica.attachment(|| ReplicaLink {
            idle: Mutex::new(Vec::new()),
            closing: shutdown.child_token(),
        })
    }

    /// The link of `replica`, if a connection ever went there.
    pub(crate) fn existing(replica: &Replica) -> Option<&ReplicaLink> {
        replica.existing_attachment()
    }

    /// Cancelled when the replica's tunnels must close.
    pub(crate) fn closing(&self) -> &CancellationToken {
        &self.closing
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

/// A connection to `replica`, and whether it was reused: a cached one if one is still good, else a new one.
///
/// A cached connection is only cached once its previous exchange ended both ways, so it is ready at once
/// or within the moment its connection task needs to notice; one that is not ready within the connect
/// timeout is dropped rather than waited for.
pub(crate) async fn checkout(
    replica: &Replica,
    settings: &UpstreamSettings,
    shutdown: &CancellationToken,
) -> io::Result<(Sender, bool)> {
    if let Some(cache) = ReplicaLink::of(replica, shutdown) {
        while let Some(mut sender) = cache.take(settings.idle_timeout) {
            if let Ok(Ok(())) = tokio::time::timeout(settings.connect_timeout, sender.ready()).await {
                return Ok((sender, true));
            }
        }
    }
    Ok((connect(replica.addr(), settings.connect_timeout).await?, false))
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Sender> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
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
