//! Affinity across instances: a session's cookie is signed and names its replica, so a client reaching
//! any instance — moved by the load balancer, or because the one it used died — lands on its replica; a
//! session vacant in its grace at one instance is handed over, seat and all, to the one its client came
//! back through; and nobody can write a cookie of their own.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{SinkExt, StreamExt};
use tideway_e2e::browser::Chromium;
use tideway_e2e::{PATIENCE, Tideway, request};
use tideway_testkit::TestReplica;
use tideway_testkit::tokio_tungstenite::client_async;
use tideway_testkit::tungstenite::Message;
use tideway_testkit::tungstenite::client::IntoClientRequest;
use tokio::net::TcpStream;

use super::relay::Relay;
use super::{free_addresses, instance_with, until_peers};

/// The app: cookie affinity over `replicas`, each taking `max_connections`.
fn sticky(replicas: &[TestReplica], max_connections: u32) -> String {
    let addresses: Vec<String> = replicas.iter().map(|r| format!("\"{}\"", r.addr())).collect();
    format!(
        "[[app]]\nname = \"app\"\npath_prefix = \"/\"\naffinity = \"cookie\"\nreconnect_grace = \"30s\"\n\
         max_connections = {max_connections}\nqueue_timeout = \"300ms\"\n\
         [app.static]\naddresses = [{}]\n",
        addresses.join(", ")
    )
}

/// Replicas named as tideway names a static app's: `app-1`, `app-2`, …
async fn replicas(count: usize) -> Vec<TestReplica> {
    let mut replicas = Vec::new();
    for n in 1..=count {
        replicas.push(TestReplica::start(&format!("app-{n}")).await.expect("replica"));
    }
    replicas
}

/// What a GET through an instance got: its status, the replica that answered, and the session cookie
/// written (`name=value`), if one was.
struct Got {
    status: u16,
    replica: Option<String>,
    cookie: Option<String>,
}

async fn get(through: &Tideway, cookie: Option<&str>) -> Got {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let (status, headers, _) = request(through.addr, "GET", "/", &headers, "").await;
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Got {
        status: status.as_u16(),
        replica: text("x-backend"),
        cookie: text("set-cookie").and_then(|c| c.split(';').next().map(str::to_owned)),
    }
}

/// A new session through `through`: its cookie and its replica.
async fn new_session(through: &Tideway) -> (String, String) {
    let got = get(through, None).await;
    assert_eq!(got.status, 200);
    let cookie = got.cookie.expect("a new session gets its cookie");
    (cookie, got.replica.expect("a replica answered"))
}

/// The session id a cookie (`name=value`) carries: its first field.
fn session_of(cookie: &str) -> &str {
    let value = cookie.split_once('=').map_or("", |(_, value)| value);
    value.split('.').next().unwrap_or_default()
}

/// The replica a WebSocket carrying `cookie` through `through` reaches, as the replica says.
async fn websocket_replica(through: &Tideway, cookie: &str) -> String {
    let mut request = "ws://app.test/ws".into_client_request().expect("a request");
    request
        .headers_mut()
        .insert("cookie", cookie.parse().expect("a header value"));
    let stream = TcpStream::connect(through.addr).await.expect("connect");
    let (mut ws, _) = tokio::time::timeout(PATIENCE, client_async(request, stream))
        .await
        .expect("an upgrade in time")
        .expect("an upgrade");
    ws.send(Message::text("whoami")).await.expect("sent");
    let answer = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("an answer in time")
        .expect("an answer")
        .expect("a message");
    answer.into_text().expect("text").as_str().to_owned()
}

/// What `tideway` counts on replica `replica`: (its own connections, the peers').
async fn counts_on(tideway: &Tideway, replica: &str) -> (u64, u64) {
    let (_, _, body) = request(tideway.listener("admin"), "GET", "/api/apps/app", &[], "").await;
    let app: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let replicas = app["replicas"].as_array().cloned().unwrap_or_default();
    replicas
        .iter()
        .find(|r| r["name"] == replica)
        .map_or((u64::MAX, u64::MAX), |r| {
            let count = |key: &str| r[key].as_u64().unwrap_or(u64::MAX);
            (count("connections"), count("elsewhere"))
        })
}

async fn until_counts(tideway: &Tideway, replica: &str, expected: (u64, u64)) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let counts = counts_on(tideway, replica).await;
        if counts == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{replica} at instance {}: (own, elsewhere) = {counts:?}, not {expected:?}",
            tideway.pid()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_session_follows_its_cookie_through_every_instance_and_nobody_can_write_one() {
    let replicas = replicas(3).await;
    let cluster = free_addresses(3);
    let app = sticky(&replicas, 10);
    let instances: Vec<Tideway> = (0..3).map(|i| instance_with(&cluster, i, &app, &[])).collect();
    let (cookie, home) = new_session(&instances[0]).await;
    for through in [1, 2, 0, 1] {
        let got = get(&instances[through], Some(&cookie)).await;
        assert_eq!(
            got.replica.as_deref(),
            Some(home.as_str()),
            "through instance {through}"
        );
        assert!(
            got.cookie
                .as_deref()
                .is_none_or(|c| session_of(c) == session_of(&cookie)),
            "the session stays the same through instance {through}"
        );
    }
    assert_eq!(websocket_replica(&instances[2], &cookie).await, home);

    // A cookie pointed at another replica, its tag kept, and one made up whole, are nobody's session:
    // each gets a new one.
    let (name, value) = cookie.split_once('=').expect("a pair");
    let mut fields: Vec<String> = value.split('.').map(str::to_owned).collect();
    let elsewhere = if home == "app-1" { "app-2" } else { "app-1" };
    fields[1] = URL_SAFE_NO_PAD.encode(elsewhere);
    let tampered = format!("{name}={}", fields.join("."));
    let made_up = format!(
        "{name}={}.{}.4102444800.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "0".repeat(32),
        URL_SAFE_NO_PAD.encode(elsewhere)
    );
    for forged in [tampered, made_up] {
        let got = get(&instances[1], Some(&forged)).await;
        let issued = got.cookie.expect("a new session for a forged cookie");
        assert_ne!(session_of(&issued), session_of(&forged), "{forged}");
        assert_ne!(session_of(&issued), session_of(&cookie));
    }
}

#[tokio::test]
async fn an_expired_cookie_is_not_honoured() {
    let replicas = replicas(3).await;
    let app = format!("[cookie]\nmax_age = \"2s\"\n\n{}", sticky(&replicas, 10));
    let tideway = instance_with(&free_addresses(1), 0, &app, &[]);
    let (cookie, _) = new_session(&tideway).await;
    let honoured = get(&tideway, Some(&cookie)).await;
    assert!(honoured.cookie.is_none(), "honoured while it is good");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = get(&tideway, Some(&cookie)).await;
        if got
            .cookie
            .is_some_and(|issued| session_of(&issued) != session_of(&cookie))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cookie was still honoured after {PATIENCE:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_session_in_its_grace_moves_with_its_client_and_its_seat_counts_once() {
    let replicas = replicas(3).await;
    let cluster = free_addresses(3);
    let app = sticky(&replicas, 1);
    let instances: Vec<Tideway> = (0..3).map(|i| instance_with(&cluster, i, &app, &[])).collect();
    for tideway in &instances {
        until_peers(tideway, 2).await;
    }
    // A session confirmed through a, vacant in its grace there, holds its replica's only seat.
    let (cookie, home) = new_session(&instances[0]).await;
    assert_eq!(get(&instances[0], Some(&cookie)).await.status, 200, "confirmed");
    until_counts(&instances[0], &home, (1, 0)).await;
    // Another, through b, holds a second replica's.
    until_counts(&instances[1], &home, (0, 1)).await;
    let (other_cookie, other) = new_session(&instances[1]).await;
    assert_ne!(other, home, "the home replica is full, as b counts it");
    assert_eq!(get(&instances[1], Some(&other_cookie)).await.status, 200);
    until_counts(&instances[2], &other, (0, 1)).await;
    until_counts(&instances[2], &home, (0, 1)).await;

    // The first client comes back through c, where its replica is full (a third one is free): a hands
    // its seat over, and the session stays home.
    let back = get(&instances[2], Some(&cookie)).await;
    assert_eq!(
        (back.status, back.replica.as_deref()),
        (200, Some(home.as_str())),
        "back on its replica"
    );
    until_counts(&instances[2], &home, (1, 0)).await;
    until_counts(&instances[0], &home, (0, 1)).await;
    // The seat moved and was not freed: a newcomer through a gets the third replica, and the next none.
    let newcomer = get(&instances[0], None).await;
    assert_eq!(newcomer.status, 200);
    assert!(
        newcomer.replica.as_deref() != Some(home.as_str())
            && newcomer.replica.as_deref() != Some(other.as_str()),
        "the newcomer gets the free replica, not {:?}",
        newcomer.replica
    );
    let confirmed = get(&instances[0], newcomer.cookie.as_deref()).await;
    assert_eq!(confirmed.status, 200);
    assert_eq!(get(&instances[0], None).await.status, 503, "no seat is left");
}

#[tokio::test]
async fn a_client_whose_instance_died_comes_back_through_another_to_its_replica() {
    let replicas = replicas(3).await;
    let cluster = free_addresses(3);
    let app = sticky(&replicas, 10);
    let mut instances: Vec<Tideway> = (0..3).map(|i| instance_with(&cluster, i, &app, &[])).collect();
    let (cookie, home) = new_session(&instances[0]).await;
    assert_eq!(websocket_replica(&instances[0], &cookie).await, home);
    instances[0].signal("KILL");
    instances[0].exited().await;
    // Its peers still count the dead instance until peer_timeout; the session is taken in at once.
    assert_eq!(websocket_replica(&instances[1], &cookie).await, home);
    assert_eq!(
        get(&instances[2], Some(&cookie)).await.replica.as_deref(),
        Some(home.as_str())
    );
}

#[tokio::test]
async fn a_key_rotation_done_in_its_documented_steps_keeps_every_session() {
    const OLD: &str = "an-old-key-of-at-least-16-bytes";
    const NEW: &str = "a-new-key-of-at-least-16-bytes";
    let replicas = replicas(3).await;
    let cluster = free_addresses(3);
    let app = format!(
        "[cookie]\nkeys_env = \"TIDEWAY_TEST_COOKIE_KEYS\"\n\n{}",
        sticky(&replicas, 10)
    );
    // a has not been touched yet, b accepts the new key, c already signs with it.
    let steps = [
        OLD.to_owned(),
        format!("{OLD}\n{NEW}\n"),
        format!("# signing\n{NEW}\n\n{OLD}\n"),
    ];
    let instances: Vec<Tideway> = steps
        .iter()
        .enumerate()
        .map(|(i, keys)| instance_with(&cluster, i, &app, &[("TIDEWAY_TEST_COOKIE_KEYS", keys)]))
        .collect();
    let [untouched, accepting, signing] = [&instances[0], &instances[1], &instances[2]];

    for (from, to) in [(untouched, signing), (accepting, signing), (signing, accepting)] {
        let (cookie, home) = new_session(from).await;
        let got = get(to, Some(&cookie)).await;
        assert_eq!(
            got.replica.as_deref(),
            Some(home.as_str()),
            "{cookie} is honoured"
        );
        assert!(got.cookie.is_none(), "and kept");
    }
    // Skipping the middle step: an instance without the new key does not know its cookies.
    let (signed_new, _) = new_session(signing).await;
    let issued = get(untouched, Some(&signed_new)).await.cookie;
    let issued = issued.expect("an instance without the new key starts a new session");
    assert_ne!(session_of(&issued), session_of(&signed_new));
}

/// The page's requests and WebSocket, as the page saw them: which replica answered each.
const SPREAD: &str = r#"(async () => {
  const replica = async (i) => (await fetch('/delay?ms=300&i=' + i, {cache: 'no-store'})).headers.get('x-backend');
  const first = await replica(0);
  const parallel = await Promise.all([1, 2, 3, 4, 5, 6].map(replica));
  const websocket = await new Promise((resolve, reject) => {
    const ws = new WebSocket('ws://' + location.host + '/ws');
    ws.onopen = () => ws.send('whoami');
    ws.onmessage = (e) => { resolve(e.data); ws.close(); };
    ws.onerror = () => reject(new Error('websocket failed'));
  });
  return [first, ...parallel, websocket];
})()"#;

#[tokio::test]
async fn a_browser_behind_a_round_robin_balancer_keeps_one_replica_across_instances() {
    let replicas = replicas(3).await;
    let cluster = free_addresses(3);
    let app = sticky(&replicas, 10);
    let instances: Vec<Tideway> = (0..3).map(|i| instance_with(&cluster, i, &app, &[])).collect();
    let balancer = Relay::start(instances.iter().map(|t| t.addr).collect()).await;

    let mut browser = Chromium::launch().await;
    let page = browser.new_page().await;
    browser
        .navigate(&page, &format!("http://127.0.0.1:{}/", balancer.addr.port()))
        .await;
    let seen = browser.eval(&page, SPREAD).await;
    let seen: Vec<&str> = seen
        .as_array()
        .map(|all| all.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        seen.len(),
        8,
        "every request and the WebSocket were answered: {seen:?}"
    );
    assert!(
        seen.iter().all(|replica| *replica == seen[0]),
        "one replica for the page's session, whichever instance each connection reached: {seen:?}"
    );
    let counts = balancer.counts();
    assert!(
        counts.iter().all(|&c| c > 0),
        "the browser's connections reached every instance: {counts:?}"
    );

    // The status page of any instance lists the other two.
    let status = browser.new_page().await;
    let admin = instances[1].listener("admin");
    browser
        .navigate(&status, &format!("http://127.0.0.1:{}/", admin.port()))
        .await;
    let peers = browser
        .wait_for(
            &status,
            "the other instances listed",
            "[...document.querySelectorAll('[data-peer]')].map((row) => row.dataset.peer).join(' ') === 'a c'",
        )
        .await;
    assert_eq!(peers, serde_json::Value::Bool(true));
}
