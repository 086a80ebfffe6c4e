//! Vacant sessions and their expiry. Two kinds wait here, kept apart because they are bounded differently:
//! sessions that hold a seat through their grace (confirmed ones) are bounded by the app's seats and keep
//! one entry each; sessions remembered without a seat (tentative ones whose connection ended) cost no
//! seat, so a client ignoring cookies could make any number of them — at most [`MAX_SEATLESS`] are kept,
//! the oldest forgotten first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::clock::Timestamp;

use super::{Session, SessionId};

/// Most sessions an app remembers without a seat. Each costs about 200 bytes, so the bound is about 3 MiB
/// per app; a browser's next request comes within seconds of its first, long before 16,384 later
/// cookieless requests push its session out.
pub(crate) const MAX_SEATLESS: usize = 16_384;

/// How a session went vacant, and when.
#[derive(Clone, Copy, Debug)]
pub(super) enum Went {
    /// Keeping its seat for the grace.
    Holding(Timestamp),
    /// Without a seat: only its replica is remembered.
    Seatless(Timestamp),
}

/// The vacant sessions of an app, each in the order it will expire.
#[derive(Default)]
pub(crate) struct VacantSessions {
    /// Vacant sessions holding a seat, earliest vacant first. At most one entry per session: a session that
    /// went busy and vacant again while listed is listed again, with its new time, when its entry comes up.
    holding: BinaryHeap<Reverse<(Timestamp, SessionId)>>,
    /// Vacant sessions without a seat, in the order they went vacant (which is the order of their times).
    /// An entry whose session has changed since is skipped when it comes up.
    seatless: VecDeque<(Timestamp, SessionId)>,
}

impl VacantSessions {
    pub(super) fn push(&mut self, id: SessionId, went: Went) {
        match went {
            Went::Holding(since) => self.holding.push(Reverse((since, id))),
            Went::Seatless(since) => self.seatless.push_back((since, id)),
        }
    }

    /// Entries of sessions holding a seat, stale ones included.
    #[cfg(test)]
    pub(super) fn holding_len(&self) -> usize {
        self.holding.len()
    }

    pub(super) fn clear(&mut self) {
        self.holding.clear();
        self.seatless.clear();
    }

    /// The next holding entry if it is due at `now`, else when it will be.
    fn pop_holding(
        &mut self,
        now: Timestamp,
        grace: Duration,
    ) -> Result<(Timestamp, SessionId), Option<Timestamp>> {
        match self.holding.peek() {
            None => Err(None),
            Some(Reverse((since, _))) if since.saturating_add(grace) > now => {
                Err(Some(since.saturating_add(grace)))
            }
            Some(_) => self.holding.pop().map(|Reverse(entry)| entry).ok_or(None),
        }
    }

    /// The next seatless entry if it is due at `now` or over the bound, else when it will be due.
    fn pop_seatless(
        &mut self,
        now: Timestamp,
        grace: Duration,
    ) -> Result<(Timestamp, SessionId), Option<Timestamp>> {
        match self.seatless.front() {
            None => Err(None),
            Some(&(since, _)) if self.seatless.len() <= MAX_SEATLESS && since.saturating_add(grace) > now => {
                Err(Some(since.saturating_add(grace)))
            }
            Some(_) => self.seatless.pop_front().ok_or(None),
        }
    }
}

/// Expires what is due at `now` and returns when the next entry is due.
pub(super) fn expire(app: &App, now: Timestamp, grace: Duration) -> Option<Timestamp> {
    let sessions = app.sessions();
    let next_holding = loop {
        let popped = sessions.vacant_lock().pop_holding(now, grace);
        match popped {
            Ok((since, id)) => {
                if let Some(session) = lookup(app, id) {
                    expire_holding(app, &session, since, now, grace);
                }
            }
            Err(next) => break next,
        }
    };
    let next_seatless = loop {
        let popped = sessions.vacant_lock().pop_seatless(now, grace);
        match popped {
            Ok((since, id)) => {
                if let Some(session) = lookup(app, id) {
                    forget_seatless(app, &session, since);
                }
            }
            Err(next) => break next,
        }
    };
    next_holding.into_iter().chain(next_seatless).min()
}

fn lookup(app: &App, id: SessionId) -> Option<Arc<Session>> {
    app.sessions().live.get(&id).map(|s| Arc::clone(&s))
}

/// A holding session whose entry came up: its seat is released if it stayed vacant through the grace; if it
/// went busy and vacant again meanwhile it is listed again with its new time.
fn expire_holding(app: &App, session: &Arc<Session>, since: Timestamp, now: Timestamp, grace: Duration) {
    let mut state = session.lock();
    let vacant = state.open == 0 && !state.placing && state.seat.is_some();
    match state.vacant_since {
        Some(vacant_since) if vacant && vacant_since.saturating_add(grace) <= now => {
            state.listed_vacant = false;
            let seat = state.seat.take();
            app.sessions()
                .live
                .remove_if(&session.id, |_, s| Arc::ptr_eq(s, session));
            drop(state);
            // Dropped outside the session's lock: releasing the seat may seat a waiter of the app.
            drop(seat);
        }
        Some(vacant_since) if vacant && vacant_since > since => {
            drop(state);
            app.sessions()
                .vacant_lock()
                .push(session.id, Went::Holding(vacant_since));
        }
        _ => state.listed_vacant = false,
    }
}

/// A seatless session whose entry came up: forgotten unless it has been joined since.
fn forget_seatless(app: &App, session: &Arc<Session>, since: Timestamp) {
    let state = session.lock();
    if state.open == 0 && !state.placing && state.seat.is_none() && state.vacant_since == Some(since) {
        app.sessions()
            .live
            .remove_if(&session.id, |_, s| Arc::ptr_eq(s, session));
    }
}
