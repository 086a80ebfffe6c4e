//! State of one client connection that its timers, its request handlers and its socket all share.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use atomic_waker::AtomicWaker;
use bytes::Bytes;
use pin_project_lite::pin_project;
use tideway_config::ProxySettings;
use tideway_core::{App, ConnectionTimeouts, ConnectionTimes, Timestamp, jittered_age};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::broadcast::Broadcast;
use crate::clock::RuntimeClock;
use crate::message::head::Hop;
use crate::stream::ClientStream;

/// Sentinel for "limit off" in the millisecond atomics below.
const OFF: u64 = u64::MAX;

/// Timing and ownership of one client connection.
///
/// Shared through an `Arc` because three parties update it: the socket wrapper (activity), the request
/// handlers (requests in flight, which may run on other tasks for HTTP/2) and the connection's own task,
/// which reads it to decide when the connection must close. Plain atomics keep every update lock-free.
pub(crate) struct ClientConn {
    clock: RuntimeClock,
    peer: SocketAddr,
    /// The connection came over TLS.
    https: bool,
    accepted: Timestamp,
    age_jitter: f64,
    tracks_heads: bool,
    last_activity: AtomicU64,
    in_flight: AtomicU32,
    kept_alive_since: AtomicU64,
    head_started: AtomicU64,
    write_blocked_since: AtomicU64,
    /// When the exchange in flight wants to be looked at again (ms + 1; 0: never): the watch's timer wakes
    /// the connection's task then, so an exchange needs no timer of its own.
    check_at: AtomicU64,
    last_request_ended: AtomicWaker,
    max_age_ms: AtomicU64,
    inactive_ms: AtomicU64,
    closing: AtomicBool,
    app: ArcSwapOption<App>,
    /// The eviction signal of the replica the request in flight is on, and when the watch subscribes to it.
    serving_on: Mutex<Option<(Arc<Broadcast>, Timestamp)>>,
    /// Counts changes of `serving_on`, so the watch reads it only when it changed.
    serving_changes: AtomicU64,
}

/// Marks the request in flight as being on a replica until dropped.
pub(crate) struct OnReplica<'a>(&'a ClientConn);

/// Marks a request in flight on its client connection until dropped (when its response body ends or is
/// abandoned), so the keep-alive and slow-header limits only apply between requests.
pub(crate) struct InFlight(Arc<ClientConn>);

pin_project! {
    /// An HTTP/2 client socket: it records when writes stall (the send timeout), and replays the first
    /// bytes, read to tell HTTP/2 from HTTP/1. Activity is recorded per stream instead (see
    /// [`ClientConn::on_data`]).
    pub(crate) struct TrackedStream {
        #[pin]
        stream: ClientStream,
        conn: Arc<ClientConn>,
        replay: Bytes,
    }
}

impl ClientConn {
    /// A connection from `peer` (over TLS if `https`), accepted at `accepted`. `tracks_heads` is true for HTTP/1, where bytes
    /// that arrive while no request is in flight start a request head (the slow-header limit); the first
    /// head counts from the accept, so reading the first bytes does not extend its limit.
    pub(crate) fn new(
        clock: RuntimeClock,
        peer: SocketAddr,
        https: bool,
        tracks_heads: bool,
        accepted: Timestamp,
    ) -> Arc<Self> {
        let now = clock.now();
        Arc::new(ClientConn {
            clock,
            peer,
            https,
            accepted,
            age_jitter: fastrand::f64(),
            tracks_heads,
            last_activity: AtomicU64::new(now.as_millis()),
            in_flight: AtomicU32::new(0),
            kept_alive_since: AtomicU64::new(now.as_millis()),
            head_started: AtomicU64::new(if tracks_heads {
                accepted.as_millis().saturating_add(1)
            } else {
                0
            }),
            write_blocked_since: AtomicU64::new(0),
            check_at: AtomicU64::new(0),
            last_request_ended: AtomicWaker::new(),
            max_age_ms: AtomicU64::new(OFF),
            inactive_ms: AtomicU64::new(OFF),
            closing: AtomicBool::new(false),
            app: ArcSwapOption::empty(),
            serving_on: Mutex::new(None),
            serving_changes: AtomicU64::new(0),
        })
    }

    /// When the connection was accepted.
    pub(crate) fn accepted(&self) -> Timestamp {
        self.accepted
    }

    /// The client's address, for `X-Forwarded-For` and logs.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// How the connection's requests reached tideway, for the `X-Forwarded-*` fields.
    pub(crate) fn hop(&self) -> Hop {
        Hop {
            client: self.peer.ip(),
            https: self.https,
        }
    }

    /// Whether the connection came over TLS: `redirect_https`, HSTS and `Secure` cookies follow it.
    pub(crate) fn is_https(&self) -> bool {
        self.https
    }

    /// The app of the latest routed request: its policy governs the connection's age and inactivity, and
    /// closes are counted against it.
    pub(crate) fn app(&self) -> Option<Arc<App>> {
        self.app.load_full()
    }

    /// Records that tideway started closing this connection, so that requests it cuts short are not
    /// counted as clients going away.
    pub(crate) fn mark_closing(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// True once tideway started closing the connection.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Jitter drawn once for this connection, so its age limit is stable whatever app it talks to.
    pub(crate) fn age_jitter(&self) -> f64 {
        self.age_jitter
    }

    /// Records a request starting; `app` is where it was routed, if anywhere.
    pub(crate) fn request_started(self: &Arc<Self>, app: Option<&Arc<App>>) -> InFlight {
        if let Some(app) = app {
            let policy = app.policy();
            let age = policy
                .max_connection_age
                .map(|age| jittered_age(age, self.age_jitter));
            self.max_age_ms.store(millis_or_off(age), Ordering::Relaxed);
            self.inactive_ms
                .store(millis_or_off(policy.inactive_timeout), Ordering::Relaxed);
            let current = self.app.load();
            if !current.as_ref().is_some_and(|a| Arc::ptr_eq(a, app)) {
                self.app.store(Some(Arc::clone(app)));
            }
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_started.store(0, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Records that the request in flight is on the replica whose eviction `evicted` signals, until the
    /// returned mark is dropped: the connection then closes gracefully if that replica is evicted.
    ///
    /// Replicas being drained take no new requests, so a request still in flight when one is evicted has
    /// lasted the drain timeout at least: the watch subscribes to the signal (which takes its lock) only
    /// once the request has lasted that long or a second, whichever is shorter — never for the short
    /// requests that make up most traffic.
    pub(crate) fn serving_on(&self, evicted: &Arc<Broadcast>, drain_timeout: Duration) -> OnReplica<'_> {
        let subscribe_at = self
            .clock
            .now()
            .saturating_add(drain_timeout.min(Duration::from_secs(1)));
        *self.serving_on.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Arc::clone(evicted), subscribe_at));
        self.serving_changes.fetch_add(1, Ordering::Release);
        OnReplica(self)
    }

    /// The replica signal the request in flight is on, if it changed since `seen` (which is updated).
    pub(crate) fn serving_on_since(&self, seen: &mut u64) -> Option<Option<(Arc<Broadcast>, Timestamp)>> {
        let changes = self.serving_changes.load(Ordering::Acquire);
        if changes == *seen {
            return None;
        }
        *seen = changes;
        Some(
            self.serving_on
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }

    /// Requests in flight now: closes of the connection count against its app only if some are.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Wakes the connection's task when its last request in flight ends, wherever that happens (HTTP/2
    /// streams end on tasks of their own), so it re-arms its keep-alive timer.
    pub(crate) fn register_keepalive_waker(&self, waker: &Waker) {
        self.last_request_ended.register(waker);
    }

    /// The connection's clock readings, for [`ConnectionTimeouts::evaluate`].
    pub(crate) fn times(&self) -> ConnectionTimes {
        let between_requests = self.in_flight.load(Ordering::SeqCst) == 0;
        let head_started = self.head_started.load(Ordering::Relaxed);
        ConnectionTimes {
            started: self.accepted,
            last_activity: Timestamp::from_millis(self.last_activity.load(Ordering::Relaxed)),
            kept_alive_since: between_requests
                .then(|| Timestamp::from_millis(self.kept_alive_since.load(Ordering::SeqCst))),
            head_started: (head_started != 0).then(|| Timestamp::from_millis(head_started - 1)),
            write_blocked_since: match self.write_blocked_since.load(Ordering::Relaxed) {
                0 => None,
                since => Some(Timestamp::from_millis(since - 1)),
            },
        }
    }

    /// The limits in force: the app's age and inactivity plus the listener's keep-alive, header and send
    /// limits.
    pub(crate) fn timeouts(&self, settings: &ProxySettings) -> ConnectionTimeouts {
        ConnectionTimeouts {
            max_age: off_or_millis(self.max_age_ms.load(Ordering::Relaxed)),
            inactive: off_or_millis(self.inactive_ms.load(Ordering::Relaxed)),
            keepalive: Some(settings.keepalive_timeout),
            header_read: self.tracks_heads.then_some(settings.header_read_timeout),
            send: Some(settings.send_timeout),
        }
    }

    /// Asks the connection's watch to wake its task at `at` (or never, with `None`); a later call replaces
    /// the time.
    pub(crate) fn check_at(&self, at: Option<Timestamp>) {
        let at = at.map_or(0, |at| at.as_millis().saturating_add(1));
        self.check_at.store(at, Ordering::Relaxed);
    }

    /// When the exchange in flight wants its task woken, if it does.
    pub(crate) fn check_due(&self) -> Option<Timestamp> {
        match self.check_at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Timestamp::from_millis(at - 1)),
        }
    }

    /// The connection's clock.
    pub(crate) fn clock(&self) -> RuntimeClock {
        self.clock
    }

    /// Records bytes read from the client: activity, and the start of a request head if none is in flight.
    pub(crate) fn on_read(&self) {
        let now = self.clock.now().as_millis();
        self.last_activity.store(now, Ordering::Relaxed);
        if self.tracks_heads
            && self.in_flight.load(Ordering::SeqCst) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now + 1, Ordering::Relaxed);
        }
    }

    /// Records application data moving on an HTTP/2 connection (a request, body data either way): only
    /// that counts as activity there, not the protocol's own frames (PING, WINDOW_UPDATE, SETTINGS).
    pub(crate) fn on_data(&self) {
        self.last_activity
            .store(self.clock.now().as_millis(), Ordering::Relaxed);
    }

    /// Records that the client's socket took bytes again after a stall: the send timeout is off.
    pub(crate) fn on_unblocked(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) != 0 {
            self.write_blocked_since.store(0, Ordering::Relaxed);
        }
    }

    /// Records bytes written to the client.
    pub(crate) fn on_write(&self) {
        self.on_data();
        self.on_unblocked();
    }

    /// Records that the client's socket takes no more bytes for now (the start of a send timeout).
    pub(crate) fn on_write_blocked(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) == 0 {
            let now = self.clock.now().as_millis();
            self.write_blocked_since.store(now + 1, Ordering::Relaxed);
        }
    }
}

impl Drop for OnReplica<'_> {
    fn drop(&mut self) {
        *self.0.serving_on.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.0.serving_changes.fetch_add(1, Ordering::Release);
    }
}

impl InFlight {
    /// The connection the request is on.
    pub(crate) fn client(&self) -> &ClientConn {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let conn = &self.0;
        if conn.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            conn.kept_alive_since
                .store(conn.clock.now().as_millis(), Ordering::SeqCst);
            conn.last_request_ended.wake();
        }
    }
}

impl TrackedStream {
    /// Wraps a client socket; `replay` holds bytes already read from it, delivered first.
    pub(crate) fn new(stream: ClientStream, conn: Arc<ClientConn>, replay: Bytes) -> Self {
        TrackedStream { stream, conn, replay }
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            return Poll::Ready(Ok(()));
        }
        this.stream.poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let written = match this.stream.poll_write(cx, buf) {
            Poll::Pending => {
                this.conn.on_write_blocked();
                return Poll::Pending;
            }
            Poll::Ready(result) => result?,
        };
        if written > 0 {
            this.conn.on_unblocked();
        }
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let written = match this.stream.poll_write_vectored(cx, bufs) {
            Poll::Pending => {
                this.conn.on_write_blocked();
                return Poll::Pending;
            }
            Poll::Ready(result) => result?,
        };
        if written > 0 {
            this.conn.on_unblocked();
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

fn millis_or_off(d: Option<Duration>) -> u64 {
    d.map_or(OFF, |d| u64::try_from(d.as_millis()).unwrap_or(OFF - 1))
}

fn off_or_millis(ms: u64) -> Option<Duration> {
    (ms != OFF).then(|| Duration::from_millis(ms))
}
