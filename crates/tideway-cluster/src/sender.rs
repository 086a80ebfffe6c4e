//! The cluster task: reports this instance's counts to every peer the moment they change (a burst
//! coalesces into one report) and at each heartbeat, takes the peers' reports (and the reports they
//! answer with), drops a peer that fell silent for `peer_timeout`, and writes the peers' sums into the
//! shared apps' replicas and demand.
//!
//! Each time it hears from a peer, it grants itself, on each shared replica, a share of the seats it
//! sees free: `ceil(free / instances)`. An instance takes no more than its grant before it hears again,
//! so instances that admit at once on the same view cannot together take much more than the free seats.

use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tideway_config::ClusterSettings;
use tideway_core::{App, GaveUp, ReplicaState, SessionId, UNLIMITED};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::handover::ask_peers;
use crate::metrics::ClusterMetrics;
use crate::peers::{Peers, Totals};
use crate::report::{AppReport, ReplicaReport, Report};
use crate::server::{Listener, REPORT_PATH, serve};
use crate::view::ClusterView;

/// First pause after a failed send to a peer; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest pause between two tries: below the default heartbeat, so a peer back up hears soon.
const MAX_RETRY: Duration = Duration::from_secs(1);
/// Longest a send may take before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer taken from a peer.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// What the cluster task hears.
pub(crate) enum Heard {
    /// A peer's report: one it sent, or one it answered with.
    Report(Report),
    /// A peer did not answer a report: its counts stay until its timeout, but the seats this instance
    /// may take are granted anew without waiting for it.
    Unanswered,
}

/// This instance's part of the cluster: give it the shared apps after each change of the apps, and the
/// peers found (on Kubernetes) each time they change.
#[derive(Clone)]
pub struct Cluster {
    apps: Arc<watch::Sender<Arc<Vec<Arc<App>>>>>,
    found: Arc<watch::Sender<Vec<SocketAddr>>>,
    listed: Arc<[SocketAddr]>,
    secret: Arc<[u8]>,
    view: watch::Receiver<Arc<ClusterView>>,
}

/// What each sender needs, to start one for a peer found later.
struct Senders {
    outbox: watch::Receiver<Arc<Report>>,
    secret: Arc<[u8]>,
    heard: mpsc::Sender<Heard>,
    metrics: Arc<ClusterMetrics>,
    shutdown: CancellationToken,
}

/// What the cluster task works with.
struct Task {
    identity: String,
    incarnation: u64,
    seq: u64,
    peers: Peers,
    heartbeat: Duration,
    outbox: watch::Sender<Arc<Report>>,
    metrics: Arc<ClusterMetrics>,
    /// The peers heard from since the last grant: the next grant waits until every live one was.
    heard_since_grant: HashSet<String>,
    /// What the admin API shows, refreshed at each heartbeat and each peer's expiry.
    view: watch::Sender<Arc<ClusterView>>,
}

impl Cluster {
    /// Starts reporting as `identity` to the peers `settings` lists, with `secret`, and taking their
    /// reports on `listener` (the internal listener), until `shutdown`.
    pub fn spawn(
        settings: &ClusterSettings,
        identity: &str,
        secret: Arc<[u8]>,
        listener: TcpListener,
        metrics: Arc<ClusterMetrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let (apps, apps_seen) = watch::channel(Arc::new(Vec::new()));
        let incarnation = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let own = Report {
            instance: identity.to_owned(),
            incarnation,
            ..Report::default()
        };
        let (outbox, _) = watch::channel(Arc::new(own));
        let (heard, reports) = mpsc::channel(64);
        let answers = Listener {
            secret: Arc::clone(&secret),
            reports: heard.clone(),
            own: outbox.subscribe(),
            apps: apps_seen.clone(),
        };
        serve(listener, answers, shutdown.clone());
        let senders = Senders {
            outbox: outbox.subscribe(),
            secret: Arc::clone(&secret),
            heard,
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.clone(),
        };
        for peer in &settings.peers {
            senders.start(*peer);
        }
        let (found, found_seen) = watch::channel(Vec::new());
        let (view, view_seen) = watch::channel(Arc::new(ClusterView {
            instance: identity.to_owned(),
            peers: Vec::new(),
        }));
        tokio::spawn(senders.follow(found_seen, settings.peers.clone()));
        let task = Task {
            identity: identity.to_owned(),
            incarnation,
            seq: 0,
            peers: Peers::new(identity, settings.peer_timeout),
            heartbeat: settings.heartbeat,
            outbox,
            metrics,
            heard_since_grant: HashSet::new(),
            view,
        };
        info!(
            identity,
            peers = settings.peers.len(),
            "sharing counts with the other instances"
        );
        tokio::spawn(task.run(apps_seen, reports, shutdown));
        Cluster {
            apps: Arc::new(apps),
            found: Arc::new(found),
            listed: settings.peers.clone().into(),
            secret,
            view: view_seen,
        }
    }

    /// This instance and its live peers with their counts, as of the last heartbeat.
    pub fn view(&self) -> Arc<ClusterView> {
        Arc::clone(&self.view.borrow())
    }

    /// Asks every peer (listed and found) to give up session `id` of `app`, which a client just brought
    /// back here: what the peer that held it did — [`GaveUp::Released`] when its seat moves here.
    pub async fn hand_over(&self, app: &str, id: SessionId) -> GaveUp {
        let mut peers = self.listed.to_vec();
        peers.extend(
            self.found
                .borrow()
                .iter()
                .filter(|peer| !self.listed.contains(peer)),
        );
        if peers.is_empty() {
            return GaveUp::Unknown;
        }
        ask_peers(peers, Arc::clone(&self.secret), app, id).await
    }

    /// The peers found now (the ready endpoints of tideway's own Service), beside those listed: a
    /// sender starts for each new one and stops for each gone.
    pub fn set_found(&self, peers: Vec<SocketAddr>) {
        self.found.send_replace(peers);
    }

    /// The apps whose replicas every instance shares (static and Kubernetes ones), as they are now.
    pub fn set_apps(&self, apps: Vec<Arc<App>>) {
        self.apps.send_replace(Arc::new(apps));
    }
}

impl Senders {
    /// Starts reporting to `peer`; returns what stops it.
    fn start(&self, peer: SocketAddr) -> CancellationToken {
        let stop = self.shutdown.child_token();
        let mut outbox = self.outbox.clone();
        // A peer found late hears the latest report at once.
        outbox.mark_changed();
        let sending = send_to(
            peer,
            outbox,
            Arc::clone(&self.secret),
            self.heard.clone(),
            Arc::clone(&self.metrics),
        );
        let stopping = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = sending => {}
                () = stopping.cancelled() => {}
            }
        });
        stop
    }

    /// Keeps a sender for each peer found (but not listed, which have theirs), as they come and go.
    async fn follow(self, mut found: watch::Receiver<Vec<SocketAddr>>, listed: Vec<SocketAddr>) {
        let mut running: HashMap<SocketAddr, CancellationToken> = HashMap::new();
        while found.changed().await.is_ok() {
            let now: HashSet<SocketAddr> = found
                .borrow_and_update()
                .iter()
                .copied()
                .filter(|peer| !listed.contains(peer))
                .collect();
            running.retain(|peer, stop| {
                let stays = now.contains(peer);
                if !stays {
                    info!(%peer, "peer no longer found: not reporting to it");
                    stop.cancel();
                }
                stays
            });
            for peer in now {
                if let std::collections::hash_map::Entry::Vacant(entry) = running.entry(peer) {
                    info!(%peer, "peer found: reporting to it");
                    entry.insert(self.start(peer));
                }
            }
        }
    }
}

impl Task {
    async fn run(
        mut self,
        mut apps_seen: watch::Receiver<Arc<Vec<Arc<App>>>>,
        mut reports: mpsc::Receiver<Heard>,
        shutdown: CancellationToken,
    ) {
        let mut apps = Arc::clone(&apps_seen.borrow_and_update());
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let expiry = self.peers.next_expiry();
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(heard) = reports.recv() => {
                    match heard {
                        Heard::Report(report) if report.instance != self.identity => {
                            self.metrics.received(&report.instance);
                            self.heard_since_grant.insert(report.instance.clone());
                            if self.peers.receive(report, Instant::now()) {
                                apply(&self.peers.totals(), &apps);
                            }
                            if self.peers.all_in(&self.heard_since_grant) {
                                self.grant(&apps);
                            }
                        }
                        Heard::Report(_) => {}
                        // A peer that does not answer holds no grant back.
                        Heard::Unanswered => self.grant(&apps),
                    }
                }
                () = counts_changed(&apps) => self.publish(&apps),
                Ok(()) = apps_seen.changed() => {
                    apps = Arc::clone(&apps_seen.borrow_and_update());
                    apply(&self.peers.totals(), &apps);
                    self.grant(&apps);
                    self.publish(&apps);
                }
                _ = heartbeat.tick() => {
                    self.publish(&apps);
                    self.show_live();
                }
                () = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                    let gone = self.peers.expire(Instant::now());
                    for peer in &gone {
                        warn!(%peer, "peer silent past peer_timeout: its counts are dropped");
                        self.metrics.gone(peer);
                    }
                    if !gone.is_empty() {
                        apply(&self.peers.totals(), &apps);
                        self.grant(&apps);
                        self.show_live();
                    }
                }
            }
        }
    }

    /// Hands this instance's counts now to every peer's sender.
    fn publish(&mut self, apps: &[Arc<App>]) {
        self.seq += 1;
        let report = Report {
            instance: self.identity.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            apps: apps.iter().map(|app| own_counts(app)).collect(),
        };
        self.outbox.send_replace(Arc::new(report));
    }

    /// Grants this instance, on each shared replica, its share of the seats it sees free: unlimited while
    /// no peer is live. An app that got seats seats its waiters. The next grant waits until every live
    /// peer was heard from again: a grant made on a view some peer has not refreshed would hand out seats
    /// that peer may be taking.
    fn grant(&mut self, apps: &[Arc<App>]) {
        self.heard_since_grant.clear();
        let instances = u32::try_from(self.peers.live_count())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        for app in apps {
            let max = app.policy().max_connections;
            let mut granted = false;
            for replica in app.replicas().iter() {
                let seats = if instances == 1 {
                    UNLIMITED
                } else {
                    max.saturating_sub(replica.total_connections())
                        .div_ceil(instances)
                };
                granted |= seats > replica.allowance();
                replica.set_allowance(seats);
            }
            if granted {
                app.replicas_changed();
            }
        }
    }

    fn show_live(&self) {
        let peers = self.peers.view(Instant::now());
        self.metrics.ages(&peers);
        self.view.send_replace(Arc::new(ClusterView {
            instance: self.identity.clone(),
            peers,
        }));
    }
}

/// What this instance seats of `app`.
fn own_counts(app: &App) -> AppReport {
    AppReport {
        app: app.name().to_owned(),
        demand: app.local_demand(),
        replicas: app
            .replicas()
            .iter()
            .map(|r| ReplicaReport {
                replica: r.name().to_owned(),
                connections: r.connections(),
                draining: r.state() == ReplicaState::Draining,
            })
            .collect(),
    }
}

/// Writes the peers' sums into `apps`: counts, demand, and the replicas a peer drains. An app whose
/// replicas got seats back seats its waiters, and its scaler looks again.
fn apply(totals: &Totals, apps: &[Arc<App>]) {
    for app in apps {
        app.set_elsewhere_demand(totals.demand(app.name()));
        let mut fell = false;
        for replica in app.replicas().iter() {
            let now = totals.connections(app.name(), replica.name());
            fell |= now < replica.elsewhere();
            replica.set_elsewhere(now);
            let drained = totals.draining(app.name(), replica.name());
            fell |= !drained && replica.is_drained_elsewhere();
            replica.set_drained_elsewhere(drained);
        }
        if fell {
            app.elsewhere_fell();
        }
    }
}

/// Ready once the counts of any of `apps` changed.
async fn counts_changed(apps: &[Arc<App>]) {
    poll_fn(|cx| {
        let mut changed = false;
        for app in apps {
            changed |= app.poll_counts_changed(cx).is_ready();
        }
        if changed { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
}

/// Sends the latest report of `outbox` to `peer` each time there is a new one, over one kept-alive
/// connection; a report that cannot be sent is replaced by the next, tried after a backoff.
async fn send_to(
    peer: SocketAddr,
    mut outbox: watch::Receiver<Arc<Report>>,
    secret: Arc<[u8]>,
    heard: mpsc::Sender<Heard>,
    metrics: Arc<ClusterMetrics>,
) {
    let address = peer.to_string();
    metrics.sending_to(&address);
    let authorization = format!("Bearer {}", String::from_utf8_lossy(&secret));
    let mut connection: Option<http1::SendRequest<Full<Bytes>>> = None;
    let mut pause = FIRST_RETRY;
    while outbox.changed().await.is_ok() {
        let report = Arc::clone(&outbox.borrow_and_update());
        let Ok(body) = serde_json::to_vec(&*report) else {
            continue;
        };
        let sent = tokio::time::timeout(SEND_TIMEOUT, async {
            let sender = match &mut connection {
                Some(sender) if sender.is_ready() => sender,
                _ => connection.insert(connect(peer).await?),
            };
            let posted = Post {
                address: &address,
                authorization: &authorization,
                path: REPORT_PATH,
                limit: MAX_ANSWER_BYTES,
            };
            posted.send::<Report>(sender, Bytes::from(body)).await
        })
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()));
        match sent {
            Ok(answer) => {
                pause = FIRST_RETRY;
                if heard.send(Heard::Report(answer)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                connection = None;
                let _ = heard.send(Heard::Unanswered).await;
                metrics.send_failed(&address);
                debug!(peer = %address, %error, "report not sent; the next one follows");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_RETRY);
            }
        }
    }
}

/// One request to a peer's internal listener: its JSON body goes to `path` with the secret, and its JSON
/// answer, of at most `limit` bytes, is read back.
pub(crate) struct Post<'a> {
    pub(crate) address: &'a str,
    /// `Bearer <secret>`.
    pub(crate) authorization: &'a str,
    pub(crate) path: &'a str,
    pub(crate) limit: usize,
}

impl Post<'_> {
    /// Sends `body` over `sender`: the peer's answer, or why there is none.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        sender: &mut http1::SendRequest<Full<Bytes>>,
        body: Bytes,
    ) -> Result<T, String> {
        let request = Request::post(self.path)
            .header(http::header::HOST, self.address)
            .header(http::header::AUTHORIZATION, self.authorization)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let answer = Limited::new(response.into_body(), self.limit)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice(&answer).map_err(|e| e.to_string())
    }
}

/// A connection to `peer`'s internal listener.
pub(crate) async fn connect(peer: SocketAddr) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(peer).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
