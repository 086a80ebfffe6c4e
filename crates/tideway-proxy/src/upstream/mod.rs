//! Connections to replicas, whichever protocol the client speaks: opened with a timeout, kept alive
//! between requests in one small pool per replica, and given up or retried by one policy ([`attempt`]).

mod attempt;

pub(crate) use attempt::{Again, Attempts, ReplicaConn};

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tideway_config::ProxySettings;
use tideway_core::Replica;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::broadcast::Broadcast;
use crate::clock::later;

/// How connections to replicas are opened and kept.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UpstreamSettings {
    /// Longest wait for a TCP connect before the replica counts as unreachable.
    pub(crate) connect_timeout: Duration,
    /// Connections kept alive per replica (0: a new connection per request).
    pub(crate) keepalive: usize,
    /// A kept connection older than this is not reused.
    pub(crate) keepalive_timeout: Duration,
}

/// What the data plane keeps per replica: connections kept alive to reuse, and the signal that
/// closes the replica's connections when its drain runs out of time.
///
/// Kept in [`crate::links::Links`] from the replica's first connection on. Kept connections are last in,
/// first out: the warmest is reused and the others age out. The locks are per replica and held for a push
/// or a pop only.
pub(crate) struct ReplicaLink {
    /// Connections kept alive for the next request, each at a message boundary.
    kept: Mutex<Vec<(TcpStream, Instant)>>,
    evicted: Arc<Broadcast>,
    /// Whether a task is waiting to close the kept connections that outlive the keep-alive timeout.
    reaping: AtomicBool,
}

impl ReplicaLink {
    /// The link of a replica no connection has gone to yet.
    pub(crate) fn new() -> Self {
        ReplicaLink {
            kept: Mutex::new(Vec::new()),
            evicted: Arc::default(),
            reaping: AtomicBool::new(false),
        }
    }

    /// Raised when the replica's connections must close: its drain ran out of time.
    pub(crate) fn evicted(&self) -> &Arc<Broadcast> {
        &self.evicted
    }

    /// Keeps a connection of `replica` whose exchange ended at a message boundary for the next request.
    pub(crate) fn put(
        self: &Arc<Self>,
        replica: &Arc<Replica>,
        stream: TcpStream,
        settings: &UpstreamSettings,
    ) {
        let now = Instant::now();
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        expire(&mut kept, now, settings.keepalive_timeout);
        if kept.len() < settings.keepalive {
            kept.push((stream, now));
        }
        drop(kept);
        self.reap_later(replica, settings.keepalive_timeout);
    }

    /// The warmest kept connection that is still open and quiet.
    pub(crate) fn take(&self, keepalive_timeout: Duration) -> Option<TcpStream> {
        loop {
            let (stream, since) = self.kept.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
            if since.elapsed() < keepalive_timeout && is_quiet(&stream) {
                return Some(stream);
            }
        }
    }

    /// Makes sure kept connections are closed once they outlive `keepalive_timeout`, even if no request comes
    /// to take them: one task per replica, only while it keeps connections. It holds the replica and
    /// the link weakly: once the replica is gone, its connections are closed at the next wake.
    fn reap_later(self: &Arc<Self>, replica: &Arc<Replica>, keepalive_timeout: Duration) {
        if self.reaping.swap(true, Ordering::AcqRel) {
            return;
        }
        let replica = Arc::downgrade(replica);
        let link = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let next = link.upgrade().and_then(|link| {
                    let timeout = if replica.strong_count() > 0 {
                        keepalive_timeout
                    } else {
                        Duration::ZERO
                    };
                    link.reap(timeout)
                });
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => return,
                }
            }
        });
    }

    /// Closes the kept connections past `keepalive_timeout`; returns when the next one will be, or `None`
    /// (and stops reaping) once none is left.
    fn reap(&self, keepalive_timeout: Duration) -> Option<Instant> {
        let mut streams = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        expire(&mut streams, Instant::now(), keepalive_timeout);
        let next = streams.first().map(|(_, since)| later(*since, keepalive_timeout));
        if next.is_none() {
            // Under the lock: a connection put from now on starts a new reaper.
            self.reaping.store(false, Ordering::Release);
        }
        next
    }
}

/// Closes the kept connections (oldest first) that are past `keepalive_timeout` at `now`.
fn expire(kept: &mut Vec<(TcpStream, Instant)>, now: Instant, keepalive_timeout: Duration) {
    let stale = kept
        .iter()
        .take_while(|(_, since)| now.saturating_duration_since(*since) >= keepalive_timeout)
        .count();
    kept.drain(..stale);
}

/// A kept connection the replica has neither closed nor sent anything on: only those can carry a request.
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

/// Room for reading a replica's response at first: a usual head and small body in one read. It doubles,
/// up to [`MAX_READ_BUFFER`], while reads fill it, so a large body moves in few system calls and a small
/// response holds little memory.
pub(crate) const READ_BUFFER: usize = 4 * 1024;
/// The most room a replica's response is read into at once.
pub(crate) const MAX_READ_BUFFER: usize = 64 * 1024;

/// Reads what `stream` has into `buf` (growing it by the rule of [`READ_BUFFER`]): the bytes read, 0 at
/// the end of the stream. A read that leaves the socket empty clears its readiness, so a pooled connection
/// is later told quiet without a system call.
pub(crate) fn poll_read_into(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() == buf.len() {
        let room = buf.capacity().clamp(READ_BUFFER, MAX_READ_BUFFER);
        buf.reserve(room);
    }
    tokio_util::io::poll_read_buf(std::pin::Pin::new(stream), cx, buf)
}

/// A new connection to a replica, given up after `timeout`.
pub(crate) async fn connect_stream(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl From<&ProxySettings> for UpstreamSettings {
    fn from(settings: &ProxySettings) -> Self {
        UpstreamSettings {
            connect_timeout: settings.upstream_connect_timeout,
            keepalive: settings.upstream_keepalive,
            keepalive_timeout: settings.upstream_keepalive_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use tideway_core::{ReplicaState, Timestamp};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(10);

    /// A replica listening on 127.0.0.1, and the task that reports each of its connections' end.
    async fn replica() -> (Arc<Replica>, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (ended, ends) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let ended = ended.clone();
                tokio::spawn(async move {
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                    let _ = ended.send(());
                });
            }
        });
        let replica = Replica::new("r-1", addr, ReplicaState::Ready, Timestamp::ZERO);
        (Arc::new(replica), ends)
    }

    fn settings(keepalive_timeout: Duration) -> UpstreamSettings {
        UpstreamSettings {
            connect_timeout: PATIENCE,
            keepalive: 8,
            keepalive_timeout,
        }
    }

    #[tokio::test]
    async fn kept_connections_are_closed_once_they_outlive_the_keepalive_timeout_unasked() {
        let (replica, mut ends) = replica().await;
        let link = Arc::new(ReplicaLink::new());
        let settings = settings(Duration::from_millis(200));
        let stream = connect_stream(replica.addr(), PATIENCE).await.expect("connect");
        link.put(&replica, stream, &settings);

        tokio::time::timeout(PATIENCE, ends.recv())
            .await
            .expect("the kept connection is closed without a request coming for it");
        assert!(link.take(settings.keepalive_timeout).is_none());
        assert!(!link.reaping.load(Ordering::Acquire), "nothing left to reap");
    }

    #[tokio::test]
    async fn a_connection_within_the_keepalive_timeout_stays() {
        let (replica, mut ends) = replica().await;
        let link = Arc::new(ReplicaLink::new());
        let settings = settings(PATIENCE * 6);
        let stream = connect_stream(replica.addr(), PATIENCE).await.expect("connect");
        link.put(&replica, stream, &settings);
        assert!(ends.try_recv().is_err());
        assert!(link.take(settings.keepalive_timeout).is_some());
    }
}
