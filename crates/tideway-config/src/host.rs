//! Host names an app answers for: exact names and `*.` wildcards.

use std::fmt;
use std::net::Ipv4Addr;

use toml::Value;

use crate::values::expected;

/// One entry of an app's `hosts`, normalized: lowercase, no trailing dot, no port.
///
/// An enum rather than a string so that the router cannot mistake a wildcard for a literal name, and so that
/// both kinds are validated once, here, instead of at every lookup.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Exactly this DNS name or IPv4 address, e.g. `hello.example.com` or `10.0.0.5`.
    Exact(String),
    /// Any name ending in this suffix, which starts with a dot: `*.example.com` is stored as
    /// `.example.com` and matches `a.example.com` and `a.b.example.com`, but not `example.com` itself.
    Suffix(String),
}

impl HostPattern {
    /// Whether a request's host matches; `host` must already be normalized the same way (lowercase, port
    /// and trailing dot removed).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

impl fmt::Display for HostPattern {
    /// As written in the config file: `hello.example.com` or `*.example.com`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Parses one entry of `hosts`.
pub(crate) fn host_pattern(value: &Value) -> Result<HostPattern, String> {
    let Value::String(raw) = value else {
        return Err(expected("expected a host name", value));
    };
    let lower = raw.to_ascii_lowercase();
    let host = lower.strip_suffix('.').unwrap_or(&lower);
    if host.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if host.contains(':') {
        return Err("must not include a port".to_owned());
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if name.contains('*') {
        return Err(
            r#"a wildcard is only allowed as the whole first label, as in "*.example.com""#.to_owned(),
        );
    }
    let ipv4 = name.parse::<Ipv4Addr>().is_ok();
    if wildcard && ipv4 {
        return Err("a wildcard needs a DNS name, not an IP address".to_owned());
    }
    if !ipv4 {
        dns_name(name)?;
    }
    if wildcard {
        return Ok(HostPattern::Suffix(format!(".{name}")));
    }
    Ok(HostPattern::Exact(host.to_owned()))
}

/// Checks a lowercase DNS name without a trailing dot.
fn dns_name(name: &str) -> Result<(), String> {
    let invalid = |reason: String| Err(format!("not a valid host name: {reason}"));
    if name.len() > 253 {
        return invalid("longer than 253 characters".to_owned());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return invalid("empty label".to_owned());
        }
        if label.len() > 63 {
            return invalid(format!("label \"{label}\" is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return invalid(format!("{c:?} is not allowed (only a-z, 0-9, '-' and '.')"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return invalid(format!("label \"{label}\" must not start or end with '-'"));
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()))
    {
        return invalid("the last label must not be all digits (nor is it an IPv4 address)".to_owned());
    }
    Ok(())
}
