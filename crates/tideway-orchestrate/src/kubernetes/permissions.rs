//! The API permissions Kubernetes mode uses, as RBAC rules grant them: one list, which the tests run with
//! (a client holding exactly these) and against which the Helm chart's RBAC is checked.

/// One permission: a verb on a resource (with its subresource after a slash) of an API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// The API group, `""` for the core group.
    pub group: &'static str,
    /// The resource, `deployments/scale` for a subresource.
    pub resource: &'static str,
    /// The verb.
    pub verb: &'static str,
}

const fn grant(group: &'static str, resource: &'static str, verb: &'static str) -> Permission {
    Permission {
        group,
        resource,
        verb,
    }
}

/// Every permission Kubernetes mode uses, and why.
pub const PERMISSIONS: &[Permission] = &[
    // Routing: a Service's endpoints, watched; with `[cluster] peer_service`, the other instances.
    grant("discovery.k8s.io", "endpointslices", "list"),
    grant("discovery.k8s.io", "endpointslices", "watch"),
    // Scaling: a Deployment's count, and changes of it by someone else, watched.
    grant("apps", "deployments/scale", "get"),
    grant("apps", "deployments/scale", "patch"),
    grant("apps", "deployments", "list"),
    grant("apps", "deployments", "watch"),
    // Scale-down: the drained pod marked the cheapest to delete, and the mark cleared; marks a leader
    // that stopped mid-removal left, found and cleared by the next.
    grant("", "pods", "patch"),
    grant("", "pods", "list"),
    // Apps declared as resources: watched; their status written by the leader.
    grant("tideway.dev", "tidewayapps", "list"),
    grant("tideway.dev", "tidewayapps", "watch"),
    grant("tideway.dev", "tidewayapps/status", "patch"),
    // Certificates of apps declared as resources (`tls.secretName`): each Secret named, watched.
    grant("", "secrets", "list"),
    grant("", "secrets", "watch"),
    // An Event per scaling decision on the resource.
    grant("events.k8s.io", "events", "create"),
    // Leader election: one Lease, read, made if missing, renewed or taken over.
    grant("coordination.k8s.io", "leases", "get"),
    grant("coordination.k8s.io", "leases", "create"),
    grant("coordination.k8s.io", "leases", "update"),
];
