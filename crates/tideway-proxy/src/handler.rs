//! One request, from routing to the response: find the app, get a seat (now, or after waiting in the
//! queue), forward to the replica (moving to another replica if it refuses the connection), and stream the
//! response back — or turn the exchange into a tunnel when both sides agree to upgrade.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version, uri};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tideway_core::{
    Admission, Affinity, App, ConnectionGuard, ConnectionTimeouts, JoinSession, RejectReason, ReplicaId,
    SessionId, jittered_age,
};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::Shared;
use crate::body::{Lease, ProxyBody};
use crate::client::{ClientConn, InFlight, TrackedStream};
use crate::headers::{requested_upgrade, set_forwarded, strip_hop_by_hop};
use crate::queue::wait_for_seat;
use crate::seat::Seat;
use crate::sessions::{ensure_expiry, new_session_id, presented_session, session_cookie};
use crate::tunnel::{self, TunnelParts};
use crate::upstream;

/// How many times a request is re-sent after a replica connection closed before taking it.
const STALE_CONNECTION_RETRIES: usize = 2;

/// The request handler of one client connection.
#[derive(Clone)]
pub(crate) struct Handler {
    shared: Arc<Shared>,
    client: Arc<ClientConn>,
}

impl Handler {
    /// A handler for requests arriving on `client`.
    pub(crate) fn new(shared: Arc<Shared>, client: Arc<ClientConn>) -> Self {
        Handler { shared, client }
    }

    async fn handle(self, req: Request<Incoming>) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            let in_flight = self.client.request_started(None);
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported: tideway is not a forward proxy\n",
                in_flight,
            );
        }
        let host = request_host(&req);
        if host.is_none() && req.version() == Version::HTTP_11 {
            let in_flight = self.client.request_started(None);
            return reply(StatusCode::BAD_REQUEST, "missing Host header\n", in_flight);
        }
        let app = self.shared.routes.load().lookup(host, req.uri().path()).cloned();
        let Some(app) = app else {
            let in_flight = self.client.request_started(None);
            return reply(StatusCode::NOT_FOUND, "no app is routed here\n", in_flight);
        };
        let in_flight = self.client.request_started(Some(&app));
        let seat = match app.policy().affinity {
            Affinity::None => admit(&app).await.map(|seat| (Seat::Own(seat), None)),
            Affinity::Cookie => self.session_seat(&app, req.headers()).await,
        };
        match seat {
            Ok((seat, issued)) => self.forward(app, seat, issued, req, in_flight).await,
            Err(reason) => {
                app.stats().record_reject(reason);
                debug!(app = app.name(), reason = reason.as_str(), "connection rejected");
                unavailable(&app, in_flight)
            }
        }
    }

    /// A seat for a request of a cookie-affinity app: a share of its session's if it presents a live one,
    /// else a seat of its own that starts a new session (whose id is returned, to be issued as a cookie).
    async fn session_seat(
        &self,
        app: &Arc<App>,
        headers: &http::HeaderMap,
    ) -> Result<(Seat, Option<SessionId>), RejectReason> {
        if let Some(id) = presented_session(headers, app.name()) {
            match app.join_session(id) {
                JoinSession::Joined(seat) => return Ok((Seat::Session(seat), None)),
                JoinSession::Full => return admit(app).await.map(|seat| (Seat::Own(seat), None)),
                JoinSession::Unknown => {}
            }
        }
        let seat = admit(app).await?;
        let Some(id) = new_session_id() else {
            warn!(
                app = app.name(),
                "no randomness for a session id; connection placed without affinity"
            );
            return Ok((Seat::Own(seat), None));
        };
        ensure_expiry(app, self.shared.clock);
        Ok((Seat::Session(app.start_session(seat, id)), Some(id)))
    }

    async fn forward(
        &self,
        app: Arc<App>,
        mut seat: Seat,
        issued: Option<SessionId>,
        mut req: Request<Incoming>,
        in_flight: InFlight,
    ) -> Response<ProxyBody> {
        let upgrade = requested_upgrade(req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let websocket = upgrade
            .as_ref()
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let mut req = self.upstream_request(req, upgrade);
        let mut tried: Vec<ReplicaId> = Vec::new();
        let mut stale_retries = 0;
        let (mut response, sender) = loop {
            let replica = Arc::clone(seat.replica());
            let mut sender = match upstream::checkout(&replica, &self.shared.upstream).await {
                Ok(sender) => sender,
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
                            return reply(
                                StatusCode::BAD_GATEWAY,
                                "no replica could be reached\n",
                                in_flight,
                            );
                        }
                    }
                }
            };
            replica.record_connect_success();
            match sender.try_send_request(req).await {
                Ok(response) => break (response, sender),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if stale_retries < STALE_CONNECTION_RETRIES => {
                        stale_retries += 1;
                        req = unsent;
                    }
                    _ => {
                        debug!(app = app.name(), replica = replica.name(), error = %error.error(), "replica failed the request");
                        return reply(
                            StatusCode::BAD_GATEWAY,
                            "the replica failed to answer\n",
                            in_flight,
                        );
                    }
                },
            }
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return reply(
                    StatusCode::BAD_GATEWAY,
                    "the replica switched protocols unasked\n",
                    in_flight,
                );
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let (mut parts, _) = response.into_parts();
            let protocol = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers, protocol);
            issue_cookie(&mut parts.headers, &app, issued);
            self.spawn_tunnel(&app, seat, client_upgrade, upstream_upgrade, websocket);
            return Response::from_parts(parts, ProxyBody::fixed(Bytes::new(), in_flight));
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, None);
        issue_cookie(&mut parts.headers, &app, issued);
        let lease = Lease::new(seat, Some(sender), self.shared.upstream, Arc::clone(&self.client));
        Response::from_parts(parts, ProxyBody::upstream(body, lease, in_flight))
    }

    /// The request as the replica receives it: origin-form URI over HTTP/1.1, hop-by-hop headers removed,
    /// `Host` kept (or taken from an HTTP/2 `:authority`), `X-Forwarded-*` set.
    fn upstream_request(&self, req: Request<Incoming>, upgrade: Option<HeaderValue>) -> Request<Incoming> {
        let (mut parts, body) = req.into_parts();
        let authority = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str().rsplit('@').next().unwrap_or(a.as_str())).ok());
        let host = parts.headers.get(header::HOST).cloned().or(authority);
        strip_hop_by_hop(&mut parts.headers, upgrade);
        set_forwarded(&mut parts.headers, self.client.peer().ip(), "http", host.clone());
        if let Some(host) = host
            && !parts.headers.contains_key(header::HOST)
        {
            parts.headers.insert(header::HOST, host);
        }
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let mut origin = uri::Parts::default();
            origin.path_and_query = parts.uri.path_and_query().cloned();
            parts.uri = Uri::from_parts(origin).unwrap_or_else(|_| Uri::from_static("/"));
        }
        parts.version = Version::HTTP_11;
        Request::from_parts(parts, body)
    }

    /// Runs the tunnel in its own task once both upgrades complete; the seat moves with it.
    fn spawn_tunnel(
        &self,
        app: &Arc<App>,
        seat: Seat,
        client_upgrade: OnUpgrade,
        upstream_upgrade: OnUpgrade,
        websocket: bool,
    ) {
        let policy = app.policy();
        let timeouts = ConnectionTimeouts {
            max_age: policy
                .max_connection_age
                .map(|age| jittered_age(age, self.client.age_jitter())),
            inactive: policy.inactive_timeout,
            keepalive: None,
            header_read: None,
        };
        let close_grace = policy.close_grace;
        let shutdown = self.shared.shutdown.clone();
        let clock = self.shared.clock;
        self.shared.tasks.spawn(async move {
            let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok(both) => both,
                Err(error) => {
                    debug!(%error, "upgrade did not complete");
                    return;
                }
            };
            let (Ok(client), Ok(upstream)) = (
                client.downcast::<TokioIo<TrackedStream>>(),
                upstream.downcast::<TokioIo<TcpStream>>(),
            ) else {
                warn!("upgraded connection of an unexpected type");
                return;
            };
            let parts = TunnelParts {
                client: (client.io.into_inner().into_inner(), client.read_buf),
                upstream: (upstream.io.into_inner(), upstream.read_buf),
                websocket,
                seat,
                timeouts,
                close_grace,
                shutdown,
            };
            tunnel::run(parts, clock).await;
        });
    }
}

impl tower::Service<Request<Incoming>> for Handler {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let handler = self.clone();
        Box::pin(async move { Ok(handler.handle(req).await) })
    }
}

/// A seat for a new connection: now if one is free (and nobody waits), else after queueing.
async fn admit(app: &Arc<App>) -> Result<ConnectionGuard, RejectReason> {
    match app.admit() {
        Admission::Seated(seat) => Ok(seat),
        Admission::Wait => wait_for_seat(app, app.policy().queue_timeout).await,
        Admission::NoReplica => Err(RejectReason::NoReplica),
    }
}

/// Gives the client its new session's cookie.
fn issue_cookie(headers: &mut http::HeaderMap, app: &App, issued: Option<SessionId>) {
    if let Some(cookie) = issued.and_then(|id| session_cookie(app.name(), id)) {
        headers.append(header::SET_COOKIE, cookie);
    }
}

/// The host a request is for: the URI's authority (absolute-form, HTTP/2 `:authority`) or `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.host())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
}

fn reply(status: StatusCode, text: &'static str, in_flight: InFlight) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::fixed(Bytes::from_static(text.as_bytes()), in_flight));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `503` with a `Retry-After` of the app's queue timeout (1–60 s): a client told to come back then finds
/// the queue as it would have after waiting.
fn unavailable(app: &App, in_flight: InFlight) -> Response<ProxyBody> {
    let mut response = reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "no capacity for this app right now\n",
        in_flight,
    );
    let seconds = app.policy().queue_timeout.as_secs_f64().ceil().clamp(1.0, 60.0) as u64;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}
