//! `compare`: tideway side by side with nginx and HAProxy on this machine, in one run. See BENCHMARKS.md.
//!
//! Each proxy runs pinned to CPU 0; wrk, the idle-connection clients and the upstream run on CPU 1. Targets
//! alternate between repetitions so that drift on a shared machine hits all of them alike; medians are
//! reported. Everything listens on 127.0.0.1 and the runner stops only what it started.

mod hold;
mod load;
mod process;
mod proxies;
mod replay;
mod report;
mod scaling;
mod setup;
mod tls;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::hold::Idle;
use crate::process::Started;
use crate::proxies::{Proxy, Target};
use crate::report::{Report, Round};

/// Benchmarks tideway against nginx and HAProxy.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// A few seconds: tideway only, one short round of each measurement.
    #[arg(long)]
    smoke: bool,
    /// Proxies to compare.
    #[arg(long, value_delimiter = ',', default_values = ["tideway", "haproxy", "nginx"])]
    targets: Vec<Target>,
    /// Client connections of the throughput runs.
    #[arg(long, value_delimiter = ',', default_values = ["64", "256"])]
    connections: Vec<usize>,
    /// Length of one throughput run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Throughput runs per target and connection count (medians are reported).
    #[arg(long, default_value = "5")]
    repetitions: usize,
    /// Idle connections held for the memory measurements.
    #[arg(long, value_delimiter = ',', default_values = ["5000", "9000"])]
    idle: Vec<usize>,
    /// Samples of each scaling latency.
    #[arg(long, default_value = "10")]
    scaling_samples: usize,
    /// Also run the throughput rounds with a busy loop sharing the proxies' CPU: each proxy then has half
    /// a CPU and is the bottleneck, whatever the load side can drive.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    contended: bool,
    /// Also run an HTTP/2 round (h2c with prior knowledge, `h2load`), each proxy on a CPU of its own.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    http2: bool,
    /// Client connections of the HTTP/2 round.
    #[arg(long, default_value = "32")]
    http2_connections: usize,
    /// Requests in flight on each HTTP/2 connection.
    #[arg(long, default_value = "16")]
    streams: usize,
    /// Also run the TLS round (the same certificate and suite for every proxy, each on a CPU of its own):
    /// full handshakes (`openssl s_time`), kept-alive HTTPS (`wrk`, the first connection count) and
    /// HTTP/2 over TLS (`h2load`, as the HTTP/2 round).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    tls: bool,
}

#[derive(Subcommand)]
enum Command {
    /// The upstream (started by the runner).
    #[command(hide = true)]
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Keeps a CPU busy for `seconds` (started by the runner, for the contended rounds).
    #[command(hide = true)]
    Spin {
        #[arg(long)]
        seconds: u64,
    },
    /// Replays a synthetic trace in real time through tideway's local mode and compares the
    /// replica-seconds it cost with `tideway simulate`'s prediction.
    Replay(replay::ReplayArgs),
    /// Holds idle connections (started by the runner).
    #[command(hide = true)]
    Hold {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long, value_enum)]
        idle: Idle,
    },
}

/// The port layout of a run: all on 127.0.0.1.
const UPSTREAM: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18_901);
const PROXY_PORTS: [(Target, u16); 3] = [
    (Target::Tideway, 18_911),
    (Target::Haproxy, 18_912),
    (Target::Nginx, 18_913),
];
/// Added to a proxy's port for its HTTP/2 listener, where it needs one of its own.
const H2C_PORT_OFFSET: u16 = 10;
/// Added to a proxy's port for its TLS listener.
const TLS_PORT_OFFSET: u16 = 20;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match cli.command {
        Some(Command::Upstream { listen }) => runtime.block_on(upstream::serve(listen)),
        Some(Command::Hold { target, count, idle }) => runtime.block_on(hold::hold(target, count, idle)),
        Some(Command::Replay(args)) => runtime.block_on(replay::run(args)),
        Some(Command::Spin { seconds }) => {
            let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
            while tokio::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            Ok(())
        }
        None => runtime.block_on(run(cli.run)),
    }
}

async fn run(mut args: RunArgs) -> anyhow::Result<()> {
    if args.smoke {
        args.targets = vec![Target::Tideway];
        args.connections = vec![16];
        args.duration = Duration::from_secs(2);
        args.repetitions = 1;
        args.idle = vec![200];
        args.scaling_samples = 2;
        args.contended = false;
        args.http2_connections = 4;
        args.streams = 4;
    }
    let root = setup::workspace_root()?;
    setup::install_missing_tools(&args.targets, args.http2 || args.tls)?;
    let binaries = setup::build(&root)?;
    let (proxy_cpu, load_cpu) = setup::cpus();
    let dir = root
        .join("target/bench")
        .join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let machine = setup::describe_machine();
    eprintln!("== {machine}");

    let upstream = Started::spawn(
        "upstream",
        load_cpu,
        &binaries.compare,
        &["upstream".into(), "--listen".into(), UPSTREAM.to_string()],
        &dir.join("upstream.log"),
    )?;
    let certificate = tls::write(&dir)?;
    let start = |target| start_proxy(target, proxy_cpu, &dir, &binaries, &certificate);
    let mut running = Vec::new();
    for target in &args.targets {
        running.push(start(*target).await?);
    }

    let mut report = Report::new(machine, command_line(&args));
    for proxy in &running {
        // Warm-up: connections to the upstream, allocator pools, caches.
        load::wrk(proxy.addr, args.connections[0], Duration::from_secs(2), load_cpu)?;
    }
    throughput_round(&running, &args, load_cpu, Round::Alone, &mut report)?;
    if args.http2 {
        http2_round(&running, &args, load_cpu, &mut report)?;
    }
    if args.tls {
        tls_round(&running, &args, load_cpu, &mut report)?;
    }
    if args.contended {
        let rounds = args.connections.len() * args.repetitions * running.len();
        let seconds = (args.duration.as_secs() + 2) * rounds as u64 + 10;
        let _spinner = Started::spawn(
            "spinner",
            proxy_cpu,
            &binaries.compare,
            &["spin".into(), "--seconds".into(), seconds.to_string()],
            &dir.join("spinner.log"),
        )?;
        throughput_round(&running, &args, load_cpu, Round::Contended, &mut report)?;
    }
    drop(running);
    // Memory is measured on a fresh process each time, warmed up the same way, so that no proxy reuses
    // what an earlier measurement left in its allocator.
    for target in &args.targets {
        for &count in &args.idle {
            for idle in [Idle::Websocket, Idle::Keepalive] {
                let proxy = start(*target).await?;
                load::wrk(proxy.addr, 16, Duration::from_secs(1), load_cpu)?;
                let bytes = idle_memory(&proxy, count, idle, load_cpu, &binaries.compare, &dir).await?;
                eprintln!(
                    "{:<8} {count} idle {idle:?}: {bytes:.0} bytes each",
                    proxy.target.name()
                );
                report.memory(proxy.target, count, idle, bytes);
            }
        }
    }
    drop(upstream);
    if args.targets.contains(&Target::Tideway) {
        report.scaling = Some(scaling::measure(&binaries, args.scaling_samples, &dir).await?);
    }
    let text = report.render();
    println!("{text}");
    std::fs::write(root.join("target/bench/report.md"), &text)?;
    eprintln!("== report written to target/bench/report.md");
    Ok(())
}

/// The wrk runs of one round: every connection count, repetitions alternating between the proxies.
fn throughput_round(
    running: &[Proxy],
    args: &RunArgs,
    load_cpu: Option<usize>,
    round: Round,
    report: &mut Report,
) -> anyhow::Result<()> {
    for &connections in &args.connections {
        for repetition in 0..args.repetitions {
            for i in 0..running.len() {
                let proxy = &running[(i + repetition) % running.len()];
                let cpu_before = proxy.process.cpu_seconds();
                let result = load::wrk(proxy.addr, connections, args.duration, load_cpu)?;
                let cpu = proxy.process.cpu_seconds() - cpu_before;
                eprintln!(
                    "{:<8} {round:?} c={connections:<4} run {}: {:>9.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  {:.1} us CPU/req  load CPU {:.0}%{}",
                    proxy.target.name(),
                    repetition + 1,
                    result.requests_per_second,
                    result.p50_us,
                    result.p99_us,
                    cpu * 1e6 / result.requests.max(1) as f64,
                    result.load_busy * 100.0,
                    errors_note(result.errors),
                );
                report.throughput(round, proxy.target, connections, result, cpu);
            }
        }
    }
    Ok(())
}

/// The h2load runs: each proxy on a CPU of its own, repetitions alternating between the proxies.
fn http2_round(
    running: &[Proxy],
    args: &RunArgs,
    load_cpu: Option<usize>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (connections, streams) = (args.http2_connections, args.streams);
    for proxy in running {
        load::h2load(
            &format!("http://{}/", proxy.h2c),
            connections,
            streams,
            Duration::from_secs(2),
            load_cpu,
        )?;
    }
    for repetition in 0..args.repetitions {
        for i in 0..running.len() {
            let proxy = &running[(i + repetition) % running.len()];
            let cpu_before = proxy.process.cpu_seconds();
            let result = load::h2load(
                &format!("http://{}/", proxy.h2c),
                connections,
                streams,
                args.duration,
                load_cpu,
            )?;
            let cpu = proxy.process.cpu_seconds() - cpu_before;
            eprintln!(
                "{:<8} HTTP/2 c={connections} m={streams} run {}: {:>9.0} req/s  mean {:>7.0} us  {:.1} us CPU/req  load CPU {:.0}%{}",
                proxy.target.name(),
                repetition + 1,
                result.requests_per_second,
                result.mean_us,
                cpu * 1e6 / result.requests.max(1) as f64,
                result.load_busy * 100.0,
                errors_note(result.errors),
            );
            report.http2(proxy.target, result, cpu);
        }
    }
    Ok(())
}

/// The TLS runs: full handshakes, kept-alive HTTPS and HTTP/2 over TLS, each proxy on a CPU of its own,
/// repetitions alternating between the proxies.
fn tls_round(
    running: &[Proxy],
    args: &RunArgs,
    load_cpu: Option<usize>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let connections = args.connections[0];
    let (h2_connections, streams) = (args.http2_connections, args.streams);
    let warm_up = Duration::from_secs(2);
    for proxy in running {
        let url = format!("https://{}/", proxy.tls);
        load::handshakes(proxy.tls, warm_up, load_cpu)?;
        load::wrk_url(&url, connections, warm_up, load_cpu)?;
    }
    for repetition in 0..args.repetitions {
        for i in 0..running.len() {
            let proxy = &running[(i + repetition) % running.len()];
            let name = proxy.target.name();
            let url = format!("https://{}/", proxy.tls);
            let cpu_before = proxy.process.cpu_seconds();
            let handshakes = load::handshakes(proxy.tls, args.duration, load_cpu)?;
            let cpu = proxy.process.cpu_seconds() - cpu_before;
            eprintln!(
                "{name:<8} TLS handshakes run {}: {:>7.0} /s  {:.0} us CPU each",
                repetition + 1,
                handshakes.per_second,
                cpu * 1e6 / handshakes.handshakes.max(1) as f64,
            );
            report.handshakes(proxy.target, handshakes, cpu);

            let cpu_before = proxy.process.cpu_seconds();
            let https = load::wrk_url(&url, connections, args.duration, load_cpu)?;
            let cpu = proxy.process.cpu_seconds() - cpu_before;
            eprintln!(
                "{name:<8} HTTPS c={connections} run {}: {:>9.0} req/s  {:.1} us CPU/req{}",
                repetition + 1,
                https.requests_per_second,
                cpu * 1e6 / https.requests.max(1) as f64,
                errors_note(https.errors),
            );
            report.https(proxy.target, https, cpu);

            let cpu_before = proxy.process.cpu_seconds();
            let h2 = load::h2load(&url, h2_connections, streams, args.duration, load_cpu)?;
            let cpu = proxy.process.cpu_seconds() - cpu_before;
            eprintln!(
                "{name:<8} HTTP/2 over TLS c={h2_connections} m={streams} run {}: {:>9.0} req/s  {:.1} us CPU/req{}",
                repetition + 1,
                h2.requests_per_second,
                cpu * 1e6 / h2.requests.max(1) as f64,
                errors_note(h2.errors),
            );
            report.http2_tls(proxy.target, h2, cpu);
        }
    }
    Ok(())
}

/// The end of a run's progress line: its errors, if it had any.
fn errors_note(errors: u64) -> String {
    if errors > 0 {
        format!("  ({errors} errors)")
    } else {
        String::new()
    }
}

/// The command that reproduces a run with these arguments.
fn command_line(args: &RunArgs) -> String {
    let list = |items: &[String]| items.join(",");
    let targets: Vec<String> = args.targets.iter().map(|t| t.name().to_owned()).collect();
    let connections: Vec<String> = args.connections.iter().map(ToString::to_string).collect();
    let idle: Vec<String> = args.idle.iter().map(ToString::to_string).collect();
    format!(
        "cargo run --release -p tideway-bench --bin compare -- --targets {} --connections {} --duration {}s \
         --repetitions {} --idle {} --contended {} --http2 {} --http2-connections {} --streams {} --tls {}",
        list(&targets),
        list(&connections),
        args.duration.as_secs(),
        args.repetitions,
        list(&idle),
        args.contended,
        args.http2,
        args.http2_connections,
        args.streams,
        args.tls,
    )
}

/// Starts `target` on its ports of the run's layout, presenting `certificate` over TLS.
async fn start_proxy(
    target: Target,
    cpu: Option<usize>,
    dir: &Path,
    binaries: &Binaries,
    certificate: &tls::Files,
) -> anyhow::Result<Proxy> {
    let port = PROXY_PORTS
        .iter()
        .find(|(t, _)| *t == target)
        .map_or(18_919, |(_, p)| *p);
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let listeners = proxies::Listeners {
        addr: at(port),
        h2c: at(port + H2C_PORT_OFFSET),
        tls: at(port + TLS_PORT_OFFSET),
    };
    proxies::start(
        target,
        listeners,
        UPSTREAM,
        cpu,
        dir,
        &binaries.tideway,
        certificate,
    )
    .await
}

/// Resident memory the proxy gains per idle connection while `count` of them are held.
async fn idle_memory(
    proxy: &Proxy,
    count: usize,
    idle: Idle,
    cpu: Option<usize>,
    compare: &Path,
    dir: &Path,
) -> anyhow::Result<f64> {
    use tokio::io::AsyncBufReadExt;
    let before = proxy.process.rss_bytes();
    let mut command = match cpu {
        Some(cpu) => {
            let mut command = tokio::process::Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(compare);
            command
        }
        None => tokio::process::Command::new(compare),
    };
    let idle_name = match idle {
        Idle::Websocket => "websocket",
        Idle::Keepalive => "keepalive",
    };
    let mut holder = command
        .args([
            "hold",
            "--target",
            &proxy.addr.to_string(),
            "--count",
            &count.to_string(),
            "--idle",
            idle_name,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("hold.log"))?)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = holder.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await??;
    anyhow::ensure!(
        ready.as_deref() == Some(&format!("ready {count}")),
        "{} did not take {count} idle connections (see {})",
        proxy.target.name(),
        dir.join("hold.log").display()
    );
    // Let the proxy finish whatever it does once a connection is set up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = proxy.process.rss_bytes();
    drop(holder.stdin.take());
    holder.wait().await?;
    Ok(during.saturating_sub(before) as f64 / count as f64)
}

/// The binaries a run uses.
pub(crate) struct Binaries {
    /// This runner (also the upstream and the idle-connection holder).
    pub(crate) compare: PathBuf,
    /// tideway, release build.
    pub(crate) tideway: PathBuf,
    /// The test kit's fake replica, for the scaling measurements.
    pub(crate) fake_app: PathBuf,
}
