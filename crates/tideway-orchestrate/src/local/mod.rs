//! The local orchestrator (the embedded default): each replica is a child process on 127.0.0.1, started
//! with `PORT` in its environment, ready once its readiness check passes, stopped with SIGTERM then SIGKILL.
//!
//! Every replica runs under a small supervisor — `tideway supervise`, the same binary — which puts the app
//! in a process group of its own and kills that group when tideway asks, or when tideway is gone (the
//! supervisor's stdin is a pipe from tideway, closed by the kernel if tideway dies, even by SIGKILL). So no
//! replica, nor anything it started, outlives tideway.

mod output;
mod readiness;
mod replica;
mod supervise;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tideway_config::LocalSpec;
use tideway_core::{App, Clock, Replica, ReplicaId};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::orchestrator::{Orchestrator, ReplicaEvent};

pub use supervise::{exec, supervise};

/// Runs an app's replicas as supervised child processes.
pub struct LocalOrchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    app: Arc<App>,
    spec: LocalSpec,
    supervisor: PathBuf,
    events: mpsc::UnboundedSender<ReplicaEvent>,
    clock: Arc<dyn Clock>,
    /// The number the next replica is named with (`<app>-<n>`); shared with the app's earlier and later
    /// backends, so that a replica of a replaced backend, still draining, never shares a name with a new one.
    numbers: Arc<AtomicU32>,
    running: Mutex<HashMap<ReplicaId, Control>>,
    tasks: TaskTracker,
}

/// How tideway stops one running replica: closing its supervisor's stdin.
struct Control {
    stdin: Option<ChildStdin>,
    stopping: Arc<AtomicBool>,
}

impl LocalOrchestrator {
    /// A backend for `app` running `spec`, supervised by `supervisor` (the tideway executable), naming its
    /// replicas from `numbers` (starting at 1); replica events arrive on the returned receiver.
    pub fn new(
        app: Arc<App>,
        spec: LocalSpec,
        supervisor: PathBuf,
        clock: Arc<dyn Clock>,
        numbers: Arc<AtomicU32>,
    ) -> (Self, mpsc::UnboundedReceiver<ReplicaEvent>) {
        let (events, receiver) = mpsc::unbounded_channel();
        // A new local backend has no replicas yet: there is nothing to list first.
        let _ = events.send(ReplicaEvent::Listed);
        let inner = Arc::new(Inner {
            app,
            spec,
            supervisor,
            events,
            clock,
            numbers,
            running: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        });
        (LocalOrchestrator { inner }, receiver)
    }
}

impl Orchestrator for LocalOrchestrator {
    fn start(&self, count: u32) {
        for _ in 0..count {
            self.inner.tasks.spawn(replica::run(Arc::clone(&self.inner)));
        }
    }

    fn stop(&self, replica: &Arc<Replica>) {
        if let Some(control) = self.inner.running().get_mut(&replica.id()) {
            control.stop();
        }
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        for control in self.inner.running().values_mut() {
            control.stop();
        }
        let inner = Arc::clone(&self.inner);
        inner.tasks.close();
        // The supervisors kill what does not stop within stop_timeout; a little more covers their exit.
        let limit = inner.spec.stop_timeout.saturating_add(Duration::from_secs(5));
        Box::pin(async move {
            if tokio::time::timeout(limit, inner.tasks.wait()).await.is_err() {
                tracing::warn!(
                    app = inner.app.name(),
                    "replicas still running after stop_timeout"
                );
            }
        })
    }
}

impl Inner {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<ReplicaId, Control>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, event: ReplicaEvent) {
        // The scaling loop is gone only when tideway is stopping; nobody needs the event then.
        let _ = self.events.send(event);
    }
}

impl Control {
    fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stdin = None;
    }
}
