//! Upgraded connections (WebSocket and other `Upgrade` tunnels): bytes pumped both ways between the raw
//! client and replica sockets, with the connection's seat held until either side closes.
//!
//! A quiet tunnel holds no buffer: reads go through a per-thread scratch buffer and are written on at once;
//! only bytes the destination cannot take yet are copied into a per-direction buffer, freed when drained.
//! WebSocket tunnels follow the frame structure so that a timeout, a drain or a shutdown closes them
//! gracefully: a close frame (1001, "going away") is injected toward each side at a frame boundary, then
//! the sockets are closed once the peers answer, or after `close_grace` at the latest.

mod frames;

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use pin_project_lite::pin_project;
use tideway_core::{
    App, CloseReason, ConnectionTimeouts, ConnectionTimes, Replica, TimeoutVerdict, Timestamp,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tracing::info;

use crate::Side;
use crate::app_link::AppLink;
use crate::broadcast::{Broadcast, Subscription};
use crate::claim::Claim;
use crate::clock::RuntimeClock;
use crate::stream::ClientStream;
use crate::trace_log::Traced;
use frames::{FrameTracker, Seen, close_frame};

/// WebSocket close code 1001: the endpoint is going away (RFC 6455 §7.4.1).
const GOING_AWAY: u16 = 1001;
/// WebSocket close code 1011: the server met an unexpected condition (RFC 6455 §7.4.1) — sent to a client
/// whose replica vanished without closing, so that a browser reports a server error, not an abnormal
/// closure (1006).
const INTERNAL_ERROR: u16 = 1011;
/// Bytes read per system call; shared per thread, never per tunnel.
const SCRATCH_SIZE: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// Everything a tunnel needs once both sides agreed to switch protocols.
pub(crate) struct TunnelParts {
    /// The client's socket and bytes it sent after its upgrade request that HTTP parsing already read.
    pub(crate) client: (ClientStream, Bytes),
    /// The replica's socket and bytes it sent after its `101` that HTTP parsing already read.
    pub(crate) upstream: (TcpStream, Bytes),
    /// True for `Upgrade: websocket`: closes go through the closing handshake.
    pub(crate) websocket: bool,
    /// The connection's seat, held until the tunnel ends.
    pub(crate) claim: Claim,
    /// Its line in the trace log, written when the seat is given back.
    pub(crate) trace: Option<Traced>,
    /// The data plane's state of the seat's app: where the tunnel's duration is recorded.
    pub(crate) app_link: Arc<AppLink>,
    /// Age and inactivity limits of the app.
    pub(crate) timeouts: ConnectionTimeouts,
    /// How long the peers get to answer a close before the sockets are dropped.
    pub(crate) close_grace: Duration,
    /// How long a side may leave bytes unread before the tunnel is dropped.
    pub(crate) send_timeout: Duration,
    /// Whether the tunnel's close is written to the access log.
    pub(crate) access_log: bool,
    /// Raised when tideway shuts down or the replica's drain runs out of time: the tunnel closes with
    /// reason `drain`.
    pub(crate) signals: [Option<Arc<Broadcast>>; 2],
}

/// One direction of a tunnel: bytes read from one socket and written to the other.
#[derive(Default)]
struct Flow {
    pending: Vec<u8>,
    sent: usize,
    /// The sink took bytes it has not sent on yet (a TLS session's records) and cannot for now.
    unflushed: bool,
    forwarded: u64,
    blocked_since: Option<Timestamp>,
    frames: Option<FrameTracker>,
    source_done: bool,
    sink_shut: bool,
    close: Injection,
    /// A close frame from the source went through.
    saw_close: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Injection {
    /// Bytes flow normally.
    #[default]
    None,
    /// Close at the next frame boundary.
    Wanted,
    /// Closed: the close frame (if any) is queued, further bytes from the source are dropped.
    Sent,
}

/// A failed read or write, and on which side.
struct Broken(Side);

struct Tunnel {
    /// Held until either side closes: a tunnel in its closing handshake no longer occupies the replica.
    claim: Option<Claim>,
    /// The connection's trace line, written when `claim` is released.
    trace: Option<Traced>,
    client: ClientStream,
    upstream: TcpStream,
    to_upstream: Flow,
    to_client: Flow,
    clock: RuntimeClock,
    timeouts: ConnectionTimeouts,
    started: Timestamp,
    last_activity: Timestamp,
    closing: Option<(CloseReason, Timestamp)>,
    first_to_close: Option<Side>,
    close_grace: Duration,
    websocket: bool,
    client_first: bool,
}

pin_project! {
    /// A tunnel as a task of its own: pumped until both sides closed (or were closed), then its seat is
    /// released and its close counted and logged. A plain struct rather than an `async` block, so a quiet
    /// tunnel costs exactly its state.
    pub(crate) struct TunnelTask {
        tunnel: Tunnel,
        #[pin]
        timer: Sleep,
        #[pin]
        shutdown: Option<Subscription>,
        #[pin]
        evicted: Option<Subscription>,
        app: Arc<App>,
        app_link: Arc<AppLink>,
        replica: Arc<Replica>,
        opened: tokio::time::Instant,
        access_log: bool,
    }
}

impl TunnelTask {
    /// A tunnel over `parts`.
    pub(crate) fn new(parts: TunnelParts, clock: RuntimeClock) -> Self {
        let TunnelParts {
            client,
            upstream,
            websocket,
            claim,
            trace,
            app_link,
            mut timeouts,
            close_grace,
            send_timeout,
            access_log,
            signals: [shutdown, evicted],
        } = parts;
        timeouts.send = Some(send_timeout);
        let app = Arc::clone(claim.app());
        let replica = Arc::clone(claim.replica());
        let now = clock.now();
        let mut tunnel = Tunnel {
            claim: Some(claim),
            trace,
            client: client.0,
            upstream: upstream.0,
            to_upstream: Flow::new(websocket),
            to_client: Flow::new(websocket),
            clock,
            timeouts,
            started: now,
            last_activity: now,
            closing: None,
            first_to_close: None,
            close_grace,
            websocket,
            client_first: true,
        };
        // Bytes read past the upgrade are copied out, so the buffers they sit in do not live as long as
        // the tunnel.
        tunnel.to_upstream.preload(&client.1);
        tunnel.to_client.preload(&upstream.1);
        TunnelTask {
            tunnel,
            timer: tokio::time::sleep_until(clock.instant(now)),
            shutdown: shutdown.map(|signal| signal.subscribe()),
            evicted: evicted.map(|signal| signal.subscribe()),
            app,
            app_link,
            replica,
            opened: tokio::time::Instant::now(),
            access_log,
        }
    }
}

impl Future for TunnelTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let drain = [this.shutdown, this.evicted]
            .into_iter()
            .any(|signal| signal.as_pin_mut().is_some_and(|s| s.poll(cx).is_ready()));
        let reason = ready!(this.tunnel.poll(cx, this.timer, drain));
        this.tunnel.end_connection(reason);
        let duration = this.opened.elapsed();
        this.app_link.metrics.tunnel(duration);
        if *this.access_log {
            info!(
                target: "tideway::access",
                app = this.app.name(),
                replica = this.replica.name(),
                kind = if this.tunnel.websocket { "websocket" } else { "tunnel" },
                duration_ms = duration.as_secs_f64() * 1_000.0,
                bytes_in = this.tunnel.to_upstream.forwarded,
                bytes_out = this.tunnel.to_client.forwarded,
                reason = reason.as_str(),
                "connection closed"
            );
        }
        Poll::Ready(())
    }
}

impl Tunnel {
    fn poll(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>, drain: bool) -> Poll<CloseReason> {
        if self.closing.is_none() && drain {
            self.start_close(CloseReason::Drain);
        }
        loop {
            let seen = match self.pump(cx) {
                Ok(seen) => seen,
                Err(Broken(side)) => return Poll::Ready(self.outcome(Some(side))),
            };
            let now = self.clock.now();
            if seen.0.data || seen.1.data {
                self.last_activity = now;
            }
            // Whoever sends a close frame or ends its stream first is who closed the tunnel.
            let client_ended = seen.0.close || self.to_upstream.source_done;
            let upstream_ended = seen.1.close || self.to_client.source_done;
            if self.first_to_close.is_none() {
                if client_ended {
                    self.first_to_close = Some(Side::Client);
                } else if upstream_ended {
                    self.first_to_close = Some(Side::Replica);
                }
            }
            if self.to_upstream.finished() && self.to_client.finished() {
                return Poll::Ready(self.outcome(None));
            }
            // A WebSocket that starts its closing handshake (or loses a side) is over as a connection: its
            // seat is free, and the handshake must complete within the grace period. A raw tunnel may be
            // half-closed on purpose (send, then wait for the answer), so it lasts until both sides end.
            let handshake =
                seen.0.close || seen.1.close || (self.websocket && (client_ended || upstream_ended));
            if handshake && self.closing.is_none() {
                let reason = self.outcome(None);
                self.end_connection(reason);
                self.closing = Some((reason, now.saturating_add(self.close_grace)));
            }
            for flow in [&mut self.to_upstream, &mut self.to_client] {
                let idle = flow.pending.is_empty() && !flow.unflushed;
                flow.blocked_since = match (idle, flow.blocked_since) {
                    (true, _) => None,
                    (false, None) => Some(now),
                    (false, since) => since,
                };
            }
            let due = match self.closing {
                Some((_, hard_deadline)) => hard_deadline,
                None => match self.timeouts.evaluate(&self.times(), now) {
                    TimeoutVerdict::Open { next: None } => return Poll::Pending,
                    TimeoutVerdict::Open { next: Some(next) } => next,
                    TimeoutVerdict::Close(reason) => {
                        self.start_close(reason);
                        continue;
                    }
                    // A side left bytes unread for send_timeout: no close frame would reach it either.
                    TimeoutVerdict::Abort => {
                        let stuck = if self.to_client.blocked_since.is_some() {
                            Side::Client
                        } else {
                            Side::Replica
                        };
                        return Poll::Ready(self.outcome(Some(stuck)));
                    }
                },
            };
            if due <= now {
                return Poll::Ready(self.outcome(None));
            }
            // Activity pushes the inactivity deadline later on every read; re-arming the timer each time
            // would cost a timer-wheel update per read. Instead a timer armed too early fires, finds
            // nothing due and is re-armed once.
            let at = self.clock.instant(due);
            let armed = timer.deadline();
            if at < armed || armed <= self.clock.instant(now) {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Pumps both directions; which goes first alternates, so a saturated one cannot starve the other.
    fn pump(&mut self, cx: &mut Context<'_>) -> Result<(Seen, Seen), Broken> {
        self.client_first = !self.client_first;
        SCRATCH.with_borrow_mut(|scratch| {
            if self.client_first {
                let up = self.pump_to_upstream(cx, scratch)?;
                Ok((up, self.pump_to_client(cx, scratch)?))
            } else {
                let down = self.pump_to_client(cx, scratch)?;
                Ok((self.pump_to_upstream(cx, scratch)?, down))
            }
        })
    }

    fn pump_to_upstream(&mut self, cx: &mut Context<'_>, scratch: &mut [u8]) -> Result<Seen, Broken> {
        self.to_upstream
            .pump(cx, &mut self.client, &mut self.upstream, true, scratch)
            .map_err(|source| Broken(if source { Side::Client } else { Side::Replica }))
    }

    fn pump_to_client(&mut self, cx: &mut Context<'_>, scratch: &mut [u8]) -> Result<Seen, Broken> {
        self.to_client
            .pump(cx, &mut self.upstream, &mut self.client, false, scratch)
            .map_err(|source| Broken(if source { Side::Replica } else { Side::Client }))
    }

    fn times(&self) -> ConnectionTimes {
        ConnectionTimes {
            started: self.started,
            last_activity: self.last_activity,
            kept_alive_since: None,
            head_started: None,
            write_blocked_since: [self.to_upstream.blocked_since, self.to_client.blocked_since]
                .into_iter()
                .flatten()
                .min(),
        }
    }

    /// The connection this tunnel counted for ends: its seat is released and its close counted, once.
    fn end_connection(&mut self, reason: CloseReason) {
        if let Some(claim) = self.claim.take() {
            claim.app().stats().record_close(reason);
        }
        self.trace.take();
    }

    /// Starts a graceful close initiated by tideway, bounded by the grace period.
    fn start_close(&mut self, reason: CloseReason) {
        let hard_deadline = self.clock.now().saturating_add(self.close_grace);
        self.closing = Some((reason, hard_deadline));
        for flow in [&mut self.to_upstream, &mut self.to_client] {
            if flow.close == Injection::None {
                flow.close = Injection::Wanted;
            }
        }
    }

    /// Why the tunnel ended: tideway's reason if it closed it, else whoever closed or failed first.
    fn outcome(&self, broken: Option<Side>) -> CloseReason {
        if let Some((reason, _)) = self.closing {
            return reason;
        }
        let side = self.first_to_close.or(broken).unwrap_or(Side::Client);
        match side {
            Side::Client => CloseReason::Client,
            Side::Replica => CloseReason::Upstream,
        }
    }
}

impl Flow {
    fn new(websocket: bool) -> Self {
        Flow {
            frames: websocket.then(FrameTracker::default),
            ..Flow::default()
        }
    }

    /// Queues bytes the HTTP layer read past the upgrade, following them through the frame structure.
    fn preload(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            if let Some(frames) = &mut self.frames {
                frames.advance(bytes, false);
            }
            self.pending.extend_from_slice(bytes);
        }
    }

    /// Source read to the end, everything delivered, destination shut: nothing more will happen here.
    fn finished(&self) -> bool {
        self.source_done && self.pending.is_empty() && self.sink_shut
    }

    fn at_boundary(&self) -> bool {
        self.frames.as_ref().is_none_or(FrameTracker::at_boundary)
    }

    /// Whether the source ending now is a replica gone without closing its WebSocket, which the client is
    /// then told with a close frame: this flow carries a WebSocket toward the client (`to_server` false),
    /// no close frame came through or was injected, and a frame can start here.
    fn tells_the_client_of_a_lost_replica(&self, to_server: bool) -> bool {
        !to_server
            && self.frames.is_some()
            && !self.saw_close
            && self.close == Injection::None
            && self.at_boundary()
    }

    /// The replica is gone: queue a close frame `1011` for the client, drop anything more, then shut.
    fn lost_replica(&mut self) {
        self.source_done = true;
        self.close = Injection::Sent;
        self.pending
            .extend_from_slice(&close_frame(INTERNAL_ERROR, "replica failed", None));
    }

    /// Sends on what the sink holds back, once the source has nothing more for now.
    fn flush(&mut self, cx: &mut Context<'_>, sink: &mut (impl AsyncWrite + Unpin)) -> Result<(), bool> {
        self.unflushed = match Pin::new(sink).poll_flush(cx) {
            Poll::Ready(Ok(())) => false,
            Poll::Ready(Err(_)) => return Err(false),
            Poll::Pending => true,
        };
        Ok(())
    }

    /// Moves bytes from `source` to `sink` until one of them would block. `to_server` is true when `sink` is
    /// the replica (injected close frames must then be masked). Errors say whether the source (`true`) or
    /// the sink (`false`) failed.
    fn pump(
        &mut self,
        cx: &mut Context<'_>,
        source: &mut (impl AsyncRead + Unpin),
        sink: &mut (impl AsyncWrite + Unpin),
        to_server: bool,
        scratch: &mut [u8],
    ) -> Result<Seen, bool> {
        let mut seen = Seen::default();
        loop {
            while self.sent < self.pending.len() {
                match Pin::new(&mut *sink).poll_write(cx, &self.pending[self.sent..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(false),
                    Poll::Ready(Ok(n)) => self.sent += n,
                    Poll::Pending => return Ok(seen),
                }
            }
            if !self.pending.is_empty() {
                self.pending = Vec::new();
                self.sent = 0;
            }
            if self.close == Injection::Wanted && (self.at_boundary() || self.source_done) {
                self.close = Injection::Sent;
                if self.frames.is_some() && self.at_boundary() {
                    let mask = to_server.then(|| fastrand::u32(..).to_be_bytes());
                    self.pending = close_frame(GOING_AWAY, "going away", mask);
                    continue;
                }
            }
            if (self.source_done || self.close == Injection::Sent) && !self.sink_shut {
                match Pin::new(&mut *sink).poll_shutdown(cx) {
                    Poll::Ready(_) => self.sink_shut = true,
                    Poll::Pending => return Ok(seen),
                }
            }
            if self.source_done {
                return Ok(seen);
            }
            let mut buf = ReadBuf::new(scratch);
            match Pin::new(&mut *source).poll_read(cx, &mut buf) {
                Poll::Pending => return self.flush(cx, sink).map(|()| seen),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Poll::Ready(Err(_)) if !self.tells_the_client_of_a_lost_replica(to_server) => {
                    return Err(true);
                }
                Poll::Ready(Err(_)) => {
                    self.lost_replica();
                    continue;
                }
                Poll::Ready(Ok(())) => {}
            }
            let read = buf.filled().len();
            if read == 0 {
                if self.tells_the_client_of_a_lost_replica(to_server) {
                    self.lost_replica();
                } else {
                    self.source_done = true;
                }
                continue;
            }
            let forward = match &mut self.frames {
                Some(frames) => {
                    let (taken, frame_seen) =
                        frames.advance(&scratch[..read], self.close == Injection::Wanted);
                    seen.data |= frame_seen.data;
                    seen.close |= frame_seen.close;
                    self.saw_close |= frame_seen.close;
                    taken
                }
                None => {
                    seen.data = true;
                    read
                }
            };
            if self.close == Injection::Sent {
                continue;
            }
            self.forwarded += forward as u64;
            let bytes = &scratch[..forward];
            match Pin::new(&mut *sink).poll_write(cx, bytes) {
                Poll::Ready(Ok(n)) if n == bytes.len() => {}
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(false),
                Poll::Ready(Ok(n)) => self.pending.extend_from_slice(&bytes[n..]),
                Poll::Pending => self.pending.extend_from_slice(bytes),
            }
        }
    }
}

#[cfg(test)]
mod tests;
