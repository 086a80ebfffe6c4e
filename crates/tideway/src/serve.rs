//! `tideway serve`: the runtime, the listeners, and shutdown on SIGTERM or SIGINT.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tideway_config::Config;
use tideway_proxy::{Proxy, RuntimeClock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::error_chain;
use crate::{apps, exit};

/// Loads the config, runs until a shutdown signal, drains, and returns the exit code.
pub(crate) fn run(path: &Path) -> ExitCode {
    let config = match tideway_config::load(path) {
        Ok(config) => config,
        Err(e) => {
            error!("{}: invalid configuration\n{}", path.display(), error_chain(&e));
            return ExitCode::from(exit::CONFIG);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.proxy.workers {
        runtime.worker_threads(workers);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let listener = match TcpListener::bind(config.proxy.listen)
        .await
        .with_context(|| format!("cannot listen on {} (proxy.listen)", config.proxy.listen))
    {
        Ok(listener) => listener,
        Err(e) => {
            error!("{e:#}");
            return ExitCode::from(exit::BIND);
        }
    };
    let clock = RuntimeClock::new();
    let shutdown = CancellationToken::new();
    let routes = apps::build(&config.apps, clock);
    info!(apps = config.apps.len(), "configuration loaded");
    let proxy = Proxy::new(config.proxy.clone(), routes, clock, shutdown.clone());
    tokio::spawn(watch_signals(shutdown));
    match proxy.serve(listener).await {
        Ok(true) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            warn!("stopped before every connection drained");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("proxy failed: {e}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}

/// First SIGTERM or SIGINT: drain and stop. A second one: stop at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        error!("cannot install signal handlers; stop tideway with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: draining"),
        _ = int.recv() => info!("SIGINT: draining"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: stopping without waiting for connections");
    std::process::exit(i32::from(exit::RUNTIME));
}
