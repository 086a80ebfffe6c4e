//! An app replica for end-to-end tests of the local orchestrator: the testkit backend on `127.0.0.1:$PORT`,
//! named `$TIDEWAY_REPLICA`, until SIGTERM. It starts in milliseconds, so tests of scaling measure tideway,
//! not an interpreter's start-up.

use std::process::ExitCode;

use tideway_testkit::TestReplica;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(port) = std::env::var("PORT").ok().and_then(|p| p.parse().ok()) else {
        eprintln!("fake app: PORT is not set to a port number");
        return ExitCode::from(2);
    };
    let name = std::env::var("TIDEWAY_REPLICA").unwrap_or_else(|_| format!("fake-{port}"));
    let backend = match TestReplica::start_on(&name, port).await {
        Ok(backend) => backend,
        Err(error) => {
            eprintln!("fake app: cannot listen on 127.0.0.1:{port}: {error}");
            return ExitCode::from(1);
        }
    };
    println!("{name} listening on {}", backend.addr());
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return ExitCode::from(1);
    };
    term.recv().await;
    println!("{name} stopping");
    ExitCode::SUCCESS
}
