//! When to reload the configuration: on SIGHUP, and when the file's content changes.

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{error, info};

/// How often the file is read and compared. Reading a small file once a second costs next to nothing
/// and, unlike file-system events, also sees a Kubernetes ConfigMap update (an atomic swap of a symlinked
/// directory) and editors that replace the file.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why a reload happens, for the log.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Trigger {
    /// SIGHUP.
    Signal,
    /// The file's content changed.
    FileChanged,
}

/// Sends a trigger whenever the configuration should be reloaded; ends when the receiver is dropped.
pub(crate) fn watch(path: PathBuf) -> mpsc::Receiver<Trigger> {
    let (triggers, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut hangup = signal(SignalKind::hangup())
            .inspect_err(
                |error| error!(%error, "cannot listen for SIGHUP; reloads happen on file changes only"),
            )
            .ok();
        let mut last = std::fs::read(&path).ok();
        let mut ticks = tokio::time::interval(FILE_CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                Some(_) = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => {
                    last = std::fs::read(&path).ok();
                    Trigger::Signal
                }
                _ = ticks.tick() => {
                    let now = std::fs::read(&path).ok();
                    if now.is_none() || now == last {
                        continue;
                    }
                    last = now;
                    Trigger::FileChanged
                }
            };
            info!(trigger = ?trigger, "reloading the configuration");
            if triggers.send(trigger).await.is_err() {
                return;
            }
        }
    });
    receiver
}
