//! When to reload the configuration, and with what: on SIGHUP, and when the file's content changes — read
//! off the runtime's threads, and only once it has settled, so that a file being rewritten (truncated,
//! then written, as shell redirection and many editors do) is never taken half-way.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{error, info};

/// How often the file is read and compared. Reading a small file once a second costs next to nothing
/// and, unlike file-system events, also sees a Kubernetes ConfigMap update (an atomic swap of a symlinked
/// directory) and editors that replace the file.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long the content must stay the same before it is taken: longer than a writer takes between
/// truncating a file and writing it again, short enough not to be noticed.
const SETTLE: Duration = Duration::from_millis(250);

/// Why a reload happens, for the log.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Trigger {
    /// SIGHUP.
    Signal,
    /// The file's content changed.
    FileChanged,
}

/// A reload to apply: why, and the file's settled content (or why it could not be read).
pub(crate) struct Reload {
    /// Why it happens.
    pub(crate) trigger: Trigger,
    /// The file's content.
    pub(crate) text: io::Result<String>,
}

/// Sends a reload whenever the configuration should be reloaded; ends when the receiver is dropped.
pub(crate) fn watch(path: PathBuf) -> mpsc::Receiver<Reload> {
    let (reloads, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut hangup = signal(SignalKind::hangup())
            .inspect_err(
                |error| error!(%error, "cannot listen for SIGHUP; reloads happen on file changes only"),
            )
            .ok();
        let mut last = read(&path).await.ok();
        let mut ticks = tokio::time::interval(FILE_CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                Some(_) = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => Trigger::Signal,
                _ = ticks.tick() => {
                    let now = read(&path).await.ok();
                    if now.is_none() || now == last {
                        continue;
                    }
                    Trigger::FileChanged
                }
            };
            let text = settled(&path).await;
            last = text.as_ref().ok().cloned();
            info!(trigger = ?trigger, "reloading the configuration");
            if reloads.send(Reload { trigger, text }).await.is_err() {
                return;
            }
        }
    });
    receiver
}

/// The file's content once two reads `SETTLE` apart agree.
async fn settled(path: &Path) -> io::Result<String> {
    let mut current = read(path).await;
    loop {
        tokio::time::sleep(SETTLE).await;
        let again = read(path).await;
        let same = match (&current, &again) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => a.kind() == b.kind(),
            _ => false,
        };
        if same {
            return again;
        }
        current = again;
    }
}

/// Reads the file on a blocking-pool thread, never on the runtime's own.
async fn read(path: &Path) -> io::Result<String> {
    tokio::fs::read_to_string(path).await
}
