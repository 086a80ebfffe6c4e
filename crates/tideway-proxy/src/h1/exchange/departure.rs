//! Noticing a client that leaves while its request waits: for a seat, or for a replica that takes none
//! of its body.

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::AsFd;
use std::pin::pin;
use std::task::Poll;

use tokio::io::{AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::WriteHalf;

use super::BodyEnd;
use crate::stream::{ClientReader, ClientSocket, ClientStream};

/// Waits for `wait` on behalf of a client that has sent its whole request: `None` if it closes its
/// connection first.
pub(super) async fn until_client_leaves<F: Future>(
    stream: &ClientStream,
    request_complete: bool,
    wait: F,
) -> Option<F::Output> {
    if !request_complete {
        return Some(wait.await);
    }
    // The wait first: a seat free at once costs no system call.
    tokio::select! {
        biased;
        output = wait => Some(output),
        () = departure(stream) => None,
    }
}

/// Completes once the client has closed its connection; never while it is there. The first byte it sends
/// tells, without being read: none (the end) means it left; a byte of a pipelined request means it is
/// still there. Over TLS a byte may be a closing alert instead, so once bytes come the socket's end is
/// watched — only then, so that a quiet client costs no second registration of its socket.
pub(super) async fn departure(client: &impl ClientSocket) {
    let mut byte = [0u8; 1];
    let peeked =
        poll_fn(|cx| client.with_socket(|socket| socket.poll_peek(cx, &mut ReadBuf::new(&mut byte))));
    match peeked.await {
        Ok(0) | Err(_) => {}
        Ok(_) if !client.is_tls() => std::future::pending().await,
        Ok(_) => match client.with_socket(departure_watch) {
            Some(watch) => client_leaves(&watch).await,
            None => std::future::pending().await,
        },
    }
}

/// Writes request body bytes to the replica. While the replica takes none, the client's socket is watched
/// for its end — past bytes still unread, which a read could not see — so a client that leaves frees its
/// seat even when the replica never reads.
pub(super) async fn write_unless_client_leaves(
    upstream: &mut WriteHalf<'_>,
    bytes: &[u8],
    client: &ClientReader<'_>,
) -> Result<(), BodyEnd> {
    let mut write = pin!(upstream.write_all(bytes));
    let at_once = poll_fn(|cx| {
        Poll::Ready(match write.as_mut().poll(cx) {
            Poll::Ready(written) => Some(written),
            Poll::Pending => None,
        })
    })
    .await;
    let written = match (at_once, client.with_socket(departure_watch)) {
        (Some(written), _) => written,
        (None, Some(watch)) => tokio::select! {
            written = &mut write => written,
            () = client_leaves(&watch) => return Err(BodyEnd::ClientLeft),
        },
        (None, None) => write.await,
    };
    written.map_err(|_| BodyEnd::UpstreamFailed)
}

/// A second registration of the client's socket with the reactor, so that waiting on it for the client's
/// end leaves the readiness the body reads rely on untouched.
fn departure_watch(client: &TcpStream) -> Option<TcpStream> {
    let fd = client.as_fd().try_clone_to_owned().ok()?;
    TcpStream::from_std(std::net::TcpStream::from(fd)).ok()
}

/// Completes once the peer of `watch` has closed its side or reset the connection.
async fn client_leaves(watch: &TcpStream) {
    loop {
        match watch.ready(Interest::READABLE).await {
            Ok(ready) if !ready.is_read_closed() => {
                // More body bytes arrived, which the body relay reads in its time: wait for the next event.
                let _ = watch.try_io(Interest::READABLE, || {
                    Err::<(), _>(io::ErrorKind::WouldBlock.into())
                });
            }
            _ => return,
        }
    }
}
