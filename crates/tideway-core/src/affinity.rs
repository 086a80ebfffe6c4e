//! Cookie affinity (DESIGN §1): the connections of one session go to one replica and count once together.
//! A session holds one seat while any of its connections is open, and for `reconnect_grace` after the last
//! one closes, so a client that reconnects (a page reload, a dropped WebSocket) finds its replica — and
//! its seat — still there.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;

use crate::admission::{App, ConnectionGuard};
use crate::clock::Timestamp;
use crate::replica::{Replica, ReplicaState};
use crate::signal::Signal;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(u128);

/// The sessions of one app: who is where, and which idle ones are waiting out their grace.
#[derive(Default)]
pub(crate) struct Sessions {
    live: DashMap<SessionId, Arc<Session>>,
    idle: Mutex<VecDeque<(SessionId, Timestamp)>>,
    went_idle: Signal,
}

/// One session: its seat, and how many of its connections are open.
pub(crate) struct Session {
    id: SessionId,
    seat: ConnectionGuard,
    open: AtomicU32,
    /// When the last connection closed, in milliseconds plus one; 0 while a connection is open.
    idle_since: AtomicU64,
}

/// One connection's share of its session's seat; the last share dropped starts the grace period.
#[must_use = "the connection belongs to the session only while this lives"]
pub struct SessionSeat {
    session: Arc<Session>,
}

/// What became of a connection that presented a session cookie.
#[derive(Debug)]
pub enum JoinSession {
    /// It shares its session's seat.
    Joined(SessionSeat),
    /// The session already has `max_connections` connections open: this one is placed on its own.
    Full,
    /// No such session (never issued, expired, or its replica is draining or gone): start a new one.
    Unknown,
}

impl Drop for Sessions {
    /// The app is going away: wake the task expiring its sessions so that it notices and stops.
    fn drop(&mut self) {
        self.went_idle.raise();
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
    /// Seats a connection in the session `id` presented, on the session's replica, without taking another
    /// seat. A session may not hold more than `max_connections` connections at once, so a cookie cannot be
    /// used to get around the replica's limit.
    pub fn join_session(&self, id: SessionId) -> JoinSession {
        let Some(session) = self.sessions().live.get(&id).map(|s| Arc::clone(&s)) else {
            return JoinSession::Unknown;
        };
        // A draining replica takes no new connections, not even a session's: the session starts over.
        let replica = session.seat.replica();
        let listed = self.replicas().iter().any(|r| r.id() == replica.id());
        if !listed || replica.state() != ReplicaState::Ready {
            self.sessions()
                .live
                .remove_if(&id, |_, s| Arc::ptr_eq(s, &session));
            return JoinSession::Unknown;
        }
        let max = self.policy().max_connections;
        let mut open = session.open.load(Ordering::SeqCst);
        loop {
            if open >= max {
                return JoinSession::Full;
            }
            match session
                .open
                .compare_exchange(open, open + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(actual) => open = actual,
            }
        }
        session.idle_since.store(0, Ordering::SeqCst);
        JoinSession::Joined(SessionSeat { session })
    }

    /// Makes a freshly admitted connection the first of session `id`, replacing any session of that id
    /// (whose remaining connections keep their old seat until they close).
    pub fn start_session(&self, seat: ConnectionGuard, id: SessionId) -> SessionSeat {
        let session = Arc::new(Session {
            id,
            seat,
            open: AtomicU32::new(1),
            idle_since: AtomicU64::new(0),
        });
        self.sessions().live.insert(id, Arc::clone(&session));
        SessionSeat { session }
    }

    /// Ends sessions idle for longer than `reconnect_grace`, releasing their seats; returns when the next
    /// idle session would expire.
    pub fn expire_sessions(&self) -> Option<Timestamp> {
        let now = self.now();
        let grace = self.policy().reconnect_grace;
        let sessions = self.sessions();
        loop {
            let (id, since) = {
                let mut idle = sessions.idle.lock().unwrap_or_else(PoisonError::into_inner);
                match idle.front() {
                    None => return None,
                    Some(&(_, since)) if since.saturating_add(grace) > now => {
                        return Some(since.saturating_add(grace));
                    }
                    Some(_) => idle.pop_front()?,
                }
            };
            // Dropped here, outside the map's lock: releasing the seat may seat a waiter.
            let expired = sessions.live.remove_if(&id, |_, s| {
                s.open.load(Ordering::SeqCst) == 0
                    && s.idle_since.load(Ordering::SeqCst) == since.as_millis() + 1
            });
            drop(expired);
        }
    }

    /// Ready when a session went idle since the last time it was ready: its expiry must be scheduled.
    pub fn poll_session_idle(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.sessions().went_idle.poll_raised(cx)
    }

    /// Sessions currently known (open or within their grace).
    pub fn session_count(&self) -> usize {
        self.sessions().live.len()
    }

    /// Forgets every session, releasing idle ones' seats: for an app leaving the configuration (sessions
    /// hold their app, so they would otherwise keep it alive).
    pub fn clear_sessions(&self) {
        self.sessions().live.clear();
        self.sessions()
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl SessionSeat {
    /// The replica the session lives on.
    pub fn replica(&self) -> &Arc<Replica> {
        self.session.seat.replica()
    }

    /// The app the session belongs to.
    pub fn app(&self) -> &Arc<App> {
        self.session.seat.app()
    }

    /// The session's id, for the cookie.
    pub fn id(&self) -> SessionId {
        self.session.id
    }
}

impl Drop for SessionSeat {
    fn drop(&mut self) {
        let session = &self.session;
        if session.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            let app = session.seat.app();
            let now = app.now();
            session.idle_since.store(now.as_millis() + 1, Ordering::SeqCst);
            let sessions = app.sessions();
            sessions
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back((session.id, now));
            sessions.went_idle.raise();
        }
    }
}

impl fmt::Debug for SessionSeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSeat")
            .field("id", &self.session.id)
            .field("replica", &self.replica().name())
            .finish()
    }
}

#[cfg(test)]
mod tests;
