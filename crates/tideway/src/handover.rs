//! The data plane asks the cluster for the sessions clients bring back through this instance
//! (`docs/glossary.md`, "handover").

use futures::future::BoxFuture;
use tideway_cluster::Cluster;
use tideway_core::{GaveUp, SessionId};
use tideway_proxy::SessionHolders;

/// The peers of [`Cluster`], as the proxy sees them: the instances that may hold a session.
pub(crate) struct Peers(pub(crate) Cluster);

impl SessionHolders for Peers {
    fn hand_over<'a>(&'a self, app: &'a str, id: SessionId) -> BoxFuture<'a, GaveUp> {
        Box::pin(self.0.hand_over(app, id))
    }
}
