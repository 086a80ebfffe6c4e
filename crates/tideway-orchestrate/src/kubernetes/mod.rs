//! Kubernetes mode: an app's replicas are the pods of a Deployment, reached through the EndpointSlices of
//! its Service and scaled through the Deployment's `scale`, all through the API server with `kube`.

mod endpoints;
mod leader;
mod orchestrator;
mod permissions;
mod scale;
mod watch;

pub use endpoints::{EndpointChange, EndpointReplicas, EndpointView, PortRef, endpoints};
pub use leader::{Election, elect};
pub use orchestrator::{KubernetesOrchestrator, Target};
pub use permissions::{PERMISSIONS, Permission};
pub use scale::{DeploymentScale, POD_DELETION_COST};
pub use watch::watch_endpoints;
