//! HTTP/1.1 client connections, served by tideway's own engine: a request head is parsed in place and
//! rewritten for the replica in one pass, bodies are relayed in their framing over pooled replica
//! connections, and an upgrade hands both sockets to a tunnel.
//!
//! A connection costs its socket and a small state between requests: its buffer is given back between
//! requests, and the state of an exchange is allocated only while one is in flight. The connection's
//! task is a plain future rather than an `async fn`, so that it holds exactly that: the connection, its
//! watch, and the exchange in flight if there is one.

mod exchange;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use pin_project_lite::pin_project;
use tideway_core::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;
use tracing::debug;

use crate::Shared;
use crate::client::ClientConn;
use crate::message::head::{self, Limits, RequestHead};
use crate::refusal::Refusal;
use crate::stream::ClientStream;
use crate::tunnel::TunnelTask;
use crate::watch::{Alarm, Watch};
use exchange::Next;

/// Room a connection's buffer starts with when the client sends (a usual request head fits); it grows to
/// `max_header_bytes` for a large head and is the unit of request body reads.
const BUFFER: usize = 4 * 1024;
/// How long a connection closed with a request body still coming keeps reading it, so that closing does
/// not reset the connection under the response the client has yet to read.
const LINGER: Duration = Duration::from_secs(2);
/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One client connection served as HTTP/1.1: what its exchanges work with.
struct Conn {
    shared: Arc<Shared>,
    client: Arc<ClientConn>,
    stream: ClientStream,
    /// Bytes read from the client and not yet handled; empty and unallocated between requests.
    buf: Vec<u8>,
    /// No request was read yet: the connection may still turn out to be HTTP/2.
    fresh: bool,
}

pin_project! {
    /// A client connection's task: reading the next request head, or running an exchange (which owns
    /// the connection meanwhile), always under the connection's watch.
    struct Connection {
        #[pin]
        watch: Watch,
        phase: Phase,
    }
}

enum Phase {
    /// Waiting for, and reading, the next request head.
    Reading(Conn),
    /// An exchange in flight; it gives the connection back when it ends.
    Exchange(Pin<Box<dyn Future<Output = (Conn, Next)> + Send>>),
    /// The connection's last act: an answer to a malformed request, or a lingering close.
    Closing(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// Over.
    Done,
}

/// What the client sent next.
enum Incoming {
    /// A complete request head, at the front of the buffer.
    Head(RequestHead),
    /// A head that cannot be served.
    Refused(Refusal),
    /// The HTTP/2 preface: the connection is HTTP/2 with prior knowledge.
    Http2,
    /// Nothing more: the client closed or failed, or the watch ended a keep-alive connection.
    End,
}

/// Serves one accepted plain client connection until it closes.
///
/// Not an `async fn`: the future returned is the engine's own, so the task of a connection between requests holds nothing
/// more than the engine needs.
pub(crate) fn accept(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
) -> impl Future<Output = ()> + Send {
    let accepted = shared.clock.now();
    no_delay(&stream, peer);
    // The first request head is due within the header read timeout from the accept.
    let client = ClientConn::new(shared.clock, peer, false, true, accepted);
    serve(shared, client, ClientStream::Plain(stream), true)
}

/// Serves a TLS connection whose client chose HTTP/1.1 (or named no protocol) until it closes; its first
/// head counts from `accepted`, so the handshake is within the slow-header limit.
pub(crate) fn serve_tls(
    shared: Arc<Shared>,
    stream: ClientStream,
    peer: SocketAddr,
    accepted: Timestamp,
) -> impl Future<Output = ()> + Send {
    let client = ClientConn::new(shared.clock, peer, true, true, accepted);
    // HTTP/2 over TLS is chosen through ALPN, never with a preface.
    serve(shared, client, stream, false)
}

/// Turns off Nagle's algorithm on a client socket: responses go out as soon as they are written.
pub(crate) fn no_delay(stream: &TcpStream, peer: SocketAddr) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "could not disable Nagle's algorithm");
    }
}

/// Serves `stream` until either side closes it; `fresh` when its first bytes may be the HTTP/2 preface.
fn serve(
    shared: Arc<Shared>,
    client: Arc<ClientConn>,
    stream: ClientStream,
    fresh: bool,
) -> impl Future<Output = ()> + Send {
    Connection {
        watch: Watch::new(&shared, &client),
        phase: Phase::Reading(Conn {
            shared,
            client,
            stream,
            buf: Vec::new(),
            fresh,
        }),
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            match this.phase {
                Phase::Reading(conn) => {
                    let incoming = ready!(conn.poll_incoming(cx, this.watch.as_mut()));
                    let Phase::Reading(conn) = std::mem::replace(this.phase, Phase::Done) else {
                        return Poll::Ready(());
                    };
                    *this.phase = match incoming {
                        Incoming::Head(head) => Phase::Exchange(Box::pin(exchange::run(conn, head))),
                        Incoming::Refused(refusal) => Phase::Closing(Box::pin(conn.refuse(refusal))),
                        Incoming::Http2 => {
                            conn.into_http2();
                            return Poll::Ready(());
                        }
                        Incoming::End => return Poll::Ready(()),
                    };
                }
                Phase::Exchange(exchange) => {
                    let Poll::Ready((conn, next)) = exchange.as_mut().poll(cx) else {
                        // The exchange sees a graceful close when it answers (`Connection: close`); a cut
                        // drops it with its seat and its record.
                        ready!(poll_cut(this.watch.as_mut(), cx));
                        this.watch.count_cut();
                        *this.phase = Phase::Done;
                        return Poll::Ready(());
                    };
                    *this.phase = match next {
                        Next::KeepAlive if !conn.client.is_closing() => {
                            if !conn.buf.is_empty() {
                                // The next head began during this exchange: its time limit starts now.
                                conn.client.on_read();
                            }
                            Phase::Reading(conn)
                        }
                        Next::KeepAlive | Next::Close => return Poll::Ready(()),
                        Next::CloseUnread => Phase::Closing(Box::pin(conn.linger())),
                        Next::Upgrade(tunnel) => {
                            let Conn {
                                shared, stream, buf, ..
                            } = conn;
                            let parts = tunnel.with_client((stream, Bytes::from(buf)), &shared);
                            shared.tasks.spawn(TunnelTask::new(parts, shared.clock));
                            return Poll::Ready(());
                        }
                    };
                }
                Phase::Closing(last) => {
                    if last.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                    ready!(poll_cut(this.watch.as_mut(), cx));
                    *this.phase = Phase::Done;
                    return Poll::Ready(());
                }
                Phase::Done => return Poll::Ready(()),
            }
        }
    }
}

/// Ready when the watch cuts the connection; a graceful close only marks it closing.
fn poll_cut(mut watch: Pin<&mut Watch>, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        match ready!(watch.as_mut().poll_alarm(cx)) {
            Alarm::Close => {}
            Alarm::Cut => return Poll::Ready(()),
        }
    }
}

impl Conn {
    /// Reads until a complete request head (or the HTTP/2 preface) is buffered. While the buffer is
    /// empty the connection is between requests: the buffer is given back, and a graceful close ends it at once.
    fn poll_incoming(&mut self, cx: &mut Context<'_>, mut watch: Pin<&mut Watch>) -> Poll<Incoming> {
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
                if self.buf[..preface] != PREFACE[..preface] {
                    self.fresh = false;
                } else if preface == PREFACE.len() {
                    return Poll::Ready(Incoming::Http2);
                }
            }
            if !self.fresh && !self.buf.is_empty() {
                match head::parse_request(&self.buf, limits, self.client.hop()) {
                    Ok(Some(head)) => return Poll::Ready(Incoming::Head(head)),
                    Ok(None) => {}
                    Err(refusal) => return Poll::Ready(Incoming::Refused(refusal)),
                }
            } else if self.buf.is_empty() && self.buf.capacity() > 0 {
                // Between requests: the buffer goes back until the client sends again.
                self.buf = Vec::new();
            }
            match ready!(self.poll_read_more(cx, watch.as_mut(), limits.max_bytes)) {
                Ok(0) | Err(()) => return Poll::Ready(Incoming::End),
                Ok(_) => self.client.on_read(),
            }
        }
    }

    /// Reads what the client sent next into the buffer, which is only allocated once the client sends.
    /// `Err` once the connection is over: the client closed or failed, or the watch ended it — a graceful
    /// close included, while no head is on its way.
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
            match ready!(watch.as_mut().poll_alarm(cx)) {
                Alarm::Close if self.buf.is_empty() => return Poll::Ready(Err(())),
                // A head is on its way: it is answered, with `Connection: close`.
                Alarm::Close => {}
                Alarm::Cut => return Poll::Ready(Err(())),
            }
        }
    }

    /// Answers a head that cannot be served, then closes: what the client sent after it is unread, so the
    /// close lingers for the answer to reach it.
    async fn refuse(mut self, refusal: Refusal) {
        if exchange::refuse(&mut self, refusal.status, refusal.text).await {
            self.linger().await;
        }
    }

    /// Hands a connection that opened with the HTTP/2 preface to the HTTP/2 server, in a task of its own.
    fn into_http2(self) {
        let (peer, accepted) = (self.client.peer(), self.client.accepted());
        let first = Bytes::from(self.buf);
        let shared = Arc::clone(&self.shared);
        let http2 = crate::h2::serve(self.shared, self.stream, peer, accepted, first);
        shared.tasks.spawn(http2);
    }

    /// Closes after a response while the client may still be sending a request body: stops writing, then
    /// reads what comes for a moment, so that the close does not reset the connection while the client has
    /// not read the response yet.
    async fn linger(mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let mut sink = vec![0u8; 4096];
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
    async fn a_connection_between_requests_holds_a_small_state() {
        let metrics = ProxyMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let clock = RuntimeClock::new();
        let proxy = Proxy::new(
            tideway_config::ProxySettings::default(),
            RouteTable::new(Vec::new()),
            crate::CookieKeys::random(std::time::Duration::from_secs(86_400)).expect("randomness"),
            clock,
            Arc::new(metrics),
            CancellationToken::new(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _peer = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        // A connection's task is as large as its state; exchanges are boxed apart.
        let task = accept(Arc::clone(&proxy.shared), stream, peer);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 400, "a connection's task state is {size} bytes");
    }
}
