use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;

use http::{HeaderMap, Method, StatusCode};

use super::response::{BadResponse, MAX_RESPONSE_HEAD, ResponseHead};
use super::*;
use crate::message::framing::Framing;
use crate::refusal::Refusal;

const LIMITS: Limits = Limits {
    max_bytes: 4096,
    max_fields: 20,
};
const CLIENT: Hop = Hop {
    client: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
    https: false,
};

fn request(raw: &str) -> Result<Option<RequestHead>, Refusal> {
    parse_request(raw.as_bytes(), LIMITS, CLIENT)
}

fn complete(raw: &str) -> (RequestHead, String) {
    let head = request(raw).expect("valid").expect("complete");
    let forward = String::from_utf8(head.forward.clone()).expect("ascii");
    (head, forward)
}

fn text<'a>(raw: &'a str, range: &Range<usize>) -> &'a str {
    &raw[range.clone()]
}

#[test]
fn a_plain_request_is_forwarded_with_forwarding_fields() {
    let raw = "GET /a/b?x=1 HTTP/1.1\r\nHost: Site.test:8080\r\nX-Kept: yes\r\n\r\nGET /next";
    let (head, forward) = complete(raw);
    assert_eq!(head.len, raw.len() - "GET /next".len());
    assert_eq!(head.method, Method::GET);
    assert!(!head.http10 && head.keep_alive);
    assert_eq!(text(raw, &head.path), "/a/b");
    assert_eq!(head.host.as_ref().map(|h| text(raw, h)), Some("Site.test:8080"));
    assert_eq!(head.body, Framing::Empty);
    assert_eq!(
        forward,
        "GET /a/b?x=1 HTTP/1.1\r\nHost: Site.test:8080\r\nX-Kept: yes\r\nX-Forwarded-For: 10.0.0.9\r\n\
         X-Forwarded-Proto: http\r\nX-Forwarded-Host: Site.test:8080\r\n\r\n"
    );
}

#[test]
fn hop_by_hop_and_connection_named_fields_stay_behind() {
    let raw = "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Private\r\nX-Private: s\r\n\
               Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic a\r\nProxy-Connection: x\r\n\
               Upgrade: h2c\r\nTrailer: X-Sum\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: spoofed\r\n\r\n";
    let (head, forward) = complete(raw);
    assert!(!head.upgrade, "an Upgrade field alone asks for nothing");
    for gone in [
        "Connection",
        "X-Private",
        "Keep-Alive",
        "TE:",
        "Proxy-",
        "Upgrade",
        "https",
        "spoofed",
    ] {
        assert!(!forward.contains(gone), "{gone} was forwarded: {forward}");
    }
    assert!(forward.contains("Trailer: X-Sum\r\n"), "trailers are end to end");
    assert!(forward.contains("X-Forwarded-Host: h\r\n"));
}

#[test]
fn connection_cannot_name_away_the_framing() {
    let raw = "POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length, transfer-encoding\r\nContent-Length: 4\r\n\r\n";
    let (head, forward) = complete(raw);
    assert_eq!(head.body, Framing::Length(4));
    assert!(
        forward.contains("Content-Length: 4\r\n"),
        "the replica frames the body as tideway does: {forward}"
    );
}

#[test]
fn earlier_hops_are_kept_in_x_forwarded_for() {
    let raw = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.1.1.1\r\nX-Forwarded-For: 10.2.2.2, ,10.3.3.3\r\n\r\n";
    let (_, forward) = complete(raw);
    assert!(
        forward.contains("X-Forwarded-For: 10.1.1.1, 10.2.2.2, 10.3.3.3, 10.0.0.9\r\n"),
        "{forward}"
    );
    assert_eq!(forward.matches("X-Forwarded-For").count(), 1);
}

#[test]
fn an_absolute_target_routes_and_forwards_by_its_authority() {
    let raw = "GET http://user@site.test:81/x?q HTTP/1.1\r\nHost: other.test\r\n\r\n";
    let (head, forward) = complete(raw);
    assert_eq!(head.host.as_ref().map(|h| text(raw, h)), Some("site.test:81"));
    assert_eq!(text(raw, &head.path), "/x");
    assert!(
        forward.starts_with("GET /x?q HTTP/1.1\r\nHost: site.test:81\r\n"),
        "{forward}"
    );
    assert!(!forward.contains("other.test"));
    let (_, bare) = complete("GET http://site.test HTTP/1.1\r\n\r\n");
    assert!(
        bare.starts_with("GET / HTTP/1.1\r\nHost: site.test\r\n"),
        "{bare}"
    );
    let (_, query) = complete("GET http://site.test?a HTTP/1.1\r\n\r\n");
    assert!(query.starts_with("GET /?a HTTP/1.1\r\n"), "{query}");
}

#[test]
fn upgrades_are_recognised_and_passed_on() {
    let raw = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n";
    let (head, forward) = complete(raw);
    assert!(head.upgrade && head.websocket);
    assert!(
        forward.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
        "{forward}"
    );
    assert!(forward.contains("Sec-WebSocket-Key: k\r\n"));
}

#[test]
fn bodies_are_framed_by_length_or_chunks() {
    let (head, forward) = complete("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n");
    assert_eq!(head.body, Framing::Length(12));
    assert!(forward.contains("Content-Length: 12\r\n"));
    let (head, _) = complete("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7, 7\r\n\r\n");
    assert_eq!(head.body, Framing::Length(7));
    let (head, forward) = complete("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n");
    assert_eq!(head.body, Framing::Chunked);
    assert!(
        forward.contains("Transfer-Encoding: Chunked\r\n"),
        "relayed as framed"
    );
    let (head, _) = complete("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(head.body, Framing::Empty);
}

#[test]
fn transfer_codings_other_than_chunked_are_not_implemented() {
    for coding in ["gzip, chunked", "identity, chunked", "gzip", "chunked;q=1"] {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {coding}\r\n\r\n");
        assert_eq!(
            request(&raw).map(|_| ()).map_err(|r| r.status),
            Err(StatusCode::NOT_IMPLEMENTED),
            "{coding}"
        );
    }
}

#[test]
fn ambiguous_or_malformed_heads_are_refused() {
    for raw in [
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET relative HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        assert_eq!(
            request(raw).map(|_| ()).map_err(|r| r.status),
            Err(StatusCode::BAD_REQUEST),
            "{raw:?}"
        );
    }
}

#[test]
fn heads_beyond_the_limits_get_431() {
    let big = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n", "x".repeat(5000));
    assert_eq!(
        request(&big).map(|_| ()).map_err(|r| r.status),
        Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    let unfinished = format!("GET / HTTP/1.1\r\nX-Big: {}", "x".repeat(5000));
    assert_eq!(
        request(&unfinished).map(|_| ()).map_err(|r| r.status),
        Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        "an unfinished head past the limit is refused without waiting for its end"
    );
    let many: String = (0..21).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(
        request(&many).map(|_| ()).map_err(|r| r.status),
        Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
}

#[test]
fn an_unfinished_head_waits_for_more() {
    assert!(matches!(request("GET / HTTP/1.1\r\nHost: h\r\n"), Ok(None)));
    assert!(matches!(request("GE"), Ok(None)));
}

#[test]
fn a_request_without_host_gets_one_for_the_replica() {
    let (mut head, _) = complete("GET /old HTTP/1.0\r\nX-A: 1\r\n\r\n");
    add_host(&mut head.forward, "127.0.0.1:9001");
    let forward = String::from_utf8(head.forward).expect("ascii");
    assert!(
        forward.starts_with("GET /old HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nX-A: 1\r\n"),
        "{forward}"
    );
}

#[test]
fn http10_requests_and_close_do_not_keep_alive() {
    let (head, _) = complete("GET / HTTP/1.0\r\n\r\n");
    assert!(head.http10 && !head.keep_alive && head.host.is_none());
    let (head, _) = complete("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert!(!head.keep_alive);
    let (head, _) = complete("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(head.host_fields, 2);
}

const PLAIN: ResponseRewrite<'static> = ResponseRewrite {
    http10_client: false,
    upgrade_requested: false,
    close: false,
    set_cookie: None,
    hsts: Hsts::Keep,
};

#[test]
fn strict_transport_security_crosses_only_over_tls_and_the_apps_own_wins() {
    let raw = "HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=5\r\nContent-Length: 0\r\n\r\n";
    let (_, kept) = response(raw, PLAIN);
    assert!(
        kept.contains("Strict-Transport-Security: max-age=5\r\n"),
        "{kept}"
    );
    let (_, plain) = response(
        raw,
        ResponseRewrite {
            hsts: Hsts::Drop,
            ..PLAIN
        },
    );
    assert!(
        !plain.to_ascii_lowercase().contains("strict-transport"),
        "{plain}"
    );
    let own = ResponseRewrite {
        hsts: Hsts::Set(b"max-age=31536000"),
        ..PLAIN
    };
    let (_, set) = response(raw, own);
    assert_eq!(set.matches("Strict-Transport-Security").count(), 1, "{set}");
    assert!(
        set.contains("Strict-Transport-Security: max-age=31536000\r\n"),
        "{set}"
    );
    let (_, interim) = response("HTTP/1.1 103 Early Hints\r\n\r\n", own);
    assert!(!interim.contains("Strict"), "{interim}");

    let mut fields = HeaderMap::new();
    fields.insert(
        "strict-transport-security",
        http::HeaderValue::from_static("max-age=5"),
    );
    Hsts::Drop.apply(&mut fields);
    assert!(fields.is_empty());
    Hsts::Set(b"max-age=60").apply(&mut fields);
    assert_eq!(fields["strict-transport-security"], "max-age=60");
}

fn response(raw: &str, rewrite: ResponseRewrite<'_>) -> (ResponseHead, String) {
    response_to(raw, false, rewrite)
}

fn response_to(raw: &str, head_request: bool, rewrite: ResponseRewrite<'_>) -> (ResponseHead, String) {
    let mut out = Vec::new();
    let head = parse_response(
        raw.as_bytes(),
        head_request,
        ResponseOut::Bytes(rewrite, &mut out),
    )
    .expect("valid")
    .expect("complete");
    (head, String::from_utf8(out).expect("ascii"))
}

/// The head as an HTTP/2 client gets it: status, framing and the fields that cross.
fn response_fields(raw: &str) -> (ResponseHead, HeaderMap) {
    let mut fields = HeaderMap::new();
    let head = parse_response(raw.as_bytes(), false, ResponseOut::Fields(&mut fields))
        .expect("valid")
        .expect("complete");
    (head, fields)
}

#[test]
fn responses_for_http2_clients_keep_only_end_to_end_fields() {
    let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t\r\nUpgrade: h2c\r\nX-Kept: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
    let (head, fields) = response_fields(raw);
    assert_eq!(head.body, Framing::Chunked);
    let names: Vec<&str> = fields.keys().map(http::HeaderName::as_str).collect();
    assert_eq!(names, ["x-kept", "set-cookie"], "{fields:?}");
    assert_eq!(fields.get_all("set-cookie").iter().count(), 2);
    let (head, fields) = response_fields("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(head.body, Framing::Empty);
    assert_eq!(
        fields["content-length"], "0",
        "a length crosses when no coding voids it"
    );
    let bad = "HTTP/1.1 200 OK\r\nX-Bad: a\x7fb\r\n\r\n";
    let mut fields = HeaderMap::new();
    assert!(parse_response(bad.as_bytes(), false, ResponseOut::Fields(&mut fields)).is_err());
}

#[test]
fn responses_are_framed_and_rewritten_for_the_client() {
    let raw = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t\r\nX-Kept: 1\r\n\r\nok";
    let (head, out) = response(raw, PLAIN);
    assert_eq!(
        (head.len, head.status, head.body, head.reusable),
        (raw.len() - 2, StatusCode::OK, Framing::Length(2), true)
    );
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: 1\r\n\r\n");

    let (head, out) = response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
        ResponseRewrite {
            close: true,
            set_cookie: Some(b"tideway-a=1"),
            ..PLAIN
        },
    );
    assert_eq!(head.body, Framing::Chunked);
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nSet-Cookie: tideway-a=1\r\n\r\n"
    );

    let (head, out) = response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ResponseRewrite {
            http10_client: true,
            ..PLAIN
        },
    );
    assert_eq!(head.body, Framing::Chunked);
    assert_eq!(
        out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
        "decoded for HTTP/1.0, then closed"
    );

    let (head, out) = response("HTTP/1.0 200 OK\r\n\r\n", PLAIN);
    assert_eq!((head.body, head.reusable), (Framing::UntilClose, false));
    assert!(out.contains("Connection: close\r\n"));
    let (head, _) = response(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        PLAIN,
    );
    assert!(!head.reusable);
}

#[test]
fn some_responses_never_have_a_body() {
    for raw in [
        "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n",
    ] {
        assert_eq!(response(raw, PLAIN).0.body, Framing::Empty, "{raw:?}");
    }
    let (head, out) = response_to("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, PLAIN);
    assert_eq!(head.body, Framing::Empty);
    assert!(
        out.contains("Content-Length: 5\r\n"),
        "a HEAD response keeps its length"
    );
}

#[test]
fn switching_protocols_needs_an_upgrade_request() {
    let raw = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\n\r\n";
    let (head, out) = response(
        raw,
        ResponseRewrite {
            upgrade_requested: true,
            ..PLAIN
        },
    );
    assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        out,
        "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    let mut out = Vec::new();
    assert_eq!(
        parse_response(raw.as_bytes(), false, ResponseOut::Bytes(PLAIN, &mut out)).map(|_| ()),
        Err(BadResponse)
    );
    let (_, out) = response(
        "HTTP/1.1 426 Upgrade Required\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
        PLAIN,
    );
    assert!(out.contains("Upgrade: h2c\r\n"), "a 426 says what to upgrade to");
}

#[test]
fn broken_responses_are_refused() {
    for raw in [
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "SSH-2.0-OpenSSH\r\n\r\n",
        // No client asked for another transfer coding: tideway removes the client's TE.
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    ] {
        let mut out = Vec::new();
        assert_eq!(
            parse_response(raw.as_bytes(), false, ResponseOut::Bytes(PLAIN, &mut out)).map(|_| ()),
            Err(BadResponse),
            "{raw:?}"
        );
    }
    let endless = format!("HTTP/1.1 200 OK\r\nX: {}", "x".repeat(MAX_RESPONSE_HEAD));
    let mut out = Vec::new();
    assert_eq!(
        parse_response(endless.as_bytes(), false, ResponseOut::Bytes(PLAIN, &mut out)).map(|_| ()),
        Err(BadResponse)
    );
}

#[test]
fn own_responses_are_complete_messages() {
    let out = own_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy\n",
        Said::RetryAfter(5),
        true,
    );
    assert_eq!(
        String::from_utf8(out).expect("ascii"),
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\
         Retry-After: 5\r\nConnection: close\r\n\r\nbusy\n"
    );
    let out = own_response(
        StatusCode::PERMANENT_REDIRECT,
        "",
        Said::Location(b"https://a.test/p?q"),
        false,
    );
    assert_eq!(
        String::from_utf8(out).expect("ascii"),
        "HTTP/1.1 308 Permanent Redirect\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\n\
         Location: https://a.test/p?q\r\n\r\n"
    );
}

#[test]
fn an_upgrade_to_h2c_is_forwarded_as_a_plain_request() {
    let (head, forward) = complete(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    );
    assert!(!head.upgrade);
    assert!(!forward.to_ascii_lowercase().contains("upgrade"), "{forward}");
    assert!(!forward.contains("HTTP2-Settings"), "{forward}");
    let (head, _) = complete("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(!head.upgrade, "OPTIONS * is still served");
}

#[test]
fn a_later_http1_minor_version_is_read_as_http11() {
    let raw = "GET /x HTTP/1.2\r\nHost: h\r\n\r\n";
    let (head, forward) = complete(raw);
    assert!(!head.http10 && head.keep_alive);
    assert_eq!(head.len, raw.len());
    assert_eq!(text(raw, &head.path), "/x");
    assert!(forward.starts_with("GET /x HTTP/1.1\r\n"), "{forward}");
    assert!(
        matches!(request("GET /x HTTP/1.9\r\nHost: h"), Ok(None)),
        "partial"
    );

    let (head, out) = response("HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok", PLAIN);
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.body, Framing::Length(2));
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
}

#[test]
fn other_versions_are_refused() {
    for (raw, status) in [
        (
            "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        ),
        (
            "GET / HTTP/0.9\r\nHost: h\r\n\r\n",
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        ),
        ("GET / HTTP/1.10\r\nHost: h\r\n\r\n", StatusCode::BAD_REQUEST),
        (
            "GET / HTTP/1.1 HTTP/1.1\r\nHost: h\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        ("GET / HTTX/1.2\r\nHost: h\r\n\r\n", StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(
            request(raw).map(|_| ()).map_err(|r| r.status),
            Err(status),
            "{raw:?}"
        );
    }
    let mut out = Vec::new();
    assert!(
        parse_response(
            b"HTTP/2.0 200 OK\r\n\r\n",
            false,
            ResponseOut::Bytes(PLAIN, &mut out)
        )
        .is_err()
    );
}

#[test]
fn http2_requests_cross_by_the_same_rules_with_their_own_host_and_framing() {
    let mut fields = HeaderMap::new();
    for (name, value) in [
        ("cookie", "a=1"),
        ("cookie", "b=2"),
        ("te", "trailers"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-host", "spoofed"),
        ("content-length", "3"),
        ("proxy-authorization", "Basic x"),
        ("x-kept", "1"),
    ] {
        fields.append(name, http::HeaderValue::from_static(value));
    }
    let client = Hop {
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        https: false,
    };
    let head = write_request(
        &Method::POST,
        "/p?q",
        &fields,
        b"app.test",
        Framing::Length(3),
        client,
    );
    assert_eq!(
        String::from_utf8(head).expect("ascii"),
        "POST /p?q HTTP/1.1\r\nHost: app.test\r\nCookie: a=1; b=2\r\nx-kept: 1\r\nContent-Length: 3\r\n\
         X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: app.test\r\n\r\n"
    );
    let head = write_request(&Method::PUT, "/", &HeaderMap::new(), b"h", Framing::Empty, client);
    assert!(String::from_utf8_lossy(&head).contains("Content-Length: 0\r\n"));
    let head = write_request(
        &Method::GET,
        "/",
        &HeaderMap::new(),
        b"h",
        Framing::Chunked,
        client,
    );
    assert!(String::from_utf8_lossy(&head).contains("Transfer-Encoding: chunked\r\n"));
}
