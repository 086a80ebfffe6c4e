//! The body of every response tideway sends an HTTP/2 client: a replica's body read off the replica
//! connection through its HTTP/1.1 framing, or a short one of tideway's own. Either way it holds what must
//! be released and recorded when the response ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tideway_core::{CloseReason, Replica};
use tokio::net::TcpStream;

use crate::broadcast::Subscription;
use crate::claim::Claim;
use crate::client::ClientConn;
use crate::forward::upload::{Upload, UploadError};
use crate::message::framing::{BodyCursor, Framing};
use crate::record::{Outcome, Record};
use crate::stall::{BodyError, StallTimer};
use crate::upstream::{ReplicaLink, UpstreamSettings, poll_read_into};

/// A response body on its way to a client.
///
/// Reaching its end, failing, or being dropped (the client left) releases the request's seat on its
/// replica, completes the request's record, and — for a completed exchange — returns the replica
/// connection to its pool.
pub(crate) struct ProxyBody {
    kind: Kind,
    lease: Option<Lease>,
    record: Option<Record>,
}

enum Kind {
    /// A replica's body, still coming.
    Relayed(Box<Relayed>),
    Fixed(Option<Bytes>),
}

/// A replica's response body and the connection it comes on.
pub(crate) struct Relayed {
    stream: TcpStream,
    /// What was read past the response head, or since.
    buf: BytesMut,
    cursor: BodyCursor,
    /// The body is chunked: its content is copied out of the framing.
    chunked: bool,
    /// The timer for the replica's pauses (`response_timeout`).
    stall: StallTimer,
    /// The request body, if it is still going up.
    upload: Option<Upload>,
    /// The connection can carry another request once the body ends.
    reusable: bool,
    /// Raised when the replica's drain ran out of time: the stream is cut (reason `drain`). Subscribed to
    /// only once the body waits on the replica, so a short response never takes the broadcast's lock.
    eviction: Option<Pin<Box<Subscription>>>,
    link: Arc<ReplicaLink>,
    settings: UpstreamSettings,
}

/// What a proxied response holds until its body ends: the seat.
pub(crate) struct Lease {
    claim: Claim,
    client: Arc<ClientConn>,
    settled: bool,
}

/// One step of a replica's body.
enum Step {
    /// Content; `last`: the body ends with it.
    Data {
        data: Bytes,
        last: bool,
    },
    End,
    /// The exchange broke off: how it ended, the close reason tideway counts (`None`: the client left),
    /// and what the client's stream is told.
    Failed(Outcome, Option<CloseReason>, BodyError),
}

impl ProxyBody {
    /// A body tideway wrote itself (errors, 404).
    pub(crate) fn fixed(bytes: impl Into<Bytes>, record: Record) -> Self {
        let bytes = bytes.into();
        let mut body = ProxyBody {
            kind: Kind::Fixed(None),
            lease: None,
            record: Some(record),
        };
        if bytes.is_empty() {
            body.end(Outcome::Complete);
        } else {
            body.kind = Kind::Fixed(Some(bytes));
        }
        body
    }

    /// A replica's body; `lease` is released when it ends (at once if it is already empty).
    pub(crate) fn relayed(relayed: Relayed, lease: Lease, record: Record) -> Self {
        let ended = relayed.cursor.is_done();
        let mut this = ProxyBody {
            kind: Kind::Relayed(Box::new(relayed)),
            lease: Some(lease),
            record: Some(record),
        };
        if ended {
            this.end(Outcome::Complete);
        }
        this
    }

    /// The response ended one way or another: release the lease (and, complete, the connection to its
    /// pool), complete the record. Idempotent.
    fn end(&mut self, outcome: Outcome) {
        let reason = match outcome {
            Outcome::Complete | Outcome::ClientGone => None,
            Outcome::UpstreamFailed => Some(CloseReason::Upstream),
            Outcome::UpstreamStalled => Some(CloseReason::ResponseTimeout),
        };
        self.end_with(outcome, reason);
    }

    /// Ends the response with `outcome`, counting a close for `reason` (none: it completed, or the client
    /// left, which the lease counts).
    fn end_with(&mut self, outcome: Outcome, reason: Option<CloseReason>) {
        let relayed = match std::mem::replace(&mut self.kind, Kind::Fixed(None)) {
            Kind::Relayed(relayed) => Some(relayed),
            fixed @ Kind::Fixed(_) => {
                self.kind = fixed;
                None
            }
        };
        let replica: Option<Arc<Replica>> =
            self.lease.as_ref().map(|lease| Arc::clone(lease.claim.replica()));
        if let Some(mut lease) = self.lease.take() {
            // Unsettled, the lease counts the client leaving.
            lease.settled = outcome != Outcome::ClientGone || reason.is_some();
            if let Some(reason) = reason {
                lease.claim.app().stats().record_close(reason);
            }
            if let (Outcome::Complete, Some(relayed), Some(replica)) = (outcome, relayed, &replica) {
                relayed.keep(replica);
            }
        }
        if let Some(record) = self.record.take() {
            record.finish(replica.as_deref(), outcome);
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
        let step = match &mut this.kind {
            Kind::Fixed(bytes) => {
                let frame = bytes.take().map(|b| Ok(Frame::data(b)));
                this.end(Outcome::Complete);
                return Poll::Ready(frame);
            }
            Kind::Relayed(relayed) => std::task::ready!(relayed.poll_step(cx)),
        };
        match step {
            Step::Data { data, last } => {
                if let Some(record) = this.record.as_mut() {
                    record.count(data.len());
                    record.client().on_data();
                }
                // Ended now, not when the client's stream is done with the body: the server may send the
                // stream's end with this data and never ask again.
                if last {
                    this.end(Outcome::Complete);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Step::End => {
                this.end(Outcome::Complete);
                Poll::Ready(None)
            }
            Step::Failed(outcome, reason, error) => {
                this.end_with(outcome, reason);
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Fixed(bytes) => bytes.is_none(),
            Kind::Relayed(relayed) => relayed.cursor.is_done() && relayed.buf.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Fixed(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Relayed(relayed) => relayed
                .cursor
                .remaining()
                .map_or_else(SizeHint::new, SizeHint::with_exact),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        self.end(Outcome::ClientGone);
    }
}

impl Relayed {
    /// The body framed by `framing` on `stream`, whose first bytes are in `buf`; `upload` is the request
    /// body if it is still going up; `reusable`: the response lets the connection carry another request.
    pub(crate) fn new(
        stream: TcpStream,
        buf: BytesMut,
        framing: Framing,
        upload: Option<Upload>,
        reusable: bool,
        response_timeout: std::time::Duration,
        (link, settings): (Arc<ReplicaLink>, UpstreamSettings),
    ) -> Self {
        Relayed {
            stream,
            buf,
            cursor: BodyCursor::new(framing),
            chunked: framing == Framing::Chunked,
            stall: StallTimer::new(response_timeout),
            upload,
            reusable: reusable && framing != Framing::UntilClose,
            eviction: None,
            link,
            settings,
        }
    }

    /// The next piece of content, the end, or what went wrong; the request body moves on meanwhile.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        loop {
            if let Some(upload) = &mut self.upload
                && let Poll::Ready(uploaded) = upload.poll(cx, &mut self.stream, None)
            {
                self.upload = None;
                match uploaded {
                    Ok(()) => {}
                    Err(UploadError::ClientStalled) => {
                        let reason = Some(CloseReason::BodyTimeout);
                        return Poll::Ready(Step::Failed(
                            Outcome::ClientGone,
                            reason,
                            BodyError::RequestStalled,
                        ));
                    }
                    Err(UploadError::ClientFailed) => {
                        return Poll::Ready(Step::Failed(
                            Outcome::ClientGone,
                            None,
                            BodyError::RequestFailed,
                        ));
                    }
                    // The replica answered without taking the whole body: the connection goes with it.
                    Err(UploadError::Replica) => self.reusable = false,
                }
            }
            if !self.buf.is_empty() && !self.cursor.is_done() {
                let mut content = BytesMut::new();
                let chunked = self.chunked;
                let buf = &self.buf;
                let Ok(taken) = self.cursor.advance(buf, &mut |range| {
                    if chunked {
                        content.extend_from_slice(&buf[range]);
                    }
                }) else {
                    return Poll::Ready(Step::Failed(
                        Outcome::UpstreamFailed,
                        Some(CloseReason::Upstream),
                        BodyError::Replica,
                    ));
                };
                let content = if chunked {
                    self.buf.advance(taken);
                    content.freeze()
                } else {
                    self.buf.split_to(taken).freeze()
                };
                let last = self.cursor.is_done();
                if last {
                    // Bytes past the body's end mean the replica broke the framing: the connection goes.
                    self.reusable &= self.buf.is_empty();
                }
                if !content.is_empty() {
                    return Poll::Ready(Step::Data { data: content, last });
                }
            }
            if self.cursor.is_done() {
                return Poll::Ready(Step::End);
            }
            match poll_read_into(&mut self.stream, cx, &mut self.buf) {
                Poll::Ready(Ok(0)) if self.cursor.at_close() => return Poll::Ready(Step::End),
                Poll::Ready(Ok(0) | Err(_)) => {
                    return Poll::Ready(Step::Failed(
                        Outcome::UpstreamFailed,
                        Some(CloseReason::Upstream),
                        BodyError::Replica,
                    ));
                }
                Poll::Ready(Ok(_)) => {
                    self.stall.disarm();
                }
                Poll::Pending => {
                    let eviction = self
                        .eviction
                        .get_or_insert_with(|| Box::pin(self.link.evicted().subscribe()));
                    if eviction.as_mut().poll(cx).is_ready() {
                        let reason = Some(CloseReason::Drain);
                        return Poll::Ready(Step::Failed(
                            Outcome::UpstreamFailed,
                            reason,
                            BodyError::Evicted,
                        ));
                    }
                    if self.stall.expired(cx) {
                        return Poll::Ready(Step::Failed(
                            Outcome::UpstreamStalled,
                            Some(CloseReason::ResponseTimeout),
                            BodyError::Stalled,
                        ));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// The body ended whole: the connection goes back to the pool if it is at a message boundary, the
    /// request body included.
    fn keep(self, replica: &Arc<Replica>) {
        if self.reusable && self.upload.as_ref().is_none_or(Upload::is_sent) {
            self.link.put(replica, self.stream, &self.settings);
        }
    }
}

impl Lease {
    /// Holds `claim` until the response body ends.
    pub(crate) fn new(claim: Claim, client: Arc<ClientConn>) -> Self {
        Lease {
            claim,
            client,
            settled: false,
        }
    }
}

impl Drop for Lease {
    /// A lease dropped before its body ended means the client stopped reading: it went away, or tideway cut
    /// the connection (counted under tideway's reason already).
    fn drop(&mut self) {
        if !self.settled && !self.client.is_closing() {
            self.claim.app().stats().record_close(CloseReason::Client);
        }
    }
}
