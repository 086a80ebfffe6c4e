//! The certificates the HTTPS listener presents: the files the configuration names, loaded at start and
//! on every reload, and loaded again whenever their content changes — checked each second, as the
//! configuration file is, which also sees a Kubernetes Secret volume's atomic swap — and the Secrets
//! `TidewayApp` resources name, watched through the API server. A replacement that does not load
//! (unreadable, not PEM, a key that does not match, expired) is refused and logged, and the certificate
//! in force stays.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tideway_config::{AppConfig, Config, HostPattern, TlsFiles, TlsSource};
use tideway_orchestrate::kubernetes::{ApiServer, TlsSecret, watch_tls_secret};
use tideway_proxy::{Certificate, CertificateError, CertificateTable, Proxy};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// How often the files are read and compared.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a changed file must stay the same before it is loaded: a certificate and its key are often
/// written one after the other.
const SETTLE: Duration = Duration::from_millis(250);

/// One certificate the configuration names through files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Source {
    /// The key that names it, for errors: `proxy.tls_certificate`, `app[2].tls_certificate`.
    pub(crate) key: String,
    /// Its files.
    pub(crate) files: TlsFiles,
    /// The hosts it serves; none for the default certificate.
    pub(crate) hosts: Vec<HostPattern>,
}

/// A certificate a `TidewayApp` names through a Secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SecretSource {
    /// The Secret's namespace (the resource's).
    pub(crate) namespace: String,
    /// The Secret's name.
    pub(crate) name: String,
    /// The app's hosts.
    pub(crate) hosts: Vec<HostPattern>,
}

/// A certificate that did not load, and which key of the configuration names it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {source}")]
pub(crate) struct SourceError {
    key: String,
    #[source]
    source: CertificateError,
}

/// Every certificate file `config` names: the default first, then the apps' in order.
pub(crate) fn sources(config: &Config) -> Vec<Source> {
    let default = config.proxy.tls.iter().map(|files| Source {
        key: "proxy.tls_certificate".to_owned(),
        files: files.clone(),
        hosts: Vec::new(),
    });
    let apps = config
        .apps
        .iter()
        .enumerate()
        .filter_map(|(i, app)| match &app.tls {
            Some(TlsSource::Files(files)) => Some(Source {
                key: format!("app[{i}].tls_certificate"),
                files: files.clone(),
                hosts: app.hosts.clone(),
            }),
            _ => None,
        });
    default.chain(apps).collect()
}

/// The Secrets `apps` name for their certificates.
pub(crate) fn secret_sources(apps: &[AppConfig]) -> Vec<SecretSource> {
    apps.iter()
        .filter_map(|app| match &app.tls {
            Some(TlsSource::Secret { namespace, name }) => Some(SecretSource {
                namespace: namespace.clone(),
                name: name.clone(),
                hosts: app.hosts.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// A certificate loaded from its files, and the files' content it was loaded from.
pub(crate) struct Loaded {
    certificate: Arc<Certificate>,
    content: Content,
}

/// Loads each source now; the first that does not load is the error.
pub(crate) fn load(sources: &[Source]) -> Result<Vec<Loaded>, SourceError> {
    sources
        .iter()
        .map(|source| {
            let files = &source.files;
            let failed = |error| SourceError {
                key: source.key.clone(),
                source: error,
            };
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|error| {
                    failed(CertificateError::Read {
                        path: path.display().to_string(),
                        source: error,
                    })
                })
            };
            let (chain, key) = (read(&files.certificate)?, read(&files.key)?);
            let certificate =
                Certificate::from_pem(label(files), &chain, &key, unix_now()).map_err(failed)?;
            Ok(Loaded {
                certificate: Arc::new(certificate),
                content: Some((chain, key)),
            })
        })
        .collect()
}

/// How a certificate from files is named in logs, metrics and the status page: its chain's file.
fn label(files: &TlsFiles) -> String {
    files.certificate.display().to_string()
}

/// How a certificate from a Secret is named: `secret <namespace>/<name>`.
fn secret_label(namespace: &str, name: &str) -> String {
    format!("secret {namespace}/{name}")
}

/// Seconds since the Unix epoch, as certificates count their validity.
pub(crate) fn unix_now() -> i64 {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What changes the certificates in force.
enum Change {
    /// A reloaded configuration's files, loaded.
    Files(Vec<Source>, Vec<Loaded>),
    /// The Secrets the resources name now.
    Secrets(Vec<SecretSource>),
    /// A watched Secret's content (`None`: gone, or without `tls.crt` and `tls.key`).
    Secret(String, String, Option<TlsSecret>),
}

/// Keeps the proxy's certificates those of the latest configuration and resources, reloading each one
/// whose files or Secret change.
pub(crate) struct Watcher {
    changes: mpsc::UnboundedSender<Change>,
}

impl Watcher {
    /// Puts `loaded` (the certificates of `sources`) in force on `proxy` at once, watches their files,
    /// and watches the Secrets it is given later through `api` (there are none without resource apps).
    pub(crate) fn start(
        proxy: Arc<Proxy>,
        api: Option<ApiServer>,
        sources: Vec<Source>,
        loaded: Vec<Loaded>,
    ) -> Self {
        let (changes, receiver) = mpsc::unbounded_channel();
        let mut state = State {
            proxy,
            api,
            files: Vec::new(),
            secrets: HashMap::new(),
            changes: changes.clone(),
        };
        state.set_files(sources, loaded);
        tokio::spawn(state.run(receiver));
        Watcher { changes }
    }

    /// Puts the certificates of a reloaded configuration in force.
    pub(crate) fn replace(&self, sources: Vec<Source>, loaded: Vec<Loaded>) {
        let _ = self.changes.send(Change::Files(sources, loaded));
    }

    /// Watches the Secrets `apps` name (and no other), each for its app's hosts.
    pub(crate) fn set_secrets(&self, apps: &[AppConfig]) {
        let _ = self.changes.send(Change::Secrets(secret_sources(apps)));
    }
}

/// A certificate file pair in force, and its content when last read.
struct Watched {
    source: Source,
    certificate: Arc<Certificate>,
    content: Content,
}

/// A Secret watched, and its certificate once one loaded.
struct WatchedSecret {
    source: SecretSource,
    certificate: Option<Arc<Certificate>>,
    task: JoinHandle<()>,
}

impl Drop for WatchedSecret {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watcher's task.
struct State {
    proxy: Arc<Proxy>,
    api: Option<ApiServer>,
    files: Vec<Watched>,
    secrets: HashMap<(String, String), WatchedSecret>,
    changes: mpsc::UnboundedSender<Change>,
}

impl State {
    async fn run(mut self, mut changes: mpsc::UnboundedReceiver<Change>) {
        let mut ticks = tokio::time::interval(CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some(Change::Files(sources, loaded)) => self.set_files(sources, loaded),
                    Some(Change::Secrets(sources)) => self.set_secrets(sources),
                    Some(Change::Secret(namespace, name, content)) => self.secret_changed(namespace, name, content),
                    None => return,
                },
                _ = ticks.tick() => {
                    if self.reread_files().await {
                        self.publish();
                    }
                }
            }
        }
    }

    fn set_files(&mut self, sources: Vec<Source>, loaded: Vec<Loaded>) {
        self.files = sources
            .into_iter()
            .zip(loaded)
            .map(|(source, loaded)| Watched {
                source,
                certificate: loaded.certificate,
                content: loaded.content,
            })
            .collect();
        self.publish();
    }

    /// Watches the Secrets of `sources`: new ones are watched, those no longer named forgotten.
    fn set_secrets(&mut self, sources: Vec<SecretSource>) {
        let Some(api) = &self.api else { return };
        let mut kept = HashMap::new();
        for source in sources {
            let id = (source.namespace.clone(), source.name.clone());
            let watched = match self.secrets.remove(&id) {
                Some(mut watched) => {
                    watched.source = source;
                    watched
                }
                None => WatchedSecret {
                    task: tokio::spawn(watch_secret(api.clone(), id.clone(), self.changes.clone())),
                    source,
                    certificate: None,
                },
            };
            kept.insert(id, watched);
        }
        self.secrets = kept;
        self.publish();
    }

    fn secret_changed(&mut self, namespace: String, name: String, content: Option<TlsSecret>) {
        let Some(watched) = self.secrets.get_mut(&(namespace.clone(), name.clone())) else {
            return;
        };
        let certificate = secret_label(&namespace, &name);
        let loaded = match content {
            None => {
                warn!(%certificate, "the Secret is gone or holds no tls.crt and tls.key; the certificate in force stays");
                return;
            }
            Some(secret) => {
                Certificate::from_pem(certificate.clone(), &secret.chain, &secret.key, unix_now())
            }
        };
        match loaded {
            Ok(new) => {
                info!(%certificate, not_after = new.not_after(), "certificate reloaded");
                watched.certificate = Some(Arc::new(new));
                self.publish();
            }
            Err(problem) => error!(
                %certificate,
                key = "spec.tls.secretName",
                %problem,
                "new certificate refused, the previous one stays in force"
            ),
        }
    }

    /// Reads every file pair again and loads those that changed; true if one was replaced.
    async fn reread_files(&mut self) -> bool {
        let mut replaced = false;
        for watched in &mut self.files {
            let now = read(&watched.source.files).await;
            if now.is_none() || now == watched.content {
                continue;
            }
            let now = settled(&watched.source.files, now).await;
            watched.content.clone_from(&now);
            let Some((chain, key)) = now else { continue };
            let certificate = label(&watched.source.files);
            match Certificate::from_pem(certificate.clone(), &chain, &key, unix_now()) {
                Ok(new) => {
                    info!(%certificate, not_after = new.not_after(), "certificate reloaded");
                    watched.certificate = Arc::new(new);
                    replaced = true;
                }
                Err(problem) => error!(
                    %certificate,
                    key = %watched.source.key,
                    %problem,
                    "new certificate refused, the previous one stays in force"
                ),
            }
        }
        replaced
    }

    /// Puts the certificates in force on the proxy.
    fn publish(&self) {
        let mut default = None;
        let mut hosted = Vec::new();
        for watched in &self.files {
            if watched.source.hosts.is_empty() {
                default = Some(Arc::clone(&watched.certificate));
            } else {
                hosted.push((Arc::clone(&watched.certificate), watched.source.hosts.clone()));
            }
        }
        for watched in self.secrets.values() {
            if let Some(certificate) = &watched.certificate {
                hosted.push((Arc::clone(certificate), watched.source.hosts.clone()));
            }
        }
        self.proxy
            .set_certificates(CertificateTable::new(default, hosted));
    }
}

/// Sends each content of Secret `id` the API server shows; ends when the watcher does.
async fn watch_secret(api: ApiServer, id: (String, String), changes: mpsc::UnboundedSender<Change>) {
    let Ok(client) = api.client().await else {
        return;
    };
    let (namespace, name) = id;
    let mut contents = watch_tls_secret(client, &namespace, &name, Arc::clone(api.metrics())).boxed();
    while let Some(content) = contents.next().await {
        if changes
            .send(Change::Secret(namespace.clone(), name.clone(), content))
            .is_err()
        {
            return;
        }
    }
}

/// The content of a source's two files when last looked at.
type Content = Option<(Vec<u8>, Vec<u8>)>;

async fn read(files: &TlsFiles) -> Content {
    let certificate = tokio::fs::read(&files.certificate).await.ok()?;
    let key = tokio::fs::read(&files.key).await.ok()?;
    Some((certificate, key))
}

/// The files' content once two reads `SETTLE` apart agree.
async fn settled(files: &TlsFiles, mut current: Content) -> Content {
    loop {
        tokio::time::sleep(SETTLE).await;
        let again = read(files).await;
        if again == current {
            return again;
        }
        current = again;
    }
}
