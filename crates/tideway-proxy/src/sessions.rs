//! Cookie affinity in the data plane: reading and issuing the session cookie, and expiring vacant sessions
//! on time so their seats return to the pool exactly `reconnect_grace` after their last connection.

use std::future::poll_fn;
use std::sync::{Arc, Weak};
use std::task::Poll;

use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};
use tideway_core::{App, SessionId};

use crate::clock::RuntimeClock;

/// Prefix of the affinity cookie's name; the app's name follows, so apps sharing a host never read each
/// other's sessions.
const COOKIE_PREFIX: &str = "tideway-";

/// The session id a request presents for `app` in its `Cookie` field values, if it carries a well-formed
/// one.
pub(crate) fn presented_session<'a>(
    cookies: impl IntoIterator<Item = &'a [u8]>,
    app: &str,
) -> Option<SessionId> {
    cookies
        .into_iter()
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| name.strip_prefix(COOKIE_PREFIX) == Some(app))
        .and_then(|(_, value)| value.trim().parse().ok())
}

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

/// The `Set-Cookie` value that gives a client its session.
pub(crate) fn session_cookie(app: &str, id: SessionId) -> Option<HeaderValue> {
    HeaderValue::try_from(format!(
        "{COOKIE_PREFIX}{app}={id}; Path=/; HttpOnly; SameSite=Lax"
    ))
    .ok()
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
    use http::header::HeaderValue;

    use super::*;

    #[test]
    fn the_app_cookie_is_found_among_others() {
        let id = SessionId::from_bits(0xabc);
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("theme=dark; tideway-other=ffffffffffffffffffffffffffffffff"),
        );
        headers.append(
            COOKIE,
            HeaderValue::try_from(format!("tideway-hello={id}")).expect("header"),
        );
        assert_eq!(presented_session(cookie_values(&headers), "hello"), Some(id));
        assert_eq!(presented_session(cookie_values(&headers), "missing"), None);
        let mut forged = HeaderMap::new();
        forged.insert(COOKIE, HeaderValue::from_static("tideway-hello=not-an-id"));
        assert_eq!(presented_session(cookie_values(&forged), "hello"), None);
    }

    #[test]
    fn issued_cookies_round_trip() {
        let id = new_session_id().expect("OS randomness");
        assert_ne!(Some(id), new_session_id());
        let cookie = session_cookie("hello", id).expect("a valid header");
        let value = cookie.to_str().expect("ascii");
        assert!(value.starts_with(&format!("tideway-hello={id};")));
        assert!(value.contains("HttpOnly"));
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::try_from(value.split(';').next().expect("pair")).expect("header"),
        );
        assert_eq!(presented_session(cookie_values(&headers), "hello"), Some(id));
    }
}
