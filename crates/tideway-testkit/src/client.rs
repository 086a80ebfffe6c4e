//! Real clients for tests: one-shot HTTP/1.1 and WebSocket connects with an explicit `Host`.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{WebSocketStream, client_async, tungstenite};

/// Sends one HTTP/1.1 request over a fresh TCP connection with the given Host header and returns status, headers and body; for tests that need exact control. (hyper client conn http1, not a pool.)
///
/// `path` is sent as the request target (origin form, e.g. `/slow?chunks=2`). Any failure, including a
/// body cut short by the server, is an `io::Error`.
pub async fn http1_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> io::Result<(StatusCode, HeaderMap, Bytes)> {
    let request = Request::get(path)
        .header(HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    let exchange = async move {
        let response = sender.send_request(request).await.map_err(io::Error::other)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    // Drive the connection in this task (nothing left running once we return).
    let mut conn = pin!(conn);
    let mut exchange = pin!(exchange);
    tokio::select! {
        biased;
        result = &mut exchange => return result,
        conn_result = &mut conn => conn_result.map_err(io::Error::other)?,
    }
    // The connection ended cleanly first (e.g. `Connection: close`); the response is already buffered.
    exchange.await
}

/// Opens a WebSocket through `addr` with `Host: host` to `path` (tokio-tungstenite client_async over a TcpStream you connect yourself, with a Request whose URI is ws://{host}{path}).
///
/// Lets tests reach a backend through tideway under a virtual host name without DNS.
pub async fn ws_connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<WebSocketStream<TcpStream>, tungstenite::Error> {
    let request = format!("ws://{host}{path}").into_client_request()?;
    let stream = TcpStream::connect(addr).await?;
    let (ws, _response) = client_async(request, stream).await?;
    Ok(ws)
}
