//! The admin API, end to end: its JSON, the bearer token off loopback, and policy changes that take effect
//! on the next scaling decision and are held to the config file's rules.

use tideway_e2e::{Tideway, fake_app, request};
use tideway_testkit::ws_connect;

const TOKEN: &str = "correct-horse-battery-staple";

/// One local app that may not scale beyond one replica, and an admin listener on every interface.
fn config(max_instances: u32) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"0.0.0.0:0\"\ntoken_env = \"TIDEWAY_TEST_ADMIN_TOKEN\"\n\n\
         [[app]]\nname = \"app\"\nhosts = [\"app.test\"]\nmin_instances = 1\nmax_instances = {max_instances}\n\
         max_connections = 4\nspawn_threshold = 75\n[app.local]\ncommand = [\"{}\"]\nreadiness = {{ path = \"/\" }}\n",
        fake_app().display()
    )
}

fn bearer() -> (&'static str, String) {
    ("authorization", format!("Bearer {TOKEN}"))
}

async fn get_json(tideway: &Tideway, path: &str) -> serde_json::Value {
    let (name, value) = bearer();
    let (status, _, body) = request(tideway.listener("admin"), "GET", path, &[(name, &value)], "").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("JSON")
}

#[tokio::test]
async fn off_loopback_the_api_wants_the_token_and_the_page_does_not() {
    let tideway = Tideway::start_with_env(&config(1), &[("TIDEWAY_TEST_ADMIN_TOKEN", TOKEN)]);
    let admin = tideway.listener("admin");
    let (status, headers, _) = request(admin, "GET", "/api/apps", &[], "").await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"tideway\"");
    let (status, _, _) = request(
        admin,
        "GET",
        "/api/apps",
        &[("authorization", "Bearer guess")],
        "",
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = request(
        admin,
        "PUT",
        "/api/apps/app/policy",
        &[],
        "{\"max_instances\": 9}",
    )
    .await;
    assert_eq!(status, 401, "changes need the token too");
    let (status, headers, page) = request(admin, "GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    assert!(
        String::from_utf8_lossy(&page).contains("api/apps"),
        "the page reads the API"
    );
}

#[tokio::test]
async fn the_api_describes_apps_replicas_policy_and_decisions() {
    let tideway = Tideway::start_with_env(&config(1), &[("TIDEWAY_TEST_ADMIN_TOKEN", TOKEN)]);
    tideway.wait_for("replica ready", 1, |_| true).await;
    let apps = get_json(&tideway, "/api/apps").await;
    let app = &apps["apps"][0];
    let detail = get_json(&tideway, "/api/apps/app").await;
    assert_eq!(
        (&detail["name"], &detail["policy"]),
        (&app["name"], &app["policy"])
    );
    assert_eq!(app["name"], "app");
    assert_eq!(app["backend"], "local");
    assert_eq!(app["routes"]["hosts"], serde_json::json!(["app.test"]));
    assert_eq!(app["routes"]["path_prefix"], serde_json::Value::Null);
    for key in ["connections", "queued", "sessions", "desired_replicas"] {
        assert!(app[key].is_u64(), "{key}: {app}");
    }
    let replica = &app["replicas"][0];
    assert_eq!(replica["state"], "ready");
    assert!(replica["name"].as_str().is_some_and(|n| n.starts_with("app-")));
    assert!(
        replica["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    assert!(replica["connections"].is_u64() && replica["age_seconds"].is_f64());
    let policy = &app["policy"];
    assert_eq!(policy["max_connections"], 4);
    assert_eq!(policy["spawn_threshold"], 75);
    assert_eq!(policy["inactive_timeout"], "off");
    assert_eq!(policy["queue_timeout"], "30s");
    assert_eq!(policy["balance"], "least-connections");
    assert_eq!(policy["body_read_timeout"], "1m");
    assert_eq!(policy["response_timeout"], "5m");
    assert_eq!(app["recent"]["minutes"], 5);
    assert_eq!(app["recent"]["rejected"]["queue_full"], 0);
    assert_eq!(app["recent"]["closed"]["response_timeout"], 0);
    let decision = &app["decisions"][0];
    assert_eq!(decision["direction"], "up");
    assert_eq!(decision["reason"], "min_instances");
    assert_eq!(
        (decision["from"].as_u64(), decision["to"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(decision["at"].as_str().is_some_and(|at| at.ends_with('Z')));
    assert!(
        decision["window"].is_array() && decision["revived"].is_array(),
        "{decision}"
    );
    let (name, value) = bearer();
    let (status, _, body) = request(
        tideway.listener("admin"),
        "GET",
        "/api/apps/nope",
        &[(name, &value)],
        "",
    )
    .await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn recent_rejections_are_counted_by_reason() {
    let tideway = Tideway::start_with_env(&config(1), &[("TIDEWAY_TEST_ADMIN_TOKEN", TOKEN)]);
    tideway.wait_for("replica ready", 1, |_| true).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(
            ws_connect(tideway.addr, "app.test", "/ws")
                .await
                .expect("session"),
        );
    }
    let (name, value) = bearer();
    let auth = [(name, value.as_str()), ("content-type", "application/json")];
    let (status, _, body) = request(
        tideway.listener("admin"),
        "PUT",
        "/api/apps/app/policy",
        &auth,
        "{\"max_queued\": 0}",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = request(tideway.addr, "GET", "/", &[("host", "app.test")], "").await;
    assert_eq!(status, 503, "the only replica is full and nobody may wait");
    let recent = &get_json(&tideway, "/api/apps/app").await["recent"];
    assert_eq!(recent["rejected"]["queue_full"], 1, "{recent}");
    assert_eq!(recent["rejected"]["queue_timeout"], 0, "{recent}");
    drop(sessions);
}

#[tokio::test]
async fn a_policy_change_applies_at_the_next_decision_and_lasts_until_a_reload() {
    let tideway = Tideway::start_with_env(&config(1), &[("TIDEWAY_TEST_ADMIN_TOKEN", TOKEN)]);
    tideway.wait_for("replica ready", 1, |_| true).await;
    let admin = tideway.listener("admin");
    let (name, value) = bearer();
    let auth = [(name, value.as_str()), ("content-type", "application/json")];

    // Demand for two replicas, but max_instances = 1: nothing starts.
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(
            ws_connect(tideway.addr, "app.test", "/ws")
                .await
                .expect("session"),
        );
    }
    assert_eq!(
        get_json(&tideway, "/api/apps/app").await["replicas"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let (status, _, body) = request(
        admin,
        "PUT",
        "/api/apps/app/policy",
        &auth,
        r#"{"max_instances": 0}"#,
    )
    .await;
    assert_eq!(status, 422);
    let errors: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(errors["errors"][0]["field"], "max_instances");
    assert_eq!(errors["errors"][0]["message"], "must be >= min_instances (1)");
    let (status, _, body) = request(
        admin,
        "PUT",
        "/api/apps/app/policy",
        &auth,
        r#"{"max_instanses": 3}"#,
    )
    .await;
    assert_eq!(status, 422);
    assert!(String::from_utf8_lossy(&body).contains(r#""field":"max_instanses""#));
    let (status, _, _) = request(admin, "PUT", "/api/apps/app/policy", &auth, "max_instances = 3").await;
    assert_eq!(status, 400, "not JSON");

    let (status, _, body) = request(
        admin,
        "PUT",
        "/api/apps/app/policy",
        &auth,
        r#"{"max_instances": 3}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let changed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(changed["persisted"], false);
    assert_eq!(changed["policy"]["max_instances"], 3);
    let up = tideway
        .wait_for("scaling decision", 1, |d| d["reason"] == "threshold")
        .await;
    assert_eq!(
        up[0]["fields"]["to"], 2,
        "the next decision uses the new max_instances"
    );

    // A reload puts the file's policy back.
    tideway.rewrite_config(&format!("{}\n# touched\n", config(1)));
    tideway.wait_for("configuration reloaded", 1, |_| true).await;
    assert_eq!(
        get_json(&tideway, "/api/apps/app").await["policy"]["max_instances"],
        1
    );
    drop(sessions);
}

#[tokio::test]
async fn without_a_token_only_loopback_names_are_served_and_changes_must_be_json() {
    let tideway = Tideway::start(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[app]]\nname = \"app\"\n\
         hosts = [\"app.test\"]\n[app.static]\naddresses = [\"127.0.0.1:9\"]\n",
    );
    let admin = tideway.listener("admin");
    let change = r#"{"max_instances": 3}"#;
    for host in [
        "localhost",
        "app.localhost:9091",
        "127.0.0.1",
        "127.0.0.2:1",
        "[::1]:9091",
    ] {
        let (status, _, _) = request(admin, "GET", "/api/apps", &[("host", host)], "").await;
        assert_eq!(status, 200, "Host: {host}");
    }
    // A page whose own name was made to resolve to 127.0.0.1 sends that name.
    for host in [
        "attacker.example",
        "attacker.example:9091",
        "localhost.attacker.example",
        "10.0.0.1",
    ] {
        let (status, _, _) = request(admin, "GET", "/api/apps", &[("host", host)], "").await;
        assert_eq!(status, 403, "Host: {host}");
        let json = [("host", host), ("content-type", "application/json")];
        let (status, _, _) = request(admin, "PUT", "/api/apps/app/policy", &json, change).await;
        assert_eq!(status, 403, "Host: {host}");
    }
    // What a cross-origin form or fetch may send without a preflight is refused.
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let headers = [("content-type", content_type)];
        let (status, _, _) = request(admin, "PUT", "/api/apps/app/policy", &headers, change).await;
        assert_eq!(status, 415, "{content_type}");
    }
    let (status, _, _) = request(admin, "PUT", "/api/apps/app/policy", &[], change).await;
    assert_eq!(status, 415, "no content type");
    let json = [("content-type", "application/json; charset=utf-8")];
    let (status, _, body) = request(admin, "PUT", "/api/apps/app/policy", &json, change).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}
