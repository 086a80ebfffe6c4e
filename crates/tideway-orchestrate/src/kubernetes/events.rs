//! Kubernetes Events on `TidewayApp` resources, as the HPA records its own: one per scaling decision, and
//! a warning when a spec is refused, so that `kubectl describe tidewayapp` tells the story.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tideway_core::{Direction, ScaleReason};
use tracing::warn;

use super::apps::ResourceKey;
use super::metrics::KubernetesMetrics;
use crate::DecisionRecord;

/// The name Events are reported under (`reportingController`).
const CONTROLLER: &str = "tideway";

/// Records Events as this instance: each one new (decisions differ in their notes, which a series would
/// keep only the first of).
#[derive(Clone)]
pub struct AppEvents {
    client: Client,
    instance: String,
    metrics: Arc<KubernetesMetrics>,
}

/// The resource an Event is about.
pub struct Regarding<'a> {
    /// Which resource.
    pub key: &'a ResourceKey,
    /// Its `uid`, by which `kubectl describe` finds its Events.
    pub uid: Option<&'a str>,
}

impl AppEvents {
    /// Events through `client`, reported by instance `instance` (its election identity). An Event that
    /// cannot be recorded is logged and counted, and not tried again: it is a record, not a state.
    pub fn new(client: Client, instance: &str, metrics: Arc<KubernetesMetrics>) -> Self {
        AppEvents {
            client,
            instance: instance.to_owned(),
            metrics,
        }
    }

    /// Records `decision` on `regarding`.
    pub async fn decided(&self, regarding: &Regarding<'_>, decision: &DecisionRecord) {
        let (type_, reason) = match (decision.direction, decision.reason) {
            (_, ScaleReason::ReplicaLost) => ("Warning", "ReplicaLost"),
            (_, ScaleReason::External) => ("Normal", "ScaledElsewhere"),
            (Direction::Up, _) => ("Normal", "ScaledUp"),
            (Direction::Down, _) => ("Normal", "ScaledDown"),
        };
        let mut note = format!(
            "{} {} -> {} replicas ({}; demand {})",
            decision.direction.as_str(),
            decision.from,
            decision.to,
            decision.reason.as_str(),
            decision.demand
        );
        if !decision.revived.is_empty() {
            note.push_str(&format!("; took back {}", decision.revived.join(", ")));
        }
        if !decision.drained.is_empty() {
            note.push_str(&format!("; drained {}", decision.drained.join(", ")));
        }
        if let Some(lost) = &decision.lost {
            note.push_str(&format!("; lost {lost}"));
        }
        self.publish(regarding, type_, reason, "Scale", note).await
    }

    /// Records that the spec of `regarding` is refused: `reason` and `message` as its `Ready` condition
    /// says them.
    pub async fn refused(&self, regarding: &Regarding<'_>, reason: &str, message: &str) {
        self.publish(regarding, "Warning", reason, "Read", message.to_owned())
            .await
    }

    async fn publish(
        &self,
        regarding: &Regarding<'_>,
        type_: &str,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", regarding.key.name, now.as_nanosecond())),
                namespace: Some(regarding.key.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(type_.to_owned()),
            reason: Some(reason.to_owned()),
            action: Some(action.to_owned()),
            note: Some(note),
            regarding: Some(ObjectReference {
                api_version: Some("tideway.dev/v1alpha1".to_owned()),
                kind: Some("TidewayApp".to_owned()),
                namespace: Some(regarding.key.namespace.clone()),
                name: Some(regarding.key.name.clone()),
                uid: regarding.uid.map(str::to_owned),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(CONTROLLER.to_owned()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &regarding.key.namespace);
        if let Err(error) = events.create(&PostParams::default(), &event).await {
            self.metrics.api_error("create", "events");
            warn!(namespace = %regarding.key.namespace, resource = %regarding.key.name, %error, "Event not recorded");
        }
    }
}
