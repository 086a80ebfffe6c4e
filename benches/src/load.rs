//! Load generation with wrk, and what is read from its report.

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

/// Runs `wrk -t1 -c<connections> -d<duration> --latency` against `addr`, pinned to `cpu`.
pub(crate) fn wrk(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    cpu: Option<usize>,
) -> anyhow::Result<Run> {
    let mut command = match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg("wrk");
            command
        }
        None => Command::new("wrk"),
    };
    let before = cpu_ticks(cpu);
    let output = command
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs().max(1)),
        ])
        .args(["--latency", "-H", "Host: bench.test"])
        .arg(format!("http://{addr}/"))
        .output()
        .context("run wrk")?;
    let report = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk failed: {report}{}", String::from_utf8_lossy(&output.stderr));
    }
    let mut run = parse(&report).with_context(|| format!("unexpected wrk report:\n{report}"))?;
    if let (Some((busy_before, all_before)), Some((busy_after, all_after))) = (before, cpu_ticks(cpu)) {
        run.load_busy = (busy_after - busy_before) as f64 / (all_after - all_before).max(1) as f64;
    }
    Ok(run)
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
