//! `tideway supervise`: the parent of one replica process. It runs the app in a process group of its own
//! and kills that whole group — first SIGTERM, then SIGKILL after the stop timeout — when its stdin closes,
//! which happens when tideway stops the replica or when tideway is gone, however it died.
//!
//! The app is started through `tideway exec`, which asks the kernel to kill it if the supervisor itself
//! dies (`PR_SET_PDEATHSIG`, kept across `execve`) and then becomes the app: so even `kill -9` of every
//! tideway process leaves no replica behind.

use std::ffi::OsString;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, getppid, kill_process_group, set_parent_process_death_signal};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

/// Exit code when the command cannot be started (as a shell reports "command not found").
const CANNOT_START: u8 = 127;

/// Runs `command` until it exits or must stop; returns the exit code to leave with.
pub fn supervise(stop_timeout: Duration, command: &[OsString]) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tideway supervise: cannot start a runtime: {error}");
            return 1;
        }
    };
    let code = runtime.block_on(run(stop_timeout, command));
    // The thread reading stdin may still be blocked in read(2); do not wait for it.
    runtime.shutdown_background();
    code
}

async fn run(stop_timeout: Duration, command: &[OsString]) -> u8 {
    let Some(program) = command.first() else {
        eprintln!("tideway supervise: no command given");
        return CANNOT_START;
    };
    let this = match std::env::current_exe() {
        Ok(this) => this,
        Err(error) => {
            eprintln!("tideway supervise: cannot find the tideway executable: {error}");
            return CANNOT_START;
        }
    };
    let mut child = match Command::new(this)
        .arg("exec")
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!(
                "tideway supervise: cannot start {}: {error}",
                program.to_string_lossy()
            );
            return CANNOT_START;
        }
    };
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("tideway supervise: cannot install signal handlers");
        signal_group(group, Signal::KILL);
        return 1;
    };
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    let stop_requested = async {
        // Tideway never writes; any return (end of file or error) means: stop.
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let status = tokio::select! {
        status = child.wait() => status,
        () = stop_requested => stop(&mut child, group, stop_timeout).await,
        _ = term.recv() => stop(&mut child, group, stop_timeout).await,
        _ = int.recv() => stop(&mut child, group, stop_timeout).await,
        _ = hup.recv() => stop(&mut child, group, stop_timeout).await,
    };
    // Whatever the app left behind in its group goes with it.
    signal_group(group, Signal::KILL);
    exit_code(status)
}

/// SIGTERM to the group, then SIGKILL if the app has not exited within `stop_timeout`.
async fn stop(
    child: &mut tokio::process::Child,
    group: Option<Pid>,
    stop_timeout: Duration,
) -> io::Result<ExitStatus> {
    signal_group(group, Signal::TERM);
    match tokio::time::timeout(stop_timeout, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            signal_group(group, Signal::KILL);
            child.wait().await
        }
    }
}

/// `tideway exec`: becomes `command` (same process, so the supervisor's process group and signals apply),
/// set to be killed by the kernel when the supervisor `parent` dies. Returns only if that fails.
pub fn exec(parent: u32, command: &[OsString]) -> u8 {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = command.split_first() else {
        eprintln!("tideway supervise: no command given");
        return CANNOT_START;
    };
    if let Err(error) = set_parent_process_death_signal(Some(Signal::KILL)) {
        eprintln!("tideway supervise: cannot tie the replica to its supervisor: {error}");
        return 1;
    }
    // The supervisor may have died before the kernel knew to tell: then it is already someone else's child.
    if getppid()
        .map(Pid::as_raw_nonzero)
        .map(|pid| pid.get().unsigned_abs())
        != Some(parent)
    {
        return 1;
    }
    let error = std::process::Command::new(program).args(args).exec();
    eprintln!(
        "tideway supervise: cannot start {}: {error}",
        program.to_string_lossy()
    );
    CANNOT_START
}

fn signal_group(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        // The group may already be gone; there is nothing to do about any other error either.
        let _ = kill_process_group(group, signal);
    }
}

fn exit_code(status: io::Result<ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(1),
            (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
            (None, None) => 1,
        },
        Err(_) => 1,
    }
}
