//! Serving one client connection: HTTP/1.1 or HTTP/2 (told apart by the first bytes), under the timers that
//! close it — gracefully for age, inactivity and shutdown, at once for slow request heads.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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
use crate::client::{ClientConn, Preface, TrackedStream};
use crate::handler::Handler;

type Io = TokioIo<TrackedStream>;
type Service = TowerToHyperService<Handler>;

pin_project! {
    #[project = HttpConnectionProj]
    enum HttpConnection {
        Http1 { #[pin] conn: http1::UpgradeableConnection<Io, Service> },
        Http2 { #[pin] conn: http2::Connection<Io, Service, TokioExecutor> },
    }
}

pin_project! {
    /// A client connection being served, with the one timer that watches all of its limits.
    struct Serving {
        #[pin]
        conn: HttpConnection,
        #[pin]
        timer: Sleep,
        #[pin]
        shutdown: WaitForCancellationFutureOwned,
        client: Arc<ClientConn>,
        shared: Arc<Shared>,
        hard_deadline: Option<Timestamp>,
    }
}

/// Serves `stream` until the client leaves or a limit closes the connection.
pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let accepted = shared.clock.now();
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "could not disable Nagle's algorithm");
    }
    let settings = shared.settings.load_full();
    let mut preface = Preface::default();
    let http2 = match tokio::time::timeout(settings.header_read_timeout, preface.read_from(&mut stream)).await
    {
        Ok(Ok(http2)) => http2,
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
    let io = TokioIo::new(TrackedStream::new(stream, Arc::clone(&client), preface));
    let service = TowerToHyperService::new(Handler::new(Arc::clone(&shared), Arc::clone(&client)));
    let conn = if http2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
        HttpConnection::Http2 {
            conn: builder.serve_connection(io, service),
        }
    } else {
        let mut builder = http1::Builder::new();
        builder
            .max_headers(settings.max_headers)
            .max_header_size(settings.max_header_bytes)
            .header_read_timeout(None);
        HttpConnection::Http1 {
            conn: builder.serve_connection(io, service).with_upgrades(),
        }
    };
    let now = shared.clock.now();
    Serving {
        conn,
        timer: tokio::time::sleep_until(shared.clock.instant(now)),
        shutdown: shared.shutdown.clone().cancelled_owned(),
        client,
        shared,
        hard_deadline: None,
    }
    .await;
}

impl HttpConnection {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            HttpConnectionProj::Http1 { conn } => conn.graceful_shutdown(),
            HttpConnectionProj::Http2 { conn } => conn.graceful_shutdown(),
        }
    }
}

impl Future for HttpConnection {
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HttpConnectionProj::Http1 { conn } => conn.poll(cx),
            HttpConnectionProj::Http2 { conn } => conn.poll(cx),
        }
    }
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
            start_close(this.conn.as_mut(), this.client, CloseReason::Drain);
            *this.hard_deadline = Some(this.shared.clock.now().saturating_add(drain));
        }
        loop {
            if let Poll::Ready(result) = this.conn.as_mut().poll(cx) {
                if let Err(error) = result {
                    debug!(peer = %this.client.peer(), %error, "client connection ended with an error");
                }
                return Poll::Ready(());
            }
            this.client.register_idle_waker(cx.waker());
            let clock = this.shared.clock;
            let now = clock.now();
            let due = match *this.hard_deadline {
                Some(deadline) => deadline,
                None => {
                    let settings = this.shared.settings.load();
                    let timeouts = this.client.timeouts(&settings);
                    match timeouts.evaluate(&this.client.times(), now) {
                        TimeoutVerdict::Open { next: None } => return Poll::Pending,
                        TimeoutVerdict::Open { next: Some(next) } => next,
                        TimeoutVerdict::Abort => {
                            debug!(peer = %this.client.peer(), "request head too slow, or response not read: dropped");
                            return Poll::Ready(());
                        }
                        TimeoutVerdict::Close(reason) => {
                            let grace = this.client.app().map_or_else(
                                || Policy::default().close_grace,
                                |app| app.policy().close_grace,
                            );
                            start_close(this.conn.as_mut(), this.client, reason);
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

/// Starts a graceful close: HTTP/1.1 finishes the response in flight with `Connection: close`, HTTP/2
/// sends GOAWAY and finishes open streams.
///
/// The close counts against the app only if requests are in flight: an idle keep-alive connection holds no
/// connection in the sense tideway counts.
fn start_close(conn: Pin<&mut HttpConnection>, client: &ClientConn, reason: CloseReason) {
    client.mark_closing();
    if client.in_flight() > 0
        && let Some(app) = client.app()
    {
        app.stats().record_close(reason);
    }
    debug!(peer = %client.peer(), reason = reason.as_str(), "closing client connection");
    conn.graceful_shutdown();
}
