//! A Deployment's replica count, set through its `scale` subresource (`autoscaling/v1`), and the removal of
//! exactly the pod a scale-down drained: the pod is marked the cheapest to delete
//! (`controller.kubernetes.io/pod-deletion-cost`) just before the count is lowered by one, so that the
//! ReplicaSet controller picks it among the ready pods.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

/// The annotation the ReplicaSet controller ranks ready pods by when it scales down (lowest goes first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The lowest cost there is: below any a user may have set.
const CHEAPEST: i32 = i32::MIN;

/// One Deployment's scale.
#[derive(Clone)]
pub struct DeploymentScale {
    deployments: Api<Deployment>,
    pods: Api<Pod>,
    name: String,
}

impl DeploymentScale {
    /// The scale of Deployment `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        DeploymentScale {
            deployments: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client, namespace),
            name: name.to_owned(),
        }
    }

    /// The Deployment's `spec.replicas` now.
    pub async fn replicas(&self) -> Result<u32, kube::Error> {
        let scale = self.deployments.get_scale(&self.name).await?;
        let replicas = scale.spec.and_then(|spec| spec.replicas).unwrap_or(0);
        Ok(u32::try_from(replicas).unwrap_or(0))
    }

    /// Sets `spec.replicas` to `replicas`.
    pub async fn set(&self, replicas: u32) -> Result<(), kube::Error> {
        let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
        self.deployments
            .patch_scale(&self.name, &PatchParams::default(), &patch)
            .await
            .map(drop)
    }

    /// Removes the drained pod `pod`: marks it the cheapest to delete, then lowers `spec.replicas` from
    /// `replicas` by one. Whether the pod that goes is this one is for the caller to see (informer races
    /// and pods not ready yet can make the ReplicaSet controller pick another); if another goes, the
    /// caller clears this pod's mark with [`DeploymentScale::unmark`].
    ///
    /// A pod that is gone already (it died after its drain) needs no mark: the count is lowered all the
    /// same, so that its replacement is not kept.
    pub async fn remove(&self, pod: &str, replicas: u32) -> Result<(), kube::Error> {
        match self.mark(pod, Some(CHEAPEST)).await {
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            marked => marked?,
        }
        self.set(replicas.saturating_sub(1)).await
    }

    /// The Deployment's pods that carry tideway's mark (the cheapest cost there is): each is being removed,
    /// or was when an instance that removed it stopped.
    pub async fn marked(&self) -> Result<Vec<String>, kube::Error> {
        let scale = self.deployments.get_scale(&self.name).await?;
        let selector = scale
            .status
            .and_then(|status| status.selector)
            .unwrap_or_default();
        let pods = self.pods.list(&ListParams::default().labels(&selector)).await?;
        let cheapest = CHEAPEST.to_string();
        let marked = pods.items.into_iter().filter(|pod| {
            let annotations = pod.metadata.annotations.as_ref();
            annotations.and_then(|a| a.get(POD_DELETION_COST)) == Some(&cheapest)
        });
        Ok(marked.filter_map(|pod| pod.metadata.name).collect())
    }

    /// Clears the deletion-cost mark of `pod`, which stays: no stale mark is left behind.
    pub async fn unmark(&self, pod: &str) -> Result<(), kube::Error> {
        self.mark(pod, None).await
    }

    async fn mark(&self, pod: &str, cost: Option<i32>) -> Result<(), kube::Error> {
        let value = cost.map(|cost| cost.to_string());
        let patch = Patch::Merge(json!({ "metadata": { "annotations": { POD_DELETION_COST: value } } }));
        self.pods
            .patch(pod, &PatchParams::default(), &patch)
            .await
            .map(drop)
    }
}
