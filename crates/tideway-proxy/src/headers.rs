//! Header rewriting between client and replica: hop-by-hop headers removed, `X-Forwarded-*` set.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1), in addition to any header
/// the `Connection` header names. `Trailer` is not among them: it announces end-to-end trailers, and the
/// HTTP/1.1 encoder only sends trailers it announces.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// Removes hop-by-hop headers; with `upgrade`, re-adds `Connection: upgrade` and `Upgrade` so the protocol
/// switch itself crosses the proxy.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    // `Connection: keep-alive`, `close` or `upgrade` name no header: the usual case allocates nothing.
    let names_headers = connection_tokens(headers).any(|token| !is_connection_option(token));
    if names_headers {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|token| !is_connection_option(token))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, UPGRADE_TOKEN);
        headers.insert(header::UPGRADE, protocol);
    }
}

/// Tells the replica who the client is and how it reached tideway. `X-Forwarded-For` is appended to (it
/// records every hop); the others describe this hop and are overwritten.
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    let client = client.to_string();
    // Earlier hops may have sent the chain in several header lines; it is one list.
    let earlier: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let forwarded_for = if earlier.is_empty() {
        client
    } else {
        format!("{}, {client}", earlier.join(", "))
    };
    if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// Tokens of the `Connection` header that are options, not header names.
fn is_connection_option(token: &str) -> bool {
    ["keep-alive", "close", "upgrade"]
        .iter()
        .any(|option| token.eq_ignore_ascii_case(option))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x-checksum"),
            ("proxy-authorization", "Basic abc"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
        assert_eq!(h["trailer"], "x-checksum", "trailers are end to end");
    }

    #[test]
    fn forwarded_headers_append_and_overwrite() {
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed"),
        ]);
        let host = HeaderValue::from_static("hello.localhost");
        set_forwarded(&mut h, [127, 0, 0, 1].into(), "http", Some(host));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "hello.localhost");
        let mut h = headers(&[
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-for", "10.2.2.2, 10.3.3.3"),
        ]);
        set_forwarded(&mut h, [10, 0, 0, 9].into(), "http", None);
        assert_eq!(h["x-forwarded-for"], "10.1.1.1, 10.2.2.2, 10.3.3.3, 10.0.0.9");
        let mut h = headers(&[("x-forwarded-host", "spoofed")]);
        set_forwarded(&mut h, [10, 0, 0, 1].into(), "http", None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert!(!h.contains_key("x-forwarded-host"));
    }
}
