//! Cookie affinity (`docs/glossary.md`, "Sessions"): with `affinity = "cookie"` the unit of occupancy is
//! the *session*. Every connection that presents a session's cookie goes to the session's replica, and the
//! session holds one seat there however many connections it has open — up to `max_session_connections`;
//! past that, its connections wait in the session's own queue, never in the app's, so they are never
//! demand.
//!
//! A session is *tentative* until its client sends the cookie back: a client that ignores cookies (a bot, a
//! health checker, `curl`) would otherwise lock a seat for `reconnect_grace` with every request. A tentative
//! session gives its seat back when its last connection ends; only the replica it was on is remembered, so
//! that the client's next request returns there if the replica has room. A *confirmed* session keeps its
//! seat for `reconnect_grace` after its last connection closes, so a reconnecting client finds its replica
//! and its seat still there.

mod vacant;

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;

use crate::app::App;
use crate::app::admission::{HeldSeat, Seat};
use crate::clock::Timestamp;
use crate::replica::Replica;
use crate::signal::Signal;

use vacant::{VacantSessions, Went};

/// How a client's connections are tied to a replica (the `affinity` key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Affinity {
    /// Every connection is placed on its own.
    #[default]
    None,
    /// Connections carrying the same affinity cookie share one replica and one seat.
    Cookie,
}

/// A session's identity: 128 random bits, written as 32 hex digits in the affinity cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(u128);

/// One connection's share of its session's seat. The last share dropped releases a tentative session's
/// seat at once and starts a confirmed session's grace.
#[must_use = "the connection belongs to the session only while this lives"]
pub struct Share {
    app: Arc<App>,
    session: Arc<Session>,
    replica: Arc<Replica>,
    /// The session's placement this share belongs to; shares of an earlier one (on a replica that is gone)
    /// no longer count.
    epoch: u64,
    /// False for a share that was offered to a waiter who had left: it was never counted.
    counted: bool,
}

/// What became of a connection that presented a session cookie.
#[derive(Debug)]
pub enum JoinSession {
    /// It shares its session's seat.
    Joined(Share),
    /// The session has `max_session_connections` connections open, or is being placed by another of its
    /// connections: this one waits in the session's queue.
    Wait(SessionQueue),
    /// The session holds no seat and its replica cannot take it back (full, draining, gone, or others wait
    /// for a seat in the app's queue): this connection finds the session a seat through ordinary admission
    /// and hands it to [`Placement::seated`]; the session's other connections wait for it meanwhile.
    Place(Placement),
    /// No such session (never issued, or expired): start a new one.
    Unknown,
}

/// The way into a session's own queue, for a connection that must wait for a share.
#[must_use = "the connection is not queued until enqueued"]
pub struct SessionQueue {
    app: Arc<App>,
    session: Arc<Session>,
}

/// What a connection waiting in a session's queue is handed.
#[derive(Debug)]
pub enum SessionGrant {
    /// A share of the session's seat.
    Joined(Share),
    /// The duty to place the session: the connection that was placing it gave up.
    Place(Placement),
}

/// A connection waiting in a session's queue.
///
/// The data plane implements it over a one-shot channel, as it does [`crate::Waiter`] for the app's queue.
pub trait SessionWaiter: Send {
    /// True once the connection stopped waiting (timed out, client gone); it is then skipped.
    fn is_abandoned(&self) -> bool;
    /// Hands the waiter its grant, or gives it back if the waiter is gone.
    fn offer(self: Box<Self>, grant: SessionGrant) -> Result<(), SessionGrant>;
}

/// The session's queue already holds `max_session_connections` waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionQueueFull;

/// The duty to find a session a seat. Dropped without [`Placement::seated`] (the connection was refused or
/// left), the duty passes to the session's next waiting connection.
#[must_use = "the session's other connections wait until it is placed"]
pub struct Placement {
    app: Arc<App>,
    session: Arc<Session>,
    done: bool,
}

/// What became of a session another instance asked this one to let go of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GaveUp {
    /// It was vacant and held a seat, now given back.
    Released,
    /// It was vacant without a seat: only forgotten.
    Forgotten,
    /// It has connections open here (or one is placing it): it stays.
    Open,
    /// No such session here.
    Unknown,
}

/// Sessions in each state, for metrics and the admin API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// Sessions whose client has not sent their cookie back yet.
    pub tentative: usize,
    /// Sessions whose client sent their cookie back.
    pub confirmed: usize,
}

/// The sessions of one app: who is where, and which vacant ones are waiting to expire.
#[derive(Default)]
pub(crate) struct Sessions {
    live: DashMap<SessionId, Arc<Session>>,
    vacant: Mutex<VacantSessions>,
    went_vacant: Signal,
}

/// One session. Its state sits behind a lock of its own: only the connections of one client contend for it.
pub(crate) struct Session {
    id: SessionId,
    state: Mutex<SessionState>,
}

struct SessionState {
    /// Where the session lives (or, without a seat, last lived).
    replica: Arc<Replica>,
    /// The session's one seat: held while a connection is open, and through the grace once confirmed.
    seat: Option<HeldSeat>,
    /// Connections sharing the seat now.
    open: u32,
    /// Raised each time the session is placed again because its replica is gone: the connections still
    /// open there are not the session's any more.
    epoch: u64,
    /// The client sent the cookie back.
    confirmed: bool,
    /// A connection is finding the session a seat; the others wait for it.
    placing: bool,
    /// When the last connection closed; `None` while one is open.
    vacant_since: Option<Timestamp>,
    /// The session has an entry among the vacant sessions that hold a seat (there is at most one).
    listed_vacant: bool,
    waiters: VecDeque<Box<dyn SessionWaiter>>,
}

impl Drop for Sessions {
    /// The app is going away: wake the task expiring its sessions so that it notices and stops.
    fn drop(&mut self) {
        self.went_vacant.raise();
    }
}

impl Affinity {
    /// The value as spelled in the config file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Affinity::None => "none",
            Affinity::Cookie => "cookie",
        }
    }
}

impl FromStr for Affinity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Affinity::None),
            "cookie" => Ok(Affinity::Cookie),
            other => Err(format!(
                "unknown affinity \"{other}\", expected \"none\" or \"cookie\""
            )),
        }
    }
}

impl SessionId {
    /// A session id from 128 random bits (the runtime supplies them from the OS).
    pub const fn from_bits(bits: u128) -> Self {
        SessionId(bits)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for SessionId {
    type Err = ();

    /// Exactly 32 hex digits, as tideway writes them; anything else is not a session of ours.
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        u128::from_str_radix(s, 16).map(SessionId).map_err(|_| ())
    }
}

impl App {
    /// Seats a connection in the session `id` its cookie names: on the session's replica, without taking
    /// another seat, for as long as that replica is in the app's set (draining included — the session's
    /// state lives there). Presenting the cookie confirms the session.
    pub fn join_session(self: &Arc<Self>, id: SessionId) -> JoinSession {
        let Some(session) = self.sessions().live.get(&id).map(|s| Arc::clone(&s)) else {
            return JoinSession::Unknown;
        };
        let mut stale = None;
        let joined = {
            let mut state = session.lock();
            state.confirmed = true;
            let listed = self.replicas().iter().any(|r| r.id() == state.replica.id());
            if state.placing {
                JoinSession::Wait(self.session_queue(&session))
            } else if state.seat.is_some() && !listed {
                // The replica is gone: so is what the session kept there. It starts over elsewhere.
                stale = state.seat.take();
                state.epoch += 1;
                state.open = 0;
                state.placing = true;
                JoinSession::Place(self.placement(&session))
            } else if state.seat.is_some() {
                match self.share(&session, &mut state) {
                    Some(share) => JoinSession::Joined(share),
                    None => JoinSession::Wait(self.session_queue(&session)),
                }
            } else if let Some(seat) = listed.then(|| self.seat_on(&state.replica)).flatten() {
                state.seat = Some(seat.into_held());
                match self.share(&session, &mut state) {
                    Some(share) => JoinSession::Joined(share),
                    None => JoinSession::Wait(self.session_queue(&session)),
                }
            } else {
                state.placing = true;
                JoinSession::Place(self.placement(&session))
            }
        };
        // Released outside the session's lock: giving a seat back may seat a waiter of the app.
        drop(stale);
        joined
    }

    /// Makes a freshly admitted connection the first of a new, tentative session `id`.
    pub fn start_session(self: &Arc<Self>, seat: Seat, id: SessionId) -> Share {
        self.open_session(seat, id, false)
    }

    /// Takes in a session this instance does not know, whose signed cookie names `replica`: another
    /// instance issued it, or this one before a restart. The session joins that replica if it is in the
    /// app's set and has a seat free (counting every instance's connections), as a returning session
    /// would; [`JoinSession::Unknown`] means it must be placed anew and given to
    /// [`App::resume_session`]. A session that became known meanwhile (another of its connections got here
    /// first) is joined as usual.
    pub fn adopt_session(self: &Arc<Self>, id: SessionId, replica: &str) -> JoinSession {
        self.adopt(id, replica, |app, replica| app.seat_on(replica))
    }

    /// Takes in session `id` on `replica`, full or not, with the seat another instance counts for it:
    /// one it just gave up ([`App::give_up_session`] there) — the seat moves, the total stays — or one
    /// it holds for the session's connections open there, which the replica serves as one session.
    pub fn adopt_session_held_elsewhere(self: &Arc<Self>, id: SessionId, replica: &str) -> JoinSession {
        self.adopt(id, replica, |app, replica| app.transferred_seat_on(replica))
    }

    /// Whether the app's set has a replica named `name`.
    pub fn has_replica_named(&self, name: &str) -> bool {
        self.replicas().iter().any(|r| r.name() == name)
    }

    fn adopt(
        self: &Arc<Self>,
        id: SessionId,
        replica: &str,
        seat_on: impl FnOnce(&Arc<Self>, &Arc<Replica>) -> Option<Seat>,
    ) -> JoinSession {
        if self.sessions().live.contains_key(&id) {
            return self.join_session(id);
        }
        let named = self.replicas().iter().find(|r| r.name() == replica).cloned();
        let Some(seat) = named.and_then(|replica| seat_on(self, &replica)) else {
            return JoinSession::Unknown;
        };
        let unneeded = match self.sessions().live.entry(id) {
            dashmap::Entry::Occupied(_) => seat,
            dashmap::Entry::Vacant(vacant) => {
                let (session, share) = self.new_session(seat, id, true);
                vacant.insert(session);
                return JoinSession::Joined(share);
            }
        };
        // Given back outside the map's lock: releasing a seat may seat a waiter of the app.
        drop(unneeded);
        self.join_session(id)
    }

    /// Makes a freshly admitted connection the first of the session `id` its client already holds a cookie
    /// for, which could not return to the replica the cookie names: the session lives on the new seat's
    /// replica from now on (and its cookie is rewritten to say so).
    pub fn resume_session(self: &Arc<Self>, seat: Seat, id: SessionId) -> Share {
        self.open_session(seat, id, true)
    }

    fn open_session(self: &Arc<Self>, seat: Seat, id: SessionId, confirmed: bool) -> Share {
        let (session, share) = self.new_session(seat, id, confirmed);
        self.sessions().live.insert(id, session);
        share
    }

    /// A session `id` seated on `seat` with its first connection, not yet among the live ones.
    fn new_session(self: &Arc<Self>, seat: Seat, id: SessionId, confirmed: bool) -> (Arc<Session>, Share) {
        let replica = Arc::clone(seat.replica());
        let session = Arc::new(Session {
            id,
            state: Mutex::new(SessionState {
                replica: Arc::clone(&replica),
                seat: Some(seat.into_held()),
                open: 1,
                epoch: 0,
                confirmed,
                placing: false,
                vacant_since: None,
                listed_vacant: false,
                waiters: VecDeque::new(),
            }),
        });
        let share = Share {
            app: Arc::clone(self),
            session: Arc::clone(&session),
            replica,
            epoch: 0,
            counted: true,
        };
        (session, share)
    }

    /// Lets go of session `id` for another instance its client came back through: a vacant session's seat is
    /// given back and the session forgotten here, so that its seat is counted once, where the client now
    /// is. A session with connections open here keeps them and its seat.
    pub fn give_up_session(&self, id: SessionId) -> GaveUp {
        let Some(session) = self.sessions().live.get(&id).map(|s| Arc::clone(&s)) else {
            return GaveUp::Unknown;
        };
        let seat = {
            let mut state = session.lock();
            if state.open > 0 || state.placing {
                return GaveUp::Open;
            }
            self.sessions()
                .live
                .remove_if(&id, |_, s| Arc::ptr_eq(s, &session));
            state.seat.take()
        };
        // Given back outside the session's lock: releasing the seat may seat a waiter of the app.
        let held = seat.is_some();
        drop(seat);
        if held { GaveUp::Released } else { GaveUp::Forgotten }
    }

    /// Ends what is due: confirmed sessions vacant for `reconnect_grace` give their seat back, and remembered
    /// seatless sessions are forgotten after the same time (or sooner, oldest first, when there are too
    /// many). Returns when the next one is due.
    pub fn expire_sessions(&self) -> Option<Timestamp> {
        vacant::expire(self, self.now(), self.policy().reconnect_grace)
    }

    /// Ready when a session went vacant since the last time it was ready: its expiry must be scheduled.
    pub fn poll_session_vacated(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.sessions().went_vacant.poll_raised(cx)
    }

    /// Sessions currently known (open, within their grace, or remembered without a seat).
    pub fn session_count(&self) -> usize {
        self.sessions().live.len()
    }

    /// Sessions known now, by state.
    pub fn session_counts(&self) -> SessionCounts {
        let mut counts = SessionCounts::default();
        for entry in &self.sessions().live {
            if entry.value().lock().confirmed {
                counts.confirmed += 1;
            } else {
                counts.tentative += 1;
            }
        }
        counts
    }

    /// Forgets every session, releasing vacant ones' seats: for an app leaving the configuration, whose
    /// sessions no client can come back to — its replicas then drain without waiting out the grace.
    pub fn clear_sessions(&self) {
        let sessions: Vec<_> = self
            .sessions()
            .live
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect();
        self.sessions().live.clear();
        for session in sessions {
            let (seat, waiters) = {
                let mut state = session.lock();
                (state.seat.take(), std::mem::take(&mut state.waiters))
            };
            drop((seat, waiters));
        }
        self.sessions().vacant_lock().clear();
    }

    /// A share of `session`'s seat if it has room for another connection; the caller holds its lock.
    fn share(self: &Arc<Self>, session: &Arc<Session>, state: &mut SessionState) -> Option<Share> {
        if state.seat.is_none() || state.open >= self.policy().max_session_connections {
            return None;
        }
        state.open += 1;
        state.vacant_since = None;
        Some(Share {
            app: Arc::clone(self),
            session: Arc::clone(session),
            replica: Arc::clone(&state.replica),
            epoch: state.epoch,
            counted: true,
        })
    }

    fn session_queue(self: &Arc<Self>, session: &Arc<Session>) -> SessionQueue {
        SessionQueue {
            app: Arc::clone(self),
            session: Arc::clone(session),
        }
    }

    fn placement(self: &Arc<Self>, session: &Arc<Session>) -> Placement {
        Placement {
            app: Arc::clone(self),
            session: Arc::clone(session),
            done: false,
        }
    }

    /// Hands shares to the session's waiting connections while it has a seat and room; the caller holds
    /// its lock. A waiter that left gets nothing: the share it was offered is taken back uncounted.
    fn serve_session_waiters(self: &Arc<Self>, session: &Arc<Session>, state: &mut SessionState) {
        while !state.placing && !state.waiters.is_empty() {
            let Some(share) = self.share(session, state) else {
                return;
            };
            let Some(waiter) = state.waiters.pop_front() else {
                return;
            };
            if let Err(unwanted) = waiter.offer(SessionGrant::Joined(share)) {
                unwanted.disarm();
                state.open -= 1;
            }
        }
    }

    /// Passes the duty of placing `session` to its first waiting connection still there; the caller holds
    /// its lock and has cleared `placing`.
    fn hand_over_placement(self: &Arc<Self>, session: &Arc<Session>, state: &mut SessionState) {
        while let Some(waiter) = state.waiters.pop_front() {
            if waiter.is_abandoned() {
                continue;
            }
            state.placing = true;
            match waiter.offer(SessionGrant::Place(self.placement(session))) {
                Ok(()) => return,
                Err(unwanted) => {
                    unwanted.disarm();
                    state.placing = false;
                }
            }
        }
    }
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, SessionState> {
        // Every update of the state is complete before anything that could panic: a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sessions {
    fn vacant_lock(&self) -> MutexGuard<'_, VacantSessions> {
        self.vacant.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that a session went vacant, so that its expiry is scheduled.
    fn went_vacant(&self, id: SessionId, went: Went) {
        self.vacant_lock().push(id, went);
        self.went_vacant.raise();
    }
}

impl SessionQueue {
    /// Queues the connection for the session's next free share (FIFO), or for placing the session; it may
    /// be served before this returns. At most `max_session_connections` connections wait per session.
    pub fn enqueue(self, waiter: Box<dyn SessionWaiter>) -> Result<(), SessionQueueFull> {
        let mut state = self.session.lock();
        state.waiters.retain(|w| !w.is_abandoned());
        let limit = self.app.policy().max_session_connections;
        if usize::try_from(limit).is_ok_and(|limit| state.waiters.len() >= limit) {
            return Err(SessionQueueFull);
        }
        state.waiters.push_back(waiter);
        self.app.serve_session_waiters(&self.session, &mut state);
        Ok(())
    }
}

impl SessionGrant {
    /// Takes back a grant its waiter did not accept, under the session's lock: dropping it must then do
    /// nothing, neither uncount a share nor hand the placement on.
    fn disarm(self) {
        match self {
            SessionGrant::Joined(mut share) => share.counted = false,
            SessionGrant::Place(mut placement) => placement.done = true,
        }
    }
}

impl Placement {
    /// Makes `seat`, taken for this connection through the app's admission, the session's seat: the session
    /// now lives on its replica, and its waiting connections join it there.
    pub fn seated(mut self, seat: Seat) -> Share {
        self.done = true;
        let replica = Arc::clone(seat.replica());
        let mut state = self.session.lock();
        state.placing = false;
        state.replica = Arc::clone(&replica);
        let previous = state.seat.replace(seat.into_held());
        state.open += 1;
        state.vacant_since = None;
        let share = Share {
            app: Arc::clone(&self.app),
            session: Arc::clone(&self.session),
            replica,
            epoch: state.epoch,
            counted: true,
        };
        self.app.serve_session_waiters(&self.session, &mut state);
        drop(state);
        drop(previous);
        share
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let now = self.app.now();
        {
            let mut state = self.session.lock();
            state.placing = false;
            self.app.hand_over_placement(&self.session, &mut state);
            if state.placing || state.open > 0 {
                return;
            }
            state.vacant_since = Some(now);
        }
        // Nobody is left to place it: the session is remembered, seatless, until it expires.
        self.app
            .sessions()
            .went_vacant(self.session.id, Went::Seatless(now));
    }
}

impl Share {
    /// The replica the connection goes to.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// The app the session belongs to.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The session's id, for the cookie.
    pub fn id(&self) -> SessionId {
        self.session.id
    }

    /// Moves the session with this connection onto `seat`'s replica, for a connection whose replica refused
    /// it before anything was sent: the session's next connections go there too.
    pub fn move_to(mut self, seat: Seat) -> Share {
        let replica = Arc::clone(seat.replica());
        let previous = {
            let mut state = self.session.lock();
            state.replica = Arc::clone(&replica);
            state.seat.replace(seat.into_held())
        };
        drop(previous);
        self.replica = replica;
        self
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let app = &self.app;
        let went = {
            let mut state = self.session.lock();
            if state.epoch != self.epoch {
                return;
            }
            state.open -= 1;
            app.serve_session_waiters(&self.session, &mut state);
            if state.open > 0 || state.placing {
                return;
            }
            let now = app.now();
            state.vacant_since = Some(now);
            if state.confirmed && state.seat.is_some() {
                if state.listed_vacant {
                    return;
                }
                state.listed_vacant = true;
                Went::Holding(now)
            } else {
                // Released under the session's lock, so that the client's next request — which may come
                // the moment the response ended — finds the seat free on the session's replica. (Giving a
                // seat back takes the app's queue lock, never a session's.)
                drop(state.seat.take());
                Went::Seatless(now)
            }
        };
        app.sessions().went_vacant(self.session.id, went);
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("id", &self.session.id)
            .field("replica", &self.replica.name())
            .finish()
    }
}

impl fmt::Debug for SessionQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionQueue")
            .field("id", &self.session.id)
            .finish()
    }
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement").field("id", &self.session.id).finish()
    }
}

#[cfg(test)]
mod tests;
