//! The affinity cookie: a session id, the replica the session lives on, and when the cookie stops being
//! honoured, signed so that any instance can trust what it names and nobody can write one.
//!
//! Its value is `<id>.<replica>.<expires>.<tag>`: the session id in 32 hex digits, the replica's name in
//! unpadded base64url, the expiry in seconds since the Unix epoch, and an HMAC-SHA256 tag (base64url) over
//! the app's name and the three fields before it.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::HeaderValue;
use ring::hmac;
use tideway_core::SessionId;

/// Prefix of the affinity cookie's name; the app's name follows, so apps sharing a host never read each
/// other's sessions.
const COOKIE_PREFIX: &str = "tideway-";

/// The shortest key accepted: shorter ones could be guessed by trying.
pub const MIN_KEY_LEN: usize = 16;

/// The keys affinity cookies are signed with: the first signs, every one is accepted, so that a new key
/// can be rolled out to every instance before any of them signs with it.
pub struct CookieKeys {
    keys: Vec<hmac::Key>,
    max_age: Duration,
}

/// Why keys could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// No key was given.
    #[error("no key")]
    None,
    /// A key is too short to sign with.
    #[error("key {0} is shorter than {MIN_KEY_LEN} bytes")]
    TooShort(usize),
    /// The operating system gave no randomness for a key of this instance's own.
    #[error("no randomness for a key")]
    NoRandomness,
}

/// A session cookie a request presented, its signature checked and its expiry not yet reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Presented {
    /// The session.
    pub(crate) id: SessionId,
    /// The name of the replica the session lived on when the cookie was written.
    pub(crate) replica: String,
    /// When the cookie stops being honoured, in seconds since the Unix epoch.
    expires: u64,
}

impl CookieKeys {
    /// Keys from secrets, the first one signing; each must be at least [`MIN_KEY_LEN`] bytes.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>, max_age: Duration) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (i, secret) in secrets.into_iter().enumerate() {
            if secret.len() < MIN_KEY_LEN {
                return Err(KeyError::TooShort(i + 1));
            }
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, secret));
        }
        if keys.is_empty() {
            return Err(KeyError::None);
        }
        Ok(CookieKeys { keys, max_age })
    }

    /// One key drawn at random, for an instance that shares its cookies with nobody: they are good until
    /// it restarts.
    pub fn random(max_age: Duration) -> Result<Self, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|_| KeyError::NoRandomness)?;
        Self::new([secret.as_slice()], max_age)
    }

    /// A key derived from a secret shared for another purpose (`[cluster]`'s), so that instances that
    /// already share one need no second: a cookie tag never reveals the secret it was derived from.
    pub fn derived(secret: &[u8], max_age: Duration) -> Result<Self, KeyError> {
        let base = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&base, b"tideway affinity cookie key");
        Self::new([derived.as_ref()], max_age)
    }

    /// The `Set-Cookie` value that gives a client session `id` on `replica` of `app`, good for `max_age`
    /// from `now`; `secure` over TLS, so that the browser never sends it over plain HTTP.
    pub(crate) fn cookie(
        &self,
        app: &str,
        id: SessionId,
        replica: &str,
        now: SystemTime,
        secure: bool,
    ) -> Option<HeaderValue> {
        let expires = unix_secs(now).saturating_add(self.max_age.as_secs());
        let fields = format!("{id}.{}.{expires}", URL_SAFE_NO_PAD.encode(replica));
        let signing = self.keys.first()?;
        let tag = URL_SAFE_NO_PAD.encode(hmac::sign(signing, &signed(app, &fields)));
        let max_age = self.max_age.as_secs();
        let secure = if secure { "; Secure" } else { "" };
        HeaderValue::try_from(format!(
            "{COOKIE_PREFIX}{app}={fields}.{tag}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        ))
        .ok()
    }

    /// The session cookie of `app` among a request's `Cookie` field values, if one is signed by one of the
    /// keys and has not expired at `now`. Anything else — unsigned, tampered with, signed by a key no
    /// longer accepted, expired, another app's — is as if no cookie had been sent.
    pub(crate) fn presented<'a>(
        &self,
        cookies: impl IntoIterator<Item = &'a [u8]>,
        app: &str,
        now: SystemTime,
    ) -> Option<Presented> {
        cookies
            .into_iter()
            .filter_map(|value| std::str::from_utf8(value).ok())
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| name.strip_prefix(COOKIE_PREFIX) == Some(app))
            .find_map(|(_, value)| self.verify(app, value.trim(), unix_secs(now)))
    }

    /// True when a cookie presented at `now` is past half its life: the response writes it again.
    pub(crate) fn due_for_renewal(&self, presented: &Presented, now: SystemTime) -> bool {
        presented.expires.saturating_sub(unix_secs(now)) < self.max_age.as_secs() / 2
    }

    fn verify(&self, app: &str, value: &str, now: u64) -> Option<Presented> {
        let (fields, tag) = value.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let message = signed(app, fields);
        if !self
            .keys
            .iter()
            .any(|key| hmac::verify(key, &message, &tag).is_ok())
        {
            return None;
        }
        let mut parts = fields.split('.');
        let (id, replica, expires) = (parts.next()?, parts.next()?, parts.next()?);
        let expires: u64 = expires.parse().ok()?;
        if parts.next().is_some() || expires <= now {
            return None;
        }
        let replica = String::from_utf8(URL_SAFE_NO_PAD.decode(replica).ok()?).ok()?;
        Some(Presented {
            id: id.parse().ok()?,
            replica,
            expires,
        })
    }
}

/// What a tag covers: the app's name too, so that a cookie of one app is worth nothing to another.
fn signed(app: &str, fields: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(app.len() + 1 + fields.len());
    message.extend_from_slice(app.as_bytes());
    message.push(0);
    message.extend_from_slice(fields.as_bytes());
    message
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn keys(secrets: &[&str]) -> CookieKeys {
        CookieKeys::new(secrets.iter().map(|s| s.as_bytes()), DAY).expect("valid keys")
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// The `name=value` pair of a `Set-Cookie` value, as a client sends it back.
    fn sent_back(cookie: &HeaderValue) -> String {
        let text = cookie.to_str().expect("ascii");
        text.split(';').next().expect("pair").to_owned()
    }

    fn read(keys: &CookieKeys, cookie: &str, at: SystemTime) -> Option<Presented> {
        keys.presented([cookie.as_bytes()], "hello", at)
    }

    #[test]
    fn a_cookie_names_its_session_and_replica_and_is_read_back() {
        let keys = keys(&["first key, long enough"]);
        let id = SessionId::from_bits(0xabc);
        let cookie = keys
            .cookie("hello", id, "hello-7f9c-x2", now(), false)
            .expect("a valid header");
        let text = cookie.to_str().expect("ascii");
        assert!(text.starts_with(&format!("tideway-hello={id}.")));
        assert!(text.contains("Max-Age=86400; HttpOnly"));
        let pair = sent_back(&cookie);
        let presented =
            read(&keys, &format!("theme=dark; tideway-other=x; {pair}"), now()).expect("honoured");
        assert_eq!((presented.id, presented.replica.as_str()), (id, "hello-7f9c-x2"));
        assert!(!keys.due_for_renewal(&presented, now()));
        assert!(keys.due_for_renewal(&presented, now() + DAY / 2 + Duration::from_secs(1)));
        assert_eq!(
            keys.presented([pair.as_bytes()], "other", now()),
            None,
            "another app's name"
        );
    }

    #[test]
    fn forged_tampered_and_expired_cookies_are_not_honoured() {
        let keys = keys(&["first key, long enough"]);
        let id = SessionId::from_bits(0xabc);
        let pair = sent_back(
            &keys
                .cookie("hello", id, "replica-a", now(), false)
                .expect("cookie"),
        );
        let (fields, tag) = pair.rsplit_once('.').expect("tag");
        let replica_b = URL_SAFE_NO_PAD.encode("replica-b");
        let a = URL_SAFE_NO_PAD.encode("replica-a");
        let cases = [
            ("unsigned, the old form", format!("tideway-hello={id}")),
            (
                "another replica",
                format!("{}.{tag}", fields.replace(&a, &replica_b)),
            ),
            ("a later expiry", format!("{}9.{tag}", fields)),
            (
                "another session",
                format!("{}.{tag}", fields.replacen('c', "d", 1)),
            ),
            ("a tag cut short", pair[..pair.len() - 2].to_owned()),
            ("no tag", fields.to_owned()),
            ("garbage", "tideway-hello=....".to_owned()),
        ];
        for (what, cookie) in cases {
            assert_eq!(read(&keys, &cookie, now()), None, "{what}: {cookie}");
        }
        let forger = self::keys(&["a key of the forger's"]);
        let forged = sent_back(
            &forger
                .cookie("hello", id, "replica-a", now(), false)
                .expect("cookie"),
        );
        assert_eq!(read(&keys, &forged, now()), None, "signed by an unknown key");
        assert!(read(&keys, &pair, now() + DAY - Duration::from_secs(1)).is_some());
        assert_eq!(read(&keys, &pair, now() + DAY), None, "expired");
    }

    #[test]
    fn a_rotated_key_still_accepts_cookies_signed_with_the_previous_one() {
        let old = keys(&["the previous key, still good"]);
        let rotated = keys(&["the new key, signing from now", "the previous key, still good"]);
        let retired = keys(&["the new key, signing from now"]);
        let id = SessionId::from_bits(7);
        let before = sent_back(&old.cookie("hello", id, "r", now(), false).expect("cookie"));
        assert_eq!(read(&rotated, &before, now()).map(|p| p.id), Some(id));
        assert_eq!(read(&retired, &before, now()), None, "the key was dropped");
        let after = sent_back(&rotated.cookie("hello", id, "r", now(), false).expect("cookie"));
        assert_eq!(
            read(&retired, &after, now()).map(|p| p.id),
            Some(id),
            "the first key signs"
        );
        assert_eq!(read(&old, &after, now()), None);
    }

    #[test]
    fn keys_must_be_long_enough_and_derived_ones_are_shared() {
        assert_eq!(CookieKeys::new([], DAY).err(), Some(KeyError::None));
        let short = [b"long enough, this one".as_slice(), b"short".as_slice()];
        assert_eq!(CookieKeys::new(short, DAY).err(), Some(KeyError::TooShort(2)));
        let (a, b) = (
            CookieKeys::derived(b"cluster secret", DAY).expect("key"),
            CookieKeys::derived(b"cluster secret", DAY).expect("key"),
        );
        let id = SessionId::from_bits(9);
        let pair = sent_back(&a.cookie("hello", id, "r", now(), false).expect("cookie"));
        assert_eq!(read(&b, &pair, now()).map(|p| p.id), Some(id));
        let random = CookieKeys::random(DAY).expect("randomness");
        assert_eq!(read(&random, &pair, now()), None);
    }
}
