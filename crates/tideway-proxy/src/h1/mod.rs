//! HTTP/1.1 client connections, served by tideway's own engine: a request head is parsed in place and
//! rewritten for the replica in one pass, bodies are relayed in their framing over pooled replica
//! connections, and an upgrade hands both sockets to a tunnel.
//!
//! A connection costs its socket and a small state while it is idle: its buffer is given back between
//! requests, and the state of an exchange lives only while one is in flight.

mod exchange;
mod framing;
mod head;

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::debug;

use crate::Shared;
use crate::client::ClientConn;
use crate::tunnel::TunnelTask;
use crate::watch::Watch;
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
}

/// Serves `stream` as HTTP/1.1 until either side closes it; `first` holds bytes already read from it.
pub(crate) async fn serve(shared: Arc<Shared>, client: Arc<ClientConn>, stream: TcpStream, first: Bytes) {
    let mut watch = pin!(Watch::new(&shared, &client));
    let mut conn = Conn {
        shared,
        client,
        stream,
        buf: Vec::from(first),
    };
    loop {
        let Some(head) = conn.next_head(watch.as_mut()).await else {
            return;
        };
        // Boxed: the state of an exchange is allocated only while one is in flight.
        match Box::pin(exchange::run(&mut conn, head, watch.as_mut())).await {
            Next::KeepAlive if !conn.client.is_closing() => {}
            Next::KeepAlive | Next::Close => return,
            Next::CloseUnread => return conn.linger().await,
            Next::Upgrade(tunnel) => {
                let Conn {
                    shared, stream, buf, ..
                } = conn;
                let parts = tunnel.with_client((stream, Bytes::from(buf)), &shared);
                shared.tasks.spawn(TunnelTask::new(parts, shared.clock));
                return;
            }
        }
    }
}

impl Conn {
    /// Reads until a complete request head is buffered; `None` once the connection is over (closed, timed
    /// out, or answered with an error).
    async fn next_head(&mut self, mut watch: Pin<&mut Watch>) -> Option<RequestHead> {
        let settings = self.shared.settings.load_full();
        let limits = Limits {
            max_bytes: settings.max_header_bytes,
            max_fields: settings.max_headers,
        };
        loop {
            if !self.buf.is_empty() {
                match head::parse_request(&self.buf, limits, self.client.peer().ip()) {
                    Ok(Some(head)) => return Some(head),
                    Ok(None) => {}
                    Err(refusal) => {
                        // The rest of what the client sent is unread: linger so the refusal reaches it.
                        if exchange::refuse(self, refusal.status, refusal.text, watch).await {
                            self.linger().await;
                        }
                        return None;
                    }
                }
            } else if self.buf.capacity() > 0 {
                // Idle between requests: the buffer goes back until the client sends again.
                self.buf = Vec::new();
            }
            if self.buf.is_empty() {
                watch
                    .as_mut()
                    .guard_idle(self.stream.readable())
                    .await
                    .ok()?
                    .ok()?;
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(BUFFER.min(limits.max_bytes));
            }
            let read = if self.client.in_flight() == 0 && self.buf.is_empty() {
                watch
                    .as_mut()
                    .guard_idle(self.stream.read_buf(&mut self.buf))
                    .await
            } else {
                watch.as_mut().guard(self.stream.read_buf(&mut self.buf)).await
            };
            match read {
                Ok(Ok(0)) => return None,
                Ok(Ok(_)) => self.client.on_read(),
                Ok(Err(error)) => {
                    debug!(peer = %self.client.peer(), %error, "client connection failed");
                    return None;
                }
                Err(_) => return None,
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
