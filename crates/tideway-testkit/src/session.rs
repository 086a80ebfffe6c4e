//! Bookkeeping shared by a backend's tasks: counters, shutdown and abort signals.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// What a backend's tasks share with the [`crate::TestReplica`] handle.
pub(crate) struct State {
    /// Name reported in `x-backend`, the JSON echo and the WebSocket `whoami` reply.
    pub(crate) name: String,
    /// TCP connections accepted.
    pub(crate) accepted: AtomicUsize,
    /// WebSocket and raw-upgrade sessions currently open.
    pub(crate) open_sessions: AtomicUsize,
    /// Requests whose handler has produced a response.
    pub(crate) requests: AtomicUsize,
    /// Close codes received from WebSocket peers, in arrival order.
    pub(crate) close_codes: Mutex<Vec<u16>>,
    /// Bumped by `abort_sessions`: every session open at that moment drops its socket.
    pub(crate) abort: watch::Sender<u64>,
}

impl State {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            accepted: AtomicUsize::new(0),
            open_sessions: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            close_codes: Mutex::new(Vec::new()),
            abort: watch::channel(0).0,
        }
    }

    pub(crate) fn record_close_code(&self, code: u16) {
        self.close_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(code);
    }

    pub(crate) fn close_codes(&self) -> Vec<u16> {
        self.close_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Completes when the backend is dropped (its shutdown sender sends or goes away).
pub(crate) async fn stopped(mut shutdown: watch::Receiver<()>) {
    // Either outcome (a value sent or the sender dropped) means "stop".
    let _ = shutdown.changed().await;
}

/// One upgraded session (WebSocket or raw tunnel): counted in `open_sessions` for as long as it lives,
/// and told to end when the backend is dropped or `abort_sessions` is called.
pub(crate) struct Session {
    state: Arc<State>,
    shutdown: watch::Receiver<()>,
    abort: watch::Receiver<u64>,
}

impl Session {
    /// Counts the session right away (before the `101` goes out), so a client that has its `101`
    /// already sees it in `open_sessions`.
    pub(crate) fn open(state: Arc<State>, shutdown: watch::Receiver<()>) -> Self {
        state.open_sessions.fetch_add(1, Ordering::SeqCst);
        let abort = state.abort.subscribe();
        Self {
            state,
            shutdown,
            abort,
        }
    }

    /// The backend state, for session code that runs alongside [`Session::cancelled`].
    pub(crate) fn state(&self) -> Arc<State> {
        Arc::clone(&self.state)
    }

    /// Completes when the session must end abruptly: backend dropped or `abort_sessions` called.
    pub(crate) async fn cancelled(&mut self) {
        tokio::select! {
            () = stopped(self.shutdown.clone()) => {}
            _ = self.abort.changed() => {}
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.state.open_sessions.fetch_sub(1, Ordering::SeqCst);
    }
}
