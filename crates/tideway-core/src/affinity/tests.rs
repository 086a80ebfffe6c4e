use std::net::SocketAddr;
use std::time::Duration;

use crate::admission::Admission;
use crate::clock::ManualClock;
use crate::policy::Policy;
use crate::replica::ReplicaState;

use super::*;

fn app_with_clock(max_connections: u32) -> (Arc<App>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000)));
    let policy = Policy {
        max_connections,
        affinity: Affinity::Cookie,
        reconnect_grace: Duration::from_secs(30),
        ..Policy::default()
    };
    let app = App::new("a", policy, Arc::clone(&clock) as Arc<dyn crate::Clock>);
    let replicas = (0..2)
        .map(|i| {
            let addr = SocketAddr::from(([127, 0, 0, 1], 9000 + i));
            Arc::new(Replica::new(
                format!("r{i}"),
                addr,
                ReplicaState::Ready,
                Timestamp::ZERO,
            ))
        })
        .collect();
    app.set_replicas(replicas);
    (app, clock)
}

fn admitted(app: &Arc<App>) -> ConnectionGuard {
    match app.admit() {
        Admission::Seated(seat) => seat,
        other => panic!("expected a seat, got {other:?}"),
    }
}

fn joined(j: JoinSession) -> SessionSeat {
    match j {
        JoinSession::Joined(seat) => seat,
        other => panic!("expected to join, got {other:?}"),
    }
}

#[test]
fn connections_of_a_session_share_one_seat_on_one_replica() {
    let (app, _) = app_with_clock(5);
    let id = SessionId::from_bits(42);
    let first = app.start_session(admitted(&app), id);
    let second = joined(app.join_session(id));
    let third = joined(app.join_session(id));
    assert_eq!(app.connections(), 1, "three connections, one seat");
    assert_eq!(first.replica().id(), second.replica().id());
    assert_eq!(third.id(), id);
    drop((first, second, third));
    assert_eq!(
        app.connections(),
        1,
        "the seat outlives the connections during the grace"
    );
}

#[test]
fn the_seat_is_released_after_the_grace_unless_the_session_returns() {
    let (app, clock) = app_with_clock(5);
    let id = SessionId::from_bits(7);
    drop(app.start_session(admitted(&app), id));
    let due = app.expire_sessions().expect("an expiry is scheduled");
    assert_eq!(due, Timestamp::from_millis(31_000));
    clock.advance(Duration::from_secs(20));
    let back = joined(app.join_session(id));
    clock.advance(Duration::from_secs(20));
    assert_eq!(app.expire_sessions(), None, "an active session does not expire");
    assert_eq!(app.connections(), 1);
    drop(back);
    clock.advance(Duration::from_secs(29));
    assert!(app.expire_sessions().is_some());
    assert_eq!(app.connections(), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(app.expire_sessions(), None);
    assert_eq!(app.connections(), 0);
    assert_eq!(app.session_count(), 0);
    assert!(matches!(app.join_session(id), JoinSession::Unknown));
}

#[test]
fn a_session_cannot_exceed_max_connections() {
    let (app, _) = app_with_clock(2);
    let id = SessionId::from_bits(1);
    let _a = app.start_session(admitted(&app), id);
    let _b = joined(app.join_session(id));
    assert!(matches!(app.join_session(id), JoinSession::Full));
}

#[test]
fn a_session_on_a_removed_replica_is_forgotten() {
    let (app, _) = app_with_clock(5);
    let id = SessionId::from_bits(9);
    let seat = app.start_session(admitted(&app), id);
    let keep: Vec<_> = app
        .replicas()
        .iter()
        .filter(|r| r.id() != seat.replica().id())
        .cloned()
        .collect();
    app.set_replicas(keep);
    assert!(matches!(app.join_session(id), JoinSession::Unknown));
}

#[test]
fn a_session_on_a_draining_replica_starts_over() {
    let (app, _) = app_with_clock(5);
    let id = SessionId::from_bits(10);
    let seat = app.start_session(admitted(&app), id);
    seat.replica().set_state(ReplicaState::Draining);
    assert!(matches!(app.join_session(id), JoinSession::Unknown));
    assert_eq!(app.session_count(), 0);
}

#[test]
fn a_replaced_session_releases_its_old_seat_when_its_connections_end() {
    let (app, _) = app_with_clock(5);
    let id = SessionId::from_bits(3);
    let old = app.start_session(admitted(&app), id);
    let new = app.start_session(admitted(&app), id);
    assert_eq!(app.connections(), 2);
    drop(old);
    assert_eq!(
        app.connections(),
        1,
        "the orphaned session had no grace to wait for"
    );
    assert_eq!(joined(app.join_session(id)).replica().id(), new.replica().id());
}

#[test]
fn going_idle_raises_the_signal() {
    let (app, _) = app_with_clock(5);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(app.poll_session_idle(&mut cx).is_pending());
    drop(app.start_session(admitted(&app), SessionId::from_bits(5)));
    assert!(app.poll_session_idle(&mut cx).is_ready());
}

#[test]
fn session_ids_are_32_hex_digits() {
    let id = SessionId::from_bits(0xdead_beef);
    let text = id.to_string();
    assert_eq!(text, "000000000000000000000000deadbeef");
    assert_eq!(text.parse::<SessionId>(), Ok(id));
    assert!("deadbeef".parse::<SessionId>().is_err());
    assert!("zz000000000000000000000000000000".parse::<SessionId>().is_err());
    assert_eq!("cookie".parse::<Affinity>(), Ok(Affinity::Cookie));
    assert!("sticky".parse::<Affinity>().is_err());
}

#[test]
fn clearing_sessions_releases_idle_seats() {
    let (app, _) = app_with_clock(5);
    drop(app.start_session(admitted(&app), SessionId::from_bits(11)));
    assert_eq!(app.connections(), 1);
    app.clear_sessions();
    assert_eq!(app.connections(), 0);
}
