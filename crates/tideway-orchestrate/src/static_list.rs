//! The `static` backend: a fixed list of addresses, for apps managed elsewhere (and for tests).

use std::net::SocketAddr;
use std::sync::Arc;

use tideway_core::{Replica, ReplicaState, Timestamp};

/// One ready replica per address, in the order listed (the order `pack` fills), named `<app>-<n>` like a
/// local replica: the name is the `replica` label of the metrics, which show no configuration, so the
/// address appears only in the admin API.
///
/// Static replicas are never started or stopped by tideway, so they are ready from the start; an address
/// that does not answer is skipped by the data plane's connect-failure backoff instead.
pub fn static_replicas(app: &str, addresses: &[SocketAddr], now: Timestamp) -> Vec<Arc<Replica>> {
    addresses
        .iter()
        .zip(1..)
        .map(|(addr, n)| {
            Arc::new(Replica::new(
                format!("{app}-{n}"),
                *addr,
                ReplicaState::Ready,
                now,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ready_replica_per_address_in_order() {
        let addrs: Vec<SocketAddr> = vec![([127, 0, 0, 1], 9001).into(), ([127, 0, 0, 1], 9002).into()];
        let replicas = static_replicas("reports", &addrs, Timestamp::ZERO);
        let names: Vec<_> = replicas.iter().map(|r| r.name().to_owned()).collect();
        assert_eq!(names, ["reports-1", "reports-2"]);
        let listed: Vec<_> = replicas.iter().map(|r| r.addr()).collect();
        assert_eq!(listed, addrs);
        assert!(replicas.iter().all(|r| r.state() == ReplicaState::Ready));
    }
}
