//! TLS termination: the HTTPS listener's handshakes, and the certificates they present.
//!
//! A handshake runs on a task of its own under `tls_handshake_timeout`, and at most `max_tls_handshakes`
//! run at once: past that the listener stops accepting, so a flood of handshakes waits in the kernel's
//! backlog instead of taking memory and the connections already served. A completed session is served by
//! the same engine as a plain connection — HTTP/2 when the client chose `h2` through ALPN, HTTP/1.1
//! (with its WebSocket upgrades) otherwise.

mod certificate;
mod sni;
mod validity;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::stream::ClientStream;

pub use certificate::{Certificate, CertificateError};
pub use sni::CertificateTable;

/// ALPN names, in tideway's order of preference.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The TLS setup every handshake shares: TLS 1.3 and 1.2 only, AEAD suites with ECDHE key exchange in the
/// server's order of preference, ALPN `h2` then `http/1.1`, stateless session tickets for resumption,
/// and the certificate picked per handshake from `certificates`.
pub(crate) fn server_config(
    certificates: Arc<ArcSwap<CertificateTable>>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(certificate::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(sni::Resolver(certificates)));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    config.ignore_client_order = true;
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(config)
}

/// Accepts TLS connections on `listener` until shutdown, each handshake on a task of its own.
pub(crate) async fn accept(shared: Arc<Shared>, listener: TcpListener, acceptor: TlsAcceptor) {
    let limit = shared.settings.load().max_tls_handshakes.max(1);
    let handshakes = Arc::new(Semaphore::new(limit));
    loop {
        let permit = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            permit = Arc::clone(&handshakes).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let handshake = handshake(Arc::clone(&shared), acceptor.clone(), stream, peer, permit);
                shared.tasks.spawn(handshake);
            }
            Err(error) => {
                warn!(%error, "accept failed on the TLS listener");
                // Out of file descriptors or memory: give connections time to close.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    info!("TLS listener closed");
}

/// Runs one handshake, then serves the connection by the protocol the client chose.
async fn handshake(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let accepted = shared.clock.now();
    crate::h1::no_delay(&stream, peer);
    let timeout = shared.settings.load().tls_handshake_timeout;
    let outcome = tokio::select! {
        () = shared.shutdown.cancelled() => return,
        outcome = tokio::time::timeout(timeout, acceptor.accept(stream)) => outcome,
    };
    drop(permit);
    let tls = match outcome {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            shared.metrics.tls_handshake("failed");
            debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake("timeout");
            debug!(%peer, ?timeout, "TLS handshake timed out");
            return;
        }
    };
    shared.metrics.tls_handshake("complete");
    let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    let stream = ClientStream::tls(tls);
    if h2 {
        crate::h2::serve(shared, stream, peer, accepted, bytes::Bytes::new()).await;
    } else {
        crate::h1::serve_tls(shared, stream, peer, accepted).await;
    }
}
