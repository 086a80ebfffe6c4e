//! Readiness checks of local replicas: an HTTP GET answered 2xx/3xx, or a TCP connect.

use std::net::SocketAddr;
use std::time::Duration;

use tideway_config::Readiness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// First pause between probes: most apps that start fast are ready within a few milliseconds, and every
/// millisecond here is a millisecond of cold start for the connection that is waiting.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
/// Most of a probe's response read after its status line. The rest of the response is read, not left
/// unread: closing a socket with unread data resets the connection, and many servers log a reset as an
/// error (Python's `ConnectionResetError` traceback) on every start.
const MAX_DRAINED: usize = 256 * 1024;
/// Longest a probe's connection waits for the replica to close it after the answer (for a server that
/// ignores `Connection: close`); the probe's verdict does not wait for it.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Probes `addr` until a probe passes (the caller bounds the wait by `startup_timeout`): at once, then
/// after pauses doubling from 2 ms up to the configured interval.
pub(super) async fn wait_until_ready(addr: SocketAddr, readiness: &Readiness) {
    let (interval, timeout) = match readiness {
        Readiness::Http {
            interval, timeout, ..
        }
        | Readiness::Tcp { interval, timeout } => (*interval, *timeout),
    };
    let mut pause = FIRST_PAUSE.min(interval);
    loop {
        if tokio::time::timeout(timeout, probe(addr, readiness)).await == Ok(true) {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = pause.saturating_mul(2).min(interval);
    }
}

async fn probe(addr: SocketAddr, readiness: &Readiness) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let path = match readiness {
        Readiness::Tcp { .. } => return true,
        Readiness::Http { path, .. } => path,
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tideway-readiness\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let ok = status_line_ok(&mut stream).await;
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN_WAIT, drain_until_closed(&mut stream)).await;
    });
    ok
}

/// Reads the rest of the response until the replica closes the connection (the probe asked it to), so
/// that the probe's own close is an orderly one.
async fn drain_until_closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_DRAINED {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Reads the status line and accepts 2xx and 3xx.
async fn status_line_ok(stream: &mut TcpStream) -> bool {
    let mut head = [0u8; 32];
    let mut len = 0;
    while len < head.len() {
        match stream.read(&mut head[len..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
        if head[..len].len() >= 12 {
            break;
        }
    }
    is_success(&head[..len])
}

fn is_success(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.") && head.len() >= 12 && matches!(head[9], b'2' | b'3') && head[8] == b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP readiness check of `path`, probed often, each probe given ample time.
    fn http_at(path: &str) -> Readiness {
        Readiness::Http {
            path: path.into(),
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn only_2xx_and_3xx_pass() {
        assert!(is_success(b"HTTP/1.1 200 OK\r\n"));
        assert!(is_success(b"HTTP/1.0 302 Found"));
        assert!(!is_success(b"HTTP/1.1 404 Not Found"));
        assert!(!is_success(b"HTTP/1.1 503"));
        assert!(!is_success(b"HTTP/1.1 2"));
        assert!(!is_success(b"SSH-2.0-OpenSSH"));
    }

    #[tokio::test]
    async fn probes_a_real_listener() {
        let tcp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tcp = Readiness::Tcp {
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(1),
        };
        assert!(probe(tcp_listener.local_addr().expect("addr"), &tcp).await);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let http = http_at("/ready");
        let server = tokio::spawn(async move {
            for status in ["503 Service Unavailable", "204 No Content"] {
                let (mut stream, _) = listener.accept().await.expect("accept");
                let mut request = [0u8; 512];
                let n = stream.read(&mut request).await.expect("read");
                assert!(request[..n].starts_with(b"GET /ready HTTP/1.1\r\n"));
                let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                stream.write_all(response.as_bytes()).await.expect("write");
            }
        });
        let checks = async {
            assert!(!probe(addr, &http).await, "503 is not ready");
            wait_until_ready(addr, &http).await;
        };
        tokio::time::timeout(Duration::from_secs(10), checks)
            .await
            .expect("ready in time");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_probe_reads_the_whole_response_and_closes_without_a_reset() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let http = http_at("/");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 512];
            let _ = stream.read(&mut request).await.expect("read");
            let body = vec![b'x'; 64 * 1024];
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.expect("write the head");
            stream.write_all(&body).await.expect("write the body");
            stream.shutdown().await.expect("close our side");
            // An orderly close reads as end of stream; a probe that left data unread resets instead.
            let mut rest = [0u8; 16];
            stream.read(&mut rest).await
        });
        let passed = tokio::time::timeout(Duration::from_secs(10), probe(addr, &http))
            .await
            .expect("the probe ends");
        assert!(passed);
        let closed = server.await.expect("server");
        assert_eq!(closed.expect("no reset"), 0);
    }

    #[tokio::test]
    async fn a_server_that_keeps_the_connection_open_still_passes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let http = http_at("/");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 512];
            let _ = stream.read(&mut request).await.expect("read");
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .expect("write");
            // Ignores `Connection: close` and keeps the connection until the probe drops it.
            let mut rest = [0u8; 16];
            stream.read(&mut rest).await
        });
        let passed = tokio::time::timeout(Duration::from_secs(1), probe(addr, &http))
            .await
            .expect("the verdict does not wait for the close");
        assert!(passed);
        drop(server);
    }
}
