//! Secrets read at start: from a file, or from an environment variable (as Kubernetes Secrets are
//! mounted or injected).

use std::path::Path;

/// Why a secret could not be read; reported as a configuration error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    /// The file could not be read.
    #[error("{key}: cannot read {path}")]
    Unreadable {
        /// The key that names the file.
        key: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file or variable is empty (or absent, for a variable).
    #[error("{0}: the secret is empty or missing")]
    Empty(String),
}

/// The secret `{name}_file` or `{name}_env` of section `section` points to, trimmed; `None` if neither
/// is given.
pub(crate) fn load_secret(
    section: &str,
    name: &str,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Option<Vec<u8>>, SecretError> {
    let (secret, key) = if let Some(path) = file {
        let key = format!("{section}.{name}_file");
        let secret = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
            key: key.clone(),
            path: path.display().to_string(),
            source,
        })?;
        (secret, key)
    } else if let Some(variable) = env {
        (
            std::env::var(variable).unwrap_or_default(),
            format!("{section}.{name}_env"),
        )
    } else {
        return Ok(None);
    };
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(SecretError::Empty(key));
    }
    Ok(Some(secret.as_bytes().to_vec()))
}
