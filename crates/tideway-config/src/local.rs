//! `[app.local]`: replicas run as child processes of tideway on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::Value;

use crate::values::{boolean, expected, nonzero_duration, string};
use crate::walk::{Errors, Section};

/// How to run one replica of an app as a local process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSpec {
    /// Program and arguments; `{port}` in any argument is replaced by the replica's port.
    pub command: Vec<String>,
    /// Working directory; `None` = tideway's own.
    pub cwd: Option<PathBuf>,
    /// Extra environment variables (tideway also sets `PORT`, `TIDEWAY_APP` and `TIDEWAY_REPLICA`).
    pub env: BTreeMap<String, String>,
    /// When a started replica counts as ready.
    pub readiness: Readiness,
    /// After SIGTERM, how long a stopping replica gets before SIGKILL.
    pub stop_timeout: Duration,
    /// Whether the replicas' standard output and error are copied into tideway's log, line by line. Off
    /// for an app that writes its own access log, which would double every request's line; its output
    /// is then discarded.
    pub log_output: bool,
}

/// The readiness check of a local replica, repeated every `interval` until it passes or
/// `startup_timeout` runs out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// An HTTP GET of `path` answered with 2xx or 3xx.
    Http {
        /// Path probed, starting with `/`.
        path: String,
        /// Pause between probes.
        interval: Duration,
        /// Longest one probe may take.
        timeout: Duration,
    },
    /// A TCP connect that succeeds.
    Tcp {
        /// Pause between probes.
        interval: Duration,
        /// Longest one probe may take.
        timeout: Duration,
    },
}

/// Default pause between readiness probes: frequent enough for a fast cold start, cheap for the child.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);
/// Default bound of one readiness probe.
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default grace between SIGTERM and SIGKILL.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Environment variables tideway sets itself.
const RESERVED_ENV: [&str; 3] = ["PORT", "TIDEWAY_APP", "TIDEWAY_REPLICA"];

/// Reads `[app.local]`.
pub(crate) fn read_local(section: &mut Section<'_>, errors: &mut Errors) -> Option<LocalSpec> {
    let mut valid = true;
    let command = section.required("command", errors, command);
    valid &= command.is_some();
    let cwd = section.get("cwd", errors, |v| string(v).map(PathBuf::from));
    valid &= !section.contains("cwd") || cwd.is_some();
    let env = match section.table("env", errors) {
        Some(mut table) => {
            let env = read_env(&mut table, errors);
            valid &= env.is_some();
            table.finish(errors);
            env.unwrap_or_default()
        }
        None => {
            valid &= !section.contains("env");
            BTreeMap::new()
        }
    };
    let readiness = match section.table("readiness", errors) {
        Some(mut table) => {
            let readiness = read_readiness(&mut table, errors);
            table.finish(errors);
            readiness
        }
        None if section.contains("readiness") => None,
        None => Some(Readiness::Tcp {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_PROBE_TIMEOUT,
        }),
    };
    valid &= readiness.is_some();
    let stop_timeout = section.get("stop_timeout", errors, nonzero_duration);
    valid &= !section.contains("stop_timeout") || stop_timeout.is_some();
    let log_output = section.get("log_output", errors, boolean);
    valid &= !section.contains("log_output") || log_output.is_some();
    valid.then(|| LocalSpec {
        command: command.unwrap_or_default(),
        cwd,
        env,
        readiness: readiness.unwrap_or(Readiness::Tcp {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_PROBE_TIMEOUT,
        }),
        stop_timeout: stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
        log_output: log_output.unwrap_or(true),
    })
}

/// A non-empty array of strings whose first element (the program) is not empty.
fn command(value: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err(expected(
            r#"expected a command like ["python3", "app.py"]"#,
            value,
        ));
    };
    let words: Vec<String> = items
        .iter()
        .map(|item| string(item).map(str::to_owned))
        .collect::<Result<_, _>>()
        .map_err(|_| "every element must be a string".to_owned())?;
    match words.first() {
        None => Err("must not be empty".to_owned()),
        Some(program) if program.is_empty() => {
            Err("the program (first element) must not be empty".to_owned())
        }
        Some(_) => Ok(words),
    }
}

fn read_env(table: &mut Section<'_>, errors: &mut Errors) -> Option<BTreeMap<String, String>> {
    let keys: Vec<String> = table.keys().map(str::to_owned).collect();
    let mut env = BTreeMap::new();
    let mut valid = true;
    for key in keys {
        let value = table.get(&key, errors, string);
        if RESERVED_ENV.contains(&key.as_str()) {
            errors.push(table.key_path(&key), "is set by tideway for each replica");
            valid = false;
        } else if key.is_empty() || key.contains('=') || key.contains('\0') {
            errors.push(table.key_path(&key), "is not a valid environment variable name");
            valid = false;
        } else if let Some(value) = value {
            if value.contains('\0') {
                errors.push(table.key_path(&key), "must not contain a NUL character");
                valid = false;
            } else {
                env.insert(key, value.to_owned());
            }
        } else {
            valid = false;
        }
    }
    valid.then_some(env)
}

fn read_readiness(table: &mut Section<'_>, errors: &mut Errors) -> Option<Readiness> {
    let given = |table: &Section<'_>, key| table.contains(key);
    let (path_given, tcp_given) = (given(table, "path"), given(table, "tcp"));
    let (interval_given, timeout_given) = (given(table, "interval"), given(table, "timeout"));
    let path = table.get("path", errors, |v| {
        let path = string(v)?;
        if !path.starts_with('/') {
            return Err("must start with '/'".to_owned());
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace".to_owned());
        }
        Ok(path.to_owned())
    });
    let tcp = table.get("tcp", errors, |v| match v {
        Value::Boolean(true) => Ok(()),
        Value::Boolean(false) => {
            Err("only `tcp = true` is meaningful; use `path` for an HTTP check".to_owned())
        }
        other => Err(expected("expected true", other)),
    });
    let interval = table.get("interval", errors, nonzero_duration);
    let timeout = table.get("timeout", errors, nonzero_duration);
    let valid = (!path_given || path.is_some())
        && (!tcp_given || tcp.is_some())
        && (!interval_given || interval.is_some())
        && (!timeout_given || timeout.is_some());
    if path_given && tcp_given {
        errors.push(table.path(), "choose one check: `path` (HTTP) or `tcp = true`");
        return None;
    }
    let interval = interval.unwrap_or(DEFAULT_INTERVAL);
    let timeout = timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
    let readiness = match path {
        Some(path) => Readiness::Http {
            path,
            interval,
            timeout,
        },
        None => Readiness::Tcp { interval, timeout },
    };
    valid.then_some(readiness)
}

#[cfg(test)]
mod tests;
