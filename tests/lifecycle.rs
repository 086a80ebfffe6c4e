//! Replica life cycles with the local orchestrator, end to end: replicas that die, apps that cannot start,
//! tideway killed outright, and configuration reloads under open sessions.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tideway_e2e::{PATIENCE, Tideway, children_of, fake_app, process_gone, request, send_signal};
use tideway_testkit::tokio_tungstenite::WebSocketStream;
use tideway_testkit::tungstenite::Message;
use tideway_testkit::{http1_get, ws_connect};
use tokio::net::TcpStream;

/// A local app block running the fake replica on host `{name}.test`.
fn local_app(name: &str, policy: &str) -> String {
    local_app_running(
        name,
        policy,
        &format!("\"{}\"", fake_app().display()),
        "path = \"/\"",
    )
}

fn local_app_running(name: &str, policy: &str, command: &str, readiness: &str) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\nhosts = [\"{name}.test\"]\n{policy}\n[app.local]\ncommand = [{command}]\n\
         readiness = {{ {readiness} }}\nstop_timeout = \"2s\"\n\n"
    )
}

fn with_proxy(apps: &str) -> String {
    format!("[proxy]\nlisten = \"127.0.0.1:0\"\n\n{apps}")
}

async fn session(addr: SocketAddr, host: &str) -> (WebSocketStream<TcpStream>, String) {
    let mut ws = tokio::time::timeout(PATIENCE, ws_connect(addr, host, "/ws"))
        .await
        .expect("a session in time")
        .expect("a session");
    let replica = whoami(&mut ws).await.expect("the replica answers");
    (ws, replica)
}

/// Asks the replica holding the session for its name; `None` if the session is gone.
async fn whoami(ws: &mut WebSocketStream<TcpStream>) -> Option<String> {
    ws.send(Message::text("whoami")).await.ok()?;
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("an answer in time")
        {
            Some(Ok(Message::Text(name))) => return Some(name.to_string()),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Pid of the replica process itself (the supervisor's child) for the replica named `replica`.
fn replica_pid(tideway: &Tideway, replica: &str) -> u32 {
    let launched = tideway.events("replica launched");
    let supervisor = launched
        .iter()
        .find(|e| e["fields"]["replica"] == replica)
        .and_then(|e| e["fields"]["pid"].as_u64())
        .expect("the replica's launch was logged with its pid") as u32;
    *children_of(supervisor)
        .first()
        .expect("the supervisor runs the replica")
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    tideway_testkit::eventually(what, PATIENCE, check).await;
}

#[tokio::test]
async fn a_killed_replica_loses_its_sessions_and_is_replaced() {
    let tideway = Tideway::start(&with_proxy(&local_app(
        "app",
        "min_instances = 2\nmax_connections = 10",
    )));
    tideway.wait_for("replica ready", 2, |_| true).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(session(tideway.addr, "app.test").await);
    }
    let victim = sessions[0].1.clone();
    let pid = replica_pid(&tideway, &victim);
    send_signal(pid, "KILL");

    tideway
        .wait_for("replica lost", 1, |e| e["replica"] == victim.as_str())
        .await;
    for (ws, on) in &mut sessions {
        let answer = whoami(ws).await;
        if *on == victim {
            assert_eq!(answer, None, "a session on the killed replica ends");
        } else {
            assert_eq!(
                answer.as_deref(),
                Some(on.as_str()),
                "other sessions are untouched"
            );
        }
    }
    let (_, on) = session(tideway.addr, "app.test").await;
    assert_ne!(on, victim, "new sessions go elsewhere");
    let lost = tideway
        .wait_for("scaling decision", 2, |d| d["reason"] == "replica_lost")
        .await;
    // The loss is a decision of its own, and the replacement's `from` follows on from it.
    let (loss, replacement) = (&lost[0]["fields"], &lost[1]["fields"]);
    assert_eq!(loss["direction"], "down");
    assert_eq!(loss["lost"], victim.as_str());
    assert_eq!((loss["from"].as_u64(), loss["to"].as_u64()), (Some(2), Some(1)));
    assert_eq!(replacement["direction"], "up");
    assert_eq!(replacement["start"], 1);
    assert_eq!(
        (replacement["from"].as_u64(), replacement["to"].as_u64()),
        (Some(1), Some(2))
    );
    tideway.wait_for("replica ready", 3, |_| true).await;
}

#[tokio::test]
async fn a_replica_lost_while_spares_remain_is_a_decision_in_the_admin_api() {
    let policy = "min_instances = 1\nmax_connections = 1\nspawn_threshold = 100\nscale_down_delay = \"10m\"";
    let config = format!(
        "{}[admin]\nlisten = \"127.0.0.1:0\"\n",
        with_proxy(&local_app("app", policy))
    );
    let tideway = Tideway::start(&config);
    tideway.wait_for("replica ready", 1, |_| true).await;
    // Two sessions make two replicas; once they end, the second is a spare until scale_down_delay.
    let first = session(tideway.addr, "app.test").await;
    let second = session(tideway.addr, "app.test").await;
    tideway.wait_for("replica ready", 2, |_| true).await;
    let victim = second.1.clone();
    drop((first, second));
    let pid = replica_pid(&tideway, &victim);
    send_signal(pid, "KILL");
    let lost = tideway
        .wait_for("scaling decision", 1, |d| d["reason"] == "replica_lost")
        .await;
    assert_eq!(lost[0]["fields"]["lost"], victim.as_str());

    let admin = tideway.listener("admin");
    let (status, _, body) = request(admin, "GET", "/api/apps/app", &[], "").await;
    assert_eq!(status, 200);
    let app: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let last = app["decisions"]
        .as_array()
        .and_then(|d| d.last())
        .cloned()
        .expect("a decision");
    assert_eq!(last["reason"], "replica_lost");
    assert_eq!(last["direction"], "down");
    assert_eq!(last["lost"], victim.as_str());
    assert_eq!((last["from"].as_u64(), last["to"].as_u64()), (Some(2), Some(1)));
    let replacements = tideway.events("scaling decision");
    assert!(
        replacements
            .iter()
            .all(|d| d["fields"]["direction"] != "up" || d["fields"]["reason"] != "replica_lost"),
        "a spare remained: nothing replaces it"
    );
}

/// The config of app `app` whose replicas run the fake app with `VERSION` set, with the admin and metrics
/// listeners on.
fn versioned(version: u32) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [[app]]\nname = \"app\"\nhosts = [\"app.test\"]\nmin_instances = 1\nmax_instances = 3\nmax_connections = 1\n\
         spawn_threshold = 100\nqueue_timeout = \"30s\"\n[app.local]\ncommand = [\"{}\"]\n\
         env = {{ VERSION = \"{version}\" }}\nreadiness = {{ path = \"/\" }}\nstop_timeout = \"2s\"\n",
        fake_app().display()
    )
}

/// What the admin API says about `name`: its replicas' names and states, and its connections.
async fn replicas_of(admin: SocketAddr, name: &str) -> (Vec<(String, String)>, u64, serde_json::Value) {
    let (status, _, body) = request(admin, "GET", &format!("/api/apps/{name}"), &[], "").await;
    assert_eq!(status, 200);
    let app: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let replicas = app["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    (replicas, app["connections"].as_u64().unwrap_or_default(), app)
}

/// The value of the `tideway_app_connections` series of `app` in the metrics exposition.
async fn app_connections_metric(metrics: SocketAddr, app: &str) -> Option<f64> {
    let (_, _, body) = request(metrics, "GET", "/metrics", &[], "").await;
    let prefix = format!("tideway_app_connections{{app=\"{app}\"}} ");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test]
async fn a_replaced_backend_drains_in_sight_counted_and_uniquely_named() {
    let tideway = Tideway::start(&versioned(1));
    tideway.wait_for("replica ready", 1, |_| true).await;
    let first = session(tideway.addr, "app.test").await;
    let second = session(tideway.addr, "app.test").await;
    tideway.wait_for("replica ready", 2, |_| true).await;
    let old: Vec<String> = vec![first.1.clone(), second.1.clone()];

    // A new command: a new backend starts, the old replicas drain with their sessions.
    tideway.rewrite_config(&versioned(2));
    tideway.wait_for("configuration reloaded", 1, |_| true).await;
    tideway.wait_for("replica ready", 3, |_| true).await;
    let admin = tideway.listener("admin");
    let metrics = tideway.listener("metrics");
    let (replicas, connections, _) = replicas_of(admin, "app").await;
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    for name in &old {
        assert!(
            replicas.contains(&(name.clone(), "draining".to_owned())),
            "{name} drains in sight: {replicas:?}"
        );
    }
    let mut names: Vec<&String> = replicas.iter().map(|(name, _)| name).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        3,
        "every replica has a name of its own: {replicas:?}"
    );
    assert_eq!(connections, 2, "the old replicas' sessions are counted");
    assert_eq!(app_connections_metric(metrics, "app").await, Some(2.0));

    // Two old replicas and one new are max_instances = 3: a second new session waits for room.
    let third = session(tideway.addr, "app.test").await;
    assert!(!old.contains(&third.1));
    let waiting = tokio::spawn(session(tideway.addr, "app.test"));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while replicas_of(admin, "app").await.2["queued"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fourth session never queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_on = first.1.clone();
    drop(first);
    let fourth = tideway_testkit::within("the fourth session", PATIENCE, waiting)
        .await
        .expect("the task");
    assert!(!old.contains(&fourth.1), "a replica of the new backend took it");
    // The fourth replica was launched only once the drained one made room.
    let stopping = tideway
        .wait_for("drained: stopping replica", 1, |e| {
            e["replica"] == first_on.as_str()
        })
        .await;
    let launched = tideway.events("replica launched");
    assert_eq!(launched.len(), 4);
    assert!(
        launched[3]["timestamp"].as_str() > stopping[0]["timestamp"].as_str(),
        "launched {} before the drained replica stopped at {}",
        launched[3]["timestamp"],
        stopping[0]["timestamp"]
    );
    let (replicas, _, _) = replicas_of(admin, "app").await;
    assert!(replicas.len() <= 3, "{replicas:?}");

    // Removed from the configuration, the app drains in sight until its last session ends.
    tideway.rewrite_config(
        &versioned(2)
            .replace("hosts = [\"app.test\"]", "hosts = [\"other.test\"]")
            .replace("name = \"app\"", "name = \"other\""),
    );
    tideway.wait_for("configuration reloaded", 2, |_| true).await;
    let (replicas, connections, app) = replicas_of(admin, "app").await;
    assert_eq!(app["removed"], true);
    assert!(
        replicas.iter().all(|(_, state)| state == "draining"),
        "{replicas:?}"
    );
    assert_eq!(connections, 3);
    assert_eq!(app_connections_metric(metrics, "app").await, Some(3.0));
    drop((second, third, fourth));
}

#[tokio::test]
async fn an_app_may_keep_its_own_output_out_of_the_log() {
    let loud = local_app("loud", "min_instances = 1");
    let quiet =
        local_app("quiet", "min_instances = 1").replace("[app.local]\n", "[app.local]\nlog_output = false\n");
    let tideway = Tideway::start(&with_proxy(&format!("{loud}{quiet}")));
    tideway.wait_for("replica ready", 2, |_| true).await;
    let output_of =
        |app: &str| tideway.events_where(|e| e["target"] == "tideway::replica" && e["fields"]["app"] == app);
    eventually("the loud app's output is in the log", || {
        !output_of("loud").is_empty()
    })
    .await;
    assert!(
        output_of("loud")[0]["fields"]["message"]
            .as_str()
            .is_some_and(|line| line.starts_with("loud-1 listening on")),
        "{:?}",
        output_of("loud")
    );
    assert_eq!(output_of("quiet"), Vec::<serde_json::Value>::new());
}

#[tokio::test]
async fn apps_that_cannot_start_get_a_clear_error_and_503_without_disturbing_others() {
    let policy = "min_instances = 0\nstartup_timeout = \"1s\"\nqueue_timeout = \"1s\"";
    let apps = [
        local_app("good", "min_instances = 1"),
        local_app_running(
            "missing",
            policy,
            "\"/nonexistent/tideway-test-app\"",
            "tcp = true",
        ),
        local_app_running("crashing", policy, "\"false\"", "tcp = true"),
        local_app_running(
            "unready",
            policy,
            &format!("\"{}\"", fake_app().display()),
            "path = \"/status/500\"",
        ),
    ];
    let tideway = Tideway::start(&with_proxy(&apps.concat()));
    tideway.wait_for("replica ready", 1, |e| e["app"] == "good").await;

    let (bad, good) = tokio::join!(
        futures::future::join_all(
            ["missing.test", "crashing.test", "unready.test"].map(|host| async move {
                let response = http1_get(tideway.addr, host, "/").await.expect("a response");
                (host, response.0, response.1.get("retry-after").cloned())
            })
        ),
        async {
            let mut statuses = Vec::new();
            for _ in 0..10 {
                statuses.push(
                    http1_get(tideway.addr, "good.test", "/")
                        .await
                        .expect("a response")
                        .0,
                );
            }
            statuses
        }
    );
    for (host, status, retry_after) in bad {
        assert_eq!(status, 503, "{host}");
        assert!(retry_after.is_some(), "{host}: 503 says when to retry");
    }
    assert!(
        good.iter().all(|s| *s == 200),
        "the good app is unaffected: {good:?}"
    );

    let failed = tideway.wait_for("replica failed to start", 3, |_| true).await;
    let error_of = |app: &str| {
        failed
            .iter()
            .find(|e| e["fields"]["app"] == app)
            .and_then(|e| e["fields"]["error"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        error_of("missing").contains("exited before becoming ready"),
        "{failed:#?}"
    );
    assert!(error_of("crashing").contains("exit status: 1"), "{failed:#?}");
    assert!(
        error_of("unready").contains("not ready within startup_timeout"),
        "{failed:#?}"
    );
    let cannot_run = tideway.events("tideway supervise: cannot start /nonexistent/tideway-test-app: No such file or directory (os error 2)");
    assert!(
        !cannot_run.is_empty(),
        "the replica's own output names the missing program"
    );
    // Retries back off instead of hammering: at most a few attempts in this short test.
    let attempts = tideway
        .events("scaling decision")
        .iter()
        .filter(|d| d["fields"]["app"] == "crashing")
        .count();
    assert!(attempts <= 3, "{attempts} attempts");
}

#[tokio::test]
async fn a_killed_tideway_leaves_no_replica_behind() {
    let mut tideway = Tideway::start(&with_proxy(&local_app("app", "min_instances = 2")));
    let ready = tideway.wait_for("replica ready", 2, |_| true).await;
    let mut pids = Vec::new();
    for event in &ready {
        let replica = event["fields"]["replica"].as_str().expect("replica name");
        let supervisor = tideway
            .events("replica launched")
            .iter()
            .find(|e| e["fields"]["replica"] == replica)
            .and_then(|e| e["fields"]["pid"].as_u64())
            .expect("pid") as u32;
        pids.push(supervisor);
        pids.extend(children_of(supervisor));
    }
    assert_eq!(pids.len(), 4, "two supervisors, two replicas: {pids:?}");
    tideway.signal("KILL");
    tideway.exited().await;
    eventually("every supervisor and replica is gone", || {
        pids.iter().all(|pid| process_gone(*pid))
    })
    .await;
}

#[tokio::test]
async fn a_killed_supervisor_takes_its_replica_with_it() {
    let tideway = Tideway::start(&with_proxy(&local_app("app", "min_instances = 1")));
    let ready = tideway.wait_for("replica ready", 1, |_| true).await;
    let replica = ready[0]["fields"]["replica"]
        .as_str()
        .expect("replica name")
        .to_owned();
    let supervisor = tideway
        .events("replica launched")
        .iter()
        .find(|e| e["fields"]["replica"] == replica.as_str())
        .and_then(|e| e["fields"]["pid"].as_u64())
        .expect("pid") as u32;
    let app = children_of(supervisor);
    assert_eq!(app.len(), 1, "the supervisor runs the app itself: {app:?}");
    // `pkill -9 tideway` kills supervisors too: their replicas must not outlive them.
    send_signal(supervisor, "KILL");
    eventually("the replica dies with its supervisor", || process_gone(app[0])).await;
}

#[tokio::test]
async fn reloads_add_change_and_remove_apps_without_cutting_sessions_and_reject_broken_files() {
    let keep = local_app(
        "keep",
        "min_instances = 1\nmax_instances = 1\nmax_connections = 2\nqueue_timeout = \"200ms\"",
    );
    let gone = local_app("gone", "min_instances = 1");
    let tideway = Tideway::start(&with_proxy(&format!("{keep}{gone}")));
    tideway.wait_for("replica ready", 2, |_| true).await;
    let (mut first, kept_on) = session(tideway.addr, "keep.test").await;
    let (mut second, _) = session(tideway.addr, "keep.test").await;
    let (mut on_gone, _) = session(tideway.addr, "gone.test").await;
    let (status, _, _) = http1_get(tideway.addr, "keep.test", "/")
        .await
        .expect("a response");
    assert_eq!(status, 503, "max_connections = 2 is full");

    // Raise keep's limit, add an app, remove one.
    let keep = local_app(
        "keep",
        "min_instances = 1\nmax_instances = 1\nmax_connections = 5\nqueue_timeout = \"200ms\"",
    );
    let added = local_app("added", "min_instances = 1");
    tideway.rewrite_config(&with_proxy(&format!("{keep}{added}")));
    tideway.wait_for("configuration reloaded", 1, |_| true).await;
    tideway
        .wait_for("replica ready", 1, |e| e["app"] == "added")
        .await;

    assert_eq!(
        whoami(&mut first).await.as_deref(),
        Some(kept_on.as_str()),
        "kept sessions live on"
    );
    assert!(whoami(&mut second).await.is_some());
    let (status, _, _) = http1_get(tideway.addr, "keep.test", "/")
        .await
        .expect("a response");
    assert_eq!(status, 200, "the raised limit applies at once");
    let (status, _, _) = http1_get(tideway.addr, "added.test", "/")
        .await
        .expect("a response");
    assert_eq!(status, 200, "the added app serves");
    let (status, _, _) = http1_get(tideway.addr, "gone.test", "/")
        .await
        .expect("a response");
    assert_eq!(status, 404, "the removed app takes no new requests");
    assert!(
        whoami(&mut on_gone).await.is_some(),
        "a session of the removed app drains, it is not cut"
    );
    on_gone.close(None).await.expect("close");
    tideway
        .wait_for("replica stopped", 1, |e| e["app"] == "gone")
        .await;

    // A broken file is rejected and changes nothing.
    tideway.rewrite_config("[proxy]\nlisten = \"127.0.0.1:0\"\n[[app]]\nname = \"Bad Name\"\n");
    tideway.signal("HUP");
    tideway
        .wait_for(
            "new configuration rejected, the running one stays in force",
            1,
            |_| true,
        )
        .await;
    assert_eq!(whoami(&mut first).await.as_deref(), Some(kept_on.as_str()));
    let (status, _, _) = http1_get(tideway.addr, "added.test", "/")
        .await
        .expect("a response");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_reload_never_empties_the_proxy_unless_the_file_says_so() {
    let backend = tideway_testkit::TestReplica::start("a").await.expect("backend");
    let config = with_proxy(&format!(
        "[[app]]\nname = \"keep\"\nhosts = [\"keep.test\"]\n[app.static]\naddresses = [\"{}\"]\n",
        backend.addr()
    ));
    let tideway = Tideway::start(&config);
    let serves = || async {
        let (status, _, _) = http1_get(tideway.addr, "keep.test", "/")
            .await
            .expect("a response");
        status
    };
    assert_eq!(serves().await, 200);

    // Truncated, then written again a moment later, as `cat new > tideway.toml` does: the watcher waits
    // for the content to settle and never takes the empty file in between.
    tideway.rewrite_config("");
    tokio::time::sleep(Duration::from_millis(20)).await;
    tideway.rewrite_config(&format!("{config}\n# rewritten\n"));
    tideway.wait_for("configuration reloaded", 1, |_| true).await;
    assert!(
        tideway
            .events("new configuration rejected, the running one stays in force")
            .is_empty()
    );
    assert_eq!(serves().await, 200);

    // An empty file is refused, whether the watcher finds it or SIGHUP asks for it.
    tideway.rewrite_config("");
    let rejected = tideway
        .wait_for(
            "new configuration rejected, the running one stays in force",
            1,
            |_| true,
        )
        .await;
    assert!(
        rejected[0]["fields"]["problems"]
            .as_str()
            .is_some_and(|p| p.contains("app = []")),
        "{rejected:?}"
    );
    assert_eq!(serves().await, 200);
    tideway.signal("HUP");
    tideway
        .wait_for(
            "new configuration rejected, the running one stays in force",
            2,
            |_| true,
        )
        .await;
    assert_eq!(serves().await, 200);

    // Saying so retires every app.
    tideway.rewrite_config("app = []\n[proxy]\nlisten = \"127.0.0.1:0\"\n");
    tideway.wait_for("configuration reloaded", 2, |_| true).await;
    assert_eq!(serves().await, 404);
}

#[tokio::test]
async fn while_failed_starts_back_off_clients_are_answered_at_once() {
    // startup_timeout is far beyond this test's patience: only an answer at once passes.
    let policy = "min_instances = 0\nstartup_timeout = \"10m\"\nqueue_timeout = \"10m\"";
    let tideway = Tideway::start(&with_proxy(&local_app_running(
        "crashing",
        policy,
        "\"false\"",
        "tcp = true",
    )));
    let get = || async {
        let (status, headers, _) =
            tokio::time::timeout(PATIENCE, http1_get(tideway.addr, "crashing.test", "/"))
                .await
                .expect("an answer before startup_timeout")
                .expect("a response");
        let retry_after = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        (status, retry_after)
    };
    // The first connection starts a replica, which fails: it is answered when the start fails.
    let (status, retry_after) = get().await;
    assert_eq!(status, 503);
    assert!(
        retry_after.is_some_and(|s| (1..=2).contains(&s)),
        "Retry-After is the backoff left: {retry_after:?}"
    );
    tideway.wait_for("replica failed to start", 1, |_| true).await;
    // Nothing starts during the backoff: the next one is told so at once.
    let (status, retry_after) = get().await;
    assert_eq!(status, 503);
    assert!(retry_after.is_some_and(|s| s <= 2), "{retry_after:?}");
}
