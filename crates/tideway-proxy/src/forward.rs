//! Forwarding an admitted HTTP/2 request to its replica over HTTP/1.1: the request rewritten for the hop,
//! sent over a reused or new connection (moving to another replica if one refuses the connection, sending
//! again when that is safe), and the response streamed back.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version, uri};
use hyper::body::Incoming;
use tideway_core::{App, RejectReason, Replica, ReplicaId};
use tracing::{debug, warn};

use crate::Shared;
use crate::body::{Lease, ProxyBody};
use crate::client::ClientConn;
use crate::exchange::Exchange;
use crate::handler::reply;
use crate::headers::{set_forwarded, strip_hop_by_hop};
use crate::request_body::UpstreamBody;
use crate::seat::Seat;
use crate::upstream::{self, UpstreamSettings};

/// How many times one request is sent again: after a connection closed before taking it, or after a
/// reused connection dropped an idempotent request without answering.
pub(crate) const RETRIES: usize = 2;

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
        let idempotent = is_idempotent(req.method());
        let (mut req, body_sent) = self.upstream_request(req);
        let replayable = idempotent && body_sent.is_none();
        let mut tried: Vec<ReplicaId> = Vec::new();
        let mut retries = 0;
        let (response, sender) = loop {
            let replica = Arc::clone(seat.replica());
            let settings = UpstreamSettings::from(&**self.shared.settings.load());
            let (mut sender, reused) = match upstream::checkout(&replica, &settings).await {
                Ok(checked_out) => checked_out,
                Err(error) => match reseat(app, seat, &replica, &error, &mut tried, self.shared) {
                    Some(other) => {
                        seat = other;
                        continue;
                    }
                    None => return reply(StatusCode::BAD_GATEWAY, UNREACHABLE, exchange),
                },
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
            // HTTP/2 requests cannot ask to switch protocols.
            return reply(
                StatusCode::BAD_GATEWAY,
                "the replica switched protocols unasked\n",
                exchange,
            );
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
    fn upstream_request(&self, req: Request<Incoming>) -> (Request<UpstreamBody>, Option<Arc<AtomicBool>>) {
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
        strip_hop_by_hop(&mut parts.headers, None);
        set_forwarded(&mut parts.headers, self.client.peer().ip(), "http", host);
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let mut origin = uri::Parts::default();
            origin.path_and_query = parts.uri.path_and_query().cloned();
            parts.uri = Uri::from_parts(origin).unwrap_or_else(|_| Uri::from_static("/"));
        }
        parts.version = Version::HTTP_11;
        let (body, sent) = UpstreamBody::from_client(body, self.client);
        (Request::from_parts(parts, body), sent)
    }
}

/// The body of a `502`: no replica took the connection.
pub(crate) const UNREACHABLE: &str = "no replica could be reached\n";

/// After `replica` refused a connection: records the failure and finds the request a seat on another
/// replica — `None` (counted as rejected) if none is left to try. A session moves with its connection,
/// so its next one finds it on the new replica.
pub(crate) fn reseat(
    app: &Arc<App>,
    seat: Seat,
    replica: &Replica,
    error: &std::io::Error,
    tried: &mut Vec<ReplicaId>,
    shared: &Shared,
) -> Option<Seat> {
    warn!(app = app.name(), replica = replica.name(), %error, "replica refused the connection");
    replica.record_connect_failure(shared.clock.now());
    tried.push(replica.id());
    match app.seat_excluding(tried) {
        Ok(other) => Some(match seat {
            Seat::Session(share) => Seat::Session(share.move_to(other)),
            Seat::Own(_) => Seat::Own(other),
        }),
        Err(_) => {
            app.stats().record_reject(RejectReason::NoReplica);
            None
        }
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
pub(crate) fn is_idempotent(method: &Method) -> bool {
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
