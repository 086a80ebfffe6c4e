//! The `TidewayApp` custom resource (`tideway.dev/v1alpha1`): an app declared in the cluster instead of the
//! file. Its `spec` is an `[[app]]` table — the same keys, the same rules — with `kubernetes` as its
//! backend, and its name is the app's; its `status` is what `kubectl get tidewayapps` shows. The CRD is
//! generated from these types (`tideway crd`), so the schema the API server enforces and the code cannot
//! drift apart.

use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use tideway_config::{AppConfig, FieldError, TlsSource, read_app};
use tideway_core::Policy;

/// A `TidewayApp`'s spec: an `[[app]]` table without `name` (the resource's name is the app's), whose
/// backend is a Deployment. Keys left out fall back to the file's `[defaults]`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "tideway.dev",
    version = "v1alpha1",
    kind = "TidewayApp",
    namespaced,
    status = "TidewayAppStatus",
    shortname = "twa",
    category = "tideway",
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.min_instances"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.max_instances"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.ready_replicas"}"#,
    printcolumn = r#"{"name":"Connections","type":"integer","jsonPath":".status.connections"}"#,
    printcolumn = r#"{"name":"Occupancy","type":"number","jsonPath":".status.occupancy"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.hosts) || has(self.path_prefix)").message("needs hosts or path_prefix (or both)"))]
#[x_kube(
    validation = Rule::new("!has(self.tls) || has(self.hosts)")
        .message("tls needs hosts: a certificate is picked by the host name a client asks for")
        .field_path(".tls")
)]
#[x_kube(
    validation = Rule::new("!has(self.min_instances) || !has(self.max_instances) || self.max_instances >= self.min_instances")
        .message("max_instances must be >= min_instances")
        .field_path(".max_instances")
)]
pub struct TidewayAppSpec {
    /// Host names the app answers for: exact names, IPv4 addresses or `*.example.com`; none = any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub hosts: Option<Vec<String>>,
    /// Path prefix the app answers for, starting with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub path_prefix: Option<String>,
    /// Floor of non-draining replicas; `0` allows scale to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<u32>,
    /// Ceiling of replicas, counting starting and draining ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_instances: Option<u32>,
    /// Hard per-replica connection limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// Occupancy percent at which the app wants another replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub spawn_threshold: Option<u32>,
    /// Connections older than this (±10%) are closed gracefully; `"off"` = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_age: Option<String>,
    /// Connections without application data for this long are closed gracefully; `"off"` = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_timeout: Option<String>,
    /// The stabilization window: a scale-down goes to the highest count desired during it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<String>,
    /// Longest a starting replica may take to become ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timeout: Option<String>,
    /// Longest a connection waits for a seat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<String>,
    /// Connections that may wait at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
    /// Longest in-flight requests are awaited when a replica drains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
    /// After a graceful close starts, how long the peers get before a hard close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_grace: Option<String>,
    /// How a replica with room is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceName>,
    /// Tie a client's connections to one replica and one seat with a cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinityName>,
    /// How long a confirmed session keeps its replica and seat after its last connection closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_grace: Option<String>,
    /// Most connections one session may have open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_session_connections: Option<u32>,
    /// Longest pause between two reads of a request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_read_timeout: Option<String>,
    /// Longest a replica may keep a request waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout: Option<String>,
    /// Answer requests over plain HTTP with a redirect to HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_https: Option<bool>,
    /// The `max-age` of the `Strict-Transport-Security` field of responses over HTTPS; `off` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts_max_age: Option<String>,
    /// Keep spare seats for the arrivals of one measured cold start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<HeadroomName>,
    /// The certificate presented over TLS to clients that name one of `hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSecretRef>,
    /// The Deployment whose pods are the replicas.
    pub kubernetes: DeploymentRef,
}

/// `tls` of a `TidewayApp`: the certificate is a Secret's, as an Ingress names it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSecretRef {
    /// A `kubernetes.io/tls` Secret in the resource's namespace (keys `tls.crt` and `tls.key`), watched:
    /// a change is loaded for new handshakes.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// `balance`, as the file spells it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BalanceName {
    /// The replica with the fewest connections.
    #[serde(rename = "least-connections")]
    LeastConnections,
    /// The fullest replica with room.
    #[serde(rename = "pack")]
    Pack,
}

/// `headroom`, as the file spells it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadroomName {
    /// None.
    #[serde(rename = "off")]
    Off,
    /// Seats for the arrivals of one measured cold start.
    #[serde(rename = "auto")]
    Auto,
}

/// `affinity`, as the file spells it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityName {
    /// No affinity.
    #[serde(rename = "none")]
    None,
    /// A cookie ties a client to its replica and seat.
    #[serde(rename = "cookie")]
    Cookie,
}

/// `[app.kubernetes]` as a resource gives it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct DeploymentRef {
    /// The Deployment tideway scales.
    #[schemars(length(min = 1, max = 253))]
    pub deployment: String,
    /// Its namespace; by default the resource's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service whose EndpointSlices list its pods; by default named like the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The Service's port that carries the app: its name, or its number.
    #[schemars(schema_with = "port_schema")]
    pub port: serde_json::Value,
}

/// What `kubectl get tidewayapps` shows, written by the leader.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct TidewayAppStatus {
    /// Pods with an endpoint, starting, ready or draining.
    #[serde(default)]
    pub replicas: u32,
    /// Pods ready for connections.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Connections seated on the app's replicas, at every instance.
    #[serde(default)]
    pub connections: u64,
    /// Connections / capacity of the ready replicas.
    #[serde(default)]
    pub occupancy: f64,
    /// Replicas the scaling rule asks for now.
    #[serde(default)]
    pub desired_replicas: u32,
    /// When the count last changed, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// The last scaling decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<DecisionStatus>,
    /// The spec's generation this status is of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `ScalingActive`, `ScalingLimited`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A scaling decision as the status shows it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct DecisionStatus {
    /// `up` or `down`.
    pub direction: String,
    /// Why (`threshold`, `idle`, `external`, …).
    pub reason: String,
    /// Replicas before.
    pub from: u32,
    /// Replicas after.
    pub to: u32,
    /// Connections seated and waiting at the time.
    pub demand: u64,
}

/// A condition, as Kubernetes objects carry them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `ScalingActive` or `ScalingLimited`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A one-word reason, CamelCase.
    pub reason: String,
    /// What it means, for people; names the field of a spec that was refused.
    pub message: String,
    /// When `status` last changed, RFC 3339.
    pub last_transition_time: String,
}

/// A Service port by name or number: `x-kubernetes-int-or-string`, as Kubernetes types its own.
fn port_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{ "type": "integer", "minimum": 1, "maximum": 65535 }, { "type": "string", "minLength": 1, "maxLength": 15 }],
    })
}

impl TidewayAppSpec {
    /// The app this spec declares, named `name` in `namespace` (its Deployment's, unless the spec names
    /// another), by the rules of the file, its keys falling back to `defaults`; every problem names its
    /// field under `spec`.
    pub fn app(&self, name: &str, namespace: &str, defaults: &Policy) -> Result<AppConfig, Vec<FieldError>> {
        let mut table = match serde_json::to_value(self).map(json_to_toml) {
            Ok(toml::Value::Table(table)) => table,
            _ => toml::Table::new(),
        };
        table.insert("name".into(), toml::Value::String(name.to_owned()));
        if let Some(toml::Value::Table(kubernetes)) = table.get_mut("kubernetes") {
            kubernetes
                .entry("namespace")
                .or_insert_with(|| toml::Value::String(namespace.to_owned()));
        }
        // The file names certificate files; a resource names a Secret, read here.
        table.remove("tls");
        let mut app = read_app("spec", &table, defaults)?;
        if let Some(tls) = &self.tls {
            if app.hosts.is_empty() {
                return Err(vec![FieldError {
                    path: "spec.tls".to_owned(),
                    message: "needs hosts: a certificate is picked by the host name a client asks for"
                        .to_owned(),
                }]);
            }
            app.tls = Some(TlsSource::Secret {
                namespace: namespace.to_owned(),
                name: tls.secret_name.clone(),
            });
        }
        Ok(app)
    }
}

/// A spec's JSON as the TOML the file's rules read; `null`s are left out, as keys not given.
fn json_to_toml(value: serde_json::Value) -> toml::Value {
    use serde_json::Value;
    match value {
        Value::Bool(b) => toml::Value::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => toml::Value::String(s),
        Value::Array(items) => toml::Value::Array(items.into_iter().map(json_to_toml).collect()),
        Value::Object(map) => toml::Value::Table(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, json_to_toml(v)))
                .collect(),
        ),
        Value::Null => toml::Value::Table(toml::Table::new()),
    }
}

#[cfg(test)]
mod tests;
