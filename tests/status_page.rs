//! The admin status page in a real browser: headless Chromium loads it while an app runs, and finds the
//! app and one bar per replica. A screenshot is kept as a test artefact (`target/test-artifacts/`).

use std::path::PathBuf;
use std::process::Command;

use tideway_e2e::browser::CHROMIUM_FLAGS;
use tideway_e2e::{Tideway, binary, fake_app};
use tideway_testkit::ws_connect;

/// Chromium as a test browser: headless, no network of its own, a fresh profile (one per run, since the
/// tests run at once).
fn chromium(args: &[String]) -> std::process::Output {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile = std::env::temp_dir().join(format!("tideway-chromium-{}-{run}", std::process::id()));
    let output = Command::new("chromium")
        .args(CHROMIUM_FLAGS)
        .args(["--hide-scrollbars", "--virtual-time-budget=4000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium: install Debian's chromium package (scripts/test does)");
    let _ = std::fs::remove_dir_all(profile);
    output
}

fn artifacts() -> PathBuf {
    let target = binary()
        .parent()
        .and_then(|profile| profile.parent())
        .expect("target/<profile>")
        .join("test-artifacts");
    std::fs::create_dir_all(&target).expect("artefact directory");
    target
}

#[tokio::test]
async fn the_status_page_shows_each_app_and_one_bar_per_replica() {
    let tideway = Tideway::start(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[app]]\nname = \"hello\"\n\
         hosts = [\"hello.test\"]\nmin_instances = 1\nmax_instances = 4\nmax_connections = 4\nspawn_threshold = 75\n\
         [app.local]\ncommand = [\"{fake}\"]\nreadiness = {{ path = \"/\" }}\n\n[[app]]\nname = \"reports\"\n\
         path_prefix = \"/reports\"\nmin_instances = 0\n[app.local]\ncommand = [\"{fake}\"]\n",
        fake = fake_app().display()
    ));
    tideway.wait_for("replica ready", 1, |_| true).await;
    // Five sessions need two replicas (3 per replica at 75% of 4).
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(
            ws_connect(tideway.addr, "hello.test", "/ws")
                .await
                .expect("session"),
        );
    }
    tideway.wait_for("replica ready", 2, |_| true).await;

    let page = format!("http://{}/", tideway.listener("admin"));
    let dom = chromium(&["--dump-dom".to_owned(), page.clone()]);
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(r#"data-app="hello""#),
        "the page shows the app: {dom}"
    );
    assert!(
        dom.contains(r#"data-app="reports""#),
        "and the one scaled to zero"
    );
    // The opening tag of each bar element (the page's stylesheet mentions the attributes too).
    let bars: Vec<&str> = dom
        .split("<div ")
        .map(|tag| tag.split('>').next().unwrap_or_default())
        .filter(|tag| tag.contains(r#"class="replica-bar""#))
        .collect();
    assert_eq!(bars.len(), 2, "one bar per replica: {bars:?}");
    assert!(
        bars.iter().all(|bar| bar.contains(r#"data-state="ready""#)),
        "{bars:?}"
    );
    assert!(
        dom.contains("Refused (last 5 min)") && dom.contains("Closed by tideway (last 5 min)"),
        "recent refusals and closes by reason are on the page"
    );
    assert!(
        dom.contains("Window (desired)") && dom.contains("1 for "),
        "each decision shows the stabilization window it was taken from"
    );

    let screenshot = artifacts().join("status-page.png");
    let shot = chromium(&[
        format!("--screenshot={}", screenshot.display()),
        "--window-size=1280,900".to_owned(),
        page,
    ]);
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    drop(sessions);
}

#[tokio::test]
async fn the_status_page_lists_the_certificates_soonest_to_expire_first() {
    let pki = tideway_e2e::pki::Pki::create();
    let default = pki.issue("default", &["default.test"]);
    let app = pki.issue_for_days("app", &["app.test"], 10);
    let tideway = Tideway::start(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\ntls_certificate = \"{}\"\n\
         tls_key = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[app]]\nname = \"app\"\nhosts = [\"app.test\"]\n\
         tls_certificate = \"{}\"\ntls_key = \"{}\"\n[app.static]\naddresses = [\"127.0.0.1:9\"]\n",
        default.chain.display(),
        default.key.display(),
        app.chain.display(),
        app.key.display(),
    ));
    let page = format!("http://{}/", tideway.listener("admin"));
    let dom = chromium(&["--dump-dom".to_owned(), page]);
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    let rows: Vec<&str> = dom
        .split("<tr ")
        .map(|tag| tag.split('>').next().unwrap_or_default())
        .filter(|tag| tag.contains("data-certificate="))
        .collect();
    assert_eq!(rows.len(), 2, "one row per certificate: {dom}");
    assert!(
        rows[0].contains(&app.chain.display().to_string()) && rows[0].contains(r#"class="warn""#),
        "the one expiring in 10 days comes first, marked: {rows:?}"
    );
    assert!(rows[1].contains(&default.chain.display().to_string()) && !rows[1].contains("warn"));
    assert!(dom.contains("Certificates (2)"));
}
