//! `tideway serve`: the runtime, the listener, the apps, reloads, and shutdown on SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tideway_cluster::{Cluster, ClusterMetrics};
use tideway_config::{ClusterSettings, Config, ConfigError, PortRef, ResourceScope};
use tideway_core::ReplicaState;
use tideway_orchestrate::kubernetes::{ApiServer, KubernetesMetrics, watch_endpoints};
use tideway_orchestrate::{Evict, ScalingMetrics};
use tideway_proxy::{Proxy, ProxyMetrics, RouteTable, RuntimeClock, TraceLog};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_appender::non_blocking::ErrorCounter;

use crate::admin::{self, serve_admin};
use crate::cli::error_chain;
use crate::cookie_keys::{self, KeySource};
use crate::fleet::{Fleet, FleetMetrics};
use crate::handover;
use crate::health::serve_metrics;
use crate::logging::Repeats;
use crate::reload::Reload;
use crate::resources::{self, Declared};
use crate::secret::load_secret;
use crate::{certificates, exit, reload};

/// Loads the config, runs until a shutdown signal, drains, and returns the exit code.
pub(crate) fn run(path: &Path, dropped_log_lines: ErrorCounter, repeats: Arc<Repeats>) -> ExitCode {
    let config = match tideway_config::load(path) {
        Ok(config) => config,
        Err(e) => {
            error!(config = %path.display(), problems = %error_chain(&e), "invalid configuration");
            return ExitCode::from(exit::CONFIG);
        }
    };
    warn_deprecated(&config);
    let supervisor = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            error!("cannot find the tideway executable to supervise replicas: {e}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    // One worker runs on the current-thread scheduler: it serves tasks strictly in the order they were
    // woken, where the multi-threaded one (built to steal work between threads) lets some jump the queue —
    // measured: a lower p99 at the same throughput (BENCHMARKS.md).
    let mut runtime = match config.proxy.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(workers);
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    runtime.block_on(async move {
        tokio::spawn(repeats.report());
        serve(path.to_owned(), config, supervisor, dropped_log_lines).await
    })
}

async fn serve(
    path: PathBuf,
    config: Config,
    supervisor: PathBuf,
    dropped_log_lines: ErrorCounter,
) -> ExitCode {
    let listeners = match Listeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(e) => {
            error!("{e:#}");
            return ExitCode::from(exit::BIND);
        }
    };
    let token = match config.admin.as_ref().map(admin::load_token).transpose() {
        Ok(token) => token.flatten(),
        Err(e) => {
            error!(problem = %error_chain(&e), "invalid configuration");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let (cookie_keys, _) = match cookie_keys::load(&config) {
        Ok(keys) => keys,
        Err(e) => {
            error!(problem = %error_chain(&e), "invalid configuration");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let tls_sources = certificates::sources(&config);
    let tls_loaded = match certificates::load(&tls_sources) {
        Ok(loaded) => loaded,
        Err(e) => {
            error!(problem = %error_chain(&e), "invalid configuration");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let clock = RuntimeClock::new();
    let shutdown = CancellationToken::new();
    let (registry, metrics) = match registry(dropped_log_lines) {
        Ok(both) => both,
        Err(e) => {
            error!("cannot set up metrics: {e}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    let proxy = Arc::new(Proxy::new(
        config.proxy.clone(),
        RouteTable::default(),
        cookie_keys,
        clock,
        Arc::clone(&metrics.proxy),
        shutdown.clone(),
    ));
    let trace = match &config.proxy.trace_log {
        Some(path) => {
            let dropped = metrics.proxy.trace_lines_dropped();
            match TraceLog::open(path, config.proxy.trace_log_max_bytes, dropped) {
                Ok(log) => {
                    proxy.set_trace_log(Arc::clone(&log));
                    let cold_starts = Arc::clone(&log);
                    metrics
                        .scaling
                        .observe_cold_starts(Arc::new(move |app, took| cold_starts.cold_start(app, took)));
                    info!(path = %path.display(), "writing the connection trace");
                    Some(log)
                }
                Err(e) => {
                    error!(path = %path.display(), problem = %e, "invalid configuration: proxy.trace_log cannot be written");
                    return ExitCode::from(exit::CONFIG);
                }
            }
        }
        None => None,
    };
    let evicting = Arc::clone(&proxy);
    let evict: Evict = Arc::new(move |replica| evicting.evict(replica));
    let mut fleet = Fleet::new(clock, supervisor, evict, metrics, config.kubernetes.clone());
    let resources_api = (config.kubernetes.tidewayapps != ResourceScope::Off).then(|| fleet.api().clone());
    let certificates =
        certificates::Watcher::start(Arc::clone(&proxy), resources_api, tls_sources, tls_loaded);
    let mut joined = None;
    if let (Some(settings), Some(listener)) = (&config.cluster, listeners.cluster) {
        match join_cluster(settings, listener, &registry, shutdown.clone()) {
            Ok(cluster) => {
                if let Some(service) = &settings.peer_service {
                    let port = settings
                        .peer_port
                        .clone()
                        .unwrap_or(PortRef::Number(settings.listen.port()));
                    let finding = find_peers(fleet.api().clone(), service.clone(), port, cluster.clone());
                    tokio::spawn(finding);
                }
                proxy.set_session_holders(Arc::new(handover::Peers(cluster.clone())));
                joined = Some(cluster.clone());
                fleet.share_with(cluster);
            }
            Err(e) => {
                error!(problem = %error_chain(e.as_ref()), "invalid configuration");
                return ExitCode::from(exit::CONFIG);
            }
        }
    }
    let mut declared = Declared::new();
    certificates.set_secrets(&declared.apply(&config, &proxy, &mut fleet));
    info!(apps = config.apps.len(), "configuration loaded");
    // Resource apps are read once the resources are listed: until then tideway is not ready.
    let mut listed = (config.kubernetes.tidewayapps != ResourceScope::Off).then(|| {
        let api = fleet.api().clone();
        let reporting = resources::report(
            api.clone(),
            config.kubernetes.clone(),
            fleet.view(),
            declared.resolution(),
        );
        tokio::spawn(reporting);
        resources::watch(&api, &config.kubernetes)
    });
    let ready = Arc::new(AtomicBool::new(listed.is_none()));
    if let Some(listener) = listeners.metrics {
        if let Err(e) = crate::metrics::register_apps(&registry, fleet.view()) {
            error!("cannot set up metrics: {e}");
            return ExitCode::from(exit::RUNTIME);
        }
        serve_metrics(
            listener,
            shutdown.clone(),
            registry,
            Arc::clone(&ready),
            fleet.view(),
        );
    }
    if let Some(listener) = listeners.admin {
        let served = admin::Served {
            fleet: fleet.view(),
            proxy: Arc::clone(&proxy),
            cluster: joined,
        };
        serve_admin(listener, shutdown.clone(), served, clock, token);
    }
    tokio::spawn(watch_signals(shutdown.clone(), Arc::clone(&ready)));

    let mut reloads = reload::watch(path.clone());
    let mut running = config;
    let served = {
        let serving = proxy.serve(listeners.proxy, listeners.tls);
        tokio::pin!(serving);
        loop {
            tokio::select! {
                served = &mut serving => break served,
                Some(reload) = reloads.recv() => {
                    if reload_config(&path, reload, &mut running, &proxy, &certificates) {
                        certificates.set_secrets(&declared.apply(&running, &proxy, &mut fleet));
                        info!(apps = running.apps.len(), "configuration reloaded");
                    }
                }
                Some(resources) = next_listing(listed.as_mut()) => {
                    declared.set_resources(resources);
                    certificates.set_secrets(&declared.apply(&running, &proxy, &mut fleet));
                    if !shutdown.is_cancelled() {
                        ready.store(true, Ordering::Release);
                    }
                }
            }
        }
    };
    fleet.shutdown().await;
    if let Some(trace) = trace {
        trace.flush();
    }
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

/// Takes part in the cluster `settings` describes: the peers' reports come to `listener`, this
/// instance's go to the peers.
fn join_cluster(
    settings: &ClusterSettings,
    listener: TcpListener,
    registry: &prometheus::Registry,
    shutdown: CancellationToken,
) -> Result<Cluster, Box<dyn std::error::Error + Send + Sync>> {
    let secret = load_secret(
        "cluster",
        "secret",
        settings.secret_file.as_deref(),
        settings.secret_env.as_deref(),
    )?
    .ok_or("cluster.secret_file: required")?;
    let secret: Arc<[u8]> = secret.into();
    let metrics = Arc::new(ClusterMetrics::register(registry)?);
    let identity = tideway_orchestrate::kubernetes::identity();
    Ok(Cluster::spawn(
        settings, &identity, secret, listener, metrics, shutdown,
    ))
}

/// Finds the other instances as the ready endpoints of `service` (`[cluster] peer_service`) in tideway's
/// namespace, on `port`, each time they change, and hands them to `cluster`; this instance's own
/// endpoint (its pod) is left out.
async fn find_peers(api: ApiServer, service: String, port: PortRef, cluster: Cluster) {
    use futures::StreamExt;
    let Ok(client) = api.client().await else {
        return;
    };
    let namespace = client.default_namespace().to_owned();
    let own = api.identity().to_owned();
    let metrics = Arc::clone(api.metrics());
    let mut endpoints = watch_endpoints(client, &namespace, &service, port, metrics).boxed();
    info!(%service, %namespace, "finding the other instances through their Service");
    while let Some(views) = endpoints.next().await {
        let peers = views
            .iter()
            .filter(|view| view.state == ReplicaState::Ready && view.name != own)
            .map(|view| view.addr)
            .collect();
        cluster.set_found(peers);
    }
}

/// The sockets tideway listens on, bound before anything else starts so a busy port fails fast.
struct Listeners {
    proxy: TcpListener,
    tls: Option<TcpListener>,
    metrics: Option<TcpListener>,
    admin: Option<TcpListener>,
    cluster: Option<TcpListener>,
}

impl Listeners {
    async fn bind(config: &Config) -> anyhow::Result<Self> {
        async fn bind(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ({key})"))
        }
        let proxy = bind(config.proxy.listen, "proxy.listen").await?;
        let tls = match config.proxy.tls_listen {
            Some(listen) => Some(bind(listen, "proxy.tls_listen").await?),
            None => None,
        };
        let metrics = match &config.metrics {
            Some(metrics) => Some(bind(metrics.listen, "metrics.listen").await?),
            None => None,
        };
        let admin = match &config.admin {
            Some(admin) => Some(bind(admin.listen, "admin.listen").await?),
            None => None,
        };
        let cluster = match &config.cluster {
            Some(cluster) => Some(bind(cluster.listen, "cluster.listen").await?),
            None => None,
        };
        for (name, listener) in [("metrics", &metrics), ("admin", &admin), ("cluster", &cluster)] {
            if let Some(listener) = listener {
                info!(listen = %listener.local_addr()?, "{name} listening");
            }
        }
        Ok(Listeners {
            proxy,
            tls,
            metrics,
            admin,
            cluster,
        })
    }
}

/// The process's metrics registry and the metric sets registered on it.
fn registry(dropped_log_lines: ErrorCounter) -> prometheus::Result<(prometheus::Registry, FleetMetrics)> {
    let registry = crate::metrics::registry(dropped_log_lines)?;
    let metrics = FleetMetrics {
        proxy: Arc::new(ProxyMetrics::register(&registry)?),
        scaling: Arc::new(ScalingMetrics::register(&registry)?),
        kubernetes: Arc::new(KubernetesMetrics::register(&registry)?),
    };
    Ok((registry, metrics))
}

/// Logs each key the file spells by an earlier name, with the name to use.
fn warn_deprecated(config: &Config) {
    for deprecated in &config.deprecations {
        warn!(key = %deprecated.path, "{}", deprecated.message);
    }
}

/// The resources of the next listing, once there is one.
async fn next_listing(listed: Option<&mut resources::Listed>) -> Option<Vec<Arc<kube::api::DynamicObject>>> {
    let listed = listed?;
    listed.changed().await.ok()?;
    listed.borrow_and_update().clone()
}

/// Takes the new content of the file at `path` as the running configuration if it is valid (`true`: its
/// apps are for the caller to apply); otherwise logs why and keeps the running one. A file without apps
/// that does not say `app = []` would retire every running app: it is refused as a file caught
/// half-written.
fn reload_config(
    path: &Path,
    reload: Reload,
    running: &mut Config,
    proxy: &Proxy,
    certificates: &certificates::Watcher,
) -> bool {
    let parsed = reload
        .text
        .map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })
        .and_then(|text| text.parse::<Config>());
    let rejected = |problems: &dyn std::fmt::Display| {
        error!(
            config = %path.display(),
            trigger = ?reload.trigger,
            problems = %problems,
            "new configuration rejected, the running one stays in force"
        );
        false
    };
    let config = match parsed {
        Ok(config) => config,
        Err(e) => return rejected(&error_chain(&e)),
    };
    if config.apps.is_empty() && !config.no_apps_declared && !running.apps.is_empty() {
        return rejected(
            &"the file has no [[app]]: it would retire every running app (write `app = []` to mean that)",
        );
    }
    let cookie_keys = match cookie_keys::load(&config) {
        Ok((keys, source)) => (source != KeySource::Random).then_some(keys),
        Err(e) => return rejected(&error_chain(&e)),
    };
    let tls_sources = certificates::sources(&config);
    let tls_loaded = match certificates::load(&tls_sources) {
        Ok(loaded) => loaded,
        Err(e) => return rejected(&error_chain(&e)),
    };
    warn_deprecated(&config);
    for (key, changed) in [
        ("proxy.listen", config.proxy.listen != running.proxy.listen),
        (
            "proxy.tls_listen",
            config.proxy.tls_listen != running.proxy.tls_listen,
        ),
        (
            "proxy.max_tls_handshakes",
            config.proxy.max_tls_handshakes != running.proxy.max_tls_handshakes,
        ),
        ("proxy.workers", config.proxy.workers != running.proxy.workers),
        (
            "proxy.trace_log",
            (&config.proxy.trace_log, config.proxy.trace_log_max_bytes)
                != (&running.proxy.trace_log, running.proxy.trace_log_max_bytes),
        ),
        ("metrics", config.metrics != running.metrics),
        ("admin", config.admin != running.admin),
        ("kubernetes", config.kubernetes != running.kubernetes),
        ("cluster", config.cluster != running.cluster),
    ] {
        if changed {
            warn!(key, "this change takes effect at the next restart");
        }
    }
    proxy.set_settings(config.proxy.clone());
    certificates.replace(tls_sources, tls_loaded);
    // Keys drawn at random are kept for the life of the process: new ones would orphan every cookie.
    if let Some(keys) = cookie_keys {
        proxy.set_cookie_keys(keys);
    }
    *running = config;
    true
}

/// First SIGTERM or SIGINT: no longer ready, drain and stop. A second one: stop at once.
async fn watch_signals(shutdown: CancellationToken, ready: Arc<AtomicBool>) {
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
    ready.store(false, Ordering::Release);
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: stopping without waiting for connections");
    std::process::exit(i32::from(exit::RUNTIME));
}
