//! Kubernetes mode: an app's replicas are the pods of a Deployment, reached through the EndpointSlices of
//! its Service and scaled through the Deployment's `scale`, all through the API server with `kube`.

mod api_server;
mod apps;
mod endpoints;
mod events;
mod leader;
mod metrics;
mod orchestrator;
mod permissions;
// `KubeSchema` copies the spec into a private module of its own to derive its schema: the copy is what the
// lint sees as unreachable.
#[allow(unreachable_pub)]
mod resource;
mod scale;
mod status;
mod watch;

pub use api_server::{ApiServer, identity};
pub use apps::{DeclaredApp, RefusedResource, Resolution, ResourceKey, resolve, watch_apps};
pub use endpoints::{EndpointChange, EndpointReplicas, EndpointView, endpoints};
pub use events::{AppEvents, Regarding};
pub use leader::{Election, elect};
pub use metrics::KubernetesMetrics;
pub use orchestrator::{KubernetesOrchestrator, Target};
pub use permissions::{PERMISSIONS, Permission};
pub use resource::{
    AffinityName, BalanceName, Condition, DecisionStatus, DeploymentRef, TidewayApp, TidewayAppSpec,
    TidewayAppStatus, TlsSecretRef,
};
pub use scale::{DeploymentScale, POD_DELETION_COST};
pub use status::StatusWriter;
pub use tideway_config::PortRef;
pub use watch::{TlsSecret, watch_endpoints, watch_replicas, watch_tls_secret};
