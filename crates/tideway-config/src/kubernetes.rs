//! Kubernetes mode: `[app.kubernetes]` (an app's Deployment, Service and port) and `[kubernetes]` (the
//! Lease tideway's instances elect their leader on). Names are checked as the API server checks them, so
//! that a typo is reported by `tideway check`, not by a 422 at run time.

use std::time::Duration;

use toml::Value;

use crate::values::{dns_label, expected, is_label, nonzero_duration, string};
use crate::walk::{Errors, Section};

/// Where an app's replicas are on Kubernetes: the pods of a Deployment, reached through a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesSpec {
    /// The Deployment tideway scales.
    pub deployment: String,
    /// Its namespace; `None` = tideway's own (its service account's, else the kubeconfig context's, else
    /// `default`).
    pub namespace: Option<String>,
    /// The Service whose EndpointSlices list the pods; by default named like the Deployment.
    pub service: String,
    /// The Service's port that carries the app.
    pub port: PortRef,
}

/// Which port of a Service carries the app: its name, or its number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    /// A named port (`http`).
    Name(String),
    /// A port number.
    Number(u16),
}

/// `[kubernetes]`: how tideway's instances agree on the one that scales, and where it finds apps declared
/// as `TidewayApp` resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// The Lease's name, in tideway's own namespace.
    pub lease: String,
    /// How long a lease not renewed stays its holder's: the longest time without a leader after the
    /// leader dies.
    pub lease_duration: Duration,
    /// How often the leader renews the lease and the others look at it.
    pub lease_renew_every: Duration,
    /// Where `TidewayApp` resources are read from.
    pub tidewayapps: ResourceScope,
    /// Least time between two status writes of one `TidewayApp`: the API server is shared.
    pub status_interval: Duration,
}

/// Where apps declared as `TidewayApp` resources are read from (`[kubernetes] tidewayapps`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResourceScope {
    /// Nowhere: every app comes from the file.
    #[default]
    Off,
    /// Tideway's own namespace: a Role is enough.
    Namespace,
    /// Every namespace: needs a ClusterRole.
    Cluster,
}

impl KubernetesSettings {
    /// The Lease name when `[kubernetes]` gives none.
    pub const DEFAULT_LEASE: &'static str = "tideway";
    /// client-go's default lease duration.
    pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
    /// client-go's default retry period.
    pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(2);
    /// One status write per resource per 10 s at most: an HPA writes its status every 15 s.
    pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

    /// Reads `[kubernetes]`.
    pub(crate) fn read(mut section: Section<'_>, errors: &mut Errors) -> Self {
        let lease = section
            .get("lease", errors, |v| dns_subdomain(string(v)?))
            .unwrap_or_else(|| Self::DEFAULT_LEASE.to_owned());
        let duration = section.get("lease_duration", errors, nonzero_duration);
        let renew_every = section.get("lease_renew_every", errors, nonzero_duration);
        let tidewayapps = section.get("tidewayapps", errors, resource_scope);
        let status_interval = section.get("status_interval", errors, nonzero_duration);
        let settings = KubernetesSettings {
            lease,
            lease_duration: duration.unwrap_or(Self::DEFAULT_LEASE_DURATION),
            lease_renew_every: renew_every.unwrap_or(Self::DEFAULT_RENEW_EVERY),
            tidewayapps: tidewayapps.unwrap_or_default(),
            status_interval: status_interval.unwrap_or(Self::DEFAULT_STATUS_INTERVAL),
        };
        if settings.lease_renew_every >= settings.lease_duration {
            let path = match renew_every {
                Some(_) => section.key_path("lease_renew_every"),
                None => section.key_path("lease_duration"),
            };
            errors.push(
                path,
                format!(
                    "lease_renew_every ({}) must be shorter than lease_duration ({}), or the lease lapses between renewals",
                    humantime::format_duration(settings.lease_renew_every),
                    humantime::format_duration(settings.lease_duration)
                ),
            );
        }
        section.finish(errors);
        settings
    }
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        KubernetesSettings {
            lease: Self::DEFAULT_LEASE.to_owned(),
            lease_duration: Self::DEFAULT_LEASE_DURATION,
            lease_renew_every: Self::DEFAULT_RENEW_EVERY,
            tidewayapps: ResourceScope::Off,
            status_interval: Self::DEFAULT_STATUS_INTERVAL,
        }
    }
}

/// `tidewayapps`: `"off"`, `"namespace"` or `"cluster"`.
fn resource_scope(value: &Value) -> Result<ResourceScope, String> {
    match string(value)? {
        "off" => Ok(ResourceScope::Off),
        "namespace" => Ok(ResourceScope::Namespace),
        "cluster" => Ok(ResourceScope::Cluster),
        other => Err(format!(
            r#"expected "off", "namespace" (tideway's own) or "cluster" (every namespace), got "{other}""#
        )),
    }
}

/// Reads `[app.kubernetes]`.
pub(crate) fn read_kubernetes(section: &mut Section<'_>, errors: &mut Errors) -> Option<KubernetesSpec> {
    let deployment = section.required("deployment", errors, |v| dns_subdomain(string(v)?));
    let namespace = section.get("namespace", errors, |v| dns_label(string(v)?));
    let service = section.get("service", errors, |v| service_name(string(v)?));
    let port = section.required("port", errors, port);
    let valid = (!section.contains("namespace") || namespace.is_some())
        && (!section.contains("service") || service.is_some());
    let deployment = deployment?;
    let service = match service {
        Some(service) => service,
        None => service_name(&deployment)
            .map_err(|message| {
                errors.push(
                    section.key_path("service"),
                    format!("required: the deployment's name is no Service name ({message})"),
                );
            })
            .ok()?,
    };
    valid.then_some(KubernetesSpec {
        deployment,
        namespace,
        service,
        port: port?,
    })
}

/// A Service port: its name (an IANA service name) or its number.
pub(crate) fn port(value: &Value) -> Result<PortRef, String> {
    match value {
        Value::Integer(n) => u16::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .map(PortRef::Number)
            .ok_or_else(|| "must be between 1 and 65535".to_owned()),
        Value::String(name) => port_name(name).map(PortRef::Name),
        other => Err(expected(
            r#"expected a port name like "http" or a number like 8080"#,
            other,
        )),
    }
}

/// A port name as Kubernetes accepts it (IANA_SVC_NAME): 1–15 characters of `a-z0-9-`, with a letter, no
/// `-` at either end or twice in a row.
fn port_name(name: &str) -> Result<String, String> {
    let valid = (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(name.to_owned())
    } else {
        Err("must be a port name of 1 to 15 characters of a-z, 0-9 and '-' (with a letter, no '-' at either end or twice in a row), or a port number".to_owned())
    }
}

/// A Service name (an RFC 1035 label): a DNS label that starts with a letter.
pub(crate) fn service_name(name: &str) -> Result<String, String> {
    if is_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(name.to_owned())
    } else {
        Err("must be 1 to 63 characters of a-z, 0-9 and '-', starting with a letter and ending with a letter or digit".to_owned())
    }
}

/// A DNS subdomain (RFC 1123), as Deployments and Leases are named: at most 253 characters of labels
/// joined by `.`.
fn dns_subdomain(name: &str) -> Result<String, String> {
    if name.len() <= 253 && name.split('.').all(is_label) {
        Ok(name.to_owned())
    } else {
        Err("must be a DNS subdomain: at most 253 characters of a-z, 0-9, '-' and '.', each part starting and ending with a letter or digit".to_owned())
    }
}

#[cfg(test)]
mod tests;
