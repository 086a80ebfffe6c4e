//! The certificate files of `[proxy]` (the default certificate) and of an app (the certificate of its
//! hosts): the same two keys, `tls_certificate` and `tls_key`, in both places.

use std::path::PathBuf;

use crate::values::file_path;
use crate::walk::{Errors, Section};

/// A PEM certificate chain and the PEM private key it was issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The chain: the certificate first, then the intermediates that lead to a root clients trust.
    pub certificate: PathBuf,
    /// The private key of the certificate (PKCS #8, PKCS #1 or SEC 1).
    pub key: PathBuf,
}

/// Where an app's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// Files (`tls_certificate` and `tls_key`).
    Files(TlsFiles),
    /// A `kubernetes.io/tls` Secret (`tls.secretName` of a `TidewayApp`), watched.
    Secret {
        /// Its namespace: the `TidewayApp`'s.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// Reads `tls_certificate` and `tls_key` of `section`: both or neither.
pub(crate) fn read_tls_files(section: &mut Section<'_>, errors: &mut Errors) -> Option<TlsFiles> {
    let certificate = section.get("tls_certificate", errors, file_path);
    let key = section.get("tls_key", errors, file_path);
    let (certificate_given, key_given) = (section.contains("tls_certificate"), section.contains("tls_key"));
    match (certificate, key) {
        (Some(certificate), Some(key)) => Some(TlsFiles { certificate, key }),
        _ => {
            if certificate_given && !key_given {
                errors.push(section.key_path("tls_key"), "required with tls_certificate");
            }
            if key_given && !certificate_given {
                errors.push(section.key_path("tls_certificate"), "required with tls_key");
            }
            None
        }
    }
}
