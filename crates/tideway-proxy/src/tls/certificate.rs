//! A certificate chain and its private key, read from PEM and checked before any handshake may use it:
//! a chain that does not parse, a key that does not match the certificate, or a certificate already
//! expired is refused with the reason, so that a bad rotation never replaces a good certificate.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::validity::not_after;

/// A certificate tideway can present: its chain with its signing key, and where it came from.
#[derive(Debug)]
pub struct Certificate {
    source: String,
    certified: Arc<CertifiedKey>,
    not_after: i64,
}

/// Why a certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The chain holds no PEM `CERTIFICATE` block, or one that does not parse.
    #[error("no certificate in the chain: {0}")]
    NoCertificate(String),
    /// The key file holds no private key tideway can read.
    #[error("no private key: {0}")]
    NoKey(String),
    /// The key is of a kind or curve the TLS stack cannot sign with.
    #[error("unsupported private key: {0}")]
    UnsupportedKey(rustls::Error),
    /// The key is not the one the certificate was issued for.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// The first certificate of the chain is not a well-formed X.509 certificate.
    #[error("the certificate's validity cannot be read")]
    Malformed,
    /// The certificate's `notAfter` has passed.
    #[error("the certificate expired {0} seconds ago")]
    Expired(i64),
}

impl Certificate {
    /// A certificate from its PEM chain and PEM key (as files and `kubernetes.io/tls` Secrets hold them),
    /// as of `now` (seconds since the Unix epoch); `source` names it in logs and metrics.
    pub fn from_pem(source: String, chain: &[u8], key: &[u8], now: i64) -> Result<Self, CertificateError> {
        let chain = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertificateError::NoCertificate(pem_error(&e)))?;
        let Some(leaf) = chain.first() else {
            return Err(CertificateError::NoCertificate("no CERTIFICATE block".to_owned()));
        };
        let not_after = not_after(leaf).ok_or(CertificateError::Malformed)?;
        if not_after <= now {
            return Err(CertificateError::Expired(now - not_after));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| CertificateError::NoKey(pem_error(&e)))?;
        let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => CertificateError::KeyMismatch,
            rustls::Error::InvalidCertificate(_) => CertificateError::Malformed,
            other => CertificateError::UnsupportedKey(other),
        })?;
        Ok(Certificate {
            source,
            certified: Arc::new(certified),
            not_after,
        })
    }

    /// Where the certificate came from: its file, or its Secret.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// When it expires, in seconds since the Unix epoch.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The chain and key handshakes present.
    pub(crate) fn certified(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }
}

/// The cryptography every TLS session of tideway uses: the ring provider's suites — all AEAD with
/// ECDHE — in the order the server prefers them: AES-128-GCM first (as strong in practice, and the
/// cheapest where AES has hardware support), then AES-256-GCM, then ChaCha20-Poly1305.
pub(crate) fn provider() -> CryptoProvider {
    use rustls::crypto::ring::cipher_suite as suite;
    CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}

fn pem_error(error: &pem::Error) -> String {
    match error {
        pem::Error::NoItemsFound => "no PEM block of that kind".to_owned(),
        other => other.to_string(),
    }
}
