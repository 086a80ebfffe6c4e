use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use tideway_config::Config;

use super::*;

/// A `TidewayApp` `name` in `namespace`, made `age` seconds after the first, with `spec`.
fn resource(namespace: &str, name: &str, age: i64, spec: Value) -> Arc<DynamicObject> {
    let mut object = DynamicObject::new(name, &ApiResource::erase::<TidewayApp>(&()))
        .within(namespace)
        .data(json!({ "spec": spec }));
    let created = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + age).expect("a time");
    object.metadata.creation_timestamp = Some(Time(created));
    object.metadata.generation = Some(3);
    Arc::new(object)
}

fn spec(hosts: &[&str]) -> Value {
    json!({ "hosts": hosts, "max_instances": 3, "kubernetes": { "deployment": "web", "port": "http" } })
}

fn file(text: &str) -> Vec<AppConfig> {
    text.parse::<Config>().expect("a valid file").apps
}

fn names(resolution: &Resolution) -> Vec<String> {
    resolution
        .apps
        .iter()
        .map(|app| app.config.name.clone())
        .collect()
}

fn refusals(resolution: &Resolution) -> Vec<(String, &'static str, String)> {
    let refused = resolution.refused.iter();
    refused
        .map(|r| (r.key.name.clone(), r.reason, r.message.clone()))
        .collect()
}

#[test]
fn a_valid_resource_is_an_app_of_its_namespace() {
    let resolution = resolve(
        &[],
        &[resource("team", "shiny", 0, spec(&["shiny.test"]))],
        &Policy::default(),
    );
    assert!(resolution.refused.is_empty(), "{:?}", resolution.refused);
    let app = &resolution.apps[0];
    assert_eq!(
        app.key,
        ResourceKey {
            namespace: "team".into(),
            name: "shiny".into()
        }
    );
    assert_eq!(app.generation, Some(3));
    assert_eq!(app.config.name, "shiny");
    assert_eq!(app.config.policy.max_instances, 3);
    let tideway_config::Backend::Kubernetes(target) = &app.config.backend else {
        panic!("a Kubernetes backend");
    };
    assert_eq!(target.namespace.as_deref(), Some("team"));
}

#[test]
fn a_spec_that_does_not_fit_the_type_is_refused_naming_its_field() {
    let mut wrong = spec(&["a.test"]);
    wrong["max_connections"] = json!("many");
    let resolution = resolve(
        &[],
        &[
            resource("team", "wrong", 0, wrong),
            resource("team", "fine", 1, spec(&["fine.test"])),
        ],
        &Policy::default(),
    );
    assert_eq!(names(&resolution), ["fine"], "the others are undisturbed");
    let [(name, reason, message)] = &refusals(&resolution)[..] else {
        panic!("one refusal: {:?}", resolution.refused);
    };
    assert_eq!((name.as_str(), *reason), ("wrong", "InvalidSpec"));
    assert!(
        message.starts_with("spec.max_connections: invalid type"),
        "{message}"
    );
}

#[test]
fn a_spec_the_rules_refuse_names_every_field() {
    let mut wrong = spec(&["a.test", "a.test"]);
    wrong["min_instances"] = json!(5);
    wrong["scale_down_delay"] = json!("soon");
    let resolution = resolve(&[], &[resource("team", "wrong", 0, wrong)], &Policy::default());
    let [(_, "InvalidSpec", message)] = &refusals(&resolution)[..] else {
        panic!("one refusal: {:?}", resolution.refused);
    };
    for field in ["spec.hosts[1]", "spec.scale_down_delay", "spec.max_instances"] {
        assert!(message.contains(&format!("{field}: ")), "{field} in {message}");
    }
}

#[test]
fn the_file_keeps_its_names_and_routes_and_the_older_resource_keeps_its_own() {
    let file = file(
        "[[app]]\nname = \"shiny\"\nhosts = [\"file.test\"]\n[app.static]\naddresses = [\"127.0.0.1:9\"]\n",
    );
    let resolution = resolve(
        &file,
        &[
            resource("b", "web", 2, spec(&["web.test"])),
            resource("team", "shiny", 0, spec(&["shiny.test"])),
            resource("a", "web", 1, spec(&["other.test"])),
            resource("team", "copy", 3, spec(&["x.test", "file.test"])),
            resource("team", "again", 4, spec(&["web.test"])),
        ],
        &Policy::default(),
    );
    assert_eq!(names(&resolution), ["web", "again"]);
    assert_eq!(
        resolution.apps[0].key.namespace, "a",
        "the older of two of one name"
    );
    assert_eq!(
        refusals(&resolution),
        [
            (
                "shiny".to_owned(),
                "NameTaken",
                r#"metadata.name: app "shiny" is already declared by an app of the configuration file"#
                    .to_owned()
            ),
            (
                "web".to_owned(),
                "NameTaken",
                r#"metadata.name: app "web" is already declared by TidewayApp a/web"#.to_owned()
            ),
            (
                "copy".to_owned(),
                "RouteTaken",
                r#"spec.hosts[1]: route "file.test/" is already used by app "shiny""#.to_owned()
            ),
        ],
        "web.test of b/web is free, since b/web is refused: `again` takes it"
    );
}
