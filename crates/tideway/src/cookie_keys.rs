//! The keys affinity cookies are signed with (`[cookie]`): read from their file or variable, derived from
//! `[cluster]`'s secret, or — for an instance alone — drawn at random.

use tideway_config::Config;
use tideway_proxy::{CookieKeys, KeyError};

use crate::secret::{SecretError, load_secret};

/// Why the cookie keys could not be had; reported as a configuration error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CookieKeyError {
    /// The keys' (or the cluster secret's) file or variable could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A key is unusable.
    #[error("{key}: {source}")]
    Key {
        /// The key naming where the keys come from.
        key: &'static str,
        /// What is wrong with them.
        #[source]
        source: KeyError,
    },
}

/// Where an instance's cookie keys come from, so that a reload knows whether to read them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// `[cookie] keys_file` or `keys_env`.
    Configured,
    /// Derived from `[cluster]`'s secret.
    Cluster,
    /// Drawn at random at start: kept for the life of the process.
    Random,
}

/// The cookie keys `config` calls for, and where they came from.
pub(crate) fn load(config: &Config) -> Result<(CookieKeys, KeySource), CookieKeyError> {
    let cookie = &config.cookie;
    let keys = load_secret(
        "cookie",
        "keys",
        cookie.keys_file.as_deref(),
        cookie.keys_env.as_deref(),
    )?;
    if let Some(keys) = keys {
        let text = String::from_utf8_lossy(&keys);
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'));
        let key = if cookie.keys_file.is_some() {
            "cookie.keys_file"
        } else {
            "cookie.keys_env"
        };
        let keys = CookieKeys::new(lines.map(str::as_bytes), cookie.max_age)
            .map_err(|source| CookieKeyError::Key { key, source })?;
        return Ok((keys, KeySource::Configured));
    }
    if let Some(cluster) = &config.cluster {
        let secret = load_secret(
            "cluster",
            "secret",
            cluster.secret_file.as_deref(),
            cluster.secret_env.as_deref(),
        )?;
        if let Some(secret) = secret {
            let keys =
                CookieKeys::derived(&secret, cookie.max_age).map_err(|source| CookieKeyError::Key {
                    key: "cluster.secret_file",
                    source,
                })?;
            return Ok((keys, KeySource::Cluster));
        }
    }
    let keys = CookieKeys::random(cookie.max_age).map_err(|source| CookieKeyError::Key {
        key: "cookie.keys_file",
        source,
    })?;
    Ok((keys, KeySource::Random))
}
