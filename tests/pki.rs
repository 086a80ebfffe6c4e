//! A certificate authority of one test: certificates for the names a test serves, written to PEM files,
//! and TLS clients that trust nothing else.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::net::SocketAddr;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A test CA and the directory its certificates are written to.
#[derive(Clone)]
pub struct Pki {
    dir: PathBuf,
    params: CertificateParams,
    key_pem: String,
    der: CertificateDer<'static>,
}

/// A certificate issued by the test CA: its files, its DER and its `notAfter`.
pub struct Issued {
    /// The PEM chain's file.
    pub chain: PathBuf,
    /// The PEM key's file.
    pub key: PathBuf,
    /// The certificate.
    pub der: CertificateDer<'static>,
    /// Its `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl Pki {
    /// A new CA, its certificates written to a directory of their own.
    pub fn create() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tideway-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the certificates");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("tideway test CA {n}"));
        let key = KeyPair::generate().expect("a CA key");
        let ca = params.self_signed(&key).expect("the CA certificate");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write the CA certificate");
        let der = ca.der().clone();
        Pki {
            dir,
            params,
            key_pem: key.serialize_pem(),
            der,
        }
    }

    /// A certificate for `names`, valid from yesterday for a year, in `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        let now = time::OffsetDateTime::now_utc();
        self.issue_between(
            file,
            names,
            now - time::Duration::days(1),
            now + time::Duration::days(365),
        )
    }

    /// A certificate for `names`, valid from yesterday for `days` days.
    pub fn issue_for_days(&self, file: &str, names: &[&str], days: i64) -> Issued {
        let now = time::OffsetDateTime::now_utc();
        self.issue_between(
            file,
            names,
            now - time::Duration::days(1),
            now + time::Duration::days(days),
        )
    }

    /// A certificate for `names` that expired yesterday.
    pub fn issue_expired(&self, file: &str, names: &[&str]) -> Issued {
        let now = time::OffsetDateTime::now_utc();
        self.issue_between(
            file,
            names,
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
    }

    fn issue_between(
        &self,
        file: &str,
        names: &[&str],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Issued {
        let ca_key = KeyPair::from_pem(&self.key_pem).expect("the CA key");
        let issuer = Issuer::from_params(&self.params, ca_key);
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("certificate parameters");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        // Whole seconds: what the certificate can hold.
        let not_after = not_after.replace_nanosecond(0).expect("a valid time");
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &issuer).expect("a certificate");
        let chain = self.dir.join(format!("{file}.pem"));
        let key_path = self.dir.join(format!("{file}.key"));
        std::fs::write(&chain, cert.pem()).expect("write the chain");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        Issued {
            chain,
            key: key_path,
            der: cert.der().clone(),
            not_after: not_after.unix_timestamp(),
        }
    }

    /// The CA's certificate, in PEM.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A client configuration that trusts only this CA.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).expect("the CA is a valid root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

/// A TLS connection to `addr` naming `server_name`, offering `alpn`; trusts only `pki`'s CA.
pub async fn connect(
    pki: &Pki,
    addr: SocketAddr,
    server_name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = pki.client_config();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(server_name.to_owned()).expect("a server name");
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// The certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let certs = stream.get_ref().1.peer_certificates().expect("a certificate");
    certs[0].clone().into_owned()
}
