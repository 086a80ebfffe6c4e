use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;

use crate::app::admission::Admission;
use crate::clock::ManualClock;
use crate::policy::Policy;
use crate::replica::ReplicaState;

use super::vacant::MAX_SEATLESS;
use super::*;
use crate::testing::ready_replicas;

const GRACE: Duration = Duration::from_secs(30);

fn app_with(
    replicas: u16,
    max_connections: u32,
    max_session_connections: u32,
) -> (Arc<App>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000)));
    let policy = Policy {
        max_connections,
        max_session_connections,
        affinity: Affinity::Cookie,
        reconnect_grace: GRACE,
        ..Policy::default()
    };
    let app = App::new("a", policy, Arc::clone(&clock) as Arc<dyn crate::Clock>);
    app.set_replicas(ready_replicas(usize::from(replicas)));
    (app, clock)
}

fn app_with_clock(max_connections: u32) -> (Arc<App>, Arc<ManualClock>) {
    app_with(2, max_connections, 32)
}

fn admitted(app: &Arc<App>) -> Seat {
    match app.admit() {
        Admission::Seated(seat) => seat,
        other => panic!("expected a seat, got {other:?}"),
    }
}

fn joined(j: JoinSession) -> Share {
    match j {
        JoinSession::Joined(seat) => seat,
        other => panic!("expected to join, got {other:?}"),
    }
}

/// A session whose client has sent its cookie back once: its first request ended, then it came back.
fn confirmed(app: &Arc<App>, id: SessionId) -> Share {
    drop(app.start_session(admitted(app), id));
    joined(app.join_session(id))
}

/// A session waiter backed by a std channel; abandoned once its receiver is dropped.
struct ChannelWaiter(mpsc::SyncSender<SessionGrant>);

impl SessionWaiter for ChannelWaiter {
    fn is_abandoned(&self) -> bool {
        false
    }

    fn offer(self: Box<Self>, grant: SessionGrant) -> Result<(), SessionGrant> {
        self.0.try_send(grant).map_err(|e| match e {
            mpsc::TrySendError::Full(g) | mpsc::TrySendError::Disconnected(g) => g,
        })
    }
}

fn wait(j: JoinSession) -> mpsc::Receiver<SessionGrant> {
    let JoinSession::Wait(queue) = j else {
        panic!("expected to wait, got {j:?}");
    };
    let (tx, rx) = mpsc::sync_channel(1);
    queue
        .enqueue(Box::new(ChannelWaiter(tx)))
        .expect("room in the session's queue");
    rx
}

#[test]
fn connections_of_a_session_share_one_seat_on_one_replica() {
    let (app, _) = app_with_clock(5);
    let id = SessionId::from_bits(42);
    let first = app.start_session(admitted(&app), id);
    let second = joined(app.join_session(id));
    let third = joined(app.join_session(id));
    assert_eq!(app.connections(), 1, "three connections, one seat");
    assert_eq!(app.demand(), 1, "the extra connections are not demand");
    assert_eq!(first.replica().id(), second.replica().id());
    assert_eq!(third.id(), id);
    drop((first, second, third));
    assert_eq!(
        app.connections(),
        1,
        "a confirmed session's seat outlives its connections during the grace"
    );
}

#[test]
fn a_tentative_session_gives_its_seat_back_with_its_last_connection() {
    let (app, _) = app_with_clock(5);
    let id = SessionId::from_bits(7);
    let first = app.start_session(admitted(&app), id);
    let replica = Arc::clone(first.replica());
    assert_eq!(app.connections(), 1);
    drop(first);
    assert_eq!(
        app.connections(),
        0,
        "a client that never sent the cookie back holds no seat"
    );
    assert_eq!(
        app.session_counts(),
        SessionCounts {
            tentative: 1,
            confirmed: 0
        }
    );

    let back = joined(app.join_session(id));
    assert_eq!(
        back.replica().id(),
        replica.id(),
        "the returning client finds the replica it was on"
    );
    assert_eq!(app.connections(), 1);
    assert_eq!(
        app.session_counts(),
        SessionCounts {
            tentative: 0,
            confirmed: 1
        }
    );
    drop(back);
    assert_eq!(
        app.connections(),
        1,
        "confirmed now: the seat waits out the grace"
    );
}

#[test]
fn cookieless_requests_cannot_lock_out_an_app() {
    let (app, _) = app_with(1, 5, 32);
    for bits in 0..100 {
        drop(app.start_session(admitted(&app), SessionId::from_bits(bits)));
    }
    assert_eq!(app.connections(), 0);
    assert!(
        matches!(app.admit(), Admission::Seated(_)),
        "every seat is still free"
    );
}

#[test]
fn the_seat_is_released_after_the_grace_unless_the_session_returns() {
    let (app, clock) = app_with_clock(5);
    let id = SessionId::from_bits(7);
    drop(confirmed(&app, id));
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
fn a_session_vacated_again_and_again_keeps_one_entry() {
    let (app, clock) = app_with_clock(5);
    let id = SessionId::from_bits(8);
    drop(confirmed(&app, id));
    for _ in 0..1_000 {
        clock.advance(Duration::from_millis(10));
        drop(joined(app.join_session(id)));
    }
    assert_eq!(app.sessions().vacant_lock().holding_len(), 1);
    let last_vacated = app.now();
    clock.advance(GRACE - Duration::from_millis(1));
    assert_eq!(
        app.expire_sessions(),
        Some(last_vacated.saturating_add(GRACE)),
        "the entry is moved to the session's last vacant time"
    );
    assert_eq!(app.connections(), 1);
    clock.advance(Duration::from_millis(1));
    assert_eq!(app.expire_sessions(), None);
    assert_eq!(app.connections(), 0);
}

#[test]
fn remembered_seatless_sessions_are_bounded_oldest_forgotten_first() {
    let (app, _) = app_with(1, 5, 32);
    let extra = 100;
    for bits in 0..(MAX_SEATLESS + extra) as u128 {
        drop(app.start_session(admitted(&app), SessionId::from_bits(bits)));
    }
    assert!(app.expire_sessions().is_some());
    assert_eq!(app.session_count(), MAX_SEATLESS);
    assert!(matches!(
        app.join_session(SessionId::from_bits(0)),
        JoinSession::Unknown
    ));
    let newest = SessionId::from_bits((MAX_SEATLESS + extra - 1) as u128);
    assert!(matches!(app.join_session(newest), JoinSession::Joined(_)));
}

#[test]
fn remembered_seatless_sessions_expire_after_the_grace() {
    let (app, clock) = app_with_clock(5);
    drop(app.start_session(admitted(&app), SessionId::from_bits(3)));
    assert_eq!(app.expire_sessions(), Some(Timestamp::from_millis(31_000)));
    clock.advance(GRACE);
    assert_eq!(app.expire_sessions(), None);
    assert_eq!(app.session_count(), 0);
}

#[test]
fn past_its_limit_a_session_waits_for_one_of_its_own_connections() {
    let (app, _) = app_with(2, 5, 2);
    let id = SessionId::from_bits(1);
    let a = confirmed(&app, id);
    let b = joined(app.join_session(id));
    let waiting = wait(app.join_session(id));
    assert!(waiting.try_recv().is_err(), "the session is at its limit");
    assert_eq!(app.connections(), 1);
    assert_eq!(
        app.demand(),
        1,
        "a session's waiting connection is not demand either"
    );
    drop(a);
    let Ok(SessionGrant::Joined(c)) = waiting.try_recv() else {
        panic!("the freed share goes to the waiting connection");
    };
    assert_eq!(c.replica().id(), b.replica().id());
    assert_eq!(app.connections(), 1);
}

#[test]
fn a_session_queue_holds_at_most_max_session_connections() {
    let (app, _) = app_with(1, 5, 1);
    let id = SessionId::from_bits(1);
    let _a = confirmed(&app, id);
    let _waiting = wait(app.join_session(id));
    let JoinSession::Wait(queue) = app.join_session(id) else {
        panic!("expected to wait");
    };
    let (tx, _rx) = mpsc::sync_channel(1);
    assert_eq!(
        queue.enqueue(Box::new(ChannelWaiter(tx))).err(),
        Some(SessionQueueFull)
    );
}

#[test]
fn a_session_stays_on_its_draining_replica() {
    let (app, _) = app_with_clock(5);
    let id = SessionId::from_bits(10);
    let seat = confirmed(&app, id);
    seat.replica().set_state(ReplicaState::Draining);
    let again = joined(app.join_session(id));
    assert_eq!(
        again.replica().id(),
        seat.replica().id(),
        "its state lives there until the replica is gone"
    );
}

#[test]
fn a_session_whose_replica_is_gone_is_placed_again_once_for_all_its_connections() {
    let (app, _) = app_with(2, 5, 32);
    let id = SessionId::from_bits(9);
    let seat = confirmed(&app, id);
    let old = Arc::clone(seat.replica());
    drop(seat);
    let keep: Vec<_> = app
        .replicas()
        .iter()
        .filter(|r| r.id() != old.id())
        .cloned()
        .collect();
    app.set_replicas(keep);

    let JoinSession::Place(placement) = app.join_session(id) else {
        panic!("the session must be placed again");
    };
    assert_eq!(old.connections(), 0, "the seat on the gone replica is released");
    let others: Vec<_> = (0..3).map(|_| wait(app.join_session(id))).collect();
    let placed = placement.seated(admitted(&app));
    assert_ne!(placed.replica().id(), old.id());
    for other in others {
        let Ok(SessionGrant::Joined(share)) = other.try_recv() else {
            panic!("the waiting connections join the placed session");
        };
        assert_eq!(share.replica().id(), placed.replica().id());
    }
    assert_eq!(app.connections(), 1);
}

#[test]
fn a_seatless_session_whose_replica_is_full_is_placed_elsewhere() {
    let (app, _) = app_with(2, 1, 32);
    let id = SessionId::from_bits(4);
    let first = app.start_session(admitted(&app), id);
    let home = Arc::clone(first.replica());
    drop(first);
    // Someone else takes the seat on the session's replica meanwhile.
    let (a, b) = (admitted(&app), admitted(&app));
    let _taken = if a.replica().id() == home.id() {
        drop(b);
        a
    } else {
        drop(a);
        b
    };

    let JoinSession::Place(placement) = app.join_session(id) else {
        panic!("the session's replica is full");
    };
    let placed = placement.seated(admitted(&app));
    assert_ne!(placed.replica().id(), home.id());
    assert_eq!(joined(app.join_session(id)).replica().id(), placed.replica().id());
}

#[test]
fn a_session_from_another_instance_joins_the_replica_its_cookie_names() {
    let (app, _) = app_with(3, 5, 32);
    let id = SessionId::from_bits(11);
    let named = Arc::clone(&app.replicas()[2]);
    let adopted = joined(app.adopt_session(id, named.name()));
    assert_eq!(adopted.replica().id(), named.id());
    assert_eq!(app.connections(), 1);
    let again = joined(app.adopt_session(id, named.name()));
    assert_eq!(again.replica().id(), named.id());
    assert_eq!(
        app.connections(),
        1,
        "a known session is joined, not adopted twice"
    );
    drop((adopted, again));
    assert_eq!(
        app.connections(),
        1,
        "a presented cookie confirms the session: its seat is held through the grace"
    );
}

#[test]
fn an_adopted_session_whose_replica_is_gone_or_full_is_placed_anew() {
    let (app, _) = app_with(2, 1, 32);
    let id = SessionId::from_bits(12);
    assert!(matches!(
        app.adopt_session(id, "no-such-replica"),
        JoinSession::Unknown
    ));
    let full = Arc::clone(&app.replicas()[0]);
    full.set_elsewhere(1);
    assert!(
        matches!(app.adopt_session(id, full.name()), JoinSession::Unknown),
        "peers' connections fill the replica"
    );
    assert_eq!(
        app.session_count(),
        0,
        "nothing is kept of a session that was not seated"
    );
    let resumed = app.resume_session(admitted(&app), id);
    assert_ne!(resumed.replica().id(), full.id());
    drop(resumed);
    assert_eq!(app.connections(), 1, "a resumed session is confirmed");
    assert_eq!(app.session_counts().confirmed, 1);
}

#[test]
fn a_seat_given_up_elsewhere_moves_here_even_onto_a_full_replica() {
    let (app, _) = app_with(1, 2, 32);
    let replica = Arc::clone(&app.replicas()[0]);
    // Another instance holds both seats, one of them the session's, in its grace.
    replica.set_elsewhere(2);
    let id = SessionId::from_bits(15);
    assert!(matches!(
        app.adopt_session(id, replica.name()),
        JoinSession::Unknown
    ));
    let moved = joined(app.adopt_session_held_elsewhere(id, replica.name()));
    assert_eq!(moved.replica().id(), replica.id());
    // That instance's next report counts one seat fewer: the total is what it was.
    replica.set_elsewhere(1);
    assert_eq!(replica.total_connections(), 2);
    assert!(
        matches!(app.admit(), Admission::Wait),
        "still full for everyone else"
    );
    assert!(app.has_replica_named(replica.name()));
    assert!(matches!(
        app.adopt_session_held_elsewhere(SessionId::from_bits(16), "gone"),
        JoinSession::Unknown
    ));
}

#[test]
fn a_vacant_session_is_given_up_to_the_instance_its_client_came_back_through() {
    let (app, _) = app_with(1, 5, 32);
    let id = SessionId::from_bits(13);
    assert_eq!(app.give_up_session(id), GaveUp::Unknown);
    let open = confirmed(&app, id);
    assert_eq!(app.give_up_session(id), GaveUp::Open, "its connection stays here");
    drop(open);
    assert_eq!(app.connections(), 1, "in its grace");
    assert_eq!(app.give_up_session(id), GaveUp::Released);
    assert_eq!((app.connections(), app.session_count()), (0, 0));

    let tentative = app.start_session(admitted(&app), SessionId::from_bits(14));
    drop(tentative);
    assert_eq!(app.give_up_session(SessionId::from_bits(14)), GaveUp::Forgotten);
}

#[test]
fn a_placement_given_up_passes_to_the_next_waiting_connection() {
    let (app, _) = app_with(1, 1, 32);
    let id = SessionId::from_bits(5);
    drop(app.start_session(admitted(&app), id));
    let _full = admitted(&app);
    let JoinSession::Place(placement) = app.join_session(id) else {
        panic!("no room on the session's replica");
    };
    let next = wait(app.join_session(id));
    drop(placement);
    assert!(
        matches!(next.try_recv(), Ok(SessionGrant::Place(_))),
        "the next connection places it"
    );
}

#[test]
fn a_placement_given_up_with_nobody_waiting_leaves_a_seatless_session_that_expires() {
    let (app, clock) = app_with(1, 1, 32);
    let id = SessionId::from_bits(6);
    drop(app.start_session(admitted(&app), id));
    let _full = admitted(&app);
    let JoinSession::Place(placement) = app.join_session(id) else {
        panic!("no room on the session's replica");
    };
    drop(placement);
    assert!(app.expire_sessions().is_some());
    clock.advance(GRACE);
    assert_eq!(app.expire_sessions(), None);
    assert_eq!(app.session_count(), 0);
}

#[test]
fn a_session_moves_with_a_connection_its_replica_refused() {
    let (app, _) = app_with(2, 5, 32);
    let id = SessionId::from_bits(12);
    let seat = confirmed(&app, id);
    let refused = seat.replica().id();
    let other = app.seat_excluding(&[refused]).expect("another replica");
    let moved = seat.move_to(other);
    assert_ne!(moved.replica().id(), refused);
    assert_eq!(joined(app.join_session(id)).replica().id(), moved.replica().id());
    assert_eq!(app.connections(), 1);
}

#[test]
fn going_vacant_raises_the_signal() {
    let (app, _) = app_with_clock(5);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(app.poll_session_vacated(&mut cx).is_pending());
    drop(app.start_session(admitted(&app), SessionId::from_bits(5)));
    assert!(app.poll_session_vacated(&mut cx).is_ready());
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
fn clearing_sessions_releases_vacant_sessions_seats() {
    let (app, _) = app_with_clock(5);
    drop(confirmed(&app, SessionId::from_bits(11)));
    assert_eq!(app.connections(), 1);
    app.clear_sessions();
    assert_eq!(app.connections(), 0);
}

#[test]
fn an_app_dropped_with_sessions_in_their_grace_goes_and_gives_their_seats_back() {
    let (app, _) = app_with_clock(5);
    drop(confirmed(&app, SessionId::from_bits(12)));
    drop(confirmed(&app, SessionId::from_bits(13)));
    let replicas = app.replicas();
    assert_eq!(replicas.iter().map(|r| r.connections()).sum::<u32>(), 2);
    let gone = Arc::downgrade(&app);
    drop(app);
    assert!(gone.upgrade().is_none(), "sessions do not keep their app alive");
    assert!(replicas.iter().all(|r| r.connections() == 0));
}

/// One step of a client population against an app with cookie affinity.
#[derive(Clone, Debug)]
enum Step {
    /// A connection without a cookie starts a session.
    Start,
    /// A connection presents the cookie of session `n` (modulo those issued).
    Join(usize),
    /// Connection `n` (modulo those open) ends.
    Close(usize),
    /// Time passes, in seconds, and expiry runs.
    Wait(u64),
    /// Replica `n` leaves the set.
    Remove(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Start),
        4 => (0..16usize).prop_map(Step::Join),
        4 => (0..16usize).prop_map(Step::Close),
        1 => (0..40u64).prop_map(Step::Wait),
        1 => (0..3usize).prop_map(Step::Remove),
    ]
}

proptest! {
    /// Whatever clients do, seats are never more than sessions holding one plus connections of their own,
    /// no replica exceeds `max_connections`, no session exceeds `max_session_connections`, and once every
    /// connection closed and the grace passed, every seat is free.
    #[test]
    fn sessions_never_leak_or_overfill_seats(steps in proptest::collection::vec(step(), 1..80)) {
        let (app, clock) = app_with(3, 3, 2);
        let mut issued = Vec::new();
        let mut open: Vec<Share> = Vec::new();
        let mut placements = Vec::new();
        for step in steps {
            match step {
                Step::Start => {
                    if let Admission::Seated(seat) = app.admit() {
                        let id = SessionId::from_bits(issued.len() as u128 + 1);
                        issued.push(id);
                        open.push(app.start_session(seat, id));
                    }
                }
                Step::Join(n) if !issued.is_empty() => match app.join_session(issued[n % issued.len()]) {
                    JoinSession::Joined(share) => open.push(share),
                    JoinSession::Place(placement) => match app.admit() {
                        Admission::Seated(seat) => open.push(placement.seated(seat)),
                        _ => placements.push(placement),
                    },
                    JoinSession::Wait(_) | JoinSession::Unknown => {}
                },
                Step::Close(n) if !open.is_empty() => drop(open.swap_remove(n % open.len())),
                Step::Wait(seconds) => {
                    placements.clear();
                    clock.advance(Duration::from_secs(seconds));
                    app.expire_sessions();
                }
                Step::Remove(n) => {
                    let mut replicas = app.replicas().to_vec();
                    if n < replicas.len() {
                        replicas.remove(n);
                        app.set_replicas(replicas);
                    }
                }
                Step::Join(_) | Step::Close(_) => {}
            }
            for replica in app.replicas().iter() {
                prop_assert!(replica.connections() <= 3);
            }
            let live = app.sessions().live.iter().map(|e| e.value().lock().open).max().unwrap_or(0);
            prop_assert!(live <= 2);
        }
        placements.clear();
        open.clear();
        clock.advance(GRACE);
        app.expire_sessions();
        prop_assert_eq!(app.demand(), 0);
        prop_assert_eq!(app.session_count(), 0);
    }
}
