//! Runs the real `tideway` binary for end-to-end tests: writes a config, starts the process with JSON logs,
//! learns its listen address from the log, sends it signals, and collects its log lines.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub mod browser;
mod dashboard;
pub mod pki;

pub use dashboard::{dashboard_metrics, exports, families};
pub mod python;

/// Longest the harness waits for tideway to start or stop.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running `tideway serve` process, killed when dropped.
pub struct Tideway {
    child: Child,
    /// Where the proxy listens.
    pub addr: SocketAddr,
    /// The config file it was started with (rewrite it to test reloads).
    pub config: PathBuf,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// The `tideway` binary next to this test's executable.
///
/// The `tideway` package has integration tests of its own, so `cargo test --workspace` always builds the
/// binary before any test runs.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let binary = dir.join("tideway");
    assert!(
        binary.exists(),
        "{} is missing: run the suite with `cargo test --workspace`",
        binary.display()
    );
    binary
}

/// The fake app replica binary (`tideway-fake-app`, from the testkit), built next to tideway.
pub fn fake_app() -> PathBuf {
    let binary = binary().with_file_name("tideway-fake-app");
    assert!(
        binary.exists(),
        "{} is missing: run the suite with `cargo test --workspace`",
        binary.display()
    );
    binary
}

/// Sends `signal` (`TERM`, `INT`, `HUP` or `KILL`) to process `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    use rustix::process::{Pid, Signal, kill_process};
    let signal = match signal {
        "TERM" => Signal::TERM,
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        "KILL" => Signal::KILL,
        other => panic!("no such signal in the harness: {other}"),
    };
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .expect("a process id");
    kill_process(pid, signal).expect("send the signal");
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet: it runs no code either way).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Waits, polling, until `check` holds of state read asynchronously (over HTTP, say), for at most
/// [`PATIENCE`].
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes `text` to a fresh config file for one test.
pub fn config_file(text: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("tideway-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("config-{}.toml", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, text).expect("write the config");
    path
}

impl Tideway {
    /// Starts `tideway serve` with `config` (whose `[proxy] listen` should be `127.0.0.1:0`) and waits
    /// until it listens.
    pub fn start(config: &str) -> Tideway {
        Self::start_with_env(config, &[])
    }

    /// Like [`Tideway::start`], with extra environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Tideway {
        let config = config_file(config);
        let mut child = Command::new(binary())
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,tideway_proxy=debug,tideway_orchestrate=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tideway");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (listening, listen_addr) = mpsc::channel();
        let collected = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    eprintln!("tideway (not JSON): {line}");
                    continue;
                };
                if event["fields"]["message"] == "proxy listening"
                    && let Some(addr) = event["fields"]["listen"].as_str().and_then(|a| a.parse().ok())
                {
                    let _ = listening.send(addr);
                }
                collected
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(event);
            }
        });
        let addr = listen_addr
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("tideway did not start listening; logs: {:?}", logs));
        Tideway {
            child,
            addr,
            config,
            logs,
        }
    }

    /// The address of another listener (`metrics`, `admin`, `cluster`): one bound to any address is reached
    /// on 127.0.0.1.
    pub fn listener(&self, name: &str) -> SocketAddr {
        let event = self
            .events(&format!("{name} listening"))
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no {name} listener was logged"));
        let addr: SocketAddr = event["fields"]["listen"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("a listen address");
        if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `INT`, `HUP` or `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Waits for the process to exit (at most [`PATIENCE`]).
    pub async fn exited(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "tideway did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `count` log events with `message` satisfy `filter`; returns them.
    pub async fn wait_for(
        &self,
        message: &str,
        count: usize,
        filter: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let found: Vec<_> = self
                .events(message)
                .into_iter()
                .filter(|e| filter(&e["fields"]))
                .collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited for {count} {message:?} events, saw {}: {:#?}",
                found.len(),
                self.events(message)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Rewrites the config file in place (tideway notices within a second, or at once on SIGHUP).
    pub fn rewrite_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("rewrite the config");
    }

    /// Log events so far whose message is `message`.
    pub fn events(&self, message: &str) -> Vec<serde_json::Value> {
        self.events_where(|e| e["fields"]["message"] == message)
    }

    /// Log events so far that satisfy `filter`.
    pub fn events_where(&self, filter: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|e| filter(e))
            .cloned()
            .collect()
    }
}

impl Drop for Tideway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response read whole: status, headers, body.
pub type Answer = (http::StatusCode, http::HeaderMap, bytes::Bytes);

/// Sends one HTTP/1.1 request on a fresh connection and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        req = req.header("host", addr.to_string());
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body.as_bytes(),
        )))
        .expect("a valid request");
    let response = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .expect("a response in time")
        .expect("a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the whole body").to_bytes();
    (parts.status, parts.headers, body)
}

/// A real Prometheus server (Debian's `prometheus`) scraping one target every second, queried over its
/// HTTP API. Stopped when dropped.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target`'s `/metrics`; waits until it is ready.
    pub async fn start(target: SocketAddr) -> Prometheus {
        let program = "prometheus";
        let dir = std::env::temp_dir().join(format!(
            "tideway-prometheus-{}-{}",
            std::process::id(),
            target.port()
        ));
        std::fs::create_dir_all(&dir).expect("a data directory");
        let dir = TempDir(dir);
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tideway\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write the Prometheus config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {program}: {e}. Install Debian's prometheus package (scripts/test does).")
            });
        let prometheus = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && request(addr, "GET", "/-/ready", &[], "").await.0 == http::StatusCode::OK
            {
                return prometheus;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of an instant PromQL query that yields one sample, or `None` when it yields none.
    pub async fn value(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let (status, _, body) = request(self.addr, "GET", &path, &[], "").await;
        assert_eq!(status, http::StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON from Prometheus");
        let result = answer["data"]["result"].as_array().expect("a vector result");
        assert!(result.len() <= 1, "{query} yields several series: {result:?}");
        result
            .first()
            .and_then(|sample| sample["value"][1].as_str()?.parse().ok())
    }

    /// Waits until `query` yields exactly `expected`.
    pub async fn wait_for(&self, query: &str, expected: f64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let value = self.value(query).await;
            if value == Some(expected) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{query}: waited for {expected}, last saw {value:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter value.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
