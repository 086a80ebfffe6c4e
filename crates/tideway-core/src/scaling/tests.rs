use proptest::prelude::*;

use super::*;
use crate::policy::SpawnThreshold;

fn policy(min: u32, max: u32, max_connections: u32, threshold: u8) -> Policy {
    Policy {
        min_instances: min,
        max_instances: max,
        max_connections,
        spawn_threshold: SpawnThreshold::new(threshold).expect("valid threshold"),
        scale_down_delay: Duration::from_secs(60),
        ..Policy::default()
    }
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(secs * 1_000)
}

fn replica(n: u64, state: ReplicaState, connections: u32, started: u64) -> ReplicaView {
    ReplicaView {
        id: test_id(n),
        state,
        connections,
        started_at: at(started),
        revivable: false,
    }
}

/// A replica the scaler is draining, which a scale-up may take back.
fn drained(n: u64, connections: u32, started: u64) -> ReplicaView {
    ReplicaView {
        revivable: true,
        ..replica(n, ReplicaState::Draining, connections, started)
    }
}

/// Replica ids are opaque; tests make distinct ones through real replicas.
fn test_id(n: u64) -> ReplicaId {
    use std::sync::OnceLock;
    static IDS: OnceLock<Vec<ReplicaId>> = OnceLock::new();
    IDS.get_or_init(|| (0..64).map(|_| ReplicaId::next()).collect())[n as usize]
}

fn ready(n: usize) -> Vec<ReplicaView> {
    (0..n as u64)
        .map(|i| replica(i, ReplicaState::Ready, 0, i))
        .collect()
}

fn observe(demand: u64, replicas: Vec<ReplicaView>) -> Observation {
    Observation {
        demand,
        replicas,
        ..Observation::default()
    }
}

#[test]
fn the_threshold_rule_is_exact() {
    let p = policy(1, 4, 4, 75);
    let needed: Vec<u64> = (0..=14).map(|d| replicas_needed(&p, d)).collect();
    assert_eq!(needed, [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5]);
    // 10 × 75% = 7.5: not rounded to 7.
    let p = policy(0, 10, 10, 75);
    assert_eq!(replicas_needed(&p, 15), 2);
    assert_eq!(replicas_needed(&p, 16), 3);
}

#[test]
fn sessions_opened_one_by_one_start_replicas_exactly_at_the_threshold() {
    let p = policy(1, 4, 4, 75);
    let mut scaler = Scaler::default();
    let mut replicas = ready(1);
    let mut starts = Vec::new();
    for demand in 1..=14 {
        if let Some(d) = scaler.decide(&p, &observe(demand, replicas.clone()), at(demand)) {
            assert_eq!(d.reason, ScaleReason::Threshold);
            starts.push((demand, d.start));
            let n = replicas.len() as u64;
            replicas.extend((0..d.start as u64).map(|i| replica(n + i, ReplicaState::Starting, 0, demand)));
        }
    }
    assert_eq!(starts, [(4, 1), (7, 1), (10, 1)], "max_instances caps at 4");
}

#[test]
fn a_cold_burst_starts_what_the_rule_asks_at_once() {
    let p = policy(0, 10, 4, 75);
    let decision = Scaler::default()
        .decide(&p, &observe(10, Vec::new()), at(0))
        .expect("a decision");
    assert_eq!((decision.desired, decision.start), (4, 4));
    assert_eq!(decision.direction(), Some(Direction::Up));
}

#[test]
fn starting_capacity_counts_and_max_counts_draining_replicas() {
    let p = policy(0, 4, 4, 75);
    let mut replicas = ready(1);
    replicas.push(replica(1, ReplicaState::Starting, 0, 5));
    assert_eq!(
        Scaler::default().decide(&p, &observe(6, replicas.clone()), at(6)),
        None
    );
    replicas.push(replica(2, ReplicaState::Draining, 3, 1));
    replicas.push(replica(3, ReplicaState::Draining, 1, 2));
    assert_eq!(
        Scaler::default().decide(&p, &observe(12, replicas), at(6)),
        None,
        "four replicas exist, two of them draining"
    );
}

#[test]
fn replicas_of_a_replaced_backend_count_against_max_instances_only() {
    // Five replicas of the old backend still drain sessions; the new backend may start no more than the
    // ceiling allows, and starts what it needs as they go.
    let p = policy(0, 5, 4, 100);
    let with_retiring = |retiring, replicas| Observation {
        retiring,
        ..observe(12, replicas)
    };
    let d = Scaler::default()
        .decide(&p, &with_retiring(4, Vec::new()), at(0))
        .expect("a decision");
    assert_eq!((d.desired, d.start, d.reason), (3, 1, ScaleReason::MaxInstances));
    assert_eq!(
        Scaler::default().decide(&p, &with_retiring(5, Vec::new()), at(0)),
        None
    );
    let d = Scaler::default()
        .decide(&p, &with_retiring(1, ready(1)), at(0))
        .expect("a decision");
    assert_eq!((d.desired, d.start, d.reason), (3, 2, ScaleReason::Threshold));
    // They are not the app's own: nothing of them is drained.
    let mut scaler = Scaler::default();
    assert_eq!(scaler.decide(&p, &with_retiring(3, ready(3)), at(0)), None);
}

#[test]
fn starts_not_yet_reported_count_as_starting_capacity() {
    let p = policy(0, 10, 4, 75);
    let mut scaler = Scaler::default();
    let pending = |demand, pending_starts| Observation {
        pending_starts,
        ..observe(demand, Vec::new())
    };
    let d = scaler.decide(&p, &pending(1, 0), at(0)).expect("a decision");
    assert_eq!(d.start, 1);
    assert_eq!(
        scaler.decide(&p, &pending(3, 1), at(0)),
        None,
        "the pending start covers 3"
    );
    let d = scaler.decide(&p, &pending(4, 1), at(0)).expect("a decision");
    assert_eq!((d.desired, d.start), (2, 1));
    // Pending starts are never drained: they are not replicas yet.
    let mut scaler = Scaler::default();
    assert_eq!(scaler.decide(&p, &pending(0, 2), at(0)), None);
    assert_eq!(scaler.decide(&p, &pending(0, 2), at(120)), None);
}

#[test]
fn a_capped_scale_up_says_so() {
    let p = policy(0, 3, 4, 75);
    let mut replicas = ready(1);
    replicas.push(replica(1, ReplicaState::Draining, 1, 1));
    let d = Scaler::default()
        .decide(&p, &observe(12, replicas), at(0))
        .expect("a decision");
    assert_eq!((d.desired, d.start, d.reason), (3, 1, ScaleReason::MaxInstances));
    // Demand for four replicas, three allowed: every start happens, and the cap is still the reason.
    let d = Scaler::default()
        .decide(&p, &observe(12, ready(1)), at(0))
        .expect("a decision");
    assert_eq!((d.desired, d.start, d.reason), (3, 2, ScaleReason::MaxInstances));
}

#[test]
fn the_floor_is_kept_and_explained() {
    let p = policy(2, 5, 4, 75);
    let d = Scaler::default()
        .decide(&p, &observe(0, Vec::new()), at(0))
        .expect("a decision");
    assert_eq!((d.start, d.reason), (2, ScaleReason::MinInstances));
    let lost = Observation {
        lost: 1,
        ..observe(0, ready(1))
    };
    let d = Scaler::default().decide(&p, &lost, at(0)).expect("a decision");
    assert_eq!((d.start, d.reason), (1, ScaleReason::ReplicaLost));
    let failed = Observation {
        failed_starts: 1,
        ..observe(0, ready(1))
    };
    assert_eq!(
        Scaler::default().decide(&p, &failed, at(0)).map(|d| d.reason),
        Some(ScaleReason::Startup)
    );
}

#[test]
fn a_dip_shorter_than_the_delay_moves_nothing_and_the_window_keeps_its_highest_count() {
    let p = policy(1, 4, 4, 75);
    let mut scaler = Scaler::default();
    let replicas = ready(4);
    // What is in place counts as desired until now: nothing drains before a whole delay.
    assert_eq!(scaler.decide(&p, &observe(4, replicas.clone()), at(0)), None);
    assert_eq!(scaler.next_check(p.scale_down_delay), Some(at(60)));
    // A dip to 1 replica's worth, then back to 2.
    assert_eq!(scaler.decide(&p, &observe(2, replicas.clone()), at(30)), None);
    assert_eq!(scaler.decide(&p, &observe(5, replicas.clone()), at(50)), None);
    assert_eq!(scaler.decide(&p, &observe(5, replicas.clone()), at(59)), None);
    let d = scaler
        .decide(&p, &observe(5, replicas.clone()), at(60))
        .expect("scale down");
    assert_eq!(
        (d.desired, d.drain.len(), d.reason),
        (2, 2, ScaleReason::Idle),
        "to the window's highest count, not to the dip"
    );
    assert_eq!(d.direction(), Some(Direction::Down));
    let held = |desired, secs, demand| WindowCount {
        desired,
        held: Duration::from_secs(secs),
        demand,
    };
    assert_eq!(
        scaler.window(at(60), p.scale_down_delay),
        [held(2, 30, 4), held(1, 20, 2), held(2, 10, 5)],
        "what the decision saw"
    );
    // The dip leaves the window at 90 s and the 2 it rose to stays: nothing more to drain.
    assert_eq!(scaler.next_check(p.scale_down_delay), Some(at(90)));
    assert_eq!(scaler.decide(&p, &observe(5, ready(2)), at(90)), None);
    assert_eq!(scaler.decide(&p, &observe(5, ready(2)), at(110)), None);
    assert_eq!(scaler.next_check(p.scale_down_delay), None);
}

#[test]
fn replicas_that_come_unasked_are_kept_for_a_whole_delay() {
    let p = policy(1, 4, 4, 75);
    let mut scaler = Scaler::default();
    let d = scaler
        .decide(&p, &observe(0, Vec::new()), at(0))
        .expect("the floor");
    assert_eq!(d.start, 1);
    // Two pods appear at 30 s where one was asked for (listed late, or scaled by someone else).
    assert_eq!(scaler.decide(&p, &observe(0, ready(2)), at(30)), None);
    assert_eq!(scaler.decide(&p, &observe(0, ready(2)), at(89)), None);
    let d = scaler
        .decide(&p, &observe(0, ready(2)), at(90))
        .expect("a delay after they came");
    assert_eq!((d.desired, d.drain.len()), (1, 1));
}

#[test]
fn a_fall_lasting_longer_than_the_delay_is_followed_step_by_step() {
    let p = policy(1, 4, 4, 75);
    let mut scaler = Scaler::default();
    assert_eq!(scaler.decide(&p, &observe(12, ready(4)), at(0)), None);
    assert_eq!(scaler.decide(&p, &observe(8, ready(4)), at(10)), None);
    assert_eq!(scaler.decide(&p, &observe(2, ready(4)), at(20)), None);
    assert_eq!(scaler.decide(&p, &observe(2, ready(4)), at(69)), None);
    let d = scaler
        .decide(&p, &observe(2, ready(4)), at(70))
        .expect("first step");
    assert_eq!(
        (d.desired, d.drain.len()),
        (3, 1),
        "3 was desired within the last minute"
    );
    assert_eq!(scaler.next_check(p.scale_down_delay), Some(at(80)));
    let d = scaler
        .decide(&p, &observe(2, ready(3)), at(80))
        .expect("second step");
    assert_eq!((d.desired, d.drain.len()), (1, 2));
}

#[test]
fn a_scale_up_takes_back_the_replicas_it_drains_before_starting_any() {
    let p = policy(1, 4, 4, 100);
    let mut replicas = ready(1);
    replicas.extend([
        drained(5, 1, 5),
        drained(6, 3, 6),
        replica(7, ReplicaState::Draining, 0, 7),
    ]);
    let d = Scaler::default()
        .decide(&p, &observe(12, replicas.clone()), at(0))
        .expect("scale up");
    assert_eq!(
        (d.desired, d.start, d.revive.clone(), d.reason),
        (3, 0, vec![test_id(6), test_id(5)], ScaleReason::Threshold),
        "the busiest first, and not the one going away for another reason"
    );
    assert_eq!(d.direction(), Some(Direction::Up));
    // Wanting one more than it can take back: max_instances (4, draining included) leaves no room.
    let d = Scaler::default()
        .decide(&p, &observe(16, replicas), at(0))
        .expect("scale up");
    assert_eq!(
        (d.start, d.revive.len(), d.reason),
        (0, 2, ScaleReason::MaxInstances)
    );
}

#[test]
fn the_replicas_a_pending_scale_down_would_drain_are_leaving_until_it_is_off() {
    let p = policy(1, 5, 10, 100);
    let replicas = vec![
        replica(0, ReplicaState::Ready, 6, 0),
        replica(1, ReplicaState::Ready, 2, 10),
        replica(2, ReplicaState::Ready, 2, 20),
        replica(3, ReplicaState::Draining, 0, 30),
    ];
    let mut scaler = Scaler::default();
    assert_eq!(
        scaler.leaving(&observe(10, replicas.clone())),
        Vec::new(),
        "no look yet"
    );
    assert_eq!(scaler.decide(&p, &observe(25, replicas.clone()), at(0)), None);
    assert_eq!(
        scaler.leaving(&observe(25, replicas.clone())),
        Vec::new(),
        "three are wanted"
    );
    // Demand for one replica: the two it would drain are leaving while the window holds.
    assert_eq!(scaler.decide(&p, &observe(10, replicas.clone()), at(5)), None);
    assert_eq!(
        scaler.leaving(&observe(10, replicas.clone())),
        [test_id(2), test_id(1)]
    );
    // Back up: nothing pending.
    assert_eq!(scaler.decide(&p, &observe(30, replicas.clone()), at(6)), None);
    assert_eq!(scaler.leaving(&observe(30, replicas)), Vec::new());
}

#[test]
fn headroom_counts_as_demand() {
    let p = policy(1, 5, 4, 75);
    let observation = Observation {
        headroom: 3,
        ..observe(6, ready(1))
    };
    let d = Scaler::default()
        .decide(&p, &observation, at(0))
        .expect("scale up");
    assert_eq!((d.desired, d.start), (3, 2), "ceil((6 + 3) / 3)");
}

#[test]
fn scale_down_drains_the_least_busy_then_the_youngest() {
    let p = policy(1, 5, 10, 100);
    let replicas = vec![
        replica(0, ReplicaState::Ready, 2, 0),
        replica(1, ReplicaState::Ready, 0, 10),
        replica(2, ReplicaState::Ready, 0, 20),
        replica(3, ReplicaState::Ready, 5, 30),
        replica(4, ReplicaState::Draining, 0, 40),
    ];
    let mut scaler = Scaler::default();
    assert_eq!(scaler.decide(&p, &observe(7, replicas.clone()), at(0)), None);
    let d = scaler
        .decide(&p, &observe(7, replicas), at(60))
        .expect("scale down");
    assert_eq!(d.desired, 1);
    assert_eq!(d.drain, [test_id(2), test_id(1), test_id(0)]);
}

#[test]
fn scale_to_zero_and_back() {
    let p = policy(0, 3, 4, 100);
    let mut scaler = Scaler::default();
    assert_eq!(scaler.decide(&p, &observe(0, ready(1)), at(0)), None);
    let d = scaler.decide(&p, &observe(0, ready(1)), at(60)).expect("to zero");
    assert_eq!((d.desired, d.drain.len()), (0, 1));
    let d = scaler
        .decide(&p, &observe(1, Vec::new()), at(61))
        .expect("cold start");
    assert_eq!((d.desired, d.start, d.reason), (1, 1, ScaleReason::Threshold));
}

proptest! {
    /// Whatever happens: the desired count stays within the bounds, a start never takes the app past
    /// `max_instances` (draining included), a drain never takes it below `min_instances`, and a drain
    /// happens exactly when the highest count desired within the last `scale_down_delay` (replicas that
    /// appear beyond it counting as desired when seen) is below the replicas in place, and goes to it.
    #[test]
    fn decisions_respect_every_bound(
        min in 0u32..4,
        extra in 0u32..5,
        max_connections in 1u32..10,
        threshold in 1u8..=100,
        steps in prop::collection::vec((0u64..60, 0usize..6, 0usize..3, 0u64..40), 1..60),
    ) {
        let p = policy(min, min + extra.max(1), max_connections, threshold);
        let mut scaler = Scaler::default();
        let mut history: Vec<(Timestamp, u32)> = Vec::new();
        let mut seen = 0;
        let mut now = at(0);
        for (demand, active, draining, advance) in steps {
            now = now.saturating_add(Duration::from_secs(advance));
            let mut replicas: Vec<ReplicaView> = (0..active as u64)
                .map(|i| replica(i, ReplicaState::Ready, (i % 3) as u32, i))
                .collect();
            replicas.extend((0..draining as u64).map(|i| ReplicaView {
                revivable: i % 2 == 0,
                ..replica(10 + i, ReplicaState::Draining, 1, i)
            }));
            let revivable = draining.div_ceil(2);
            let needed = replicas_needed(&p, demand).min(u64::from(u32::MAX)) as u32;
            let desired = needed.clamp(p.min_instances, p.max_instances);
            let high_of = |history: &[(Timestamp, u32)]| {
                (0..history.len())
                    .filter(|&i| i + 1 == history.len() || history[i + 1].0.saturating_add(p.scale_down_delay) > now)
                    .map(|i| history[i].1)
                    .max()
                    .unwrap_or(0)
            };
            if active as u32 > seen && active as u32 > high_of(&history) {
                history.push((now, active as u32));
            }
            seen = active as u32;
            history.push((now, desired));
            let high = high_of(&history);
            let decision = scaler.decide(&p, &observe(demand, replicas.clone()), now);
            prop_assert!(high >= desired);
            if desired <= active as u32 {
                let drained = decision.as_ref().map_or(0, |d| d.drain.len());
                if high < active as u32 {
                    prop_assert_eq!(active - drained, high as usize, "drains to the window's highest count");
                    prop_assert_eq!(decision.as_ref().map(|d| d.desired), Some(high));
                } else {
                    prop_assert!(decision.is_none(), "nothing to do: {:?}", decision);
                }
                prop_assert!(active - drained >= p.min_instances as usize);
            } else if let Some(d) = decision {
                prop_assert_eq!(d.desired, desired);
                prop_assert!(d.desired >= p.min_instances && d.desired <= p.max_instances);
                prop_assert!(d.start == 0 || d.start as usize + replicas.len() <= p.max_instances as usize);
                prop_assert!(d.drain.is_empty());
                prop_assert_eq!(d.revive.len(), revivable.min(desired as usize - active), "takes back first");
                prop_assert!(d.start == 0 || d.revive.len() == revivable, "starts only once none is left");
                prop_assert!(d.start as usize + d.revive.len() <= desired as usize - active);
            }
        }
    }
}
