//! A client that opens many idle connections through a proxy and holds them, so the proxy's memory per
//! idle connection can be measured. Runs as its own process (pinned to the load generator's CPU).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// What kind of idle connection to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Idle {
    /// An upgraded WebSocket, idle after the handshake.
    Websocket,
    /// An HTTP/1.1 keep-alive connection, idle after one request.
    Keepalive,
}

/// Opens `count` idle connections to `target`, prints `ready`, and holds them until stdin closes.
pub(crate) async fn hold(target: SocketAddr, count: usize, idle: Idle) -> anyhow::Result<()> {
    let opening = Arc::new(Semaphore::new(128));
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let opening = Arc::clone(&opening);
            tokio::spawn(async move {
                let _permit = opening.acquire().await?;
                open(target, idle).await
            })
        })
        .collect();
    let mut held = Vec::with_capacity(count);
    for task in tasks {
        held.push(task.await??);
    }
    println!("ready {}", held.len());
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 16];
    while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    drop(held);
    Ok(())
}

async fn open(target: SocketAddr, idle: Idle) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(target).await.context("connect")?;
    let request: &[u8] = match idle {
        Idle::Websocket => {
            b"GET /ws HTTP/1.1\r\nHost: bench.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        }
        Idle::Keepalive => b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n",
    };
    stream.write_all(request).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            bail!("connection closed during the handshake");
        }
        head.push(byte[0]);
    }
    let expected: &[u8] = match idle {
        Idle::Websocket => b"HTTP/1.1 101",
        Idle::Keepalive => b"HTTP/1.1 200",
    };
    if !head.starts_with(expected) {
        bail!("unexpected answer: {}", String::from_utf8_lossy(&head));
    }
    if let Idle::Keepalive = idle {
        let mut body = [0u8; 2];
        stream.read_exact(&mut body).await?;
    }
    Ok(stream)
}
