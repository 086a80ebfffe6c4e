//! Response heads: parsed, framed, and rewritten for the client in the same pass — as bytes for an
//! HTTP/1.x client, as fields for an HTTP/2 one.

use std::io::Write as _;
use std::mem::MaybeUninit;

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use httparse::{Header, Status};

use super::FIELD_TABLE;
use super::fields::{
    Kind, connection_named, content_length, field_kind, is_named, put_field, response_field_kept, tokens,
};
use super::version::{Version, as_http11, response_version};
use crate::message::framing::Framing;

/// Largest response head accepted from a replica.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

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

/// Where a parsed response head goes.
#[derive(Debug)]
pub(crate) enum ResponseOut<'o, 'c> {
    /// Written, rewritten for an HTTP/1.x client, to the bytes.
    Bytes(ResponseRewrite<'c>, &'o mut Vec<u8>),
    /// Its end-to-end fields, for an HTTP/2 client, into the map.
    Fields(&'o mut HeaderMap),
}

/// How a response head is rewritten for an HTTP/1.x client.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResponseRewrite<'a> {
    /// The client speaks HTTP/1.0: chunked bodies are decoded for it.
    pub(crate) http10_client: bool,
    /// The client asked to switch protocols.
    pub(crate) upgrade_requested: bool,
    /// The client connection closes after this response.
    pub(crate) close: bool,
    /// A `Set-Cookie` value to add (a new affinity session).
    pub(crate) set_cookie: Option<&'a [u8]>,
    /// What becomes of `Strict-Transport-Security`.
    pub(crate) hsts: Hsts<'a>,
}

/// What becomes of `Strict-Transport-Security` in a response to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hsts<'a> {
    /// The replica's field, if any, crosses: a response over TLS for an app without `hsts_max_age`.
    Keep,
    /// None crosses: the response goes over plain HTTP, where the field means nothing (RFC 6797 §7.2)
    /// and would pin a host that tideway may not serve over TLS.
    Drop,
    /// Tideway's value (`hsts_max_age`, over TLS) replaces the replica's.
    Set(&'a [u8]),
}

impl Hsts<'_> {
    /// Applies the rule to the fields of a response for an HTTP/2 client.
    pub(crate) fn apply(self, fields: &mut HeaderMap) {
        match self {
            Hsts::Keep => {}
            Hsts::Drop => {
                fields.remove(http::header::STRICT_TRANSPORT_SECURITY);
            }
            Hsts::Set(value) => {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    fields.insert(http::header::STRICT_TRANSPORT_SECURITY, value);
                }
            }
        }
    }
}

/// A replica's response head that cannot be relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BadResponse;

/// Parses the response head at the start of `buf` and writes it, rewritten for the client, to `out`:
/// `Ok(None)` until it is complete. `head_request`: the request was `HEAD`, so the response has no body
/// whatever it says.
pub(crate) fn parse_response(
    buf: &[u8],
    head_request: bool,
    out: ResponseOut<'_, '_>,
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
            Some(Version::LaterMinor(at)) => return parse_response(&as_http11(buf, at), head_request, out),
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
        || head_request
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
    let named = connection_named(fields);
    let (rewrite, out) = match out {
        ResponseOut::Bytes(rewrite, out) => (rewrite, out),
        ResponseOut::Fields(map) => {
            map.clear();
            for field in fields {
                let kind = field_kind(field.name);
                if response_field_kept(kind, is_named(&named, field.name), true, transfer_encoding, false) {
                    let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| BadResponse)?;
                    let value = HeaderValue::from_bytes(field.value).map_err(|_| BadResponse)?;
                    map.append(name, value);
                }
            }
            return Ok(Some(ResponseHead {
                len,
                status,
                body,
                reusable: !close && body != Framing::UntilClose,
            }));
        }
    };
    let decode_chunks = body == Framing::Chunked && rewrite.http10_client;

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut protocol = None;
    for field in fields {
        let kind = field_kind(field.name);
        if kind == Kind::Upgrade {
            protocol = Some(field.value);
        }
        if kind == Kind::StrictTransportSecurity && rewrite.hsts != Hsts::Keep {
            continue;
        }
        let upgrade_kept = status == StatusCode::UPGRADE_REQUIRED;
        let named = is_named(&named, field.name);
        if response_field_kept(kind, named, decode_chunks, transfer_encoding, upgrade_kept) {
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
    if let (false, Hsts::Set(value)) = (status.is_informational(), rewrite.hsts) {
        put_field(out, b"Strict-Transport-Security", value);
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status,
        body,
        reusable: !close && body != Framing::UntilClose,
    }))
}

/// What one of tideway's own responses says beyond its status and text.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Said<'a> {
    /// Nothing more.
    Nothing,
    /// When to come back (`Retry-After`, seconds).
    RetryAfter(u64),
    /// Where to go instead (`Location`).
    Location(&'a [u8]),
}

/// A response tideway writes itself: a short plain-text body, and what else it `said`.
pub(crate) fn own_response(status: StatusCode, text: &str, said: Said<'_>, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + text.len());
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or_default(),
        text.len()
    );
    match said {
        Said::Nothing => {}
        Said::RetryAfter(seconds) => {
            let _ = write!(out, "Retry-After: {seconds}\r\n");
        }
        Said::Location(location) => put_field(&mut out, b"Location", location),
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text.as_bytes());
    out
}
