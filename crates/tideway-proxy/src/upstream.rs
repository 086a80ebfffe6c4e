//! Connections to replicas: opened with a timeout, kept alive between requests in a small per-replica cache.

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tideway_core::Replica;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

/// A ready-to-use HTTP/1.1 connection to a replica, carrying client request bodies as they stream in.
pub(crate) type Sender = http1::SendRequest<Incoming>;

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

/// Idle keep-alive connections to one replica.
///
/// Hung on the replica itself ([`Replica::attachment`]) so it is found without a lookup and dropped with
/// the replica. Last in, first out: the warmest connection is reused and the others age out. The lock is
/// per replica and held for a push or a pop only.
#[derive(Default)]
pub(crate) struct UpstreamCache {
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl UpstreamCache {
    /// The cache of `replica`.
    pub(crate) fn of(replica: &Replica) -> Option<&UpstreamCache> {
        replica.attachment(UpstreamCache::default)
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

/// A connection to `replica`: a cached one if one is still good, else a new one.
///
/// A cached connection may still be finishing its previous exchange; waiting for it is short and cheaper
/// than a new connect. The error of a new connect is returned as is: the caller decides on another replica.
pub(crate) async fn checkout(replica: &Replica, settings: &UpstreamSettings) -> io::Result<Sender> {
    if let Some(cache) = UpstreamCache::of(replica) {
        while let Some(mut sender) = cache.take(settings.idle_timeout) {
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
    }
    connect(replica.addr(), settings.connect_timeout).await
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
