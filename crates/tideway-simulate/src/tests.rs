use std::time::Duration;

use proptest::prelude::*;
use tideway_core::{Headroom, Policy, SpawnThreshold};

use crate::{Arrival, Candidate, Kind, Shape, Startup, Trace, ideal, replay, simulate};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn arrival(at: u64, held: u64) -> Arrival {
    Arrival {
        app: "a".to_owned(),
        at: ms(at),
        kind: Kind::Upgraded,
        held: ms(held),
        seated: Ok(Duration::ZERO),
    }
}

/// One seat per replica at the threshold (50% of 2), one to three replicas.
fn small_policy() -> Policy {
    Policy {
        min_instances: 1,
        max_instances: 3,
        max_connections: 2,
        spawn_threshold: SpawnThreshold::new(50).expect("a threshold"),
        scale_down_delay: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(60),
        queue_timeout: Duration::from_secs(30),
        ..Policy::default()
    }
}

/// Worked by hand (README, "Tuning a scaling policy", walks the same trace):
/// - 0 s: c0 takes r1, warm at the start. 1 s: c1 takes r1's second seat; demand 2 wants 2 replicas: r2
///   starts (ready at 3 s). 2 s: c2 finds r1 full and r2 starting: it queues; demand 3 starts r3 (ready
///   at 4 s). 3 s: r2 ready, c2 seated after 1 s; it leaves at 3.5 s.
/// - Demand 2 from 3.5 s: 3 replicas are one too many for 10 s, then the youngest empty one, r3, drains
///   and stops at 13.5 s. c1 leaves at 21 s, c0 at 30 s, the end of the trace.
/// - Replica-seconds: r1 30 + r2 29 + r3 11.5 = 70.5. The ideal rule: 1 replica for 1 s, 2 for 1 s, 3
///   for 0.5 s, 2 for 18.5 s, 1 for 9 s = 50.5.
#[test]
fn a_small_trace_replays_to_the_figures_worked_by_hand() {
    let arrivals = [arrival(0, 30_000), arrival(1_000, 20_000), arrival(2_000, 500)];
    let policy = small_policy();
    let (figures, samples) = replay(&arrivals, &policy, &Startup::Fixed(ms(2_000)), 1, ms(30_000));
    assert_eq!(figures.replica_seconds, 70.5);
    assert_eq!(figures.peak_replicas, 3);
    assert_eq!(figures.decisions, 3, "two starts and a drain");
    assert_eq!(figures.direction_changes, 1);
    assert_eq!(figures.connections, 3);
    assert_eq!(figures.queued, 1);
    assert_eq!(figures.waits, vec![ms(1_000)]);
    assert!(figures.rejected.is_empty());
    assert_eq!(figures.cut, 0);
    let replicas: Vec<(u64, u32)> = samples
        .iter()
        .map(|s| (s.at.as_millis() as u64, s.replicas))
        .collect();
    assert_eq!(
        replicas
            .iter()
            .map(|(_, r)| *r)
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] != w[1])
            .count(),
        3,
        "replicas over time: {replicas:?}"
    );
    assert!(
        replicas.contains(&(13_500, 2)),
        "r3 stops at 13.5 s: {replicas:?}"
    );

    let (ideal, _) = ideal(&arrivals, &policy, ms(30_000));
    assert_eq!(ideal.replica_seconds, 50.5);
    assert_eq!(ideal.peak_replicas, 3);
    assert_eq!(ideal.decisions, 4);
    assert_eq!(ideal.direction_changes, 1);
    assert_eq!(ideal.queued, 0);
}

#[test]
fn a_connection_that_waits_past_queue_timeout_is_refused_and_a_full_queue_refuses_at_once() {
    let policy = Policy {
        max_instances: 1,
        queue_timeout: Duration::from_secs(1),
        max_queued: 1,
        ..small_policy()
    };
    let arrivals = [
        arrival(0, 10_000),
        arrival(0, 10_000),
        arrival(100, 10),
        arrival(200, 10),
    ];
    let (figures, _) = replay(&arrivals, &policy, &Startup::Fixed(ms(2_000)), 1, ms(10_000));
    assert_eq!(figures.queued, 1);
    assert_eq!(figures.rejected.get("queue_timeout"), Some(&1));
    assert_eq!(figures.rejected.get("queue_full"), Some(&1));
    assert_eq!(figures.rejected_total(), 2);
    assert_eq!(figures.replica_seconds, 10.0);
}

#[test]
fn sessions_left_on_a_drained_replica_at_drain_timeout_are_cut() {
    let policy = Policy {
        spawn_threshold: SpawnThreshold::new(100).expect("a threshold"),
        drain_timeout: Duration::from_secs(5),
        ..small_policy()
    };
    // A and B fill r1; C queues, starts r2 and takes it. B ends at 1 s: one replica is enough, and after
    // scale_down_delay the younger of two equally loaded replicas, r2, drains with C on it.
    let arrivals = [arrival(0, 60_000), arrival(0, 1_000), arrival(100, 60_000)];
    let (figures, _) = replay(&arrivals, &policy, &Startup::Fixed(Duration::ZERO), 1, ms(60_100));
    assert_eq!(figures.cut, 1, "{figures:?}");
    assert_eq!(figures.queued, 1, "{figures:?}");
}

#[test]
fn each_candidate_is_compared_with_the_ideal_rule_under_its_own_policy() {
    let trace = Shape::Steady.trace(7, Duration::from_secs(600));
    let base = Candidate {
        label: "base".to_owned(),
        policy: small_policy(),
    };
    let quick = Candidate {
        label: "scale_down_delay=1s".to_owned(),
        policy: Policy {
            scale_down_delay: Duration::from_secs(1),
            ..small_policy()
        },
    };
    let report = simulate(&trace.arrivals, &[base, quick], &Startup::Fixed(ms(2_000)), 7);
    assert_eq!(report.outcomes.len(), 2);
    let [slow, quick] = [&report.outcomes[0], &report.outcomes[1]];
    assert!(slow.cost_ratio() > 0.5, "{}", slow.cost_ratio());
    assert!(
        quick.figures.replica_seconds < slow.figures.replica_seconds,
        "a shorter delay costs less: {} vs {}",
        quick.figures.replica_seconds,
        slow.figures.replica_seconds
    );
    let table = report.table();
    for label in [
        "ideal rule",
        "base",
        "scale_down_delay=1s",
        "replica-s",
        "reversals",
    ] {
        assert!(table.contains(label), "{label} in\n{table}");
    }
}

#[test]
fn a_trace_reads_back_what_was_written_and_a_refused_connection_holds_the_median() {
    // Lines in the order connections ended, over two files of a rotated log, in Unix milliseconds.
    let text = "{\"trace\":\"tideway\",\"version\":1,\"started_ms\":1000}\n\
        {\"app\":\"a\",\"at_ms\":1007,\"kind\":\"request\",\"seat_ms\":1,\"duration_ms\":20}\n\
        {\"app\":\"a\",\"at_ms\":1000,\"kind\":\"upgraded\",\"seat_ms\":3,\"duration_ms\":1000}\n\
        {\"app\":\"a\",\"at_ms\":1005,\"kind\":\"upgraded\",\"seat_ms\":0,\"duration_ms\":3000}\n\
        {\"app\":\"a\",\"at_ms\":1008,\"kind\":\"upgraded\",\"refused\":\"queue_timeout\"}\n\
        {\"app\":\"a\",\"at_ms\":1009,\"cold_start_ms\":1500}\n\
        {\"trace\":\"tideway\",\"version\":1,\"started_ms\":1009}\n\
        {\"app\":\"a\",\"at_ms\":1006,\"kind\":\"upgraded\",\"seat_ms\":0,\"duration_ms\":9000}\n\
        {\"app\":\"b\",\"at_ms\":1010,\"kind\":\"request\",\"seat_ms\":0,\"duration_ms\":5}\n";
    let trace = Trace::parse(text).expect("a valid trace");
    assert_eq!(trace.arrivals.len(), 6);
    let at: Vec<u64> = trace.arrivals.iter().map(|a| a.at.as_millis() as u64).collect();
    assert_eq!(at, [0, 5, 6, 7, 8, 10], "by arrival, from the first");
    assert_eq!(trace.arrivals[4].held, ms(3_000), "the median session's");
    assert_eq!(trace.arrivals[4].seated, Err("queue_timeout".to_owned()));
    assert_eq!(trace.cold_starts, vec![("a".to_owned(), ms(1_500))]);
    assert_eq!(trace.apps().into_iter().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(trace.of_app("a").arrivals.len(), 5);
    let again = Trace::parse(&trace.to_json_lines()).expect("what was written reads back");
    assert_eq!(again.arrivals.len(), trace.arrivals.len());
    assert_eq!(again.arrivals[4].seated, trace.arrivals[4].seated);
    assert_eq!(again.cold_starts, trace.cold_starts);
}

#[test]
fn a_bad_trace_names_its_line_and_the_fault() {
    let header = "{\"trace\":\"tideway\",\"version\":1}\n";
    for (text, line, fault) in [
        ("", 1, "empty"),
        (
            "{\"app\":\"a\",\"at_ms\":0,\"kind\":\"request\",\"seat_ms\":0,\"duration_ms\":1}\n",
            1,
            "header",
        ),
        ("{\"trace\":\"tideway\",\"version\":2}\n", 1, "version 2"),
        (&format!("{header}not json\n"), 2, "not JSON"),
        (
            &format!(
                "{header}{{\"app\":\"a\",\"at_ms\":0,\"kind\":\"poll\",\"seat_ms\":0,\"duration_ms\":1}}\n"
            ),
            2,
            "\"kind\"",
        ),
        (
            &format!(
                "{header}{{\"app\":\"a\",\"at_ms\":-1,\"kind\":\"request\",\"seat_ms\":0,\"duration_ms\":1}}\n"
            ),
            2,
            "\"at_ms\"",
        ),
        (
            &format!("{header}{{\"app\":\"a\",\"at_ms\":0,\"kind\":\"request\",\"duration_ms\":1}}\n"),
            2,
            "either",
        ),
        (
            &format!(
                "{header}{{\"app\":\"\",\"at_ms\":0,\"kind\":\"request\",\"seat_ms\":0,\"duration_ms\":1}}\n"
            ),
            2,
            "\"app\"",
        ),
    ] {
        let error = Trace::parse(text).expect_err(text);
        assert_eq!(error.line, line, "{text}: {error}");
        assert!(error.message.contains(fault), "{text}: {error}");
    }
}

#[test]
fn synthetic_traces_repeat_with_their_seed() {
    for shape in Shape::ALL {
        let one = shape.trace(3, Duration::from_secs(300));
        assert_eq!(one, shape.trace(3, Duration::from_secs(300)), "{shape}");
        assert_ne!(one, shape.trace(4, Duration::from_secs(300)), "{shape}");
        assert!(!one.arrivals.is_empty(), "{shape}");
        assert!(one.arrivals.windows(2).all(|w| w[0].at <= w[1].at), "{shape}");
        assert_eq!(shape.as_str().parse::<Shape>(), Ok(shape));
    }
}

#[test]
fn headroom_queues_less_behind_slow_starts_and_costs_replica_seconds() {
    let policy = Policy {
        max_connections: 10,
        spawn_threshold: SpawnThreshold::new(80).expect("a threshold"),
        max_instances: 5,
        ..small_policy()
    };
    let auto = Policy {
        headroom: Headroom::Auto,
        ..policy.clone()
    };
    let (mut off, mut on) = ((0, 0.0), (0, 0.0));
    for seed in 1..=5 {
        let trace = Shape::Steady.trace(seed, Duration::from_secs(1_200));
        let slow = Startup::Fixed(Duration::from_secs(10));
        for (policy, sum) in [(&policy, &mut off), (&auto, &mut on)] {
            let (figures, _) = replay(&trace.arrivals, policy, &slow, seed, trace.end());
            sum.0 += figures.queued;
            sum.1 += figures.replica_seconds;
        }
    }
    assert!(on.0 < off.0, "queued with headroom {} vs {} without", on.0, off.0);
    assert!(
        on.1 > off.1,
        "replica-seconds with headroom {} vs {} without",
        on.1,
        off.1
    );
}

proptest! {
    /// Whatever the trace, a replay never runs more replicas than `max_instances`, never fewer than
    /// `min_instances` once warm, costs at least the ideal rule's replica-seconds less what queueing
    /// saves, and accounts for every connection.
    #[test]
    fn a_replay_keeps_the_policy_bounds(
        seed in 0u64..1_000,
        shape in prop::sample::select(Shape::ALL.to_vec()),
        startup in 0u64..5_000,
    ) {
        let trace = shape.trace(seed, Duration::from_secs(240));
        let policy = small_policy();
        let horizon = trace.end();
        let (figures, samples) = replay(&trace.arrivals, &policy, &Startup::Fixed(ms(startup)), seed, horizon);
        prop_assert!(figures.peak_replicas <= policy.max_instances);
        prop_assert!(samples.iter().all(|s| s.replicas >= policy.min_instances));
        prop_assert!(figures.queued + figures.connections >= figures.rejected_total());
        prop_assert_eq!(figures.connections, trace.arrivals.len() as u64);
        prop_assert!(figures.waits.len() as u64 <= figures.queued);
    }
}
