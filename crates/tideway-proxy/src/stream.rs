//! A client's socket, plain or behind TLS: one type for everything the data plane does with a client
//! connection, so that HTTP/1.1, HTTP/2 and tunnels run the same way over `https://` as over `http://`.

use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio_rustls::server::TlsStream;

/// A TLS session over its socket. Behind a lock only so that an exchange can read the request body and
/// write the response at once (`split`); both halves are polled by the connection's one task, so the lock
/// is never contended.
type Tls = Mutex<TlsStream<TcpStream>>;

/// A client connection's byte stream.
pub(crate) enum ClientStream {
    /// `http://`: the socket itself.
    Plain(TcpStream),
    /// `https://`: a TLS session whose handshake is complete. Boxed: a TLS session is large, and plain
    /// connections should not pay for its room.
    Tls(Box<Tls>),
}

/// The reading half of a [`ClientStream`], borrowed for one exchange.
pub(crate) enum ClientReader<'a> {
    /// A plain socket's reading half.
    Plain(ReadHalf<'a>),
    /// The shared TLS session.
    Tls(&'a Tls),
}

/// The writing half of a [`ClientStream`], borrowed for one exchange.
pub(crate) enum ClientWriter<'a> {
    /// A plain socket's writing half.
    Plain(WriteHalf<'a>),
    /// The shared TLS session.
    Tls(&'a Tls),
}

fn locked(tls: &Tls) -> MutexGuard<'_, TlsStream<TcpStream>> {
    tls.lock().unwrap_or_else(PoisonError::into_inner)
}

fn owned(tls: &mut Tls) -> Pin<&mut TlsStream<TcpStream>> {
    Pin::new(tls.get_mut().unwrap_or_else(PoisonError::into_inner))
}

impl ClientStream {
    /// A TLS session whose handshake completed.
    pub(crate) fn tls(stream: TlsStream<TcpStream>) -> Self {
        ClientStream::Tls(Box::new(Mutex::new(stream)))
    }

    /// Ready once a read may return bytes, so that a buffer is only allocated for a client that sends.
    /// A TLS session may hold decrypted bytes its socket no longer signals: it is always worth a read.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            ClientStream::Plain(stream) => stream.poll_read_ready(cx),
            ClientStream::Tls(_) => Poll::Ready(Ok(())),
        }
    }

    /// Both halves, for an exchange that reads the request body while the response goes back.
    pub(crate) fn split(&mut self) -> (ClientReader<'_>, ClientWriter<'_>) {
        match self {
            ClientStream::Plain(stream) => {
                let (reader, writer) = stream.split();
                (ClientReader::Plain(reader), ClientWriter::Plain(writer))
            }
            ClientStream::Tls(tls) => (ClientReader::Tls(tls), ClientWriter::Tls(tls)),
        }
    }
}

/// What a client connection is beyond its bytes: for noticing that the client left.
pub(crate) trait ClientSocket {
    /// Whether the client came over TLS: `X-Forwarded-Proto`, `Secure` cookies and HSTS follow it, and
    /// its next bytes may be a closing alert rather than a request.
    fn is_tls(&self) -> bool;

    /// Runs `f` on the socket under the stream.
    fn with_socket<R>(&self, f: impl FnOnce(&TcpStream) -> R) -> R;
}

impl ClientSocket for ClientStream {
    fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    fn with_socket<R>(&self, f: impl FnOnce(&TcpStream) -> R) -> R {
        match self {
            ClientStream::Plain(stream) => f(stream),
            ClientStream::Tls(tls) => f(locked(tls).get_ref().0),
        }
    }
}

impl ClientSocket for ClientReader<'_> {
    fn is_tls(&self) -> bool {
        matches!(self, ClientReader::Tls(_))
    }

    fn with_socket<R>(&self, f: impl FnOnce(&TcpStream) -> R) -> R {
        match self {
            ClientReader::Plain(reader) => f(reader.as_ref()),
            ClientReader::Tls(tls) => f(locked(tls).get_ref().0),
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ClientStream::Tls(tls) => owned(tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            ClientStream::Tls(tls) => owned(tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            ClientStream::Tls(tls) => owned(tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(stream) => stream.is_write_vectored(),
            ClientStream::Tls(_) => true,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ClientStream::Tls(tls) => owned(tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ClientStream::Tls(tls) => owned(tls).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for ClientReader<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientReader::Plain(reader) => Pin::new(reader).poll_read(cx, buf),
            ClientReader::Tls(tls) => Pin::new(&mut *locked(tls)).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientWriter<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientWriter::Plain(writer) => Pin::new(writer).poll_write(cx, buf),
            ClientWriter::Tls(tls) => Pin::new(&mut *locked(tls)).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWriter::Plain(writer) => Pin::new(writer).poll_flush(cx),
            ClientWriter::Tls(tls) => Pin::new(&mut *locked(tls)).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWriter::Plain(writer) => Pin::new(writer).poll_shutdown(cx),
            ClientWriter::Tls(tls) => Pin::new(&mut *locked(tls)).poll_shutdown(cx),
        }
    }
}
