//! A real Shiny for Python app (`examples/shiny/app.py`, Shiny installed from PyPI) behind tideway, used by
//! six people at once in headless Chromium, each in a browser context with cookies of its own.
//!
//! With `affinity = "cookie"`, `max_connections = 2` and `max_instances = 3` every page must render and
//! react, every request and the WebSocket of a session must reach the one replica that holds the session's
//! state (its download lives there), the app must scale only as far as the sessions need, and nobody may
//! be refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;
use tideway_e2e::browser::{Chromium, Page};
use tideway_e2e::python::python_with;
use tideway_e2e::{Tideway, request};

const SESSIONS: usize = 6;
const MAX_CONNECTIONS: f64 = 2.0;
const SPAWN_THRESHOLD: f64 = 0.8;
const MAX_INSTANCES: usize = 3;

/// Replicas the scaling rule asks for when `sessions` sessions hold a seat each.
fn needed(sessions: usize) -> usize {
    let per_replica = MAX_CONNECTIONS * SPAWN_THRESHOLD;
    ((sessions as f64 / per_replica).ceil() as usize).clamp(1, MAX_INSTANCES)
}

async fn app_state(admin: SocketAddr) -> Value {
    let (status, _, body) = request(admin, "GET", "/api/apps/shiny", &[], "").await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).expect("JSON")
}

/// Highest replica count any scale-up so far asked for.
fn highest_scale_up(state: &Value) -> usize {
    state["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter(|d| d["direction"] == "up")
        .filter_map(|d| d["to"].as_u64())
        .max()
        .unwrap_or(0) as usize
}

/// Types `name` into the page's text input as a person would, so Shiny sends it over the WebSocket.
async fn type_name(browser: &mut Chromium, page: &Page, name: &str) {
    browser
        .eval(
            page,
            &format!(
                "(() => {{ const el = document.querySelector('#name'); el.focus(); el.value = '{name}'; \
                 el.dispatchEvent(new Event('input', {{bubbles: true}})); \
                 el.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()"
            ),
        )
        .await;
}

/// Waits until the page greets `name` (the server's answer over the WebSocket) and returns the replica
/// the greeting names.
async fn greeted(browser: &mut Chromium, page: &Page, name: &str) -> String {
    let text = browser
        .wait_for(
            page,
            &format!("the page greets {name}"),
            &format!(
                "(() => {{ const t = document.querySelector('#greeting')?.textContent ?? ''; \
                 return t.startsWith('Hello, {name}, from ') ? t : ''; }})()"
            ),
        )
        .await;
    text.as_str()
        .and_then(|t| t.rsplit(' ').next())
        .expect("a replica name")
        .to_owned()
}

#[tokio::test]
async fn six_browser_sessions_of_a_shiny_app_keep_their_replica_and_need_no_more_than_their_seats() {
    let python = python_with("shiny", "1.8.0");
    let app_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shiny");
    let tideway = Tideway::start(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[app]]\nname = \"shiny\"\n\
         path_prefix = \"/\"\nmin_instances = 1\nmax_instances = {MAX_INSTANCES}\nmax_connections = 2\n\
         affinity = \"cookie\"\nscale_down_delay = \"5m\"\n[app.local]\n\
         command = [\"{python}\", \"-m\", \"shiny\", \"run\", \"--host\", \"127.0.0.1\", \"--port\", \"{{port}}\", \"app.py\"]\n\
         cwd = \"{cwd}\"\nreadiness = {{ path = \"/\" }}\n",
        python = python.display(),
        cwd = app_dir.display(),
    ));
    let admin = tideway.listener("admin");
    tideway.wait_for("replica ready", 1, |_| true).await;
    let url = format!("http://127.0.0.1:{}/", tideway.addr.port());

    let mut browser = Chromium::launch().await;
    let mut pages = Vec::new();
    let mut homes: HashMap<String, usize> = HashMap::new();
    for user in 1..=SESSIONS {
        let page = browser.new_page().await;
        browser.navigate(&page, &url).await;
        let name = format!("user{user}");
        greeted(&mut browser, &page, "stranger").await;
        type_name(&mut browser, &page, &name).await;
        let websocket_replica = greeted(&mut browser, &page, &name).await;
        let page_replica = browser
            .eval(&page, "document.querySelector('#page_replica').textContent")
            .await;
        assert_eq!(
            page_replica.as_str(),
            Some(websocket_replica.as_str()),
            "{name}: the page and its WebSocket reached one replica"
        );
        let download = browser
            .wait_for(
                &page,
                "the download link is set",
                "document.querySelector('#report')?.getAttribute('href') ?? ''",
            )
            .await;
        let report = browser
            .eval(
                &page,
                "fetch(document.querySelector('#report').href).then(async r => r.status + ' ' + await r.text())",
            )
            .await;
        assert_eq!(
            report.as_str(),
            Some(format!("200 {name} on {websocket_replica}\n").as_str()),
            "{name}: the session's download ({download}) is served by its replica"
        );
        *homes.entry(websocket_replica).or_default() += 1;

        let state = app_state(admin).await;
        assert!(
            highest_scale_up(&state) <= needed(user),
            "{user} sessions need {} replicas, a scale-up asked for more: {:#}",
            needed(user),
            state["decisions"]
        );
        pages.push((page, name));
    }

    // Every session still reacts, on the replica it started on, after all the scaling.
    for (page, name) in &pages {
        let again = format!("{name}-again");
        let before = browser
            .eval(page, "document.querySelector('#page_replica').textContent")
            .await;
        type_name(&mut browser, page, &again).await;
        let replica = greeted(&mut browser, page, &again).await;
        assert_eq!(before.as_str(), Some(replica.as_str()));
    }
    assert!(
        homes.values().all(|&sessions| sessions <= 2),
        "no replica holds more sessions than max_connections: {homes:?}"
    );
    let state = app_state(admin).await;
    assert_eq!(state["connections"], SESSIONS, "one seat per session: {state:#}");
    assert!(state["replicas"].as_array().expect("replicas").len() <= MAX_INSTANCES);

    let requests = tideway.events("request");
    assert!(!requests.is_empty());
    // The app has no favicon: every replica answers the browser's request for one with 404.
    let failed: Vec<_> = requests
        .iter()
        .filter(|e| e["fields"]["path"] != "/favicon.ico")
        .filter(|e| e["fields"]["status"].as_u64().is_some_and(|s| s >= 400))
        .collect();
    assert!(failed.is_empty(), "requests that failed: {failed:#?}");
    let refused = tideway.events("connection rejected");
    assert!(refused.is_empty(), "connections refused: {refused:#?}");
}
