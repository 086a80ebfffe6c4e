use std::time::Duration;

use crate::tests::errors;
use crate::{Backend, Config, KubernetesSettings, KubernetesSpec, PortRef, ResourceScope};

/// An app "a" with `[app.kubernetes]` holding `keys`.
fn app(keys: &str) -> String {
    format!("[[app]]\nname = \"a\"\nhosts = [\"a.localhost\"]\n[app.kubernetes]\n{keys}\n")
}

fn spec(keys: &str) -> KubernetesSpec {
    let config: Config = app(keys)
        .parse()
        .unwrap_or_else(|e| panic!("unexpected error:\n{e}"));
    match &config.apps[0].backend {
        Backend::Kubernetes(spec) => spec.clone(),
        other => panic!("expected a Kubernetes backend, got {other:?}"),
    }
}

#[test]
fn a_deployment_with_every_key() {
    let spec = spec(
        r#"deployment = "shiny"
namespace = "apps"
service = "shiny-web"
port = "http""#,
    );
    assert_eq!(
        spec,
        KubernetesSpec {
            deployment: "shiny".into(),
            namespace: Some("apps".into()),
            service: "shiny-web".into(),
            port: PortRef::Name("http".into()),
        }
    );
}

#[test]
fn the_service_is_named_like_the_deployment_and_the_namespace_is_tideways_own() {
    let spec = spec("deployment = \"shiny\"\nport = 8080");
    assert_eq!(spec.service, "shiny");
    assert_eq!(spec.namespace, None);
    assert_eq!(spec.port, PortRef::Number(8080));
}

#[test]
fn names_are_checked_as_the_api_server_checks_them() {
    let cases = [
        (
            "deployment = \"Shiny\"\nport = 80",
            "app[0].kubernetes.deployment: must be a DNS subdomain: at most 253 characters of a-z, 0-9, '-' and '.', each part starting and ending with a letter or digit",
        ),
        (
            "deployment = \"a\"\nnamespace = \"apps.prod\"\nport = 80",
            "app[0].kubernetes.namespace: must be 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
        ),
        (
            "deployment = \"a\"\nservice = \"1web\"\nport = 80",
            "app[0].kubernetes.service: must be 1 to 63 characters of a-z, 0-9 and '-', starting with a letter and ending with a letter or digit",
        ),
        (
            "deployment = \"web.v2\"\nport = 80",
            "app[0].kubernetes.service: required: the deployment's name is no Service name (must be 1 to 63 characters of a-z, 0-9 and '-', starting with a letter and ending with a letter or digit)",
        ),
        (
            "deployment = \"a\"\nport = \"http--alt\"",
            "app[0].kubernetes.port: must be a port name of 1 to 15 characters of a-z, 0-9 and '-' (with a letter, no '-' at either end or twice in a row), or a port number",
        ),
        (
            "deployment = \"a\"\nport = 0",
            "app[0].kubernetes.port: must be between 1 and 65535",
        ),
        (
            "deployment = \"a\"\nport = 1.5",
            "app[0].kubernetes.port: expected a port name like \"http\" or a number like 8080, found a float",
        ),
        ("port = 80", "app[0].kubernetes.deployment: required"),
        ("deployment = \"a\"", "app[0].kubernetes.port: required"),
        (
            "deployment = \"a\"\nport = 80\nreplicas = 3",
            "app[0].kubernetes.replicas: unknown key",
        ),
    ];
    for (keys, expected) in cases {
        assert_eq!(errors(&app(keys)), [expected], "keys:\n{keys}");
    }
}

#[test]
fn the_lease_has_defaults_and_its_renewal_must_fit_its_duration() {
    let config: Config = "".parse().expect("an empty file");
    assert_eq!(config.kubernetes, KubernetesSettings::default());
    assert_eq!(config.kubernetes.lease, "tideway");
    let config: Config =
        "[kubernetes]\nlease = \"edge\"\nlease_duration = \"4s\"\nlease_renew_every = \"500ms\""
            .parse()
            .expect("a valid file");
    assert_eq!(
        config.kubernetes,
        KubernetesSettings {
            lease: "edge".into(),
            lease_duration: Duration::from_secs(4),
            lease_renew_every: Duration::from_millis(500),
            ..KubernetesSettings::default()
        }
    );
    assert_eq!(
        errors("[kubernetes]\nlease_duration = \"2s\""),
        [
            "kubernetes.lease_duration: lease_renew_every (2s) must be shorter than lease_duration (2s), or the lease lapses between renewals"
        ]
    );
    assert_eq!(
        errors("[kubernetes]\nlease_renew_every = \"1m\"\nnamespace = \"x\""),
        [
            "kubernetes.lease_renew_every: lease_renew_every (1m) must be shorter than lease_duration (15s), or the lease lapses between renewals",
            "kubernetes.namespace: unknown key"
        ]
    );
}

#[test]
fn resources_are_off_unless_a_scope_is_given() {
    let config: Config = "".parse().expect("an empty file");
    assert_eq!(config.kubernetes.tidewayapps, ResourceScope::Off);
    assert_eq!(config.kubernetes.status_interval, Duration::from_secs(10));
    for (scope, expected) in [
        ("off", ResourceScope::Off),
        ("namespace", ResourceScope::Namespace),
        ("cluster", ResourceScope::Cluster),
    ] {
        let config: Config = format!("[kubernetes]\ntidewayapps = \"{scope}\"\nstatus_interval = \"2s\"")
            .parse()
            .expect("a valid file");
        assert_eq!(config.kubernetes.tidewayapps, expected);
        assert_eq!(config.kubernetes.status_interval, Duration::from_secs(2));
    }
    assert_eq!(
        errors("[kubernetes]\ntidewayapps = \"all\"\nstatus_interval = \"0s\""),
        [
            r#"kubernetes.tidewayapps: expected "off", "namespace" (tideway's own) or "cluster" (every namespace), got "all""#,
            "kubernetes.status_interval: must be longer than 0s",
        ]
    );
}
