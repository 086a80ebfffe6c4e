//! The `tideway` command: parses arguments, loads the config, wires the data plane to the orchestrators
//! and maps every outcome to a documented exit code.

mod admin;
mod certificates;
mod cli;
mod cookie_keys;
mod fleet;
mod handover;
mod health;
mod http;
mod logging;
mod metrics;
mod reload;
mod resources;
mod secret;
mod serve;
mod simulate;

use std::process::ExitCode;

/// mimalloc: measured faster than the system allocator on tideway's request path, and it gives freed memory
/// back to the system, so the memory of connections that went idle does not stay resident (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

use cli::{Cli, Command};

/// Exit codes, documented in the README.
mod exit {
    /// Configuration invalid or unreadable.
    pub(crate) const CONFIG: u8 = 2;
    /// A listener could not be bound.
    pub(crate) const BIND: u8 = 3;
    /// Command-line usage error.
    pub(crate) const USAGE: u8 = 64;
    /// Any other failure while running.
    pub(crate) const RUNTIME: u8 = 1;
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { exit::USAGE } else { 0 };
            // Printing help or a usage error to the terminal; nothing to do if that fails.
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match cli.command.unwrap_or_default() {
        Command::Check => check(&cli.config),
        Command::Crd => crd(),
        Command::Simulate(args) => simulate::run(&args, &cli.config),
        Command::Rbac => rbac(),
        Command::Serve => {
            let logging = logging::init(cli.log_format);
            serve::run(&cli.config, logging.dropped_lines(), logging.repeats())
        }
        Command::Supervise {
            stop_timeout,
            command,
        } => ExitCode::from(tideway_orchestrate::local::supervise(stop_timeout, &command)),
        Command::Exec { parent, command } => {
            ExitCode::from(tideway_orchestrate::local::exec(parent, &command))
        }
    }
}

/// `tideway crd`: the CRD generated from the `TidewayApp` type, so that what is installed is what the code
/// reads (`deploy/crd/tidewayapps.tideway.dev.yaml` is this output, checked by the tests).
fn crd() -> ExitCode {
    use kube::CustomResourceExt;
    match serde_saphyr::to_string(&tideway_orchestrate::kubernetes::TidewayApp::crd()) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot write the CRD: {error}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}

/// `tideway rbac`: the permission list Kubernetes mode runs with, as RBAC rules — one per resource with its
/// verbs — so that a Role is written from the code's own list (the Helm chart's is checked against it).
fn rbac() -> ExitCode {
    let mut rules: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for permission in tideway_orchestrate::kubernetes::PERMISSIONS {
        match rules
            .iter_mut()
            .find(|(group, resource, _)| (*group, *resource) == (permission.group, permission.resource))
        {
            Some((_, _, verbs)) => verbs.push(permission.verb),
            None => rules.push((permission.group, permission.resource, vec![permission.verb])),
        }
    }
    let rules: Vec<serde_json::Value> = rules
        .into_iter()
        .map(|(group, resource, verbs)| {
            serde_json::json!({ "apiGroups": [group], "resources": [resource], "verbs": verbs })
        })
        .collect();
    match serde_saphyr::to_string(&serde_json::json!({ "rules": rules })) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot write the rules: {error}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}

/// `tideway check`: validates the config and prints every problem, then loads every certificate it names.
fn check(path: &std::path::Path) -> ExitCode {
    match tideway_config::load(path) {
        Ok(config) => {
            if let Err(error) = certificates::load(&certificates::sources(&config)) {
                eprintln!("{}: invalid configuration", path.display());
                eprintln!("{}", cli::error_chain(&error));
                return ExitCode::from(exit::CONFIG);
            }
            println!("{}: ok ({} apps)", path.display(), config.apps.len());
            for deprecated in &config.deprecations {
                eprintln!("{}: warning: {deprecated}", path.display());
            }
            if config.apps.is_empty() && !config.no_apps_declared {
                eprintln!(
                    "{}: warning: no [[app]]: every request gets 404, and a reload to this file while apps \
                     run is refused (write `app = []` to mean no apps)",
                    path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: invalid configuration", path.display());
            eprintln!("{}", cli::error_chain(&error));
            ExitCode::from(exit::CONFIG)
        }
    }
}
