//! The fields of a head: which tideway acts on, and the small readers and writers both heads share.

use std::ops::Range;

use httparse::Header;

/// The fields tideway looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Cookie,
    /// `X-Forwarded-*`: set by tideway for this hop.
    Forwarded,
    /// Other fields that describe one hop and are never forwarded (RFC 9110 §7.6.1): `Keep-Alive`,
    /// `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`. (`Transfer-Encoding` is
    /// kept: bodies are relayed in their framing.)
    HopByHop,
    Other,
}

pub(super) fn field_kind(name: &str) -> Kind {
    let is = |known: &str| name.eq_ignore_ascii_case(known);
    // The length tells most names apart before any comparison.
    match name.len() {
        2 if is("te") => Kind::HopByHop,
        4 if is("host") => Kind::Host,
        6 if is("cookie") => Kind::Cookie,
        7 if is("upgrade") => Kind::Upgrade,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::HopByHop,
        14 if is("content-length") => Kind::ContentLength,
        15 if is("x-forwarded-for") => Kind::Forwarded,
        16 if is("x-forwarded-host") => Kind::Forwarded,
        16 if is("proxy-connection") => Kind::HopByHop,
        17 if is("transfer-encoding") => Kind::TransferEncoding,
        17 if is("x-forwarded-proto") => Kind::Forwarded,
        18 if is("proxy-authenticate") => Kind::HopByHop,
        19 if is("proxy-authorization") => Kind::HopByHop,
        _ => Kind::Other,
    }
}

/// Header names the `Connection` fields list (beyond its options), whose fields are hop-by-hop too.
pub(super) fn connection_named<'b>(fields: &[Header<'b>]) -> Vec<&'b [u8]> {
    let mut named = Vec::new();
    for field in fields.iter().filter(|f| field_kind(f.name) == Kind::Connection) {
        for token in tokens(field.value) {
            let option = [&b"close"[..], b"keep-alive", b"upgrade"]
                .iter()
                .any(|o| token.eq_ignore_ascii_case(o));
            if !option {
                named.push(token);
            }
        }
    }
    named
}

pub(super) fn is_named(named: &[&[u8]], name: &str) -> bool {
    named.iter().any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// The comma-separated tokens of a field value.
pub(super) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(trim).filter(|t| !t.is_empty())
}

pub(super) fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// A `Content-Length` value: one number, or a list of the same number (RFC 9110 §8.6).
pub(super) fn content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|b| *b == b',').map(trim) {
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let parsed = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|known| known != parsed) {
            return None;
        }
        length = Some(parsed);
    }
    length
}

pub(super) fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Where `slice`, a part of `buf`, lies in it.
pub(super) fn offset(buf: &[u8], slice: &[u8]) -> Range<usize> {
    let start = slice.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + slice.len()
}

pub(super) fn shift(range: &Range<usize>, by: usize) -> Range<usize> {
    range.start + by..range.end + by
}
