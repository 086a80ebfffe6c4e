use proptest::prelude::*;

use super::*;

fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(secs * 1_000)
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

fn fresh(started: u64) -> ConnectionTimes {
    ConnectionTimes {
        started: at(started),
        last_activity: at(started),
        kept_alive_since: Some(at(started)),
        head_started: None,
        write_blocked_since: None,
    }
}

#[test]
fn no_limits_never_close() {
    let verdict = ConnectionTimeouts::default().evaluate(&fresh(0), at(1_000_000));
    assert_eq!(verdict, TimeoutVerdict::Open { next: None });
}

#[test]
fn age_closes_even_when_busy() {
    let limits = ConnectionTimeouts {
        max_age: secs(60),
        inactive: secs(30),
        ..Default::default()
    };
    let mut times = fresh(0);
    times.kept_alive_since = None;
    times.last_activity = at(59);
    assert_eq!(
        limits.evaluate(&times, at(59)),
        TimeoutVerdict::Open { next: Some(at(60)) }
    );
    assert_eq!(
        limits.evaluate(&times, at(60)),
        TimeoutVerdict::Close(CloseReason::MaxAge)
    );
}

#[test]
fn activity_postpones_inactivity() {
    let limits = ConnectionTimeouts {
        inactive: secs(30),
        ..Default::default()
    };
    let mut times = fresh(0);
    assert_eq!(
        limits.evaluate(&times, at(29)),
        TimeoutVerdict::Open { next: Some(at(30)) }
    );
    times.last_activity = at(20);
    assert_eq!(
        limits.evaluate(&times, at(30)),
        TimeoutVerdict::Open { next: Some(at(50)) }
    );
    assert_eq!(
        limits.evaluate(&times, at(50)),
        TimeoutVerdict::Close(CloseReason::Inactive)
    );
}

#[test]
fn keepalive_counts_from_the_end_of_the_last_request_only_between_requests() {
    let limits = ConnectionTimeouts {
        keepalive: secs(75),
        ..Default::default()
    };
    let mut times = fresh(0);
    times.last_activity = at(70);
    assert_eq!(
        limits.evaluate(&times, at(75)),
        TimeoutVerdict::Close(CloseReason::Inactive)
    );
    times.kept_alive_since = None;
    assert_eq!(
        limits.evaluate(&times, at(500)),
        TimeoutVerdict::Open { next: None }
    );
    times.kept_alive_since = Some(at(400));
    assert_eq!(
        limits.evaluate(&times, at(450)),
        TimeoutVerdict::Open { next: Some(at(475)) }
    );
}

#[test]
fn slow_headers_abort_and_win_over_other_limits() {
    let limits = ConnectionTimeouts {
        header_read: secs(10),
        max_age: secs(5),
        keepalive: secs(75),
        ..Default::default()
    };
    let mut times = fresh(0);
    times.head_started = Some(at(1));
    assert_eq!(limits.evaluate(&times, at(11)), TimeoutVerdict::Abort);
    assert_eq!(
        limits.evaluate(&times, at(6)),
        TimeoutVerdict::Close(CloseReason::MaxAge)
    );
    times.head_started = None;
    assert_eq!(
        limits.evaluate(&times, at(4)),
        TimeoutVerdict::Open { next: Some(at(5)) }
    );
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let limits = ConnectionTimeouts {
        send: secs(60),
        max_age: secs(3_600),
        ..Default::default()
    };
    let mut times = fresh(0);
    times.kept_alive_since = None;
    assert_eq!(
        limits.evaluate(&times, at(100)),
        TimeoutVerdict::Open {
            next: Some(at(3_600))
        }
    );
    times.write_blocked_since = Some(at(100));
    assert_eq!(
        limits.evaluate(&times, at(159)),
        TimeoutVerdict::Open { next: Some(at(160)) }
    );
    assert_eq!(limits.evaluate(&times, at(160)), TimeoutVerdict::Abort);
}

#[test]
fn jitter_stays_within_ten_percent() {
    let hour = Duration::from_secs(3_600);
    assert_eq!(jittered_age(hour, 0.0), Duration::from_secs(3_240));
    assert_eq!(jittered_age(hour, 0.5), hour);
    assert!(jittered_age(hour, 0.999_999) < Duration::from_secs(3_960));
    assert_eq!(jittered_age(hour, 7.0), Duration::from_secs(3_960));
}

proptest! {
    /// Whatever the limits and times: an open verdict's `next` is in the future, and evaluating at `next`
    /// either closes or moves further out — a connection can never be left with a deadline in the past.
    #[test]
    fn next_is_always_in_the_future(
        max_age in proptest::option::of(1u64..1_000),
        inactive in proptest::option::of(1u64..1_000),
        keepalive in proptest::option::of(1u64..1_000),
        header_read in proptest::option::of(1u64..1_000),
        last in 0u64..1_000,
        kept_alive in proptest::option::of(0u64..1_000),
        head in proptest::option::of(0u64..1_000),
        now in 0u64..3_000,
    ) {
        let limits = ConnectionTimeouts {
            max_age: max_age.and_then(secs),
            inactive: inactive.and_then(secs),
            keepalive: keepalive.and_then(secs),
            header_read: header_read.and_then(secs),
            send: None,
        };
        let times = ConnectionTimes {
            started: at(0),
            last_activity: at(last),
            kept_alive_since: kept_alive.map(at),
            head_started: head.map(at),
            write_blocked_since: None,
        };
        if let TimeoutVerdict::Open { next: Some(next) } = limits.evaluate(&times, at(now)) {
            prop_assert!(next > at(now));
            let stuck = matches!(
                limits.evaluate(&times, next),
                TimeoutVerdict::Open { next: Some(again) } if again <= next
            );
            prop_assert!(!stuck);
        }
    }

    #[test]
    fn jitter_bounds(secs in 1u64..100_000, sample in 0.0f64..1.0) {
        let base = Duration::from_secs(secs);
        let j = jittered_age(base, sample);
        prop_assert!(j >= base.mul_f64(0.9) && j <= base.mul_f64(1.1));
    }
}
