//! The test cluster's API server: the REST paths and verbs of the Kubernetes API that tideway uses, with
//! the API server's conventions — `Status` bodies with their reasons, `409` on a stale `resourceVersion`,
//! watches as streams of JSON events that replay from a version, bookmarks, `410 Gone` from a compacted
//! version, the `status` and `scale` subresources.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::access::{Attempt, Verdict};
use super::discovery;
use super::patch::merge;
use super::store::{Change, Event, Key, Refused, Resource, Store};

/// Response body of the API server: a JSON document, or a watch's stream of events.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

/// What a request path names.
#[derive(Debug)]
struct Target {
    resource: Resource,
    version: String,
    /// `None`: every namespace (or a cluster-scoped resource).
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// Serves one request against `store`.
pub(crate) async fn handle(store: Store, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if let Some((code, seconds)) = store.faults().take_failure() {
        let reason = match code {
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            _ => "InternalError",
        };
        let mut response = status(code, reason, "an injected failure");
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(response);
    }
    let Some(target) = target(req.uri().path()) else {
        if let Some(document) = discovery::document(&store, req.uri().path()) {
            return Ok(json_response(StatusCode::OK, &document));
        }
        return Ok(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    let query = query(req.uri().query().unwrap_or_default());
    let method = req.method().clone();
    let attempt = Attempt {
        group: &target.resource.group,
        resource: match &target.subresource {
            Some(sub) => format!("{}/{sub}", target.resource.plural),
            None => target.resource.plural.clone(),
        },
        verb: verb(&method, target.name.is_some(), flag(&query, "watch")),
    };
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match store.access().check(authorization, &attempt) {
        Verdict::Allowed => {}
        Verdict::Unauthenticated => {
            return Ok(status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"));
        }
        Verdict::Forbidden => {
            let message = format!(
                "{} \"{}\" is forbidden: cannot {} resource \"{}\" in API group \"{}\"",
                attempt.resource,
                target.name.as_deref().unwrap_or_default(),
                attempt.verb,
                attempt.resource,
                attempt.group
            );
            return Ok(status(StatusCode::FORBIDDEN, "Forbidden", &message));
        }
    }
    let accept = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return Ok(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the request body broke off",
            ));
        }
    };
    let object = || serde_json::from_slice::<Value>(&body);
    if matches!(method, Method::PUT | Method::PATCH) && store.faults().take_conflict() {
        let name = target.name.clone().unwrap_or_default();
        return Ok(refusal(&target, &name, &Refused::Conflict));
    }
    let response = match (&method, &target.name) {
        (&Method::GET, None) if flag(&query, "watch") => watch(&store, &target, &query),
        (&Method::GET, None) => list(&store, &target, &query, &accept),
        (&Method::GET, Some(_)) => get(&store, &target),
        (&Method::POST, None) => match object() {
            Ok(object) => create(&store, &target, object),
            Err(error) => bad_request(&error),
        },
        (&Method::PUT, Some(_)) => match object() {
            Ok(object) => replace(&store, &target, object),
            Err(error) => bad_request(&error),
        },
        (&Method::PATCH, Some(_)) => match object() {
            Ok(patch) => patch_object(&store, &target, &content_type, patch),
            Err(error) => bad_request(&error),
        },
        (&Method::DELETE, Some(_)) => delete(&store, &target),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the method is not allowed here",
        ),
    };
    Ok(response)
}

/// The RBAC verb of a request.
fn verb(method: &Method, named: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

/// `/api/v1/…` or `/apis/{group}/{version}/…`, then `namespaces/{ns}/{plural}[/{name}[/{sub}]]` or
/// `{plural}[/{name}[/{sub}]]`.
fn target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, plural, rest @ ..] => (Some((*namespace).to_owned()), {
            let mut all = vec![*plural];
            all.extend_from_slice(rest);
            all
        }),
        rest => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    Some(Target {
        resource: Resource {
            group: group.to_owned(),
            plural: plural.to_owned(),
        },
        version: version.to_owned(),
        namespace,
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

impl Target {
    fn key(&self) -> Key {
        Key {
            resource: self.resource.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.name.clone().unwrap_or_default(),
        }
    }

    fn api_version(&self) -> String {
        if self.resource.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.resource.group, self.version)
        }
    }

    /// The kind of the resource's objects, for lists and bookmarks.
    fn kind(&self) -> String {
        let known = [
            ("deployments", "Deployment"),
            ("replicasets", "ReplicaSet"),
            ("pods", "Pod"),
            ("services", "Service"),
            ("secrets", "Secret"),
            ("endpointslices", "EndpointSlice"),
            ("leases", "Lease"),
            ("events", "Event"),
            ("namespaces", "Namespace"),
            ("tidewayapps", "TidewayApp"),
            ("customresourcedefinitions", "CustomResourceDefinition"),
        ];
        known
            .iter()
            .find(|(plural, _)| *plural == self.resource.plural)
            .map_or_else(
                || {
                    let singular = self.resource.plural.trim_end_matches('s');
                    let mut chars = singular.chars();
                    chars
                        .next()
                        .map(|first| first.to_uppercase().chain(chars).collect())
                        .unwrap_or_default()
                },
                |(_, kind)| (*kind).to_owned(),
            )
    }

    /// Whether the resource has a `status` subresource: writes of the object then never change its status.
    fn has_status(&self) -> bool {
        ["deployments", "replicasets", "pods", "tidewayapps"].contains(&self.resource.plural.as_str())
    }
}

fn get(store: &Store, target: &Target) -> Response<Body> {
    let key = target.key();
    let Some(object) = store.get(&key) else {
        return not_found(target);
    };
    match target.subresource.as_deref() {
        None | Some("status") => json_response(StatusCode::OK, &object),
        Some("scale") if target.resource.plural == "deployments" => {
            json_response(StatusCode::OK, &scale_of(&object))
        }
        Some(_) => not_found(target),
    }
}

/// A list of objects; as a `Table` if the client asks for one first and the resource has printer columns.
fn list(store: &Store, target: &Target, query: &[(String, String)], accept: &str) -> Response<Body> {
    store.listed();
    let (items, version) = store.list(&target.resource, target.namespace.as_deref());
    let selector = Selector::from_query(query);
    let items: Vec<Value> = items.into_iter().filter(|item| selector.matches(item)).collect();
    let wants_table = accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"));
    if wants_table
        && let Some(table) = discovery::table(store, &target.resource, &target.version, &items, version)
    {
        return json_response(StatusCode::OK, &table);
    }
    let list = json!({
        "apiVersion": target.api_version(),
        "kind": format!("{}List", target.kind()),
        "metadata": { "resourceVersion": version.to_string() },
        "items": items,
    });
    json_response(StatusCode::OK, &list)
}

fn create(store: &Store, target: &Target, object: Value) -> Response<Body> {
    let Some(name) = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value",
        );
    };
    let key = Key { name, ..target.key() };
    match store.create(&key, object) {
        Ok(created) => json_response(StatusCode::CREATED, &created),
        Err(refused) => refusal(target, &key.name, &refused),
    }
}

fn replace(store: &Store, target: &Target, object: Value) -> Response<Body> {
    write(store, target, |current| object_with(target, current, object))
}

fn patch_object(store: &Store, target: &Target, content_type: &str, patch: Value) -> Response<Body> {
    let supported = [
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];
    if !supported.iter().any(|t| content_type.starts_with(t)) {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "the test cluster takes merge patches (JSON merge, strategic merge read as JSON merge, apply)",
        );
    }
    if target.subresource.as_deref() == Some("scale") {
        let replicas = patch.pointer("/spec/replicas").cloned();
        return scale(
            store,
            target,
            replicas,
            patch.pointer("/metadata/resourceVersion").cloned(),
        );
    }
    write(store, target, |current| {
        let mut next = current.clone();
        merge(&mut next, &patch);
        object_with(target, current, next)
    })
}

/// The object a write of `target` leaves: `next`, with the status of `current` for a write of the object
/// itself, or `current` with the status of `next` for a write of its `status`.
fn object_with(target: &Target, current: &Value, mut next: Value) -> Value {
    match target.subresource.as_deref() {
        Some("status") => {
            let mut kept = current.clone();
            if let (Some(kept), Some(status)) = (kept.as_object_mut(), next.get("status")) {
                kept.insert("status".into(), status.clone());
            }
            if let Some(version) = next.pointer("/metadata/resourceVersion").cloned() {
                super::store::metadata(&mut kept).insert("resourceVersion".into(), version);
            }
            kept
        }
        _ if target.has_status() => {
            if let Some(map) = next.as_object_mut() {
                match current.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            next
        }
        _ => next,
    }
}

fn write(store: &Store, target: &Target, update: impl FnOnce(&Value) -> Value) -> Response<Body> {
    if target.subresource.as_deref().is_some_and(|sub| sub != "status") {
        return not_found(target);
    }
    let key = target.key();
    match store.update(&key, update) {
        Ok(object) => json_response(StatusCode::OK, &object),
        Err(refused) => refusal(target, &key.name, &refused),
    }
}

/// A write of `deployments/{name}/scale`: the Deployment's `spec.replicas`, as an `autoscaling/v1` `Scale`.
fn scale(store: &Store, target: &Target, replicas: Option<Value>, version: Option<Value>) -> Response<Body> {
    if target.resource.plural != "deployments" {
        return not_found(target);
    }
    let Some(replicas) = replicas.filter(|r| r.as_i64().is_some_and(|n| n >= 0)) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "spec.replicas: must be a number >= 0",
        );
    };
    let key = target.key();
    let updated = store.update(&key, |current| {
        let mut next = current.clone();
        merge(&mut next, &json!({ "spec": { "replicas": replicas } }));
        if let Some(version) = version {
            super::store::metadata(&mut next).insert("resourceVersion".into(), version);
        }
        next
    });
    match updated {
        Ok(object) => json_response(StatusCode::OK, &scale_of(&object)),
        Err(refused) => refusal(target, &key.name, &refused),
    }
}

/// A Deployment's `Scale`.
fn scale_of(deployment: &Value) -> Value {
    let meta = deployment.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let selector = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": { "replicas": deployment.pointer("/spec/replicas").cloned().unwrap_or(json!(1)) },
        "status": {
            "replicas": deployment.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

fn delete(store: &Store, target: &Target) -> Response<Body> {
    let key = target.key();
    match store.delete(&key) {
        Ok(object) => json_response(StatusCode::OK, &object),
        Err(refused) => refusal(target, &key.name, &refused),
    }
}

/// A watch: the changes after `resourceVersion` (or, without one, every object as `ADDED`), then the
/// changes as they come, as one JSON event per line, until `timeoutSeconds` or the client leaves.
fn watch(store: &Store, target: &Target, query: &[(String, String)]) -> Response<Body> {
    let selector = Selector::from_query(query);
    let bookmarks = flag(query, "allowWatchBookmarks");
    let timeout = value(query, "timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let from = value(query, "resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0);
    let (initial, after) = match from {
        Some(after) => (Vec::new(), after),
        None => {
            let (items, version) = store.list(&target.resource, target.namespace.as_deref());
            (items.into_iter().map(|item| ("ADDED", item)).collect(), version)
        }
    };
    let expired = from.is_some() && store.take_expiry();
    let Some((past, changes)) = store.changes_after(after).filter(|_| !expired) else {
        // The real API server answers a watch from a compacted version with an ERROR event, code 410.
        let expired = status_object(
            StatusCode::GONE,
            "Expired",
            &format!("too old resource version: {after}"),
        );
        let line = event_line("ERROR", &expired);
        return stream_response(futures::stream::iter([line]).boxed());
    };
    let scope = WatchScope {
        resource: target.resource.clone(),
        namespace: target.namespace.clone(),
        selector,
    };
    let first: Vec<Bytes> = initial
        .into_iter()
        .filter(|(_, item)| scope.selector.matches(item))
        .map(|(kind, item)| event_line(kind, &item))
        .chain(past.iter().filter_map(|event| scope.line(event)))
        .collect();
    let last = past.last().map_or(after, |event| event.version);
    let bookmark = (target.api_version(), target.kind());
    let mut ended = store.watch_end();
    ended.mark_unchanged();
    let stall = store.faults().stall();
    let deadline = tokio::time::Instant::now() + timeout;
    // What is sent first waits out a stall too.
    let (first_stall, first_ended) = (stall.clone(), ended.clone());
    let first = futures::stream::iter(first).filter_map(move |line| {
        let (mut stall, mut ended) = (first_stall.clone(), first_ended.clone());
        async move { unstalled(&mut stall, &mut ended, deadline).await.then_some(line) }
    });
    let live = futures::stream::unfold(
        (changes, last, deadline, store.clone(), ended),
        move |(mut changes, mut last, deadline, store, mut ended)| {
            let scope = scope.clone();
            let bookmark = bookmark.clone();
            let mut stall = stall.clone();
            async move {
                loop {
                    if !unstalled(&mut stall, &mut ended, deadline).await {
                        return None;
                    }
                    let tick = tokio::time::sleep(BOOKMARK_EVERY);
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => return None,
                        _ = ended.changed() => return None,
                        _ = stall.changed() => {}
                        () = tick, if bookmarks => {
                            let version = store.version().max(last);
                            let object = json!({
                                "apiVersion": bookmark.0,
                                "kind": bookmark.1,
                                "metadata": { "resourceVersion": version.to_string() },
                            });
                            return Some((event_line("BOOKMARK", &object), (changes, last, deadline, store, ended)));
                        }
                        received = changes.recv() => match received {
                            Ok(event) if event.version > last => {
                                // Received while a stall began: it waits with the rest.
                                if !unstalled(&mut stall, &mut ended, deadline).await {
                                    return None;
                                }
                                last = event.version;
                                if let Some(line) = scope.line(&event) {
                                    return Some((line, (changes, last, deadline, store, ended)));
                                }
                            }
                            Ok(_) => {}
                            // Fell behind: end the watch; the client resumes from its last version.
                            Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return None,
                        },
                    }
                }
            }
        },
    );
    stream_response(first.chain(live).boxed())
}

/// Waits while watches are stalled — sending nothing, staying open; `false` if the watch must end meanwhile
/// (its timeout, or the server ending every watch).
async fn unstalled(
    stall: &mut tokio::sync::watch::Receiver<bool>,
    ended: &mut tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
) -> bool {
    while *stall.borrow_and_update() {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return false,
            _ = ended.changed() => return false,
            _ = stall.changed() => {}
        }
    }
    true
}

/// What a watch covers.
#[derive(Clone)]
struct WatchScope {
    resource: Resource,
    namespace: Option<String>,
    selector: Selector,
}

impl WatchScope {
    /// The event line for `event`, if the watch covers it.
    fn line(&self, event: &Event) -> Option<Bytes> {
        let covered = event.key.resource == self.resource
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| &event.key.namespace == ns)
            && self.selector.matches(&event.object);
        let kind = match event.change {
            Change::Added => "ADDED",
            Change::Modified => "MODIFIED",
            Change::Deleted => "DELETED",
        };
        covered.then(|| event_line(kind, &event.object))
    }
}

/// Equality-based label and field selectors (`a=b,c=d`; fields `metadata.name` and `metadata.namespace`).
#[derive(Clone, Default)]
struct Selector {
    labels: Vec<(String, String)>,
    fields: Vec<(String, String)>,
}

impl Selector {
    fn from_query(query: &[(String, String)]) -> Self {
        let pairs = |key: &str| -> Vec<(String, String)> {
            value(query, key)
                .map(|s| {
                    s.split(',')
                        .filter_map(|pair| pair.split_once('='))
                        .map(|(k, v)| (k.trim_end_matches('=').to_owned(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default()
        };
        Selector {
            labels: pairs("labelSelector"),
            fields: pairs("fieldSelector"),
        }
    }

    fn matches(&self, object: &Value) -> bool {
        let labels_match = self.labels.iter().all(|(key, wanted)| {
            object
                .pointer("/metadata/labels")
                .and_then(|labels| labels.get(key))
                .and_then(Value::as_str)
                == Some(wanted.as_str())
        });
        let fields_match = self.fields.iter().all(|(field, wanted)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            object.pointer(&pointer).and_then(Value::as_str) == Some(wanted.as_str())
        });
        labels_match && fields_match
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": kind, "object": object }).to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

fn stream_response(lines: futures::stream::BoxStream<'static, Bytes>) -> Response<Body> {
    let frames = lines.map(|line| Ok::<_, Infallible>(Frame::data(line)));
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed_unsync(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A `Status` object, as the API server describes a failure.
fn status_object(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status_object(code, reason, message))
}

fn not_found(target: &Target) -> Response<Body> {
    let what = format!(
        "{}{} \"{}\" not found",
        target.resource.plural,
        if target.resource.group.is_empty() {
            String::new()
        } else {
            format!(".{}", target.resource.group)
        },
        target.name.as_deref().unwrap_or_default()
    );
    status(StatusCode::NOT_FOUND, "NotFound", &what)
}

fn refusal(target: &Target, name: &str, refused: &Refused) -> Response<Body> {
    let kind = format!(
        "{}{}",
        target.resource.plural,
        if target.resource.group.is_empty() {
            String::new()
        } else {
            format!(".{}", target.resource.group)
        }
    );
    match refused {
        Refused::NotFound => not_found(target),
        Refused::AlreadyExists => status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{kind} \"{name}\" already exists"),
        ),
        Refused::Conflict => status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        ),
    }
}

fn bad_request(error: &serde_json::Error) -> Response<Body> {
    status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &format!("the body is not JSON: {error}"),
    )
}

fn query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn value<'q>(query: &'q [(String, String)], key: &str) -> Option<&'q str> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn flag(query: &[(String, String)], key: &str) -> bool {
    value(query, key).is_some_and(|v| v == "true" || v == "1")
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escaped = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, escaped) {
            (_, Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
