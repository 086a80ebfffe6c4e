//! The body of every response tideway sends: a replica's body streamed through, or a short one of its own.
//! Either way it holds what must be released and recorded when the response ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tideway_core::{CloseReason, Replica};

use crate::client::ClientConn;
use crate::exchange::{Exchange, Outcome};
use crate::request_body::BodyProgress;
use crate::seat::Seat;
use crate::stall::{BodyError, StallTimer};
use crate::upstream::{ReplicaLink, Sender, UpstreamSettings};

/// A response body on its way to a client.
///
/// Reaching its end, failing, or being dropped (the client left) releases the request's seat on its
/// replica, completes the request's record, and — for a completed exchange — returns the replica
/// connection for reuse.
pub(crate) struct ProxyBody {
    kind: Kind,
    lease: Option<Lease>,
    exchange: Option<Exchange>,
}

enum Kind {
    /// A replica's body, and the timer for its pauses (`response_timeout`).
    Upstream(Incoming, StallTimer),
    Fixed(Option<Bytes>),
}

/// What a proxied response holds until its body ends: the seat, and the replica connection to reuse.
pub(crate) struct Lease {
    seat: Seat,
    sender: Option<(Sender, Arc<ReplicaLink>)>,
    body: Option<Arc<BodyProgress>>,
    settings: UpstreamSettings,
    client: Arc<ClientConn>,
    settled: bool,
}

impl ProxyBody {
    /// A body tideway wrote itself (errors, 404, the empty body of a `101`).
    pub(crate) fn fixed(bytes: impl Into<Bytes>, exchange: Exchange) -> Self {
        let bytes = bytes.into();
        let mut body = ProxyBody {
            kind: Kind::Fixed(None),
            lease: None,
            exchange: Some(exchange),
        };
        if bytes.is_empty() {
            body.end(Outcome::Complete);
        } else {
            body.kind = Kind::Fixed(Some(bytes));
        }
        body
    }

    /// A replica's body; `lease` is released when it ends (at once if it is already empty).
    pub(crate) fn upstream(body: Incoming, lease: Lease, exchange: Exchange) -> Self {
        let ended = body.is_end_stream();
        let stall = StallTimer::new(lease.seat.app().policy().response_timeout);
        let mut this = ProxyBody {
            kind: Kind::Upstream(body, stall),
            lease: Some(lease),
            exchange: Some(exchange),
        };
        if ended {
            this.end(Outcome::Complete);
        }
        this
    }

    /// The response ended one way or another: release the lease, complete the record. Idempotent.
    fn end(&mut self, outcome: Outcome) {
        let replica: Option<Arc<Replica>> = self.lease.as_ref().map(|lease| Arc::clone(lease.seat.replica()));
        if let Some(lease) = self.lease.take() {
            match outcome {
                Outcome::Complete => lease.complete(),
                Outcome::UpstreamFailed => lease.fail(CloseReason::Upstream),
                Outcome::UpstreamStalled => lease.fail(CloseReason::ResponseTimeout),
                // Dropped unsettled: the lease counts the client leaving.
                Outcome::ClientGone => drop(lease),
            }
        }
        if let Some(exchange) = self.exchange.take() {
            exchange.finish(replica.as_deref(), outcome);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match &mut this.kind {
            Kind::Fixed(bytes) => {
                let frame = bytes.take().map(|b| Ok(Frame::data(b)));
                this.end(Outcome::Complete);
                Poll::Ready(frame)
            }
            Kind::Upstream(body, stall) => {
                let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) else {
                    if stall.expired(cx) {
                        this.end(Outcome::UpstreamStalled);
                        return Poll::Ready(Some(Err(BodyError::Stalled)));
                    }
                    return Poll::Pending;
                };
                stall.disarm();
                let ended = body.is_end_stream();
                match &frame {
                    None => this.end(Outcome::Complete),
                    Some(Ok(data)) => {
                        if let (Some(exchange), Some(data)) = (this.exchange.as_mut(), data.data_ref()) {
                            exchange.count(data.len());
                            exchange.client().on_data();
                        }
                        if ended {
                            this.end(Outcome::Complete);
                        }
                    }
                    Some(Err(_)) => this.end(Outcome::UpstreamFailed),
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Peer)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Fixed(bytes) => bytes.is_none(),
            Kind::Upstream(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Fixed(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body, _) => body.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        self.end(Outcome::ClientGone);
    }
}

impl Lease {
    /// Holds `seat` (and `sender`, for reuse in its replica's link) until the response body ends. `body`
    /// tells whether a streamed request body has been sent whole (`None`: the request had no body).
    pub(crate) fn new(
        seat: Seat,
        sender: (Sender, Arc<ReplicaLink>),
        body: Option<Arc<BodyProgress>>,
        settings: UpstreamSettings,
        client: Arc<ClientConn>,
    ) -> Self {
        Lease {
            seat,
            sender: Some(sender),
            body,
            settings,
            client,
            settled: false,
        }
    }

    /// The response ended. The replica connection can carry the next request — unless the request body is
    /// still on its way (a replica may answer before reading it all), then it is not reused.
    fn complete(mut self) {
        self.settled = true;
        let body_sent = self.body.as_ref().is_none_or(|body| body.is_sent());
        if body_sent && let Some((sender, link)) = self.sender.take() {
            link.put(self.seat.replica(), sender, &self.settings);
        }
    }

    /// The replica failed mid-body, or paused past `response_timeout` (`reason`).
    fn fail(mut self, reason: CloseReason) {
        self.settled = true;
        self.seat.app().stats().record_close(reason);
    }
}

impl Drop for Lease {
    /// A lease dropped before its body ended means the client stopped reading: it went away, or tideway cut
    /// the connection (counted under tideway's reason already).
    fn drop(&mut self) {
        if !self.settled && !self.client.is_closing() {
            self.seat.app().stats().record_close(CloseReason::Client);
        }
    }
}
