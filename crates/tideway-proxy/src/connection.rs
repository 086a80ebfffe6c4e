//! Serving one client connection: HTTP/1.1 or HTTP/2 (told apart by the first bytes), under the timers that
//! close it — gracefully for age, inactivity and shutdown, at once for slow request heads or a client that
//! stops reading.
//!
//! An HTTP/1.1 connection that stays idle is *parked*: its HTTP state (hyper's connection and its read and
//! write buffers, some 16 KiB) is dropped and only the socket is kept, until the client sends again. So a
//! crowd of idle keep-alive connections costs little more than their sockets.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tideway_core::{CloseReason, Policy, TimeoutVerdict, Timestamp};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::debug;

use crate::Shared;
use crate::client::{ClientConn, TrackedStream, read_preface};
use crate::handler::Handler;
use crate::metrics::ParkedMark;

type Io = TokioIo<TrackedStream>;
type Service = TowerToHyperService<Handler>;
type Http1 = http1::Connection<Io, Service>;
type Http2 = http2::Connection<Io, Service, TokioExecutor>;

/// How long an HTTP/1.1 connection stays idle before it is parked. Long enough that a client sending
/// request after request never pays for rebuilding its HTTP state; short next to any keep-alive timeout.
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Where a connection is in its life.
enum Phase {
    /// HTTP/1.1 served by hyper (boxed, so that a parked connection does not carry its size).
    Http1(Box<Http1>),
    /// HTTP/2 served by hyper; never parked.
    Http2(Pin<Box<Http2>>),
    /// An idle HTTP/1.1 connection without HTTP state, waiting for the client to send.
    Parked {
        stream: TrackedStream,
        /// Counts the connection in `tideway_parked_connections` while it lives.
        _mark: ParkedMark,
    },
    /// Between two phases, for an instant.
    Moving,
}

pin_project! {
    /// A client connection being served, with the one timer that watches all of its limits.
    struct Serving {
        phase: Phase,
        #[pin]
        timer: Sleep,
        #[pin]
        shutdown: WaitForCancellationFutureOwned,
        client: Arc<ClientConn>,
        shared: Arc<Shared>,
        hard_deadline: Option<Timestamp>,
        parking: bool,
    }
}

/// Serves `stream` until the client leaves or a limit closes the connection.
pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let accepted = shared.clock.now();
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "could not disable Nagle's algorithm");
    }
    let header_read_timeout = shared.settings.load().header_read_timeout;
    let (first_bytes, http2) =
        match tokio::time::timeout(header_read_timeout, read_preface(&mut stream)).await {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                debug!(%peer, %error, "connection closed before a request");
                return;
            }
            Err(_) => {
                debug!(%peer, "no request head within header_read_timeout");
                return;
            }
        };
    let client = ClientConn::new(shared.clock, peer, !http2, accepted);
    let stream = TrackedStream::new(stream, Arc::clone(&client), first_bytes);
    let phase = if http2 {
        Phase::Http2(Box::pin(http2_connection(&shared, &client, stream)))
    } else {
        Phase::Http1(http1_connection(&shared, &client, stream))
    };
    let now = shared.clock.now();
    Serving {
        phase,
        timer: tokio::time::sleep_until(shared.clock.instant(now)),
        shutdown: shared.shutdown.clone().cancelled_owned(),
        client,
        shared,
        hard_deadline: None,
        parking: false,
    }
    .await;
}

fn service(shared: &Arc<Shared>, client: &Arc<ClientConn>) -> Service {
    TowerToHyperService::new(Handler::new(Arc::clone(shared), Arc::clone(client)))
}

fn http1_connection(shared: &Arc<Shared>, client: &Arc<ClientConn>, stream: TrackedStream) -> Box<Http1> {
    let settings = shared.settings.load();
    let mut builder = http1::Builder::new();
    builder
        .max_headers(settings.max_headers)
        .max_header_size(settings.max_header_bytes)
        .header_read_timeout(None);
    Box::new(builder.serve_connection(TokioIo::new(stream), service(shared, client)))
}

fn http2_connection(shared: &Arc<Shared>, client: &Arc<ClientConn>, stream: TrackedStream) -> Http2 {
    let settings = shared.settings.load();
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    builder.serve_connection(TokioIo::new(stream), service(shared, client))
}

impl Future for Serving {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.hard_deadline.is_none() && this.shutdown.as_mut().poll(cx).is_ready() {
            let drain = this.client.app().map_or_else(
                || Policy::default().drain_timeout,
                |app| app.policy().drain_timeout,
            );
            if matches!(this.phase, Phase::Parked { .. }) {
                return Poll::Ready(());
            }
            start_close(this.phase, this.client, CloseReason::Drain);
            *this.hard_deadline = Some(this.shared.clock.now().saturating_add(drain));
        }
        loop {
            match this.phase {
                Phase::Http1(conn) => match conn.poll_without_shutdown(cx) {
                    Poll::Ready(Ok(())) => {
                        let Phase::Http1(conn) = std::mem::replace(this.phase, Phase::Moving) else {
                            return Poll::Ready(());
                        };
                        let parts = conn.into_parts();
                        let stream = parts.io.into_inner();
                        if let Some(tunnel) = this.client.take_upgrade() {
                            let (socket, replay) = stream.into_parts();
                            // The tunnel takes what the client sent past the switch, in order.
                            let leftover = if replay.is_empty() {
                                parts.read_buf
                            } else {
                                Bytes::from([replay, parts.read_buf].concat())
                            };
                            // A tunnel that is gone already has nothing to receive.
                            let _ = tunnel.send((socket, leftover));
                            return Poll::Ready(());
                        }
                        if !*this.parking || this.hard_deadline.is_some() {
                            return Poll::Ready(());
                        }
                        *this.parking = false;
                        *this.phase = if parts.read_buf.is_empty() && !stream.has_replay() {
                            Phase::Parked {
                                stream,
                                _mark: this.shared.metrics.parked(),
                            }
                        } else {
                            // The client had started a request: serve it at once, from the bytes read.
                            let (socket, replay) = stream.into_parts();
                            let replay = Bytes::from([replay, parts.read_buf].concat());
                            let stream = TrackedStream::new(socket, Arc::clone(this.client), replay);
                            Phase::Http1(http1_connection(this.shared, this.client, stream))
                        };
                        continue;
                    }
                    Poll::Ready(Err(error)) => {
                        debug!(peer = %this.client.peer(), %error, "client connection ended with an error");
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                },
                Phase::Http2(conn) => match conn.as_mut().poll(cx) {
                    Poll::Ready(result) => {
                        if let Err(error) = result {
                            debug!(peer = %this.client.peer(), %error, "client connection ended with an error");
                        }
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                },
                Phase::Parked { stream, .. } => match stream.poll_read_ready(cx) {
                    Poll::Ready(_) => {
                        let Phase::Parked { stream, .. } = std::mem::replace(this.phase, Phase::Moving)
                        else {
                            return Poll::Ready(());
                        };
                        *this.phase = Phase::Http1(http1_connection(this.shared, this.client, stream));
                        continue;
                    }
                    Poll::Pending => {}
                },
                Phase::Moving => return Poll::Ready(()),
            }

            this.client.register_idle_waker(cx.waker());
            let clock = this.shared.clock;
            let now = clock.now();
            let due = match *this.hard_deadline {
                Some(deadline) => deadline,
                None => {
                    let settings = this.shared.settings.load();
                    let timeouts = this.client.timeouts(&settings);
                    let times = this.client.times();
                    match timeouts.evaluate(&times, now) {
                        TimeoutVerdict::Open { next } => {
                            // An idle HTTP/1.1 connection is parked after a short linger.
                            let park_at = match (&this.phase, times.idle_since, times.head_started) {
                                (Phase::Http1(_), Some(idle_since), None) if !*this.parking => {
                                    Some(idle_since.saturating_add(PARK_AFTER))
                                }
                                _ => None,
                            };
                            if park_at.is_some_and(|at| at <= now) {
                                *this.parking = true;
                                start_park(this.phase);
                                continue;
                            }
                            match next.into_iter().chain(park_at).min() {
                                Some(due) => due,
                                None => return Poll::Pending,
                            }
                        }
                        TimeoutVerdict::Abort => {
                            debug!(peer = %this.client.peer(), "request head too slow, or response not read: dropped");
                            return Poll::Ready(());
                        }
                        TimeoutVerdict::Close(_) if matches!(this.phase, Phase::Parked { .. }) => {
                            return Poll::Ready(());
                        }
                        TimeoutVerdict::Close(reason) => {
                            let grace = this.client.app().map_or_else(
                                || Policy::default().close_grace,
                                |app| app.policy().close_grace,
                            );
                            start_close(this.phase, this.client, reason);
                            *this.hard_deadline = Some(now.saturating_add(grace));
                            continue;
                        }
                    }
                }
            };
            if due <= now {
                return Poll::Ready(());
            }
            // Arm lazily: activity only ever moves deadlines later, so a timer armed too early fires once,
            // finds nothing due and is re-armed; re-arming on every byte would cost far more.
            let at = clock.instant(due);
            let armed = this.timer.deadline();
            if at < armed || armed <= clock.instant(now) {
                this.timer.as_mut().reset(at);
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Asks hyper to let an idle HTTP/1.1 connection go: it hands the socket back instead of reading another
/// request, and the connection is parked.
fn start_park(phase: &mut Phase) {
    if let Phase::Http1(conn) = phase {
        Pin::new(conn.as_mut()).graceful_shutdown();
    }
}

/// Starts a graceful close: HTTP/1.1 finishes the response in flight with `Connection: close`, HTTP/2
/// sends GOAWAY and finishes open streams.
///
/// The close counts against the app only if requests are in flight: an idle keep-alive connection holds no
/// connection in the sense tideway counts.
fn start_close(phase: &mut Phase, client: &ClientConn, reason: CloseReason) {
    client.mark_closing();
    if client.in_flight() > 0
        && let Some(app) = client.app()
    {
        app.stats().record_close(reason);
    }
    debug!(peer = %client.peer(), reason = reason.as_str(), "closing client connection");
    match phase {
        Phase::Http1(conn) => Pin::new(conn.as_mut()).graceful_shutdown(),
        Phase::Http2(conn) => conn.as_mut().graceful_shutdown(),
        Phase::Parked { .. } | Phase::Moving => {}
    }
}
