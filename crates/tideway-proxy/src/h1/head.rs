//! HTTP/1.1 message heads (RFC 9112): parsed in place with httparse, checked, and rewritten for the next
//! hop in the same pass — no header map, no allocation per field.

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::ops::Range;

use http::{Method, StatusCode};
use httparse::{Header, Status};

use super::framing::Framing;

/// Room in the parser's field table: the largest `max_headers` the configuration accepts.
const FIELD_TABLE: usize = 1000;
/// Largest response head accepted from a replica.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The limits a request head is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Largest head, in bytes.
    pub(crate) max_bytes: usize,
    /// Most header fields.
    pub(crate) max_fields: usize,
}

/// What a request head says that tideway acts on. Ranges point into the buffer the head was parsed from;
/// `forward` is the head as the replica receives it.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// Length of the head, up to and including its blank line.
    pub(crate) len: usize,
    /// The request method.
    pub(crate) method: Method,
    /// An HTTP/1.0 request: no chunked responses, no keep-alive.
    pub(crate) http10: bool,
    /// The path routing uses (`/` for `OPTIONS *`), without the query.
    pub(crate) path: Range<usize>,
    /// The host the request is for: the authority of an absolute-form target, else the `Host` field.
    pub(crate) host: Option<Range<usize>>,
    /// How many `Host` fields the head has (more than one is refused).
    pub(crate) host_fields: usize,
    /// How the request body is delimited.
    pub(crate) body: Framing,
    /// The client wants the connection kept after this exchange.
    pub(crate) keep_alive: bool,
    /// The client asks to switch protocols (`Connection: upgrade` with an `Upgrade` field).
    pub(crate) upgrade: bool,
    /// The protocol asked for is WebSocket: closes go through its closing handshake.
    pub(crate) websocket: bool,
    /// Values of the `Cookie` fields.
    pub(crate) cookies: Vec<Range<usize>>,
    /// The head rewritten for the replica.
    pub(crate) forward: Vec<u8>,
}

/// A request head tideway answers itself, with the status and the reason the client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// `400`, `431` or `501`.
    pub(crate) status: StatusCode,
    /// A line for the client.
    pub(crate) text: &'static str,
}

/// What a response head says that the relay acts on.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    /// Length of the head, up to and including its blank line.
    pub(crate) len: usize,
    /// The status code.
    pub(crate) status: StatusCode,
    /// How the body is delimited.
    pub(crate) body: Framing,
    /// The replica connection can carry another request once this body ended.
    pub(crate) reusable: bool,
}

/// How a response head is rewritten for the client.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResponseRewrite<'a> {
    /// The request was `HEAD`: the response has no body whatever it says.
    pub(crate) head_request: bool,
    /// The client speaks HTTP/1.0: chunked bodies are decoded for it.
    pub(crate) http10_client: bool,
    /// The client asked to switch protocols.
    pub(crate) upgrade_requested: bool,
    /// The client connection closes after this response.
    pub(crate) close: bool,
    /// A `Set-Cookie` value to add (a new affinity session).
    pub(crate) set_cookie: Option<&'a [u8]>,
}

/// A replica's response head that cannot be relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BadResponse;

const BAD_REQUEST: Refusal = Refusal {
    status: StatusCode::BAD_REQUEST,
    text: "malformed request\n",
};
const UNSUPPORTED_CODING: Refusal = Refusal {
    status: StatusCode::NOT_IMPLEMENTED,
    text: "only the chunked transfer coding is supported\n",
};
const TOO_LARGE: Refusal = Refusal {
    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    text: "request head too large\n",
};
const UNSUPPORTED_VERSION: Refusal = Refusal {
    status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
    text: "only HTTP/1.x is spoken here (and HTTP/2 with prior knowledge)\n",
};

impl Refusal {
    fn bad(text: &'static str) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            text,
        }
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` until it is complete. `client` is who sent
/// it, for `X-Forwarded-For`.
pub(crate) fn parse_request(
    buf: &[u8],
    limits: Limits,
    client: IpAddr,
) -> Result<Option<RequestHead>, Refusal> {
    let mut table = [const { MaybeUninit::<Header<'_>>::uninit() }; FIELD_TABLE];
    let table = &mut table[..limits.max_fields.clamp(1, FIELD_TABLE)];
    let mut request = httparse::Request::new(&mut []);
    let len =
        match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut request, buf, table) {
            Ok(Status::Complete(len)) if len <= limits.max_bytes => len,
            Ok(Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE),
            Ok(Status::Partial) if buf.len() >= limits.max_bytes => return Err(TOO_LARGE),
            Ok(Status::Partial) => return Ok(None),
            Err(httparse::Error::Version) => {
                let line_end = buf.iter().position(|&b| b == b'\n');
                let version = line_end.map(|end| request_version(&buf[..end]));
                return match version {
                    None if buf.len() < limits.max_bytes => Ok(None),
                    Some(Version::LaterMinor(at)) => parse_request(&as_http11(buf, at), limits, client),
                    Some(Version::OtherMajor) => Err(UNSUPPORTED_VERSION),
                    None | Some(Version::Malformed) => Err(BAD_REQUEST),
                };
            }
            Err(_) => return Err(BAD_REQUEST),
        };
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return Err(BAD_REQUEST);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| BAD_REQUEST)?;
    let http10 = version == 0;
    let fields = &*request.headers;
    let at = |slice: &[u8]| offset(buf, slice);

    let mut host_fields = 0;
    let mut host = None;
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut close = false;
    let mut upgrade_token = false;
    let mut upgrade = None;
    let mut cookies = Vec::new();
    for field in fields {
        let value = field.value;
        match field_kind(field.name) {
            Kind::Host => {
                host_fields += 1;
                host = Some(at(trim(value)));
            }
            Kind::ContentLength => {
                let parsed = content_length(value).ok_or(Refusal::bad("invalid Content-Length\n"))?;
                if length.is_some_and(|known| known != parsed) {
                    return Err(Refusal::bad("conflicting Content-Length fields\n"));
                }
                length = Some(parsed);
            }
            Kind::TransferEncoding => {
                transfer_encoding = true;
                for coding in tokens(value) {
                    if chunked_last {
                        // Anything after `chunked`, even a second `chunked`, leaves the length unknown.
                        return Err(Refusal::bad("chunked must be the final transfer coding\n"));
                    }
                    chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                    // A replica that decodes a coding tideway does not know may frame the body otherwise.
                    if !chunked_last {
                        return Err(UNSUPPORTED_CODING);
                    }
                }
            }
            Kind::Connection => {
                for token in tokens(value) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
                }
            }
            Kind::Upgrade => upgrade = Some(at(trim(value))),
            Kind::Cookie => cookies.push(at(value)),
            Kind::Other | Kind::HopByHop | Kind::Forwarded => {}
        }
    }
    let body = match (transfer_encoding, length) {
        (true, _) if http10 => return Err(Refusal::bad("Transfer-Encoding is not HTTP/1.0\n")),
        // Both framings at once is how requests are smuggled past proxies (RFC 9112 §6.3).
        (true, Some(_)) => return Err(Refusal::bad("both Transfer-Encoding and Content-Length\n")),
        (true, None) if !chunked_last => {
            return Err(Refusal::bad("chunked must be the final transfer coding\n"));
        }
        (true, None) => Framing::Chunked,
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(length)) => Framing::Length(length),
    };

    let target_at = at(target.as_bytes());
    let form = if method == Method::CONNECT {
        // Answered with 405 before anything is forwarded.
        Target::Origin
    } else {
        target_form(target).ok_or(BAD_REQUEST)?
    };
    // `*` names the server itself, which only OPTIONS may ask about (RFC 9112 §3.2.4).
    if matches!(form, Target::Asterisk) && method != Method::OPTIONS {
        return Err(BAD_REQUEST);
    }
    let absolute = matches!(form, Target::Absolute { .. });
    let (forward_target, path) = match form {
        Target::Origin => {
            let path_len = target.find('?').unwrap_or(target.len());
            (target_at.clone(), target_at.start..target_at.start + path_len)
        }
        Target::Asterisk => (target_at.clone(), 0..0),
        Target::Absolute { authority, rest } => {
            host = Some(shift(&authority, target_at.start));
            let rest = shift(&rest, target_at.start);
            let path_len = buf[rest.clone()]
                .iter()
                .position(|b| *b == b'?')
                .unwrap_or(rest.len());
            (rest.clone(), rest.start..rest.start + path_len)
        }
    };
    // An upgrade to h2c would turn the replica connection into HTTP/2 behind tideway's back: the request is
    // forwarded as a plain one instead (the client keeps HTTP/1.1, as RFC 9113 §3.1 lets a server decide).
    let upgrade = upgrade
        .filter(|_| upgrade_token && !http10)
        .filter(|range| !tokens(&buf[range.clone()]).any(|p| p.eq_ignore_ascii_case(b"h2c")));

    let mut forward = Vec::with_capacity(len + 128);
    forward.extend_from_slice(method.as_str().as_bytes());
    forward.push(b' ');
    if forward_target.is_empty() || buf[forward_target.start] == b'?' {
        forward.push(b'/');
    }
    forward.extend_from_slice(&buf[forward_target]);
    forward.extend_from_slice(b" HTTP/1.1\r\n");
    if absolute && let Some(host) = &host {
        put_field(&mut forward, b"Host", &buf[host.clone()]);
    }
    let named = connection_named(fields);
    for field in fields {
        let kind = field_kind(field.name);
        let dropped = match kind {
            Kind::HopByHop | Kind::Connection | Kind::Upgrade | Kind::Forwarded => true,
            Kind::Host => absolute,
            // The framing fields stay whatever `Connection` says: the body is relayed as they frame it,
            // and a replica that did not see them would take the body for another request.
            Kind::ContentLength | Kind::TransferEncoding => false,
            Kind::Other | Kind::Cookie => is_named(&named, field.name),
        };
        if !dropped {
            put_field(&mut forward, field.name.as_bytes(), field.value);
        }
    }
    forward.extend_from_slice(b"X-Forwarded-For: ");
    for earlier in fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("x-forwarded-for"))
        .flat_map(|f| f.value.split(|b| *b == b','))
        .map(trim)
        .filter(|v| !v.is_empty())
    {
        forward.extend_from_slice(earlier);
        forward.extend_from_slice(b", ");
    }
    // Writing into a Vec cannot fail.
    let _ = write!(forward, "{client}");
    forward.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n");
    if let Some(host) = &host {
        put_field(&mut forward, b"X-Forwarded-Host", &buf[host.clone()]);
    }
    if let Some(protocol) = &upgrade {
        forward.extend_from_slice(b"Connection: upgrade\r\n");
        put_field(&mut forward, b"Upgrade", &buf[protocol.clone()]);
    }
    forward.extend_from_slice(b"\r\n");

    Ok(Some(RequestHead {
        len,
        method,
        http10,
        path,
        host,
        host_fields,
        body,
        keep_alive: !close && !http10,
        websocket: upgrade
            .as_ref()
            .is_some_and(|p| buf[p.clone()].eq_ignore_ascii_case(b"websocket")),
        upgrade: upgrade.is_some(),
        cookies,
        forward,
    }))
}

/// The protocol version of a message, when httparse knows only HTTP/1.0 and HTTP/1.1.
enum Version {
    /// `HTTP/1.x` with a minor version above 1, its digit at this offset: read as HTTP/1.1, the highest
    /// minor version tideway speaks (RFC 9110 §2.5).
    LaterMinor(usize),
    /// `HTTP/d.d` with another major version.
    OtherMajor,
    /// Not `HTTP/d.d` at all.
    Malformed,
}

/// The version at the end of a request line (without its line feed).
fn request_version(line: &[u8]) -> Version {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.iter().rposition(|&b| b == b' ') {
        Some(space) => version_at(line, space + 1),
        None => Version::Malformed,
    }
}

/// The version at the start of a status line, once it is all there.
fn response_version(buf: &[u8]) -> Option<Version> {
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
fn as_http11(buf: &[u8], at: usize) -> Vec<u8> {
    let mut copy = buf.to_vec();
    copy[at] = b'1';
    copy
}

/// Parses the response head at the start of `buf` and writes it, rewritten for the client, to `out`:
/// `Ok(None)` until it is complete.
pub(crate) fn parse_response(
    buf: &[u8],
    rewrite: ResponseRewrite<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut table = [const { MaybeUninit::<Header<'_>>::uninit() }; FIELD_TABLE];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut table,
    ) {
        Ok(Status::Complete(len)) if len <= MAX_RESPONSE_HEAD => len,
        Ok(Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => return Ok(None),
        // A later HTTP/1.x is read as HTTP/1.1.
        Err(httparse::Error::Version) => match response_version(buf) {
            Some(Version::LaterMinor(at)) => return parse_response(&as_http11(buf, at), rewrite, out),
            None if buf.len() < MAX_RESPONSE_HEAD => return Ok(None),
            _ => return Err(BadResponse),
        },
        _ => return Err(BadResponse),
    };
    let (Some(code), Some(version)) = (response.code, response.version) else {
        return Err(BadResponse);
    };
    let status = StatusCode::from_u16(code).map_err(|_| BadResponse)?;
    let fields = &*response.headers;

    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut close = version == 0;
    for field in fields {
        match field_kind(field.name) {
            Kind::ContentLength => {
                let parsed = content_length(field.value).ok_or(BadResponse)?;
                if length.is_some_and(|known| known != parsed) {
                    return Err(BadResponse);
                }
                length = Some(parsed);
            }
            Kind::TransferEncoding => {
                // Only `chunked`, once: tideway removes the client's TE, so no client asked for another
                // coding. (A length beside it is removed: RFC 9112 §6.3.)
                for coding in tokens(field.value) {
                    if transfer_encoding || !coding.eq_ignore_ascii_case(b"chunked") {
                        return Err(BadResponse);
                    }
                    transfer_encoding = true;
                    chunked_last = true;
                }
            }
            Kind::Connection => {
                for token in tokens(field.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if version == 0 && token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            }
            _ => {}
        }
    }
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let body = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || rewrite.head_request
    {
        Framing::Empty
    } else if transfer_encoding {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
        if chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    let decode_chunks = body == Framing::Chunked && rewrite.http10_client;

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    let named = connection_named(fields);
    let mut protocol = None;
    for field in fields {
        let dropped = match field_kind(field.name) {
            Kind::Upgrade => {
                protocol = Some(field.value);
                // A 426 must say which protocol to upgrade to (RFC 9110 §15.5.22).
                status != StatusCode::UPGRADE_REQUIRED
            }
            Kind::HopByHop | Kind::Connection => true,
            Kind::TransferEncoding => decode_chunks,
            Kind::ContentLength => transfer_encoding,
            Kind::Host | Kind::Cookie | Kind::Forwarded | Kind::Other => is_named(&named, field.name),
        };
        if !dropped {
            put_field(out, field.name.as_bytes(), field.value);
        }
    }
    if switching {
        let (Some(protocol), true) = (protocol, rewrite.upgrade_requested) else {
            return Err(BadResponse);
        };
        out.extend_from_slice(b"Connection: upgrade\r\n");
        put_field(out, b"Upgrade", protocol);
    } else if !status.is_informational() && (rewrite.close || body == Framing::UntilClose || decode_chunks) {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    // A new session's cookie goes with the final response — a switch of protocols included, so a WebSocket
    // that opened the session finds it again when it reconnects.
    if (switching || !status.is_informational())
        && let Some(cookie) = rewrite.set_cookie
    {
        put_field(out, b"Set-Cookie", cookie);
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status,
        body,
        reusable: !close && body != Framing::UntilClose,
    }))
}

/// Gives a forwarded request head without a `Host` (an HTTP/1.0 request) the replica's address as one:
/// it reaches the replica as HTTP/1.1, which requires the field.
pub(crate) fn add_host(forward: &mut Vec<u8>, host: impl std::fmt::Display) {
    let Some(line_end) = forward.windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let field = format!("Host: {host}\r\n");
    forward.splice(line_end + 2..line_end + 2, field.into_bytes());
}

/// A response tideway writes itself: a short plain-text body, `Retry-After` when it says when to come back.
pub(crate) fn own_response(status: StatusCode, text: &str, retry_after: Option<u64>, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + text.len());
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or_default(),
        text.len()
    );
    if let Some(seconds) = retry_after {
        let _ = write!(out, "Retry-After: {seconds}\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text.as_bytes());
    out
}

/// The fields tideway looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
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

fn field_kind(name: &str) -> Kind {
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
fn connection_named<'b>(fields: &[Header<'b>]) -> Vec<&'b [u8]> {
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

fn is_named(named: &[&[u8]], name: &str) -> bool {
    named.iter().any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// The comma-separated tokens of a field value.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(trim).filter(|t| !t.is_empty())
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// A `Content-Length` value: one number, or a list of the same number (RFC 9110 §8.6).
fn content_length(value: &[u8]) -> Option<u64> {
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

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Where `slice`, a part of `buf`, lies in it.
fn offset(buf: &[u8], slice: &[u8]) -> Range<usize> {
    let start = slice.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + slice.len()
}

fn shift(range: &Range<usize>, by: usize) -> Range<usize> {
    range.start + by..range.end + by
}

/// The form of a request target (RFC 9112 §3.2), with ranges relative to the target.
enum Target {
    /// `/path?query`.
    Origin,
    /// `*`, for `OPTIONS`.
    Asterisk,
    /// `http://authority/path?query`: the authority (without user info) and the rest.
    Absolute {
        authority: Range<usize>,
        rest: Range<usize>,
    },
}

fn target_form(target: &str) -> Option<Target> {
    if target.starts_with('/') {
        return Some(Target::Origin);
    }
    if target == "*" {
        return Some(Target::Asterisk);
    }
    let scheme_end = target.find("://")?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority_start = scheme_end + 3;
    let authority_end = target[authority_start..]
        .find(['/', '?'])
        .map_or(target.len(), |at| authority_start + at);
    let authority = &target[authority_start..authority_end];
    let host_start = authority
        .rfind('@')
        .map_or(authority_start, |at| authority_start + at + 1);
    if host_start == authority_end {
        return None;
    }
    Some(Target::Absolute {
        authority: host_start..authority_end,
        rest: authority_end..target.len(),
    })
}

#[cfg(test)]
mod tests;
