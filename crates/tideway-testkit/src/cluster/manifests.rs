//! Manifests of an app as tests deploy it to the test cluster: a Deployment whose pods are labelled
//! `app: <name>`, and a Service selecting them, port `http` (80) to the pods' 8080.

use serde_json::{Value, json};

/// The Deployment of app `name`, with `replicas` pods.
pub fn deployment(name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": name, "ports": [{ "containerPort": 8080 }] }] },
            },
        },
    })
}

/// The Service of app `name`.
pub fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name },
        "spec": { "selector": { "app": name }, "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
    })
}
