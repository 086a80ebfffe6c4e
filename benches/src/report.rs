//! What a run found, rendered as the Markdown that goes into BENCHMARKS.md.

use std::fmt::Write as _;

use crate::hold::Idle;
use crate::load::{H2Run, HandshakeRun, Run};
use crate::proxies::Target;
use crate::scaling;

/// Whether the proxies' CPU is theirs alone or shared with a busy loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Round {
    /// The proxy has its CPU to itself; a fast one may outrun what the load side can drive.
    Alone,
    /// A busy loop takes half the proxy's CPU: the proxy is the bottleneck.
    Contended,
}

/// Every figure of a run.
pub(crate) struct Report {
    machine: String,
    command: String,
    samples: Vec<Sample>,
    memory: Vec<(Target, usize, Idle, f64)>,
    /// h2load runs, with the proxy's CPU time per request in microseconds.
    http2: Vec<(Target, H2Run, f64)>,
    /// `openssl s_time` runs, with the proxy's CPU time per handshake in microseconds.
    handshakes: Vec<(Target, HandshakeRun, f64)>,
    /// wrk runs over TLS, with the proxy's CPU time per request in microseconds.
    https: Vec<(Target, Run, f64)>,
    /// h2load runs over TLS, with the proxy's CPU time per request in microseconds.
    http2_tls: Vec<(Target, H2Run, f64)>,
    /// tideway's scaling latencies, when measured.
    pub(crate) scaling: Option<scaling::Figures>,
}

/// One wrk run.
struct Sample {
    round: Round,
    target: Target,
    connections: usize,
    run: Run,
    /// CPU time of the proxy per request, in microseconds.
    cpu_us: f64,
}

impl Report {
    /// An empty report of a run on `machine`, reproduced by `command`.
    pub(crate) fn new(machine: String, command: String) -> Self {
        Report {
            machine,
            command,
            samples: Vec::new(),
            memory: Vec::new(),
            http2: Vec::new(),
            handshakes: Vec::new(),
            https: Vec::new(),
            http2_tls: Vec::new(),
            scaling: None,
        }
    }

    /// Records a wrk run and the proxy CPU seconds it took.
    pub(crate) fn throughput(
        &mut self,
        round: Round,
        target: Target,
        connections: usize,
        run: Run,
        cpu: f64,
    ) {
        let cpu_us = cpu * 1e6 / run.requests.max(1) as f64;
        self.samples.push(Sample {
            round,
            target,
            connections,
            run,
            cpu_us,
        });
    }

    /// Records an h2load run and the proxy CPU seconds it took.
    pub(crate) fn http2(&mut self, target: Target, run: H2Run, cpu: f64) {
        let cpu_us = cpu * 1e6 / run.requests.max(1) as f64;
        self.http2.push((target, run, cpu_us));
    }

    /// Records an `openssl s_time` run and the proxy CPU seconds it took.
    pub(crate) fn handshakes(&mut self, target: Target, run: HandshakeRun, cpu: f64) {
        self.handshakes
            .push((target, run, cpu * 1e6 / run.handshakes.max(1) as f64));
    }

    /// Records a wrk run over TLS and the proxy CPU seconds it took.
    pub(crate) fn https(&mut self, target: Target, run: Run, cpu: f64) {
        self.https
            .push((target, run, cpu * 1e6 / run.requests.max(1) as f64));
    }

    /// Records an h2load run over TLS and the proxy CPU seconds it took.
    pub(crate) fn http2_tls(&mut self, target: Target, run: H2Run, cpu: f64) {
        self.http2_tls
            .push((target, run, cpu * 1e6 / run.requests.max(1) as f64));
    }

    /// The TLS table — per proxy, the medians of each TLS measurement — and tideway against each other
    /// proxy.
    fn render_tls(&self, out: &mut String, targets: &[Target]) {
        if self.handshakes.is_empty() {
            return;
        }
        let _ = write!(
            out,
            "\n### TLS (TLS 1.3, {}, {}, ECDSA P-256), each proxy on a CPU of its own (medians)\n\n\
             | proxy | full handshakes per CPU-second | CPU per handshake | HTTPS req/s (wrk, kept alive) | CPU per request | HTTP/2 over TLS req/s (h2load) | CPU per request | errors |\n\
             |---|---|---|---|---|---|---|---|\n",
            crate::tls::SUITE,
            crate::tls::GROUP
        );
        let figures = |target: Target| {
            let handshake_us = median_of(&self.handshakes, target, |_, cpu| cpu)?;
            let https_rps = median_of(&self.https, target, |run, _| run.requests_per_second)?;
            let https_us = median_of(&self.https, target, |_, cpu| cpu)?;
            let h2_rps = median_of(&self.http2_tls, target, |run, _| run.requests_per_second)?;
            let h2_us = median_of(&self.http2_tls, target, |_, cpu| cpu)?;
            Some([
                1e6 / handshake_us,
                handshake_us,
                https_rps,
                https_us,
                h2_rps,
                h2_us,
            ])
        };
        for &target in targets {
            let Some([per_cpu_second, handshake_us, https_rps, https_us, h2_rps, h2_us]) = figures(target)
            else {
                continue;
            };
            let errors: u64 = self
                .https
                .iter()
                .filter(|(t, ..)| *t == target)
                .map(|(_, run, _)| run.errors)
                .chain(
                    self.http2_tls
                        .iter()
                        .filter(|(t, ..)| *t == target)
                        .map(|(_, run, _)| run.errors),
                )
                .sum();
            let _ = writeln!(
                out,
                "| {} | {per_cpu_second:.0} | {handshake_us:.0} µs | {https_rps:.0} | {https_us:.1} µs | {h2_rps:.0} | {h2_us:.1} µs | {errors} |",
                target.name(),
            );
        }
        let Some(ours) = figures(Target::Tideway) else {
            return;
        };
        for other in [Target::Haproxy, Target::Nginx] {
            if let Some(theirs) = figures(other) {
                let _ = writeln!(
                    out,
                    "\ntideway / {}: handshakes per CPU-second {:.2}×, CPU per HTTPS request {:.2}×, CPU per HTTP/2-over-TLS request {:.2}×",
                    other.name(),
                    ours[0] / theirs[0],
                    ours[3] / theirs[3],
                    ours[5] / theirs[5],
                );
            }
        }
    }

    /// The median of `pick` over `target`'s h2load runs.
    fn http2_median(&self, target: Target, pick: fn(&H2Run, f64) -> f64) -> Option<f64> {
        median_of(&self.http2, target, pick)
    }

    /// The HTTP/2 table, and tideway against each other proxy.
    fn render_http2(&self, out: &mut String, targets: &[Target]) {
        if self.http2.is_empty() {
            return;
        }
        let _ = write!(
            out,
            "\n### HTTP/2 (h2c, h2load; connections and streams as in the command), each proxy on a CPU of its own (medians)\n\n\
             | proxy | req/s | mean time per request | CPU per request | load CPU busy | errors |\n\
             |---|---|---|---|---|---|\n"
        );
        for &target in targets {
            let median = |pick| self.http2_median(target, pick).unwrap_or(0.0);
            let errors: u64 = self
                .http2
                .iter()
                .filter(|(t, _, _)| *t == target)
                .map(|(_, run, _)| run.errors)
                .sum();
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} µs | {:.1} µs | {:.0}% | {errors} |",
                target.name(),
                median(|run, _| run.requests_per_second),
                median(|run, _| run.mean_us),
                median(|_, cpu| cpu),
                median(|run, _| run.load_busy * 100.0),
            );
        }
        for other in [Target::Haproxy, Target::Nginx] {
            let ratio = |pick: fn(&H2Run, f64) -> f64| {
                Some(self.http2_median(Target::Tideway, pick)? / self.http2_median(other, pick)?)
            };
            if let (Some(throughput), Some(cpu)) =
                (ratio(|run, _| run.requests_per_second), ratio(|_, cpu| cpu))
            {
                let _ = writeln!(
                    out,
                    "\ntideway / {}: throughput {throughput:.2}×, CPU per request {cpu:.2}×",
                    other.name()
                );
            }
        }
    }

    /// Records the resident bytes per idle connection.
    pub(crate) fn memory(&mut self, target: Target, count: usize, idle: Idle, bytes: f64) {
        self.memory.push((target, count, idle, bytes));
    }

    fn median(
        &self,
        round: Round,
        target: Target,
        connections: usize,
        pick: fn(&Sample) -> f64,
    ) -> Option<f64> {
        let mut values: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.round == round && s.target == target && s.connections == connections)
            .map(pick)
            .collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    }

    /// The report as Markdown.
    pub(crate) fn render(&self) -> String {
        let mut out = format!(
            "## Results\n\nMachine: {}\n\nCommand: `{}`\n",
            self.machine, self.command
        );
        let mut targets: Vec<Target> = self.samples.iter().map(|s| s.target).collect();
        targets.sort_by_key(|t| t.name());
        targets.dedup();
        let mut connection_counts: Vec<usize> = self.samples.iter().map(|s| s.connections).collect();
        connection_counts.sort_unstable();
        connection_counts.dedup();
        for (round, title) in [
            (
                Round::Alone,
                "Throughput, each proxy on a CPU of its own (medians)",
            ),
            (
                Round::Contended,
                "Throughput, each proxy sharing its CPU with a busy loop (medians)",
            ),
        ] {
            if !self.samples.iter().any(|s| s.round == round) {
                continue;
            }
            let _ = write!(
                out,
                "\n### {title}\n\n| proxy | connections | req/s | p50 | p99 | CPU per request | load CPU busy | errors |\n\
                 |---|---|---|---|---|---|---|---|\n"
            );
            for &connections in &connection_counts {
                for &target in &targets {
                    let median = |pick| self.median(round, target, connections, pick).unwrap_or(0.0);
                    let errors: u64 = self
                        .samples
                        .iter()
                        .filter(|s| s.round == round && s.target == target && s.connections == connections)
                        .map(|s| s.run.errors)
                        .sum();
                    let _ = writeln!(
                        out,
                        "| {} | {connections} | {:.0} | {:.0} µs | {:.0} µs | {:.1} µs | {:.0}% | {errors} |",
                        target.name(),
                        median(|s| s.run.requests_per_second),
                        median(|s| s.run.p50_us),
                        median(|s| s.run.p99_us),
                        median(|s| s.cpu_us),
                        median(|s| s.run.load_busy * 100.0),
                    );
                }
            }
            for other in [Target::Haproxy, Target::Nginx] {
                if !targets.contains(&other) || !targets.contains(&Target::Tideway) {
                    continue;
                }
                for &connections in &connection_counts {
                    let ratio = |pick: fn(&Sample) -> f64| {
                        let ours = self.median(round, Target::Tideway, connections, pick)?;
                        Some(ours / self.median(round, other, connections, pick)?)
                    };
                    let _ = write!(
                        out,
                        "\ntideway / {} at c={connections}: throughput {:.2}×, p99 {:.2}×, CPU per request {:.2}×\n",
                        other.name(),
                        ratio(|s| s.run.requests_per_second).unwrap_or(0.0),
                        ratio(|s| s.run.p99_us).unwrap_or(0.0),
                        ratio(|s| s.cpu_us).unwrap_or(0.0),
                    );
                }
            }
        }
        self.render_http2(&mut out, &targets);
        self.render_tls(&mut out, &targets);
        out += "\n### Memory per idle connection (resident bytes gained per connection held, fresh process)\n\n\
                | proxy | idle connections | WebSocket | HTTP/1.1 keep-alive |\n|---|---|---|---|\n";
        let mut counts: Vec<usize> = self.memory.iter().map(|(_, c, ..)| *c).collect();
        counts.sort_unstable();
        counts.dedup();
        for &target in &targets {
            for &count in &counts {
                let bytes = |idle: Idle| {
                    self.memory
                        .iter()
                        .find(|(t, c, i, _)| *t == target && *c == count && *i == idle)
                        .map_or_else(|| "–".to_owned(), |(.., b)| format!("{b:.0}"))
                };
                let _ = writeln!(
                    out,
                    "| {} | {count} | {} | {} |",
                    target.name(),
                    bytes(Idle::Websocket),
                    bytes(Idle::Keepalive)
                );
            }
        }
        if let Some(scaling) = &self.scaling {
            out += &scaling.render();
        }
        out
    }
}

/// The median of `pick` over `target`'s runs in `runs`, each with the proxy's CPU time per unit.
fn median_of<R>(runs: &[(Target, R, f64)], target: Target, pick: fn(&R, f64) -> f64) -> Option<f64> {
    let mut values: Vec<f64> = runs
        .iter()
        .filter(|(t, ..)| *t == target)
        .map(|(_, run, cpu)| pick(run, *cpu))
        .collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}
