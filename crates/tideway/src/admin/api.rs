//! The admin API's JSON: what it shows of an app, and how a policy change is read. The shape is the one
//! documented in the README ("Admin API"); the status page relies on it.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};
use tideway_cluster::ClusterView;
use tideway_config::{Backend, FieldError, POLICY_KEYS, policy_update};
use tideway_core::{AppStats, CloseReason, Policy, RECENT_MINUTES, RejectReason, Timestamp};
use tideway_proxy::CertificateTable;
use tracing::info;

use crate::fleet::AppView;
use crate::http::{Body, json};

/// `GET /api/apps`: the apps, with `[cluster]` the instance's peers (`null` for an instance alone), and
/// the certificates in force.
pub(super) fn apps(
    fleet: &[AppView],
    now: Timestamp,
    cluster: Option<&ClusterView>,
    certificates: Value,
) -> Value {
    let shown = fleet.iter().filter(|view| view.is_shown());
    json!({
        "apps": shown.map(|view| app(view, now)).collect::<Vec<_>>(),
        "cluster": cluster,
        "certificates": certificates,
    })
}

/// `GET /api/certificates`: each certificate the HTTPS listener presents, the hosts it serves (none: the
/// default) and when it expires.
pub(super) fn certificates(table: &CertificateTable) -> Value {
    let unix_now = crate::certificates::unix_now();
    let listed = table.certificates().iter().map(|(certificate, hosts)| {
        json!({
            "certificate": certificate.source(),
            "hosts": hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "not_after": certificate.not_after(),
            "expires_in_seconds": certificate.not_after() - unix_now,
        })
    });
    Value::Array(listed.collect())
}

/// `GET /api/apps/{name}`: the app's state, its policy in force and its recent decisions.
pub(super) fn app(view: &AppView, now: Timestamp) -> Value {
    let app = &view.app;
    let all = view.replicas();
    let connections: u64 = all.iter().map(|r| u64::from(r.connections())).sum();
    let elsewhere: u64 = all.iter().map(|r| u64::from(r.elsewhere())).sum();
    let replicas: Vec<Value> = all
        .iter()
        .map(|r| {
            json!({
                "name": r.name(),
                "address": r.addr().to_string(),
                "state": r.state().as_str(),
                "connections": r.connections(),
                "elsewhere": r.elsewhere(),
                "age_seconds": now.saturating_since(r.started_at()).as_secs_f64(),
            })
        })
        .collect();
    let decisions: Vec<Value> = view
        .scaling
        .as_ref()
        .map(|scaling| scaling.decisions().recent())
        .unwrap_or_default()
        .iter()
        .map(|d| {
            json!({
                "at": humantime::format_rfc3339_millis(d.at).to_string(),
                "direction": d.direction.as_str(),
                "reason": d.reason.as_str(),
                "from": d.from,
                "to": d.to,
                "demand": d.demand,
                "revived": d.revived,
                "window": d.window.iter().map(|count| json!({
                    "desired": count.desired,
                    "held_ms": count.held.as_millis() as u64,
                    "demand": count.demand,
                })).collect::<Vec<_>>(),
                "drained": d.drained,
                "lost": d.lost,
            })
        })
        .collect();
    json!({
        "name": app.name(),
        "backend": match view.config.backend {
            Backend::Static { .. } => "static",
            Backend::Local(_) => "local",
            Backend::Kubernetes(_) => "kubernetes",
        },
        "scaled_here": view.scaled_here(),
        "problem": view.problem.as_ref().and_then(|problem| problem.borrow().clone()),
        "routes": {
            "hosts": view.config.hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "path_prefix": view.config.path_prefix,
        },
        "removed": view.removed,
        "connections": connections,
        "elsewhere": elsewhere,
        "queued": app.queued(),
        "sessions": app.session_count(),
        "confirmed_sessions": app.session_counts().confirmed,
        "desired_replicas": view.desired_replicas(),
        "policy": policy(&app.policy()),
        "recent": recent(app.stats()),
        "replicas": replicas,
        "decisions": decisions,
    })
}

/// `PUT /api/apps/{name}/policy`: the keys given replace those in force, held to the rules of the config
/// file; the change lasts until the next reload or restart.
pub(super) fn change_policy(view: &AppView, body: &Bytes) -> Response<Body> {
    let update = match serde_json::from_slice::<Value>(body) {
        Ok(update) => update,
        Err(error) => {
            return json(
                StatusCode::BAD_REQUEST,
                &json!({ "error": format!("the body is not JSON: {error}") }),
            );
        }
    };
    let table = match toml_table(update) {
        Ok(table) => table,
        Err(errors) => return unprocessable(&errors),
    };
    match policy_update(&view.app.policy(), &table) {
        Ok(updated) => {
            info!(app = view.app.name(), keys = ?table.keys().collect::<Vec<_>>(), "policy changed through the admin API");
            view.app.set_policy(updated.clone());
            json(
                StatusCode::OK,
                &json!({
                    "app": view.app.name(),
                    "policy": policy(&updated),
                    "persisted": false,
                    "note": "in force now, in memory only: the next reload or restart puts the configuration file's policy back",
                }),
            )
        }
        Err(errors) => unprocessable(&errors),
    }
}

fn unprocessable(errors: &[FieldError]) -> Response<Body> {
    let errors: Vec<Value> = errors
        .iter()
        .map(|e| json!({ "field": e.path, "message": e.message }))
        .collect();
    json(StatusCode::UNPROCESSABLE_ENTITY, &json!({ "errors": errors }))
}

/// The app's rejections and closes of the last minutes, by reason (the metrics have the totals).
fn recent(stats: &AppStats) -> Value {
    let rejected: Map<String, Value> = RejectReason::ALL
        .iter()
        .map(|r| (r.as_str().to_owned(), stats.recently_rejected(*r).into()))
        .collect();
    let closed: Map<String, Value> = CloseReason::ALL
        .iter()
        .map(|r| (r.as_str().to_owned(), stats.recently_closed(*r).into()))
        .collect();
    json!({ "minutes": RECENT_MINUTES, "rejected": rejected, "closed": closed })
}

/// A policy as the API shows it: the config file's keys and spellings.
fn policy(policy: &Policy) -> Value {
    let keys: Map<String, Value> = POLICY_KEYS
        .iter()
        .map(|key| (key.name.to_owned(), json_value(key.show(policy))))
        .collect();
    Value::Object(keys)
}

/// A policy value, as the file spells it, in JSON.
fn json_value(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => i.into(),
        toml::Value::Float(f) => f.into(),
        toml::Value::Boolean(b) => b.into(),
        other => Value::String(other.to_string()),
    }
}

/// The JSON object of a policy change as the TOML table the config rules read.
fn toml_table(update: Value) -> Result<toml::Table, Vec<FieldError>> {
    let Value::Object(keys) = update else {
        return Err(vec![FieldError {
            path: String::new(),
            message: "expected a JSON object of policy keys".to_owned(),
        }]);
    };
    let mut table = toml::Table::new();
    let mut errors = Vec::new();
    for (key, value) in keys {
        match toml_value(value) {
            Some(value) => {
                table.insert(key, value);
            }
            None => errors.push(FieldError {
                path: key,
                message: "null is not a value; give the key a value or leave it out".to_owned(),
            }),
        }
    }
    if errors.is_empty() { Ok(table) } else { Err(errors) }
}

fn toml_value(value: Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s),
        Value::Array(items) => toml::Value::Array(items.into_iter().map(toml_value).collect::<Option<_>>()?),
        Value::Object(map) => toml::Value::Table(object(map)?),
    })
}

fn object(map: Map<String, Value>) -> Option<toml::Table> {
    map.into_iter().map(|(k, v)| Some((k, toml_value(v)?))).collect()
}
