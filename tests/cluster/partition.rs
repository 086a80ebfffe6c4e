//! A partition between instances: each side drops the other's counts after `peer_timeout` and keeps
//! serving, within `max_connections` as its side counts; mended, the sides hear each other again and the
//! counts add up.

use std::collections::HashMap;

use tideway_e2e::{PATIENCE, Tideway};
use tideway_testkit::{TestReplica, tungstenite, ws_connect};

use super::relay::Relay;
use super::{free_addresses, instance_at, one_replica, until_elsewhere, until_peers};

type Session = tideway_testkit::tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a session through `through`; `true` if it got a seat.
async fn seated(through: &Tideway, open: &mut Vec<Session>) -> bool {
    match tokio::time::timeout(PATIENCE, ws_connect(through.addr, "app.test", "/ws")).await {
        Ok(Ok(ws)) => {
            open.push(ws);
            true
        }
        Ok(Err(tungstenite::Error::Http(response))) if response.status() == 503 => false,
        other => panic!("a seat or a 503, got {other:?}"),
    }
}

#[tokio::test]
async fn each_side_of_a_partition_keeps_serving_within_its_count_and_the_counts_add_up_once_mended() {
    let replica = TestReplica::start("app-1").await.expect("replica");
    let max = 4;
    let internal = free_addresses(3);
    // Each instance reaches each other one through a link of its own, which a partition cuts.
    let mut links: HashMap<(usize, usize), Relay> = HashMap::new();
    for from in 0..3 {
        for to in (0..3).filter(|to| *to != from) {
            links.insert((from, to), Relay::start(vec![internal[to]]).await);
        }
    }
    let app = one_replica(replica.addr(), max);
    let instances: Vec<Tideway> = (0..3)
        .map(|me| {
            let peers: Vec<_> = (0..3)
                .filter(|to| *to != me)
                .map(|to| links[&(me, to)].addr)
                .collect();
            instance_at(internal[me], &peers, ["a", "b", "c"][me], &app, &[])
        })
        .collect();
    for tideway in &instances {
        until_peers(tideway, 2).await;
    }

    // c is cut off from a and b.
    let cut = |cut: bool| {
        for ((from, to), link) in &links {
            if *from == 2 || *to == 2 {
                link.set_cut(cut);
            }
        }
    };
    cut(true);
    for (tideway, peers) in instances.iter().zip([1, 1, 0]) {
        until_peers(tideway, peers).await;
    }
    let mut open = Vec::new();
    // c, alone on its side, seats max_connections; a and b share theirs.
    for (through, expected) in [(2, &[true, true, true, true, false][..]), (0, &[true, true])] {
        for (i, expected) in expected.iter().enumerate() {
            let seated = seated(&instances[through], &mut open).await;
            assert_eq!(seated, *expected, "connection {i} through instance {through}");
        }
    }
    until_elsewhere(&instances[1], 2).await;
    for expected in [true, true, false] {
        assert_eq!(seated(&instances[1], &mut open).await, expected, "through b");
    }
    until_elsewhere(&instances[0], 2).await;
    assert!(!seated(&instances[0], &mut open).await, "a's side is full");
    assert_eq!(
        replica.open_sessions(),
        2 * max as usize,
        "each side held max_connections as it counted"
    );

    // Mended: every instance counts the others' again, and nobody has a seat to give.
    cut(false);
    for tideway in &instances {
        until_peers(tideway, 2).await;
    }
    until_elsewhere(&instances[2], u64::from(max)).await;
    until_elsewhere(&instances[0], u64::from(max) + 2).await;
    for through in &instances {
        assert!(!seated(through, &mut open).await, "the replica is full for all");
    }
}
