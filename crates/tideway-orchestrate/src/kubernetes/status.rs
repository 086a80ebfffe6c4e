//! The status of `TidewayApp` resources, written by the leader only and rate-limited: the API server is
//! shared, so a resource's status is written when it changed, and at most once per `status_interval`.
//! Conditions keep their `lastTransitionTime` until their `status` changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::time::Instant;
use tracing::warn;

use super::apps::ResourceKey;
use super::metrics::KubernetesMetrics;
use super::resource::{TidewayApp, TidewayAppStatus};

/// Writes the statuses it is given, when they changed and their resource's interval has passed.
pub struct StatusWriter {
    client: Client,
    interval: Duration,
    metrics: Arc<KubernetesMetrics>,
    written: HashMap<ResourceKey, Written>,
}

/// What was last written to a resource, and when.
struct Written {
    status: TidewayAppStatus,
    at: Instant,
}

impl StatusWriter {
    /// A writer through `client` that writes a resource's status at most once per `interval`.
    pub fn new(client: Client, interval: Duration, metrics: Arc<KubernetesMetrics>) -> Self {
        StatusWriter {
            client,
            interval,
            metrics,
            written: HashMap::new(),
        }
    }

    /// Writes each of `statuses` that differs from the last one written and is due; resources left out
    /// are forgotten. Conditions' `lastTransitionTime` may be left empty: the writer sets it when a
    /// condition's `status` changes and keeps the earlier one otherwise. Failures are logged and counted,
    /// and tried again once the interval has passed.
    pub async fn write(&mut self, statuses: Vec<(ResourceKey, TidewayAppStatus)>) {
        self.written
            .retain(|key, _| statuses.iter().any(|(k, _)| k == key));
        let now = Instant::now();
        for (key, mut status) in statuses {
            let last = self.written.get(&key);
            if last.is_some_and(|last| now < last.at + self.interval) {
                continue;
            }
            stamp_transitions(&mut status, last.map(|last| &last.status), SystemTime::now());
            if last.is_some_and(|last| last.status == status) {
                continue;
            }
            let api: Api<TidewayApp> = Api::namespaced(self.client.clone(), &key.namespace);
            let patch = Patch::Merge(json!({ "status": status }));
            match api.patch_status(&key.name, &PatchParams::default(), &patch).await {
                Ok(_) => {}
                // Deleted meanwhile: the next look forgets it.
                Err(kube::Error::Api(refused)) if refused.code == 404 => continue,
                Err(error) => {
                    self.metrics.api_error("patch", "tidewayapps/status");
                    warn!(namespace = %key.namespace, name = %key.name, %error, "TidewayApp status not written; it is tried again");
                    // Tried again once the interval passed, with what is true then.
                    if let Some(last) = self.written.get_mut(&key) {
                        last.at = now;
                    }
                    continue;
                }
            }
            self.written.insert(key, Written { status, at: now });
        }
    }
}

/// Gives each condition of `status` the transition time of the same condition in `last` if its `status`
/// is the same, else `now`.
fn stamp_transitions(status: &mut TidewayAppStatus, last: Option<&TidewayAppStatus>, now: SystemTime) {
    for condition in &mut status.conditions {
        let before = last
            .and_then(|last| last.conditions.iter().find(|c| c.kind == condition.kind))
            .filter(|before| before.status == condition.status);
        condition.last_transition_time = match before {
            Some(before) => before.last_transition_time.clone(),
            None => humantime::format_rfc3339_seconds(now).to_string(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::Condition;

    fn with(conditions: &[(&str, &str)]) -> TidewayAppStatus {
        TidewayAppStatus {
            conditions: conditions
                .iter()
                .map(|(kind, status)| Condition {
                    kind: (*kind).into(),
                    status: (*status).into(),
                    reason: "Why".into(),
                    message: "what".into(),
                    last_transition_time: String::new(),
                })
                .collect(),
            ..TidewayAppStatus::default()
        }
    }

    fn times(status: &TidewayAppStatus) -> Vec<&str> {
        let conditions = status.conditions.iter();
        conditions.map(|c| c.last_transition_time.as_str()).collect()
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let first = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let later = first + Duration::from_secs(60);
        let mut last = with(&[("Ready", "True"), ("ScalingActive", "True")]);
        stamp_transitions(&mut last, None, first);
        assert_eq!(times(&last), ["2027-01-15T08:00:00Z", "2027-01-15T08:00:00Z"]);

        let mut next = with(&[
            ("Ready", "False"),
            ("ScalingActive", "True"),
            ("ScalingLimited", "True"),
        ]);
        stamp_transitions(&mut next, Some(&last), later);
        assert_eq!(
            times(&next),
            [
                "2027-01-15T08:01:00Z",
                "2027-01-15T08:00:00Z",
                "2027-01-15T08:01:00Z"
            ]
        );
    }
}
