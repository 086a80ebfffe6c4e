//! The listener sections: `[proxy]`, `[metrics]` and `[admin]`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tideway_core::Policy;

use crate::tls::{TlsFiles, read_tls_files};
use crate::values::{boolean, file_path, integer_in, listen_address, nonzero_duration, string};
use crate::walk::{Errors, Section};

/// The `[proxy]` section: where clients connect and the limits every connection is held to.
///
/// Kept apart from the per-app [`tideway_core::Policy`] because these apply to the listener as a whole,
/// before a request is routed to any app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// Address the proxy listens on.
    pub listen: SocketAddr,
    /// Slow-header limit: from the first byte of a request head to its end.
    pub header_read_timeout: Duration,
    /// How long an idle client connection (no request in flight) is kept open.
    pub keepalive_timeout: Duration,
    /// How long a client may leave a response unread (tideway has bytes for it, its socket takes none)
    /// before the connection is dropped.
    pub send_timeout: Duration,
    /// Whether every request and closed connection is written to the access log (target
    /// `tideway::access`).
    pub access_log: bool,
    /// Largest request head accepted, in bytes; larger ones get `431`.
    pub max_header_bytes: usize,
    /// Most header fields accepted in one request head; more get `431`.
    pub max_headers: usize,
    /// How long connecting to a replica may take before it counts as failed.
    pub upstream_connect_timeout: Duration,
    /// Idle upstream connections kept per replica for reuse; 0 disables reuse.
    pub upstream_keepalive: usize,
    /// How long a replica connection is kept alive between requests before it is closed.
    pub upstream_keepalive_timeout: Duration,
    /// Runtime worker threads; `None` = one per CPU.
    pub workers: Option<usize>,
    /// The `body_read_timeout` of every app that does not set its own (in `[defaults]` or the app): a
    /// listener-wide limit, as nginx's `client_body_timeout` is.
    pub body_read_timeout: Duration,
    /// The `response_timeout` of every app that does not set its own, as nginx's `proxy_read_timeout` is.
    pub response_timeout: Duration,
    /// Address the HTTPS listener binds, if any.
    pub tls_listen: Option<SocketAddr>,
    /// The certificate presented to a client naming no app's host (or no host at all).
    pub tls: Option<TlsFiles>,
    /// The port clients reach HTTPS on, for the redirects of apps with `redirect_https`: `tls_listen`'s
    /// port unless set (set it when a load balancer maps another port to tideway's).
    pub https_port: Option<u16>,
    /// How long a client may take to complete its TLS handshake from the accept.
    pub tls_handshake_timeout: Duration,
    /// Most TLS handshakes in progress at once; more connections wait in the listen backlog.
    pub max_tls_handshakes: usize,
    /// Where the connection trace is written (`docs/trace-format.md`), for `tideway simulate`; `None` =
    /// no trace. Opt-in: it costs a line per connection.
    pub trace_log: Option<PathBuf>,
    /// Size at which the trace is rotated (to `trace_log.1`, keeping three).
    pub trace_log_max_bytes: u64,
}

/// The `[metrics]` section: the `/metrics`, `/healthz` and `/readyz` listener, on only when the section exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Address the metrics listener binds.
    pub listen: SocketAddr,
}

/// The `[admin]` section: the admin API listener, on only when the section exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// Address the admin listener binds; loopback unless a token protects it.
    pub listen: SocketAddr,
    /// File holding the bearer token the admin API requires. A relative path is taken relative to
    /// tideway's working directory.
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token, for platforms that inject secrets that way. One of
    /// `token_file` and `token_env` is required when `listen` is not loopback.
    pub token_env: Option<String>,
}

impl Default for ProxySettings {
    /// The defaults documented in the README's config reference.
    fn default() -> Self {
        ProxySettings {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080)),
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            access_log: true,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_keepalive: 1024,
            upstream_keepalive_timeout: Duration::from_secs(60),
            workers: None,
            body_read_timeout: Policy::default().body_read_timeout,
            response_timeout: Policy::default().response_timeout,
            tls_listen: None,
            tls: None,
            https_port: None,
            tls_handshake_timeout: Duration::from_secs(10),
            max_tls_handshakes: 256,
            trace_log: None,
            trace_log_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl ProxySettings {
    /// Reads `[proxy]`; missing keys keep their defaults.
    pub(crate) fn read(mut section: Section<'_>, errors: &mut Errors) -> Self {
        let mut proxy = ProxySettings::default();
        let s = &mut section;
        if let Some(v) = s.get("listen", errors, listen_address) {
            proxy.listen = v;
        }
        if let Some(v) = s.get("header_read_timeout", errors, nonzero_duration) {
            proxy.header_read_timeout = v;
        }
        if let Some(v) = s.get("keepalive_timeout", errors, nonzero_duration) {
            proxy.keepalive_timeout = v;
        }
        if let Some(v) = s.get("send_timeout", errors, nonzero_duration) {
            proxy.send_timeout = v;
        }
        if let Some(v) = s.get("access_log", errors, boolean) {
            proxy.access_log = v;
        }
        if let Some(v) = s.get("max_header_bytes", errors, |v| integer_in(v, 1024, 1_048_576)) {
            proxy.max_header_bytes = v;
        }
        if let Some(v) = s.get("max_headers", errors, |v| integer_in(v, 1, 1000)) {
            proxy.max_headers = v;
        }
        if let Some(v) = s.get("upstream_connect_timeout", errors, nonzero_duration) {
            proxy.upstream_connect_timeout = v;
        }
        if let Some(v) = s.get("upstream_keepalive", errors, |v| {
            integer_in(v, 0, u32::MAX.into())
        }) {
            proxy.upstream_keepalive = v;
        }
        let keepalive_timeout = s.spelling(
            "upstream_keepalive_timeout",
            Some("upstream_idle_timeout"),
            errors,
        );
        if let Some(v) = keepalive_timeout.and_then(|key| s.get(key, errors, nonzero_duration)) {
            proxy.upstream_keepalive_timeout = v;
        }
        proxy.workers = s.get("workers", errors, |v| integer_in(v, 1, i64::MAX));
        if let Some(v) = s.get("body_read_timeout", errors, nonzero_duration) {
            proxy.body_read_timeout = v;
        }
        if let Some(v) = s.get("response_timeout", errors, nonzero_duration) {
            proxy.response_timeout = v;
        }
        proxy.tls_listen = s.get("tls_listen", errors, listen_address);
        proxy.tls = read_tls_files(s, errors);
        proxy.https_port = s.get("https_port", errors, |v| integer_in(v, 1, 65_535));
        if let Some(v) = s.get("tls_handshake_timeout", errors, nonzero_duration) {
            proxy.tls_handshake_timeout = v;
        }
        if let Some(v) = s.get("max_tls_handshakes", errors, |v| integer_in(v, 1, 1_000_000)) {
            proxy.max_tls_handshakes = v;
        }
        proxy.trace_log = s.get("trace_log", errors, file_path);
        if let Some(v) = s.get("trace_log_max_bytes", errors, |v| integer_in(v, 65_536, i64::MAX)) {
            proxy.trace_log_max_bytes = v;
        }
        section.finish(errors);
        proxy
    }

    /// The port `redirect_https` sends clients to.
    pub fn https_port(&self) -> u16 {
        self.https_port
            .or(self.tls_listen.map(|listen| listen.port()))
            .unwrap_or(443)
    }

    /// The policy an app starts from before `[defaults]` and its own keys: the defaults, with the
    /// listener-wide timeouts of this section.
    pub fn base_policy(&self) -> Policy {
        Policy {
            body_read_timeout: self.body_read_timeout,
            response_timeout: self.response_timeout,
            ..Policy::default()
        }
    }
}

impl MetricsSettings {
    /// Where the metrics listener binds when `[metrics]` has no `listen`.
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9090);

    /// Reads `[metrics]`.
    pub(crate) fn read(mut section: Section<'_>, errors: &mut Errors) -> Self {
        let listen = section
            .get("listen", errors, listen_address)
            .unwrap_or(Self::DEFAULT_LISTEN);
        section.finish(errors);
        MetricsSettings { listen }
    }
}

impl Default for MetricsSettings {
    /// The listener an empty `[metrics]` section turns on.
    fn default() -> Self {
        MetricsSettings {
            listen: Self::DEFAULT_LISTEN,
        }
    }
}

impl AdminSettings {
    /// Where the admin listener binds when `[admin]` has no `listen`.
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9091);

    /// Reads `[admin]`, requiring a token file when the listener is reachable from other hosts.
    pub(crate) fn read(mut section: Section<'_>, errors: &mut Errors) -> Self {
        let listen_given = section.contains("listen");
        let listen = section.get("listen", errors, listen_address);
        let (token_file, token_env) = secret_source(&mut section, errors, "token");
        let (token_given, env_given) = (section.contains("token_file"), section.contains("token_env"));
        let listen_is_valid = listen.is_some() || !listen_given;
        let listen = listen.unwrap_or(Self::DEFAULT_LISTEN);
        if listen_is_valid && !token_given && !env_given && !listen.ip().is_loopback() {
            errors.push(
                section.key_path("token_file"),
                "required (or token_env) when admin.listen is not a loopback address",
            );
        }
        section.finish(errors);
        AdminSettings {
            listen,
            token_file,
            token_env,
        }
    }
}

impl Default for AdminSettings {
    /// The listener an empty `[admin]` section turns on: loopback, no token.
    fn default() -> Self {
        AdminSettings {
            listen: Self::DEFAULT_LISTEN,
            token_file: None,
            token_env: None,
        }
    }
}

/// Reads a secret's source: `{name}_file` (a file holding it) or `{name}_env` (an environment variable
/// holding it), not both.
pub(crate) fn secret_source(
    section: &mut Section<'_>,
    errors: &mut Errors,
    name: &str,
) -> (Option<PathBuf>, Option<String>) {
    let (file_key, env_key) = (format!("{name}_file"), format!("{name}_env"));
    let file = section.get(&file_key, errors, file_path);
    let env = section.get(&env_key, errors, |v| {
        let name = string(v)?;
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err("must be an environment variable name".to_owned());
        }
        Ok(name.to_owned())
    });
    if section.contains(&file_key) && section.contains(&env_key) {
        errors.push(
            section.key_path(&env_key),
            format!("give either {file_key} or {env_key}, not both"),
        );
    }
    (file, env)
}

/// Whether two listeners would fight over one port: same non-zero port and the same IP, or either
/// listening on all addresses.
pub(crate) fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
