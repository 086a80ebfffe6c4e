//! The per-app policy: the scaling keys (README, "Configuration"; `docs/glossary.md`) with their defaults
//! and the rules that tie them together.

use std::fmt;
use std::time::Duration;

use crate::affinity::Affinity;
use crate::balance::Balance;
use crate::headroom::Headroom;

/// Percent of `max_connections` at which an app wants another replica: 1–100.
///
/// A newtype so that a policy holding it is known to be valid; construct it with [`SpawnThreshold::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpawnThreshold(u8);

impl SpawnThreshold {
    /// The threshold, if `percent` is within 1–100.
    pub const fn new(percent: u8) -> Option<Self> {
        if percent >= 1 && percent <= 100 {
            Some(SpawnThreshold(percent))
        } else {
            None
        }
    }

    /// The threshold in percent.
    pub const fn percent(self) -> u8 {
        self.0
    }
}

impl fmt::Display for SpawnThreshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Everything tideway needs to know to admit, time out and scale one app's connections.
///
/// One struct for all these keys because they are read together on the hot path, swapped together on
/// reload, and validated together ([`Policy::problems`]) whether they come from the config file or the
/// admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Floor of non-draining replicas; 0 allows scale to zero.
    pub min_instances: u32,
    /// Ceiling of replicas, counting starting and draining ones.
    pub max_instances: u32,
    /// Hard per-replica admission limit.
    pub max_connections: u32,
    /// Occupancy at which the app wants more replicas.
    pub spawn_threshold: SpawnThreshold,
    /// Connections older than this are closed gracefully (with ±10% jitter); `None` = never.
    pub max_connection_age: Option<Duration>,
    /// Connections without application data for this long are closed gracefully; `None` = never.
    pub inactive_timeout: Option<Duration>,
    /// How long lower demand must persist before a scale-down.
    pub scale_down_delay: Duration,
    /// How long a starting replica may take to become ready, and how long a cold connection waits for it.
    pub startup_timeout: Duration,
    /// How long a connection waits in the queue for a seat before `503`.
    pub queue_timeout: Duration,
    /// How many connections may wait for a seat at once; beyond it, `503` at once.
    pub max_queued: u32,
    /// How long a draining replica (or a shutting-down tideway) waits for connections to finish.
    pub drain_timeout: Duration,
    /// After a graceful close starts (close frame, GOAWAY, `Connection: close`), how long until a hard close.
    pub close_grace: Duration,
    /// How a replica is chosen among those with room.
    pub balance: Balance,
    /// Whether a client's connections are tied together by a cookie.
    pub affinity: Affinity,
    /// How long a confirmed session keeps its replica and seat after its last connection closed.
    pub reconnect_grace: Duration,
    /// Most connections one session may have open at once on its seat; more wait in the session's queue.
    pub max_session_connections: u32,
    /// Longest pause between two reads of a request body before the request is given up with `408`: a
    /// client that announces a body and stalls must not hold its seat for ever.
    pub body_read_timeout: Duration,
    /// Longest a replica may keep a request waiting — no byte of its response and no byte of the request
    /// body read — before the exchange is given up (`504` if nothing was answered yet). Generous by
    /// default, since long polling answers late on purpose.
    pub response_timeout: Duration,
    /// Whether a request over plain HTTP is answered with a `308` to the same URL over HTTPS instead.
    pub redirect_https: bool,
    /// The `max-age` of the `Strict-Transport-Security` field sent with responses over HTTPS (never over
    /// plain HTTP, RFC 6797 §7.2); `None` = no such field.
    pub hsts_max_age: Option<Duration>,
    /// Whether the app keeps spare seats for the arrivals of one measured cold start.
    pub headroom: Headroom,
}

/// One reason a policy is invalid: the key at fault and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyProblem {
    /// The key at fault, as spelled in the config file.
    pub key: &'static str,
    /// What is wrong, phrased to follow "key: ".
    pub message: String,
}

impl Default for Policy {
    /// The defaults documented in the README's config reference.
    fn default() -> Self {
        Policy {
            min_instances: 0,
            max_instances: 5,
            max_connections: 20,
            spawn_threshold: SpawnThreshold(80),
            max_connection_age: None,
            inactive_timeout: None,
            scale_down_delay: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(60),
            queue_timeout: Duration::from_secs(30),
            max_queued: 100,
            drain_timeout: Duration::from_secs(300),
            close_grace: Duration::from_secs(5),
            balance: Balance::LeastConnections,
            affinity: Affinity::None,
            reconnect_grace: Duration::from_secs(30),
            max_session_connections: 32,
            body_read_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(300),
            redirect_https: false,
            hsts_max_age: None,
            headroom: Headroom::Off,
        }
    }
}

impl Policy {
    /// Every rule the keys break together or alone; empty when the policy is usable.
    ///
    /// Lives here, not in the config loader, so that a policy changed at run time is held to the same rules.
    pub fn problems(&self) -> Vec<PolicyProblem> {
        let mut problems = Vec::new();
        let mut problem = |key, message: String| problems.push(PolicyProblem { key, message });
        if self.max_instances < self.min_instances {
            problem(
                "max_instances",
                format!("must be >= min_instances ({})", self.min_instances),
            );
        }
        if self.max_instances == 0 {
            problem("max_instances", "must be at least 1".to_owned());
        }
        if self.max_connections == 0 {
            problem("max_connections", "must be at least 1".to_owned());
        }
        if self.max_session_connections == 0 {
            problem("max_session_connections", "must be at least 1".to_owned());
        }
        for (key, value) in [
            ("max_connection_age", self.max_connection_age),
            ("hsts_max_age", self.hsts_max_age),
            ("inactive_timeout", self.inactive_timeout),
        ] {
            if value == Some(Duration::ZERO) {
                problem(
                    key,
                    "must be longer than 0s (use \"off\" to turn it off)".to_owned(),
                );
            }
        }
        for (key, value) in [
            ("startup_timeout", self.startup_timeout),
            ("queue_timeout", self.queue_timeout),
            ("drain_timeout", self.drain_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if value.is_zero() {
                problem(key, "must be longer than 0s".to_owned());
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Policy::default().problems(), Vec::new());
    }

    #[test]
    fn spawn_threshold_bounds() {
        assert!(SpawnThreshold::new(0).is_none());
        assert_eq!(SpawnThreshold::new(1).map(SpawnThreshold::percent), Some(1));
        assert_eq!(SpawnThreshold::new(100).map(SpawnThreshold::percent), Some(100));
        assert!(SpawnThreshold::new(101).is_none());
    }

    #[test]
    fn max_below_min_is_named() {
        let policy = Policy {
            min_instances: 3,
            max_instances: 2,
            ..Policy::default()
        };
        let problems = policy.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "max_instances");
        assert_eq!(problems[0].message, "must be >= min_instances (3)");
    }

    #[test]
    fn zero_limits_are_rejected() {
        let policy = Policy {
            max_instances: 0,
            max_connections: 0,
            max_connection_age: Some(Duration::ZERO),
            inactive_timeout: Some(Duration::ZERO),
            startup_timeout: Duration::ZERO,
            queue_timeout: Duration::ZERO,
            drain_timeout: Duration::ZERO,
            body_read_timeout: Duration::ZERO,
            response_timeout: Duration::ZERO,
            ..Policy::default()
        };
        let keys: Vec<_> = policy.problems().iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "max_instances",
                "max_connections",
                "max_connection_age",
                "inactive_timeout",
                "startup_timeout",
                "queue_timeout",
                "drain_timeout",
                "body_read_timeout",
                "response_timeout"
            ]
        );
    }
}
