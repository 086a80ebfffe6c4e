//! Request heads: parsed in place, held to the limits and to unambiguous framing, and written as the
//! replica receives them.

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::ops::Range;

use http::header::{COOKIE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use httparse::{Header, Status};

use super::FIELD_TABLE;
use super::fields::{
    Hop, Kind, connection_named, content_length, field_kind, is_named, offset, put_field, put_forwarded,
    request_field_kept, shift, tokens, trim,
};
use super::version::{Version, as_http11, request_version};
use crate::message::framing::Framing;
use crate::refusal::Refusal;

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
    /// The path and query, as the replica receives them (`*` for `OPTIONS *`).
    pub(crate) target: Range<usize>,
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

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

const BAD_REQUEST: Refusal = Refusal::bad("malformed request\n");
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

/// Parses the request head at the start of `buf`: `Ok(None)` until it is complete. `hop` is how it came,
/// for the `X-Forwarded-*` fields.
pub(crate) fn parse_request(buf: &[u8], limits: Limits, hop: Hop) -> Result<Option<RequestHead>, Refusal> {
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
                    Some(Version::LaterMinor(at)) => parse_request(&as_http11(buf, at), limits, hop),
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
            Kind::Other | Kind::HopByHop | Kind::Forwarded | Kind::StrictTransportSecurity => {}
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
    forward.extend_from_slice(&buf[forward_target.clone()]);
    forward.extend_from_slice(b" HTTP/1.1\r\n");
    if absolute && let Some(host) = &host {
        put_field(&mut forward, b"Host", &buf[host.clone()]);
    }
    let named = connection_named(fields);
    for field in fields {
        if request_field_kept(
            field_kind(field.name),
            is_named(&named, field.name),
            absolute,
            false,
        ) {
            put_field(&mut forward, field.name.as_bytes(), field.value);
        }
    }
    let earlier = fields
        .iter()
        .filter(|f| field_kind(f.name) == Kind::Forwarded && f.name.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|f| f.value);
    put_forwarded(
        &mut forward,
        earlier,
        hop,
        host.as_ref().map(|host| &buf[host.clone()]),
    );
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
        target: forward_target,
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

/// The head of a request that came over HTTP/2, as the replica receives it over HTTP/1.1: the same fields
/// cross as for an HTTP/1.1 request, `host` (the `:authority` routing used, else the `Host` field) is its
/// `Host`, its cookie fields are joined into one (RFC 9113 §8.2.3), and `body` frames what follows.
pub(crate) fn write_request(
    method: &Method,
    target: &str,
    fields: &HeaderMap,
    host: &[u8],
    body: Framing,
    hop: Hop,
) -> Vec<u8> {
    let mut forward = Vec::with_capacity(256 + fields.len() * 48);
    forward.extend_from_slice(method.as_str().as_bytes());
    forward.push(b' ');
    if !target.starts_with('/') && target != "*" {
        forward.push(b'/');
    }
    forward.extend_from_slice(target.as_bytes());
    forward.extend_from_slice(b" HTTP/1.1\r\n");
    put_field(&mut forward, b"Host", host);
    let mut cookies = fields.get_all(COOKIE).iter();
    if let Some(first) = cookies.next() {
        forward.extend_from_slice(b"Cookie: ");
        forward.extend_from_slice(first.as_bytes());
        for more in cookies {
            forward.extend_from_slice(b"; ");
            forward.extend_from_slice(more.as_bytes());
        }
        forward.extend_from_slice(b"\r\n");
    }
    // HTTP/2 has no `Connection` field (RFC 9113 §8.2.2), so none is named by one.
    for (name, value) in fields {
        let kind = field_kind(name.as_str());
        if kind != Kind::Cookie && request_field_kept(kind, false, true, true) {
            put_field(&mut forward, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    match body {
        Framing::Length(length) => {
            // Writing into a Vec cannot fail.
            let _ = write!(forward, "Content-Length: {length}\r\n");
        }
        Framing::Chunked => forward.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        // A method that defines a meaning for content says it has none (RFC 9110 §8.6).
        Framing::Empty | Framing::UntilClose if expects_content(method) => {
            forward.extend_from_slice(b"Content-Length: 0\r\n");
        }
        Framing::Empty | Framing::UntilClose => {}
    }
    let earlier = fields.get_all(X_FORWARDED_FOR).iter().map(HeaderValue::as_bytes);
    put_forwarded(&mut forward, earlier, hop, Some(host));
    forward.extend_from_slice(b"\r\n");
    forward
}

/// Methods whose requests usually carry content.
fn expects_content(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH].contains(method)
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

/// The form of a request target (RFC 9112 §3.2), with ranges relative to the target.
pub(super) enum Target {
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

pub(super) fn target_form(target: &str) -> Option<Target> {
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
