//! `tideway serve`: the runtime, the listener, the apps, reloads, and shutdown on SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tideway_config::Config;
use tideway_orchestrate::Evict;
use tideway_proxy::{Proxy, RouteTable, RuntimeClock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::error_chain;
use crate::fleet::Fleet;
use crate::{exit, reload};

/// Loads the config, runs until a shutdown signal, drains, and returns the exit code.
pub(crate) fn run(path: &Path) -> ExitCode {
    let config = match tideway_config::load(path) {
        Ok(config) => config,
        Err(e) => {
            error!(config = %path.display(), problems = %error_chain(&e), "invalid configuration");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let supervisor = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            error!("cannot find the tideway executable to supervise replicas: {e}");
            return ExitCode::from(exit::RUNTIME);
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
    runtime.block_on(serve(path.to_owned(), config, supervisor))
}

async fn serve(path: PathBuf, config: Config, supervisor: PathBuf) -> ExitCode {
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
    let proxy = Arc::new(Proxy::new(
        config.proxy.clone(),
        RouteTable::default(),
        clock,
        shutdown.clone(),
    ));
    let evicting = Arc::clone(&proxy);
    let evict: Evict = Arc::new(move |replica| evicting.evict(replica));
    let mut fleet = Fleet::new(clock, supervisor, evict);
    proxy.set_routes(fleet.apply(&config.apps));
    info!(apps = config.apps.len(), "configuration loaded");
    tokio::spawn(watch_signals(shutdown));

    let mut reloads = reload::watch(path.clone());
    let mut running = config;
    let served = {
        let serving = proxy.serve(listener);
        tokio::pin!(serving);
        loop {
            tokio::select! {
                served = &mut serving => break served,
                Some(_) = reloads.recv() => reload_config(&path, &mut running, &proxy, &mut fleet),
            }
        }
    };
    fleet.shutdown().await;
    match served {
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

/// Applies the file at `path` if it is valid; otherwise logs why and keeps the running configuration.
fn reload_config(path: &Path, running: &mut Config, proxy: &Proxy, fleet: &mut Fleet) {
    let config = match tideway_config::load(path) {
        Ok(config) => config,
        Err(e) => {
            error!(
                config = %path.display(),
                problems = %error_chain(&e),
                "new configuration rejected, the running one stays in force"
            );
            return;
        }
    };
    for (key, changed) in [
        ("proxy.listen", config.proxy.listen != running.proxy.listen),
        ("proxy.workers", config.proxy.workers != running.proxy.workers),
        ("metrics", config.metrics != running.metrics),
        ("admin", config.admin != running.admin),
    ] {
        if changed {
            warn!(key, "this change takes effect at the next restart");
        }
    }
    proxy.set_settings(config.proxy.clone());
    proxy.set_routes(fleet.apply(&config.apps));
    info!(apps = config.apps.len(), "configuration reloaded");
    *running = config;
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
