//! The certificate every proxy presents in the TLS rounds, and the one suite and key exchange they all
//! negotiate: ECDSA P-256, TLS 1.3 with `TLS_AES_128_GCM_SHA256` over X25519.

use std::path::{Path, PathBuf};

/// The TLS 1.3 suite every proxy is configured to (and every client asks for).
pub(crate) const SUITE: &str = "TLS_AES_128_GCM_SHA256";
/// The key exchange group.
pub(crate) const GROUP: &str = "X25519";

/// A certificate for `bench.test` and its key, as PEM files — and the two in one file, as HAProxy takes
/// them.
pub(crate) struct Files {
    pub(crate) chain: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) combined: PathBuf,
}

/// Writes a fresh self-signed ECDSA P-256 certificate into `dir`.
pub(crate) fn write(dir: &Path) -> anyhow::Result<Files> {
    let pair = rcgen::generate_simple_self_signed(vec!["bench.test".to_owned()])?;
    let (chain_pem, key_pem) = (pair.cert.pem(), pair.signing_key.serialize_pem());
    let files = Files {
        chain: dir.join("bench.crt"),
        key: dir.join("bench.key"),
        combined: dir.join("bench.pem"),
    };
    std::fs::write(&files.chain, &chain_pem)?;
    std::fs::write(&files.key, &key_pem)?;
    std::fs::write(&files.combined, format!("{chain_pem}{key_pem}"))?;
    Ok(files)
}
