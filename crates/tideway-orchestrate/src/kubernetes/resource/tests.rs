use kube::CustomResourceExt;
use serde_json::{Value, json};
use tideway_config::{Backend, PortRef};

use super::*;

/// The CRD's schema of the `v1alpha1` version.
fn schema() -> Value {
    let crd = serde_json::to_value(TidewayApp::crd()).expect("the CRD as JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every node of a structural schema is typed, or says it holds an int-or-string or unknown fields; a
/// node's `properties` and `items` are structural too. Returns the paths that are not.
fn untyped(node: &Value, path: &str, found: &mut Vec<String>) {
    let Some(object) = node.as_object() else {
        return;
    };
    let open = object.get("x-kubernetes-int-or-string") == Some(&json!(true))
        || object.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if !object.contains_key("type") && !open {
        found.push(path.to_owned());
    }
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            untyped(property, &format!("{path}.{name}"), found);
        }
    }
    if let Some(items) = object.get("items") {
        untyped(items, &format!("{path}[]"), found);
    }
    for word in ["anyOf", "oneOf", "allOf"] {
        // In a structural schema these may only restate what the typed node says, without types of their
        // own beyond the node's (int-or-string aside).
        if object.contains_key(word) && !open {
            found.push(format!("{path} ({word} outside int-or-string)"));
        }
    }
}

#[test]
fn the_crd_is_structural_and_namespaced_in_the_tideway_group() {
    let crd = serde_json::to_value(TidewayApp::crd()).expect("the CRD as JSON");
    assert_eq!(crd["metadata"]["name"], "tidewayapps.tideway.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
    assert_eq!(crd["spec"]["versions"][0]["subresources"]["status"], json!({}));
    let mut found = Vec::new();
    untyped(&schema(), "", &mut found);
    assert!(found.is_empty(), "not structural at {found:?}");
}

#[test]
fn every_policy_key_of_the_file_is_in_the_spec() {
    let schema = schema();
    let properties = schema["properties"]["spec"]["properties"]
        .as_object()
        .expect("the spec's properties");
    for key in tideway_config::POLICY_KEYS {
        assert!(
            properties.contains_key(key.name),
            "{} is missing from the spec",
            key.name
        );
    }
    let mut names: Vec<&str> = properties.keys().map(String::as_str).collect();
    names.retain(|name| !tideway_config::POLICY_KEYS.iter().any(|key| key.name == *name));
    assert_eq!(
        names,
        ["hosts", "kubernetes", "path_prefix", "tls"],
        "and only the routes, the backend and the certificate besides"
    );
}

#[test]
fn the_printer_columns_show_hosts_bounds_ready_connections_and_occupancy() {
    let crd = serde_json::to_value(TidewayApp::crd()).expect("the CRD as JSON");
    let columns: Vec<(String, String)> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["jsonPath"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["Hosts", "Min", "Max", "Ready", "Connections", "Occupancy", "Age"]
    );
    let status = &schema()["properties"]["status"]["properties"];
    for (_, path) in &columns {
        if let Some(field) = path.strip_prefix(".status.") {
            assert!(status.get(field).is_some(), "{path} is a status field");
        }
    }
}

fn spec(value: Value) -> TidewayAppSpec {
    serde_json::from_value(value).expect("a spec")
}

#[test]
fn a_spec_is_an_app_by_the_rules_of_the_file() {
    let defaults = Policy::default();
    let app = spec(json!({
        "hosts": ["shiny.example.com"],
        "min_instances": 1,
        "max_instances": 4,
        "scale_down_delay": "30s",
        "affinity": "cookie",
        "kubernetes": { "deployment": "shiny", "port": "http" },
    }))
    .app("shiny", "apps", &defaults)
    .expect("a valid spec");
    assert_eq!(app.name, "shiny");
    assert_eq!(app.policy.max_instances, 4);
    assert_eq!(app.policy.scale_down_delay, std::time::Duration::from_secs(30));
    assert_eq!(
        app.policy.max_connections, defaults.max_connections,
        "the defaults fill in"
    );
    let Backend::Kubernetes(backend) = app.backend else {
        panic!("a Kubernetes backend");
    };
    assert_eq!(
        backend.namespace.as_deref(),
        Some("apps"),
        "the resource's namespace"
    );
    assert_eq!(backend.service, "shiny");
    assert_eq!(backend.port, PortRef::Name("http".into()));

    let refused = spec(json!({
        "path_prefix": "/x",
        "min_instances": 5,
        "max_instances": 2,
        "inactive_timeout": "soon",
        "kubernetes": { "deployment": "shiny", "port": 0 },
    }))
    .app("shiny", "apps", &defaults)
    .expect_err("an invalid spec");
    let messages: Vec<String> = refused.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "spec.inactive_timeout: expected a duration like \"30s\" or \"15m\", or \"off\"",
            "spec.kubernetes.port: must be between 1 and 65535",
            "spec.max_instances: must be >= min_instances (5)",
        ]
    );
}

/// The messages of the CEL rules the spec's schema refuses `spec` with, as the API server evaluates them.
///
/// The API server leaves a single `_` in a field name as it is (`self.path_prefix`; only `__` is
/// escaped), where kube-cel 0.8 spells it `__`: the rules are given to kube-cel in its spelling, so that
/// what is tested is their logic.
fn refusals(spec: &Value) -> Vec<String> {
    let mut schema = schema()["properties"]["spec"].clone();
    let fields: Vec<String> = schema["properties"]
        .as_object()
        .map(|properties| properties.keys().filter(|k| k.contains('_')).cloned().collect())
        .unwrap_or_default();
    for rule in schema["x-kubernetes-validations"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        let mut text = rule["rule"].as_str().unwrap_or_default().to_owned();
        for field in &fields {
            text = text.replace(
                &format!("self.{field}"),
                &format!("self.{}", field.replace('_', "__")),
            );
        }
        rule["rule"] = Value::String(text);
    }
    match kube_cel::validate(&schema, spec, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn the_cel_rules_refuse_what_they_must_and_accept_the_rest() {
    let backend = json!({ "deployment": "shiny", "port": "http" });
    let accepted = [
        json!({ "hosts": ["a.example.com"], "kubernetes": backend }),
        json!({ "path_prefix": "/a", "kubernetes": backend }),
        json!({ "hosts": ["a.example.com"], "min_instances": 2, "max_instances": 2, "kubernetes": backend }),
        json!({ "hosts": ["a.example.com"], "min_instances": 9, "kubernetes": backend }),
        json!({ "hosts": ["a.example.com"], "max_instances": 1, "kubernetes": backend }),
        json!({ "hosts": ["a.example.com"], "tls": { "secretName": "a-tls" }, "kubernetes": backend }),
    ];
    for spec in &accepted {
        assert_eq!(refusals(spec), Vec::<String>::new(), "{spec}");
    }
    assert_eq!(
        refusals(&json!({ "kubernetes": backend })),
        ["needs hosts or path_prefix (or both)"]
    );
    assert_eq!(
        refusals(
            &json!({ "path_prefix": "/", "min_instances": 3, "max_instances": 2, "kubernetes": backend })
        ),
        ["max_instances must be >= min_instances"]
    );
    assert_eq!(
        refusals(&json!({ "path_prefix": "/", "tls": { "secretName": "a-tls" }, "kubernetes": backend })),
        ["tls needs hosts: a certificate is picked by the host name a client asks for"]
    );
}

#[test]
fn a_spec_names_its_certificate_by_a_secret_of_its_namespace() {
    let defaults = Policy::default();
    let backend = json!({ "deployment": "shiny", "port": "http" });
    let app =
        spec(json!({ "hosts": ["a.example.com"], "tls": { "secretName": "a-tls" }, "kubernetes": backend }))
            .app("a", "apps", &defaults)
            .expect("a valid spec");
    assert_eq!(
        app.tls,
        Some(TlsSource::Secret {
            namespace: "apps".into(),
            name: "a-tls".into()
        })
    );
    let refused =
        spec(json!({ "path_prefix": "/a", "tls": { "secretName": "a-tls" }, "kubernetes": backend }))
            .app("a", "apps", &defaults)
            .expect_err("tls without hosts");
    assert_eq!(
        refused[0].to_string(),
        "spec.tls: needs hosts: a certificate is picked by the host name a client asks for"
    );
}
