use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::replica::ReplicaState;
use crate::testing::ready_replicas;

fn replicas(n: usize) -> Vec<Arc<Replica>> {
    ready_replicas(n)
}

fn take(rs: &[Arc<Replica>], balance: Balance, max: u32, rotation: usize) -> Result<usize, NoSeat> {
    take_seat(rs, balance, max, Timestamp::ZERO, &[], rotation, true).map(|r| {
        rs.iter()
            .position(|x| x.id() == r.id())
            .expect("seat on a listed replica")
    })
}

#[test]
fn least_connections_spreads() {
    let rs = replicas(2);
    let picks: Vec<_> = (0..4)
        .map(|i| take(&rs, Balance::LeastConnections, 10, i).expect("room"))
        .collect();
    assert_eq!(rs[0].connections(), 2);
    assert_eq!(rs[1].connections(), 2);
    assert_eq!(picks.len(), 4);
}

#[test]
fn pack_fills_in_order() {
    let rs = replicas(3);
    for _ in 0..2 {
        assert_eq!(take(&rs, Balance::Pack, 2, 0), Ok(0));
    }
    assert_eq!(take(&rs, Balance::Pack, 2, 0), Ok(1));
    rs[0].release_seat();
    assert_eq!(take(&rs, Balance::Pack, 2, 0), Ok(0));
}

#[test]
fn a_leaving_replica_takes_connections_only_when_no_other_has_room() {
    for balance in [Balance::LeastConnections, Balance::Pack] {
        let rs = replicas(2);
        rs[0].set_leaving(true);
        // Emptier, and first in order: still passed over while the other has room.
        assert_eq!(take(&rs, balance, 2, 0), Ok(1), "{balance}");
        assert_eq!(take(&rs, balance, 2, 1), Ok(1), "{balance}");
        assert_eq!(take(&rs, balance, 2, 0), Ok(0), "{balance}: the other is full");
        rs[0].set_leaving(false);
        rs[1].release_seat();
        rs[1].release_seat();
        assert_eq!(
            take(&rs, balance, 2, 0),
            Ok(if balance == Balance::Pack { 0 } else { 1 }),
            "{balance}"
        );
    }
}

#[test]
fn full_and_missing_are_told_apart() {
    let rs = replicas(1);
    assert_eq!(take(&rs, Balance::LeastConnections, 1, 0), Ok(0));
    assert_eq!(take(&rs, Balance::LeastConnections, 1, 0), Err(NoSeat::Full));
    assert_eq!(take(&[], Balance::Pack, 1, 0), Err(NoSeat::NoReplica));
    rs[0].set_state(ReplicaState::Draining);
    assert_eq!(take(&rs, Balance::Pack, 5, 0), Err(NoSeat::NoReplica));
}

#[test]
fn starting_and_tried_replicas_are_skipped() {
    let rs = replicas(3);
    rs[0].set_state(ReplicaState::Starting);
    let tried = [rs[1].id()];
    let seat = take_seat(
        &rs,
        Balance::LeastConnections,
        5,
        Timestamp::ZERO,
        &tried,
        0,
        false,
    );
    assert_eq!(seat.map(|r| r.id()), Ok(rs[2].id()));
}

#[test]
fn unreachable_replicas_are_out_of_routing_until_their_backoff_ends() {
    let rs = replicas(2);
    rs[0].record_connect_failure(Timestamp::ZERO);
    for _ in 0..3 {
        assert_eq!(take(&rs, Balance::Pack, 5, 0), Ok(1));
    }
    // Though it is the least busy, and the last ready replica.
    rs[1].set_state(ReplicaState::Draining);
    assert_eq!(take(&rs, Balance::LeastConnections, 5, 0), Err(NoSeat::NoReplica));
    let later = Timestamp::ZERO.saturating_add(Duration::from_secs(60));
    rs[1].set_state(ReplicaState::Ready);
    let seat = take_seat(&rs, Balance::Pack, 5, later, &[], 0, false);
    assert_eq!(seat.map(|r| r.id()), Ok(rs[0].id()));
}

#[test]
fn balance_names_round_trip() {
    for b in [Balance::LeastConnections, Balance::Pack] {
        assert_eq!(b.as_str().parse::<Balance>(), Ok(b));
    }
    assert!("round-robin".parse::<Balance>().is_err());
}

proptest! {
    /// A leaving replica takes a connection only when every other replica is full; among the replicas
    /// of its kind, least-connections still takes the emptiest and pack the first with room.
    #[test]
    fn leaving_replicas_come_last(
        leaving in prop::collection::vec(any::<bool>(), 1..5),
        max in 1u32..5,
        ops in prop::collection::vec((any::<bool>(), 0usize..8, any::<bool>()), 1..150),
    ) {
        let rs = replicas(leaving.len());
        for (r, leaving) in rs.iter().zip(&leaving) {
            r.set_leaving(*leaving);
        }
        for (admit, which, pack) in ops {
            let balance = if pack { Balance::Pack } else { Balance::LeastConnections };
            if !admit {
                let r = &rs[which % rs.len()];
                if r.connections() > 0 {
                    r.release_seat();
                }
                continue;
            }
            let before: Vec<u32> = rs.iter().map(|r| r.connections()).collect();
            let Ok(i) = take(&rs, balance, max, which) else {
                prop_assert!(before.iter().all(|c| *c >= max));
                continue;
            };
            let kind: Vec<usize> = (0..rs.len()).filter(|&j| leaving[j] == leaving[i]).collect();
            if leaving[i] {
                prop_assert!((0..rs.len()).filter(|&j| !leaving[j]).all(|j| before[j] >= max));
            }
            match balance {
                Balance::LeastConnections => {
                    prop_assert!(kind.iter().all(|&j| before[i] <= before[j]));
                }
                Balance::Pack => {
                    prop_assert!(kind.iter().filter(|&&j| j < i).all(|&j| before[j] >= max));
                }
            }
        }
    }
}

proptest! {
    /// Whatever the order of admissions and releases, no replica ever holds more than `max`, and
    /// least-connections always seats on a replica with the fewest connections.
    #[test]
    fn seats_never_exceed_max(
        n in 1usize..5,
        max in 1u32..6,
        ops in prop::collection::vec((any::<bool>(), 0usize..8, any::<bool>()), 1..200),
    ) {
        let rs = replicas(n);
        for (admit, which, pack) in ops {
            let balance = if pack { Balance::Pack } else { Balance::LeastConnections };
            if admit {
                let before: Vec<u32> = rs.iter().map(|r| r.connections()).collect();
                match take(&rs, balance, max, which) {
                    Ok(i) => {
                        prop_assert!(before[i] < max);
                        match balance {
                            Balance::LeastConnections => {
                                prop_assert_eq!(before[i], *before.iter().min().expect("non-empty"));
                            }
                            Balance::Pack => {
                                prop_assert!(before[..i].iter().all(|c| *c >= max));
                            }
                        }
                    }
                    Err(e) => {
                        prop_assert_eq!(e, NoSeat::Full);
                        prop_assert!(before.iter().all(|c| *c >= max));
                    }
                }
            } else {
                let r = &rs[which % n];
                if r.connections() > 0 {
                    r.release_seat();
                }
            }
            prop_assert!(rs.iter().all(|r| r.connections() <= max));
        }
    }
}

#[test]
fn a_replica_another_instance_drains_takes_no_new_connection_here() {
    let rs = replicas(2);
    rs[0].set_drained_elsewhere(true);
    for _ in 0..3 {
        assert_eq!(take(&rs, Balance::Pack, 5, 0), Ok(1));
    }
    rs[1].set_drained_elsewhere(true);
    assert_eq!(take(&rs, Balance::Pack, 5, 0), Err(NoSeat::NoReplica));
    rs[0].set_drained_elsewhere(false);
    assert_eq!(take(&rs, Balance::LeastConnections, 5, 0), Ok(0));
}
