use std::sync::mpsc;
use std::thread;

use crate::balance::Balance;
use crate::clock::{ManualClock, Timestamp};
use crate::close::{CloseReason, RejectReason};
use crate::policy::Policy;
use crate::replica::ReplicaState;

use super::*;
use crate::testing::{ready_replicas, replica_at};

/// A waiter backed by a std channel; "abandoned" once its receiver is dropped.
struct ChannelWaiter(mpsc::SyncSender<Seat>, Arc<()>);

impl Waiter for ChannelWaiter {
    fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.1) == 1
    }

    fn offer(self: Box<Self>, seat: Seat) -> Result<(), Seat> {
        if self.is_abandoned() {
            return Err(seat);
        }
        self.0.try_send(seat).map_err(|e| match e {
            mpsc::TrySendError::Full(s) | mpsc::TrySendError::Disconnected(s) => s,
        })
    }
}

/// The waiting side: the receiver, and a liveness token whose drop marks the waiter abandoned.
struct Waiting {
    seats: mpsc::Receiver<Seat>,
    _alive: Arc<()>,
}

impl Waiting {
    fn seat(&self) -> Option<Seat> {
        self.seats.try_recv().ok()
    }
}

fn waiter() -> (Box<dyn Waiter>, Waiting) {
    let (tx, rx) = mpsc::sync_channel(1);
    let alive = Arc::new(());
    (
        Box::new(ChannelWaiter(tx, Arc::clone(&alive))),
        Waiting {
            seats: rx,
            _alive: alive,
        },
    )
}

fn app(replicas: usize, max_connections: u32, max_queued: u32) -> Arc<App> {
    let policy = Policy {
        max_connections,
        max_queued,
        balance: Balance::LeastConnections,
        ..Policy::default()
    };
    let app = App::new("test", policy, Arc::new(ManualClock::default()));
    app.set_replicas(ready_replicas(replicas));
    app
}

fn seated(a: Admission) -> Seat {
    match a {
        Admission::Seated(g) => g,
        other => panic!("expected a seat, got {other:?}"),
    }
}

#[test]
fn guard_counts_while_alive() {
    let app = app(1, 2, 10);
    let g = seated(app.admit());
    assert_eq!(app.connections(), 1);
    drop(g);
    assert_eq!(app.connections(), 0);
}

#[test]
fn third_connection_waits_and_takes_the_first_freed_seat() {
    let app = app(1, 2, 10);
    let a = seated(app.admit());
    let _b = seated(app.admit());
    assert!(matches!(app.admit(), Admission::Wait));
    let (w, waiting) = waiter();
    app.enqueue(w).expect("room in queue");
    assert!(waiting.seat().is_none());
    assert_eq!(app.queued(), 1);
    drop(a);
    let c = waiting.seat().expect("seated on release");
    assert_eq!(app.queued(), 0);
    assert_eq!(app.connections(), 2);
    drop(c);
    assert_eq!(app.connections(), 1);
}

#[test]
fn waiters_are_served_in_order_and_newcomers_queue_behind_them() {
    let app = app(1, 1, 10);
    let first = seated(app.admit());
    let (w1, waiting1) = waiter();
    let (w2, waiting2) = waiter();
    app.enqueue(w1).expect("room");
    app.enqueue(w2).expect("room");
    drop(first);
    let s1 = waiting1.seat().expect("first waiter first");
    assert!(waiting2.seat().is_none());
    drop(s1);
    // A seat is free only for an instant; the second waiter already has it, not a newcomer.
    assert!(matches!(app.admit(), Admission::Wait));
    assert!(waiting2.seat().is_some());
}

#[test]
fn full_queue_refuses_and_abandoned_waiters_free_their_place() {
    let app = app(1, 1, 2);
    let _held = seated(app.admit());
    let (w1, waiting1) = waiter();
    let (w2, _waiting2) = waiter();
    let (w3, _waiting3) = waiter();
    app.enqueue(w1).expect("room");
    app.enqueue(w2).expect("room");
    assert_eq!(app.enqueue(w3).err(), Some(QueueFull));
    drop(waiting1);
    let (w4, _waiting4) = waiter();
    app.enqueue(w4).expect("the abandoned place is reused");
    assert_eq!(app.queued(), 2);
}

#[test]
fn sweeping_removes_only_departed_waiters() {
    let app = app(1, 1, 10);
    let _held = seated(app.admit());
    let (w1, waiting1) = waiter();
    let (w2, _waiting2) = waiter();
    app.enqueue(w1).expect("room");
    app.enqueue(w2).expect("room");
    drop(waiting1);
    assert_eq!(app.queued(), 2);
    app.sweep_queue();
    assert_eq!(app.queued(), 1);
}

#[test]
fn a_seat_offered_to_a_departed_waiter_goes_to_the_next() {
    let app = app(1, 1, 10);
    let held = seated(app.admit());
    let (w1, waiting1) = waiter();
    let (w2, waiting2) = waiter();
    app.enqueue(w1).expect("room");
    app.enqueue(w2).expect("room");
    drop(waiting1);
    drop(held);
    let _seat = waiting2.seat().expect("the next waiter is seated");
    assert_eq!(app.connections(), 1);
}

#[test]
fn offer_refused_returns_the_seat() {
    struct Refuses;
    impl Waiter for Refuses {
        fn is_abandoned(&self) -> bool {
            false
        }
        fn offer(self: Box<Self>, seat: Seat) -> Result<(), Seat> {
            Err(seat)
        }
    }
    let app = app(1, 1, 10);
    app.enqueue(Box::new(Refuses)).expect("room");
    assert_eq!(app.connections(), 0);
    assert_eq!(app.queued(), 0);
}

#[test]
fn new_replicas_and_raised_limits_seat_waiters() {
    let app = app(0, 1, 10);
    assert!(matches!(app.admit(), Admission::NoReplica));
    let (w, waiting) = waiter();
    app.enqueue(w).expect("room");
    let replica = replica_at("late", 100, ReplicaState::Starting);
    app.set_replicas(vec![Arc::clone(&replica)]);
    assert!(
        waiting.seat().is_none(),
        "a starting replica takes no connections"
    );
    replica.set_state(ReplicaState::Ready);
    app.replicas_changed();
    let _first = waiting.seat().expect("seated once ready");

    let (w, waiting) = waiter();
    app.enqueue(w).expect("room");
    assert!(waiting.seat().is_none());
    app.set_policy(Policy {
        max_connections: 2,
        ..(*app.policy()).clone()
    });
    assert!(waiting.seat().is_some());
}

#[test]
fn retry_skips_tried_replicas_and_ignores_the_queue() {
    let app = app(2, 1, 10);
    let first = seated(app.admit());
    let tried = [first.replica().id()];
    drop(first);
    let again = app.seat_excluding(&tried).expect("the other replica");
    assert_ne!(again.replica().id(), tried[0]);
    let both = [tried[0], again.replica().id()];
    assert_eq!(app.seat_excluding(&both).err(), Some(NoSeat::NoReplica));
}

#[test]
fn stats_count_by_reason() {
    let app = app(0, 1, 1);
    app.stats().record_close(CloseReason::Inactive);
    app.stats().record_close(CloseReason::Inactive);
    app.stats().record_reject(RejectReason::QueueFull);
    assert_eq!(app.stats().closed(CloseReason::Inactive), 2);
    assert_eq!(app.stats().closed(CloseReason::MaxAge), 0);
    assert_eq!(app.stats().rejected(RejectReason::QueueFull), 1);
}

/// Many threads admitting, queueing, abandoning and releasing at once: the cap always holds, every waiter
/// is either seated or abandoned, and the count returns to zero.
#[test]
fn concurrent_admission_never_exceeds_the_cap() {
    const MAX: u32 = 3;
    let app = app(2, MAX, 1_000);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let app = Arc::clone(&app);
            thread::spawn(move || {
                for i in 0..500 {
                    let guard = match app.admit() {
                        Admission::Seated(g) => Some(g),
                        Admission::Wait => {
                            let (w, waiting) = waiter();
                            if app.enqueue(w).is_err() {
                                continue;
                            }
                            if (t + i) % 7 == 0 {
                                None
                            } else {
                                let deadline = std::time::Duration::from_secs(10);
                                waiting.seats.recv_timeout(deadline).ok()
                            }
                        }
                        Admission::NoReplica => panic!("replicas exist"),
                    };
                    for r in app.replicas().iter() {
                        assert!(r.connections() <= MAX);
                    }
                    drop(guard);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker");
    }
    assert_eq!(app.connections(), 0);
}

#[test]
fn the_scale_signal_fires_only_when_the_replicas_needed_change() {
    let app = app(2, 4, 10);
    app.set_policy(Policy {
        spawn_threshold: crate::SpawnThreshold::new(75).expect("valid"),
        ..(*app.policy()).clone()
    });
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut raised = || app.poll_scale_signal(&mut cx).is_ready();
    assert!(raised(), "a policy change wakes the scaler");
    let mut seats = Vec::new();
    let mut fired = Vec::new();
    for n in 1..=7 {
        seats.push(seated(app.admit()));
        fired.push((n, raised()));
    }
    // 3 connections per replica at 75% of 4: the need changes at 1, 4 and 7.
    assert_eq!(
        fired,
        [
            (1, true),
            (2, false),
            (3, false),
            (4, true),
            (5, false),
            (6, false),
            (7, true)
        ]
    );
    assert_eq!(app.demand(), 7);
    seats.pop();
    assert!(raised(), "7 -> 6 needs one replica less");
    seats.pop();
    assert!(!raised());
    app.replicas()[0].set_state(ReplicaState::Draining);
    let on_draining = seats
        .iter()
        .position(|s| s.replica().state() == ReplicaState::Draining)
        .expect("a seat on the draining replica");
    drop(seats.remove(on_draining));
    assert!(raised(), "a draining replica emptying wakes the scaler");
}

#[test]
fn paused_starts_refuse_the_waiters_only_when_no_replica_is_on_its_way() {
    let clock = Arc::new(ManualClock::default());
    let app = App::new(
        "cold",
        Policy::default(),
        Arc::clone(&clock) as Arc<dyn crate::Clock>,
    );
    let (w, waiting) = waiter();
    app.enqueue(w).expect("room");
    assert_eq!(app.demand(), 1);
    assert_eq!(app.starts_paused_for(), None);

    app.pause_starts(Timestamp::from_millis(2_000));
    assert_eq!(app.starts_paused_for(), Some(std::time::Duration::from_secs(2)));
    assert!(
        matches!(waiting.seats.try_recv(), Err(mpsc::TryRecvError::Disconnected)),
        "nothing can seat it before the pause ends: it is refused now"
    );
    assert_eq!((app.queued(), app.demand()), (0, 0));
    clock.advance(std::time::Duration::from_secs(2));
    assert_eq!(app.starts_paused_for(), None, "the pause ends");
    app.resume_starts();

    // A replica still starting will seat the waiters: they stay.
    app.set_replicas(vec![replica_at("starting", 0, ReplicaState::Starting)]);
    let (w, waiting) = waiter();
    app.enqueue(w).expect("room");
    app.pause_starts(Timestamp::from_millis(10_000));
    assert_eq!(app.queued(), 1);
    assert!(matches!(waiting.seats.try_recv(), Err(mpsc::TryRecvError::Empty)));
}

#[test]
fn demand_elsewhere_counts_for_the_scaler_and_every_count_change_is_signalled() {
    let app = app(1, 4, 10);
    app.set_policy(Policy {
        spawn_threshold: crate::SpawnThreshold::new(100).expect("valid"),
        ..(*app.policy()).clone()
    });
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let _ = app.poll_counts_changed(&mut cx);
    app.set_elsewhere_demand(1);
    assert!(
        app.poll_scale_signal(&mut cx).is_ready(),
        "one connection elsewhere wants a replica"
    );
    app.set_elsewhere_demand(3);
    assert_eq!((app.demand(), app.local_demand()), (3, 0));
    assert!(
        app.poll_scale_signal(&mut cx).is_pending(),
        "still one replica's worth at 100 %"
    );
    app.set_elsewhere_demand(5);
    assert!(
        app.poll_scale_signal(&mut cx).is_ready(),
        "five want a second replica"
    );
    assert!(
        app.poll_counts_changed(&mut cx).is_pending(),
        "others' counts are not this instance's to report"
    );
    let seat = seated(app.admit());
    assert!(
        app.poll_counts_changed(&mut cx).is_ready(),
        "a seat taken here is"
    );
    assert_eq!((app.demand(), app.local_demand()), (6, 1));
    drop(seat);
    assert!(app.poll_counts_changed(&mut cx).is_ready(), "and one given back");
}

#[test]
fn replicas_marked_leaving_take_connections_only_when_the_others_are_full() {
    let app = app(2, 2, 10);
    let replicas = app.replicas();
    app.mark_leaving(&[replicas[0].id()]);
    assert!(replicas[0].is_leaving() && !replicas[1].is_leaving());
    let on: Vec<Seat> = (0..3).map(|_| seated(app.admit())).collect();
    let names: Vec<&str> = on.iter().map(|s| s.replica().name()).collect();
    assert_eq!(names, ["r1", "r1", "r0"], "the leaving one last");
    drop(on);
    app.mark_leaving(&[]);
    assert!(!replicas[0].is_leaving());
    let spread: Vec<Seat> = (0..2).map(|_| seated(app.admit())).collect();
    assert_ne!(
        spread[0].replica().id(),
        spread[1].replica().id(),
        "least-connections again"
    );
}
