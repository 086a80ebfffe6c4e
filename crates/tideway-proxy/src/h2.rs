//! HTTP/2 client connections. Every client connection starts as HTTP/1.1 ([`crate::h1`]); one whose first
//! bytes are the HTTP/2 preface (prior knowledge, h2c) is handed here, to hyper's server, under the same
//! watch that closes client connections — gracefully for age, inactivity and shutdown, at once for a
//! client that stops reading. Its requests go to replicas through [`crate::forward`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tideway_core::Timestamp;
use tracing::debug;

use crate::Shared;
use crate::client::{ClientConn, TrackedStream};
use crate::handler::Handler;
use crate::stream::{ClientSocket, ClientStream};
use crate::watch::{Alarm, Watch};

type Http2 = http2::Connection<TokioIo<TrackedStream>, TowerToHyperService<Handler>, TokioExecutor>;

pin_project! {
    /// An HTTP/2 connection being served, under its watch.
    struct Serving {
        #[pin]
        conn: Http2,
        #[pin]
        watch: Watch,
        client: Arc<ClientConn>,
    }
}

/// Serves a connection that opened with the HTTP/2 preface; `first` holds what was read of it so far.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    stream: ClientStream,
    peer: SocketAddr,
    accepted: Timestamp,
    first: Bytes,
) {
    let client = ClientConn::new(shared.clock, peer, stream.is_tls(), false, accepted);
    let stream = TrackedStream::new(stream, Arc::clone(&client), first);
    let service = TowerToHyperService::new(Handler::new(Arc::clone(&shared), Arc::clone(&client)));
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.max_header_list_size(u32::try_from(shared.settings.load().max_header_bytes).unwrap_or(u32::MAX));
    Serving {
        conn: builder.serve_connection(TokioIo::new(stream), service),
        watch: Watch::new(&shared, &client),
        client,
    }
    .await;
}

impl Future for Serving {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            if let Poll::Ready(result) = this.conn.as_mut().poll(cx) {
                if let Err(error) = result {
                    debug!(peer = %this.client.peer(), %error, "client connection ended with an error");
                }
                return Poll::Ready(());
            }
            // Streams end on tasks of their own: the last one wakes this task to re-arm the keep-alive timer.
            this.client.register_keepalive_waker(cx.waker());
            match this.watch.as_mut().poll_alarm(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Alarm::Cut) => return Poll::Ready(()),
                // GOAWAY; open streams finish, then the connection ends.
                Poll::Ready(Alarm::Close) => this.conn.as_mut().graceful_shutdown(),
            }
        }
    }
}
