//! Forwarding an admitted request to its replica: the request rewritten for the hop, sent over a reused or
//! new connection (moving to another replica if one refuses the connection, sending again when that is
//! safe), and the response streamed back — or the exchange turned into a tunnel when both sides upgrade.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version, uri};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tideway_core::{App, ConnectionTimeouts, RejectReason, ReplicaId, jittered_age};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::Shared;
use crate::body::{Lease, ProxyBody};
use crate::client::{ClientConn, Upgraded};
use crate::exchange::Exchange;
use crate::handler::reply;
use crate::headers::{requested_upgrade, set_forwarded, strip_hop_by_hop};
use crate::request_body::UpstreamBody;
use crate::seat::Seat;
use crate::tunnel::{TunnelParts, TunnelTask};
use crate::upstream::{self, ReplicaLink, UpstreamSettings};

/// How many times one request is sent again: after a connection closed before taking it, or after a
/// reused connection dropped an idempotent request without answering.
const RETRIES: usize = 2;

/// One admitted request's way to its replica.
pub(crate) struct Forwarding<'a> {
    /// The proxy's settings, routes, clock and shutdown signal.
    pub(crate) shared: &'a Arc<Shared>,
    /// The client connection the request came on.
    pub(crate) client: &'a Arc<ClientConn>,
    /// The app the request was routed to.
    pub(crate) app: &'a Arc<App>,
}

/// What it takes to send a request again after a reused connection dropped it: kept only for requests
/// without a body whose method is idempotent (RFC 9110 §9.2.2), where sending twice is safe.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Forwarding<'_> {
    /// Sends `req` to the replica `seat` is on and returns the response for the client.
    pub(crate) async fn forward(
        &self,
        mut seat: Seat,
        req: Request<Incoming>,
        exchange: Exchange,
    ) -> Response<ProxyBody> {
        let app = self.app;
        let upgrade = requested_upgrade(req.headers());
        let websocket = upgrade
            .as_ref()
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let upgrading = upgrade.is_some();
        let idempotent = !upgrading && is_idempotent(req.method());
        let (mut req, body_sent) = self.upstream_request(req, upgrade);
        let replayable = idempotent && body_sent.is_none();
        let mut tried: Vec<ReplicaId> = Vec::new();
        let mut retries = 0;
        let (mut response, sender) = loop {
            let replica = Arc::clone(seat.replica());
            let settings = UpstreamSettings::from(&**self.shared.settings.load());
            let (mut sender, reused) = match upstream::checkout(&replica, &settings, &self.shared.shutdown)
                .await
            {
                Ok(checked_out) => checked_out,
                Err(error) => {
                    warn!(app = app.name(), replica = replica.name(), %error, "replica refused the connection");
                    replica.record_connect_failure(self.shared.clock.now());
                    tried.push(replica.id());
                    match app.seat_excluding(&tried) {
                        Ok(other) => {
                            // A session moves with its connection: the next one finds it on the new replica.
                            seat = match seat.session() {
                                Some(id) => Seat::Session(app.start_session(other, id)),
                                None => Seat::Own(other),
                            };
                            continue;
                        }
                        Err(_) => {
                            app.stats().record_reject(RejectReason::NoReplica);
                            return reply(StatusCode::BAD_GATEWAY, "no replica could be reached\n", exchange);
                        }
                    }
                }
            };
            replica.record_connect_success();
            let replay = (reused && replayable).then(|| Replay::of(&req));
            match sender.try_send_request(req).await {
                Ok(response) => break (response, sender),
                Err(mut error) => {
                    let again = match (error.take_message(), replay) {
                        // Never written: sending it elsewhere is always safe.
                        (Some(unsent), _) => Some(unsent),
                        // Written on a kept-alive connection the replica had just closed.
                        (None, Some(replay)) => Some(replay.request()),
                        (None, None) => None,
                    };
                    match again {
                        Some(again) if retries < RETRIES => {
                            retries += 1;
                            req = again;
                        }
                        _ => {
                            debug!(app = app.name(), replica = replica.name(), error = %error.error(), "replica failed the request");
                            return reply(
                                StatusCode::BAD_GATEWAY,
                                "the replica failed to answer\n",
                                exchange,
                            );
                        }
                    }
                }
            }
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if !upgrading {
                return reply(
                    StatusCode::BAD_GATEWAY,
                    "the replica switched protocols unasked\n",
                    exchange,
                );
            };
            // The connection's task hands the client socket over once this response is out.
            let client_upgrade = self.client.expect_upgrade();
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let (mut parts, _) = response.into_parts();
            let protocol = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers, protocol);
            self.spawn_tunnel(seat, client_upgrade, upstream_upgrade, websocket);
            let status = parts.status;
            return Response::from_parts(parts, ProxyBody::fixed(Bytes::new(), exchange.responded(status)));
        }
        let (mut parts, body) = response.into_parts();
        // A 426 must say which protocol to upgrade to (RFC 9110 §15.5.22).
        let required = (parts.status == StatusCode::UPGRADE_REQUIRED)
            .then(|| parts.headers.get(header::UPGRADE).cloned())
            .flatten();
        strip_hop_by_hop(&mut parts.headers, required);
        let settings = UpstreamSettings::from(&**self.shared.settings.load());
        let lease = Lease::new(seat, sender, body_sent, settings, Arc::clone(self.client));
        let status = parts.status;
        Response::from_parts(
            parts,
            ProxyBody::upstream(body, lease, exchange.responded(status)),
        )
    }

    /// The request as the replica receives it: origin-form URI over HTTP/1.1, hop-by-hop headers removed,
    /// `Host` set to the host the request was routed by, `X-Forwarded-*` set, HTTP/2 cookie fields joined.
    /// Also returns the flag telling when a streamed body has been sent whole.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        upgrade: Option<HeaderValue>,
    ) -> (Request<UpstreamBody>, Option<Arc<AtomicBool>>) {
        let (mut parts, body) = req.into_parts();
        // The authority of an absolute-form or HTTP/2 request is what routing used; the replica must see
        // the same host (RFC 9112 §3.2.2), not a different Host header sent alongside.
        if let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str().rsplit('@').next().unwrap_or_default())
        {
            parts.headers.insert(header::HOST, host);
        }
        if parts.version == Version::HTTP_2 {
            join_cookies(&mut parts.headers);
        }
        let host = parts.headers.get(header::HOST).cloned();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        set_forwarded(&mut parts.headers, self.client.peer().ip(), "http", host);
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let mut origin = uri::Parts::default();
            origin.path_and_query = parts.uri.path_and_query().cloned();
            parts.uri = Uri::from_parts(origin).unwrap_or_else(|_| Uri::from_static("/"));
        }
        parts.version = Version::HTTP_11;
        let (body, sent) = UpstreamBody::from_client(body);
        (Request::from_parts(parts, body), sent)
    }

    /// Runs the tunnel in its own task once both upgrades complete; the seat moves with it.
    fn spawn_tunnel(
        &self,
        seat: Seat,
        client_upgrade: oneshot::Receiver<Upgraded>,
        upstream_upgrade: OnUpgrade,
        websocket: bool,
    ) {
        let policy = self.app.policy();
        let timeouts = ConnectionTimeouts {
            max_age: policy
                .max_connection_age
                .map(|age| jittered_age(age, self.client.age_jitter())),
            inactive: policy.inactive_timeout,
            ..ConnectionTimeouts::default()
        };
        let close_grace = policy.close_grace;
        let (send_timeout, access_log) = {
            let settings = self.shared.settings.load();
            (settings.send_timeout, settings.access_log)
        };
        let closing = ReplicaLink::of(seat.replica(), &self.shared.shutdown)
            .map_or_else(|| self.shared.shutdown.clone(), |link| link.closing().clone());
        let clock = self.shared.clock;
        let tasks = self.shared.tasks.clone();
        // Waits for both sides to switch, then hands over to the tunnel's own task and ends: the state of
        // the handshake does not stay around for the life of the tunnel.
        self.shared.tasks.spawn(async move {
            let (client, upstream) = tokio::join!(client_upgrade, upstream_upgrade);
            let (Ok(client), Ok(upstream)) = (client, upstream) else {
                debug!("upgrade did not complete: a side went away");
                return;
            };
            let Ok(upstream) = upstream.downcast::<TokioIo<TcpStream>>() else {
                warn!("upgraded replica connection of an unexpected type");
                return;
            };
            let parts = TunnelParts {
                client,
                upstream: (upstream.io.into_inner(), upstream.read_buf),
                websocket,
                seat,
                timeouts,
                close_grace,
                send_timeout,
                access_log,
                closing,
            };
            tasks.spawn(TunnelTask::new(parts, clock));
        });
    }
}

impl Replay {
    fn of(req: &Request<UpstreamBody>) -> Self {
        Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        }
    }

    fn request(self) -> Request<UpstreamBody> {
        let mut req = Request::new(UpstreamBody::Empty);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Methods a client may expect to be repeated without harm (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// HTTP/2 clients may split the cookie header into several fields; HTTP/1.1 needs one, joined by "; "
/// (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_fields_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut headers);
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn only_idempotent_methods_are_replayed() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
