//! TLS termination end to end: the real binary with certificates issued by a test CA, real TLS clients
//! (rustls, with and without ALPN `h2`), HTTP/1.1, HTTP/2 and WebSocket over TLS, SNI, redirects, HSTS,
//! rotation of the files under load, the handshake limits, and `openssl s_client` refusing old protocols
//! and weak ciphers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tideway_e2e::pki::{Issued, Pki, connect, presented};
use tideway_e2e::{Tideway, request};
use tideway_testkit::TestReplica;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PATIENCE: Duration = Duration::from_secs(10);

/// The certificates of one test: the default, one exact name, one wildcard.
struct Certificates {
    pki: Pki,
    default: Issued,
    exact: Issued,
    wildcard: Issued,
}

impl Certificates {
    fn new() -> Self {
        let pki = Pki::create();
        Certificates {
            default: pki.issue("default", &["default.test"]),
            exact: pki.issue("exact", &["app.example.test"]),
            wildcard: pki.issue("wildcard", &["*.wild.test"]),
            pki,
        }
    }
}

/// Two apps on one replica: `app.example.test` (its own certificate, HSTS) and `*.wild.test` (the
/// wildcard certificate, redirected to HTTPS); anything else falls to the default certificate and a
/// catch-all app.
fn config(certs: &Certificates, replica: SocketAddr, extra_proxy: &str) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\ntls_certificate = \"{}\"\ntls_key = \"{}\"\n\
         {extra_proxy}\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n\
         [[app]]\nname = \"exact\"\nhosts = [\"app.example.test\"]\ntls_certificate = \"{}\"\ntls_key = \"{}\"\n\
         hsts_max_age = \"365d\"\n[app.static]\naddresses = [\"{replica}\"]\n\n\
         [[app]]\nname = \"wild\"\nhosts = [\"*.wild.test\"]\ntls_certificate = \"{}\"\ntls_key = \"{}\"\n\
         redirect_https = true\n[app.static]\naddresses = [\"{replica}\"]\n\n\
         [[app]]\nname = \"rest\"\npath_prefix = \"/\"\n[app.static]\naddresses = [\"{replica}\"]\n",
        certs.default.chain.display(),
        certs.default.key.display(),
        certs.exact.chain.display(),
        certs.exact.key.display(),
        certs.wildcard.chain.display(),
        certs.wildcard.key.display(),
    )
}

/// The HTTPS listener's address, once it is logged.
async fn tls_listener(tideway: &Tideway) -> SocketAddr {
    let events = tideway.wait_for("TLS listening", 1, |_| true).await;
    events[0]["fields"]["listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("a listen address")
}

/// One HTTP/1.1 GET over `stream`: status, headers, body.
async fn get_http1(stream: TlsStream<TcpStream>, host: &str, path: &str) -> tideway_e2e::Answer {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .expect("a response in time")
        .expect("a response");
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.expect("body").to_bytes(),
    )
}

fn echoed(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("the replica's JSON echo")
}

#[tokio::test]
async fn https_serves_http1_http2_and_websockets_with_the_certificate_sni_asks_for() {
    let certs = Certificates::new();
    let replica = TestReplica::start("r").await.expect("replica");
    let tideway = Tideway::start(&config(&certs, replica.addr(), ""));
    let tls = tls_listener(&tideway).await;

    // HTTP/1.1 (ALPN http/1.1) on the exact name: its certificate, HSTS, X-Forwarded-Proto: https.
    let stream = connect(&certs.pki, tls, "app.example.test", &[b"http/1.1"])
        .await
        .expect("TLS");
    assert_eq!(presented(&stream), certs.exact.der);
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, headers, body) = get_http1(stream, "app.example.test", "/hello?x=1").await;
    assert_eq!(status, 200);
    assert_eq!(headers["strict-transport-security"], "max-age=31536000");
    let echo = echoed(&body);
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");

    // HTTP/2 chosen through ALPN, on a wildcard name: the wildcard certificate, the same data plane.
    let stream = connect(&certs.pki, tls, "shop.wild.test", &[b"h2", b"http/1.1"])
        .await
        .expect("TLS");
    assert_eq!(presented(&stream), certs.wildcard.der);
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    for i in 0..3 {
        let req = http::Request::get(format!("https://shop.wild.test/h2/{i}"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(req).await.expect("an HTTP/2 response");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert!(
            response.headers().get("strict-transport-security").is_none(),
            "no hsts_max_age"
        );
        let echo = echoed(&response.into_body().collect().await.expect("body").to_bytes());
        assert_eq!(echo["path"], format!("/h2/{i}"));
        assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");
    }

    // An unknown name, and no name at all, get the default certificate.
    let stream = connect(&certs.pki, tls, "default.test", &[]).await.expect("TLS");
    assert_eq!(presented(&stream), certs.default.der);
    let unknown = connect(&certs.pki, tls, "elsewhere.test", &[]).await;
    let error = unknown.expect_err("the default certificate does not name elsewhere.test");
    assert!(
        error
            .to_string()
            .contains("only valid for DnsName(\"default.test\")"),
        "{error}"
    );
    let stream = connect_without_sni(&certs.pki, tls).await;
    assert_eq!(presented(&stream), certs.default.der);

    // A WebSocket upgrade over TLS: wss:// echoes.
    let stream = connect(&certs.pki, tls, "app.example.test", &[b"http/1.1"])
        .await
        .expect("TLS");
    let upgrade = "wss://app.example.test/ws"
        .into_client_request()
        .expect("request");
    let (mut ws, response) = tokio_tungstenite::client_async(upgrade, stream)
        .await
        .expect("wss upgrade");
    assert_eq!(response.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.expect("send");
        let echo = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("an echo in time");
        assert_eq!(
            echo.expect("a frame").expect("a message"),
            Message::text(format!("hello {i}"))
        );
    }
    ws.close(None).await.expect("close");
}

/// A TLS connection that sends no server name at all (an IP address as the name).
async fn connect_without_sni(pki: &Pki, addr: SocketAddr) -> TlsStream<TcpStream> {
    let mut config = pki.client_config();
    config.enable_sni = false;
    // Without SNI the name is only checked against the certificate: check it against the default's.
    let name = ServerName::try_from("default.test").expect("a server name");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS without SNI")
}

#[tokio::test]
async fn plain_http_redirects_where_the_app_asks_and_never_carries_hsts() {
    let certs = Certificates::new();
    let replica = TestReplica::start("r").await.expect("replica");
    let tideway = Tideway::start(&config(&certs, replica.addr(), "https_port = 8443"));
    let plain = tideway.addr;

    let (status, headers, _) =
        request(plain, "GET", "/p/q?x=1&y", &[("host", "shop.wild.test:8080")], "").await;
    assert_eq!(status, 308);
    assert_eq!(headers["location"], "https://shop.wild.test:8443/p/q?x=1&y");
    assert_eq!(replica.requests(), 0, "a redirected request reaches no replica");

    // An app without redirect_https is served over plain HTTP, with no HSTS even though it sets one.
    let (status, headers, body) = request(plain, "GET", "/", &[("host", "app.example.test")], "").await;
    assert_eq!(status, 200);
    assert!(headers.get("strict-transport-security").is_none());
    assert_eq!(echoed(&body)["headers"]["x-forwarded-proto"][0], "http");

    // HTTP/2 with prior knowledge (h2c) is plain too: redirected the same way.
    let tcp = TcpStream::connect(plain).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2c handshake");
    tokio::spawn(conn);
    let req = http::Request::get("http://x.wild.test/h2c")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("a response");
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "https://x.wild.test:8443/h2c");
}

#[tokio::test]
async fn rotated_files_take_over_new_handshakes_and_a_broken_rotation_is_refused() {
    let certs = Certificates::new();
    let replica = TestReplica::start("r").await.expect("replica");
    let tideway = Tideway::start(&config(&certs, replica.addr(), ""));
    let tls = tls_listener(&tideway).await;

    // Load: a WebSocket and a kept-alive HTTP/1.1 connection over TLS, used all along.
    let stream = connect(&certs.pki, tls, "app.example.test", &[b"http/1.1"])
        .await
        .expect("TLS");
    let upgrade = "wss://app.example.test/ws"
        .into_client_request()
        .expect("request");
    let (mut ws, _) = tokio_tungstenite::client_async(upgrade, stream)
        .await
        .expect("wss upgrade");
    let stream = connect(&certs.pki, tls, "app.example.test", &[b"http/1.1"])
        .await
        .expect("TLS");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let stop = Arc::new(tokio::sync::Notify::new());
    let load = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut served = 0u32;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while tokio::time::Instant::now() < deadline {
                let req = http::Request::get("/load")
                    .header("host", "app.example.test")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let done = tokio::select! {
                    () = stop.notified() => break,
                    done = sender.send_request(req) => done,
                };
                let response = done.expect("every request on the kept-alive connection is answered");
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.expect("body");
                served += 1;
            }
            served
        })
    };

    // Rotate the exact name's certificate: a new key, written over the files in place.
    let renewed = certs.pki.issue("renewed", &["app.example.test"]);
    overwrite(&certs.exact, &renewed, true);
    tideway.wait_for("certificate reloaded", 1, |_| true).await;
    let presents = |expected: &CertificateDer<'static>| {
        let (pki, expected) = (certs.pki.clone(), expected.clone());
        async move {
            let stream = connect(&pki, tls, "app.example.test", &[]).await.expect("TLS");
            presented(&stream) == expected
        }
    };
    assert!(
        presents(&renewed.der).await,
        "new handshakes get the new certificate"
    );

    // A broken rotation: a certificate whose key is another one's. Refused; the renewed one stays.
    let stranger = certs.pki.issue("stranger", &["app.example.test"]);
    overwrite(&certs.exact, &stranger, false);
    let (problem, key) = refusal(&tideway, 1).await;
    assert!(problem.contains("does not match"), "{problem}");
    assert_eq!(key, "app[0].tls_certificate");
    assert!(
        presents(&renewed.der).await,
        "the refused certificate is not used"
    );

    // An expired one is refused too.
    let expired = certs.pki.issue_expired("expired", &["app.example.test"]);
    overwrite(&certs.exact, &expired, true);
    let (problem, _) = refusal(&tideway, 2).await;
    assert!(problem.contains("expired"), "{problem}");

    // Through all of it, the WebSocket and the kept-alive connection kept working.
    ws.send(Message::text("still here")).await.expect("send");
    let echo = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("an echo in time");
    assert_eq!(
        echo.expect("a frame").expect("a message"),
        Message::text("still here")
    );
    stop.notify_one();
    let served = load.await.expect("the load ran without a failure");
    assert!(served > 0, "the load was served");
    assert!(presents(&renewed.der).await);

    // The metric shows the certificates in force and when they expire.
    let (_, _, metrics) = request(tideway.listener("metrics"), "GET", "/metrics", &[], "").await;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let line = format!(
        "tideway_tls_certificate_expiry_seconds{{certificate=\"{}\"}} {}",
        certs.exact.chain.display(),
        renewed.not_after
    );
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");
}

/// Writes `with`'s chain (and key, if `key`) over `target`'s files, in place.
fn overwrite(target: &Issued, with: &Issued, key: bool) {
    if key {
        std::fs::write(&target.key, std::fs::read(&with.key).expect("read")).expect("write the key");
    }
    std::fs::write(&target.chain, std::fs::read(&with.chain).expect("read")).expect("write the chain");
}

/// The problem and key of the `n`th refused certificate, once it is logged.
async fn refusal(tideway: &Tideway, n: usize) -> (String, String) {
    let refused = tideway
        .wait_for(
            "new certificate refused, the previous one stays in force",
            n,
            |_| true,
        )
        .await;
    let field = |name: &str| {
        refused[n - 1]["fields"][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (field("problem"), field("key"))
}

#[tokio::test]
async fn stalled_handshakes_time_out_and_are_bounded() {
    let certs = Certificates::new();
    let replica = TestReplica::start("r").await.expect("replica");
    let extra = "tls_handshake_timeout = \"3s\"\nmax_tls_handshakes = 2";
    let tideway = Tideway::start(&config(&certs, replica.addr(), extra));
    let tls = tls_listener(&tideway).await;

    // A connection established before the flood keeps being served.
    let stream = connect(&certs.pki, tls, "app.example.test", &[b"http/1.1"])
        .await
        .expect("TLS");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);

    // Two clients open TCP and say nothing: both handshake slots are taken.
    let mut first = TcpStream::connect(tls).await.expect("connect");
    let second = TcpStream::connect(tls).await.expect("connect");
    // A third client's handshake waits in the listen backlog for a slot.
    let held = tokio::time::timeout(
        Duration::from_secs(1),
        connect(&certs.pki, tls, "app.example.test", &[]),
    )
    .await;
    assert!(
        held.is_err(),
        "a third handshake completed while both slots were taken"
    );
    let req = http::Request::get("/")
        .header("host", "app.example.test")
        .body(Empty::<Bytes>::new());
    let response = sender
        .send_request(req.expect("request"))
        .await
        .expect("served meanwhile");
    assert_eq!(response.status(), 200);

    // The first stalled client gives up: its slot frees, and a new handshake completes.
    drop(second);
    let stream = connect(&certs.pki, tls, "app.example.test", &[])
        .await
        .expect("TLS once a slot frees");
    assert_eq!(presented(&stream), certs.exact.der);

    // The other is dropped at the handshake timeout: the server closes it.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(PATIENCE, first.read(&mut byte))
        .await
        .expect("closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "a stalled handshake is closed, got {read:?}"
    );
    let metrics = tideway.listener("metrics");
    tideway_e2e::until("the timed-out handshake counted", || async {
        let (_, _, body) = request(metrics, "GET", "/metrics", &[], "").await;
        String::from_utf8_lossy(&body).contains("tideway_tls_handshakes_total{outcome=\"timeout\"} 1")
    })
    .await;
}

#[tokio::test]
async fn check_validates_the_certificate_files() {
    let certs = Certificates::new();
    let replica = TestReplica::start("r").await.expect("replica");
    let good = config(&certs, replica.addr(), "");
    let check = |text: &str| {
        let path = tideway_e2e::config_file(text);
        let out = std::process::Command::new(tideway_e2e::binary())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run tideway check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(check(&good).0, Some(0), "{}", check(&good).1);

    let stranger = certs.pki.issue("stranger", &["app.example.test"]);
    let mismatched = good.replacen(
        &certs.exact.key.display().to_string(),
        &stranger.key.display().to_string(),
        1,
    );
    let (code, stderr) = check(&mismatched);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("app[0].tls_certificate: the private key does not match the certificate"),
        "{stderr}"
    );

    let expired = certs.pki.issue_expired("expired", &["default.test"]);
    let with_expired = good.replacen(
        &certs.default.chain.display().to_string(),
        &expired.chain.display().to_string(),
        1,
    );
    let with_expired = with_expired.replacen(
        &certs.default.key.display().to_string(),
        &expired.key.display().to_string(),
        1,
    );
    let (code, stderr) = check(&with_expired);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("proxy.tls_certificate: the certificate expired"),
        "{stderr}"
    );

    let missing = good.replacen(
        &certs.wildcard.chain.display().to_string(),
        "/nonexistent/chain.pem",
        1,
    );
    let (code, stderr) = check(&missing);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("app[1].tls_certificate: cannot read /nonexistent/chain.pem"),
        "{stderr}"
    );

    let not_pem = good.replacen(
        &certs.wildcard.chain.display().to_string(),
        &certs.wildcard.key.display().to_string(),
        1,
    );
    let (code, stderr) = check(&not_pem);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("app[1].tls_certificate: no certificate in the chain"),
        "{stderr}"
    );
}

/// `openssl s_client` against the listener with one protocol version or cipher forced: whether a
/// handshake completed.
async fn openssl_handshake(addr: SocketAddr, args: &[&str]) -> bool {
    let mut child = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "default.test",
        ])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"Q\n").await.expect("write");
    drop(stdin);
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("openssl ends in time")
        .expect("openssl output");
    let text = String::from_utf8_lossy(&out.stdout);
    // A completed handshake prints "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"; a refused one
    // "New, (NONE), Cipher is (NONE)".
    text.lines()
        .any(|line| line.starts_with("New, TLS") && !line.contains("(NONE)"))
}

#[tokio::test]
async fn old_protocols_and_weak_ciphers_are_refused() {
    let certs = Certificates::new();
    let replica = TestReplica::start("r").await.expect("replica");
    let tideway = Tideway::start(&config(&certs, replica.addr(), ""));
    let tls = tls_listener(&tideway).await;
    // What a modern client negotiates.
    assert!(openssl_handshake(tls, &["-tls1_3"]).await, "TLS 1.3");
    assert!(
        openssl_handshake(tls, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]).await,
        "TLS 1.2 AEAD"
    );
    // Old protocol versions (the client's security level lowered so that it offers them at all).
    for version in ["-tls1", "-tls1_1"] {
        assert!(
            !openssl_handshake(tls, &[version, "-cipher", "DEFAULT:@SECLEVEL=0"]).await,
            "{version} refused"
        );
    }
    // Weak TLS 1.2 suites: CBC, static RSA key exchange, RC4, 3DES, no forward secrecy.
    for cipher in [
        "ECDHE-ECDSA-AES128-SHA",
        "AES128-GCM-SHA256",
        "AES256-SHA",
        "DES-CBC3-SHA",
        "RC4-SHA",
    ] {
        let cipher = format!("{cipher}:@SECLEVEL=0");
        assert!(
            !openssl_handshake(tls, &["-tls1_2", "-cipher", &cipher]).await,
            "{cipher} refused"
        );
    }
}

/// Debian's `testssl.sh` over the listener, with the test CA trusted: every finding it rates above `OK`
/// or `INFO` is one the README explains (belonging to the certificate's issuer or to the app).
#[tokio::test]
async fn testssl_finds_nothing_but_what_the_readme_explains() {
    let certs = Certificates::new();
    let replica = TestReplica::start("r").await.expect("replica");
    let text = config(&certs, replica.addr(), "").replace(
        "name = \"rest\"\npath_prefix = \"/\"",
        "name = \"rest\"\npath_prefix = \"/\"\nhsts_max_age = \"365d\"",
    );
    let tideway = Tideway::start(&text);
    let tls = tls_listener(&tideway).await;
    let report = certs.pki.ca_file().with_file_name("testssl.json");
    let out = tokio::process::Command::new("testssl")
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--nodns",
            "none",
            "--ip",
            "127.0.0.1",
        ])
        .args(["-p", "-s", "-f", "-P", "-U", "-S", "-h", "--add-ca"])
        .arg(certs.pki.ca_file())
        .arg("--jsonfile")
        .arg(&report)
        .arg(format!("default.test:{}", tls.port()))
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .expect("testssl ends in time")
        .expect("testssl.sh is installed");
    let findings: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&report).unwrap_or_else(|e| {
            panic!(
                "no testssl report ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        }))
        .expect("testssl's JSON");
    assert!(findings.len() > 50, "testssl ran its checks: {findings:?}");
    // What the README's "Security scanners" lists, and the scanner's own environment.
    let explained = [
        "cert_revocation",
        "security_headers",
        "engine_problem",
        "DNS_CAArecord",
        "OCSP_stapling",
    ];
    let unexplained: Vec<String> = findings
        .iter()
        .filter(|f| !["OK", "INFO"].contains(&f["severity"].as_str().unwrap_or_default()))
        .filter(|f| !explained.contains(&f["id"].as_str().unwrap_or_default()))
        .map(|f| format!("{} {}: {}", f["id"], f["severity"], f["finding"]))
        .collect();
    assert!(unexplained.is_empty(), "testssl findings: {unexplained:#?}");
    for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        let finding = findings
            .iter()
            .find(|f| f["id"] == id)
            .expect("the protocol was tested");
        assert_eq!(finding["finding"], "not offered", "{id}");
    }
}

/// A metric's value in tideway's exposition, if it is there.
async fn metric(tideway: &Tideway, series: &str) -> Option<f64> {
    let (_, _, body) = request(tideway.listener("metrics"), "GET", "/metrics", &[], "").await;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_tls_client_that_closes_gives_its_seat_and_its_place_in_the_queue_back() {
    let certs = Certificates::new();
    let replica = TestReplica::start("r").await.expect("replica");
    let text = config(&certs, replica.addr(), "")
        .replace("name = \"exact\"\n", "name = \"exact\"\nmax_connections = 1\n");
    let tideway = Tideway::start(&text);
    let tls = tls_listener(&tideway).await;
    let seated = "tideway_app_connections{app=\"exact\"}";
    let queued = "tideway_app_queued_connections{app=\"exact\"}";
    let send = |path: &'static str| {
        let pki = certs.pki.clone();
        async move {
            let mut stream = connect(&pki, tls, "app.example.test", &[b"http/1.1"])
                .await
                .expect("TLS");
            let head = format!("GET {path} HTTP/1.1\r\nHost: app.example.test\r\n\r\n");
            stream.write_all(head.as_bytes()).await.expect("write");
            stream.flush().await.expect("flush");
            stream
        }
    };
    // The first request holds the only seat while its replica takes its time; the second waits.
    let mut first = send("/delay?ms=60000").await;
    tideway_e2e::until("the first request seated", || async {
        metric(&tideway, seated).await == Some(1.0)
    })
    .await;
    let mut second = send("/").await;
    tideway_e2e::until("the second request queued", || async {
        metric(&tideway, queued).await == Some(1.0)
    })
    .await;
    // The queued client closes (a closing alert, then its end of the connection): its place goes.
    second.shutdown().await.expect("close");
    drop(second);
    tideway_e2e::until("the closed client left the queue", || async {
        metric(&tideway, queued).await == Some(0.0)
    })
    .await;
    // The seated one closes while its replica still thinks: its seat goes.
    first.shutdown().await.expect("close");
    drop(first);
    tideway_e2e::until("the closed client's seat is free", || async {
        metric(&tideway, seated).await == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn the_admin_api_lists_the_certificates_in_force() {
    let certs = Certificates::new();
    let replica = TestReplica::start("r").await.expect("replica");
    let text = config(&certs, replica.addr(), "")
        .replace("[metrics]\n", "[admin]\nlisten = \"127.0.0.1:0\"\n[metrics]\n");
    let tideway = Tideway::start(&text);
    let admin = tideway.listener("admin");
    let (status, _, body) = request(admin, "GET", "/api/certificates", &[], "").await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let entry = |issued: &Issued| {
        listed
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|c| c["certificate"] == issued.chain.display().to_string())
            })
            .cloned()
            .unwrap_or_else(|| panic!("{} is not listed: {listed}", issued.chain.display()))
    };
    assert_eq!(entry(&certs.default)["hosts"], serde_json::json!([]));
    assert_eq!(
        entry(&certs.exact)["hosts"],
        serde_json::json!(["app.example.test"])
    );
    assert_eq!(
        entry(&certs.wildcard)["hosts"],
        serde_json::json!(["*.wild.test"])
    );
    assert_eq!(entry(&certs.exact)["not_after"], certs.exact.not_after);
    let left = entry(&certs.exact)["expires_in_seconds"]
        .as_i64()
        .expect("seconds");
    assert!((360 * 86_400..=365 * 86_400).contains(&left), "{left}");
    let (_, _, apps) = request(admin, "GET", "/api/apps", &[], "").await;
    let apps: serde_json::Value = serde_json::from_slice(&apps).expect("JSON");
    assert_eq!(
        apps["certificates"], listed,
        "the status page's data lists them too"
    );
}

/// Handshakes are counted by outcome, and the dashboard's HTTPS panels find their metrics.
#[tokio::test]
async fn handshake_outcomes_are_counted() {
    let certs = Certificates::new();
    let replica = TestReplica::start("r").await.expect("replica");
    let tideway = Tideway::start(&config(&certs, replica.addr(), ""));
    let tls = tls_listener(&tideway).await;
    let stream = connect(&certs.pki, tls, "app.example.test", &[])
        .await
        .expect("TLS");
    drop(stream);
    // A client that does not trust the certificate aborts the handshake: a failure on the server too.
    let stranger = Pki::create();
    assert!(connect(&stranger, tls, "app.example.test", &[]).await.is_err());
    // Plain HTTP sent to the TLS port is no handshake.
    let mut tcp = TcpStream::connect(tls).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    let metrics = tideway.listener("metrics");
    // The dashboard's HTTPS panels have their metrics.
    let (_, _, body) = request(metrics, "GET", "/metrics", &[], "").await;
    let exposition = String::from_utf8_lossy(&body).into_owned();
    let exported = tideway_e2e::families(&exposition);
    let wanted: Vec<String> = tideway_e2e::dashboard_metrics()
        .into_iter()
        .filter(|name| name.starts_with("tideway_tls_"))
        .collect();
    assert_eq!(
        wanted.len(),
        2,
        "the dashboard shows handshakes and expiry: {wanted:?}"
    );
    for name in wanted {
        assert!(tideway_e2e::exports(&exported, &name), "{name} is not exported");
    }
    tideway_e2e::until("two failed handshakes counted", || async {
        let (_, _, body) = request(metrics, "GET", "/metrics", &[], "").await;
        let text = String::from_utf8_lossy(&body).into_owned();
        text.contains("tideway_tls_handshakes_total{outcome=\"failed\"} 2")
            && text.contains("tideway_tls_handshakes_total{outcome=\"complete\"} 1")
    })
    .await;
}
