use std::net::SocketAddr;
use std::time::Duration;

use tideway_core::{Affinity, Balance, Headroom, Policy, SpawnThreshold};

use crate::TlsFiles;

use super::*;

/// Parses a file that must be valid.
fn parse(text: &str) -> Config {
    match text.parse::<Config>() {
        Ok(config) => config,
        Err(error) => panic!("unexpected error:\n{error}"),
    }
}

/// The field errors of a file that must be invalid, as displayed.
pub(crate) fn errors(text: &str) -> Vec<String> {
    match text.parse::<Config>() {
        Err(ConfigError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        other => panic!("expected field errors, got {other:?}"),
    }
}

/// Asserts that a file has exactly one error, `expected`.
#[track_caller]
fn assert_only_error(text: &str, expected: &str) {
    assert_eq!(errors(text), [expected], "file:\n{text}");
}

/// One valid app named "a" on host a.localhost, with `keys` added to the app table.
fn app(keys: &str) -> String {
    format!(
        "[[app]]\nname = \"a\"\nhosts = [\"a.localhost\"]\n{keys}\n[app.static]\naddresses = [\"127.0.0.1:9001\"]\n"
    )
}

/// One valid app with the given name and route keys.
fn routed(name: &str, route: &str) -> String {
    format!("[[app]]\nname = \"{name}\"\n{route}\n[app.static]\naddresses = [\"127.0.0.1:9001\"]\n")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---- valid files ----

#[test]
fn empty_file_is_all_defaults() {
    let config = parse("");
    assert_eq!(config, Config::default());
    assert_eq!(config.proxy.listen, addr("0.0.0.0:8080"));
    assert_eq!(config.proxy.header_read_timeout, secs(10));
    assert_eq!(config.proxy.keepalive_timeout, secs(75));
    assert_eq!(config.proxy.max_header_bytes, 32768);
    assert_eq!(config.proxy.max_headers, 100);
    assert_eq!(config.proxy.upstream_connect_timeout, secs(5));
    assert_eq!(config.proxy.upstream_keepalive, 1024);
    assert_eq!(config.proxy.upstream_keepalive_timeout, secs(60));
    assert_eq!(config.proxy.workers, None);
    assert_eq!(config.metrics, None);
    assert_eq!(config.admin, None);
    assert!(config.apps.is_empty());
}

#[test]
fn full_file_parses_to_its_values() {
    let config = parse(
        r#"
[proxy]
listen = "[::]:80"
header_read_timeout = "500ms"
keepalive_timeout = "1m 30s"
send_timeout = "20s"
access_log = false
max_header_bytes = 1024
max_headers = 1000
upstream_connect_timeout = "2s"
upstream_keepalive = 0
upstream_keepalive_timeout = "90s"
workers = 3
body_read_timeout = "40s"
response_timeout = "2m"
tls_listen = "[::]:443"
tls_certificate = "/etc/tls/default.crt"
tls_key = "/etc/tls/default.key"
https_port = 8443
tls_handshake_timeout = "4s"
max_tls_handshakes = 64
trace_log = "/var/lib/tideway/trace.jsonl"
trace_log_max_bytes = 1048576

[metrics]
listen = "0.0.0.0:9100"

[admin]
listen = "0.0.0.0:9101"
token_file = "/run/secrets/x"

[defaults]
max_connections = 30
max_connection_age = "2h"
inactive_timeout = "10m"
balance = "pack"

[[app]]
name = "hello"
hosts = ["Hello.Localhost.", "*.hello.example.com", "10.0.0.5"]
path_prefix = "/hello/"
min_instances = 1
max_instances = 4
max_connections = 10
spawn_threshold = 50
max_connection_age = "1h"
inactive_timeout = "off"
scale_down_delay = "2m"
startup_timeout = "45s"
queue_timeout = "3s"
max_queued = 7
drain_timeout = "5m"
close_grace = "1s"
balance = "least-connections"
affinity = "cookie"
reconnect_grace = "45s"
max_session_connections = 12
body_read_timeout = "15s"
redirect_https = true
hsts_max_age = "365d"
headroom = "auto"
tls_certificate = "hello.crt"
tls_key = "hello.key"
[app.static]
addresses = ["127.0.0.1:9001", "[::1]:9002"]

[[app]]
name = "other-1"
path_prefix = "/"
[app.static]
addresses = ["127.0.0.1:9003"]
"#,
    );
    assert_eq!(
        config.proxy,
        ProxySettings {
            listen: addr("[::]:80"),
            header_read_timeout: Duration::from_millis(500),
            keepalive_timeout: secs(90),
            send_timeout: secs(20),
            access_log: false,
            max_header_bytes: 1024,
            max_headers: 1000,
            upstream_connect_timeout: secs(2),
            upstream_keepalive: 0,
            upstream_keepalive_timeout: secs(90),
            workers: Some(3),
            body_read_timeout: secs(40),
            response_timeout: secs(120),
            tls_listen: Some(addr("[::]:443")),
            tls: Some(TlsFiles {
                certificate: "/etc/tls/default.crt".into(),
                key: "/etc/tls/default.key".into(),
            }),
            https_port: Some(8443),
            tls_handshake_timeout: secs(4),
            max_tls_handshakes: 64,
            trace_log: Some("/var/lib/tideway/trace.jsonl".into()),
            trace_log_max_bytes: 1_048_576,
        }
    );
    assert_eq!(config.proxy.https_port(), 8443);
    assert_eq!(
        config.metrics,
        Some(MetricsSettings {
            listen: addr("0.0.0.0:9100")
        })
    );
    assert_eq!(
        config.admin,
        Some(AdminSettings {
            listen: addr("0.0.0.0:9101"),
            token_file: Some("/run/secrets/x".into()),
            token_env: None,
        })
    );
    assert_eq!(config.apps.len(), 2);

    let hello = &config.apps[0];
    assert_eq!(hello.name, "hello");
    assert_eq!(
        hello.hosts,
        [
            HostPattern::Exact("hello.localhost".into()),
            HostPattern::Suffix(".hello.example.com".into()),
            HostPattern::Exact("10.0.0.5".into()),
        ]
    );
    assert_eq!(hello.path_prefix.as_deref(), Some("/hello"));
    assert_eq!(
        hello.policy,
        Policy {
            min_instances: 1,
            max_instances: 4,
            max_connections: 10,
            spawn_threshold: SpawnThreshold::new(50).expect("valid"),
            max_connection_age: Some(secs(3600)),
            inactive_timeout: None,
            scale_down_delay: secs(120),
            startup_timeout: secs(45),
            queue_timeout: secs(3),
            max_queued: 7,
            drain_timeout: secs(300),
            close_grace: secs(1),
            balance: Balance::LeastConnections,
            affinity: Affinity::Cookie,
            reconnect_grace: secs(45),
            max_session_connections: 12,
            body_read_timeout: secs(15),
            response_timeout: secs(120),
            redirect_https: true,
            hsts_max_age: Some(secs(365 * 86_400)),
            headroom: Headroom::Auto,
        }
    );
    assert_eq!(
        hello.tls,
        Some(crate::TlsSource::Files(TlsFiles {
            certificate: "hello.crt".into(),
            key: "hello.key".into(),
        }))
    );
    assert_eq!(
        hello.backend,
        Backend::Static {
            addresses: vec![addr("127.0.0.1:9001"), addr("[::1]:9002")]
        }
    );

    // Falls back to [defaults], then to [proxy]'s timeouts and Policy::default().
    let other = &config.apps[1];
    assert!(other.hosts.is_empty());
    assert_eq!(other.path_prefix.as_deref(), Some("/"));
    assert_eq!(
        other.policy,
        Policy {
            max_connections: 30,
            max_connection_age: Some(secs(7200)),
            inactive_timeout: Some(secs(600)),
            balance: Balance::Pack,
            body_read_timeout: secs(40),
            response_timeout: secs(120),
            ..Policy::default()
        }
    );
}

#[test]
fn empty_sections_turn_listeners_on_with_defaults() {
    let config = parse("[metrics]\n[admin]\n[defaults]\n");
    assert_eq!(
        config.metrics,
        Some(MetricsSettings {
            listen: addr("0.0.0.0:9090")
        })
    );
    assert_eq!(
        config.admin,
        Some(AdminSettings {
            listen: addr("127.0.0.1:9091"),
            token_file: None,
            token_env: None,
        })
    );
    assert_eq!(config.metrics, Some(MetricsSettings::default()));
    assert_eq!(config.admin, Some(AdminSettings::default()));
}

#[test]
fn off_turns_off_a_default() {
    let text = format!(
        "[defaults]\nmax_connection_age = \"1h\"\ninactive_timeout = \"15m\"\n{}",
        app("max_connection_age = \"off\"")
    );
    let policy = &parse(&text).apps[0].policy;
    assert_eq!(policy.max_connection_age, None);
    assert_eq!(policy.inactive_timeout, Some(secs(900)));
}

#[test]
fn hosts_may_be_empty_when_a_path_prefix_is_given() {
    let config = parse(&routed("a", "hosts = []\npath_prefix = \"/a\""));
    assert!(config.apps[0].hosts.is_empty());
}

#[test]
fn loopback_admin_needs_no_token() {
    for listen in ["127.0.0.1:9091", "127.0.0.2:1", "[::1]:9091"] {
        let config = parse(&format!("[admin]\nlisten = \"{listen}\"\n"));
        assert_eq!(config.admin.map(|a| a.listen), Some(addr(listen)));
    }
}

#[test]
fn listeners_on_port_zero_never_clash() {
    parse("[proxy]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
}

#[test]
fn path_prefix_is_normalized() {
    for (given, stored) in [
        ("/", "/"),
        ("/a/", "/a"),
        ("/a//", "/a"),
        ("//", "/"),
        ("/a/b", "/a/b"),
    ] {
        let config = parse(&routed("a", &format!("path_prefix = \"{given}\"")));
        assert_eq!(config.apps[0].path_prefix.as_deref(), Some(stored), "{given}");
    }
}

#[test]
fn host_patterns_match() {
    let exact = HostPattern::Exact("a.example.com".into());
    let suffix = HostPattern::Suffix(".example.com".into());
    assert!(exact.matches("a.example.com"));
    assert!(!exact.matches("b.example.com"));
    assert!(suffix.matches("a.example.com"));
    assert!(suffix.matches("a.b.example.com"));
    assert!(!suffix.matches("example.com"));
    assert!(!suffix.matches(".example.com"));
    assert!(!suffix.matches("aexample.com"));
    assert_eq!(exact.to_string(), "a.example.com");
    assert_eq!(suffix.to_string(), "*.example.com");
}

// ---- whole-file errors ----

#[test]
fn syntax_error_names_line_and_column() {
    match "[proxy]\nlisten = \n".parse::<Config>() {
        Err(ConfigError::Syntax(message)) => assert!(message.contains("line 2"), "{message}"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn every_error_is_reported_at_once() {
    let text = r#"
[proxy]
listen = "8080"
max_headers = "100"

[defaults]
inactve_timeout = "15m"

[[app]]
name = "Hello"
hosts = ["a.localhost", "b.localhost:8080"]
max_connections = 0
[app.static]
addresses = []

[[app]]
name = "b"
path_prefix = "b"
min_instances = 3
max_instances = 2
"#;
    assert_eq!(
        errors(text),
        [
            r#"proxy.listen: expected an address like "0.0.0.0:8080""#,
            "proxy.max_headers: expected an integer, found a string",
            "defaults.inactve_timeout: unknown key",
            "app[0].name: must be 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
            "app[0].hosts[1]: must not include a port",
            "app[0].static.addresses: must not be empty",
            "app[0].max_connections: must be at least 1",
            "app[1].path_prefix: must start with '/'",
            "app[1]: needs a backend: [app.local] or [app.kubernetes] or [app.static]",
            "app[1].max_instances: must be >= min_instances (3)",
        ]
    );
}

#[test]
fn invalid_error_displays_one_error_per_line() {
    let error = "[proxy]\nlisten = 1\nworkers = 0\n"
        .parse::<Config>()
        .expect_err("invalid");
    assert_eq!(
        error.to_string(),
        "proxy.listen: expected an address like \"0.0.0.0:8080\", found an integer\nproxy.workers: must be at least 1"
    );
}

#[test]
fn load_reads_the_file_and_names_a_missing_one() {
    let dir = std::env::temp_dir().join(format!("tideway-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tideway.toml");
    std::fs::write(&path, "[metrics]\n").expect("write");
    let config = load(&path).expect("valid file");
    assert_eq!(config.metrics, Some(MetricsSettings::default()));

    let missing = dir.join("missing.toml");
    match load(&missing) {
        Err(error @ ConfigError::Read { .. }) => {
            assert!(error.to_string().contains("missing.toml"), "{error}");
            assert!(std::error::Error::source(&error).is_some());
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

// ---- unknown keys and wrong shapes ----

#[test]
fn unknown_keys_are_reported_everywhere() {
    let text = format!(
        "extra = 1\n[proxy]\nlisten_on = 1\n[metrics]\nport = 1\n[admin]\ntoken = \"x\"\n[defaults]\ninactve_timeout = \"15m\"\n[server]\n{}{}",
        app("colour = \"blue\""),
        "timeout = \"1s\"\n"
    );
    assert_eq!(
        errors(&text),
        [
            "proxy.listen_on: unknown key",
            "metrics.port: unknown key",
            "admin.token: unknown key",
            "defaults.inactve_timeout: unknown key",
            "app[0].static.timeout: unknown key",
            "app[0].colour: unknown key",
            "extra: unknown key",
            "server: unknown key",
        ]
    );
}

#[test]
fn odd_unknown_keys_are_quoted() {
    assert_only_error("[proxy]\n\"a b\" = 1\n", r#"proxy."a b": unknown key"#);
}

#[test]
fn app_only_keys_are_unknown_in_defaults() {
    assert_only_error("[defaults]\nname = \"x\"\n", "defaults.name: unknown key");
}

#[test]
fn sections_must_be_tables() {
    assert_only_error("proxy = 5\n", "proxy: expected a table, found an integer");
    assert_only_error("metrics = \"on\"\n", "metrics: expected a table, found a string");
    assert_only_error(
        "[app]\nname = \"a\"\n",
        "app: expected an array of tables ([[app]]), found a table",
    );
    assert_only_error("app = [1]\n", "app[0]: expected a table, found an integer");
    assert_only_error(
        "[[app]]\nname = \"a\"\nhosts = [\"a.localhost\"]\nstatic = 1\n",
        "app[0].static: expected a table, found an integer",
    );
}

// ---- leaf values ----

#[test]
fn bad_listen_address() {
    for bad in ["8080", "localhost:8080", "::1:8080", "0.0.0.0", "0.0.0.0:99999"] {
        assert_only_error(
            &format!("[proxy]\nlisten = \"{bad}\"\n"),
            r#"proxy.listen: expected an address like "0.0.0.0:8080""#,
        );
    }
    assert_only_error(
        "[metrics]\nlisten = \"x\"\n",
        r#"metrics.listen: expected an address like "0.0.0.0:8080""#,
    );
    assert_only_error(
        "[admin]\nlisten = \"x\"\n",
        r#"admin.listen: expected an address like "0.0.0.0:8080""#,
    );
}

#[test]
fn bad_duration() {
    assert_only_error(
        "[proxy]\nheader_read_timeout = \"10\"\n",
        r#"proxy.header_read_timeout: expected a duration like "30s" or "15m""#,
    );
    assert_only_error(
        "[proxy]\nkeepalive_timeout = 75\n",
        r#"proxy.keepalive_timeout: expected a duration like "30s" or "15m", found an integer"#,
    );
    assert_only_error(
        &app("drain_timeout = \"off\""),
        r#"app[0].drain_timeout: expected a duration like "30s" or "15m""#,
    );
    assert_only_error(
        &app("inactive_timeout = \"soon\""),
        r#"app[0].inactive_timeout: expected a duration like "30s" or "15m", or "off""#,
    );
}

#[test]
fn zero_proxy_durations_are_rejected() {
    for key in [
        "header_read_timeout",
        "keepalive_timeout",
        "send_timeout",
        "upstream_connect_timeout",
        "upstream_keepalive_timeout",
        "body_read_timeout",
        "response_timeout",
    ] {
        assert_only_error(
            &format!("[proxy]\n{key} = \"0s\"\n"),
            &format!("proxy.{key}: must be longer than 0s"),
        );
    }
    for key in ["body_read_timeout", "response_timeout"] {
        assert_only_error(
            &app(&format!("{key} = \"0s\"")),
            &format!("app[0].{key}: must be longer than 0s"),
        );
    }
}

#[test]
fn wrong_types_name_the_expected_type() {
    assert_only_error(
        &app("max_connections = \"10\""),
        "app[0].max_connections: expected an integer, found a string",
    );
    assert_only_error(
        &app("max_queued = 1.5"),
        "app[0].max_queued: expected an integer, found a float",
    );
    assert_only_error(
        "[[app]]\nname = 5\nhosts = [\"a.localhost\"]\n[app.static]\naddresses = [\"127.0.0.1:1\"]\n",
        "app[0].name: expected a string, found an integer",
    );
    assert_only_error(
        &app("balance = 1"),
        r#"app[0].balance: expected "least-connections" or "pack", found an integer"#,
    );
    assert_only_error(
        "[admin]\ntoken_file = true\n",
        "admin.token_file: expected a string, found a boolean",
    );
}

#[test]
fn integers_out_of_range_name_the_range() {
    assert_only_error(
        &app("min_instances = -1"),
        "app[0].min_instances: must be between 0 and 4294967295",
    );
    assert_only_error(
        &app("max_queued = 4294967296"),
        "app[0].max_queued: must be between 0 and 4294967295",
    );
    assert_only_error(
        &app("spawn_threshold = 0"),
        "app[0].spawn_threshold: must be between 1 and 100",
    );
    assert_only_error(
        &app("spawn_threshold = 101"),
        "app[0].spawn_threshold: must be between 1 and 100",
    );
    assert_only_error(
        "[proxy]\nmax_header_bytes = 1023\n",
        "proxy.max_header_bytes: must be between 1024 and 1048576",
    );
    assert_only_error(
        "[proxy]\nmax_header_bytes = 1048577\n",
        "proxy.max_header_bytes: must be between 1024 and 1048576",
    );
    assert_only_error(
        "[proxy]\nmax_headers = 0\n",
        "proxy.max_headers: must be between 1 and 1000",
    );
    assert_only_error(
        "[proxy]\nmax_headers = 1001\n",
        "proxy.max_headers: must be between 1 and 1000",
    );
    assert_only_error(
        "[proxy]\nupstream_keepalive = -1\n",
        "proxy.upstream_keepalive: must be between 0 and 4294967295",
    );
    assert_only_error("[proxy]\nworkers = 0\n", "proxy.workers: must be at least 1");
}

#[test]
fn bad_affinity() {
    assert_only_error(
        &app("affinity = \"sticky\""),
        r#"app[0].affinity: unknown affinity "sticky", expected "none" or "cookie""#,
    );
    assert_only_error(
        &app("affinity = true"),
        r#"app[0].affinity: expected "none" or "cookie", found a boolean"#,
    );
}

#[test]
fn bad_balance() {
    assert_only_error(
        &app("balance = \"random\""),
        r#"app[0].balance: unknown balance "random", expected "least-connections" or "pack""#,
    );
}

// ---- admin ----

#[test]
fn admin_off_loopback_needs_a_token() {
    for listen in ["0.0.0.0:9091", "10.0.0.1:9091", "[::]:9091"] {
        assert_only_error(
            &format!("[admin]\nlisten = \"{listen}\"\n"),
            "admin.token_file: required (or token_env) when admin.listen is not a loopback address",
        );
    }
    assert_only_error(
        "[admin]\ntoken_file = \"\"\n",
        "admin.token_file: must not be empty",
    );
}

#[test]
fn listeners_must_not_share_a_port() {
    assert_only_error(
        "[metrics]\nlisten = \"127.0.0.1:8080\"\n",
        "metrics.listen: conflicts with proxy.listen (0.0.0.0:8080)",
    );
    assert_only_error(
        "[proxy]\nlisten = \"127.0.0.1:9000\"\n[metrics]\nlisten = \"0.0.0.0:9091\"\n[admin]\n",
        "admin.listen: conflicts with metrics.listen (0.0.0.0:9091)",
    );
    parse("[proxy]\nlisten = \"127.0.0.1:9000\"\n[metrics]\nlisten = \"127.0.0.2:9000\"\n");
}

// ---- policy ----

#[test]
fn app_policy_problems_name_the_app_key() {
    assert_only_error(
        &app("min_instances = 3\nmax_instances = 2"),
        "app[0].max_instances: must be >= min_instances (3)",
    );
    assert_only_error(
        &app("max_connection_age = \"0s\""),
        "app[0].max_connection_age: must be longer than 0s (use \"off\" to turn it off)",
    );
    assert_only_error(
        &app("startup_timeout = \"0s\""),
        "app[0].startup_timeout: must be longer than 0s",
    );
}

#[test]
fn defaults_problems_are_reported_once() {
    let text = format!(
        "[defaults]\nmin_instances = 3\nmax_instances = 2\n{}{}",
        app(""),
        routed("b", "path_prefix = \"/b\"")
    );
    assert_only_error(&text, "defaults.max_instances: must be >= min_instances (3)");
}

#[test]
fn an_app_repeating_a_bad_default_is_reported_too() {
    let text = format!(
        "[defaults]\nqueue_timeout = \"0s\"\n{}",
        app("queue_timeout = \"0s\"")
    );
    assert_eq!(
        errors(&text),
        [
            "defaults.queue_timeout: must be longer than 0s",
            "app[0].queue_timeout: must be longer than 0s",
        ]
    );
}

#[test]
fn an_app_changing_the_problem_is_reported() {
    let text = format!(
        "[defaults]\nmin_instances = 3\nmax_instances = 2\n{}",
        app("min_instances = 4")
    );
    assert_eq!(
        errors(&text),
        [
            "defaults.max_instances: must be >= min_instances (3)",
            "app[0].max_instances: must be >= min_instances (4)",
        ]
    );
}

#[test]
fn an_app_fixing_a_bad_default_is_fine() {
    let text = format!("[defaults]\nmax_connections = 0\n{}", app("max_connections = 5"));
    assert_only_error(&text, "defaults.max_connections: must be at least 1");
}

#[test]
fn a_session_needs_room_for_one_connection() {
    assert_only_error(
        &app("max_session_connections = 0"),
        "app[0].max_session_connections: must be at least 1",
    );
}

// ---- name ----

#[test]
fn name_is_required() {
    assert_only_error(
        "[[app]]\nhosts = [\"a.localhost\"]\n[app.static]\naddresses = [\"127.0.0.1:1\"]\n",
        "app[0].name: required",
    );
}

#[test]
fn bad_names() {
    let long = "a".repeat(64);
    for bad in ["", "Hello", "-a", "a-", "a_b", "a.b", long.as_str()] {
        assert_eq!(
            errors(&routed(bad, "path_prefix = \"/\"")),
            [
                "app[0].name: must be 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
            ],
            "{bad:?}"
        );
    }
    parse(&routed(&"a".repeat(63), "path_prefix = \"/\""));
    parse(&routed("0-a-9", "path_prefix = \"/\""));
}

#[test]
fn duplicate_names() {
    let text = format!(
        "{}{}",
        routed("x", "path_prefix = \"/a\""),
        routed("x", "path_prefix = \"/b\"")
    );
    assert_only_error(&text, r#"app[1].name: "x" is already used by app[0]"#);
}

// ---- hosts ----

#[test]
fn bad_hosts() {
    let cases = [
        ("a.localhost:8080", "must not include a port"),
        ("[::1]", "must not include a port"),
        ("", "must not be empty"),
        ("a..b", "not a valid host name: empty label"),
        (
            "a_b.com",
            "not a valid host name: '_' is not allowed (only a-z, 0-9, '-' and '.')",
        ),
        (
            "a/b",
            "not a valid host name: '/' is not allowed (only a-z, 0-9, '-' and '.')",
        ),
        (
            "-a.com",
            "not a valid host name: label \"-a\" must not start or end with '-'",
        ),
        (
            "a-.com",
            "not a valid host name: label \"a-\" must not start or end with '-'",
        ),
        (
            "1.2.3.999",
            "not a valid host name: the last label must not be all digits (nor is it an IPv4 address)",
        ),
        (
            "a.*.com",
            r#"a wildcard is only allowed as the whole first label, as in "*.example.com""#,
        ),
        (
            "*a.com",
            r#"a wildcard is only allowed as the whole first label, as in "*.example.com""#,
        ),
        (
            "*.*.com",
            r#"a wildcard is only allowed as the whole first label, as in "*.example.com""#,
        ),
        ("*.10.0.0.1", "a wildcard needs a DNS name, not an IP address"),
    ];
    for (host, message) in cases {
        assert_only_error(
            &routed("a", &format!("hosts = [\"ok.localhost\", \"{host}\"]")),
            &format!("app[0].hosts[1]: {message}"),
        );
    }
    let label = "a".repeat(64);
    assert_only_error(
        &routed("a", &format!("hosts = [\"{label}.com\"]")),
        &format!("app[0].hosts[0]: not a valid host name: label \"{label}\" is longer than 63 characters"),
    );
    let name = vec!["a".repeat(60); 5].join(".");
    assert_only_error(
        &routed("a", &format!("hosts = [\"{name}\"]")),
        "app[0].hosts[0]: not a valid host name: longer than 253 characters",
    );
    assert_only_error(
        &routed("a", "hosts = \"a.localhost\""),
        "app[0].hosts: expected an array, found a string",
    );
    assert_only_error(
        &routed("a", "hosts = [1]"),
        "app[0].hosts[0]: expected a host name, found an integer",
    );
}

#[test]
fn duplicate_hosts_in_one_app() {
    assert_only_error(
        &routed(
            "a",
            "hosts = [\"a.localhost\", \"b.localhost\", \"A.localhost.\"]",
        ),
        "app[0].hosts[2]: duplicate of hosts[0]",
    );
}

#[test]
fn an_app_needs_hosts_or_a_path_prefix() {
    assert_only_error(&routed("a", ""), "app[0]: needs hosts or path_prefix (or both)");
    assert_only_error(
        &routed("a", "hosts = []"),
        "app[0]: needs hosts or path_prefix (or both)",
    );
}

// ---- path_prefix ----

#[test]
fn bad_path_prefixes() {
    for (prefix, message) in [
        ("hello", "must start with '/'"),
        ("", "must start with '/'"),
        ("/a?b", "must not contain '?', '#' or whitespace"),
        ("/a#b", "must not contain '?', '#' or whitespace"),
        ("/a b", "must not contain '?', '#' or whitespace"),
        ("/a\\tb", "must not contain '?', '#' or whitespace"),
    ] {
        assert_only_error(
            &routed("a", &format!("path_prefix = \"{prefix}\"")),
            &format!("app[0].path_prefix: {message}"),
        );
    }
}

// ---- routes ----

#[test]
fn route_clash_by_host_names_the_host() {
    let text = format!(
        "{}{}",
        routed("x", "hosts = [\"hello.localhost\"]\npath_prefix = \"/hello\""),
        routed(
            "y",
            "hosts = [\"other.localhost\", \"Hello.localhost\"]\npath_prefix = \"/hello/\""
        )
    );
    assert_only_error(
        &text,
        r#"app[1].hosts[1]: route "hello.localhost/hello" is already used by app "x""#,
    );
}

#[test]
fn route_clash_without_hosts_names_the_path_prefix() {
    let text = format!(
        "{}{}{}",
        routed("x", "path_prefix = \"/api\""),
        routed("y", "hosts = [\"y.localhost\"]\npath_prefix = \"/api\""),
        routed("z", "path_prefix = \"/api\"")
    );
    assert_only_error(
        &text,
        r#"app[2].path_prefix: route "/api" is already used by app "x""#,
    );
}

#[test]
fn a_route_taken_by_another_app_is_named_by_its_field() {
    let file = parse(&format!(
        "{}{}",
        routed("x", "hosts = [\"x.localhost\"]\npath_prefix = \"/x\""),
        routed("y", "path_prefix = \"/y\"")
    ));
    let [x, y] = [&file.apps[0], &file.apps[1]];
    let newcomer = |route: &str| parse(&routed("n", route)).apps.remove(0);
    let taken = |route: &str| newcomer(route).route_taken("spec", [x, y]).map(|e| e.to_string());
    assert_eq!(
        taken("hosts = [\"n.localhost\", \"X.localhost\"]\npath_prefix = \"/x/\""),
        Some(r#"spec.hosts[1]: route "x.localhost/x" is already used by app "x""#.to_owned())
    );
    assert_eq!(
        taken("path_prefix = \"/y\""),
        Some(r#"spec.path_prefix: route "/y" is already used by app "y""#.to_owned())
    );
    assert_eq!(taken("hosts = [\"x.localhost\"]"), None, "another prefix");
    assert_eq!(
        taken("hosts = [\"n.localhost\"]\npath_prefix = \"/y\""),
        None,
        "a host of its own"
    );
}

#[test]
fn no_path_prefix_counts_as_slash() {
    let text = format!(
        "{}{}",
        routed("x", "hosts = [\"*.example.com\"]"),
        routed("y", "hosts = [\"*.example.com\"]\npath_prefix = \"/\"")
    );
    assert_only_error(
        &text,
        r#"app[1].hosts[0]: route "*.example.com/" is already used by app "x""#,
    );
}

#[test]
fn distinct_routes_do_not_clash() {
    parse(&format!(
        "{}{}{}{}",
        routed("a", "hosts = [\"example.com\"]"),
        routed("b", "hosts = [\"*.example.com\"]"),
        routed("c", "hosts = [\"example.com\"]\npath_prefix = \"/c\""),
        routed("d", "path_prefix = \"/\""),
    ));
}

// ---- backends ----

#[test]
fn an_app_needs_a_backend() {
    assert_only_error(
        "[[app]]\nname = \"a\"\nhosts = [\"a.localhost\"]\n",
        "app[0]: needs a backend: [app.local] or [app.kubernetes] or [app.static]",
    );
}

#[test]
fn bad_static_addresses() {
    let with = |addresses: &str| {
        format!("[[app]]\nname = \"a\"\nhosts = [\"a.localhost\"]\n[app.static]\n{addresses}\n")
    };
    assert_only_error(&with(""), "app[0].static.addresses: required");
    assert_only_error(
        &with("addresses = []"),
        "app[0].static.addresses: must not be empty",
    );
    assert_only_error(
        &with("addresses = \"127.0.0.1:1\""),
        "app[0].static.addresses: expected an array, found a string",
    );
    assert_only_error(
        &with("addresses = [\"127.0.0.1:1\", \"localhost:1\"]"),
        r#"app[0].static.addresses[1]: expected an address like "127.0.0.1:9001""#,
    );
    assert_only_error(
        &with("addresses = [\"127.0.0.1:0\"]"),
        "app[0].static.addresses[0]: port must not be 0",
    );
    assert_only_error(
        &with("addresses = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:1\"]"),
        "app[0].static.addresses[2]: duplicate of addresses[0]",
    );
}

#[test]
fn an_empty_app_list_is_allowed() {
    assert!(parse("app = []\n").apps.is_empty());
}

#[test]
fn durations_are_bounded() {
    assert_only_error(
        &app("drain_timeout = \"400d\""),
        "app[0].drain_timeout: must be at most 365d",
    );
    assert_only_error(
        &app("max_connection_age = \"1000000y\""),
        "app[0].max_connection_age: must be at most 365d",
    );
}

#[test]
fn policy_updates_follow_the_config_rules() {
    let base = Policy {
        min_instances: 1,
        ..Policy::default()
    };
    let table: toml::Table = "max_instances = 8\ninactive_timeout = \"15m\""
        .parse()
        .expect("toml");
    let updated = crate::policy_update(&base, &table).expect("valid");
    assert_eq!(updated.max_instances, 8);
    assert_eq!(updated.inactive_timeout, Some(secs(900)));
    assert_eq!(updated.min_instances, 1, "keys not given keep their value");

    let table: toml::Table = "min_instances = 9\nmax_instances = 3\nmax_conections = 4"
        .parse()
        .expect("toml");
    let errors: Vec<String> = crate::policy_update(&base, &table)
        .expect_err("invalid")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "max_conections: unknown key",
            "max_instances: must be >= min_instances (9)"
        ]
    );
    let table: toml::Table = "hosts = [\"x\"]".parse().expect("toml");
    assert!(
        crate::policy_update(&base, &table).is_err(),
        "only policy keys can change at run time"
    );
}

#[test]
fn the_admin_token_may_come_from_the_environment() {
    let config = parse("[admin]\nlisten = \"0.0.0.0:9091\"\ntoken_env = \"TIDEWAY_ADMIN_TOKEN\"\n");
    let admin = config.admin.expect("admin");
    assert_eq!(admin.token_env.as_deref(), Some("TIDEWAY_ADMIN_TOKEN"));
    assert_only_error(
        "[admin]\nlisten = \"0.0.0.0:9091\"\n",
        "admin.token_file: required (or token_env) when admin.listen is not a loopback address",
    );
    assert_only_error(
        "[admin]\ntoken_file = \"/x\"\ntoken_env = \"X\"\n",
        "admin.token_env: give either token_file or token_env, not both",
    );
    assert_only_error(
        "[admin]\ntoken_env = \"A=B\"\n",
        "admin.token_env: must be an environment variable name",
    );
    assert_only_error(
        "[admin]\ntoken_env = \"\"\n",
        "admin.token_env: must be an environment variable name",
    );
    assert_only_error(
        "[admin]\ntoken_file = \"\"\n",
        "admin.token_file: must not be empty",
    );
}

#[test]
fn access_log_is_a_boolean() {
    assert_only_error(
        "[proxy]\naccess_log = \"off\"\n",
        "proxy.access_log: expected true or false, found a string",
    );
}

#[test]
fn renamed_keys_still_work_for_a_release_and_say_their_new_name() {
    let config = parse(&format!(
        "[proxy]\nupstream_idle_timeout = \"90s\"\n[defaults]\nqueue_size = 3\n{}",
        app("queue_size = 5")
    ));
    assert_eq!(config.proxy.upstream_keepalive_timeout, secs(90));
    assert_eq!(config.apps[0].policy.max_queued, 5);
    let deprecations: Vec<String> = config.deprecations.iter().map(ToString::to_string).collect();
    assert_eq!(
        deprecations,
        [
            "proxy.upstream_idle_timeout: renamed to `upstream_keepalive_timeout`; the old name works until the next release",
            "defaults.queue_size: renamed to `max_queued`; the old name works until the next release",
            "app[0].queue_size: renamed to `max_queued`; the old name works until the next release",
        ]
    );
    assert!(parse(&app("max_queued = 5")).deprecations.is_empty());
    assert_only_error(
        &app("max_queued = 5\nqueue_size = 5"),
        "app[0].queue_size: the old name of `max_queued`, which is set too",
    );
}

#[test]
fn certificates_come_in_pairs_for_a_tls_listener_and_one_per_host() {
    let app = |name: &str, hosts: &str, tls: &str| {
        format!(
            "[[app]]\nname = \"{name}\"\nhosts = [{hosts}]\n{tls}\n[app.static]\naddresses = [\"127.0.0.1:9\"]\n"
        )
    };
    let tls = "tls_certificate = \"a.crt\"\ntls_key = \"a.key\"";
    assert_only_error(
        "[proxy]\ntls_listen = \"0.0.0.0:8443\"\ntls_certificate = \"c\"\n",
        "proxy.tls_key: required with tls_certificate",
    );
    assert_only_error(
        "[proxy]\ntls_listen = \"0.0.0.0:8443\"\ntls_key = \"k\"\n",
        "proxy.tls_certificate: required with tls_key",
    );
    assert_only_error(
        "[proxy]\ntls_listen = \"0.0.0.0:8443\"\n",
        "proxy.tls_certificate: required with tls_listen, unless apps name certificates of their own",
    );
    assert_only_error(
        "[proxy]\ntls_listen = \"0.0.0.0:8080\"\ntls_certificate = \"c\"\ntls_key = \"k\"\n",
        "proxy.tls_listen: conflicts with proxy.listen (0.0.0.0:8080)",
    );
    assert_only_error(
        "[proxy]\ntls_certificate = \"c\"\ntls_key = \"k\"\n",
        "proxy.tls_listen: required with tls_certificate",
    );
    assert_only_error(
        &app("a", "\"a.test\"", tls),
        "app[0].tls_certificate: needs proxy.tls_listen",
    );
    let listener = "[proxy]\ntls_listen = \"0.0.0.0:8443\"\n";
    assert_only_error(
        &format!(
            "{listener}[[app]]\nname = \"a\"\npath_prefix = \"/a\"\n{tls}\n[app.static]\naddresses = [\"127.0.0.1:9\"]\n"
        ),
        "app[0].tls_certificate: needs hosts: a certificate is picked by the host name a client asks for",
    );
    let other = "tls_certificate = \"b.crt\"\ntls_key = \"b.key\"";
    assert_only_error(
        &format!(
            "{listener}{}{}",
            app("a", "\"a.test\"", tls),
            app("b", "\"x.test\", \"a.test\"", other)
                .replace("[app.static]", "path_prefix = \"/b\"\n[app.static]")
        ),
        "app[1].hosts[1]: \"a.test\" has another certificate already, from app \"a\"",
    );
    // The same files for a shared host, and an app without a certificate on it, are fine.
    parse(
        &format!(
            "{listener}{}{}",
            app("a", "\"a.test\"", tls),
            app("b", "\"a.test\"", tls)
        )
        .replace(
            "name = \"b\"\nhosts = [\"a.test\"]",
            "name = \"b\"\nhosts = [\"a.test\"]\npath_prefix = \"/b\"",
        ),
    );
    parse(&format!(
        "{listener}{}{}",
        app("a", "\"a.test\"", tls),
        app("b", "\"b.test\"", "")
    ));
    assert_only_error(
        "[defaults]\nhsts_max_age = \"0s\"\n",
        "defaults.hsts_max_age: must be longer than 0s (use \"off\" to turn it off)",
    );
    assert_only_error(
        "[defaults]\nheadroom = \"always\"\n",
        "defaults.headroom: unknown headroom \"always\", expected \"off\" or \"auto\"",
    );
}
