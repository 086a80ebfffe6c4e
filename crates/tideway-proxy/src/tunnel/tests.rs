//! The tunnel's timers under paused time: exact deadlines, frame-boundary closes, jitter, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tideway_core::{Admission, App, Policy, Replica, ReplicaState, jittered_age};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::frames::tests::frame;
use super::*;
use crate::metrics::ProxyMetrics;

const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

/// The two outer ends of a tunnel under test, as the client and the replica see it.
struct Ends {
    client: TcpStream,
    replica: TcpStream,
    app: Arc<App>,
    shutdown: Arc<Broadcast>,
    tunnel: JoinHandle<()>,
}

async fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let outer = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (inner, _) = listener.accept().await.expect("accept");
    (outer, inner)
}

async fn tunnel(timeouts: ConnectionTimeouts, websocket: bool) -> Ends {
    let clock = RuntimeClock::new();
    let app = App::new("t", Policy::default(), Arc::new(clock));
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    app.set_replicas(vec![Arc::new(Replica::new(
        "r",
        addr,
        ReplicaState::Ready,
        clock.now(),
    ))]);
    let Admission::Seated(seat) = app.admit() else {
        panic!("an empty replica has room");
    };
    let (client, client_inner) = socket_pair().await;
    let (replica, replica_inner) = socket_pair().await;
    let shutdown = Arc::new(Broadcast::default());
    let parts = TunnelParts {
        client: (crate::stream::ClientStream::Plain(client_inner), Bytes::new()),
        upstream: (replica_inner, Bytes::new()),
        websocket,
        claim: Claim::Own(seat),
        trace: None,
        app_link: Arc::new(AppLink::new(
            ProxyMetrics::register(&prometheus::Registry::new())
                .expect("metrics")
                .for_app("t"),
        )),
        timeouts,
        close_grace: Duration::from_secs(5),
        send_timeout: Duration::from_secs(60),
        access_log: false,
        signals: [Some(Arc::clone(&shutdown)), None],
    };
    let tunnel = tokio::spawn(TunnelTask::new(parts, clock));
    Ends {
        client,
        replica,
        app,
        shutdown,
        tunnel,
    }
}

/// Reads one frame: (opcode, unmasked payload, whether it was masked).
async fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>, bool) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.expect("a frame header");
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            stream.read_exact(&mut l).await.expect("length");
            usize::from(u16::from_be_bytes(l))
        }
        127 => panic!("test frames are short"),
        n => usize::from(n),
    };
    let mut key = [0u8; 4];
    if masked {
        stream.read_exact(&mut key).await.expect("mask key");
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.expect("payload");
    if masked {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i % 4]);
    }
    (head[0] & 0x0f, payload, masked)
}

fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn pings_do_not_postpone_inactivity_but_data_does() {
    let timeouts = ConnectionTimeouts {
        inactive: Some(secs(60)),
        ..ConnectionTimeouts::default()
    };
    let mut ends = tunnel(timeouts, true).await;

    let data = frame(0x1, true, b"hello", MASK);
    ends.client.write_all(&data).await.expect("data");
    let mut got = vec![0u8; data.len()];
    ends.replica.read_exact(&mut got).await.expect("forwarded");
    let last_data = Instant::now();
    for _ in 0..5 {
        tokio::time::sleep(secs(10)).await;
        ends.client
            .write_all(&frame(0x9, true, b"p", MASK))
            .await
            .expect("ping");
        assert_eq!(read_frame(&mut ends.replica).await.0, 0x9);
        ends.replica
            .write_all(&frame(0xA, true, b"p", None))
            .await
            .expect("pong");
        assert_eq!(read_frame(&mut ends.client).await.0, 0xA);
    }
    let (opcode, payload, masked) = read_frame(&mut ends.client).await;
    assert_eq!((opcode, close_code(&payload), masked), (0x8, 1001, false));
    let waited = last_data.elapsed();
    assert!(
        waited >= secs(60) && waited < secs(61),
        "closed {waited:?} after the last data frame"
    );
    let (opcode, payload, masked) = read_frame(&mut ends.replica).await;
    assert_eq!(
        (opcode, close_code(&payload), masked),
        (0x8, 1001, true),
        "frames to a server are masked"
    );

    drop((ends.client, ends.replica));
    ends.tunnel.await.expect("tunnel task");
    assert_eq!(ends.app.connections(), 0);
    assert_eq!(ends.app.stats().closed(CloseReason::Inactive), 1);
}

#[tokio::test(start_paused = true)]
async fn close_frames_wait_for_the_frame_in_flight() {
    let timeouts = ConnectionTimeouts {
        max_age: Some(secs(30)),
        ..ConnectionTimeouts::default()
    };
    let mut ends = tunnel(timeouts, true).await;

    let message = frame(0x2, true, &[7u8; 1000], MASK);
    let (first, second) = message.split_at(300);
    ends.client.write_all(first).await.expect("half a frame");
    let mut got = vec![0u8; first.len()];
    ends.replica.read_exact(&mut got).await.expect("forwarded");

    // The client hears at once; the replica only after the frame it is receiving is complete.
    let (opcode, payload, _) = read_frame(&mut ends.client).await;
    assert_eq!((opcode, close_code(&payload)), (0x8, 1001));
    ends.client.write_all(second).await.expect("rest of the frame");
    ends.client
        .write_all(&frame(0x1, true, b"after close", MASK))
        .await
        .expect("late data");
    let mut rest = vec![0u8; second.len()];
    ends.replica
        .read_exact(&mut rest)
        .await
        .expect("the rest arrives whole");
    assert_eq!(rest, second);
    let (opcode, payload, masked) = read_frame(&mut ends.replica).await;
    assert_eq!((opcode, close_code(&payload), masked), (0x8, 1001, true));

    // Both peers answer and close; the late data frame never reached the replica.
    ends.client
        .write_all(&frame(0x8, true, &1001u16.to_be_bytes(), MASK))
        .await
        .expect("close reply");
    ends.replica
        .write_all(&frame(0x8, true, &1001u16.to_be_bytes(), None))
        .await
        .expect("close reply");
    let mut tail = Vec::new();
    ends.replica.read_to_end(&mut tail).await.expect("end of stream");
    assert!(tail.is_empty(), "nothing after the close frame: {tail:?}");
    drop((ends.client, ends.replica));
    ends.tunnel.await.expect("tunnel task");
    assert_eq!(ends.app.stats().closed(CloseReason::MaxAge), 1);
}

#[tokio::test(start_paused = true)]
async fn age_is_jittered_within_ten_percent() {
    let age = jittered_age(secs(100), fastrand::f64());
    let timeouts = ConnectionTimeouts {
        max_age: Some(age),
        ..ConnectionTimeouts::default()
    };
    let started = Instant::now();
    let mut ends = tunnel(timeouts, true).await;
    let (opcode, _, _) = read_frame(&mut ends.client).await;
    assert_eq!(opcode, 0x8);
    let closed_after = started.elapsed();
    assert!(
        closed_after >= secs(90) && closed_after <= secs(111),
        "{closed_after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn silent_peers_are_cut_after_the_grace_period() {
    let mut ends = tunnel(ConnectionTimeouts::default(), true).await;
    ends.shutdown.raise();
    assert_eq!(read_frame(&mut ends.client).await.0, 0x8);
    let asked = Instant::now();
    // The client never answers; the replica never closes. Grace is 5 s.
    ends.tunnel.await.expect("tunnel task");
    let waited = asked.elapsed();
    assert!(waited >= secs(4) && waited <= secs(6), "{waited:?}");
    assert_eq!(ends.app.stats().closed(CloseReason::Drain), 1);
    assert_eq!(ends.app.connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn raw_tunnels_half_close_and_end_when_both_sides_do() {
    let mut ends = tunnel(ConnectionTimeouts::default(), false).await;
    ends.client.write_all(b"bytes").await.expect("write");
    let mut got = [0u8; 5];
    ends.replica.read_exact(&mut got).await.expect("forwarded");
    ends.client.shutdown().await.expect("client done sending");
    let mut rest = Vec::new();
    ends.replica
        .read_to_end(&mut rest)
        .await
        .expect("the replica sees end of stream");
    // Half-closing a raw tunnel is not closing it: an answer long after close_grace still arrives.
    tokio::time::sleep(secs(30)).await;
    assert_eq!(ends.app.connections(), 1, "the tunnel still holds its seat");
    ends.replica
        .write_all(b"late reply")
        .await
        .expect("the other direction still flows");
    let mut reply = [0u8; 10];
    ends.client.read_exact(&mut reply).await.expect("reply");
    assert_eq!(&reply, b"late reply");
    drop(ends.replica);
    ends.tunnel.await.expect("tunnel task");
    assert_eq!(ends.app.stats().closed(CloseReason::Client), 1);
}
