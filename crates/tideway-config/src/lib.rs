//! The model of `tideway.toml`: parsed and validated into typed values.
//!
//! [`Config::from_str`](std::str::FromStr) is pure, so `tideway check`, reloads and tests share it; [`load`]
//! only adds reading the file. A file is checked as a whole: every bad field is reported at once, each with
//! its path (`app[2].max_instances: must be >= min_instances (3)`), so a user fixes a file in one round.
//!
//! The file is parsed into a [`toml::Table`] first (syntax errors carry line and column) and then walked
//! key by key, rather than deserialized with serde's derive, which stops at the first error.

mod app;
mod cluster;
mod cookie;
mod file;
mod host;
mod kubernetes;
mod listeners;
mod local;
mod policy;
mod tls;
mod values;
mod walk;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use app::{AppConfig, Backend};
pub use cluster::ClusterSettings;
pub use cookie::CookieSettings;
pub use file::read_app;
pub use host::HostPattern;
pub use kubernetes::{KubernetesSettings, KubernetesSpec, PortRef, ResourceScope};
pub use listeners::{AdminSettings, MetricsSettings, ProxySettings};
pub use local::{LocalSpec, Readiness};
pub use policy::{POLICY_KEYS, PolicyKey, policy_update};
pub use tls::{TlsFiles, TlsSource};

/// A whole, valid `tideway.toml`: what the binary wires up and what a reload swaps in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `[proxy]`: the client-facing listener and its limits.
    pub proxy: ProxySettings,
    /// `[metrics]`: the metrics and health listener; `None` = off.
    pub metrics: Option<MetricsSettings>,
    /// `[admin]`: the admin API listener; `None` = off.
    pub admin: Option<AdminSettings>,
    /// `[kubernetes]`: the leader election of Kubernetes mode (its defaults when absent).
    pub kubernetes: KubernetesSettings,
    /// `[cluster]`: the other tideway instances this one shares its counts with; `None` = alone.
    pub cluster: Option<ClusterSettings>,
    /// `[cookie]`: how affinity cookies are signed and how long they are honoured.
    pub cookie: CookieSettings,
    /// The policy apps start from: `Policy::default()` with `[proxy]`'s timeouts, overlaid with
    /// `[defaults]`; apps declared as resources fall back to it too.
    pub defaults: tideway_core::Policy,
    /// `[[app]]`, in file order; empty is allowed (every request then gets `404`).
    pub apps: Vec<AppConfig>,
    /// The file says `app = []`: it means to serve no apps. A reload to a file without apps that does not
    /// say so is taken for a file caught half-written and refused, since it would retire every app.
    pub no_apps_declared: bool,
    /// Keys spelled by an earlier name, each with the name to use: they work until the next release.
    pub deprecations: Vec<FieldError>,
}

/// Why a config could not be loaded: the one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file that was to be read.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML; the message names the line and column.
    #[error("{0}")]
    Syntax(String),
    /// The file is valid TOML but not a valid config; one entry per bad field, in file walk order.
    #[error("{}", lines(.0))]
    Invalid(Vec<FieldError>),
}

/// One bad field: where it is and what is wrong with it; displayed as `path: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// The field's path, e.g. `app[0].hosts[1]` or `proxy.listen` (indexes count from 0).
    pub path: String,
    /// What is wrong, phrased to follow "path: ".
    pub message: String,
}

/// `Result` with this crate's error.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

impl FromStr for Config {
    type Err = ConfigError;

    /// Parses and validates the text of a `tideway.toml`, without touching the file system.
    fn from_str(text: &str) -> Result<Self> {
        let table: toml::Table = text
            .parse()
            .map_err(|error: toml::de::Error| ConfigError::Syntax(error.to_string().trim_end().to_owned()))?;
        file::read(&table).map_err(ConfigError::Invalid)
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse()
}

/// One error per line.
fn lines(errors: &[FieldError]) -> impl fmt::Display + '_ {
    struct Lines<'a>(&'a [FieldError]);
    impl fmt::Display for Lines<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for (i, error) in self.0.iter().enumerate() {
                if i > 0 {
                    f.write_str("\n")?;
                }
                write!(f, "{error}")?;
            }
            Ok(())
        }
    }
    Lines(errors)
}

#[cfg(test)]
mod tests;
