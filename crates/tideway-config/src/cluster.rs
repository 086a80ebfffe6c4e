//! `[cluster]`: several tideway instances acting as one — where each listens for its peers, who they are,
//! the secret they share, and how often they speak.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::Value;

use crate::PortRef;
use crate::kubernetes::{port, service_name};
use crate::listeners::secret_source;
use crate::values::{expected, listen_address, nonzero_duration, string, upstream_address};
use crate::walk::{Errors, Section};

/// `[cluster]`, on only when the section exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The internal listener peers send their counts to.
    pub listen: SocketAddr,
    /// The other instances' internal listeners, as listed.
    pub peers: Vec<SocketAddr>,
    /// On Kubernetes, the (headless) Service in tideway's namespace whose ready endpoints are the
    /// instances, found through its EndpointSlices.
    pub peer_service: Option<String>,
    /// The port of `peer_service` that carries the internal listener: its name, or its number; by
    /// default the number `listen` binds.
    pub peer_port: Option<PortRef>,
    /// File holding the secret every instance presents.
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding it (a Kubernetes Secret mounted as one). One of the two is required.
    pub secret_env: Option<String>,
    /// How often an instance reports its counts when they do not change.
    pub heartbeat: Duration,
    /// How long a peer's last report counts without a new one: then the peer is taken for gone.
    pub peer_timeout: Duration,
}

impl ClusterSettings {
    /// A heartbeat a second: a dead peer's counts go within `peer_timeout`, and a quiet instance costs
    /// each peer one small request a second.
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
    /// Three heartbeats: one lost report does not make a live peer look gone.
    pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(3);

    /// Reads `[cluster]`.
    pub(crate) fn read(mut section: Section<'_>, errors: &mut Errors) -> Option<Self> {
        let listen = section.required("listen", errors, listen_address);
        let peers = section.get("peers", errors, peers).unwrap_or_default();
        let peer_service = section.get("peer_service", errors, |v| service_name(string(v)?));
        let peer_port = section.get("peer_port", errors, port);
        let (secret_file, secret_env) = secret_source(&mut section, errors, "secret");
        if !section.contains("secret_file") && !section.contains("secret_env") {
            errors.push(
                section.key_path("secret_file"),
                "required (or secret_env): peers share a secret, and a request without it gets nothing",
            );
        }
        let heartbeat = section.get("heartbeat", errors, nonzero_duration);
        let peer_timeout = section.get("peer_timeout", errors, nonzero_duration);
        let heartbeat = heartbeat.unwrap_or(Self::DEFAULT_HEARTBEAT);
        let peer_timeout = peer_timeout.unwrap_or(Self::DEFAULT_PEER_TIMEOUT);
        if peer_timeout <= heartbeat {
            errors.push(
                section.key_path("peer_timeout"),
                format!(
                    "peer_timeout ({}) must be longer than heartbeat ({}), or a live peer looks gone between two reports",
                    humantime::format_duration(peer_timeout),
                    humantime::format_duration(heartbeat)
                ),
            );
        }
        section.finish(errors);
        Some(ClusterSettings {
            listen: listen?,
            peers,
            peer_service,
            peer_port,
            secret_file,
            secret_env,
            heartbeat,
            peer_timeout,
        })
    }
}

/// `peers`: a list of `ip:port`, without duplicates.
fn peers(value: &Value) -> Result<Vec<SocketAddr>, String> {
    let Value::Array(items) = value else {
        return Err(expected(r#"expected a list of "ip:port""#, value));
    };
    let mut peers = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let peer = upstream_address(item).map_err(|message| format!("[{i}]: {message}"))?;
        if let Some(first) = peers.iter().position(|p| *p == peer) {
            return Err(format!("[{i}]: duplicate of peers[{first}]"));
        }
        peers.push(peer);
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::Config;
    use crate::tests::errors;

    #[test]
    fn a_cluster_needs_a_listener_and_a_secret() {
        let config: Config = "".parse().expect("an empty file");
        assert_eq!(config.cluster, None);
        let config: Config = "[cluster]\nlisten = \"127.0.0.1:7946\"\npeers = [\"127.0.0.1:7947\", \"127.0.0.1:7948\"]\nsecret_env = \"TIDEWAY_CLUSTER_SECRET\""
            .parse()
            .expect("a valid file");
        let cluster = config.cluster.expect("[cluster]");
        assert_eq!(cluster.peers.len(), 2);
        assert_eq!((cluster.peer_service, cluster.peer_port), (None, None));
        assert_eq!(cluster.secret_env.as_deref(), Some("TIDEWAY_CLUSTER_SECRET"));
        assert_eq!(
            (cluster.heartbeat, cluster.peer_timeout),
            (Duration::from_secs(1), Duration::from_secs(3))
        );
        let config: Config = "[cluster]\nlisten = \"0.0.0.0:7946\"\npeer_service = \"tideway-peers\"\npeer_port = \"cluster\"\nsecret_file = \"/run/secret\""
            .parse()
            .expect("a valid file");
        let cluster = config.cluster.expect("[cluster]");
        assert_eq!(cluster.peer_service.as_deref(), Some("tideway-peers"));
        assert_eq!(cluster.peer_port, Some(crate::PortRef::Name("cluster".into())));
        assert_eq!(
            errors("[cluster]\npeers = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\nheartbeat = \"5s\""),
            [
                "cluster.listen: required",
                "cluster.peers: [1]: duplicate of peers[0]",
                "cluster.secret_file: required (or secret_env): peers share a secret, and a request without it gets nothing",
                "cluster.peer_timeout: peer_timeout (3s) must be longer than heartbeat (5s), or a live peer looks gone between two reports",
            ]
        );
        assert_eq!(
            errors(
                "[proxy]\nlisten = \"127.0.0.1:8080\"\n[cluster]\nlisten = \"127.0.0.1:8080\"\nsecret_file = \"/run/secret\""
            ),
            ["cluster.listen: conflicts with proxy.listen (127.0.0.1:8080)"]
        );
    }
}
