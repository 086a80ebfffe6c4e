//! Tideway's data plane: a reverse proxy that seats every connection on a replica under its app's
//! `max_connections`, queues what does not fit, closes what outlives its limits, and drains on shutdown.
//!
//! It knows apps only through [`tideway_core::App`] (policy, replicas, admission) and never where replicas
//! come from: orchestrators fill the replica sets, the binary wires both.
//!
//! `docs/architecture.md` follows a connection through its modules and says where each timeout is enforced.

mod app_link;
mod body;
mod broadcast;
mod claim;
mod client;
mod clock;
mod forward;
mod h1;
mod h2;
mod handler;
mod links;
mod message;
mod metrics;
mod queue;
mod record;
mod refusal;
mod routing;

mod sessions;
mod stall;
mod stream;
mod tls;
mod trace_log;
mod tunnel;
mod upstream;
mod watch;

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tideway_config::ProxySettings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use clock::RuntimeClock;
pub use metrics::ProxyMetrics;
pub use routing::{Route, RouteTable};
pub use sessions::{CookieKeys, KeyError, MIN_KEY_LEN, SessionHolders};
pub use tls::{Certificate, CertificateError, CertificateTable};
pub use trace_log::TraceLog;

use broadcast::Broadcast;
use links::Links;

/// Which peer of a proxied exchange or tunnel something came from or concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client.
    Client,
    /// The replica.
    Replica,
}

/// How long after the drain deadline shutdown waits for connections to take their last steps.
const DRAIN_SLACK: Duration = Duration::from_millis(100);

/// The proxy: one listener's worth of client connections over a swappable routing table.
pub struct Proxy {
    shared: Arc<Shared>,
}

/// What every connection of the proxy reads: settings, routes, the clock and the shutdown signal.
pub(crate) struct Shared {
    clock: RuntimeClock,
    settings: ArcSwap<ProxySettings>,
    routes: ArcSwap<RouteTable>,
    /// The keys affinity cookies are signed and checked with.
    cookie_keys: ArcSwap<CookieKeys>,
    /// The certificates TLS handshakes present; shared with the handshakes' resolver.
    certificates: Arc<ArcSwap<CertificateTable>>,
    /// The other instances, asked for the sessions clients bring back here; unset for a lone instance.
    session_holders: OnceLock<Arc<dyn SessionHolders>>,
    /// The connection trace, when `[proxy] trace_log` names one; set once, at start.
    trace: OnceLock<Arc<TraceLog>>,
    metrics: Arc<ProxyMetrics>,
    /// What the data plane keeps per app and per replica.
    links: Links,
    shutdown: CancellationToken,
    /// Raised once shutdown starts: every connection drains.
    draining: Arc<Broadcast>,
    tasks: TaskTracker,
}

impl Proxy {
    /// A proxy with `settings` routing by `routes`, signing affinity cookies with `cookie_keys`, recording
    /// into `metrics`; it drains and stops once `shutdown` is cancelled.
    pub fn new(
        settings: ProxySettings,
        routes: RouteTable,
        cookie_keys: CookieKeys,
        clock: RuntimeClock,
        metrics: Arc<ProxyMetrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Proxy {
            shared: Arc::new(Shared {
                clock,
                settings: ArcSwap::from_pointee(settings),
                routes: ArcSwap::from_pointee(routes),
                cookie_keys: ArcSwap::from_pointee(cookie_keys),
                certificates: Arc::default(),
                session_holders: OnceLock::new(),
                trace: OnceLock::new(),
                links: Links::new(Arc::clone(&metrics)),
                metrics,
                shutdown,
                draining: Arc::default(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Puts a new routing table in force for every later request; requests and tunnels already running
    /// keep the app they were routed to.
    pub fn set_routes(&self, routes: RouteTable) {
        self.shared.routes.store(Arc::new(routes));
    }

    /// Puts new listener settings in force for later connections (the listen address and worker count
    /// only change with a restart).
    pub fn set_settings(&self, settings: ProxySettings) {
        self.shared.settings.store(Arc::new(settings));
    }

    /// Puts new cookie keys in force for later requests (a rotation): cookies signed by a key that is no
    /// longer listed stop being honoured.
    pub fn set_cookie_keys(&self, keys: CookieKeys) {
        self.shared.cookie_keys.store(Arc::new(keys));
    }

    /// Puts `certificates` in force for later TLS handshakes; sessions already established keep theirs.
    pub fn set_certificates(&self, certificates: CertificateTable) {
        self.shared.metrics.set_certificates(&certificates);
        self.shared.certificates.store(Arc::new(certificates));
    }

    /// The certificates in force, with the hosts each serves: for the status page.
    pub fn certificates(&self) -> Arc<CertificateTable> {
        self.shared.certificates.load_full()
    }

    /// Has the proxy ask `holders` for each session a cookie brings here that this instance does not hold
    /// (`docs/glossary.md`, "handover"); set once, when the instance joins its peers.
    pub fn set_session_holders(&self, holders: Arc<dyn SessionHolders>) {
        if self.shared.session_holders.set(holders).is_err() {
            warn!("the instance's peers were set twice; the first stay");
        }
    }

    /// Writes a line per connection into `log` from now on (`[proxy] trace_log`); set once, at start.
    pub fn set_trace_log(&self, log: Arc<TraceLog>) {
        if self.shared.trace.set(log).is_err() {
            warn!("the trace log was set twice; the first stays");
        }
    }

    /// Closes the connections still open on `replica` the graceful way (tunnels get their close frames,
    /// reason `drain`): for a drain that ran out of time.
    pub fn evict(&self, replica: &tideway_core::Replica) {
        if let Some(link) = self.shared.links.existing_replica(replica.id()) {
            link.evicted().raise();
        }
    }

    /// Accepts client connections on `listener` (and TLS ones on `tls_listener`) until shutdown, then
    /// waits for them to drain: in-flight requests finish, tunnels get their close frames. Every
    /// connection ends by the longest `drain_timeout` (or `close_grace`) of any app; returns `false` if
    /// some were still open then.
    pub async fn serve(&self, listener: TcpListener, tls_listener: Option<TcpListener>) -> io::Result<bool> {
        let shared = &self.shared;
        info!(listen = %listener.local_addr()?, "proxy listening");
        if let Some(tls_listener) = tls_listener {
            let config = tls::server_config(Arc::clone(&shared.certificates)).map_err(io::Error::other)?;
            info!(listen = %tls_listener.local_addr()?, "TLS listening");
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            shared
                .tasks
                .spawn(tls::accept(Arc::clone(shared), tls_listener, acceptor));
        }
        loop {
            tokio::select! {
                () = shared.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        shared.tasks.spawn(h1::accept(Arc::clone(shared), stream, peer));
                    }
                    Err(error) => {
                        warn!(%error, "accept failed");
                        // Out of file descriptors or memory: give connections time to close instead
                        // of spinning on the same error.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        shared.draining.raise();
        shared.tasks.close();
        let limit = self.drain_limit();
        info!(open = shared.tasks.len(), limit = ?limit, "draining connections");
        let drained = tokio::time::timeout(limit, shared.tasks.wait()).await.is_ok();
        if !drained {
            warn!(
                open = shared.tasks.len(),
                "connections still open after the drain limit"
            );
        }
        Ok(drained)
    }

    fn drain_limit(&self) -> Duration {
        let routes = self.shared.routes.load();
        let default = tideway_core::Policy::default();
        let policies: Vec<_> = routes.apps().iter().map(|app| app.policy()).collect();
        let drain = policies
            .iter()
            .map(|p| p.drain_timeout)
            .max()
            .unwrap_or(default.drain_timeout);
        let grace = policies
            .iter()
            .map(|p| p.close_grace)
            .max()
            .unwrap_or(default.close_grace);
        // Each connection's own timer fires at that deadline; the slack covers its last steps.
        drain.max(grace).saturating_add(DRAIN_SLACK)
    }
}
