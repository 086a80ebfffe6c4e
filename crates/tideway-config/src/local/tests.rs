use std::time::Duration;

use crate::{Backend, Config, ConfigError, LocalSpec, Readiness};

/// An app "a" with `[app.local]` holding `keys`.
fn local(keys: &str) -> String {
    format!("[[app]]\nname = \"a\"\nhosts = [\"a.localhost\"]\n[app.local]\n{keys}\n")
}

fn spec(keys: &str) -> LocalSpec {
    let config: Config = local(keys)
        .parse()
        .unwrap_or_else(|e| panic!("unexpected error:\n{e}"));
    match &config.apps[0].backend {
        Backend::Local(spec) => spec.clone(),
        other => panic!("expected a local backend, got {other:?}"),
    }
}

#[track_caller]
fn assert_only_error(keys: &str, expected: &str) {
    match local(keys).parse::<Config>() {
        Err(ConfigError::Invalid(errors)) => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert_eq!(errors, [expected]);
        }
        other => panic!("expected field errors, got {other:?}"),
    }
}

#[test]
fn a_full_local_backend() {
    let spec = spec(
        r#"command = ["python3", "app.py", "--port", "{port}"]
cwd = "/srv/app"
env = { MODE = "demo", EMPTY = "" }
readiness = { path = "/healthz", interval = "200ms", timeout = "2s" }
stop_timeout = "3s"
log_output = false"#,
    );
    assert_eq!(spec.command, ["python3", "app.py", "--port", "{port}"]);
    assert_eq!(spec.cwd.as_deref(), Some(std::path::Path::new("/srv/app")));
    assert_eq!(spec.env.get("MODE").map(String::as_str), Some("demo"));
    assert_eq!(spec.env.get("EMPTY").map(String::as_str), Some(""));
    assert_eq!(
        spec.readiness,
        Readiness::Http {
            path: "/healthz".into(),
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(2)
        }
    );
    assert_eq!(spec.stop_timeout, Duration::from_secs(3));
    assert!(!spec.log_output);
    assert_only_error(
        "command = [\"./server\"]\nlog_output = \"no\"",
        "app[0].local.log_output: expected true or false, found a string",
    );
}

#[test]
fn defaults_are_a_tcp_check_and_a_ten_second_stop() {
    let spec = spec(r#"command = ["./server"]"#);
    assert_eq!(spec.cwd, None);
    assert!(spec.env.is_empty());
    assert_eq!(
        spec.readiness,
        Readiness::Tcp {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1)
        }
    );
    assert_eq!(spec.stop_timeout, Duration::from_secs(10));
    assert!(spec.log_output);
    let tcp = self::spec("command = [\"./server\"]\nreadiness = { tcp = true, interval = \"1s\" }");
    assert!(matches!(tcp.readiness, Readiness::Tcp { interval, .. } if interval == Duration::from_secs(1)));
}

#[test]
fn command_rejections() {
    assert_only_error("", "app[0].local.command: required");
    assert_only_error("command = []", "app[0].local.command: must not be empty");
    assert_only_error(
        "command = [\"\", \"x\"]",
        "app[0].local.command: the program (first element) must not be empty",
    );
    assert_only_error(
        "command = [\"a\", 1]",
        "app[0].local.command: every element must be a string",
    );
    assert_only_error(
        "command = \"python3 app.py\"",
        r#"app[0].local.command: expected a command like ["python3", "app.py"], found a string"#,
    );
}

#[test]
fn env_rejections() {
    let cmd = "command = [\"x\"]\n";
    assert_only_error(
        &format!("{cmd}env = {{ PORT = \"1\" }}"),
        "app[0].local.env.PORT: is set by tideway for each replica",
    );
    assert_only_error(
        &format!("{cmd}env = {{ A = 1 }}"),
        "app[0].local.env.A: expected a string, found an integer",
    );
    assert_only_error(
        &format!("{cmd}env = {{ \"A=B\" = \"1\" }}"),
        "app[0].local.env.\"A=B\": is not a valid environment variable name",
    );
    assert_only_error(
        &format!("{cmd}env = \"A=1\""),
        "app[0].local.env: expected a table, found a string",
    );
    assert_only_error(
        &format!("{cmd}env = {{ A = \"x\\u0000y\" }}"),
        "app[0].local.env.A: must not contain a NUL character",
    );
}

#[test]
fn readiness_rejections() {
    let cmd = "command = [\"x\"]\n";
    assert_only_error(
        &format!("{cmd}readiness = {{ path = \"/\", tcp = true }}"),
        "app[0].local.readiness: choose one check: `path` (HTTP) or `tcp = true`",
    );
    assert_only_error(
        &format!("{cmd}readiness = {{ path = \"health\" }}"),
        "app[0].local.readiness.path: must start with '/'",
    );
    assert_only_error(
        &format!("{cmd}readiness = {{ tcp = false }}"),
        "app[0].local.readiness.tcp: only `tcp = true` is meaningful; use `path` for an HTTP check",
    );
    assert_only_error(
        &format!("{cmd}readiness = {{ path = \"/\", interval = \"0s\" }}"),
        "app[0].local.readiness.interval: must be longer than 0s",
    );
    assert_only_error(
        &format!("{cmd}readiness = {{ port = 80 }}"),
        "app[0].local.readiness.port: unknown key",
    );
    assert_only_error(
        &format!("{cmd}readiness = {{ path = \"/health check\" }}"),
        "app[0].local.readiness.path: must not contain whitespace",
    );
}

#[test]
fn other_rejections() {
    assert_only_error(
        "command = [\"x\"]\nstop_timeout = \"0s\"",
        "app[0].local.stop_timeout: must be longer than 0s",
    );
    assert_only_error(
        "command = [\"x\"]\ncwd = 1",
        "app[0].local.cwd: expected a string, found an integer",
    );
    assert_only_error(
        "command = [\"x\"]\nshell = true",
        "app[0].local.shell: unknown key",
    );
    let both = "[[app]]\nname = \"a\"\nhosts = [\"a.localhost\"]\n[app.local]\ncommand = [\"x\"]\n\
                [app.static]\naddresses = [\"127.0.0.1:9001\"]\n";
    match both.parse::<Config>() {
        Err(ConfigError::Invalid(errors)) => assert_eq!(
            errors[0].to_string(),
            "app[0]: has more than one backend ([app.local], [app.static]); keep one"
        ),
        other => panic!("expected an error, got {other:?}"),
    }
}
