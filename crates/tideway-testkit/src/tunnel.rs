//! `Upgrade: echo`: a non-WebSocket tunnel that echoes raw bytes until EOF.

use std::sync::Arc;

use http::header::{CONNECTION, HeaderMap, UPGRADE};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::replica::ConnCtx;
use crate::routes::{self, Body, has_token};
use crate::session::Session;

/// Whether the request asks for the raw echo protocol (`Upgrade: echo` + `Connection: upgrade`).
pub(crate) fn is_echo_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, UPGRADE, "echo") && has_token(headers, CONNECTION, "upgrade")
}

/// Answers `101` and spawns the echo session on the upgraded connection.
pub(crate) fn accept(ctx: &Arc<ConnCtx>, mut req: Request<Incoming>) -> Response<Body> {
    let mut session = Session::open(Arc::clone(&ctx.state), ctx.shutdown.clone());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = tokio::select! {
            upgraded = on_upgrade => upgraded,
            () = session.cancelled() => return,
        };
        let Ok(upgraded) = upgraded else { return };
        tokio::select! {
            () = echo(TokioIo::new(upgraded)) => {}
            // Returning drops the socket: an abrupt close, as the abort tests want.
            () = session.cancelled() => {}
        }
    });
    routes::switching_protocols(&ctx.state.name, "echo")
}

async fn echo(mut io: TokioIo<Upgraded>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if io.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = io.shutdown().await;
}
