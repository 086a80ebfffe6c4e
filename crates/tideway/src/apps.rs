//! From configured apps to live ones: a core [`App`] per `[[app]]`, its replicas, and the routing table.

use std::sync::Arc;

use tideway_config::{AppConfig, Backend};
use tideway_core::App;
use tideway_orchestrate::static_replicas;
use tideway_proxy::{Route, RouteTable, RuntimeClock};

/// Builds every configured app with its replicas, and the routing table over them.
pub(crate) fn build(configs: &[AppConfig], clock: RuntimeClock) -> RouteTable {
    RouteTable::new(configs.iter().map(|config| {
        let app = App::new(config.name.as_str(), config.policy.clone(), Arc::new(clock));
        match &config.backend {
            Backend::Static { addresses } => app.set_replicas(static_replicas(addresses, clock.now())),
        }
        Route {
            app,
            hosts: config.hosts.clone(),
            path_prefix: config.path_prefix.clone(),
        }
    }))
}
