//! Cookie affinity in the data plane: reading and issuing the session cookie, and expiring vacant sessions
//! on time so their seats return to the pool exactly `reconnect_grace` after their last connection.

mod cookie;
mod handover;

use std::future::poll_fn;
use std::sync::{Arc, Weak};
use std::task::Poll;

use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};
use tideway_core::{App, SessionId};

pub(crate) use cookie::Presented;
pub use cookie::{CookieKeys, KeyError, MIN_KEY_LEN};
pub use handover::SessionHolders;

use crate::clock::RuntimeClock;

/// The `Cookie` field values of a header map.
pub(crate) fn cookie_values(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes)
}

/// A new session id: 128 bits from the operating system's generator, so ids cannot be guessed.
pub(crate) fn new_session_id() -> Option<SessionId> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(SessionId::from_bits(u128::from_ne_bytes(bytes)))
}

/// Starts the task that expires the app's vacant sessions; it ends with the app.
pub(crate) fn spawn_session_expiry(app: &Arc<App>, clock: RuntimeClock) {
    tokio::spawn(expire(Arc::downgrade(app), clock));
}

/// Expires vacant sessions when they are due, woken when a session goes vacant; ends with the app.
async fn expire(app: Weak<App>, clock: RuntimeClock) {
    loop {
        let Some(next) = app.upgrade().map(|app| app.expire_sessions()) else {
            return;
        };
        let went_vacant = poll_fn(|cx| match app.upgrade() {
            Some(app) => app.poll_session_vacated(cx).map(|()| true),
            None => Poll::Ready(false),
        });
        let alive = match next {
            Some(due) => tokio::select! {
                alive = went_vacant => alive,
                () = tokio::time::sleep_until(clock.instant(due)) => true,
            },
            None => went_vacant.await,
        };
        if !alive {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_drawn_at_random() {
        let id = new_session_id().expect("OS randomness");
        assert_ne!(Some(id), new_session_id());
    }
}
