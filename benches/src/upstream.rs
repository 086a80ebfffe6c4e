//! The upstream every proxy is measured in front of: a small fixed `200` as cheaply as possible (so the
//! proxy, not the upstream, is what is measured), and WebSocket upgrades answered and echoed.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

/// Serves on `addr` until the process is stopped.
pub(crate) async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("upstream listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            // A connection that fails simply ends; the load generator reports errors.
            let _ = connection(stream).await;
        });
    }
}

async fn connection(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = find_head_end(&buf) else {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            continue;
        };
        if let Some(key) = websocket_key(&buf[..end]) {
            let accept = derive_accept_key(key.as_bytes());
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            stream.write_all(answer.as_bytes()).await?;
            let mut ws = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    return Ok(());
                }
                if message.is_text() || message.is_binary() {
                    ws.send(message).await.map_err(std::io::Error::other)?;
                }
            }
            return Ok(());
        }
        buf.drain(..end);
        stream.write_all(RESPONSE).await?;
    }
}

/// Where the request head in `buf` ends (after the blank line), if it is complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}

/// The `Sec-WebSocket-Key` of an upgrade request head.
fn websocket_key(head: &[u8]) -> Option<String> {
    let head = std::str::from_utf8(head).ok()?;
    let upgrade = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("upgrade:") && l.to_ascii_lowercase().contains("websocket")
    });
    if !upgrade {
        return None;
    }
    head.lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-key"))
        })
        .map(|(_, key)| key.trim().to_owned())
}
