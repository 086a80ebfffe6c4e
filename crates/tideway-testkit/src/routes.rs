//! Request routing and the plain HTTP routes (echo, slow, delay, status, abort, bytes, drop-next).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, UPGRADE};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Map, Value, json};

use crate::replica::ConnCtx;
use crate::{tunnel, websocket};

/// Response body of every route.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Header naming the backend on every response, so tests see which replica answered.
pub(crate) const X_BACKEND: &str = "x-backend";

const DEFAULT_SLOW_CHUNKS: u64 = 3;
const DEFAULT_SLOW_MS: u64 = 10;
const ABORT_CONTENT_LENGTH: u64 = 1000;
const ABORT_SENT: &[u8] = b"0123456789";

/// Entry point of the hyper service: one call per request.
pub(crate) async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if ctx.drop_next.swap(false, Ordering::SeqCst) {
        // `/drop-next` was asked on this connection: this request is read, never answered.
        ctx.kill.notify_one();
        std::future::pending::<()>().await;
    }
    let response = route(&ctx, req).await;
    ctx.state.requests.fetch_add(1, Ordering::SeqCst);
    Ok(response)
}

async fn route(ctx: &Arc<ConnCtx>, req: Request<Incoming>) -> Response<Body> {
    let name = ctx.state.name.as_str();
    if tunnel::is_echo_upgrade(req.headers()) {
        return tunnel::accept(ctx, req);
    }
    let path = req.uri().path();
    if path == "/ws" {
        return websocket::accept(ctx, req);
    }
    if path == "/slow" {
        let chunks = query_u64(req.uri(), "chunks").unwrap_or(DEFAULT_SLOW_CHUNKS);
        let ms = query_u64(req.uri(), "ms").unwrap_or(DEFAULT_SLOW_MS);
        return slow(name, chunks, Duration::from_millis(ms));
    }
    if path == "/delay" {
        let ms = query_u64(req.uri(), "ms").unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return echo(name, req).await;
    }
    if path == "/abort" {
        return abort(ctx);
    }
    if path == "/drop-next" {
        ctx.drop_next.store(true, Ordering::SeqCst);
        return text(
            name,
            StatusCode::OK,
            "the next request on this connection will be dropped\n",
        );
    }
    if path == "/bytes" {
        return bytes(name, query_u64(req.uri(), "n").unwrap_or(0));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => empty(name, status),
            None => text(name, StatusCode::BAD_REQUEST, "bad status code\n"),
        };
    }
    echo(name, req).await
}

/// The default route: a JSON description of the request, read in full.
async fn echo(name: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut body_len = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_len += frame.data_ref().map_or(0, Bytes::len),
            Err(_) => return text(name, StatusCode::BAD_REQUEST, "request body error\n"),
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let doc = json!({
        "backend": name,
        "method": parts.method.as_str(),
        "path": path,
        "version": format!("{:?}", parts.version),
        "headers": headers_json(&parts.headers),
        "body_len": body_len,
    });
    let mut response = Response::new(Full::new(Bytes::from(doc.to_string())).boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    with_backend(name, response)
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for key in headers.keys() {
        let values = headers
            .get_all(key)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        map.insert(key.as_str().to_owned(), Value::Array(values));
    }
    Value::Object(map)
}

/// `/slow`: `chunks` chunks of `chunk i\n`, each after `pause`.
fn slow(name: &str, chunks: u64, pause: Duration) -> Response<Body> {
    let body = stream::unfold(0u64, move |i| async move {
        if i >= chunks {
            return None;
        }
        tokio::time::sleep(pause).await;
        let frame = Frame::data(Bytes::from(format!("chunk {i}\n")));
        Some((Ok::<_, Infallible>(frame), i + 1))
    });
    with_backend(name, Response::new(StreamBody::new(body).boxed_unsync()))
}

/// `/bytes?n=N`: `N` bytes of `x`, in 64 KiB chunks, as fast as the client takes them.
fn bytes(name: &str, n: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let body = stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK);
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..take as usize))),
                left - take,
            ))
        }
    });
    let mut response = Response::new(StreamBody::new(body).boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(n));
    with_backend(name, response)
}

/// `/abort`: promises 1000 bytes, sends 10, then has the connection task drop the socket.
fn abort(ctx: &Arc<ConnCtx>) -> Response<Body> {
    let ctx_for_body = Arc::clone(ctx);
    let body = stream::unfold(false, move |sent| {
        let ctx = Arc::clone(&ctx_for_body);
        async move {
            if !sent {
                let frame = Frame::data(Bytes::from_static(ABORT_SENT));
                return Some((Ok::<_, Infallible>(frame), true));
            }
            // hyper writes and flushes the chunk while this sleep is pending; then the socket goes.
            tokio::time::sleep(Duration::from_millis(20)).await;
            ctx.kill.notify_one();
            std::future::pending::<Option<(Result<Frame<Bytes>, Infallible>, bool)>>().await
        }
    });
    let mut response = Response::new(StreamBody::new(body).boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(ABORT_CONTENT_LENGTH));
    with_backend(&ctx.state.name, response)
}

/// A `101 Switching Protocols` to `protocol`, for the WebSocket and raw-echo upgrades.
pub(crate) fn switching_protocols(name: &str, protocol: &'static str) -> Response<Body> {
    let mut response = empty(name, StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static(protocol));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    response
}

pub(crate) fn empty(name: &str, status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().boxed_unsync());
    *response.status_mut() = status;
    with_backend(name, response)
}

pub(crate) fn text(name: &str, status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync());
    *response.status_mut() = status;
    with_backend(name, response)
}

fn with_backend(name: &str, mut response: Response<Body>) -> Response<Body> {
    // A name that is not a valid header value just leaves the header out.
    if let Ok(value) = HeaderValue::from_str(name) {
        response.headers_mut().insert(X_BACKEND, value);
    }
    response
}

fn query_u64(uri: &Uri, key: &str) -> Option<u64> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// Whether the comma-separated `header` lists `token` (case-insensitive), as `Connection: keep-alive, Upgrade`.
pub(crate) fn has_token(headers: &HeaderMap, header: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(header)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_found_by_key() {
        let uri: Uri = "/slow?chunks=4&ms=25&x".parse().expect("static uri");
        assert_eq!(query_u64(&uri, "chunks"), Some(4));
        assert_eq!(query_u64(&uri, "ms"), Some(25));
        assert_eq!(query_u64(&uri, "x"), None);
        assert_eq!(query_u64(&uri, "missing"), None);
    }

    #[test]
    fn connection_tokens_are_case_insensitive() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(has_token(&headers, CONNECTION, "upgrade"));
        assert!(!has_token(&headers, CONNECTION, "close"));
    }
}
