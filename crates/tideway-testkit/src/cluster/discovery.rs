//! What `kubectl` needs of an API server beyond objects: discovery (`/api`, `/apis` and each group
//! version's resources, custom resources included once their CRD is stored) and lists as a `Table`, whose
//! columns for a custom resource are its CRD's `additionalPrinterColumns` — as real API servers serve them
//! (the legacy discovery documents; kubectl falls back to them).

use serde_json::{Value, json};

use super::store::{Resource, Store};

/// A resource the test cluster serves without a CRD.
struct BuiltIn {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    subresources: &'static [&'static str],
}

const fn built_in(
    group: &'static str,
    version: &'static str,
    (plural, singular, kind): (&'static str, &'static str, &'static str),
    namespaced: bool,
    subresources: &'static [&'static str],
) -> BuiltIn {
    BuiltIn {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        subresources,
    }
}

const BUILT_IN: &[BuiltIn] = &[
    built_in("", "v1", ("pods", "pod", "Pod"), true, &["status"]),
    built_in("", "v1", ("services", "service", "Service"), true, &[]),
    built_in("", "v1", ("secrets", "secret", "Secret"), true, &[]),
    built_in("", "v1", ("namespaces", "namespace", "Namespace"), false, &[]),
    built_in("", "v1", ("events", "event", "Event"), true, &[]),
    built_in(
        "apps",
        "v1",
        ("deployments", "deployment", "Deployment"),
        true,
        &["scale", "status"],
    ),
    built_in(
        "apps",
        "v1",
        ("replicasets", "replicaset", "ReplicaSet"),
        true,
        &["status"],
    ),
    built_in(
        "discovery.k8s.io",
        "v1",
        ("endpointslices", "endpointslice", "EndpointSlice"),
        true,
        &[],
    ),
    built_in(
        "coordination.k8s.io",
        "v1",
        ("leases", "lease", "Lease"),
        true,
        &[],
    ),
    built_in("events.k8s.io", "v1", ("events", "event", "Event"), true, &[]),
    built_in(
        "apiextensions.k8s.io",
        "v1",
        (
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
        ),
        false,
        &["status"],
    ),
];

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "get",
    "list",
    "patch",
    "update",
    "watch",
    "deletecollection",
];

/// One resource of a group version, as discovery lists it.
struct Listed {
    group: String,
    version: String,
    entry: Value,
    subresources: Vec<String>,
}

/// The discovery document at `path`, if it is one.
pub(crate) fn document(store: &Store, path: &str) -> Option<Value> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let listed = resources(store);
    match parts[..] {
        ["api"] => {
            Some(json!({ "kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [] }))
        }
        ["apis"] => {
            let mut groups: Vec<(String, String)> = listed
                .iter()
                .filter(|r| !r.group.is_empty())
                .map(|r| (r.group.clone(), r.version.clone()))
                .collect();
            groups.sort();
            groups.dedup();
            let groups: Vec<Value> = groups
                .iter()
                .map(|(group, version)| {
                    let version = json!({ "groupVersion": format!("{group}/{version}"), "version": version });
                    json!({ "name": group, "versions": [version], "preferredVersion": version })
                })
                .collect();
            Some(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups }))
        }
        ["api", version] => Some(resource_list(&listed, "", version)),
        ["apis", group, version] => {
            let known = listed.iter().any(|r| r.group == group && r.version == version);
            known.then(|| resource_list(&listed, group, version))
        }
        _ => None,
    }
}

fn resource_list(listed: &[Listed], group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for resource in listed.iter().filter(|r| r.group == group && r.version == version) {
        resources.push(resource.entry.clone());
        for sub in &resource.subresources {
            let mut entry = resource.entry.clone();
            entry["name"] = json!(format!(
                "{}/{sub}",
                resource.entry["name"].as_str().unwrap_or_default()
            ));
            entry["verbs"] = json!(["get", "patch", "update"]);
            if let Some(entry) = entry.as_object_mut() {
                entry.remove("shortNames");
                entry.remove("categories");
            }
            resources.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources })
}

/// Every resource served: the built-in ones and those of the stored CRDs.
fn resources(store: &Store) -> Vec<Listed> {
    let built_in = BUILT_IN.iter().map(|r| Listed {
        group: r.group.to_owned(),
        version: r.version.to_owned(),
        entry: json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": VERBS,
        }),
        subresources: r.subresources.iter().map(|s| (*s).to_owned()).collect(),
    });
    let custom = crds(store).into_iter().flat_map(|crd| {
        let spec = crd["spec"].clone();
        let versions = spec["versions"].as_array().cloned().unwrap_or_default();
        versions.into_iter().map(move |version| {
            let names = &spec["names"];
            let subresources = version["subresources"]
                .as_object()
                .map(|subs| subs.keys().cloned().collect())
                .unwrap_or_default();
            Listed {
                group: spec["group"].as_str().unwrap_or_default().to_owned(),
                version: version["name"].as_str().unwrap_or_default().to_owned(),
                entry: json!({
                    "name": names["plural"], "singularName": names["singular"],
                    "namespaced": spec["scope"] == "Namespaced", "kind": names["kind"],
                    "shortNames": names["shortNames"].as_array().cloned().unwrap_or_default(),
                    "categories": names["categories"].as_array().cloned().unwrap_or_default(),
                    "verbs": VERBS,
                }),
                subresources,
            }
        })
    });
    built_in.chain(custom).collect()
}

fn crds(store: &Store) -> Vec<Value> {
    let resource = Resource {
        group: "apiextensions.k8s.io".into(),
        plural: "customresourcedefinitions".into(),
    };
    store.list(&resource, None).0
}

/// `items` of `resource` at `version` as a `Table`, if the resource is a custom one: its CRD's printer
/// columns after the name, dates shown as ages.
pub(crate) fn table(
    store: &Store,
    resource: &Resource,
    version: &str,
    items: &[Value],
    list_version: u64,
) -> Option<Value> {
    let crd = crds(store).into_iter().find(|crd| {
        crd["spec"]["group"] == resource.group.as_str()
            && crd["spec"]["names"]["plural"] == resource.plural.as_str()
    })?;
    let versions = crd["spec"]["versions"].as_array().cloned().unwrap_or_default();
    let served = versions.into_iter().find(|v| v["name"] == version)?;
    let columns = served["additionalPrinterColumns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut definitions = vec![
        json!({ "name": "Name", "type": "string", "format": "name", "description": "the object's name", "priority": 0 }),
    ];
    definitions.extend(columns.iter().map(|c| {
        json!({ "name": c["name"], "type": c["type"], "format": "", "description": c["description"], "priority": c["priority"].as_i64().unwrap_or(0) })
    }));
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut cells = vec![item["metadata"]["name"].clone()];
            cells.extend(columns.iter().map(|c| cell(item, c)));
            let metadata = json!({ "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item["metadata"] });
            json!({ "cells": cells, "object": metadata })
        })
        .collect();
    Some(json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": list_version.to_string() },
        "columnDefinitions": definitions,
        "rows": rows,
    }))
}

/// One printer column's cell of `item`: strings as they are, other values of a string column as JSON,
/// dates as ages, a missing value as null.
fn cell(item: &Value, column: &Value) -> Value {
    let path = column["jsonPath"].as_str().unwrap_or_default();
    let value = path
        .split('.')
        .filter(|part| !part.is_empty())
        .try_fold(item, |value, part| value.get(part));
    match (value, column["type"].as_str()) {
        (None | Some(Value::Null), _) => Value::Null,
        (Some(Value::String(stamp)), Some("date")) => age(stamp).map_or(Value::Null, Value::String),
        (Some(Value::String(text)), _) => Value::String(text.clone()),
        (Some(other), Some("string")) => Value::String(other.to_string()),
        (Some(other), _) => other.clone(),
    }
}

/// How long ago `stamp` (RFC 3339, UTC, whole seconds) was, as kubectl shows ages: `42s`, `5m`, `3h`, `2d`.
fn age(stamp: &str) -> Option<String> {
    let then = seconds_since_epoch(stamp)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let ago = now.saturating_sub(then);
    Some(match ago {
        0..120 => format!("{ago}s"),
        120..7200 => format!("{}m", ago / 60),
        7200..172_800 => format!("{}h", ago / 3600),
        _ => format!("{}d", ago / 86_400),
    })
}

fn seconds_since_epoch(stamp: &str) -> Option<u64> {
    let (date, time) = stamp.trim_end_matches('Z').split_once('T')?;
    let mut date = date.split('-').map(str::parse::<i64>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let mut time = time
        .split(':')
        .map(|part| part.split('.').next().unwrap_or(part).parse::<i64>());
    let (hour, minute, second) = (time.next()?.ok()?, time.next()?.ok()?, time.next()?.ok()?);
    // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_read_back_as_the_seconds_they_were_written_from() {
        assert_eq!(seconds_since_epoch("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(seconds_since_epoch("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(seconds_since_epoch("2026-12-02T17:00:44Z"), Some(1_796_230_844));
        let now = super::super::store::now_rfc3339();
        assert_eq!(age(&now).as_deref().map(|a| a.ends_with('s')), Some(true));
    }

    #[test]
    fn cells_follow_the_column_types() {
        let item = json!({ "spec": { "hosts": ["a", "b"], "min": 1 }, "status": { "occupancy": 0.5 } });
        let column = |path: &str, kind: &str| json!({ "jsonPath": path, "type": kind });
        assert_eq!(
            cell(&item, &column(".spec.hosts", "string")),
            json!(r#"["a","b"]"#)
        );
        assert_eq!(cell(&item, &column(".spec.min", "integer")), json!(1));
        assert_eq!(cell(&item, &column(".status.occupancy", "number")), json!(0.5));
        assert_eq!(cell(&item, &column(".status.missing", "integer")), Value::Null);
    }
}
