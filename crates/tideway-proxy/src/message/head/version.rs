//! Protocol versions httparse does not take: a later HTTP/1.x is read as HTTP/1.1, another major version
//! is refused.

/// The protocol version of a message, when httparse knows only HTTP/1.0 and HTTP/1.1.
pub(super) enum Version {
    /// `HTTP/1.x` with a minor version above 1, its digit at this offset: read as HTTP/1.1, the highest
    /// minor version tideway speaks (RFC 9110 §2.5).
    LaterMinor(usize),
    /// `HTTP/d.d` with another major version.
    OtherMajor,
    /// Not `HTTP/d.d` at all.
    Malformed,
}

/// The version at the end of a request line (without its line feed).
pub(super) fn request_version(line: &[u8]) -> Version {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.iter().rposition(|&b| b == b' ') {
        Some(space) => version_at(line, space + 1),
        None => Version::Malformed,
    }
}

/// The version at the start of a status line, once it is all there.
pub(super) fn response_version(buf: &[u8]) -> Option<Version> {
    (buf.len() >= 9).then(|| match buf[8] {
        b' ' => version_at(&buf[..8], 0),
        _ => Version::Malformed,
    })
}

/// Reads the eight bytes `HTTP/d.d` at `at`, which must end `line`.
fn version_at(line: &[u8], at: usize) -> Version {
    match &line[at..] {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'2'..=b'9'] => Version::LaterMinor(at + 7),
        [
            b'H',
            b'T',
            b'T',
            b'P',
            b'/',
            b'0' | b'2'..=b'9',
            b'.',
            b'0'..=b'9',
        ] => Version::OtherMajor,
        _ => Version::Malformed,
    }
}

/// `buf` with the minor version digit at `at` made `1`.
pub(super) fn as_http11(buf: &[u8], at: usize) -> Vec<u8> {
    let mut copy = buf.to_vec();
    copy[at] = b'1';
    copy
}
