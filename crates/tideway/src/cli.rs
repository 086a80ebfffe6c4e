//! Command-line arguments.

use std::error::Error;
use std::fmt::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Tideway: a connection-aware autoscaling reverse proxy.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "tideway.toml",
        env = "TIDEWAY_CONFIG"
    )]
    pub(crate) config: PathBuf,
    /// Log line format (the level is set with RUST_LOG, default "info").
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TIDEWAY_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
}

/// `tideway simulate --help`: what each figure means.
const SIMULATE_ABOUT: &str = "\
Replay a connection trace (written by `[proxy] trace_log`, or synthetic) against candidate scaling \
policies in virtual time, through tideway's own admission, queue, balancing and scaling code, with a \
model of replica start-up, and print what each policy would have cost and done.

The figures, per policy:
  replica-s   replicas running (starting, ready or draining) integrated over the trace: what it costs
  x ideal     replica-s divided by the ideal rule's under the same policy
  peak        most replicas running at once
  decisions   scaling decisions (starts and drains)
  reversals   decisions that went the other way from the one before (up after down, down after up)
  queued      connections that found no free seat and waited in the queue
  wait p50, wait p95, wait max
              how long the queued connections that got a seat waited (nearest rank)
  rejected    connections refused, by reason (the `reason` label of tideway_rejected_connections_total)
  cut         sessions closed at a drained replica's drain_timeout

The ideal rule, for reference: every connection seated on arrival, and at every moment exactly \
ceil(demand / (max_connections x spawn_threshold)) replicas within min_instances..max_instances, started \
and stopped instantly. No real policy reaches it; how far one stays above it is what tuning trades \
against queueing.";

/// What to do; `serve` when omitted.
#[derive(Debug, Default, Clone, Subcommand)]
pub(crate) enum Command {
    /// Run the proxy (the default).
    #[default]
    Serve,
    /// Validate the configuration file, print every problem, and exit (0 valid, 2 invalid).
    Check,
    /// Replay a connection trace (or a synthetic one) against candidate scaling policies in virtual time
    /// and print, per policy, what it would have cost and what its connections went through.
    #[command(long_about = SIMULATE_ABOUT)]
    Simulate(crate::simulate::SimulateArgs),
    /// Print the CustomResourceDefinition of `TidewayApp` (YAML), for `kubectl apply -f -`.
    Crd,
    /// Print the RBAC rules Kubernetes mode needs (YAML, the `rules` of a Role or ClusterRole): exactly what
    /// tideway asks of the API server, and nothing more.
    Rbac,
    /// Run one local replica's command and stop its whole process group when stdin closes (used by
    /// `serve` for every local replica; not meant to be run by hand).
    #[command(hide = true)]
    Supervise {
        /// After SIGTERM, how long the command gets before SIGKILL.
        #[arg(long, value_parser = humantime::parse_duration)]
        stop_timeout: std::time::Duration,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Become one local replica's command, dying with the supervisor `parent` (used by `supervise`; not
    /// meant to be run by hand).
    #[command(hide = true)]
    Exec {
        /// The supervisor's process id.
        #[arg(long)]
        parent: u32,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// An error and its sources, one per line, so a failure explains itself without a debugger.
pub(crate) fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, "\n  caused by: {cause}");
        source = cause.source();
    }
    text
}
