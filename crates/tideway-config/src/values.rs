//! Leaf values: integers in a range, human durations, socket addresses, strings.
//!
//! Each parser takes one TOML value and returns the typed value or a message phrased to follow "path: ".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::Value;

/// The message for a bad duration string.
pub(crate) const DURATION: &str = r#"expected a duration like "30s" or "15m""#;
/// The message for a bad duration string where `"off"` is also allowed.
pub(crate) const OPTIONAL_DURATION: &str = r#"expected a duration like "30s" or "15m", or "off""#;
/// The message for a bad listener address.
pub(crate) const LISTEN_ADDRESS: &str = r#"expected an address like "0.0.0.0:8080""#;
/// The message for a bad upstream address.
pub(crate) const UPSTREAM_ADDRESS: &str = r#"expected an address like "127.0.0.1:9001""#;

/// `"{expectation}, found {the value's type}"`, for a value of the wrong TOML type.
pub(crate) fn expected(expectation: &str, value: &Value) -> String {
    let found = match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    };
    format!("{expectation}, found {found}")
}

/// A string, borrowed.
pub(crate) fn string(value: &Value) -> Result<&str, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(expected("expected a string", other)),
    }
}

/// An integer within `min..=max`, converted to `T` (whose range must hold `min..=max`).
pub(crate) fn integer_in<T: TryFrom<i64>>(value: &Value, min: i64, max: i64) -> Result<T, String> {
    let range = || {
        if max == i64::MAX {
            format!("must be at least {min}")
        } else {
            format!("must be between {min} and {max}")
        }
    };
    match value {
        Value::Integer(n) if (min..=max).contains(n) => T::try_from(*n).map_err(|_| range()),
        Value::Integer(_) => Err(range()),
        other => Err(expected("expected an integer", other)),
    }
}

/// `true` or `false`.
pub(crate) fn boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Boolean(b) => Ok(*b),
        other => Err(expected("expected true or false", other)),
    }
}

/// Any `u32`: a count that may be 0.
pub(crate) fn count(value: &Value) -> Result<u32, String> {
    integer_in(value, 0, u32::MAX.into())
}

/// Longest duration accepted anywhere: a year is beyond any sensible timeout, and a bound keeps the
/// arithmetic on deadlines (jitter, sums) far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A human duration such as `"30s"`, `"15m"`, `"1h 30m"` or `"500ms"`, at most a year.
pub(crate) fn duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::String(s) => bounded(humantime::parse_duration(s).map_err(|_| DURATION.to_owned())?),
        other => Err(expected(DURATION, other)),
    }
}

fn bounded(duration: Duration) -> Result<Duration, String> {
    if duration > MAX_DURATION {
        return Err("must be at most 365d".to_owned());
    }
    Ok(duration)
}

/// A human duration, or `"off"` for none.
pub(crate) fn optional_duration(value: &Value) -> Result<Option<Duration>, String> {
    match value {
        Value::String(s) if s == "off" => Ok(None),
        Value::String(s) => {
            bounded(humantime::parse_duration(s).map_err(|_| OPTIONAL_DURATION.to_owned())?).map(Some)
        }
        other => Err(expected(OPTIONAL_DURATION, other)),
    }
}

/// A duration that must not be zero.
pub(crate) fn nonzero_duration(value: &Value) -> Result<Duration, String> {
    let duration = duration(value)?;
    if duration.is_zero() {
        return Err("must be longer than 0s".to_owned());
    }
    Ok(duration)
}

/// An address to listen on: `ip:port`, IPv6 in brackets.
/// A file's path: any non-empty string (a relative one is taken from tideway's working directory).
pub(crate) fn file_path(value: &Value) -> Result<PathBuf, String> {
    let path = string(value)?;
    if path.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(PathBuf::from(path))
}

pub(crate) fn listen_address(value: &Value) -> Result<SocketAddr, String> {
    match value {
        Value::String(s) => s.parse().map_err(|_| LISTEN_ADDRESS.to_owned()),
        other => Err(expected(LISTEN_ADDRESS, other)),
    }
}

/// An address to connect to: `ip:port` with a port other than 0.
pub(crate) fn upstream_address(value: &Value) -> Result<SocketAddr, String> {
    let address: SocketAddr = match value {
        Value::String(s) => s.parse().map_err(|_| UPSTREAM_ADDRESS.to_owned())?,
        other => return Err(expected(UPSTREAM_ADDRESS, other)),
    };
    if address.port() == 0 {
        return Err("port must not be 0".to_owned());
    }
    Ok(address)
}

/// A DNS label (RFC 1123), as app names and namespaces are: 1–63 characters of `a-z0-9-`, alphanumeric at
/// both ends.
pub(crate) fn dns_label(name: &str) -> Result<String, String> {
    if is_label(name) {
        Ok(name.to_owned())
    } else {
        Err(
            "must be 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
                .to_owned(),
        )
    }
}

/// Whether `name` is a DNS label.
pub(crate) fn is_label(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&name.len())
        && name.chars().all(|c| alnum(c) || c == '-')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
}
