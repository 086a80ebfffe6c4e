//! The differential framing test (`differential/h11_differential.py`): generated and mutated HTTP/1.1
//! requests and responses — valid, invalid and borderline framing, pipelined — go through the real
//! tideway binary, and Python's `h11`, an independent strict parser, checks at both ends that whatever
//! tideway forwards parses into exactly the messages that were sent.
//!
//! A fixed seed and a bounded count run here; `TIDEWAY_DIFFERENTIAL_CASES=100000` (and
//! `TIDEWAY_DIFFERENTIAL_SEED`) make a longer run.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use tideway_e2e::Tideway;
use tideway_e2e::python::python_with;

/// The cases a default run tries: a few seconds.
const CASES: &str = "400";
const SEED: &str = "20261202";
/// The longest any run may take, however many cases it has.
const LIMIT: Duration = Duration::from_secs(20 * 60);

#[tokio::test]
async fn whatever_tideway_forwards_a_strict_parser_frames_alike() {
    let python = python_with("h11", "0.16.0");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("differential/h11_differential.py");
    let cases = std::env::var("TIDEWAY_DIFFERENTIAL_CASES").unwrap_or_else(|_| CASES.to_owned());
    let seed = std::env::var("TIDEWAY_DIFFERENTIAL_SEED").unwrap_or_else(|_| SEED.to_owned());
    let mut driver = Command::new(python)
        .arg(&script)
        .args(["--cases", &cases, "--seed", &seed])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the differential driver");
    let mut stdout = BufReader::new(driver.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the replica's port");
    let port = line
        .strip_prefix("replica ")
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or_else(|| panic!("expected `replica PORT`, got {line:?}"));

    let tideway = Tideway::start(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\naccess_log = false\n\n\
         [[app]]\nname = \"diff\"\nhosts = [\"diff.test\"]\nmax_connections = 1000\n\
         [app.static]\naddresses = [\"127.0.0.1:{port}\"]\n"
    ));
    let mut stdin = driver.stdin.take().expect("stdin");
    writeln!(stdin, "proxy {}", tideway.addr).expect("tell the driver the proxy");
    drop(stdin);

    let started = Instant::now();
    let status = loop {
        if let Some(status) = driver.try_wait().expect("the driver") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = driver.kill();
            panic!("the differential run took longer than {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut report = String::new();
    stdout.read_to_string(&mut report).expect("the report");
    assert!(status.success(), "seed {seed}, {cases} cases: {report}");
    let summary: serde_json::Value = serde_json::from_str(&report).expect("a JSON summary");
    assert!(
        summary["forwarded"].as_u64().unwrap_or_default() > summary["cases"].as_u64().unwrap_or_default() / 2,
        "most cases reach the replica and back: {report}"
    );
}
