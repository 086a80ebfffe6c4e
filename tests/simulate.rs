//! `[proxy] trace_log` and `tideway simulate` through the real binary: a trace written by real traffic
//! (HTTP requests, a WebSocket, a refused request) reads back into the simulator, and the simulator's
//! figures for a small hand-made trace are the ones worked by hand (`crates/tideway-simulate`'s tests
//! walk the same trace).

use std::path::{Path, PathBuf};
use std::process::Output;

use futures::SinkExt;
use tideway_e2e::{Tideway, binary, fake_app, request};
use tideway_testkit::ws_connect;
use tokio_tungstenite::tungstenite::Message;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tideway-simulate-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn simulate(args: &[&str]) -> Output {
    std::process::Command::new(binary())
        .args(["--config", "/nonexistent/tideway.toml", "simulate"])
        .args(args)
        .output()
        .expect("run tideway simulate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The row of `label` in a simulate table, split into its cells.
fn row(table: &str, label: &str) -> Vec<String> {
    let line = table
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no row {label} in\n{table}"));
    line[label.len()..]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn real_traffic_writes_a_trace_that_simulate_replays() {
    let dir = scratch("trace");
    let trace = dir.join("trace.jsonl");
    let mut tideway = Tideway::start(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\ntrace_log = \"{}\"\n\n\
         [[app]]\nname = \"traced\"\nhosts = [\"traced.test\"]\nmin_instances = 1\nmax_instances = 1\n\
         max_connections = 1\nqueue_timeout = \"200ms\"\n[app.local]\ncommand = [\"{}\"]\nreadiness = {{ path = \"/\" }}\n",
        trace.display(),
        fake_app().display()
    ));
    tideway.wait_for("replica ready", 1, |_| true).await;
    for _ in 0..3 {
        let (status, _, _) = request(
            tideway.addr,
            "GET",
            "/hello?who=someone",
            &[("host", "traced.test")],
            "",
        )
        .await;
        assert_eq!(status, 200);
    }
    // The WebSocket holds the only seat: a request meanwhile waits queue_timeout and is refused.
    let mut ws = ws_connect(tideway.addr, "traced.test", "/ws")
        .await
        .expect("upgrade");
    ws.send(Message::text("hi")).await.expect("a frame");
    let (status, _, _) = request(tideway.addr, "GET", "/late", &[("host", "traced.test")], "").await;
    assert_eq!(status, 503);
    ws.close(None).await.expect("close");
    drop(ws);
    tideway.signal("TERM");
    assert!(tideway.exited().await.success());

    let written = std::fs::read_to_string(&trace).expect("the trace");
    let lines: Vec<serde_json::Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(lines[0]["trace"], "tideway");
    assert_eq!(lines[0]["version"], 1);
    let of_kind = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).count();
    let cold: Vec<_> = lines
        .iter()
        .filter(|l| l.get("cold_start_ms").is_some())
        .collect();
    assert_eq!(cold.len(), 1, "the replica's cold start: {written}");
    assert_eq!((of_kind("request"), of_kind("upgraded")), (4, 1), "{written}");
    let refused: Vec<_> = lines.iter().filter(|l| l.get("refused").is_some()).collect();
    assert_eq!(refused.len(), 1, "{written}");
    assert_eq!(refused[0]["refused"], "queue_timeout");
    for line in &lines[1..] {
        let keys: Vec<&str> = line
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        for key in &keys {
            assert!(
                [
                    "app",
                    "at_ms",
                    "kind",
                    "seat_ms",
                    "duration_ms",
                    "refused",
                    "cold_start_ms"
                ]
                .contains(key),
                "only the documented fields, nothing personal: {line}"
            );
        }
        assert_eq!(line["app"], "traced");
    }
    assert!(
        !written.contains("someone") && !written.contains("127.0.0.1"),
        "no paths, no addresses"
    );

    let out = simulate(&[trace.to_str().expect("a path"), "--set", "max_connections=1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.starts_with("app traced: 5 connections")
            && report.contains("replica start-up drawn from 1 observed cold starts"),
        "{report}"
    );
    assert_eq!(
        row(&report, "base")[0].parse::<f64>().map(|s| s > 0.0),
        Ok(true),
        "{report}"
    );
}

/// The trace of `crates/tideway-simulate`'s hand-worked test, as a file.
fn hand_made(dir: &Path) -> PathBuf {
    let path = dir.join("hand.jsonl");
    std::fs::write(
        &path,
        "{\"trace\":\"tideway\",\"version\":1}\n\
         {\"app\":\"a\",\"at_ms\":2000,\"kind\":\"request\",\"seat_ms\":0,\"duration_ms\":500}\n\
         {\"app\":\"a\",\"at_ms\":1000,\"kind\":\"upgraded\",\"seat_ms\":0,\"duration_ms\":20000}\n\
         {\"app\":\"a\",\"at_ms\":0,\"kind\":\"upgraded\",\"seat_ms\":0,\"duration_ms\":30000}\n",
    )
    .expect("write the trace");
    path
}

const SMALL_POLICY: [&str; 14] = [
    "--set",
    "max_connections=2",
    "--set",
    "spawn_threshold=50",
    "--set",
    "min_instances=1",
    "--set",
    "max_instances=3",
    "--set",
    "scale_down_delay=10s",
    "--set",
    "drain_timeout=60s",
    "--startup",
    "2s",
];

#[test]
fn simulate_prints_the_figures_worked_by_hand_and_draws_them() {
    let dir = scratch("hand");
    let trace = hand_made(&dir);
    let plot = dir.join("plot.svg");
    let mut args = vec![trace.to_str().expect("a path")];
    args.extend(SMALL_POLICY);
    args.extend([
        "--compare",
        "max_instances=2",
        "--plot",
        plot.to_str().expect("a path"),
    ]);
    let out = simulate(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.starts_with("app a: 3 connections over 30s; replica start-up 2s (fixed)"),
        "{report}"
    );
    // replica-s, x ideal, peak, decisions, reversals, queued, wait p50, p95, max, rejected, cut.
    assert_eq!(
        row(&report, "ideal rule"),
        [
            "50.5", "1.00", "3", "4", "1", "0", "0.00s", "0.00s", "0.00s", "0", "0"
        ],
        "{report}"
    );
    assert_eq!(
        row(&report, "base"),
        [
            "70.5", "1.40", "3", "3", "1", "1", "1.00s", "1.00s", "1.00s", "0", "0"
        ],
        "{report}"
    );
    assert!(row(&report, "max_instances=2").len() >= 11, "{report}");
    let svg = std::fs::read_to_string(&plot).expect("the plot");
    assert!(
        svg.starts_with("<svg") && svg.matches("<polyline").count() == 9,
        "three panels of three lines"
    );
}

#[test]
fn simulate_names_what_is_wrong_with_its_input() {
    let dir = scratch("bad");
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"trace\":\"tideway\",\"version\":1}\n{\"app\":\"a\",\"at_ms\":\"soon\"}\n",
    )
    .expect("write");
    let out = simulate(&[bad.to_str().expect("a path")]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an invalid trace is a configuration error"
    );
    assert!(
        text(&out.stderr).contains("line 2: \"at_ms\""),
        "{}",
        text(&out.stderr)
    );

    let trace = hand_made(&dir);
    let out = simulate(&[trace.to_str().expect("a path"), "--set", "max_instance=3"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("max_instance: unknown key"),
        "{}",
        text(&out.stderr)
    );
    let out = simulate(&[trace.to_str().expect("a path"), "--compare", "min_instances=9"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("min_instances"),
        "{}",
        text(&out.stderr)
    );
    let out = simulate(&["--synthetic", "tidal"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("steady, diurnal, flash, longlived"),
        "{}",
        text(&out.stderr)
    );
    let out = simulate(&["--help"]);
    assert!(
        text(&out.stdout).contains("reversals"),
        "--help explains each figure"
    );
}

#[test]
fn every_synthetic_shape_replays() {
    for shape in ["steady", "diurnal", "flash", "longlived"] {
        let out = simulate(&["--synthetic", shape, "--seed", "3", "--set", "max_connections=10"]);
        assert!(out.status.success(), "{shape}: {}", text(&out.stderr));
        let report = text(&out.stdout);
        assert!(row(&report, "base").len() >= 11, "{report}");
    }
}

/// The README's example ("Tuning a scaling policy") is what the command prints.
#[test]
fn the_readme_example_is_what_simulate_prints() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let start = readme
        .find("   $ tideway simulate --synthetic")
        .expect("the example");
    let block = &readme[start..start + readme[start..].find("```").expect("its end")];
    let lines: Vec<&str> = block
        .lines()
        .map(|l| l.strip_prefix("   ").unwrap_or(l))
        .collect();
    let command_lines = lines.iter().take_while(|l| !l.starts_with("app ")).count();
    let command = lines[..command_lines].join(" ").replace('\\', " ");
    let args: Vec<&str> = command.split_whitespace().skip(3).collect();
    let out = simulate(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected: Vec<&str> = lines[command_lines..]
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let printed = text(&out.stdout);
    let printed: Vec<&str> = printed.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(printed, expected);
}
