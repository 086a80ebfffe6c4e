//! One request, from routing to admission: find the app, check the request is one tideway serves, and get
//! it a seat — now, after waiting in the queue, or after waiting for a replica to start — then hand it to
//! forwarding.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tideway_core::{Affinity, App, Entry, GaveUp, JoinSession, RejectReason, Seat, SessionGrant};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::Shared;
use crate::body::ProxyBody;
use crate::claim::Claim;
use crate::client::ClientConn;
use crate::forward::Forwarding;
use crate::message::head::Hsts;
use crate::queue::{wait_for_seat, wait_in_session};
use crate::record::Record;
use crate::refusal::Refusal;
use crate::sessions::{Presented, cookie_values, new_session_id, spawn_session_expiry};
use crate::trace_log::Refused;

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
        self.client.on_data();
        let host = request_host(&req);
        let host_fields = req.headers().get_all(header::HOST).iter().count();
        if let Err(refusal) = screen(req.method(), host_fields, host, req.version() == Version::HTTP_10) {
            return reply(refusal.status, refusal.text, self.record(&req, None));
        }
        // HTTP/1.1 heads are held to max_headers by tideway's own parser; HTTP/2 heads arrive here whole.
        if req.headers().len() > self.shared.settings.load().max_headers {
            return reply(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields\n",
                self.record(&req, None),
            );
        }
        let app = self.shared.routes.load().lookup(host, req.uri().path()).cloned();
        let Some(app) = app else {
            return reply(StatusCode::NOT_FOUND, NOT_ROUTED, self.record(&req, None));
        };
        let mut record = self.record(&req, Some(&app));
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Some(location) = https_redirect(&self.shared, &self.client, &app, host, target) {
            let mut response = reply(StatusCode::PERMANENT_REDIRECT, REDIRECTED, record);
            response.headers_mut().insert(header::LOCATION, location);
            return response;
        }
        let presented = presented_session(&self.shared, req.headers(), &app);
        let trace = self.shared.trace.get();
        match seat_for(&self.shared, &app, presented.as_ref()).await {
            Ok((claim, issue)) => {
                record.seated(trace, &app);
                let secure = self.client.is_https();
                let cookie = session_cookie(&self.shared, &claim, presented.as_ref(), issue, secure);
                let forwarding = Forwarding {
                    shared: &self.shared,
                    client: &self.client,
                    app: &app,
                };
                let mut response = forwarding.forward(claim, req, record).await;
                if let Some(cookie) = cookie {
                    response.headers_mut().append(header::SET_COOKIE, cookie);
                }
                let hsts = hsts_value(&self.client, &app);
                hsts_rule(&self.client, hsts.as_ref()).apply(response.headers_mut());
                response
            }
            Err(reason) => {
                record.refused(trace, &app, Refused::Rejected(reason));
                unavailable(&app, reason, record)
            }
        }
    }

    /// Opens the record of `req`, routed to `app` if it was, and marks a request in flight on the client
    /// connection until its response ends.
    fn record(&self, req: &Request<Incoming>, app: Option<&Arc<App>>) -> Record {
        Record::open(
            self.client.request_started(app),
            Some((req.method().as_str(), req.uri().path())),
            app.map(|app| (Arc::clone(app), self.shared.links.app(app))),
            Arc::clone(&self.shared.metrics),
            self.shared.settings.load().access_log,
        )
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

/// A seat for a new connection: now if one is free (and nobody waits), else after queueing — or, for an
/// app with no ready replica that starts them on demand, after waiting for one to start.
pub(crate) async fn admit(shared: &Shared, app: &Arc<App>) -> Result<Seat, RejectReason> {
    let (timeout, timed_out) = match app.enter() {
        Entry::Seated(seat) => return Ok(seat),
        Entry::Wait { timeout, timed_out } => (timeout, timed_out),
        Entry::Refused(reason) => return Err(reason),
    };
    let started = Instant::now();
    let seat = wait_for_seat(app, timeout, timed_out).await;
    shared.links.app(app).metrics.queue_wait(started.elapsed());
    seat
}

/// A seat for a request routed to `app`. For a cookie-affinity app: a share of the seat of the session the
/// request presents — known here, or (its cookie naming the replica) adopted from another instance —
/// waiting in the session's own queue when it is at its connection limit, or finding it a new seat when
/// it has none; else a seat of its own that starts a new session. Returns, with the claim, whether the
/// session's cookie must be written: for a new session, or one placed anew.
pub(crate) async fn seat_for(
    shared: &Shared,
    app: &Arc<App>,
    presented: Option<&Presented>,
) -> Result<(Claim, bool), RejectReason> {
    if app.policy().affinity == Affinity::None {
        return admit(shared, app).await.map(|seat| (Claim::Own(seat), false));
    }
    let Some(presented) = presented else {
        return start_session(shared, app).await;
    };
    let id = presented.id;
    let joined = match app.join_session(id) {
        JoinSession::Unknown => adopt(shared, app, presented).await,
        known => known,
    };
    let grant = match joined {
        JoinSession::Joined(share) => SessionGrant::Joined(share),
        JoinSession::Place(placement) => SessionGrant::Place(placement),
        JoinSession::Wait(queue) => wait_in_session(queue, app.policy().queue_timeout).await?,
        JoinSession::Unknown => {
            let seat = admit(shared, app).await?;
            expire_sessions_of(shared, app);
            return Ok((Claim::Share(app.resume_session(seat, id)), true));
        }
    };
    match grant {
        SessionGrant::Joined(share) => {
            expire_sessions_of(shared, app);
            Ok((Claim::Share(share), false))
        }
        SessionGrant::Place(placement) => {
            let seat = admit(shared, app).await?;
            Ok((Claim::Share(placement.seated(seat)), true))
        }
    }
}

/// Takes in a session unknown here on the replica its cookie names. With peers, another instance may hold
/// it vacant in its grace: when the seat could be taken here, that instance is told to give its own back
/// (in the background); when the replica is full as counted here — that seat may be what fills it — the
/// seat is asked for, and moves here if given up (or is shared, if the session is open there too).
async fn adopt(shared: &Shared, app: &Arc<App>, presented: &Presented) -> JoinSession {
    let (id, replica) = (presented.id, presented.replica.as_str());
    let adopted = app.adopt_session(id, replica);
    let Some(holders) = shared.session_holders.get() else {
        return adopted;
    };
    match adopted {
        JoinSession::Joined(share) => {
            let (holders, app) = (Arc::clone(holders), app.name().to_owned());
            tokio::spawn(async move { holders.hand_over(&app, id).await });
            JoinSession::Joined(share)
        }
        JoinSession::Unknown if app.has_replica_named(replica) => {
            match holders.hand_over(app.name(), id).await {
                GaveUp::Released | GaveUp::Open => app.adopt_session_held_elsewhere(id, replica),
                GaveUp::Forgotten | GaveUp::Unknown => JoinSession::Unknown,
            }
        }
        other => other,
    }
}

/// A seat of its own for a connection that starts a new, tentative session.
async fn start_session(shared: &Shared, app: &Arc<App>) -> Result<(Claim, bool), RejectReason> {
    let seat = admit(shared, app).await?;
    let Some(id) = new_session_id() else {
        warn!(
            app = app.name(),
            "no randomness for a session id; connection placed without affinity"
        );
        return Ok((Claim::Own(seat), false));
    };
    expire_sessions_of(shared, app);
    Ok((Claim::Share(app.start_session(seat, id)), true))
}

/// Starts the task expiring `app`'s vacant sessions, unless it runs already.
fn expire_sessions_of(shared: &Shared, app: &Arc<App>) {
    if shared.links.app(app).claim_session_expiry() {
        spawn_session_expiry(app, shared.clock);
    }
}

/// Where a request for `target` at `host` goes instead when it came over plain HTTP and its app has
/// `redirect_https`: the same host (without its port) and target over HTTPS, on `https_port`.
pub(crate) fn https_redirect(
    shared: &Shared,
    client: &ClientConn,
    app: &App,
    host: Option<&str>,
    target: &str,
) -> Option<HeaderValue> {
    if client.is_https() || !app.policy().redirect_https {
        return None;
    }
    let host = host?;
    let name = match host.strip_prefix('[') {
        Some(v6) => &host[..v6.find(']').map_or(host.len(), |end| end + 2)],
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let port = shared.settings.load().https_port();
    let location = if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    };
    HeaderValue::try_from(location).ok()
}

/// The body of a `308` to HTTPS.
pub(crate) const REDIRECTED: &str = "this app is served over HTTPS\n";

/// The `Strict-Transport-Security` value of responses to `client` for `app`: only over TLS, and only when
/// the app sets `hsts_max_age`.
pub(crate) fn hsts_value(client: &ClientConn, app: &App) -> Option<HeaderValue> {
    let max_age = app.policy().hsts_max_age.filter(|_| client.is_https())?;
    HeaderValue::try_from(format!("max-age={}", max_age.as_secs())).ok()
}

/// What becomes of the replica's `Strict-Transport-Security` field, tideway's own value being `own`.
pub(crate) fn hsts_rule<'a>(client: &ClientConn, own: Option<&'a HeaderValue>) -> Hsts<'a> {
    match own {
        Some(value) => Hsts::Set(value.as_bytes()),
        None if client.is_https() => Hsts::Keep,
        None => Hsts::Drop,
    }
}

/// The affinity cookie to write with the response to a connection holding `claim`: when its session is
/// new or was placed anew (`issue`), when the presented cookie names another replica than the session's
/// (it moved), and when the presented one is past half its life.
pub(crate) fn session_cookie(
    shared: &Shared,
    claim: &Claim,
    presented: Option<&Presented>,
    issue: bool,
    secure: bool,
) -> Option<HeaderValue> {
    let Claim::Share(share) = claim else {
        return None;
    };
    let keys = shared.cookie_keys.load();
    let now = SystemTime::now();
    let replica = share.replica().name();
    let write = issue || presented.is_none_or(|p| p.replica != replica || keys.due_for_renewal(p, now));
    write
        .then(|| keys.cookie(share.app().name(), share.id(), replica, now, secure))
        .flatten()
}

/// The session cookie `headers` present for `app`, if it is one tideway signed and still honours.
pub(crate) fn presented_session(shared: &Shared, headers: &http::HeaderMap, app: &App) -> Option<Presented> {
    let keys = shared.cookie_keys.load();
    keys.presented(cookie_values(headers), app.name(), SystemTime::now())
}

/// The body of a `404`: no route matched.
pub(crate) const NOT_ROUTED: &str = "no app is routed here\n";

/// Checks what every request must satisfy before it is routed, whatever its protocol.
pub(crate) fn screen(
    method: &Method,
    host_fields: usize,
    host: Option<&str>,
    http10: bool,
) -> Result<(), Refusal> {
    let refuse = |status, text| Err(Refusal { status, text });
    if *method == Method::CONNECT {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported: tideway is not a forward proxy\n",
        );
    }
    if host_fields > 1 {
        return refuse(StatusCode::BAD_REQUEST, "more than one Host header\n");
    }
    if host.is_none() && !http10 {
        return refuse(StatusCode::BAD_REQUEST, "missing Host header\n");
    }
    Ok(())
}

/// Counts a connection `app` could not seat for `reason`, and says what it is told: a lack of capacity
/// (`503`, with a `Retry-After` in seconds, 1–60), or, when replicas exist and none could be reached, a
/// gateway failure (`502`). While failed starts back off with none under way, the app lacks capacity and
/// the client is told to come back when the next start is due; otherwise after the app's queue timeout,
/// so that it finds the queue as it would have after waiting.
pub(crate) fn rejection(app: &App, reason: RejectReason) -> (Refusal, Option<u64>) {
    app.stats().record_reject(reason);
    debug!(app = app.name(), reason = reason.as_str(), "connection rejected");
    let backing_off = app.starts_paused_for().filter(|_| !app.has_replica_on_its_way());
    if reason == RejectReason::NoReplica && backing_off.is_none() {
        let refusal = Refusal {
            status: StatusCode::BAD_GATEWAY,
            text: UNREACHABLE,
        };
        return (refusal, None);
    }
    let wait = backing_off.unwrap_or_else(|| app.policy().queue_timeout);
    let refusal = Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        text: UNAVAILABLE,
    };
    (refusal, Some(wait.as_secs_f64().ceil().clamp(1.0, 60.0) as u64))
}

/// The body of a `502`: no replica took the connection.
pub(crate) const UNREACHABLE: &str = "no replica could be reached\n";

/// The body of a `503`: no capacity.
pub(crate) const UNAVAILABLE: &str = "no capacity for this app right now\n";

/// The host a request is for: the URI's authority (absolute-form, HTTP/2 `:authority`) or `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.host())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// A short plain-text response of tideway's own.
pub(crate) fn reply(status: StatusCode, text: &'static str, record: Record) -> Response<ProxyBody> {
    let body = ProxyBody::fixed(Bytes::from_static(text.as_bytes()), record.responded(status));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The answer to a connection `app` could not seat (see [`rejection`]).
pub(crate) fn unavailable(app: &App, reason: RejectReason, record: Record) -> Response<ProxyBody> {
    let (refusal, retry_after) = rejection(app, reason);
    let mut response = reply(refusal.status, refusal.text, record);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The body of a `502`: the replica took the connection but did not answer.
pub(crate) const FAILED: &str = "the replica failed to answer\n";
/// The body of a `502`: the replica's answer was not HTTP tideway can relay.
pub(crate) const MALFORMED: &str = "the replica sent a malformed response\n";
