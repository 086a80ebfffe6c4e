//! One `[[app]]` entry: its name, routes, policy and backend.

use std::net::SocketAddr;

use tideway_core::Policy;
use toml::Value;

use crate::host::{HostPattern, host_pattern};
use crate::kubernetes::{KubernetesSpec, read_kubernetes};
use crate::local::{LocalSpec, read_local};
use crate::policy::Overlay;
use crate::tls::{TlsFiles, TlsSource, read_tls_files};
use crate::values::{dns_label, string, upstream_address};
use crate::walk::{Errors, Section};

/// One routed application, ready to serve: where its traffic comes from, how it scales, where it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppConfig {
    /// Unique name: 1–63 characters of `a-z`, `0-9` and `-`, starting and ending with a letter or digit,
    /// so it can serve as a metric label and a Kubernetes name alike.
    pub name: String,
    /// Host names this app answers for; empty = any host (then `path_prefix` is set).
    pub hosts: Vec<HostPattern>,
    /// Path prefix this app answers for, starting with `/` and without a trailing `/` (except `"/"` itself);
    /// `None` = any path (then `hosts` is not empty).
    pub path_prefix: Option<String>,
    /// Scaling and timeout policy: `Policy::default()` with `[proxy]`'s timeouts, overlaid with `[defaults]`,
    /// overlaid with the app.
    pub policy: Policy,
    /// Where the app's replicas come from.
    pub backend: Backend,
    /// The certificate presented to clients that name one of `hosts` over TLS.
    pub tls: Option<TlsSource>,
}

impl AppConfig {
    /// The first route of this app that one of `others` claims already — as the file's own check words it,
    /// under `path` — for an app declared elsewhere (a `TidewayApp`) that must not take a route in use.
    pub fn route_taken<'a>(
        &self,
        path: &str,
        others: impl IntoIterator<Item = &'a AppConfig> + Clone,
    ) -> Option<crate::FieldError> {
        let prefix = self.path_prefix.as_deref().unwrap_or("/");
        let claims: Vec<(Option<&HostPattern>, String)> = if self.hosts.is_empty() {
            vec![(None, format!("{path}.path_prefix"))]
        } else {
            let hosts = self.hosts.iter().enumerate();
            hosts
                .map(|(k, host)| (Some(host), format!("{path}.hosts[{k}]")))
                .collect()
        };
        claims.into_iter().find_map(|(host, at)| {
            let owner = others.clone().into_iter().find(|other| {
                other.path_prefix.as_deref().unwrap_or("/") == prefix
                    && match host {
                        None => other.hosts.is_empty(),
                        Some(host) => other.hosts.contains(host),
                    }
            })?;
            let host = host.map(ToString::to_string).unwrap_or_default();
            Some(crate::FieldError {
                path: at,
                message: format!(
                    "route \"{host}{prefix}\" is already used by app \"{}\"",
                    owner.name
                ),
            })
        })
    }
}

/// Where an app's replicas come from: exactly one backend table per app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `[app.static]`: a fixed list of replica addresses, never scaled (for tests and apps managed elsewhere).
    Static {
        /// The replicas' addresses, at least one, no duplicates.
        addresses: Vec<SocketAddr>,
    },
    /// `[app.local]`: replicas are child processes tideway starts and stops as demand requires.
    Local(LocalSpec),
    /// `[app.kubernetes]`: replicas are the pods of a Deployment, which tideway scales.
    Kubernetes(KubernetesSpec),
}

/// An app as read, possibly incomplete; checks across apps (unique names, routes) run on drafts.
#[derive(Debug)]
pub(crate) struct Draft {
    /// `app[i]`.
    pub(crate) path: String,
    pub(crate) name: Option<String>,
    /// Valid hosts, each with its index in `hosts`.
    pub(crate) hosts: Vec<(usize, HostPattern)>,
    pub(crate) path_prefix: Option<String>,
    /// Whether the routes above are complete, i.e. no route key was invalid; else route conflicts are not
    /// checked for this app.
    pub(crate) routes_valid: bool,
    pub(crate) policy: Overlay,
    pub(crate) backend: Option<Backend>,
    pub(crate) tls: Option<TlsFiles>,
}

/// The backend kinds, each the name of its table in an app. A new kind is one more entry here and one more
/// arm in [`read_backend`].
const BACKEND_KINDS: &[&str] = &["local", "kubernetes", "static"];

impl Draft {
    /// Reads one `[[app]]` table; `defaults` is the policy `[defaults]` yields.
    pub(crate) fn read(mut section: Section<'_>, errors: &mut Errors, defaults: &Policy) -> Self {
        let path = section.path().to_owned();
        let name = section.required("name", errors, app_name);

        let hosts_given = section.contains("hosts");
        let mut host_errors = false;
        let hosts = section
            .list("hosts", errors, |v| {
                host_pattern(v).inspect_err(|_| host_errors = true)
            })
            .unwrap_or_default();
        let hosts_valid =
            !hosts_given || (!host_errors && section.peek("hosts").is_some_and(Value::is_array));
        let hosts = without_duplicates(hosts, &section.key_path("hosts"), "hosts", errors);

        let prefix_given = section.contains("path_prefix");
        let path_prefix = section.get("path_prefix", errors, path_prefix);
        let prefix_valid = !prefix_given || path_prefix.is_some();
        if !prefix_given && (!hosts_given || (hosts_valid && hosts.is_empty())) {
            errors.push(&path, "needs hosts or path_prefix (or both)");
        }

        let tls = read_tls_files(&mut section, errors);
        if tls.is_some() && hosts_valid && hosts.is_empty() {
            errors.push(
                section.key_path("tls_certificate"),
                "needs hosts: a certificate is picked by the host name a client asks for",
            );
        }
        let policy = Overlay::read(&mut section, errors, defaults);
        let backend = read_backends(&mut section, errors);
        section.finish(errors);
        Draft {
            path,
            name,
            hosts,
            path_prefix,
            routes_valid: hosts_valid && prefix_valid,
            policy,
            backend,
            tls,
        }
    }

    /// The finished app, if nothing required is missing.
    pub(crate) fn build(self) -> Option<AppConfig> {
        Some(AppConfig {
            name: self.name?,
            hosts: self.hosts.into_iter().map(|(_, host)| host).collect(),
            path_prefix: self.path_prefix,
            policy: self.policy.policy,
            backend: self.backend?,
            tls: self.tls.map(TlsSource::Files),
        })
    }

    /// How earlier errors name this app: `app "x"`, or `app[i]` when it has no valid name.
    pub(crate) fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("app \"{name}\""),
            None => self.path.clone(),
        }
    }
}

/// An app name: a DNS label (1–63 characters of `a-z0-9-`, starting and ending with a letter or digit),
/// so it can serve as a metric label and a Kubernetes name alike.
fn app_name(value: &Value) -> Result<String, String> {
    dns_label(string(value)?)
}

/// A path prefix: starts with `/`, no query, fragment or whitespace; trailing slashes removed.
fn path_prefix(value: &Value) -> Result<String, String> {
    let prefix = string(value)?;
    if !prefix.starts_with('/') {
        return Err("must start with '/'".to_owned());
    }
    if prefix.contains(['?', '#']) || prefix.contains(char::is_whitespace) {
        return Err("must not contain '?', '#' or whitespace".to_owned());
    }
    let trimmed = prefix.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
}

/// Reads the app's backend tables: exactly one must be present.
fn read_backends(section: &mut Section<'_>, errors: &mut Errors) -> Option<Backend> {
    let present: Vec<&str> = BACKEND_KINDS
        .iter()
        .copied()
        .filter(|kind| section.contains(kind))
        .collect();
    let mut backends: Vec<Backend> = present
        .iter()
        .filter_map(|kind| {
            let table = section.table(kind, errors)?;
            read_backend(kind, table, errors)
        })
        .collect();
    let tables = |kinds: &[&str], separator: &str| {
        let tables: Vec<String> = kinds.iter().map(|kind| format!("[app.{kind}]")).collect();
        tables.join(separator)
    };
    match present.len() {
        0 => {
            let kinds = tables(BACKEND_KINDS, " or ");
            errors.push(section.path(), format!("needs a backend: {kinds}"));
            None
        }
        1 => backends.pop(),
        _ => {
            let kinds = tables(&present, ", ");
            errors.push(
                section.path(),
                format!("has more than one backend ({kinds}); keep one"),
            );
            None
        }
    }
}

/// Reads the backend table of one kind.
fn read_backend(kind: &str, mut section: Section<'_>, errors: &mut Errors) -> Option<Backend> {
    let backend = match kind {
        "static" => read_static(&mut section, errors),
        "local" => read_local(&mut section, errors).map(Backend::Local),
        "kubernetes" => read_kubernetes(&mut section, errors).map(Backend::Kubernetes),
        _ => None,
    };
    section.finish(errors);
    backend
}

/// `[app.static]`: `addresses`, a non-empty list without duplicates.
fn read_static(section: &mut Section<'_>, errors: &mut Errors) -> Option<Backend> {
    let key_path = section.key_path("addresses");
    if !section.contains("addresses") {
        errors.push(key_path, "required");
        return None;
    }
    let given = section.peek("addresses").and_then(Value::as_array).map(Vec::len);
    let parsed = section.list("addresses", errors, upstream_address)?;
    if given == Some(0) {
        errors.push(key_path, "must not be empty");
        return None;
    }
    let complete = given == Some(parsed.len());
    let unique = without_duplicates(parsed, &key_path, "addresses", errors);
    let addresses: Vec<SocketAddr> = unique.into_iter().map(|(_, address)| address).collect();
    (complete && Some(addresses.len()) == given).then_some(Backend::Static { addresses })
}

/// Drops and reports (at `path[i]`) every item equal to an earlier one; `key` names the list in the message.
fn without_duplicates<T: PartialEq>(
    items: Vec<(usize, T)>,
    path: &str,
    key: &str,
    errors: &mut Errors,
) -> Vec<(usize, T)> {
    let mut unique: Vec<(usize, T)> = Vec::with_capacity(items.len());
    for (i, item) in items {
        match unique.iter().find(|(_, seen)| *seen == item) {
            Some((first, _)) => errors.push(format!("{path}[{i}]"), format!("duplicate of {key}[{first}]")),
            None => unique.push((i, item)),
        }
    }
    unique
}
