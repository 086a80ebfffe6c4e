//! `[cookie]`: the keys that sign affinity cookies, and how long a cookie stays good.

use std::path::PathBuf;
use std::time::Duration;

use crate::listeners::secret_source;
use crate::values::nonzero_duration;
use crate::walk::{Errors, Section};

/// `[cookie]`: how affinity cookies are signed, so that any instance — and this one after a restart —
/// trusts the replica a cookie names, and nobody can write one that piles clients onto one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieSettings {
    /// File holding the signing keys, one per line: the first signs, every one is accepted (rotation:
    /// add the new key first, drop the old one once its cookies have expired).
    pub keys_file: Option<PathBuf>,
    /// Environment variable holding the keys, in the same form (a Kubernetes Secret injected as one).
    /// Without either, the key is derived from `[cluster]`'s secret, or drawn at random by an instance
    /// alone.
    pub keys_env: Option<String>,
    /// How long a cookie is honoured after it was written; it is written again when a request presents
    /// one past half of it.
    pub max_age: Duration,
}

impl CookieSettings {
    /// A day: a browser session reconnecting after a night is placed anew, and a cookie copied off a
    /// client is worthless the next day.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

    /// Reads `[cookie]`.
    pub(crate) fn read(mut section: Section<'_>, errors: &mut Errors) -> Self {
        let (keys_file, keys_env) = secret_source(&mut section, errors, "keys");
        let max_age = section.get("max_age", errors, nonzero_duration);
        section.finish(errors);
        CookieSettings {
            keys_file,
            keys_env,
            max_age: max_age.unwrap_or(Self::DEFAULT_MAX_AGE),
        }
    }
}

impl Default for CookieSettings {
    fn default() -> Self {
        CookieSettings {
            keys_file: None,
            keys_env: None,
            max_age: Self::DEFAULT_MAX_AGE,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::Config;
    use crate::tests::errors;

    #[test]
    fn cookie_keys_come_from_a_file_or_a_variable() {
        let config: Config = "".parse().expect("an empty file");
        assert_eq!(config.cookie.max_age, Duration::from_secs(86_400));
        let config: Config = "[cookie]\nkeys_env = \"TIDEWAY_COOKIE_KEYS\"\nmax_age = \"2h\""
            .parse()
            .expect("a valid file");
        assert_eq!(config.cookie.keys_env.as_deref(), Some("TIDEWAY_COOKIE_KEYS"));
        assert_eq!(config.cookie.max_age, Duration::from_secs(7_200));
        assert_eq!(
            errors("[cookie]\nkeys_file = \"k\"\nkeys_env = \"K\"\nmax_age = \"0s\"\nkey = 1"),
            [
                "cookie.keys_env: give either keys_file or keys_env, not both",
                "cookie.max_age: must be longer than 0s",
                "cookie.key: unknown key",
            ]
        );
    }
}
