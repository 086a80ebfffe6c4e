//! Forwarding an admitted HTTP/2 request through the engine's upstream side, as an HTTP/1.1 request is:
//! its head written by the same rules ([`head::write_request`]), its body re-framed as it streams up
//! ([`upload`]), sent by the one attempt policy over the replica's one pool ([`Attempts`]), and the response
//! head parsed by the same parser, handed to the client as fields with its body following in
//! [`ProxyBody`].

pub(crate) mod upload;

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tideway_core::{App, CloseReason};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use crate::Shared;
use crate::body::{Lease, ProxyBody, Relayed};
use crate::claim::Claim;
use crate::client::ClientConn;
use crate::handler::{FAILED, MALFORMED, reply, unavailable};
use crate::message::framing::Framing;
use crate::message::head::{self, ResponseHead, ResponseOut};
use crate::record::Record;
use crate::stall::{BODY_STALLED, RESPONSE_STALLED, ReplicaWait};
use crate::upstream::{Again, Attempts, poll_read_into};
use upload::{Upload, UploadError};

/// The body of a `502`: the replica answered an HTTP/2 request by switching protocols, which it cannot ask.
const SWITCHED: &str = "the replica switched protocols unasked\n";

/// One admitted request's way to its replica.
pub(crate) struct Forwarding<'a> {
    /// The proxy's settings, routes, clock and shutdown signal.
    pub(crate) shared: &'a Arc<Shared>,
    /// The client connection the request came on.
    pub(crate) client: &'a Arc<ClientConn>,
    /// The app the request was routed to.
    pub(crate) app: &'a Arc<App>,
}

/// How waiting for a response head ended.
enum HeadWait {
    /// The final response head, its fields, and what was read past it.
    Head(ResponseHead, BytesMut),
    /// The replica closed the connection without answering; `written`: whether the request went out.
    NoAnswer { written: bool },
    /// The replica kept the request waiting past `response_timeout`.
    Stalled,
    /// The replica closed the connection mid-head.
    Broken,
    /// The replica sent a head tideway cannot relay.
    Malformed,
    /// The request body stopped short on the client's side.
    Upload(UploadError),
}

impl Forwarding<'_> {
    /// Sends `req` to the replica `claim` is on and returns the response for the client.
    pub(crate) async fn forward(
        &self,
        claim: Claim,
        req: Request<Incoming>,
        record: Record,
    ) -> Response<ProxyBody> {
        let app = self.app;
        let policy = app.policy();
        let (body_read_timeout, response_timeout) = (policy.body_read_timeout, policy.response_timeout);
        drop(policy);
        let (parts, body) = req.into_parts();
        let framing = request_framing(&parts.headers, &body);
        // The authority of an HTTP/2 request is what routing used; the replica must see the same host.
        let host = parts
            .uri
            .authority()
            .map(|authority| {
                authority
                    .as_str()
                    .rsplit('@')
                    .next()
                    .unwrap_or_default()
                    .as_bytes()
            })
            .or_else(|| parts.headers.get(header::HOST).map(|host| host.as_bytes()))
            .unwrap_or_default();
        let target = parts.uri.path_and_query().map_or("/", |target| target.as_str());
        let hop = self.client.hop();
        let head = head::write_request(&parts.method, target, &parts.headers, host, framing, hop);
        let head_request = parts.method == Method::HEAD;
        let mut upload =
            (framing != Framing::Empty).then(|| Upload::new(body, framing, self.client, body_read_timeout));

        let mut attempts = Attempts::new(self.shared, app);
        let mut fields = HeaderMap::new();
        let mut unsent = claim;
        loop {
            let (claim, mut upstream) = match attempts.connect(unsent).await {
                Ok(connected) => connected,
                Err(reason) => return unavailable(app, reason, record),
            };
            let waited = await_head(
                &mut upstream.stream,
                &head,
                upload.as_mut(),
                (head_request, &mut fields),
                response_timeout,
            )
            .await;
            let replica = Arc::clone(&upstream.replica);
            let (response, rest) = match waited {
                HeadWait::Head(response, rest) => (response, rest),
                HeadWait::NoAnswer { written } => match attempts.again(claim, &upstream, written).await {
                    Again::Retry(again) => {
                        unsent = again;
                        continue;
                    }
                    Again::Failed => {
                        debug!(
                            app = app.name(),
                            replica = replica.name(),
                            "replica failed the request"
                        );
                        return reply(StatusCode::BAD_GATEWAY, FAILED, record);
                    }
                    Again::Rejected(reason) => return unavailable(app, reason, record),
                },
                HeadWait::Stalled => {
                    app.stats().record_close(CloseReason::ResponseTimeout);
                    return reply(StatusCode::GATEWAY_TIMEOUT, RESPONSE_STALLED, record);
                }
                HeadWait::Upload(UploadError::ClientStalled) => {
                    app.stats().record_close(CloseReason::BodyTimeout);
                    return reply(StatusCode::REQUEST_TIMEOUT, BODY_STALLED, record);
                }
                HeadWait::Upload(_) => {
                    app.stats().record_close(CloseReason::Client);
                    return reply(StatusCode::BAD_REQUEST, "the request body broke off\n", record);
                }
                HeadWait::Broken => {
                    debug!(
                        app = app.name(),
                        replica = replica.name(),
                        "replica broke off its answer"
                    );
                    return reply(StatusCode::BAD_GATEWAY, FAILED, record);
                }
                HeadWait::Malformed => {
                    debug!(
                        app = app.name(),
                        replica = replica.name(),
                        "replica sent a malformed response"
                    );
                    return reply(StatusCode::BAD_GATEWAY, MALFORMED, record);
                }
            };
            if response.status == StatusCode::SWITCHING_PROTOCOLS {
                return reply(StatusCode::BAD_GATEWAY, SWITCHED, record);
            }
            let link = (upstream.link, *attempts.settings());
            let relayed = Relayed::new(
                upstream.stream,
                rest,
                response.body,
                upload,
                response.reusable,
                response_timeout,
                link,
            );
            let lease = Lease::new(claim, Arc::clone(self.client));
            let body = ProxyBody::relayed(relayed, lease, record.responded(response.status));
            let mut reply = Response::new(body);
            *reply.status_mut() = response.status;
            *reply.headers_mut() = fields;
            return reply;
        }
    }
}

/// How an HTTP/2 request's body is framed for HTTP/1.1: none if the client ended the stream with its
/// head, by its `Content-Length` if it gave one (HTTP/2 holds the body to it), else chunked.
fn request_framing(fields: &HeaderMap, body: &Incoming) -> Framing {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Framing::Empty;
    }
    fields
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.trim().parse().ok())
        .map_or(Framing::Chunked, Framing::Length)
}

/// Sends the request head on `stream` and waits for the final response head — for as long as the replica
/// keeps moving: taking more of the body counts, time spent waiting on the client for it does not. The
/// request body goes up meanwhile. Interim responses are dropped: HTTP/2 has no place for them here.
async fn await_head(
    stream: &mut TcpStream,
    head: &[u8],
    mut upload: Option<&mut Upload>,
    (head_request, fields): (bool, &mut HeaderMap),
    limit: Duration,
) -> HeadWait {
    if stream.write_all(head).await.is_err() {
        return HeadWait::NoAnswer { written: false };
    }
    let wait = ReplicaWait::new();
    let mut timer = pin!(tokio::time::sleep(limit));
    let mut buf = BytesMut::new();
    let mut answered = false;
    poll_fn(|cx| {
        if let Some(body) = upload.as_deref_mut()
            && let Poll::Ready(uploaded) = body.poll(cx, stream, Some(&wait))
        {
            match uploaded {
                Ok(()) => upload = None,
                // The replica may have answered before taking the whole body: its answer tells.
                Err(UploadError::Replica) => upload = None,
                Err(error) => return Poll::Ready(HeadWait::Upload(error)),
            }
        }
        loop {
            match head::parse_response(&buf, head_request, ResponseOut::Fields(fields)) {
                Err(_) => return Poll::Ready(HeadWait::Malformed),
                Ok(Some(interim))
                    if interim.status.is_informational()
                        && interim.status != StatusCode::SWITCHING_PROTOCOLS =>
                {
                    buf.advance(interim.len);
                    continue;
                }
                Ok(Some(response)) => {
                    buf.advance(response.len);
                    return Poll::Ready(HeadWait::Head(response, std::mem::take(&mut buf)));
                }
                Ok(None) => {}
            }
            match poll_read_into(stream, cx, &mut buf) {
                Poll::Ready(Ok(0) | Err(_)) if buf.is_empty() && !answered => {
                    return Poll::Ready(HeadWait::NoAnswer { written: true });
                }
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(HeadWait::Broken),
                Poll::Ready(Ok(_)) => {
                    answered = true;
                    wait.moved();
                }
                Poll::Pending => break,
            }
        }
        if wait.stalled(limit, timer.as_mut(), cx) {
            return Poll::Ready(HeadWait::Stalled);
        }
        Poll::Pending
    })
    .await
}
