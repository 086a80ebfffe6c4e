//! Which certificate a handshake presents: by the name the client sends (SNI), matched as routes match
//! hosts — an exact name first, then the longest wildcard suffix — and the default certificate for a
//! name no app claims, or no name at all.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tideway_config::HostPattern;

use super::Certificate;

/// The certificates in force, built once per change and swapped whole, so that handshakes never lock.
#[derive(Debug, Default)]
pub struct CertificateTable {
    default: Option<Arc<Certificate>>,
    exact: HashMap<String, Arc<Certificate>>,
    /// Wildcard suffixes (`.example.com`), longest first.
    suffixes: Vec<(String, Arc<Certificate>)>,
    /// Every certificate with the names it serves, in the order given: for the status page.
    listed: Vec<(Arc<Certificate>, Vec<HostPattern>)>,
}

impl CertificateTable {
    /// A table presenting `default` for unclaimed names and each certificate of `hosted` for its hosts. A
    /// host claimed twice keeps the first certificate (configuration checks forbid it).
    pub fn new(
        default: Option<Arc<Certificate>>,
        hosted: impl IntoIterator<Item = (Arc<Certificate>, Vec<HostPattern>)>,
    ) -> Self {
        let mut table = CertificateTable {
            listed: default.iter().map(|d| (Arc::clone(d), Vec::new())).collect(),
            default,
            ..CertificateTable::default()
        };
        for (certificate, hosts) in hosted {
            for host in &hosts {
                match host {
                    HostPattern::Exact(name) => {
                        table
                            .exact
                            .entry(name.clone())
                            .or_insert_with(|| Arc::clone(&certificate));
                    }
                    HostPattern::Suffix(suffix) => {
                        if !table.suffixes.iter().any(|(s, _)| s == suffix) {
                            table.suffixes.push((suffix.clone(), Arc::clone(&certificate)));
                        }
                    }
                }
            }
            table.listed.push((certificate, hosts));
        }
        table
            .suffixes
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        table
    }

    /// The certificate for a handshake naming `server_name` (already lower case, as rustls gives it).
    pub fn pick(&self, server_name: Option<&str>) -> Option<&Arc<Certificate>> {
        let Some(name) = server_name else {
            return self.default.as_ref();
        };
        self.exact
            .get(name)
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
                    .map(|(_, certificate)| certificate)
            })
            .or(self.default.as_ref())
    }

    /// Every certificate with the hosts it serves (none: the default), in configuration order.
    pub fn certificates(&self) -> &[(Arc<Certificate>, Vec<HostPattern>)] {
        &self.listed
    }

    /// Whether there is no certificate at all: every handshake would fail.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }
}

/// The handshakes' view of the table in force.
#[derive(Debug)]
pub(crate) struct Resolver(pub(crate) Arc<ArcSwap<CertificateTable>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.0.load();
        let name = client_hello.server_name().map(|n| n.trim_end_matches('.'));
        table.pick(name).map(|c| Arc::clone(c.certified()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(name: &str) -> Arc<Certificate> {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("certificate");
        let pem = Certificate::from_pem(
            name.to_owned(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            0,
        );
        Arc::new(pem.expect("loads"))
    }

    fn host(pattern: &str) -> HostPattern {
        match pattern.strip_prefix('*') {
            Some(suffix) => HostPattern::Suffix(suffix.to_owned()),
            None => HostPattern::Exact(pattern.to_owned()),
        }
    }

    #[test]
    fn names_pick_like_routes_and_the_rest_gets_the_default() {
        let table = CertificateTable::new(
            Some(certificate("default")),
            [
                (certificate("exact"), vec![host("app.example.com")]),
                (certificate("wide"), vec![host("*.example.com")]),
                (certificate("narrow"), vec![host("*.eu.example.com")]),
            ],
        );
        let pick = |name: Option<&str>| table.pick(name).map(|c| c.source().to_owned());
        assert_eq!(pick(Some("app.example.com")).as_deref(), Some("exact"));
        assert_eq!(pick(Some("other.example.com")).as_deref(), Some("wide"));
        assert_eq!(pick(Some("a.b.example.com")).as_deref(), Some("wide"));
        assert_eq!(pick(Some("x.eu.example.com")).as_deref(), Some("narrow"));
        assert_eq!(pick(Some("example.com")).as_deref(), Some("default"));
        assert_eq!(pick(Some("elsewhere.test")).as_deref(), Some("default"));
        assert_eq!(pick(None).as_deref(), Some("default"));
        assert_eq!(table.certificates().len(), 4);
    }

    #[test]
    fn without_a_default_unclaimed_names_get_none() {
        let table = CertificateTable::new(None, [(certificate("exact"), vec![host("a.test")])]);
        assert!(table.pick(Some("b.test")).is_none());
        assert!(table.pick(None).is_none());
        assert!(table.pick(Some("a.test")).is_some());
        assert!(CertificateTable::default().is_empty());
    }

    #[test]
    fn the_first_claim_of_a_host_stays() {
        let table = CertificateTable::new(
            None,
            [
                (certificate("first"), vec![host("a.test"), host("*.w.test")]),
                (certificate("second"), vec![host("a.test"), host("*.w.test")]),
            ],
        );
        assert_eq!(table.pick(Some("a.test")).map(|c| c.source()), Some("first"));
        assert_eq!(table.pick(Some("x.w.test")).map(|c| c.source()), Some("first"));
    }
}
