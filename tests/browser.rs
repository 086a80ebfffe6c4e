//! A real browser for end-to-end tests: headless Chromium driven over the Chrome DevTools Protocol, each
//! page in a browser context of its own so that pages keep separate cookies, as separate users do.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::PATIENCE;

/// Flags every test browser runs with: headless, as root in a sandbox-less container, and with no network
/// traffic of its own (no updates, sync or QUIC probes), so that it only ever talks to 127.0.0.1.
pub const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A headless Chromium, killed with its profile when dropped.
pub struct Chromium {
    child: Child,
    profile: PathBuf,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// One page (a tab in a browser context of its own), named by its DevTools session.
#[derive(Clone, Debug)]
pub struct Page {
    session: String,
}

impl Chromium {
    /// Starts Chromium with DevTools on a free loopback port and connects to it.
    pub async fn launch() -> Chromium {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let profile = std::env::temp_dir().join(format!(
            "tideway-cdp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new("chromium")
            .args(CHROMIUM_FLAGS)
            .args([
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium: install Debian's chromium package (scripts/test does)");
        let stderr = child.stderr.take().expect("piped stderr");
        let (found, endpoint) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(url.trim().to_owned());
                }
            }
        });
        let url = endpoint
            .recv_timeout(PATIENCE)
            .expect("chromium announces its DevTools endpoint");
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect to DevTools");
        Chromium {
            child,
            profile,
            socket,
            next_id: 0,
        }
    }

    /// Opens a blank page in a new browser context: its cookies are its own.
    pub async fn new_page(&mut self) -> Page {
        let context = self.call(None, "Target.createBrowserContext", json!({})).await;
        let target = self
            .call(
                None,
                "Target.createTarget",
                json!({"url": "about:blank", "browserContextId": context["browserContextId"]}),
            )
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let session = attached["sessionId"]
            .as_str()
            .expect("a DevTools session id")
            .to_owned();
        Page { session }
    }

    /// Loads `url` in `page`.
    pub async fn navigate(&mut self, page: &Page, url: &str) {
        let navigated = self.call(Some(page), "Page.navigate", json!({"url": url})).await;
        assert!(
            navigated.get("errorText").is_none(),
            "navigating to {url}: {navigated}"
        );
    }

    /// The value of the JavaScript `expression` in `page` (awaited if it is a promise).
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let result = self
            .call(
                Some(page),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression} threw: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` every few milliseconds until it is truthy (within [`PATIENCE`]); returns its
    /// value.
    pub async fn wait_for(&mut self, page: &Page, what: &str, expression: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let value = self.eval(page, expression).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::Array(_) | Value::Object(_) => true,
            };
            if truthy {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what} ({expression} is {value})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends one DevTools command and returns its result, skipping the events that arrive meanwhile.
    async fn call(&mut self, page: Option<&Page>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(page) = page {
            command["sessionId"] = json!(page.session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .expect("send a DevTools command");
        let answer = tokio::time::timeout(PATIENCE, async {
            while let Some(message) = self.socket.next().await {
                let Ok(Message::Text(text)) = message else {
                    continue;
                };
                let Ok(reply) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if reply["id"] == id {
                    return reply;
                }
            }
            panic!("DevTools closed the connection during {method}");
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} in time"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
