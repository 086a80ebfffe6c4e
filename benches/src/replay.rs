//! `compare replay`: a synthetic trace replayed in real time through tideway's local mode — real
//! connections, real child processes that take `--startup` to start — and the replica-seconds it cost
//! beside what `tideway simulate` predicts for the same trace with the cold start the run measured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::process::Started;
use crate::scaling::websocket_to;
use crate::setup;

const LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18_951);
const ADMIN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18_952);
/// The policy of the measurements: ten seats a replica, scale at 80%, one to five replicas.
const POLICY: [(&str, &str); 5] = [
    ("max_connections", "10"),
    ("spawn_threshold", "80"),
    ("min_instances", "1"),
    ("max_instances", "5"),
    ("scale_down_delay", "\"10s\""),
];
/// How often the replicas are counted.
const TICK: Duration = Duration::from_millis(100);

/// What to replay.
#[derive(clap::Args, Clone)]
pub(crate) struct ReplayArgs {
    /// The synthetic shape (`tideway simulate --synthetic`).
    #[arg(long, default_value = "steady")]
    synthetic: String,
    /// Its seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Its length.
    #[arg(long, default_value = "4m", value_parser = humantime::parse_duration)]
    length: Duration,
    /// How long a replica takes to start (a `sleep` before the fake app).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    startup: Duration,
}

/// One connection of the trace.
struct Connection {
    at: Duration,
    upgraded: bool,
    held: Duration,
}

/// Builds the release binaries, writes the trace, replays it, and prints both figures.
pub(crate) async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let root = setup::workspace_root()?;
    let binaries = setup::build(&root)?;
    let dir = root
        .join("target/bench")
        .join(format!("replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let trace = dir.join("trace.jsonl");
    let mut sets = Vec::new();
    for (key, value) in POLICY {
        sets.push("--set".to_owned());
        sets.push(format!("{key}={}", value.trim_matches('"')));
    }
    let length = humantime::format_duration(args.length).to_string();
    let mut write = vec![
        "simulate",
        "--synthetic",
        &args.synthetic,
        "--length",
        &length,
        "--write-trace",
    ];
    let trace_arg = trace.display().to_string();
    let seed = args.seed.to_string();
    write.extend([trace_arg.as_str(), "--seed", &seed]);
    simulate(&binaries.tideway, &write, &sets)?;
    let connections = read(&trace)?;
    let horizon = connections
        .iter()
        .map(|c| c.at + c.held)
        .max()
        .unwrap_or_default();
    eprintln!(
        "== replaying {} connections over {horizon:?} in real time",
        connections.len()
    );

    let config = dir.join("replay.toml");
    let policy: String = POLICY.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"{LISTEN}\"\naccess_log = false\n[admin]\nlisten = \"{ADMIN}\"\n\n[[app]]\n\
             name = \"replay\"\npath_prefix = \"/\"\n{policy}[app.local]\ncommand = [\"sh\", \"-c\", \"sleep {} && exec {}\"]\n\
             readiness = {{ path = \"/\" }}\n",
            args.startup.as_secs_f64(),
            binaries.fake_app.display()
        ),
    )?;
    let log = dir.join("tideway.log");
    let serve = ["serve", "--log-format", "json", "--config"].map(String::from);
    let mut serve = serve.to_vec();
    serve.push(config.display().to_string());
    let tideway = Started::spawn("tideway", None, &binaries.tideway, &serve, &log)?;
    wait_for_ready_replica().await?;

    let start = Instant::now();
    let mut tasks = Vec::new();
    for connection in connections {
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + connection.at).await;
            let _ = open(&connection).await;
        }));
    }
    let mut replica_seconds = 0.0;
    let mut peak = 0;
    let mut tick = tokio::time::interval(TICK);
    while start.elapsed() < horizon {
        tick.tick().await;
        let replicas = replicas().await.unwrap_or(0);
        peak = peak.max(replicas);
        replica_seconds += replicas as f64 * TICK.as_secs_f64();
    }
    for task in tasks {
        task.abort();
    }
    drop(tideway);
    let cold = cold_starts(&log)?;
    let cold_ms = cold.get(cold.len() / 2).copied().unwrap_or(0);
    let startup = format!("{cold_ms}ms");
    let predicted = simulate(
        &binaries.tideway,
        &["simulate", trace_arg.as_str(), "--startup", &startup],
        &sets,
    )?;
    let simulated: f64 = predicted
        .lines()
        .find_map(|l| l.strip_prefix("base"))
        .and_then(|row| row.split_whitespace().next())
        .and_then(|cell| cell.parse().ok())
        .context("the simulated replica-seconds")?;
    println!(
        "{} seed {}, {length}, replicas starting in {:?} (median cold start measured: {cold_ms} ms over {} starts)\n\
         real run: {replica_seconds:.1} replica-s, peak {peak}\nsimulated: {simulated:.1} replica-s\n\
         simulated / real: {:.3}\n\n{predicted}",
        args.synthetic,
        args.seed,
        args.startup,
        cold.len(),
        simulated / replica_seconds
    );
    Ok(())
}

fn simulate(tideway: &Path, args: &[&str], sets: &[String]) -> anyhow::Result<String> {
    let out = std::process::Command::new(tideway)
        .args(["--config", "/nonexistent/tideway.toml"])
        .args(args)
        .args(sets)
        .output()
        .context("run tideway simulate")?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read(trace: &PathBuf) -> anyhow::Result<Vec<Connection>> {
    let text = std::fs::read_to_string(trace)?;
    let mut connections = Vec::new();
    for line in text.lines().skip(1) {
        let record: serde_json::Value = serde_json::from_str(line)?;
        let ms = |key: &str| record[key].as_u64().map(Duration::from_millis).context("a time");
        connections.push(Connection {
            at: ms("at_ms")?,
            upgraded: record["kind"] == "upgraded",
            held: ms("duration_ms")?,
        });
    }
    Ok(connections)
}

/// One connection as the trace has it: a WebSocket held open, or a request the replica answers after
/// `held`.
async fn open(connection: &Connection) -> anyhow::Result<()> {
    if connection.upgraded {
        let _open = websocket_to(LISTEN).await?;
        tokio::time::sleep(connection.held).await;
    } else {
        let mut stream = TcpStream::connect(LISTEN).await?;
        let request = format!(
            "GET /delay?ms={} HTTP/1.1\r\nHost: replay.test\r\nConnection: close\r\n\r\n",
            connection.held.as_millis()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
    }
    Ok(())
}

/// The replicas of the app (starting, ready and draining), from the admin API.
async fn replicas() -> anyhow::Result<usize> {
    Ok(admin_app().await?["replicas"].as_array().map_or(0, Vec::len))
}

async fn wait_for_ready_replica() -> anyhow::Result<()> {
    for _ in 0..600 {
        if let Ok(body) = admin_app().await
            && body["replicas"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["state"] == "ready"))
        {
            return Ok(());
        }
        tokio::time::sleep(TICK).await;
    }
    bail!("no replica became ready")
}

async fn admin_app() -> anyhow::Result<serde_json::Value> {
    let mut stream = TcpStream::connect(ADMIN).await?;
    stream
        .write_all(b"GET /api/apps/replay HTTP/1.1\r\nHost: 127.0.0.1:18952\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).context("a body")?;
    Ok(serde_json::from_str(body)?)
}

/// The cold starts the run logged (`replica ready`, `startup_ms`), shortest first.
fn cold_starts(log: &Path) -> anyhow::Result<Vec<u64>> {
    let text = std::fs::read_to_string(log)?;
    let mut cold: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("\"replica ready\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["fields"]["startup_ms"].as_u64())
        .collect();
    cold.sort_unstable();
    Ok(cold)
}
