//! An HTTP/2 request body on its way to a replica over HTTP/1.1: taken from the client's stream as it
//! comes, framed by its length or chunked, written to the replica connection — beside the wait for the
//! response, and on while the response streams back.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Body;
use hyper::body::Incoming;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::client::ClientConn;
use crate::message::framing::Framing;
use crate::stall::{ReplicaWait, StallTimer};

/// The upload of one request body.
pub(crate) struct Upload {
    body: Incoming,
    chunked: bool,
    /// Bytes taken from the client and framed, not yet written to the replica.
    pending: Bytes,
    /// The client's body ended; once `pending` is written, so has the upload.
    ended: bool,
    /// How the upload ended, once it has.
    outcome: Option<Result<(), UploadError>>,
    client: Arc<ClientConn>,
    /// Runs while the client is waited on for more (`body_read_timeout`).
    stall: StallTimer,
}

/// Why an upload stopped short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UploadError {
    /// The client paused its body past `body_read_timeout`.
    ClientStalled,
    /// The client's stream failed (it reset the request).
    ClientFailed,
    /// The replica stopped taking the body: its answer, if any, tells what happened.
    Replica,
}

impl Upload {
    /// The upload of `body`, framed by `framing` (a length, or chunked), coming from `client`.
    pub(crate) fn new(
        body: Incoming,
        framing: Framing,
        client: &Arc<ClientConn>,
        read_timeout: Duration,
    ) -> Self {
        Upload {
            body,
            chunked: framing == Framing::Chunked,
            pending: Bytes::new(),
            ended: false,
            outcome: None,
            client: Arc::clone(client),
            stall: StallTimer::new(read_timeout),
        }
    }

    /// Moves the body on to `stream` as far as both peers let it; ready once it is written whole, or
    /// stopped (and ready with the same from then on). `wait`, while the request waits for its response,
    /// learns the replica's moves (each write it takes) and the time spent on the client, which is not the
    /// replica's.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut TcpStream,
        wait: Option<&ReplicaWait>,
    ) -> Poll<Result<(), UploadError>> {
        if let Some(outcome) = self.outcome {
            return Poll::Ready(outcome);
        }
        let polled = self.poll_on(cx, stream, wait);
        if let Poll::Ready(outcome) = polled {
            self.outcome = Some(outcome);
        }
        polled
    }

    /// Whether the body has been written whole.
    pub(crate) fn is_sent(&self) -> bool {
        self.outcome == Some(Ok(()))
    }

    fn poll_on(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut TcpStream,
        wait: Option<&ReplicaWait>,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            while !self.pending.is_empty() {
                match Pin::new(&mut *stream).poll_write(cx, &self.pending) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Err(UploadError::Replica)),
                    Poll::Ready(Ok(written)) => {
                        self.pending.advance(written);
                        wait.inspect(|wait| wait.moved());
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => {
                    if self.stall.expired(cx) {
                        return Poll::Ready(Err(UploadError::ClientStalled));
                    }
                    // Time spent waiting on the client is not the replica's.
                    wait.inspect(|wait| wait.moved());
                    return Poll::Pending;
                }
                Poll::Ready(None) => None,
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(UploadError::ClientFailed)),
                Poll::Ready(Some(Ok(frame))) => Some(frame),
            };
            self.stall.disarm();
            self.client.on_data();
            let mut framed = BytesMut::new();
            let mut terminated = false;
            match frame.map(http_body::Frame::into_data) {
                Some(Ok(data)) if !self.chunked => self.pending = data,
                Some(Ok(data)) => {
                    if !data.is_empty() {
                        // Writing into a buffer cannot fail.
                        let _ = write!((&mut framed).writer(), "{:x}\r\n", data.len());
                        framed.extend_from_slice(&data);
                        framed.extend_from_slice(b"\r\n");
                    }
                }
                Some(Err(frame)) => {
                    // Trailers end the body; chunked framing carries them, a length has no room for them.
                    if let (true, Ok(trailers)) = (self.chunked, frame.into_trailers()) {
                        framed.extend_from_slice(b"0\r\n");
                        for (name, value) in &trailers {
                            framed.extend_from_slice(name.as_str().as_bytes());
                            framed.extend_from_slice(b": ");
                            framed.extend_from_slice(value.as_bytes());
                            framed.extend_from_slice(b"\r\n");
                        }
                        framed.extend_from_slice(b"\r\n");
                        terminated = true;
                    }
                    self.ended = true;
                }
                None => self.ended = true,
            }
            if self.body.is_end_stream() {
                self.ended = true;
            }
            if self.ended && self.chunked && !terminated {
                framed.extend_from_slice(b"0\r\n\r\n");
            }
            if !framed.is_empty() {
                self.pending = framed.freeze();
            }
        }
    }
}
