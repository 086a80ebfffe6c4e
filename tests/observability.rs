//! Metrics, end to end: a real Prometheus scrapes the real binary through a scale-up and a scale-down,
//! and PromQL over its HTTP API sees what happened; the exposition passes `promtool check metrics`; the
//! Grafana dashboard only asks for metrics tideway exports.

use std::io::Write;
use std::process::{Command, Stdio};

use futures::{SinkExt, StreamExt};
use tideway_e2e::{Prometheus, Tideway, fake_app, request};
use tideway_testkit::tungstenite::Message;
use tideway_testkit::{http1_get, ws_connect};

fn config() -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[[app]]\nname = \"app\"\n\
         hosts = [\"app.test\"]\nmin_instances = 1\nmax_instances = 3\nmax_connections = 4\nspawn_threshold = 75\n\
         scale_down_delay = \"2s\"\n[app.local]\ncommand = [\"{}\"]\nreadiness = {{ path = \"/\" }}\n",
        fake_app().display()
    )
}

#[tokio::test]
async fn prometheus_sees_a_scale_up_and_a_scale_down() {
    let tideway = Tideway::start(&config());
    tideway.wait_for("replica ready", 1, |_| true).await;
    let prometheus = Prometheus::start(tideway.listener("metrics")).await;
    prometheus
        .wait_for(r#"tideway_replicas{app="app",state="ready"}"#, 1.0)
        .await;

    for _ in 0..3 {
        assert_eq!(
            http1_get(tideway.addr, "app.test", "/")
                .await
                .expect("response")
                .0,
            200
        );
    }
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(
            ws_connect(tideway.addr, "app.test", "/ws")
                .await
                .expect("session"),
        );
    }
    prometheus
        .wait_for(r#"tideway_replicas{app="app",state="ready"}"#, 2.0)
        .await;
    prometheus
        .wait_for(r#"tideway_app_connections{app="app"}"#, 4.0)
        .await;
    prometheus
        .wait_for(r#"tideway_desired_replicas{app="app"}"#, 2.0)
        .await;
    prometheus
        .wait_for(
            r#"tideway_scale_decisions_total{app="app",direction="up",reason="threshold"}"#,
            1.0,
        )
        .await;
    prometheus
        .wait_for(r#"tideway_requests_total{app="app",status="2xx"}"#, 3.0)
        .await;
    prometheus
        .wait_for(r#"tideway_requests_total{app="app",status="1xx"}"#, 4.0)
        .await;
    prometheus
        .wait_for(r#"tideway_cold_start_seconds_count{app="app"}"#, 2.0)
        .await;
    prometheus
        .wait_for(r#"sum(tideway_replica_connections{app="app"}) == bool 4"#, 1.0)
        .await;

    for mut ws in sessions {
        ws.send(Message::Close(None)).await.expect("close");
        while let Some(Ok(_)) = ws.next().await {}
    }
    prometheus
        .wait_for(r#"tideway_replicas{app="app",state="ready"}"#, 1.0)
        .await;
    prometheus
        .wait_for(
            r#"tideway_scale_decisions_total{app="app",direction="down",reason="idle"}"#,
            1.0,
        )
        .await;
    prometheus
        .wait_for(
            r#"tideway_connections_closed_total{app="app",reason="client"}"#,
            4.0,
        )
        .await;
    prometheus
        .wait_for(r#"tideway_tunnel_duration_seconds_count{app="app"}"#, 4.0)
        .await;
    prometheus
        .wait_for(r#"tideway_app_connections{app="app"}"#, 0.0)
        .await;
    assert_eq!(
        prometheus
            .value(r#"count(tideway_replica_connections{app="app"})"#)
            .await,
        Some(1.0),
        "the drained replica's series is gone"
    );
}

#[tokio::test]
async fn the_exposition_passes_promtool_and_covers_the_dashboard() {
    let tideway = Tideway::start(&config());
    tideway.wait_for("replica ready", 1, |_| true).await;
    assert_eq!(
        http1_get(tideway.addr, "app.test", "/")
            .await
            .expect("response")
            .0,
        200
    );
    assert_eq!(
        http1_get(tideway.addr, "other.test", "/")
            .await
            .expect("response")
            .0,
        404
    );
    let (status, headers, body) = request(tideway.listener("metrics"), "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    let exposition = String::from_utf8(body.to_vec()).expect("utf-8");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool: install Debian's prometheus package (scripts/test does)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let exported = tideway_e2e::families(&exposition);
    for required in [
        "tideway_replica_connections",
        "tideway_app_capacity_connections",
        "tideway_app_occupancy_ratio",
        "tideway_replicas",
        "tideway_desired_replicas",
        "tideway_scale_decisions_total",
        "tideway_requests_total",
        "tideway_request_duration_seconds",
        "tideway_queue_wait_seconds",
        "tideway_connections_rejected_total",
        "tideway_connections_closed_total",
        "tideway_cold_start_seconds",
    ] {
        assert!(exported.contains(required), "{required} is not exported");
    }
    // The Kubernetes and peer panels are checked in Kubernetes mode, with peers (tests/kubernetes.rs), the
    // HTTPS ones with certificates (tests/tls.rs).
    for name in tideway_e2e::dashboard_metrics() {
        if !name.starts_with("tideway_peer")
            && !name.starts_with("tideway_kubernetes_")
            && !name.starts_with("tideway_tls_")
            && name != "tideway_leader"
        {
            assert!(
                tideway_e2e::exports(&exported, &name),
                "the dashboard queries {name}, which tideway does not export"
            );
        }
    }
}

/// A port that was free a moment ago, for a process whose log this test does not read.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn a_log_nobody_reads_never_stalls_the_proxy() {
    let backend = tideway_testkit::TestReplica::start("a").await.expect("backend");
    let (proxy, metrics) = (free_port(), free_port());
    // A replica that prints far more lines than the log can buffer, then serves.
    let flood = "import os, sys, http.server\n\
                 sys.stdout.write('flood\\n' * 100000)\n\
                 sys.stdout.flush()\n\
                 http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), http.server.BaseHTTPRequestHandler).serve_forever()\n";
    let config = tideway_e2e::config_file(&format!(
        "[proxy]\nlisten = \"127.0.0.1:{proxy}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n[[app]]\n\
         name = \"app\"\npath_prefix = \"/\"\n[app.static]\naddresses = [\"{}\"]\n\n[[app]]\nname = \"flood\"\n\
         hosts = [\"flood.test\"]\nmin_instances = 1\n[app.local]\ncommand = [\"python3\", \"-c\", {flood:?}]\n",
        backend.addr()
    ));
    // Standard error is a pipe that is never read: it fills after a few hundred lines.
    let mut child = Command::new(tideway_e2e::binary())
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tideway");
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], proxy));
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], metrics));
    let deadline = tokio::time::Instant::now() + tideway_e2e::PATIENCE;
    while tokio::net::TcpStream::connect(proxy).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "tideway did not listen");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let dropped = || async {
        let (status, _, body) = request(metrics, "GET", "/metrics", &[], "").await;
        assert_eq!(status, 200);
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|line| line.strip_prefix("tideway_log_lines_dropped_total "))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .expect("the dropped-lines counter")
    };
    let mut served = 0;
    while dropped().await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no line was dropped");
        for _ in 0..100 {
            let (status, _, _) = request(proxy, "GET", "/", &[], "").await;
            assert_eq!(status, 200, "request {served}");
            served += 1;
        }
    }
    // Everything keeps being served with the log full.
    for _ in 0..500 {
        let (status, _, _) = request(proxy, "GET", "/", &[], "").await;
        assert_eq!(status, 200, "request {served}");
        served += 1;
    }
    let _ = child.kill();
    let _ = child.wait();
}
