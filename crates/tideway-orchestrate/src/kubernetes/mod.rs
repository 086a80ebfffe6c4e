//! Kubernetes mode: an app's replicas are the pods of a Deployment, reached through the EndpointSlices of
//! its Service, read through the API server with `kube`.

mod endpoints;
mod leader;
mod permissions;
mod scale;
mod watch;

pub use endpoints::{EndpointReplicas, EndpointView, PortRef, endpoints};
pub use leader::{Election, elect};
pub use permissions::{PERMISSIONS, Permission};
pub use scale::{DeploymentScale, POD_DELETION_COST};
pub use watch::watch_endpoints;
