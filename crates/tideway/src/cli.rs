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

/// What to do; `serve` when omitted.
#[derive(Debug, Default, Clone, Subcommand)]
pub(crate) enum Command {
    /// Run the proxy (the default).
    #[default]
    Serve,
    /// Validate the configuration file, print every problem, and exit (0 valid, 2 invalid).
    Check,
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
