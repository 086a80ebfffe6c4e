//! The body of a request on its way to a replica, which tells when it has been sent whole: only then can the
//! replica connection carry another request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::client::ClientConn;

/// A request body forwarded to a replica.
pub(crate) enum UpstreamBody {
    /// No body: nothing can be pending after the request head.
    Empty,
    /// The client's body, streaming through; `sent` is set once its end has been passed on.
    Client {
        /// The client's body.
        body: Incoming,
        /// Shared with the response's lease, which reuses the connection only once this is set.
        sent: Arc<AtomicBool>,
        /// The connection it comes on: its data is the connection's activity.
        client: Arc<ClientConn>,
    },
}

impl UpstreamBody {
    /// Wraps a client's body. An empty one costs nothing; a streaming one gets a flag to report its end.
    pub(crate) fn from_client(body: Incoming, client: &Arc<ClientConn>) -> (Self, Option<Arc<AtomicBool>>) {
        if body.is_end_stream() {
            return (UpstreamBody::Empty, None);
        }
        let sent = Arc::new(AtomicBool::new(false));
        let body = UpstreamBody::Client {
            body,
            sent: Arc::clone(&sent),
            client: Arc::clone(client),
        };
        (body, Some(sent))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Client { body, sent, client } => {
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                if frame
                    .as_ref()
                    .is_some_and(|f| f.as_ref().is_ok_and(|f| f.is_data()))
                {
                    client.on_data();
                }
                if frame.is_none() || body.is_end_stream() {
                    sent.store(true, Ordering::Release);
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Client { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Client { body, .. } => body.size_hint(),
        }
    }
}
