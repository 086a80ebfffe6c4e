//! One HTTP/1.1 exchange: the request checked, routed and seated, sent to its replica over a kept-alive
//! connection — elsewhere if the replica refuses the connection, again on a fresh connection when a kept
//! one turned out closed before the request went out on it — and the response relayed back as it comes,
//! each side held to its timeout; or, when the replica switches protocols, both sockets handed to a
//! tunnel.

mod departure;
mod own;
mod relay;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use tideway_core::{CloseReason, ConnectionTimeouts, jittered_age};
use tokio::net::TcpStream;
use tracing::debug;

use super::Conn;
use crate::Side;
use crate::claim::Claim;
use crate::client::ClientConn;
use crate::handler::{
    FAILED, MALFORMED, NOT_ROUTED, REDIRECTED, hsts_rule, hsts_value, https_redirect, screen, seat_for,
    session_cookie,
};
use crate::message::framing::{BodyCursor, Framing};
use crate::message::head::{self, Hsts, RequestHead, Said};
use crate::record::{Outcome, Record};
use crate::stall::{BODY_STALLED, RESPONSE_STALLED, ReplicaWait};
use crate::stream::ClientStream;
use crate::trace_log::{Refused, Traced};
use crate::tunnel::TunnelParts;
use crate::upstream::{Again, Attempts, ReplicaConn};

use departure::until_client_leaves;
pub(super) use own::refuse;
use own::{bad_gateway, reply, unseated};
use relay::relay;

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
    claim: Claim,
    trace: Option<Traced>,
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

/// How the request body's relay ended; it also watches for the client leaving once the body is sent.
enum BodyEnd {
    ClientLeft,
    Malformed,
    Stalled,
    UpstreamFailed,
}

/// Why a request goes to no replica: tideway answers it.
enum Unrouted {
    /// Refused, or routed nowhere.
    Refused(StatusCode, &'static str),
    /// Sent to HTTPS (`redirect_https`).
    Redirected(http::HeaderValue),
}

/// What the relay of one exchange reads.
struct Trip<'a> {
    client: &'a ClientConn,
    head: &'a RequestHead,
    set_cookie: Option<&'a [u8]>,
    hsts: Hsts<'a>,
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
    let (routed, record) = {
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
        let record = Record::open(
            conn.client.request_started(app.as_ref()),
            Some((head.method.as_str(), path)),
            app.as_ref().map(|app| (Arc::clone(app), shared.links.app(app))),
            Arc::clone(&shared.metrics),
            access_log,
        );
        let routed = match (screened, app) {
            (Err(refusal), _) => Err(Unrouted::Refused(refusal.status, refusal.text)),
            (Ok(()), None) => Err(Unrouted::Refused(StatusCode::NOT_FOUND, NOT_ROUTED)),
            (Ok(()), Some(app)) => {
                let target = text(&head.target).unwrap_or("/");
                match https_redirect(&shared, &conn.client, &app, host, target) {
                    Some(location) => Err(Unrouted::Redirected(location)),
                    None => {
                        let cookies = head.cookies.iter().map(|c| &conn.buf[c.clone()]);
                        let keys = shared.cookie_keys.load();
                        let presented = keys.presented(cookies, app.name(), SystemTime::now());
                        Ok((app, presented))
                    }
                }
            }
        };
        (routed, record)
    };
    conn.buf.drain(..head.len);
    let (app, presented) = match routed {
        Ok(routed) => routed,
        Err(Unrouted::Refused(status, text)) => {
            return reply(conn, &head, record, status, text, Said::Nothing).await;
        }
        Err(Unrouted::Redirected(location)) => {
            let said = Said::Location(location.as_bytes());
            return reply(
                conn,
                &head,
                record,
                StatusCode::PERMANENT_REDIRECT,
                REDIRECTED,
                said,
            )
            .await;
        }
    };
    // What of the body came with the head is checked before the head goes anywhere: a malformed chunked
    // body is refused whole, and no replica sees a request that tideway would cut short.
    if head.body == Framing::Chunked
        && BodyCursor::new(head.body)
            .advance(&conn.buf, &mut |_| {})
            .is_err()
    {
        let status = StatusCode::BAD_REQUEST;
        return reply(conn, &head, record, status, MALFORMED_BODY, Said::Nothing).await;
    }

    let waited = until_client_leaves(
        &conn.stream,
        head.body == Framing::Empty,
        seat_for(&shared, &app, presented.as_ref()),
    )
    .await;
    let trace = shared.trace.get();
    let mut record = record;
    let (claim, issue) = match waited {
        Some(Ok(seated)) => seated,
        Some(Err(reason)) => {
            record.refused(trace, &app, Refused::Rejected(reason));
            return unseated(conn, &head, record, &app, reason).await;
        }
        None => {
            record.refused(trace, &app, Refused::ClientGone);
            record.finish(None, Outcome::ClientGone);
            return Next::Close;
        }
    };
    record.seated(trace, &app);
    let cookie = session_cookie(&shared, &claim, presented.as_ref(), issue, conn.client.is_https());
    if head.host.is_none() {
        head::add_host(&mut head.forward, claim.replica().addr());
    }
    let hsts = hsts_value(&conn.client, &app);
    let policy = app.policy();
    let trip = Trip {
        client: &conn.client,
        head: &head,
        set_cookie: cookie.as_ref().map(|c| c.as_bytes()),
        hsts: hsts_rule(&conn.client, hsts.as_ref()),
        body_sent: AtomicBool::new(head.body == Framing::Empty),
        answered: AtomicBool::new(false),
        body_read_timeout: policy.body_read_timeout,
        response_timeout: policy.response_timeout,
        replica: ReplicaWait::new(),
    };
    drop(policy);
    let mut attempts = Attempts::new(&shared, &app);
    let mut unsent = claim;
    loop {
        let (claim, mut upstream) = match attempts.connect(unsent).await {
            Ok(connected) => connected,
            Err(reason) => {
                // Seated, then no replica took the connection: a refusal, not a seat held.
                record.refused(trace, &app, Refused::Rejected(reason));
                return unseated(conn, &head, record, &app, reason).await;
            }
        };
        let replica = Arc::clone(&upstream.replica);
        let relayed = {
            // The connection's watch closes it gracefully if this replica is evicted meanwhile.
            let drain_timeout = app.policy().drain_timeout;
            let _on_replica = conn.client.serving_on(upstream.link.evicted(), drain_timeout);
            relay(
                &mut conn.stream,
                &mut conn.buf,
                &mut upstream.stream,
                &trip,
                &mut record,
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
                if reusable {
                    let ReplicaConn { link, stream, .. } = upstream;
                    link.put(&replica, stream, attempts.settings());
                }
                drop(claim);
                record.finish(Some(&replica), Outcome::Complete);
                return if close { unread } else { Next::KeepAlive };
            }
            Relayed::NoAnswer { written } => match attempts.again(claim, &upstream, written).await {
                Again::Retry(again) => {
                    unsent = again;
                    trip.answered.store(false, Ordering::Relaxed);
                }
                Again::Failed => return bad_gateway(conn, &head, record, &app, &replica, FAILED).await,
                Again::Rejected(reason) => {
                    record.refused(trace, &app, Refused::Rejected(reason));
                    return unseated(conn, &head, record, &app, reason).await;
                }
            },
            Relayed::Stalled { side, answered } => {
                let (reason, status, text) = match side {
                    Side::Client => (
                        CloseReason::BodyTimeout,
                        StatusCode::REQUEST_TIMEOUT,
                        BODY_STALLED,
                    ),
                    Side::Replica => (
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
                drop(claim);
                if answered {
                    record.finish(Some(&replica), Outcome::UpstreamFailed);
                    return Next::Close;
                }
                return reply(conn, &head, record, status, text, Said::Nothing).await;
            }
            Relayed::MalformedBody { answered } => {
                drop(claim);
                if answered {
                    record.finish(Some(&replica), Outcome::ClientGone);
                    return Next::Close;
                }
                let status = StatusCode::BAD_REQUEST;
                return reply(conn, &head, record, status, MALFORMED_BODY, Said::Nothing).await;
            }
            Relayed::Broken {
                side: Side::Replica,
                answered: false,
            } => return bad_gateway(conn, &head, record, &app, &replica, FAILED).await,
            Relayed::BadResponse => {
                return bad_gateway(conn, &head, record, &app, &replica, MALFORMED).await;
            }
            Relayed::Broken { side, .. } => {
                let outcome = match side {
                    Side::Replica => {
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
                drop(claim);
                record.finish(Some(&replica), outcome);
                return Next::Close;
            }
            Relayed::Upgrade { rest } => {
                let trace = record.take_trace();
                record.finish(Some(&replica), Outcome::Complete);
                let policy = app.policy();
                return Next::Upgrade(Box::new(Tunnel {
                    upstream: (upstream.stream, Bytes::from(rest)),
                    websocket: head.websocket,
                    claim,
                    trace,
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

/// The body of a `400`: the request body broke its chunked framing.
const MALFORMED_BODY: &str = "malformed chunked body\n";

impl Tunnel {
    /// The tunnel's parts, with the client's socket and what the client sent past its upgrade request.
    pub(super) fn with_client(self, client: (ClientStream, Bytes), shared: &crate::Shared) -> TunnelParts {
        let settings = shared.settings.load();
        let evicted = Arc::clone(shared.links.replica(self.claim.replica()).evicted());
        TunnelParts {
            client,
            upstream: self.upstream,
            websocket: self.websocket,
            app_link: shared.links.app(self.claim.app()),
            claim: self.claim,
            trace: self.trace,
            timeouts: self.timeouts,
            close_grace: self.close_grace,
            send_timeout: settings.send_timeout,
            access_log: settings.access_log,
            signals: [Some(Arc::clone(&shared.draining)), Some(evicted)],
        }
    }
}
