//! Which app a request belongs to: by host first (exact, then wildcard, then host-less apps), then by the
//! longest matching path prefix.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use tideway_config::HostPattern;
use tideway_core::App;

/// One app's routes, as configured.
#[derive(Clone, Debug)]
pub struct Route {
    /// The app requests are sent to.
    pub app: Arc<App>,
    /// Hosts it answers for; empty means any host.
    pub hosts: Vec<HostPattern>,
    /// Path prefix it answers for (segment-wise: `/a` matches `/a` and `/a/b`, not `/ab`); `None` means `/`.
    pub path_prefix: Option<String>,
}

/// The routing table: built once per configuration and swapped whole on reload, so lookups never lock.
#[derive(Default, Debug)]
pub struct RouteTable {
    exact: HashMap<String, Prefixes>,
    suffixes: Vec<(String, Prefixes)>,
    any_host: Prefixes,
    apps: Vec<Arc<App>>,
}

/// Apps under one host, longest prefix first.
#[derive(Default, Debug)]
struct Prefixes(Vec<(String, Arc<App>)>);

impl RouteTable {
    /// A table of `routes`. Conflicting routes are rejected by config validation; if two remain anyway,
    /// the first listed wins.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Self {
        let mut table = RouteTable::default();
        for route in routes {
            let prefix = route.path_prefix.clone().unwrap_or_else(|| "/".to_owned());
            if route.hosts.is_empty() {
                table.any_host.add(&prefix, &route.app);
            }
            for host in &route.hosts {
                match host {
                    HostPattern::Exact(name) => table
                        .exact
                        .entry(name.clone())
                        .or_default()
                        .add(&prefix, &route.app),
                    HostPattern::Suffix(suffix) => {
                        let at = match table.suffixes.iter().position(|(s, _)| s == suffix) {
                            Some(at) => at,
                            None => {
                                table.suffixes.push((suffix.clone(), Prefixes::default()));
                                table.suffixes.len() - 1
                            }
                        };
                        table.suffixes[at].1.add(&prefix, &route.app);
                    }
                }
            }
            if !table.apps.iter().any(|a| Arc::ptr_eq(a, &route.app)) {
                table.apps.push(route.app);
            }
        }
        table
            .suffixes
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        table
    }

    /// The app for a request to `host` (as sent: any case, maybe with a port) and `path`.
    ///
    /// A host bucket without a matching prefix falls through to the next (wildcards, then host-less apps),
    /// so an app on `/` for any host catches what host-specific apps leave.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<&Arc<App>> {
        let host = host.map(normalize_host);
        let host = host.as_deref();
        host.and_then(|h| self.exact.get(h))
            .and_then(|p| p.find(path))
            .or_else(|| {
                let h = host?;
                self.suffixes
                    .iter()
                    .filter(|(suffix, _)| h.len() > suffix.len() && h.ends_with(suffix.as_str()))
                    .find_map(|(_, p)| p.find(path))
            })
            .or_else(|| self.any_host.find(path))
    }

    /// Every routed app, once each, in configuration order.
    pub fn apps(&self) -> &[Arc<App>] {
        &self.apps
    }
}

impl Prefixes {
    fn add(&mut self, prefix: &str, app: &Arc<App>) {
        if !self.0.iter().any(|(p, _)| p == prefix) {
            self.0.push((prefix.to_owned(), Arc::clone(app)));
            self.0.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        }
    }

    fn find(&self, path: &str) -> Option<&Arc<App>> {
        self.0
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, app)| app)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The host as the route table stores it: lowercase, without port or trailing dot. Allocates only when the
/// request spelled it with capitals.
fn normalize_host(raw: &str) -> Cow<'_, str> {
    let without_port = if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => raw,
        }
    };
    let host = without_port.strip_suffix('.').unwrap_or(without_port);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use tideway_core::{ManualClock, Policy};

    use super::*;

    fn app(name: &str) -> Arc<App> {
        App::new(name, Policy::default(), Arc::new(ManualClock::default()))
    }

    fn route(app: &Arc<App>, hosts: &[&str], prefix: Option<&str>) -> Route {
        Route {
            app: Arc::clone(app),
            hosts: hosts
                .iter()
                .map(|h| match h.strip_prefix('*') {
                    Some(suffix) => HostPattern::Suffix(suffix.to_owned()),
                    None => HostPattern::Exact((*h).to_owned()),
                })
                .collect(),
            path_prefix: prefix.map(str::to_owned),
        }
    }

    fn name(found: Option<&Arc<App>>) -> Option<&str> {
        found.map(|a| a.name())
    }

    #[test]
    fn host_then_longest_prefix() {
        let (hello, api, wild, fallback) = (app("hello"), app("api"), app("wild"), app("fallback"));
        let table = RouteTable::new([
            route(&hello, &["hello.localhost"], None),
            route(&api, &["hello.localhost"], Some("/api")),
            route(&wild, &["*.example.com"], None),
            route(&fallback, &[], Some("/other")),
        ]);
        assert_eq!(name(table.lookup(Some("hello.localhost"), "/")), Some("hello"));
        assert_eq!(
            name(table.lookup(Some("Hello.LOCALHOST:8080"), "/api/x")),
            Some("api")
        );
        assert_eq!(name(table.lookup(Some("hello.localhost."), "/api")), Some("api"));
        assert_eq!(
            name(table.lookup(Some("hello.localhost"), "/apix")),
            Some("hello")
        );
        assert_eq!(name(table.lookup(Some("a.b.example.com"), "/")), Some("wild"));
        assert_eq!(name(table.lookup(Some("example.com"), "/")), None);
        assert_eq!(name(table.lookup(Some("unknown"), "/other/1")), Some("fallback"));
        assert_eq!(name(table.lookup(Some("unknown"), "/")), None);
        assert_eq!(name(table.lookup(None, "/other")), Some("fallback"));
        assert_eq!(table.apps().len(), 4);
    }

    #[test]
    fn host_buckets_fall_through_to_wildcards_and_any_host() {
        let (exact, any) = (app("exact"), app("any"));
        let table = RouteTable::new([route(&exact, &["a.test"], Some("/x")), route(&any, &[], None)]);
        assert_eq!(name(table.lookup(Some("a.test"), "/x/1")), Some("exact"));
        assert_eq!(name(table.lookup(Some("a.test"), "/y")), Some("any"));
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("Example.COM:443"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
        assert!(matches!(normalize_host("plain.test"), Cow::Borrowed(_)));
    }
}
