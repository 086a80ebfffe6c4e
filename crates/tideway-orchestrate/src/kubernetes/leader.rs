//! Leader election on a `coordination.k8s.io` Lease, by the rules of client-go's: an instance holds the
//! lease by renewing it every `renew_every`; another takes it over only once it has seen no renewal for
//! the lease's duration — measured on its own clock, from when it saw the lease change, so that clocks
//! that disagree between nodes do not matter. Every write names the version it read, so two instances
//! that try at once cannot both win: one gets `409 Conflict`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::metrics::KubernetesMetrics;

/// How an instance takes part in the election.
#[derive(Clone, Debug)]
pub struct Election {
    /// The Lease's namespace and name.
    pub namespace: String,
    /// The Lease's name.
    pub lease: String,
    /// This instance's identity (its pod's name).
    pub identity: String,
    /// How long a lease not renewed stays its holder's.
    pub duration: Duration,
    /// How often the holder renews it, and others look at it.
    pub renew_every: Duration,
}

/// What an instance last saw of the lease: its holder and renewal, and when it saw them change.
struct Seen {
    holder: Option<String>,
    renewed: Option<MicroTime>,
    at: Instant,
}

/// Runs the election until `stop`, or for as long as the returned receiver lives: it reads `true` while
/// this instance leads. A leader that cannot renew within the lease's duration steps down; one that is
/// stopped gives the lease up, so that another takes over at its next look instead of after the lease's
/// duration.
pub fn elect(
    client: Client,
    election: Election,
    metrics: Arc<KubernetesMetrics>,
    stop: CancellationToken,
) -> watch::Receiver<bool> {
    let (leading, receiver) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &election.namespace);
        let mut seen: Option<Seen> = None;
        let mut renewed_at: Option<Instant> = None;
        loop {
            // A failed look leaves leadership as it was, for as long as the last renewal holds.
            let leads = match round(&api, &election, &mut seen, &metrics).await {
                Ok(true) => {
                    renewed_at = Some(Instant::now());
                    true
                }
                Ok(false) => false,
                Err(error) => {
                    warn!(lease = %election.lease, %error, "lease round failed");
                    *leading.borrow() && renewed_at.is_some_and(|at| at.elapsed() < election.duration)
                }
            };
            if leads != *leading.borrow() {
                info!(lease = %election.lease, identity = %election.identity, leads, "leadership changed");
            }
            if leading.send(leads).is_err() {
                return;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(election.renew_every) => {}
            }
        }
        if *leading.borrow() {
            match release(&api, &election).await {
                Ok(()) => info!(lease = %election.lease, identity = %election.identity, "lease given up"),
                Err(error) => {
                    warn!(lease = %election.lease, %error, "the lease could not be given up; it lapses")
                }
            }
        }
        let _ = leading.send(false);
    });
    receiver
}

/// Gives the lease up, as client-go does on a release: no holder, renewed now. Only if this instance
/// still holds it, at the version read.
async fn release(api: &Api<Lease>, election: &Election) -> Result<(), kube::Error> {
    let mut lease = api.get(&election.lease).await?;
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    api.replace(&election.lease, &PostParams::default(), &lease)
        .await
        .map(drop)
}

/// One look at the lease: renews it if this instance holds it, takes it if its holder let it lapse.
/// Returns whether this instance holds it now (`false`: another does, or won the race for it).
async fn round(
    api: &Api<Lease>,
    election: &Election,
    seen: &mut Option<Seen>,
    metrics: &KubernetesMetrics,
) -> Result<bool, kube::Error> {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let duration = i32::try_from(election.duration.as_secs())
        .unwrap_or(i32::MAX)
        .max(1);
    let looked = api.get_opt(&election.lease).await;
    let Some(mut lease) = looked.inspect_err(|_| metrics.api_error("get", "leases"))? else {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": { "name": election.lease, "namespace": election.namespace },
            "spec": {
                "holderIdentity": election.identity,
                "leaseDurationSeconds": duration,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }))
        .map_err(kube::Error::SerdeError)?;
        return claimed(
            api.create(&PostParams::default(), &lease).await,
            "create",
            metrics,
        );
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone();
    let changed = seen
        .as_ref()
        .is_none_or(|s| s.holder != holder || s.renewed != spec.renew_time);
    if changed {
        *seen = Some(Seen {
            holder: holder.clone(),
            renewed: spec.renew_time.clone(),
            at: Instant::now(),
        });
    }
    let mine = holder.as_deref() == Some(election.identity.as_str());
    let lapsed = holder.is_none() || seen.as_ref().is_some_and(|s| s.at.elapsed() >= election.duration);
    if !mine && !lapsed {
        return Ok(false);
    }
    if !mine {
        spec.holder_identity = Some(election.identity.clone());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(duration);
    claimed(
        api.replace(&election.lease, &PostParams::default(), &lease).await,
        "update",
        metrics,
    )
}

/// A write of the lease that went through holds it; one that lost a race (409) does not.
fn claimed(
    written: Result<Lease, kube::Error>,
    verb: &str,
    metrics: &KubernetesMetrics,
) -> Result<bool, kube::Error> {
    match written {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => {
            metrics.api_error(verb, "leases");
            Err(error)
        }
    }
}
