//! The fields of a head: which tideway acts on, the one rule set for which of them cross to the next hop
//! (whichever protocol the client speaks), and the small readers and writers both heads share.

use std::io::Write as _;
use std::net::IpAddr;
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
    /// `Strict-Transport-Security`: only over TLS, and the app's own when it sets `hsts_max_age`.
    StrictTransportSecurity,
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
        25 if is("strict-transport-security") => Kind::StrictTransportSecurity,
        _ => Kind::Other,
    }
}

/// Whether a request field of `kind` goes on to the replica. `own_host`: tideway writes the `Host` field
/// itself (from an absolute-form target or HTTP/2's `:authority`); `own_framing`: it writes the framing
/// fields itself (an HTTP/2 body, re-framed for HTTP/1.1); `named`: the `Connection` field names it, which
/// makes an end-to-end field hop-by-hop.
pub(super) fn request_field_kept(kind: Kind, named: bool, own_host: bool, own_framing: bool) -> bool {
    match kind {
        Kind::HopByHop | Kind::Connection | Kind::Upgrade | Kind::Forwarded => false,
        Kind::Host => !own_host,
        // The framing fields stay whatever `Connection` says: the body is relayed as they frame it, and a
        // replica that did not see them would take the body for another request.
        Kind::ContentLength | Kind::TransferEncoding => !own_framing,
        Kind::Other | Kind::Cookie | Kind::StrictTransportSecurity => !named,
    }
}

/// Whether a response field of `kind` goes on to the client. `payload_only`: the client gets the body's
/// content without its chunked framing (an HTTP/1.0 client, or any HTTP/2 one); `chunked`: the replica
/// sent the body chunked, which makes any length beside it void (RFC 9112 §6.3); `upgrade_kept`: the
/// `Upgrade` field crosses (a `426` must say which protocol to upgrade to, RFC 9110 §15.5.22); `named`: the
/// `Connection` field names it.
pub(super) fn response_field_kept(
    kind: Kind,
    named: bool,
    payload_only: bool,
    chunked: bool,
    upgrade_kept: bool,
) -> bool {
    match kind {
        Kind::Upgrade => upgrade_kept,
        Kind::HopByHop | Kind::Connection => false,
        Kind::TransferEncoding => !payload_only,
        Kind::ContentLength => !chunked,
        Kind::Host | Kind::Cookie | Kind::Forwarded | Kind::StrictTransportSecurity | Kind::Other => !named,
    }
}

/// How a request reached tideway: what the `X-Forwarded-*` fields tell the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hop {
    /// The client's address.
    pub(crate) client: IpAddr,
    /// The request came over TLS.
    pub(crate) https: bool,
}

/// Writes the `X-Forwarded-*` fields that tell the replica who the client is and how it reached
/// tideway: `X-Forwarded-For` extends the chain the `earlier` hops wrote (in any number of fields); the
/// others describe this hop and replace whatever the client sent.
pub(super) fn put_forwarded<'v>(
    out: &mut Vec<u8>,
    earlier: impl Iterator<Item = &'v [u8]>,
    hop: Hop,
    host: Option<&[u8]>,
) {
    out.extend_from_slice(b"X-Forwarded-For: ");
    for hop in earlier
        .flat_map(|value| value.split(|b| *b == b','))
        .map(trim)
        .filter(|v| !v.is_empty())
    {
        out.extend_from_slice(hop);
        out.extend_from_slice(b", ");
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", hop.client);
    out.extend_from_slice(if hop.https {
        b"\r\nX-Forwarded-Proto: https\r\n"
    } else {
        b"\r\nX-Forwarded-Proto: http\r\n"
    });
    if let Some(host) = host {
        put_field(out, b"X-Forwarded-Host", host);
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
