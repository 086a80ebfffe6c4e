//! Autoscaling with the local orchestrator, end to end: the real binary starts and stops real replica
//! processes as real WebSocket sessions come and go.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use tideway_e2e::{PATIENCE, Tideway, fake_app};
use tideway_testkit::tokio_tungstenite::WebSocketStream;
use tideway_testkit::tungstenite::Message;
use tideway_testkit::{http1_get, ws_connect};
use tokio::net::TcpStream;

/// A config with one local app named `app` on host `app.test` running the fake replica, plus `policy`.
fn config(policy: &str) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[app]]\nname = \"app\"\nhosts = [\"app.test\"]\n{policy}\n\
         [app.local]\ncommand = [\"{}\"]\nreadiness = {{ path = \"/\" }}\nstop_timeout = \"2s\"\n",
        fake_app().display()
    )
}

/// Opens a WebSocket session through tideway and asks which replica holds it.
async fn session(addr: SocketAddr) -> (WebSocketStream<TcpStream>, String) {
    let mut ws = tokio::time::timeout(PATIENCE, ws_connect(addr, "app.test", "/ws"))
        .await
        .expect("a session in time")
        .expect("a session");
    let replica = whoami(&mut ws).await;
    (ws, replica)
}

async fn whoami(ws: &mut WebSocketStream<TcpStream>) -> String {
    ws.send(Message::text("whoami")).await.expect("send");
    match tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("an answer in time")
    {
        Some(Ok(Message::Text(name))) => name.to_string(),
        other => panic!("expected the replica's name, got {other:?}"),
    }
}

fn is_up(fields: &serde_json::Value) -> bool {
    fields["direction"] == "up"
}

fn is_down(fields: &serde_json::Value) -> bool {
    fields["direction"] == "down"
}

fn started(decisions: &[serde_json::Value]) -> u64 {
    decisions
        .iter()
        .filter_map(|d| d["fields"]["start"].as_u64())
        .sum()
}

#[tokio::test]
async fn sessions_scale_replicas_up_at_the_threshold_and_drain_back_without_cutting_any() {
    let tideway = Tideway::start(&config(
        "min_instances = 1\nmax_instances = 4\nmax_connections = 4\nspawn_threshold = 75\nscale_down_delay = \"1s\"",
    ));
    tideway.wait_for("replica ready", 1, |_| true).await;

    // 3 sessions fill a replica to 75% of 4: the 4th, 7th and 10th need one more; max_instances stops at 4.
    let mut sessions = Vec::new();
    for n in 1..=12 {
        sessions.push(session(tideway.addr).await);
        let expected_ups = 1 + [4, 7, 10].iter().filter(|at| **at <= n).count();
        let ups = tideway.wait_for("scaling decision", expected_ups, is_up).await;
        assert_eq!(ups.len(), expected_ups, "after session {n}: {ups:#?}");
        assert!(ups.iter().skip(1).all(|d| d["fields"]["reason"] == "threshold"));
    }
    tideway.wait_for("replica ready", 4, |_| true).await;
    assert_eq!(started(&tideway.events("scaling decision")), 4);

    // Keep the first session; close the rest. After scale_down_delay, three replicas drain and stop —
    // not the one holding the open session.
    let (mut kept, kept_on) = sessions.remove(0);
    for (mut ws, _) in sessions {
        ws.close(None).await.expect("close");
    }
    let stopped = tideway.wait_for("replica stopped", 3, |_| true).await;
    // Down the stabilization window, in one step or several as the closes' counts leave it.
    let downs: Vec<_> = tideway
        .events("scaling decision")
        .into_iter()
        .filter(|e| is_down(&e["fields"]))
        .collect();
    assert!(
        downs.iter().all(|d| d["fields"]["reason"] == "idle"),
        "{downs:#?}"
    );
    assert_eq!(
        downs.last().map(|d| d["fields"]["to"].clone()),
        Some(1.into()),
        "{downs:#?}"
    );
    assert!(
        stopped.iter().all(|e| e["fields"]["replica"] != kept_on.as_str()),
        "{stopped:#?}"
    );
    assert_eq!(
        whoami(&mut kept).await,
        kept_on,
        "the open session survived the scale-down"
    );
}

#[tokio::test]
async fn scale_from_zero_holds_the_first_connection_and_a_cold_burst_starts_what_the_rule_asks() {
    let tideway = Tideway::start(&config(
        "min_instances = 0\nmax_instances = 8\nmax_connections = 4\nspawn_threshold = 75\n\
         scale_down_delay = \"1s\"\nstartup_timeout = \"10s\"",
    ));
    assert!(
        tideway.events("replica ready").is_empty(),
        "nothing runs before the first connection"
    );

    let (status, _, _) = http1_get(tideway.addr, "app.test", "/")
        .await
        .expect("the first request waits and succeeds");
    assert_eq!(status, 200);
    tideway
        .wait_for("scaling decision", 1, |d| is_down(d) && d["to"] == 0)
        .await;
    tideway.wait_for("replica stopped", 1, |_| true).await;

    // Ten cold sessions at once: ceil(10 / (4 × 75%)) = 4 replicas, not 1 and not 10.
    let burst: Vec<_> = (0..10).map(|_| tokio::spawn(session(tideway.addr))).collect();
    let mut sessions = Vec::new();
    for task in burst {
        sessions.push(task.await.expect("session task"));
    }
    let ups = tideway
        .events("scaling decision")
        .into_iter()
        .filter(|d| is_up(&d["fields"]))
        .collect::<Vec<_>>();
    assert_eq!(
        started(&ups),
        1 + 4,
        "one replica for the first request, four for the burst: {ups:#?}"
    );
    let replicas: std::collections::BTreeSet<_> = sessions.iter().map(|(_, r)| r.clone()).collect();
    assert!(replicas.len() <= 4, "{replicas:?}");
}
