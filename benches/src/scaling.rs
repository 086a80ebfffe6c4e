//! tideway-only figures: how fast a threshold-crossing connection becomes a replica start, and what a cold
//! start costs on top of the replica's own start-up.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Binaries;
use crate::process::Started;

const LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18_931);

/// Samples of both latencies, in microseconds.
pub(crate) struct Figures {
    threshold_to_start: Vec<f64>,
    cold_start_overhead: Vec<f64>,
}

/// Takes `samples` of each figure, each with a fresh tideway.
pub(crate) async fn measure(binaries: &Binaries, samples: usize, dir: &Path) -> anyhow::Result<Figures> {
    let mut figures = Figures {
        threshold_to_start: Vec::new(),
        cold_start_overhead: Vec::new(),
    };
    for _ in 0..samples {
        let log = dir.join("scaling.log");
        let tideway = start(
            binaries,
            "min_instances = 1\nmax_instances = 4\nmax_connections = 4\nspawn_threshold = 75",
            dir,
            &log,
        )?;
        event_time(&log, "proxy listening").await?;
        event_time(&log, "replica ready").await?;
        let mut sessions = Vec::new();
        for _ in 0..3 {
            sessions.push(websocket().await?);
        }
        let crossing = SystemTime::now();
        sessions.push(websocket().await?);
        let decided = event_time(
            &log,
            "scaling decision\",\"app\":\"bench\",\"direction\":\"up\",\"reason\":\"threshold",
        )
        .await?;
        figures.threshold_to_start.push(micros_between(crossing, decided));
        drop((sessions, tideway));

        let tideway = start(binaries, "min_instances = 0\nmax_instances = 2", dir, &log)?;
        event_time(&log, "proxy listening").await?;
        let mut stream = TcpStream::connect(LISTEN).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
            .await?;
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await?;
        let first_byte = SystemTime::now();
        let ready = event_time(&log, "replica ready").await?;
        figures
            .cold_start_overhead
            .push(micros_between(ready, first_byte));
        drop(tideway);
    }
    Ok(figures)
}

impl Figures {
    pub(crate) fn render(&self) -> String {
        format!(
            "\n### Scaling (tideway only, {} samples each)\n\n| figure | median | max |\n|---|---|---|\n\
             | threshold-crossing connection → replica start call | {:.2} ms | {:.2} ms |\n\
             | cold-start overhead (first byte − replica ready) | {:.2} ms | {:.2} ms |\n",
            self.threshold_to_start.len(),
            median(&self.threshold_to_start) / 1e3,
            max(&self.threshold_to_start) / 1e3,
            median(&self.cold_start_overhead) / 1e3,
            max(&self.cold_start_overhead) / 1e3,
        )
    }
}

fn start(binaries: &Binaries, policy: &str, dir: &Path, log: &Path) -> anyhow::Result<Started> {
    let config = dir.join("scaling.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"{LISTEN}\"\nworkers = 1\naccess_log = false\n\n[[app]]\nname = \"bench\"\n\
             path_prefix = \"/\"\n{policy}\n[app.local]\ncommand = [\"{}\"]\nreadiness = {{ path = \"/\" }}\n",
            binaries.fake_app.display()
        ),
    )?;
    let args = ["serve", "--log-format", "json", "--config"].map(String::from);
    let mut args = args.to_vec();
    args.push(config.display().to_string());
    Started::spawn("tideway", None, &binaries.tideway, &args, log)
}

/// Opens a WebSocket through tideway and waits for its `101`.
async fn websocket() -> anyhow::Result<TcpStream> {
    websocket_to(LISTEN).await
}

/// Opens a WebSocket through the tideway at `addr` and waits for its `101`.
pub(crate) async fn websocket_to(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: bench.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    anyhow::ensure!(head.starts_with(b"HTTP/1.1 101"), "no upgrade");
    Ok(stream)
}

/// The wall-clock time of the first log event containing `needle`, waiting up to 10 s for it.
async fn event_time(log: &Path, needle: &str) -> anyhow::Result<SystemTime> {
    for _ in 0..1_000 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            let event: serde_json::Value = serde_json::from_str(line).context("a JSON log line")?;
            let stamp = event["timestamp"].as_str().context("a timestamp")?;
            return humantime::parse_rfc3339(stamp).with_context(|| format!("timestamp {stamp}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("no {needle:?} event in {}", log.display())
}

fn micros_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64() * 1e6,
        Err(e) => -e.duration().as_secs_f64() * 1e6,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}
