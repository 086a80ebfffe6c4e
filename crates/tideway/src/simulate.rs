//! `tideway simulate`: replays a trace (or a synthetic one) against candidate policies and prints what
//! each would have cost and done (README, "Tuning a scaling policy").

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tideway_core::Policy;
use tideway_simulate::{Candidate, SYNTHETIC_APP, Shape, Startup, Trace};

use crate::exit;

/// What `simulate` was asked, as parsed from its arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SimulateArgs {
    /// Trace files written by `[proxy] trace_log`, oldest first (a rotated log's pieces read as one).
    #[arg(value_name = "TRACE", required_unless_present = "synthetic")]
    traces: Vec<PathBuf>,
    /// Replay a synthetic trace instead: steady, diurnal, flash or longlived.
    #[arg(long, value_name = "SHAPE", conflicts_with = "traces")]
    synthetic: Option<Shape>,
    /// The seed of the synthetic trace and of drawn start-up times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long a synthetic trace lasts.
    #[arg(long, value_name = "DURATION", default_value = "20m", value_parser = humantime::parse_duration)]
    length: Duration,
    /// The app of the trace to replay (needed when it holds several); its policy in the configuration
    /// file, if there is one, is the base policy.
    #[arg(long)]
    app: Option<String>,
    /// Changes the base policy: `max_connections=10` (any app policy key; repeat for several).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Adds a candidate per value: `scale_down_delay=10s,30s,2m` (repeat to sweep several keys, each
    /// against the base).
    #[arg(long, value_name = "KEY=VALUES")]
    compare: Vec<String>,
    /// A replica's start-up time in the model: a duration, or `observed` to draw from the trace's cold
    /// starts (2s when it has none).
    #[arg(long, value_name = "DURATION|observed", default_value = "observed")]
    startup: String,
    /// Draw demand, capacity and replicas over time into this SVG file.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Write the replayed trace (a synthetic one, say) to this file, in the trace format.
    #[arg(long, value_name = "FILE")]
    write_trace: Option<PathBuf>,
}

/// The start-up time when the trace observed none.
const DEFAULT_STARTUP: Duration = Duration::from_secs(2);

/// Runs `tideway simulate`; `config` is the configuration file, read for the app's policy if it exists.
pub(crate) fn run(args: &SimulateArgs, config: &Path) -> ExitCode {
    match simulate(args, config) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("tideway simulate: {message}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn simulate(args: &SimulateArgs, config: &Path) -> Result<String, Failure> {
    let trace = match args.synthetic {
        Some(shape) => shape.trace(args.seed, args.length),
        None => read_traces(&args.traces)?,
    };
    let app = match &args.app {
        Some(app) => app.clone(),
        None => {
            let apps = trace.apps();
            match apps.len() {
                0 => SYNTHETIC_APP.to_owned(),
                1 => apps.into_iter().next().unwrap_or_default().to_owned(),
                _ => {
                    let names: Vec<&str> = apps.into_iter().collect();
                    let message = format!(
                        "the trace holds several apps ({}): choose one with --app",
                        names.join(", ")
                    );
                    return Err((exit::USAGE, message));
                }
            }
        }
    };
    let trace = trace.of_app(&app);
    if let Some(path) = &args.write_trace {
        std::fs::write(path, trace.to_json_lines())
            .map_err(|e| (exit::RUNTIME, format!("{}: {e}", path.display())))?;
    }
    let base = base_policy(config, &app, &args.set)?;
    let candidates = candidates(&base, &args.compare)?;
    let startup = startup(&args.startup, &trace)?;
    let report = tideway_simulate::simulate(&trace.arrivals, &candidates, &startup, args.seed);
    if let Some(path) = &args.plot {
        let mut runs = Vec::new();
        if let Some(first) = report.outcomes.first() {
            runs.push(("ideal rule".to_owned(), first.ideal_samples.clone()));
        }
        runs.extend(
            report
                .outcomes
                .iter()
                .map(|o| (o.candidate.label.clone(), o.samples.clone())),
        );
        std::fs::write(path, tideway_simulate::svg(&runs, report.horizon))
            .map_err(|e| (exit::RUNTIME, format!("{}: {e}", path.display())))?;
    }
    let startup = match &startup {
        Startup::Fixed(took) => format!("{} (fixed)", humantime::format_duration(*took)),
        Startup::Observed(seen) => format!("drawn from {} observed cold starts", seen.len()),
    };
    Ok(format!(
        "app {app}: {} connections over {}; replica start-up {startup}\n\n{}",
        trace.arrivals.len(),
        humantime::format_duration(Duration::from_secs(report.horizon.as_secs())),
        report.table()
    ))
}

fn read_traces(paths: &[PathBuf]) -> Result<Trace, Failure> {
    let mut text = String::new();
    for path in paths {
        let part =
            std::fs::read_to_string(path).map_err(|e| (exit::RUNTIME, format!("{}: {e}", path.display())))?;
        text.push_str(&part);
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    Trace::parse(&text).map_err(|e| (exit::CONFIG, format!("invalid trace: {e}")))
}

/// The app's policy from the configuration file if it exists (else the defaults), with `--set` laid over.
fn base_policy(config: &Path, app: &str, set: &[String]) -> Result<Policy, Failure> {
    let mut policy = if config.exists() {
        let loaded = tideway_config::load(config).map_err(|e| {
            (
                exit::CONFIG,
                format!("{}: {}", config.display(), crate::cli::error_chain(&e)),
            )
        })?;
        match loaded.apps.into_iter().find(|a| a.name == app) {
            Some(found) => found.policy,
            None => loaded.defaults,
        }
    } else {
        Policy::default()
    };
    for assignment in set {
        policy = with(&policy, assignment)?;
    }
    Ok(policy)
}

/// The base, then one candidate per value of each `--compare`.
fn candidates(base: &Policy, compare: &[String]) -> Result<Vec<Candidate>, Failure> {
    let mut candidates = vec![Candidate {
        label: "base".to_owned(),
        policy: base.clone(),
    }];
    for sweep in compare {
        let Some((key, values)) = sweep.split_once('=') else {
            return Err((
                exit::USAGE,
                format!("--compare {sweep:?}: expected KEY=VALUE[,VALUE...]"),
            ));
        };
        for value in values.split(',') {
            let label = format!("{}={}", key.trim(), value.trim());
            let policy = with(base, &label)?;
            candidates.push(Candidate { label, policy });
        }
    }
    Ok(candidates)
}

/// `policy` with one `key=value` laid over, held to the config file's rules. The value is read as TOML
/// (`10`, `true`), or as a string when it is not (`10s`).
fn with(policy: &Policy, assignment: &str) -> Result<Policy, Failure> {
    let Some((key, value)) = assignment.split_once('=') else {
        return Err((exit::USAGE, format!("{assignment:?}: expected KEY=VALUE")));
    };
    let (key, value) = (key.trim(), value.trim());
    let table: toml::Table = toml::from_str(&format!("{key} = {value}"))
        .or_else(|_| toml::from_str(&format!("{key} = {}", toml::Value::String(value.to_owned()))))
        .map_err(|e| (exit::USAGE, format!("{assignment:?}: {e}")))?;
    tideway_config::policy_update(policy, &table).map_err(|errors| {
        let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
        (exit::USAGE, problems.join("; "))
    })
}

fn startup(arg: &str, trace: &Trace) -> Result<Startup, Failure> {
    if arg == "observed" {
        let seen: Vec<Duration> = trace.cold_starts.iter().map(|(_, took)| *took).collect();
        return Ok(if seen.is_empty() {
            Startup::Fixed(DEFAULT_STARTUP)
        } else {
            Startup::Observed(seen)
        });
    }
    humantime::parse_duration(arg).map(Startup::Fixed).map_err(|e| {
        (
            exit::USAGE,
            format!("--startup {arg:?}: {e} (a duration, or `observed`)"),
        )
    })
}
