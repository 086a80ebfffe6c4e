//! An app's replicas as the EndpointSlices of its Service say: a replica per endpoint, named after its
//! pod, at the endpoint's address and the Service port's target — ready while the endpoint is ready,
//! starting before, draining once it terminates (its open connections go on; it gets no new ones), gone
//! with the endpoint.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use tideway_config::PortRef;
use tideway_core::{Replica, ReplicaId, ReplicaState, Timestamp};

/// One endpoint, as the slices say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointView {
    /// The pod behind it (`targetRef`), else its address: the `replica` label.
    pub name: String,
    /// Where it takes connections.
    pub addr: SocketAddr,
    /// Its state for routing.
    pub state: ReplicaState,
}

/// The endpoints of `slices` on `port`, one per pod (the first address of each). Endpoints without an
/// address or without the port are left out: nothing could be sent to them.
pub fn endpoints(slices: &[EndpointSlice], port: &PortRef) -> Vec<EndpointView> {
    let mut found = BTreeMap::new();
    for slice in slices {
        let number = slice.ports.iter().flatten().find_map(|p| {
            let matches = match port {
                PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
                PortRef::Number(n) => p.port == Some(i32::from(*n)),
            };
            matches.then_some(p.port).flatten()
        });
        let Some(number) = number.and_then(|n| u16::try_from(n).ok()) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some(ip) = endpoint.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let conditions = endpoint.conditions.as_ref();
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            // An endpoint with no word on readiness is ready (the API's own default).
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let state = if terminating {
                ReplicaState::Draining
            } else if ready {
                ReplicaState::Ready
            } else {
                ReplicaState::Starting
            };
            let name = endpoint
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_else(|| ip.to_string());
            found.insert(
                name.clone(),
                EndpointView {
                    name,
                    addr: SocketAddr::new(ip, number),
                    state,
                },
            );
        }
    }
    found.into_values().collect()
}

/// What changed among an app's endpoints, for its scaling loop, which alone changes replica states.
#[derive(Debug)]
pub enum EndpointChange {
    /// A pod's endpoint appeared: its replica, starting.
    Appeared(Arc<Replica>),
    /// The pod's endpoint turned ready.
    Ready(ReplicaId),
    /// The pod's endpoint, ready before, turned not ready.
    Unready(ReplicaId),
    /// The pod is terminating: its endpoint stays listed until the pod is gone.
    Terminating(Arc<Replica>),
    /// The pod's endpoint is gone (or moved to another address, which is another replica).
    Gone(Arc<Replica>),
}

/// The replicas of one app's endpoints, kept from one look at the slices to the next so that a pod's
/// replica — and the connections counted on it — stays the same object while the pod lives.
#[derive(Default)]
pub struct EndpointReplicas {
    by_name: BTreeMap<String, Known>,
}

struct Known {
    replica: Arc<Replica>,
    /// The state last told: a change is told once.
    told: ReplicaState,
}

impl EndpointReplicas {
    /// What changed since the last look, given the endpoints `views` now: each change of an endpoint's
    /// state is told once, and a terminating endpoint stays so until it is gone.
    pub fn apply(&mut self, views: &[EndpointView], now: Timestamp) -> Vec<EndpointChange> {
        let mut changes = Vec::new();
        let mut next = BTreeMap::new();
        for view in views {
            let known = match self.by_name.remove(&view.name) {
                Some(known) if known.replica.addr() == view.addr => known,
                moved => {
                    if let Some(old) = moved {
                        changes.push(EndpointChange::Gone(old.replica));
                    }
                    let replica = Arc::new(Replica::new(
                        view.name.clone(),
                        view.addr,
                        ReplicaState::Starting,
                        now,
                    ));
                    changes.push(EndpointChange::Appeared(Arc::clone(&replica)));
                    Known {
                        replica,
                        told: ReplicaState::Starting,
                    }
                }
            };
            let id = known.replica.id();
            let change = match (known.told, view.state) {
                (ReplicaState::Draining, _) => None,
                (told, state) if told == state => None,
                (_, ReplicaState::Ready) => Some(EndpointChange::Ready(id)),
                (_, ReplicaState::Starting) => Some(EndpointChange::Unready(id)),
                (_, ReplicaState::Draining) => Some(EndpointChange::Terminating(Arc::clone(&known.replica))),
            };
            changes.extend(change);
            next.insert(
                view.name.clone(),
                Known {
                    told: view.state,
                    ..known
                },
            );
        }
        changes.extend(
            std::mem::take(&mut self.by_name)
                .into_values()
                .map(|k| EndpointChange::Gone(k.replica)),
        );
        self.by_name = next;
        changes
    }

    /// Forgets the pod `name`: the next look sees it as a new replica.
    pub fn forget(&mut self, name: &str) -> Option<Arc<Replica>> {
        self.by_name.remove(name).map(|known| known.replica)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    use super::*;

    fn endpoint(pod: &str, ip: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_owned()],
            conditions: Some(EndpointConditions {
                ready,
                serving: None,
                terminating,
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.to_owned()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(vec![
                EndpointPort {
                    name: Some("metrics".into()),
                    port: Some(9090),
                    ..EndpointPort::default()
                },
                EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    ..EndpointPort::default()
                },
            ]),
            ..EndpointSlice::default()
        }
    }

    #[test]
    fn endpoints_are_read_by_port_name_or_number_with_their_readiness() {
        let slices = [slice(vec![
            endpoint("a", "10.0.0.1", Some(true), Some(false)),
            endpoint("b", "10.0.0.2", Some(false), None),
            endpoint("c", "fd00::3", Some(false), Some(true)),
            endpoint("d", "10.0.0.4", None, None),
        ])];
        let by_name = endpoints(&slices, &PortRef::Name("http".into()));
        let seen: Vec<(&str, String, ReplicaState)> = by_name
            .iter()
            .map(|e| (e.name.as_str(), e.addr.to_string(), e.state))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", "10.0.0.1:8080".to_owned(), ReplicaState::Ready),
                ("b", "10.0.0.2:8080".to_owned(), ReplicaState::Starting),
                ("c", "[fd00::3]:8080".to_owned(), ReplicaState::Draining),
                ("d", "10.0.0.4:8080".to_owned(), ReplicaState::Ready),
            ]
        );
        assert_eq!(endpoints(&slices, &PortRef::Number(9090))[0].addr.port(), 9090);
        assert!(endpoints(&slices, &PortRef::Name("grpc".into())).is_empty());
    }

    #[test]
    fn a_pods_replica_appears_turns_ready_once_and_goes_with_its_endpoint() {
        let mut replicas = EndpointReplicas::default();
        let view = |state| EndpointView {
            name: "a".into(),
            addr: "10.0.0.1:8080".parse().expect("an address"),
            state,
        };
        let changes = replicas.apply(&[view(ReplicaState::Starting)], Timestamp::ZERO);
        let [EndpointChange::Appeared(replica)] = changes.as_slice() else {
            panic!("{changes:?}");
        };
        assert_eq!(
            replica.state(),
            ReplicaState::Starting,
            "its scaling loop makes it ready"
        );
        let changes = replicas.apply(&[view(ReplicaState::Ready)], Timestamp::ZERO);
        assert!(matches!(changes.as_slice(), [EndpointChange::Ready(id)] if *id == replica.id()));
        assert!(
            replicas
                .apply(&[view(ReplicaState::Ready)], Timestamp::ZERO)
                .is_empty(),
            "told once"
        );
        let changes = replicas.apply(&[view(ReplicaState::Starting)], Timestamp::ZERO);
        assert!(matches!(changes.as_slice(), [EndpointChange::Unready(id)] if *id == replica.id()));
        let changes = replicas.apply(&[view(ReplicaState::Ready)], Timestamp::ZERO);
        assert!(matches!(changes.as_slice(), [EndpointChange::Ready(id)] if *id == replica.id()));
        let changes = replicas.apply(&[view(ReplicaState::Draining)], Timestamp::ZERO);
        assert!(
            matches!(changes.as_slice(), [EndpointChange::Terminating(going)] if Arc::ptr_eq(going, replica))
        );
        assert!(
            replicas
                .apply(&[view(ReplicaState::Ready)], Timestamp::ZERO)
                .is_empty(),
            "a terminating pod does not come back"
        );
        let moved = EndpointView {
            addr: "10.0.0.9:8080".parse().expect("an address"),
            ..view(ReplicaState::Ready)
        };
        let changes = replicas.apply(&[moved], Timestamp::ZERO);
        assert!(
            matches!(changes.as_slice(), [EndpointChange::Gone(old), EndpointChange::Appeared(new), EndpointChange::Ready(_)] if Arc::ptr_eq(old, replica) && !Arc::ptr_eq(new, replica)),
            "a new address is a new replica: {changes:?}"
        );
        assert!(matches!(
            replicas.apply(&[], Timestamp::ZERO).as_slice(),
            [EndpointChange::Gone(_)]
        ));
    }
}
