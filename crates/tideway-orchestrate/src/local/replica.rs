//! The life of one local replica: launch under the supervisor, readiness, running, exit.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tideway_core::{Replica, ReplicaId, ReplicaState};
use tokio::process::{Child, Command};
use tracing::debug;

use super::output::forward_lines;
use super::readiness::wait_until_ready;
use super::{Control, Inner};
use crate::orchestrator::ReplicaEvent;

/// How the starting phase of a replica ended.
enum Startup {
    Ready,
    Exited(io::Result<ExitStatus>),
    TimedOut,
}

/// Launches one replica and follows it until it is gone, reporting each step to the scaling loop.
pub(super) async fn run(inner: Arc<Inner>) {
    let index = inner.numbers.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}-{index}", inner.app.name());
    let port = match free_port() {
        Ok(port) => port,
        Err(error) => {
            inner.send(ReplicaEvent::StartFailed {
                id: ReplicaId::next(),
                error: format!("no free port on 127.0.0.1: {error}"),
            });
            return;
        }
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let replica = Arc::new(Replica::new(
        name,
        addr,
        ReplicaState::Starting,
        inner.clock.now(),
    ));
    let id = replica.id();
    let mut child = match command(&inner, &replica, port).spawn() {
        Ok(child) => child,
        Err(error) => {
            inner.send(ReplicaEvent::StartFailed {
                id,
                error: format!("cannot run {}: {error}", inner.supervisor.display()),
            });
            return;
        }
    };
    let stopping = Arc::new(AtomicBool::new(false));
    inner.running().insert(
        id,
        Control {
            stdin: child.stdin.take(),
            stopping: Arc::clone(&stopping),
        },
    );
    debug!(app = inner.app.name(), replica = replica.name(), %addr, pid = child.id(), "replica launched");
    forward_output(&inner, &replica, &mut child);
    inner.send(ReplicaEvent::Started(Arc::clone(&replica)));

    let startup_timeout = inner.app.policy().startup_timeout;
    let startup = tokio::select! {
        status = child.wait() => Startup::Exited(status),
        () = wait_until_ready(addr, &inner.spec.readiness) => Startup::Ready,
        () = tokio::time::sleep(startup_timeout) => Startup::TimedOut,
    };
    let event = match startup {
        Startup::Ready => {
            inner.send(ReplicaEvent::Ready(id));
            let status = child.wait().await;
            ReplicaEvent::Exited {
                id,
                expected: stopping.load(Ordering::SeqCst),
                detail: describe(&status),
            }
        }
        Startup::Exited(status) if stopping.load(Ordering::SeqCst) => ReplicaEvent::Exited {
            id,
            expected: true,
            detail: describe(&status),
        },
        Startup::Exited(status) => ReplicaEvent::StartFailed {
            id,
            error: format!("exited before becoming ready ({})", describe(&status)),
        },
        Startup::TimedOut => {
            if let Some(control) = inner.running().get_mut(&id) {
                control.stop();
            }
            let status = child.wait().await;
            ReplicaEvent::StartFailed {
                id,
                error: format!(
                    "not ready within startup_timeout ({}s); stopped ({})",
                    startup_timeout.as_secs_f64(),
                    describe(&status)
                ),
            }
        }
    };
    inner.running().remove(&id);
    inner.send(event);
}

/// The supervisor command for one replica: `tideway supervise --stop-timeout … -- <command>`, with the
/// replica's port substituted and its environment set.
fn command(inner: &Inner, replica: &Replica, port: u16) -> Command {
    let spec = &inner.spec;
    let port = port.to_string();
    let mut command = Command::new(&inner.supervisor);
    command
        .arg("supervise")
        .arg("--stop-timeout")
        .arg(format!("{}ms", spec.stop_timeout.as_millis()))
        .arg("--")
        .args(spec.command.iter().map(|word| word.replace("{port}", &port)))
        .env("PORT", &port)
        .env("TIDEWAY_APP", inner.app.name())
        .env("TIDEWAY_REPLICA", replica.name())
        .envs(&spec.env)
        .stdin(Stdio::piped())
        .stdout(output(spec.log_output))
        .stderr(output(spec.log_output))
        // Its own process group: a Ctrl-C meant for tideway must not reach replicas before they drain.
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    command
}

fn forward_output(inner: &Inner, replica: &Replica, child: &mut Child) {
    let app: Arc<str> = Arc::from(inner.app.name());
    let name: Arc<str> = Arc::from(replica.name());
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_lines(
            stdout,
            Arc::clone(&app),
            Arc::clone(&name),
            "stdout",
        ));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_lines(stderr, app, name, "stderr"));
    }
}

/// Where a replica's output goes: a pipe into tideway's log, or nowhere.
fn output(logged: bool) -> Stdio {
    if logged { Stdio::piped() } else { Stdio::null() }
}

/// A port on 127.0.0.1 that nothing listens on right now, for the next replica.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

fn describe(status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("status unknown: {error}"),
    }
}
