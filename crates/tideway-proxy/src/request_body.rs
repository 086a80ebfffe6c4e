//! The body of a request on its way to a replica, which tells when it has been sent whole (only then can
//! the replica connection carry another request) and gives up on a client that pauses it past
//! `body_read_timeout`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::client::ClientConn;
use crate::stall::{BodyError, ReplicaWait, StallTimer};

/// A request body forwarded to a replica.
pub(crate) enum UpstreamBody {
    /// No body: nothing can be pending after the request head.
    Empty,
    /// The client's body, streaming through.
    Client {
        /// The client's body.
        body: Incoming,
        /// Shared with the forwarding and the response's lease.
        progress: Arc<BodyProgress>,
        /// The connection it comes on: its data is the connection's activity.
        client: Arc<ClientConn>,
        /// Runs while the client is waited on for more of the body.
        stall: StallTimer,
    },
}

/// How far a streamed request body got, for those that outlive its sending.
pub(crate) struct BodyProgress {
    /// Set once its end has been passed on: the replica connection may then be reused.
    sent: AtomicBool,
    /// Set when the client paused it past `body_read_timeout`.
    stalled: AtomicBool,
    /// The replica's moves: each time it takes more of the body.
    pub(crate) replica: ReplicaWait,
}

impl UpstreamBody {
    /// Wraps a client's body. An empty one costs nothing; a streaming one gets a record of its progress.
    pub(crate) fn from_client(
        body: Incoming,
        client: &Arc<ClientConn>,
        read_timeout: Duration,
    ) -> (Self, Option<Arc<BodyProgress>>) {
        if body.is_end_stream() {
            return (UpstreamBody::Empty, None);
        }
        let progress = Arc::new(BodyProgress {
            sent: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            replica: ReplicaWait::new(),
        });
        let body = UpstreamBody::Client {
            body,
            progress: Arc::clone(&progress),
            client: Arc::clone(client),
            stall: StallTimer::new(read_timeout),
        };
        (body, Some(progress))
    }
}

impl BodyProgress {
    /// Whether the body has been passed on whole.
    pub(crate) fn is_sent(&self) -> bool {
        self.sent.load(Ordering::Acquire)
    }

    /// Whether the client paused the body past `body_read_timeout`.
    pub(crate) fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut *self {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Client {
                body,
                progress,
                client,
                stall,
            } => {
                // Being asked for more means the replica took what it had.
                progress.replica.moved();
                let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) else {
                    if !stall.is_armed() {
                        progress.replica.client_wait_started();
                    }
                    if stall.expired(cx) {
                        progress.stalled.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(BodyError::Stalled)));
                    }
                    return Poll::Pending;
                };
                if stall.disarm() {
                    progress.replica.client_wait_ended();
                }
                if frame
                    .as_ref()
                    .is_some_and(|f| f.as_ref().is_ok_and(|f| f.is_data()))
                {
                    client.on_data();
                }
                if frame.is_none() || body.is_end_stream() {
                    progress.sent.store(true, Ordering::Release);
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Peer)))
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

impl Drop for UpstreamBody {
    /// A body dropped mid-wait (its request failed) no longer holds the replica's clock.
    fn drop(&mut self) {
        if let UpstreamBody::Client { progress, stall, .. } = self
            && stall.disarm()
        {
            progress.replica.client_wait_ended();
        }
    }
}
