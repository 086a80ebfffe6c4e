//! Apps declared as `TidewayApp` resources: watched (never polled), read one by one by the file's rules,
//! and set beside the file's apps. A resource that cannot be an app — a spec the rules refuse, a name or a
//! route another app has — is refused alone, with the field and the reason for its status; the others,
//! and the file's apps, are not disturbed.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tideway_config::{AppConfig, FieldError, ResourceScope};
use tideway_core::Policy;
use tracing::warn;

use super::metrics::KubernetesMetrics;
use super::resource::{TidewayApp, TidewayAppSpec};

/// A `TidewayApp` by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// Its namespace.
    pub namespace: String,
    /// Its name, which is the app's.
    pub name: String,
}

/// A resource taken as an app.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredApp {
    /// Which resource.
    pub key: ResourceKey,
    /// The spec's generation the app is of, for the status's `observedGeneration`.
    pub generation: Option<i64>,
    /// The resource's `uid`, for its Events.
    pub uid: Option<String>,
    /// The app, as if it were in the file.
    pub config: AppConfig,
}

/// A resource that cannot be an app, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedResource {
    /// Which resource.
    pub key: ResourceKey,
    /// The spec's generation refused.
    pub generation: Option<i64>,
    /// The resource's `uid`, for its Events.
    pub uid: Option<String>,
    /// `InvalidSpec`, `NameTaken` or `RouteTaken`: the reason of its `Ready` condition.
    pub reason: &'static str,
    /// Every problem, each naming its field under `spec`.
    pub message: String,
}

/// The resources, sorted into apps and refusals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolution {
    /// Resources taken as apps, oldest first.
    pub apps: Vec<DeclaredApp>,
    /// Resources that are not apps.
    pub refused: Vec<RefusedResource>,
}

/// The `TidewayApp` resources in `scope`, all of them each time one changes: the first once they were
/// first listed. Watch failures (the CRD not installed, say) are logged, counted and retried with backoff;
/// they end nothing.
pub fn watch_apps(
    client: Client,
    scope: ResourceScope,
    metrics: Arc<KubernetesMetrics>,
) -> impl Stream<Item = Vec<Arc<DynamicObject>>> + Send + 'static {
    let resource = ApiResource::erase::<TidewayApp>(&());
    let api: Api<DynamicObject> = match scope {
        ResourceScope::Cluster => Api::all_with(client, &resource),
        ResourceScope::Namespace | ResourceScope::Off => {
            let namespace = client.default_namespace().to_owned();
            Api::namespaced_with(client, &namespace, &resource)
        }
    };
    let writer = reflector::store::Writer::new(resource);
    let reader = writer.as_reader();
    // Objects are read one by one, as dynamic ones: a resource whose spec does not fit the type is that
    // resource's problem, not a failed listing of all of them.
    reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .filter_map(move |event| {
            let seen = match event {
                Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                    Some(reader.state())
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
                Err(error) => {
                    let verb = match error {
                        watcher::Error::InitialListFailed(_) => "list",
                        _ => "watch",
                    };
                    metrics.api_error(verb, "tidewayapps");
                    metrics.watch_restart("tidewayapps");
                    warn!(%error, "TidewayApp watch failed (is the CRD installed? `tideway crd`); the apps seen last stay in force");
                    None
                }
            };
            std::future::ready(seen)
        })
}

/// Sorts `resources` into apps and refusals, beside the file's apps `file`: a file app keeps its name and
/// routes; among resources the older keeps them (then the first by namespace and name). Keys a spec leaves
/// out fall back to `defaults`.
pub fn resolve(file: &[AppConfig], resources: &[Arc<DynamicObject>], defaults: &Policy) -> Resolution {
    let mut ordered: Vec<&DynamicObject> = resources.iter().map(AsRef::as_ref).collect();
    ordered.sort_by_key(|object| (object.creation_timestamp(), key(object)));
    let mut resolution = Resolution::default();
    for object in ordered {
        let key = key(object);
        let generation = object.metadata.generation;
        let uid = object.metadata.uid.clone();
        let refuse = |reason, message| RefusedResource {
            key: key.clone(),
            generation,
            uid: uid.clone(),
            reason,
            message,
        };
        let config = match read(object, &key, defaults) {
            Ok(config) => config,
            Err(problems) => {
                resolution.refused.push(refuse("InvalidSpec", problems));
                continue;
            }
        };
        if let Some(holder) = holder(&config.name, file, &resolution.apps) {
            let message = format!(
                "metadata.name: app \"{}\" is already declared by {holder}",
                config.name
            );
            resolution.refused.push(refuse("NameTaken", message));
            continue;
        }
        let accepted = resolution.apps.iter().map(|app| &app.config);
        if let Some(taken) = config.route_taken("spec", file.iter().chain(accepted)) {
            resolution.refused.push(refuse("RouteTaken", taken.to_string()));
            continue;
        }
        resolution.apps.push(DeclaredApp {
            key,
            generation,
            uid,
            config,
        });
    }
    resolution
}

/// Who declares app `name` already, if anyone: a file app, or a resource taken before.
fn holder(name: &str, file: &[AppConfig], apps: &[DeclaredApp]) -> Option<String> {
    if file.iter().any(|app| app.name == name) {
        return Some("an app of the configuration file".to_owned());
    }
    let app = apps.iter().find(|app| app.config.name == name)?;
    Some(format!("TidewayApp {}/{}", app.key.namespace, app.key.name))
}

fn key(object: &DynamicObject) -> ResourceKey {
    ResourceKey {
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
    }
}

/// The app `object` declares, or every problem with its spec, each naming its field.
fn read(object: &DynamicObject, key: &ResourceKey, defaults: &Policy) -> Result<AppConfig, String> {
    let spec = object.data.get("spec").cloned().unwrap_or_default();
    let spec: TidewayAppSpec = serde_path_to_error::deserialize(spec).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        format!("{field}: {}", error.into_inner())
    })?;
    spec.app(&key.name, &key.namespace, defaults).map_err(|problems| {
        problems
            .iter()
            .map(FieldError::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[cfg(test)]
mod tests;
