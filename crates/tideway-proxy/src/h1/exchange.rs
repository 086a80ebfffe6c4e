//! One HTTP/1.1 exchange: the request checked, routed and seated, sent to its replica over a kept-alive
//! connection — elsewhere if the replica refuses the connection, again on a fresh connection when a kept
//! one turned out closed before the request went out on it — and the response relayed back as it comes,
//! each side held to its timeout; or, when the replica switches protocols, both sockets handed to a
//! tunnel.

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::AsFd;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use tideway_core::{App, CloseReason, ConnectionTimeouts, RejectReason, jittered_age};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tracing::debug;

use super::framing::{BodyCursor, Framing};
use super::head::{self, RequestHead, ResponseRewrite};
use super::{BUFFER, Conn};
use crate::app_link::AppLink;
use crate::client::ClientConn;
use crate::exchange::{Exchange, Outcome};
use crate::forward::{RETRIES, Reseat};
use crate::handler::{FAILED, NOT_ROUTED, refusal, rejected, screen, seat_for};
use crate::seat::Seat;
use crate::sessions::{presented_session, session_cookie};
use crate::stall::{BODY_STALLED, RESPONSE_STALLED, ReplicaWait};
use crate::tunnel::TunnelParts;
use crate::upstream::{self, ReplicaLink, UpstreamSettings};

/// Room for reading a response at first: a usual head and small body in one read. It doubles, up to
/// [`MAX_RELAY_BUFFER`], while reads fill it, so a large body moves in few system calls and a small
/// response holds little memory.
const RELAY_BUFFER: usize = 4 * 1024;
/// The most room a response relay reads into at once.
const MAX_RELAY_BUFFER: usize = 64 * 1024;

/// What becomes of the client connection after an exchange.
pub(super) enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close it.
    Close,
    /// Close it, though the client may still be sending a request body.
    CloseUnread,
    /// It switched protocols: the tunnel takes it (and what it sent past the switch).
    Upgrade(Box<Tunnel>),
}

/// A tunnel waiting for the client socket.
pub(super) struct Tunnel {
    upstream: (TcpStream, Bytes),
    websocket: bool,
    seat: Seat,
    timeouts: ConnectionTimeouts,
    close_grace: std::time::Duration,
}

/// How relaying an exchange ended.
enum Relayed {
    /// The whole response reached the client. `reusable`: the replica connection is at a message boundary
    /// and may carry another request; `close`: the client was told the connection closes.
    Done { reusable: bool, close: bool },
    /// The replica closed the connection without answering. `written`: whether the request head was
    /// written to it at all.
    NoAnswer { written: bool },
    /// The exchange broke off on `side`; `answered`: the client has part of the response already.
    Broken { side: Side, answered: bool },
    /// `side` kept the exchange waiting past its timeout: the client its request body past
    /// `body_read_timeout`, the replica its response past `response_timeout`.
    Stalled { side: Side, answered: bool },
    /// The request body broke its framing after the head was forwarded.
    MalformedBody { answered: bool },
    /// The replica's response head cannot be relayed.
    BadResponse,
    /// The replica switched protocols; `rest` is what it sent past its `101`.
    Upgrade { rest: Vec<u8> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

/// How the request body's relay ended; it also watches for the client leaving once the body is sent.
enum BodyEnd {
    ClientLeft,
    Malformed,
    Stalled,
    UpstreamFailed,
}

/// What the relay of one exchange reads.
struct Trip<'a> {
    client: &'a ClientConn,
    head: &'a RequestHead,
    set_cookie: Option<&'a [u8]>,
    /// Set once the request body has been sent whole. (Atomics only so the exchange can move between
    /// threads; the two relays that share them run in one task.)
    body_sent: AtomicBool,
    /// Set once the client has been sent part of the response.
    answered: AtomicBool,
    /// The app's `body_read_timeout` and `response_timeout`.
    body_read_timeout: Duration,
    response_timeout: Duration,
    /// How long the replica has kept the exchange waiting.
    replica: ReplicaWait,
}

/// Runs the exchange of `head`, whose bytes are at the front of the connection's buffer, and gives the
/// connection back with what becomes of it. The connection's watch runs beside it: when a limit cuts the
/// connection, this future is dropped mid-way — its seat, its record and its sockets go with it.
pub(super) async fn run(mut conn: Conn, head: RequestHead) -> (Conn, Next) {
    let next = exchange(&mut conn, head).await;
    (conn, next)
}

async fn exchange(conn: &mut Conn, mut head: RequestHead) -> Next {
    let shared = Arc::clone(&conn.shared);
    let access_log = shared.settings.load().access_log;
    let (routed, exchange) = {
        let text = |range: &std::ops::Range<usize>| std::str::from_utf8(&conn.buf[range.clone()]).ok();
        let path = if head.path.is_empty() {
            "/"
        } else {
            text(&head.path).unwrap_or("/")
        };
        let host = head.host.as_ref().and_then(text);
        let screened = screen(&head.method, head.host_fields, host, head.http10);
        let app = screened
            .ok()
            .and_then(|()| shared.routes.load().lookup(host, path).cloned());
        if let Some(app) = &app {
            AppLink::of(app, &shared.metrics);
        }
        let exchange = Exchange::open(
            conn.client.request_started(app.as_ref()),
            Some((head.method.as_str(), path)),
            app.clone(),
            Arc::clone(&shared.metrics),
            access_log,
        );
        let routed = match (screened, app) {
            (Err(refusal), _) => Err((refusal.status, refusal.text)),
            (Ok(()), None) => Err((StatusCode::NOT_FOUND, NOT_ROUTED)),
            (Ok(()), Some(app)) => {
                let cookies = head.cookies.iter().map(|c| &conn.buf[c.clone()]);
                let presented = presented_session(cookies, app.name());
                Ok((app, presented))
            }
        };
        (routed, exchange)
    };
    conn.buf.drain(..head.len);
    let (app, presented) = match routed {
        Ok(routed) => routed,
        Err((status, text)) => return reply(conn, &head, exchange, status, text, None).await,
    };
    // What of the body came with the head is checked before the head goes anywhere: a malformed chunked
    // body is refused whole, and no replica sees a request that tideway would cut short.
    if head.body == Framing::Chunked
        && BodyCursor::new(head.body)
            .advance(&conn.buf, &mut |_| {})
            .is_err()
    {
        let status = StatusCode::BAD_REQUEST;
        return reply(conn, &head, exchange, status, MALFORMED_BODY, None).await;
    }

    let waited = until_client_leaves(
        &conn.stream,
        head.body == Framing::Empty,
        seat_for(&shared, &app, presented),
    )
    .await;
    let (mut seat, issued) = match waited {
        Some(Ok(seated)) => seated,
        Some(Err(reason)) => return unseated(conn, &head, exchange, &app, reason).await,
        None => {
            exchange.finish(None, Outcome::ClientGone);
            return Next::Close;
        }
    };
    let cookie = issued.and_then(|id| session_cookie(app.name(), id));
    if head.host.is_none() {
        head::add_host(&mut head.forward, seat.replica().addr());
    }
    let policy = app.policy();
    let trip = Trip {
        client: &conn.client,
        head: &head,
        set_cookie: cookie.as_ref().map(|c| c.as_bytes()),
        body_sent: AtomicBool::new(head.body == Framing::Empty),
        answered: AtomicBool::new(false),
        body_read_timeout: policy.body_read_timeout,
        response_timeout: policy.response_timeout,
        replica: ReplicaWait::new(),
    };
    drop(policy);
    let mut exchange = exchange;
    let settings = UpstreamSettings::from(&**shared.settings.load());
    let mut reseat = Reseat {
        app: &app,
        shared: &shared,
        moves: 0,
    };
    let mut retries = 0;
    loop {
        let replica = Arc::clone(seat.replica());
        let link = ReplicaLink::of(&replica);
        let pooled = link.and_then(|link| link.take_stream(settings.idle_timeout));
        let reused = pooled.is_some();
        let mut upstream = match pooled {
            Some(stream) => stream,
            None => match upstream::connect_stream(replica.addr(), settings.connect_timeout).await {
                Ok(stream) => {
                    replica.record_connect_success();
                    stream
                }
                Err(error) => match reseat.after(seat, &replica, &error).await {
                    Ok(other) => {
                        seat = other;
                        continue;
                    }
                    Err(reason) => return unseated(conn, &head, exchange, &app, reason).await,
                },
            },
        };
        let relayed = {
            // The connection's watch closes it gracefully if this replica is evicted meanwhile.
            let drain_timeout = app.policy().drain_timeout;
            let _on_replica = link.map(|link| conn.client.serving_on(link.evicted(), drain_timeout));
            relay(
                &mut conn.stream,
                &mut conn.buf,
                &mut upstream,
                &trip,
                &mut exchange,
            )
            .await
        };
        let unread = if trip.body_sent.load(Ordering::Relaxed) {
            Next::Close
        } else {
            Next::CloseUnread
        };
        match relayed {
            Relayed::Done { reusable, close } => {
                if reusable && let Some(link) = link {
                    link.put_stream(&replica, upstream, &settings);
                }
                drop(seat);
                exchange.finish(Some(&replica), Outcome::Complete);
                return if close { unread } else { Next::KeepAlive };
            }
            // Never written, on a kept-alive connection the replica had closed: send it again.
            Relayed::NoAnswer { written: false } if reused && retries < RETRIES => {
                retries += 1;
                trip.answered.store(false, Ordering::Relaxed);
            }
            // A new connection the replica closed before taking the request: the replica is failing.
            Relayed::NoAnswer { written: false } if !reused => {
                let error = io::Error::from(io::ErrorKind::ConnectionReset);
                match reseat.after(seat, &replica, &error).await {
                    Ok(other) => seat = other,
                    Err(reason) => return unseated(conn, &head, exchange, &app, reason).await,
                }
                trip.answered.store(false, Ordering::Relaxed);
            }
            Relayed::Stalled { side, answered } => {
                let (reason, status, text) = match side {
                    Side::Client => (
                        CloseReason::BodyTimeout,
                        StatusCode::REQUEST_TIMEOUT,
                        BODY_STALLED,
                    ),
                    Side::Upstream => (
                        CloseReason::ResponseTimeout,
                        StatusCode::GATEWAY_TIMEOUT,
                        RESPONSE_STALLED,
                    ),
                };
                debug!(
                    app = app.name(),
                    replica = replica.name(),
                    reason = reason.as_str(),
                    "exchange stalled"
                );
                app.stats().record_close(reason);
                drop(seat);
                if answered {
                    exchange.finish(Some(&replica), Outcome::UpstreamFailed);
                    return Next::Close;
                }
                return reply(conn, &head, exchange, status, text, None).await;
            }
            Relayed::MalformedBody { answered } => {
                drop(seat);
                if answered {
                    exchange.finish(Some(&replica), Outcome::ClientGone);
                    return Next::Close;
                }
                let status = StatusCode::BAD_REQUEST;
                return reply(conn, &head, exchange, status, MALFORMED_BODY, None).await;
            }
            Relayed::NoAnswer { .. }
            | Relayed::Broken {
                side: Side::Upstream,
                answered: false,
            } => {
                debug!(
                    app = app.name(),
                    replica = replica.name(),
                    "replica failed the request"
                );
                return reply(conn, &head, exchange, StatusCode::BAD_GATEWAY, FAILED, None).await;
            }
            Relayed::BadResponse => {
                debug!(
                    app = app.name(),
                    replica = replica.name(),
                    "replica sent a malformed response"
                );
                return reply(conn, &head, exchange, StatusCode::BAD_GATEWAY, MALFORMED, None).await;
            }
            Relayed::Broken { side, .. } => {
                let outcome = match side {
                    Side::Upstream => {
                        app.stats().record_close(CloseReason::Upstream);
                        Outcome::UpstreamFailed
                    }
                    Side::Client => {
                        if !conn.client.is_closing() {
                            app.stats().record_close(CloseReason::Client);
                        }
                        Outcome::ClientGone
                    }
                };
                drop(seat);
                exchange.finish(Some(&replica), outcome);
                return Next::Close;
            }
            Relayed::Upgrade { rest } => {
                exchange.finish(Some(&replica), Outcome::Complete);
                let policy = app.policy();
                return Next::Upgrade(Box::new(Tunnel {
                    upstream: (upstream, Bytes::from(rest)),
                    websocket: head.websocket,
                    seat,
                    timeouts: ConnectionTimeouts {
                        max_age: policy
                            .max_connection_age
                            .map(|age| jittered_age(age, conn.client.age_jitter())),
                        inactive: policy.inactive_timeout,
                        ..ConnectionTimeouts::default()
                    },
                    close_grace: policy.close_grace,
                }));
            }
        }
    }
}

/// The body of a `502`: the replica's answer was not HTTP tideway can relay.
const MALFORMED: &str = "the replica sent a malformed response\n";
/// The body of a `400`: the request body broke its chunked framing.
const MALFORMED_BODY: &str = "malformed chunked body\n";

/// Answers a request that cannot be parsed; false if the client is gone.
pub(super) async fn refuse(conn: &mut Conn, status: StatusCode, text: &'static str) -> bool {
    let shared = &conn.shared;
    let exchange = Exchange::open(
        conn.client.request_started(None),
        None,
        None,
        Arc::clone(&shared.metrics),
        shared.settings.load().access_log,
    );
    let written = write_own(conn, exchange, status, text, None, true).await;
    debug!(peer = %conn.client.peer(), status = status.as_u16(), written, "request refused");
    written
}

/// Answers a request that got no seat (counted as rejected).
async fn unseated(
    conn: &mut Conn,
    head: &RequestHead,
    exchange: Exchange,
    app: &App,
    reason: RejectReason,
) -> Next {
    let refusal = refusal(app, reason);
    let retry_after = rejected(app, reason);
    let retry_after = (refusal.status == StatusCode::SERVICE_UNAVAILABLE).then_some(retry_after);
    reply(conn, head, exchange, refusal.status, refusal.text, retry_after).await
}

/// Answers a request with one of tideway's own responses.
async fn reply(
    conn: &mut Conn,
    head: &RequestHead,
    exchange: Exchange,
    status: StatusCode,
    text: &'static str,
    retry_after: Option<u64>,
) -> Next {
    // A body tideway did not read would be taken for the next request.
    let unread = head.body != Framing::Empty;
    let close = unread || !head.keep_alive || conn.client.is_closing();
    if !write_own(conn, exchange, status, text, retry_after, close).await {
        return Next::Close;
    }
    match (close, unread) {
        (true, true) => Next::CloseUnread,
        (true, false) => Next::Close,
        (false, _) => Next::KeepAlive,
    }
}

/// Writes one of tideway's own responses; false if the client is gone.
async fn write_own(
    conn: &mut Conn,
    mut exchange: Exchange,
    status: StatusCode,
    text: &str,
    retry_after: Option<u64>,
    close: bool,
) -> bool {
    let response = head::own_response(status, text, retry_after, close);
    exchange.set_status(status);
    exchange.count(text.len());
    let (_, mut writer) = conn.stream.split();
    let written = write_to_client(&mut writer, &conn.client, &response)
        .await
        .is_ok();
    exchange.finish(
        None,
        if written {
            Outcome::Complete
        } else {
            Outcome::ClientGone
        },
    );
    written
}

/// Waits for `wait` on behalf of a client that has sent its whole request: `None` if it closes its
/// connection first.
async fn until_client_leaves<F: Future>(
    stream: &TcpStream,
    request_complete: bool,
    wait: F,
) -> Option<F::Output> {
    let mut wait = pin!(wait);
    let mut watching = request_complete;
    poll_fn(|cx| {
        if let Poll::Ready(output) = wait.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if watching {
            let mut byte = [0u8; 1];
            match stream.poll_peek(cx, &mut ReadBuf::new(&mut byte)) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                // A pipelined request: the client is still there, and its next bytes say nothing more.
                Poll::Ready(Ok(_)) => watching = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// Sends the request to the replica and relays the response, the request body going up meanwhile; gives
/// the exchange up when the replica keeps it waiting past `response_timeout`.
async fn relay(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    upstream: &mut TcpStream,
    trip: &Trip<'_>,
    exchange: &mut Exchange,
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
        exchange
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
                side: Side::Upstream,
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
async fn relay_body(
    client: &mut ReadHalf<'_>,
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
        if let Err(end) = write_unless_client_leaves(upstream, &buf[..taken], client.as_ref()).await {
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
    let mut byte = [0u8; 1];
    match client.peek(&mut byte).await {
        Ok(0) | Err(_) => BodyEnd::ClientLeft,
        Ok(_) => std::future::pending().await,
    }
}

/// Writes request body bytes to the replica. While the replica takes none, the client's socket is watched
/// for its end — past bytes still unread, which a read could not see — so a client that leaves frees its
/// seat even when the replica never reads.
async fn write_unless_client_leaves(
    upstream: &mut WriteHalf<'_>,
    bytes: &[u8],
    client: &TcpStream,
) -> Result<(), BodyEnd> {
    let mut write = pin!(upstream.write_all(bytes));
    let at_once = poll_fn(|cx| {
        Poll::Ready(match write.as_mut().poll(cx) {
            Poll::Ready(written) => Some(written),
            Poll::Pending => None,
        })
    })
    .await;
    let written = match (at_once, departure_watch(client)) {
        (Some(written), _) => written,
        (None, Some(watch)) => tokio::select! {
            written = &mut write => written,
            () = client_leaves(&watch) => return Err(BodyEnd::ClientLeft),
        },
        (None, None) => write.await,
    };
    written.map_err(|_| BodyEnd::UpstreamFailed)
}

/// A second registration of the client's socket with the reactor, so that waiting on it for the client's
/// end leaves the readiness the body reads rely on untouched.
fn departure_watch(client: &TcpStream) -> Option<TcpStream> {
    let fd = client.as_fd().try_clone_to_owned().ok()?;
    TcpStream::from_std(std::net::TcpStream::from(fd)).ok()
}

/// Completes once the peer of `watch` has closed its side or reset the connection.
async fn client_leaves(watch: &TcpStream) {
    loop {
        match watch.ready(Interest::READABLE).await {
            Ok(ready) if !ready.is_read_closed() => {
                // More body bytes arrived, which the body relay reads in its time: wait for the next event.
                let _ = watch.try_io(Interest::READABLE, || {
                    Err::<(), _>(io::ErrorKind::WouldBlock.into())
                });
            }
            _ => return,
        }
    }
}

/// Relays the replica's response to the client: interim responses, the final head rewritten, and the body
/// in its framing.
async fn relay_response(
    upstream: &mut ReadHalf<'_>,
    client: &mut WriteHalf<'_>,
    trip: &Trip<'_>,
    exchange: &mut Exchange,
) -> Relayed {
    let request = trip.head;
    let mut buf = Vec::with_capacity(RELAY_BUFFER);
    let mut out = Vec::new();
    let (head, close) = 'head: loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().clamp(RELAY_BUFFER, MAX_RELAY_BUFFER));
        }
        let read = upstream.read_buf(&mut buf).await;
        trip.replica.moved();
        match read {
            Ok(0) | Err(_) if buf.is_empty() && !trip.answered.load(Ordering::Relaxed) => {
                return Relayed::NoAnswer { written: true };
            }
            Ok(0) | Err(_) => {
                return Relayed::Broken {
                    side: Side::Upstream,
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
                head_request: request.method == Method::HEAD,
                http10_client: request.http10,
                upgrade_requested: request.upgrade,
                close,
                set_cookie: trip.set_cookie,
            };
            match head::parse_response(&buf, rewrite, &mut out) {
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
    exchange.set_status(head.status);
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
                    side: Side::Upstream,
                    answered: true,
                }
            };
        };
        extra |= taken < input.len();
        exchange.count(payload);
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
        if buf.len() == buf.capacity() && buf.capacity() < MAX_RELAY_BUFFER {
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
                    side: Side::Upstream,
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
async fn relay_to_client(writer: &mut WriteHalf<'_>, trip: &Trip<'_>, bytes: &[u8]) -> io::Result<()> {
    let _on_client = trip.replica.on_client();
    write_to_client(writer, trip.client, bytes).await
}

/// Writes `bytes` to the client, recording progress and stalls for its send timeout.
async fn write_to_client(
    writer: &mut WriteHalf<'_>,
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
        Poll::Ready(Ok(()))
    })
    .await
}

impl Tunnel {
    /// The tunnel's parts, with the client's socket and what the client sent past its upgrade request.
    pub(super) fn with_client(self, client: (TcpStream, Bytes), shared: &crate::Shared) -> TunnelParts {
        let settings = shared.settings.load();
        let evicted = ReplicaLink::of(self.seat.replica()).map(|link| Arc::clone(link.evicted()));
        TunnelParts {
            client,
            upstream: self.upstream,
            websocket: self.websocket,
            seat: self.seat,
            timeouts: self.timeouts,
            close_grace: self.close_grace,
            send_timeout: settings.send_timeout,
            access_log: settings.access_log,
            signals: [Some(Arc::clone(&shared.draining)), evicted],
        }
    }
}
