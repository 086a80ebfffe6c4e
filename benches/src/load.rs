//! Load generation — wrk for HTTP/1.1, h2load for HTTP/2, `openssl s_time` for TLS handshakes — and what
//! is read from their reports.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

/// One wrk run's figures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    pub(crate) requests_per_second: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Share of the load CPU that was busy (wrk and the upstream): near 1.0, the load side, not the proxy,
    /// set the pace, and latency reflects its queues.
    pub(crate) load_busy: f64,
}

/// Runs `wrk -t1 -c<connections> -d<duration> --latency` against `addr` over plain HTTP, pinned to `cpu`.
pub(crate) fn wrk(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    cpu: Option<usize>,
) -> anyhow::Result<Run> {
    wrk_url(&format!("http://{addr}/"), connections, duration, cpu)
}

/// Runs wrk against `url` (`https://` for kept-alive connections over TLS), pinned to `cpu`.
pub(crate) fn wrk_url(
    url: &str,
    connections: usize,
    duration: Duration,
    cpu: Option<usize>,
) -> anyhow::Result<Run> {
    let mut command = pinned("wrk", cpu);
    command
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs().max(1)),
        ])
        .args(["--latency", "-H", "Host: bench.test"])
        .arg(url);
    let (report, load_busy) = measure(&mut command, cpu, "wrk")?;
    let mut run = parse(&report).with_context(|| format!("unexpected wrk report:\n{report}"))?;
    run.load_busy = load_busy;
    Ok(run)
}

/// One h2load run's figures (h2load reports no percentiles: the mean time per request instead).
#[derive(Clone, Copy, Debug)]
pub(crate) struct H2Run {
    pub(crate) requests_per_second: f64,
    pub(crate) mean_us: f64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Share of the load CPU that was busy, as for [`Run::load_busy`].
    pub(crate) load_busy: f64,
}

/// Runs `h2load -t1 -c<connections> -m<streams> -D<duration>` against `url` — HTTP/2 with prior knowledge
/// for `http://`, through ALPN for `https://`, `streams` requests in flight on each connection — pinned
/// to `cpu`.
pub(crate) fn h2load(
    url: &str,
    connections: usize,
    streams: usize,
    duration: Duration,
    cpu: Option<usize>,
) -> anyhow::Result<H2Run> {
    let mut command = pinned("h2load", cpu);
    if url.starts_with("https://") {
        command.args(["--tls13-ciphers", crate::tls::SUITE]);
    }
    command
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-m{streams}"),
            &format!("-D{}", duration.as_secs().max(1)),
        ])
        .arg(url);
    let (report, load_busy) = measure(&mut command, cpu, "h2load")?;
    let mut run = parse_h2load(&report).with_context(|| format!("unexpected h2load report:\n{report}"))?;
    run.load_busy = load_busy;
    Ok(run)
}

/// One `openssl s_time` run: full TLS handshakes, one connection after the other, none resumed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandshakeRun {
    pub(crate) handshakes: u64,
    pub(crate) per_second: f64,
}

/// Runs `openssl s_time -new` against `addr` for `duration` — a new connection and full handshake
/// (TLS 1.3, [`crate::tls::SUITE`]) after the other — pinned to `cpu`.
pub(crate) fn handshakes(
    addr: SocketAddr,
    duration: Duration,
    cpu: Option<usize>,
) -> anyhow::Result<HandshakeRun> {
    let mut command = pinned("openssl", cpu);
    command
        .args(["s_time", "-connect", &addr.to_string(), "-new", "-tls1_3"])
        .args(["-ciphersuites", crate::tls::SUITE])
        .args(["-time", &duration.as_secs().max(1).to_string()]);
    let (report, _) = measure(&mut command, cpu, "openssl s_time")?;
    parse_s_time(&report).with_context(|| format!("unexpected s_time report:\n{report}"))
}

/// `2345 connections in 11 real seconds, 0 bytes read per connection` (the line before counts the
/// client's own CPU time instead).
fn parse_s_time(report: &str) -> Option<HandshakeRun> {
    let line = report.lines().find(|l| l.contains(" real seconds"))?;
    let handshakes = line.split_whitespace().next()?.parse().ok()?;
    let seconds: f64 = line
        .split(" connections in ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(HandshakeRun {
        handshakes,
        per_second: handshakes as f64 / seconds.max(1e-9),
    })
}

/// `program`, run on `cpu` when there is one to pin it to.
fn pinned(program: &str, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Runs a load generator: its report, and how busy the load CPU was meanwhile.
fn measure(command: &mut Command, cpu: Option<usize>, name: &str) -> anyhow::Result<(String, f64)> {
    let before = cpu_ticks(cpu);
    let output = command.output().with_context(|| format!("run {name}"))?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{name} failed: {report}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let busy = match (before, cpu_ticks(cpu)) {
        (Some((busy_before, all_before)), Some((busy_after, all_after))) => {
            (busy_after - busy_before) as f64 / (all_after - all_before).max(1) as f64
        }
        _ => 0.0,
    };
    Ok((report, busy))
}

/// Busy and total ticks of `cpu` so far, from /proc/stat.
fn cpu_ticks(cpu: Option<usize>) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = cpu.map_or_else(|| "cpu".to_owned(), |cpu| format!("cpu{cpu}"));
    let fields: Vec<u64> = stat
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name.as_str()))?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn parse(report: &str) -> Option<Run> {
    let value = |prefix: &str| {
        report
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
    };
    let requests_per_second = value("Requests/sec:")?.parse().ok()?;
    let p50_us = latency_us(&value("50%")?)?;
    let p99_us = latency_us(&value("99%")?)?;
    let requests = report
        .lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let non_2xx = value("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let socket_errors: u64 = value("Socket errors:")
        .map(|v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Some(Run {
        requests_per_second,
        p50_us,
        p99_us,
        requests,
        errors: non_2xx + socket_errors,
        load_busy: 0.0,
    })
}

fn parse_h2load(report: &str) -> Option<H2Run> {
    let line = |prefix: &str| report.lines().map(str::trim).find_map(|l| l.strip_prefix(prefix));
    // finished in 10.00s, 44482.00 req/s, 12.26MB/s
    let requests_per_second = line("finished in")?
        .split(", ")
        .find_map(|part| part.strip_suffix(" req/s"))?
        .parse()
        .ok()?;
    // requests: 88964 total, 88980 started, 88964 done, 88964 succeeded, 0 failed, 0 errored, 0 timeout
    let counts = line("requests:")?;
    let count = |name: &str| {
        counts
            .split(", ")
            .find_map(|part| part.trim().strip_suffix(name))
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    let requests = count(" done")?;
    let failed = count(" failed")? + count(" errored")? + count(" timeout")?;
    // status codes: 88964 2xx, 0 3xx, 0 4xx, 0 5xx
    let statuses = line("status codes:")?;
    let not_2xx: u64 = statuses
        .split(", ")
        .filter(|part| !part.ends_with("2xx"))
        .filter_map(|part| part.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    // time for request:      127us      9.85ms       344us       183us    93.73%
    let mean_us = latency_us(line("time for request:")?.split_whitespace().nth(2)?)?;
    Some(H2Run {
        requests_per_second,
        mean_us,
        requests,
        errors: failed + not_2xx,
        load_busy: 0.0,
    })
}

/// `512.00us`, `1.20ms`, `2.00s` in microseconds.
fn latency_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number,
        "ms" => number * 1_000.0,
        "s" => number * 1_000_000.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_h2load_report() {
        let report = "finished in 2.00s, 44482.00 req/s, 12.26MB/s\nrequests: 88964 total, 88980 started, 88964 done, 88960 succeeded, 1 failed, 2 errored, 1 timeout\nstatus codes: 88960 2xx, 0 3xx, 3 4xx, 1 5xx\ntraffic: 24.52MB (25711208) total\n                     min         max         mean         sd        +/- sd\ntime for request:      127us      9.85ms       344us       183us    93.73%\n";
        let run = parse_h2load(report).expect("a report");
        assert_eq!(run.requests_per_second, 44482.0);
        assert_eq!(run.requests, 88964);
        assert_eq!(run.mean_us, 344.0);
        assert_eq!(run.errors, 8);
    }

    #[test]
    fn reads_an_s_time_report() {
        let report = "Collecting connection statistics for 10 seconds\n****\n\n2345 connections in 10.01s; 234.27 connections/user sec, bytes read 0\n2345 connections in 11 real seconds, 0 bytes read per connection\n";
        let run = parse_s_time(report).expect("a report");
        assert_eq!(run.handshakes, 2345);
        assert!((run.per_second - 213.18).abs() < 0.1);
    }

    #[test]
    fn reads_a_wrk_report() {
        let report = "Running 10s test @ http://127.0.0.1:8080/\n  1 threads and 64 connections\n  Latency Distribution\n     50%  512.00us\n     75%  700.00us\n     90%    1.00ms\n     99%    2.50ms\n  123456 requests in 10.00s, 12.34MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  12345.67\nTransfer/sec:      1.23MB\n";
        let run = parse(report).expect("a report");
        assert_eq!(run.requests_per_second, 12345.67);
        assert_eq!(run.p50_us, 512.0);
        assert_eq!(run.p99_us, 2500.0);
        assert_eq!(run.requests, 123456);
        assert_eq!(run.errors, 3);
    }
}
