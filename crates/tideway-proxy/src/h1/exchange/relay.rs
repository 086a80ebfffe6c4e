//! The relay of one exchange: the request head and body up to the replica, the response back, each side
//! held to its timeout.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::client::ClientConn;
use crate::h1::BUFFER;
use crate::message::framing::{BodyCursor, Framing};
use crate::message::head::{self, ResponseOut, ResponseRewrite};
use crate::record::Record;
use crate::stream::{ClientReader, ClientStream, ClientWriter};
use crate::upstream::{MAX_READ_BUFFER, READ_BUFFER};

use super::departure::{departure, write_unless_client_leaves};
use super::{BodyEnd, Relayed, Trip};
use crate::Side;

/// Sends the request to the replica and relays the response, the request body going up meanwhile; gives
/// the exchange up when the replica keeps it waiting past `response_timeout`.
pub(super) async fn relay(
    client: &mut ClientStream,
    buf: &mut Vec<u8>,
    upstream: &mut TcpStream,
    trip: &Trip<'_>,
    record: &mut Record,
) -> Relayed {
    let (mut client_reader, mut client_writer) = client.split();
    let (mut upstream_reader, mut upstream_writer) = upstream.split();
    if upstream_writer.write_all(&trip.head.forward).await.is_err() {
        return Relayed::NoAnswer { written: false };
    }
    trip.replica.moved();
    let mut body = pin!(relay_body(&mut client_reader, &mut upstream_writer, buf, trip));
    let mut response = pin!(relay_response(
        &mut upstream_reader,
        &mut client_writer,
        trip,
        record
    ));
    let clock = trip.client.clock();
    let mut body_end = None;
    let relayed = poll_fn(|cx| {
        if let Poll::Ready(relayed) = response.as_mut().poll(cx) {
            return Poll::Ready(relayed);
        }
        if body_end.is_none()
            && let Poll::Ready(end) = body.as_mut().poll(cx)
        {
            body_end = Some(end);
        }
        let answered = trip.answered.load(Ordering::Relaxed);
        match body_end {
            Some(BodyEnd::ClientLeft) => {
                return Poll::Ready(Relayed::Broken {
                    side: Side::Client,
                    answered,
                });
            }
            Some(BodyEnd::Malformed) => return Poll::Ready(Relayed::MalformedBody { answered }),
            Some(BodyEnd::Stalled) => {
                return Poll::Ready(Relayed::Stalled {
                    side: Side::Client,
                    answered,
                });
            }
            // The replica may have answered before reading the whole body: its response tells.
            Some(BodyEnd::UpstreamFailed) | None => {}
        }
        // No timer of its own: the connection's watch wakes the task when the check is due.
        let Some(deadline) = trip.replica.deadline(trip.response_timeout) else {
            return Poll::Ready(Relayed::Stalled {
                side: Side::Replica,
                answered,
            });
        };
        // Rounded up to the next millisecond, so the check is never woken before it is due.
        let due = clock.timestamp(deadline).saturating_add(Duration::from_millis(1));
        trip.client.check_at(Some(due));
        Poll::Pending
    })
    .await;
    trip.client.check_at(None);
    relayed
}

/// Relays the request body from `buf` and the client socket to the replica; then waits for the client to
/// leave, which ends the exchange (it never returns while the client stays).
pub(super) async fn relay_body(
    client: &mut ClientReader<'_>,
    upstream: &mut WriteHalf<'_>,
    buf: &mut Vec<u8>,
    trip: &Trip<'_>,
) -> BodyEnd {
    let mut cursor = BodyCursor::new(trip.head.body);
    while !cursor.is_done() {
        if buf.is_empty() {
            buf.reserve(BUFFER);
            let on_client = trip.replica.on_client();
            let read = tokio::time::timeout(trip.body_read_timeout, client.read_buf(buf)).await;
            drop(on_client);
            match read {
                Err(_) => return BodyEnd::Stalled,
                Ok(Ok(0) | Err(_)) => return BodyEnd::ClientLeft,
                Ok(Ok(_)) => trip.client.on_read(),
            }
        }
        let Ok(taken) = cursor.advance(buf, &mut |_| {}) else {
            return BodyEnd::Malformed;
        };
        if let Err(end) = write_unless_client_leaves(upstream, &buf[..taken], client).await {
            return end;
        }
        trip.replica.moved();
        buf.drain(..taken);
    }
    trip.body_sent.store(true, Ordering::Relaxed);
    if !buf.is_empty() {
        // The client already sent its next request: it is still there.
        return std::future::pending().await;
    }
    departure(client).await;
    BodyEnd::ClientLeft
}

/// Relays the replica's response to the client: interim responses, the final head rewritten, and the body
/// in its framing.
async fn relay_response(
    upstream: &mut ReadHalf<'_>,
    client: &mut ClientWriter<'_>,
    trip: &Trip<'_>,
    record: &mut Record,
) -> Relayed {
    let request = trip.head;
    let mut buf = Vec::with_capacity(READ_BUFFER);
    let mut out = Vec::new();
    let (head, close) = 'head: loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().clamp(READ_BUFFER, MAX_READ_BUFFER));
        }
        let read = upstream.read_buf(&mut buf).await;
        trip.replica.moved();
        match read {
            Ok(0) | Err(_) if buf.is_empty() && !trip.answered.load(Ordering::Relaxed) => {
                return Relayed::NoAnswer { written: true };
            }
            Ok(0) | Err(_) => {
                return Relayed::Broken {
                    side: Side::Replica,
                    answered: trip.answered.load(Ordering::Relaxed),
                };
            }
            Ok(_) => {}
        }
        loop {
            out.clear();
            let close =
                !request.keep_alive || trip.client.is_closing() || !trip.body_sent.load(Ordering::Relaxed);
            let rewrite = ResponseRewrite {
                http10_client: request.http10,
                upgrade_requested: request.upgrade,
                close,
                set_cookie: trip.set_cookie,
                hsts: trip.hsts,
            };
            let head_request = request.method == Method::HEAD;
            match head::parse_response(&buf, head_request, ResponseOut::Bytes(rewrite, &mut out)) {
                Err(_) => return Relayed::BadResponse,
                Ok(None) => break,
                Ok(Some(interim))
                    if interim.status.is_informational()
                        && interim.status != StatusCode::SWITCHING_PROTOCOLS =>
                {
                    // HTTP/1.0 clients know no interim responses: theirs are dropped.
                    if !request.http10 {
                        trip.answered.store(true, Ordering::Relaxed);
                        if relay_to_client(client, trip, &out).await.is_err() {
                            return Relayed::Broken {
                                side: Side::Client,
                                answered: true,
                            };
                        }
                    }
                    buf.drain(..interim.len);
                    if buf.is_empty() {
                        break;
                    }
                }
                Ok(Some(head)) => break 'head (head, close),
            }
        }
    };
    record.set_status(head.status);
    trip.answered.store(true, Ordering::Relaxed);
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        if relay_to_client(client, trip, &out).await.is_err() {
            return Relayed::Broken {
                side: Side::Client,
                answered: true,
            };
        }
        buf.drain(..head.len);
        return Relayed::Upgrade { rest: buf };
    }

    // Chunked bodies are decoded for HTTP/1.0 clients; everything else goes through as it is.
    let decode = head.body == Framing::Chunked && request.http10;
    let mut cursor = BodyCursor::new(head.body);
    let mut extra = false;
    let mut start = head.len;
    loop {
        let input = &buf[start..];
        let mut payload = 0;
        let taken = cursor.advance(input, &mut |range| {
            payload += range.len();
            if decode {
                out.extend_from_slice(&input[range]);
            }
        });
        let Ok(taken) = taken else {
            // Nothing of this response has reached the client yet while its head is still in `out`.
            return if start > 0 {
                Relayed::BadResponse
            } else {
                Relayed::Broken {
                    side: Side::Replica,
                    answered: true,
                }
            };
        };
        extra |= taken < input.len();
        record.count(payload);
        let chunk = if decode || start > 0 {
            if !decode {
                out.extend_from_slice(&input[..taken]);
            }
            &out[..]
        } else {
            &input[..taken]
        };
        if relay_to_client(client, trip, chunk).await.is_err() {
            return Relayed::Broken {
                side: Side::Client,
                answered: true,
            };
        }
        if cursor.is_done() {
            break;
        }
        if buf.len() == buf.capacity() && buf.capacity() < MAX_READ_BUFFER {
            // The last read filled the room: a large body is coming.
            buf.reserve(buf.capacity());
        }
        buf.clear();
        out.clear();
        start = 0;
        let read = upstream.read_buf(&mut buf).await;
        trip.replica.moved();
        match read {
            Ok(0) if cursor.at_close() => break,
            Ok(0) | Err(_) => {
                return Relayed::Broken {
                    side: Side::Replica,
                    answered: true,
                };
            }
            Ok(_) => {}
        }
    }
    Relayed::Done {
        reusable: head.reusable && !extra && trip.body_sent.load(Ordering::Relaxed),
        close: close || head.body == Framing::UntilClose || decode,
    }
}

/// Writes part of the response to the client; the time it takes is the client's, not the replica's.
async fn relay_to_client(writer: &mut ClientWriter<'_>, trip: &Trip<'_>, bytes: &[u8]) -> io::Result<()> {
    let _on_client = trip.replica.on_client();
    write_to_client(writer, trip.client, bytes).await
}

/// Writes `bytes` to the client, recording progress and stalls for its send timeout; flushed, so that
/// what a TLS session holds back goes out too.
pub(super) async fn write_to_client(
    writer: &mut ClientWriter<'_>,
    client: &ClientConn,
    mut bytes: &[u8],
) -> io::Result<()> {
    poll_fn(|cx| {
        while !bytes.is_empty() {
            match Pin::new(&mut *writer).poll_write(cx, bytes) {
                Poll::Pending => {
                    client.on_write_blocked();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    bytes = &bytes[n..];
                    client.on_write();
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            }
        }
        match Pin::new(&mut *writer).poll_flush(cx) {
            Poll::Pending => {
                client.on_write_blocked();
                Poll::Pending
            }
            Poll::Ready(flushed) => {
                client.on_unblocked();
                Poll::Ready(flushed)
            }
        }
    })
    .await
}
