//! HTTP/1.1 client connections, served by tideway's own engine: a request head is parsed in place and
//! rewritten for the replica in one pass, bodies are relayed in their framing over pooled replica
//! connections, and an upgrade hands both sockets to a tunnel.
//!
//! A connection costs its socket and a small state while it is idle: its buffer is given back between
//! requests, and the state of an exchange lives only while one is in flight.

mod exchange;
mod framing;
mod head;

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;
use tracing::debug;

use crate::Shared;
use crate::client::ClientConn;
use crate::tunnel::TunnelTask;
use crate::watch::{Alarm, Watch};
use exchange::Next;
use head::{Limits, RequestHead};

/// Room a connection's buffer starts with when the client sends; it grows to `max_header_bytes` for a
/// head and is the unit of body reads.
const BUFFER: usize = 8 * 1024;
/// How long a connection closed with a request body still coming keeps reading it, so that closing does
/// not reset the connection under the response the client has yet to read.
const LINGER: Duration = Duration::from_secs(2);

/// One client connection served as HTTP/1.1.
struct Conn {
    shared: Arc<Shared>,
    client: Arc<ClientConn>,
    stream: TcpStream,
    /// Bytes read from the client and not yet handled; empty and unallocated while idle.
    buf: Vec<u8>,
    /// No request was read yet: the connection may still turn out to be HTTP/2.
    fresh: bool,
}

/// What the client sent next.
enum Incoming {
    /// A complete request head, at the front of the buffer.
    Head(RequestHead),
    /// The HTTP/2 preface: the connection is HTTP/2 with prior knowledge.
    Http2,
}

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `stream` until either side closes it.
///
/// Not an `async fn`: its arguments would be kept in the task's state for its whole life, next to the
/// connection that holds them.
pub(crate) fn serve(
    shared: Arc<Shared>,
    client: Arc<ClientConn>,
    stream: TcpStream,
) -> impl Future<Output = ()> {
    Conn {
        shared,
        client,
        stream,
        buf: Vec::new(),
        fresh: true,
    }
    .run()
}

impl Conn {
    async fn run(mut self) {
        let mut watch = pin!(Watch::new(&self.shared, &self.client));
        loop {
            // Boxed: the state of an exchange is allocated only while one is in flight.
            let exchange = match self.next_head(watch.as_mut()).await {
                Some(Incoming::Head(head)) => Box::pin(exchange::run(&mut self, head, watch.as_mut())),
                Some(Incoming::Http2) => return self.into_http2().await,
                None => return,
            };
            match exchange.await {
                Next::KeepAlive if !self.client.is_closing() => {}
                Next::KeepAlive | Next::Close => return,
                Next::CloseUnread => return Box::pin(self.linger()).await,
                Next::Upgrade(tunnel) => {
                    let Conn {
                        shared, stream, buf, ..
                    } = self;
                    let parts = tunnel.with_client((stream, Bytes::from(buf)), &shared);
                    shared.tasks.spawn(TunnelTask::new(parts, shared.clock));
                    return;
                }
            }
        }
    }

    /// Hands a connection that opened with the HTTP/2 preface to the HTTP/2 server. A plain function that
    /// boxes: built inside an `async fn`, the HTTP/2 state would take room in every connection's task.
    fn into_http2(self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let (peer, accepted) = (self.client.peer(), self.client.accepted());
        let first = Bytes::from(self.buf);
        Box::pin(crate::connection::serve_http2(
            self.shared,
            self.stream,
            peer,
            accepted,
            first,
        ))
    }

    /// Reads until a complete request head (or the HTTP/2 preface) is buffered; `None` once the connection
    /// is over (closed, timed out, or answered with an error).
    async fn next_head(&mut self, mut watch: Pin<&mut Watch>) -> Option<Incoming> {
        let limits = {
            let settings = self.shared.settings.load();
            Limits {
                max_bytes: settings.max_header_bytes,
                max_fields: settings.max_headers,
            }
        };
        loop {
            if self.fresh && !self.buf.is_empty() {
                let preface = self.buf.len().min(PREFACE.len());
                if self.buf[..preface] == PREFACE[..preface] {
                    if preface == PREFACE.len() {
                        return Some(Incoming::Http2);
                    }
                } else {
                    self.fresh = false;
                }
            }
            if !self.fresh && !self.buf.is_empty() {
                // Decided before any await, so that a parsed head is not part of the waiting state.
                let refusal = match head::parse_request(&self.buf, limits, self.client.peer().ip()) {
                    Ok(Some(head)) => return Some(Incoming::Head(head)),
                    Ok(None) => None,
                    Err(refusal) => Some(refusal),
                };
                if let Some(refusal) = refusal {
                    // The rest of what the client sent is unread: linger so the refusal reaches it.
                    // Boxed, like every rare path, so that it does not add to an idle connection's state.
                    if Box::pin(exchange::refuse(self, refusal.status, refusal.text, watch)).await {
                        Box::pin(self.linger()).await;
                    }
                    return None;
                }
            } else if self.buf.is_empty() && self.buf.capacity() > 0 {
                // Idle between requests: the buffer goes back until the client sends again.
                self.buf = Vec::new();
            }
            match poll_fn(|cx| self.poll_read_more(cx, watch.as_mut(), limits.max_bytes)).await {
                Ok(0) | Err(()) => return None,
                Ok(_) => self.client.on_read(),
            }
        }
    }

    /// Reads what the client sent next into the buffer, which is only allocated once the client sends.
    /// `Err` once the connection is over: the client closed or failed, or the watch ended it — a graceful
    /// close included, while no request is in flight.
    fn poll_read_more(
        &mut self,
        cx: &mut Context<'_>,
        mut watch: Pin<&mut Watch>,
        max: usize,
    ) -> Poll<Result<usize, ()>> {
        loop {
            let ready = !self.buf.is_empty() || self.stream.poll_read_ready(cx).is_ready();
            if ready {
                if self.buf.capacity() == self.buf.len() {
                    self.buf.reserve(BUFFER.min(max));
                }
                match poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf) {
                    Poll::Ready(Ok(read)) => return Poll::Ready(Ok(read)),
                    Poll::Ready(Err(error)) => {
                        debug!(peer = %self.client.peer(), %error, "client connection failed");
                        return Poll::Ready(Err(()));
                    }
                    Poll::Pending => {}
                }
            }
            match watch.as_mut().poll_alarm(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Alarm::Close) if self.buf.is_empty() => return Poll::Ready(Err(())),
                // A head is on its way: it is answered, with `Connection: close`.
                Poll::Ready(Alarm::Close) => continue,
                Poll::Ready(Alarm::Cut) => return Poll::Ready(Err(())),
            }
        }
    }

    /// Closes after a response while the client may still be sending a request body: stops writing, then
    /// reads what comes for a moment, so that the close does not reset the connection while the client has
    /// not read the response yet.
    async fn linger(&mut self) {
        use tokio::io::AsyncWriteExt;
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        let discard = async { while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(LINGER, discard).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{Proxy, ProxyMetrics, RouteTable, RuntimeClock};

    #[tokio::test]
    async fn an_idle_connection_holds_under_a_kilobyte_of_state() {
        let metrics = ProxyMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let clock = RuntimeClock::new();
        let proxy = Proxy::new(
            tideway_config::ProxySettings::default(),
            RouteTable::new(Vec::new()),
            clock,
            Arc::new(metrics),
            CancellationToken::new(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _peer = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        // The task of a connection is as large as its largest state; exchanges are boxed apart.
        let task = crate::connection::serve(Arc::clone(&proxy.shared), stream, peer);
        let size = std::mem::size_of_val(&task);
        assert!(size < 1024, "a connection's task state is {size} bytes");
    }
}
