//! `/ws`: RFC 6455 handshake and the echo session.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, HeaderMap, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::replica::ConnCtx;
use crate::routes::{self, Body, has_token};
use crate::session::{Session, State};

/// Recorded when the peer's Close frame carries no code (RFC 6455 §7.4.1 "no status received").
const NO_STATUS_RECEIVED: u16 = 1005;

/// Checks the upgrade request, answers `101` with `Sec-WebSocket-Accept`, and spawns the session.
pub(crate) fn accept(ctx: &Arc<ConnCtx>, mut req: Request<Incoming>) -> Response<Body> {
    let name = ctx.state.name.as_str();
    let Some(accept_key) = accept_key(req.method(), req.version(), req.headers()) else {
        return routes::text(name, StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    };
    let Ok(accept_value) = HeaderValue::from_str(&accept_key) else {
        return routes::text(name, StatusCode::INTERNAL_SERVER_ERROR, "bad accept key\n");
    };
    let mut session = Session::open(Arc::clone(&ctx.state), ctx.shutdown.clone());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = tokio::select! {
            upgraded = on_upgrade => upgraded,
            () = session.cancelled() => return,
        };
        let Ok(upgraded) = upgraded else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let state = session.state();
        tokio::select! {
            () = serve(ws, &state) => {}
            // Returning drops the socket without a Close frame: the "upstream abort" case.
            () = session.cancelled() => {}
        }
    });
    let mut response = routes::switching_protocols(name, "websocket");
    response.headers_mut().insert(SEC_WEBSOCKET_ACCEPT, accept_value);
    response
}

/// The `Sec-WebSocket-Accept` value if this is a valid RFC 6455 opening handshake, else `None`.
fn accept_key(method: &Method, version: Version, headers: &HeaderMap) -> Option<String> {
    let valid = method == Method::GET
        && version == Version::HTTP_11
        && has_token(headers, UPGRADE, "websocket")
        && has_token(headers, CONNECTION, "upgrade")
        && headers
            .get(SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() == b"13");
    if !valid {
        return None;
    }
    let key = headers.get(SEC_WEBSOCKET_KEY)?.as_bytes();
    is_valid_key(key).then(|| derive_accept_key(key))
}

/// A key is the base64 encoding of 16 bytes: 22 alphabet characters (the last one carrying only
/// 2 significant bits, hence one of `AQgw`) followed by `==`.
fn is_valid_key(key: &[u8]) -> bool {
    let [body @ .., last, b'=', b'='] = key else {
        return false;
    };
    body.len() == 21
        && body
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        && matches!(last, b'A' | b'Q' | b'g' | b'w')
}

/// Echo loop: Text/Binary back, `whoami` → name, `close` → backend-initiated close 1000; records the
/// peer's close codes and ends once the close handshake is done.
async fn serve(mut ws: WebSocketStream<TokioIo<Upgraded>>, state: &State) {
    while let Some(Ok(message)) = ws.next().await {
        let reply = match &message {
            Message::Text(text) if text.as_str() == "whoami" => Some(Message::text(state.name.clone())),
            Message::Text(text) if text.as_str() == "close" => {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                };
                if ws.close(Some(frame)).await.is_err() {
                    break;
                }
                None
            }
            Message::Text(_) | Message::Binary(_) => Some(message),
            Message::Close(frame) => {
                let code = frame
                    .as_ref()
                    .map_or(NO_STATUS_RECEIVED, |frame| u16::from(frame.code));
                state.record_close_code(code);
                // tungstenite queued the Close reply while reading; send it now.
                let _ = ws.flush().await;
                None
            }
            Message::Ping(_) => {
                // tungstenite queued the Pong while reading; send it now.
                if ws.flush().await.is_err() {
                    break;
                }
                None
            }
            Message::Pong(_) | Message::Frame(_) => None,
        };
        if let Some(reply) = reply
            && ws.send(reply).await.is_err()
        {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_sample_key_is_accepted() {
        let mut headers = HeaderMap::new();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(
            accept_key(&Method::GET, Version::HTTP_11, &headers).as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("short=="));
        assert_eq!(accept_key(&Method::GET, Version::HTTP_11, &headers), None);
    }

    #[test]
    fn keys_must_encode_sixteen_bytes() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZR=="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25j*Q=="));
    }
}
