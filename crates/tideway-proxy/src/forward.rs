//! Forwarding an admitted HTTP/2 request to its replica over HTTP/1.1: the request rewritten for the hop,
//! sent over a reused or new connection (elsewhere if the replica refuses the connection, again only if it
//! never went out), and the response streamed back; and where a request goes when its replica fails it.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version, uri};
use hyper::body::Incoming;
use tideway_core::{App, CloseReason, RejectReason, Replica};
use tracing::{debug, warn};

use crate::Shared;
use crate::body::{Lease, ProxyBody};
use crate::client::ClientConn;
use crate::exchange::Exchange;
use crate::handler::{FAILED, admit, reply, unavailable};
use crate::headers::{set_forwarded, strip_hop_by_hop};
use crate::request_body::{BodyProgress, UpstreamBody};
use crate::seat::Seat;
use crate::stall::{BODY_STALLED, RESPONSE_STALLED, ReplicaWait};
use crate::upstream::{self, Sender, UpstreamSettings};

/// How many times one request is sent again after a kept-alive connection failed before the request was
/// written to it. A request written to a replica is never sent again (README, "Failures"): the replica may
/// have acted on it.
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

impl Forwarding<'_> {
    /// Sends `req` to the replica `seat` is on and returns the response for the client.
    pub(crate) async fn forward(
        &self,
        mut seat: Seat,
        req: Request<Incoming>,
        exchange: Exchange,
    ) -> Response<ProxyBody> {
        let app = self.app;
        let policy = app.policy();
        let (body_read_timeout, response_timeout) = (policy.body_read_timeout, policy.response_timeout);
        drop(policy);
        let (mut req, body) = self.upstream_request(req, body_read_timeout);
        let mut reseat = Reseat {
            app,
            shared: self.shared,
            moves: 0,
        };
        let mut retries = 0;
        let (response, sender, link) = loop {
            let replica = Arc::clone(seat.replica());
            let settings = UpstreamSettings::from(&**self.shared.settings.load());
            let link = self.shared.links.replica(&replica);
            let (mut sender, reused) = match upstream::checkout(&link, &replica, &settings).await {
                Ok(checked_out) => checked_out,
                Err(error) => match reseat.after(seat, &replica, &error).await {
                    Ok(other) => {
                        seat = other;
                        continue;
                    }
                    Err(reason) => return unavailable(app, reason, exchange),
                },
            };
            replica.record_connect_success();
            match answer(&mut sender, req, body.as_deref(), response_timeout).await {
                Answer::Head(response) => break (response, sender, link),
                Answer::Stalled => {
                    app.stats().record_close(CloseReason::ResponseTimeout);
                    return reply(StatusCode::GATEWAY_TIMEOUT, RESPONSE_STALLED, exchange);
                }
                Answer::Failed(_) if body.as_ref().is_some_and(|body| body.is_stalled()) => {
                    app.stats().record_close(CloseReason::BodyTimeout);
                    return reply(StatusCode::REQUEST_TIMEOUT, BODY_STALLED, exchange);
                }
                Answer::Failed(mut error) => match error.take_message() {
                    // Never written, on a kept-alive connection the replica had closed: send it again.
                    Some(unsent) if reused && retries < RETRIES => {
                        retries += 1;
                        req = unsent;
                    }
                    // A new connection that failed before taking the request: the replica is failing.
                    Some(unsent) if !reused => {
                        let error = std::io::Error::other(error.into_error());
                        match reseat.after(seat, &replica, &error).await {
                            Ok(other) => {
                                seat = other;
                                req = unsent;
                            }
                            Err(reason) => return unavailable(app, reason, exchange),
                        }
                    }
                    _ => {
                        debug!(app = app.name(), replica = replica.name(), error = %error.error(), "replica failed the request");
                        return reply(StatusCode::BAD_GATEWAY, FAILED, exchange);
                    }
                },
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
        let (mut parts, response_body) = response.into_parts();
        // A 426 must say which protocol to upgrade to (RFC 9110 §15.5.22).
        let required = (parts.status == StatusCode::UPGRADE_REQUIRED)
            .then(|| parts.headers.get(header::UPGRADE).cloned())
            .flatten();
        strip_hop_by_hop(&mut parts.headers, required);
        let settings = UpstreamSettings::from(&**self.shared.settings.load());
        let lease = Lease::new(seat, (sender, link), body, settings, Arc::clone(self.client));
        let status = parts.status;
        Response::from_parts(
            parts,
            ProxyBody::upstream(response_body, lease, exchange.responded(status)),
        )
    }

    /// The request as the replica receives it: origin-form URI over HTTP/1.1, hop-by-hop headers removed,
    /// `Host` set to the host the request was routed by, `X-Forwarded-*` set, HTTP/2 cookie fields joined.
    /// Also returns the progress of a streamed body, which the client may pause for `body_read_timeout`.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        body_read_timeout: Duration,
    ) -> (Request<UpstreamBody>, Option<Arc<BodyProgress>>) {
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
        let (body, progress) = UpstreamBody::from_client(body, self.client, body_read_timeout);
        (Request::from_parts(parts, body), progress)
    }
}

/// How waiting for a response head ended.
enum Answer {
    Head(Response<Incoming>),
    Failed(hyper::client::conn::TrySendError<Request<UpstreamBody>>),
    /// The replica kept the request waiting past `response_timeout`.
    Stalled,
}

/// Sends `req` and waits for the response head for as long as the replica keeps moving: taking more of
/// the body counts, time spent waiting on the client for it does not.
async fn answer(
    sender: &mut Sender,
    req: Request<UpstreamBody>,
    body: Option<&BodyProgress>,
    limit: Duration,
) -> Answer {
    let mut sending = pin!(sender.try_send_request(req));
    let unbodied = ReplicaWait::new();
    let wait = body.map_or(&unbodied, |body| &body.replica);
    let mut timer = pin!(tokio::time::sleep(limit));
    poll_fn(|cx| {
        if let Poll::Ready(sent) = sending.as_mut().poll(cx) {
            return Poll::Ready(match sent {
                Ok(head) => Answer::Head(head),
                Err(error) => Answer::Failed(error),
            });
        }
        if wait.stalled(limit, timer.as_mut(), cx) {
            return Poll::Ready(Answer::Stalled);
        }
        Poll::Pending
    })
    .await
}

/// The body of a `502`: no replica took the connection.
pub(crate) const UNREACHABLE: &str = "no replica could be reached\n";

/// How many times one request moves to another replica after connections failed, before it is given up.
const RESEATS: usize = 8;

/// Where a request goes after its replica failed the connection.
pub(crate) struct Reseat<'a> {
    /// The app the request was routed to.
    pub(crate) app: &'a Arc<App>,
    /// The proxy's clock.
    pub(crate) shared: &'a Shared,
    /// Moves made so far.
    pub(crate) moves: usize,
}

impl Reseat<'_> {
    /// After `replica` refused the connection (or closed a new one before taking the request): takes it out
    /// of routing until its backoff ends, and finds the request a seat elsewhere — on another replica with
    /// room now, else by waiting for one like any other connection (in the queue, or for a replica to
    /// start). A session moves with its connection, so its next one finds it on the new replica.
    pub(crate) async fn after(
        &mut self,
        seat: Seat,
        replica: &Replica,
        error: &std::io::Error,
    ) -> Result<Seat, RejectReason> {
        let app = self.app;
        warn!(app = app.name(), replica = replica.name(), %error, "replica failed the connection");
        let backoff = replica.record_connect_failure(self.shared.clock.now());
        // Connections waiting for a seat may try it again once its backoff ends.
        let waiting = Arc::clone(app);
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            waiting.replicas_changed();
        });
        self.moves += 1;
        if self.moves > RESEATS {
            return Err(RejectReason::NoReplica);
        }
        if let Ok(other) = app.seat_excluding(&[replica.id()]) {
            return Ok(seat.move_to(other));
        }
        // The seat on the failed replica is given up while waiting; a session keeps its place.
        let share = match seat {
            Seat::Own(guard) => {
                drop(guard);
                None
            }
            Seat::Session(share) => Some(share),
        };
        let other = admit(self.shared, app).await?;
        Ok(match share {
            Some(share) => Seat::Session(share).move_to(other),
            None => Seat::Own(other),
        })
    }
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
}
