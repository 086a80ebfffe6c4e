//! Reading HTTP/1.1 responses by hand off a raw socket, for tests of what exactly went over the wire.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::wait::within;

/// One HTTP/1.1 response read off a raw connection, for tests that look at the bytes themselves.
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The head as sent, status line and fields.
    pub head: String,
    /// The body, chunks decoded.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The value of the field `name` (any case), if the head has one.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Reads one response from `stream`, whose earlier bytes are in `pending` (bytes past it stay there, for
/// the next): the head, then a body framed by `Content-Length`, by chunks (decoded), or by the close.
/// Fails the test if a read takes longer than `patience` or the response is cut short.
pub async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>, patience: Duration) -> RawResponse {
    let fill = async |stream: &mut TcpStream, pending: &mut Vec<u8>| -> bool {
        let mut chunk = [0u8; 8192];
        let n = within("more of the response", patience, stream.read(&mut chunk))
            .await
            .unwrap_or(0);
        pending.extend_from_slice(&chunk[..n]);
        n > 0
    };
    let end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        assert!(
            fill(stream, pending).await,
            "the connection closed before a response head"
        );
    };
    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
    pending.drain(..end);
    let status = head[9..12].parse().expect("a status code");
    let mut response = RawResponse {
        status,
        head,
        body: Vec::new(),
    };
    if status == 100 || status == 204 || status == 304 {
        return response;
    }
    if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().expect("a length");
        while pending.len() < length {
            assert!(fill(stream, pending).await, "the body was cut short");
        }
        response.body = pending.drain(..length).collect();
    } else if response
        .header("transfer-encoding")
        .is_some_and(|te| te.ends_with("chunked"))
    {
        loop {
            let line_end = loop {
                if let Some(at) = pending.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                assert!(fill(stream, pending).await, "a chunk was cut short");
            };
            let size_text = String::from_utf8_lossy(&pending[..line_end]).into_owned();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).expect("a size");
            while pending.len() < line_end + 2 + size + 2 {
                assert!(fill(stream, pending).await, "a chunk was cut short");
            }
            response
                .body
                .extend_from_slice(&pending[line_end + 2..line_end + 2 + size]);
            pending.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        while fill(stream, pending).await {}
        response.body = std::mem::take(pending);
    }
    response
}
