//! The test cluster's object store: every object as JSON under its resource, namespace and name, one
//! `resourceVersion` counter for the whole store (as etcd's revision is for a real API server), and a
//! bounded history of changes that watches replay from and that is compacted like a real one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::access::Access;
use super::faults::Faults;

/// How many changes the store remembers for watches; a watch from before them gets `410 Gone`.
const HISTORY: usize = 1000;

/// Which collection an object lives in: its API group (`""` for the core group) and plural resource name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    /// The API group, `""` for the core group (`/api/v1`).
    pub group: String,
    /// The plural, lower-case resource name (`deployments`).
    pub plural: String,
}

/// An object's place in the store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub(crate) resource: Resource,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// What a change did, as a watch event says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Added,
    Modified,
    Deleted,
}

/// One change of the store: the object after it (before it, for a deletion), at `version`.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub(crate) version: u64,
    pub(crate) change: Change,
    pub(crate) key: Key,
    pub(crate) object: Value,
}

/// Why a write was refused, in the API server's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No such object (404 `NotFound`).
    NotFound,
    /// The object exists already (409 `AlreadyExists`).
    AlreadyExists,
    /// The write named a `resourceVersion` that is not the object's (409 `Conflict`).
    Conflict,
}

/// The store, shared by the API server's connections and the controllers.
#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<Event>,
    /// Moved on to end every open watch, as an API server does now and then.
    watches_ended: Arc<watch::Sender<u64>>,
    /// LIST requests served, for tests of clients that must (or must not) list again.
    lists: Arc<AtomicU64>,
    /// The next watch that resumes from a version gets `410 Gone` (an injected fault).
    expire_next_watch: Arc<AtomicBool>,
    /// The other faults in force.
    faults: Arc<Faults>,
    /// The tokens and what each may do.
    access: Arc<Access>,
}

struct Inner {
    objects: BTreeMap<Key, Value>,
    version: u64,
    history: VecDeque<Event>,
    /// The oldest version a watch may start after; older ones were compacted away.
    compacted: u64,
    uids: u64,
}

impl Store {
    pub(crate) fn new() -> Self {
        Store {
            inner: Arc::new(Mutex::new(Inner {
                objects: BTreeMap::new(),
                version: 1,
                history: VecDeque::new(),
                compacted: 1,
                uids: 0,
            })),
            changes: broadcast::channel(4 * HISTORY).0,
            watches_ended: Arc::new(watch::channel(0).0),
            lists: Arc::default(),
            expire_next_watch: Arc::default(),
            faults: Arc::default(),
            access: Arc::default(),
        }
    }

    /// The tokens the cluster knows.
    pub(crate) fn access(&self) -> &Access {
        &self.access
    }

    /// The faults the API server shows.
    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Makes the next watch that resumes from a version get `410 Gone`.
    pub(crate) fn expire_next_watch(&self) {
        self.expire_next_watch.store(true, Ordering::SeqCst);
    }

    /// Whether this watch is the one to get `410 Gone`.
    pub(crate) fn take_expiry(&self) -> bool {
        self.expire_next_watch.swap(false, Ordering::SeqCst)
    }

    /// Counts one LIST request.
    pub(crate) fn listed(&self) {
        self.lists.fetch_add(1, Ordering::Relaxed);
    }

    /// LIST requests served so far.
    pub(crate) fn lists(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    /// Ends every open watch; clients resume from their last `resourceVersion`.
    pub(crate) fn end_watches(&self) {
        self.watches_ended.send_modify(|n| *n += 1);
    }

    /// Ready once [`Store::end_watches`] is called after this.
    pub(crate) fn watch_end(&self) -> watch::Receiver<u64> {
        self.watches_ended.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change is made whole before anything could panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The object at `key`.
    pub(crate) fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// The objects of `resource` (in `namespace`, or all), and the store's version they are current at.
    pub(crate) fn list(&self, resource: &Resource, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|(key, _)| &key.resource == resource && namespace.is_none_or(|ns| key.namespace == ns))
            .map(|(_, object)| object.clone())
            .collect();
        (items, inner.version)
    }

    /// The store's current version.
    pub(crate) fn version(&self) -> u64 {
        self.lock().version
    }

    /// Creates `object` at `key`, stamping its metadata (uid, creation time, generation 1, version).
    pub(crate) fn create(&self, key: &Key, mut object: Value) -> Result<Value, Refused> {
        let mut inner = self.lock();
        if inner.objects.contains_key(key) {
            return Err(Refused::AlreadyExists);
        }
        inner.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", inner.uids);
        let meta = metadata(&mut object);
        meta.insert("name".into(), json!(key.name));
        if !key.namespace.is_empty() {
            meta.insert("namespace".into(), json!(key.namespace));
        }
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        Ok(inner.commit(&self.changes, key, object, Change::Added))
    }

    /// Replaces the object at `key` with what `update` makes of it. The result keeps the object's
    /// identity; if it names a `resourceVersion`, that must be the object's. `generation` moves when the
    /// `spec` changed.
    pub(crate) fn update(&self, key: &Key, update: impl FnOnce(&Value) -> Value) -> Result<Value, Refused> {
        let mut inner = self.lock();
        let current = inner.objects.get(key).ok_or(Refused::NotFound)?.clone();
        let mut next = update(&current);
        let stated = next
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let actual = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        if stated.is_some_and(|stated| Some(stated.as_str()) != actual) {
            return Err(Refused::Conflict);
        }
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let spec_changed = current.get("spec") != next.get("spec");
        let meta = metadata(&mut next);
        for field in ["name", "namespace", "uid", "creationTimestamp"] {
            match current.pointer(&format!("/metadata/{field}")) {
                Some(value) => meta.insert(field.into(), value.clone()),
                None => meta.remove(field),
            };
        }
        meta.insert(
            "generation".into(),
            json!(if spec_changed { generation + 1 } else { generation }),
        );
        if next == current {
            return Ok(current);
        }
        Ok(inner.commit(&self.changes, key, next, Change::Modified))
    }

    /// Deletes the object at `key`, returning it as it was.
    pub(crate) fn delete(&self, key: &Key) -> Result<Value, Refused> {
        let mut inner = self.lock();
        let object = inner.objects.get(key).ok_or(Refused::NotFound)?.clone();
        Ok(inner.commit(&self.changes, key, object, Change::Deleted))
    }

    /// The changes after `after` (a `resourceVersion`) and a subscription to those to come — or `None` if
    /// changes after `after` were compacted away. The two never miss or repeat a change: the
    /// subscription is taken under the same lock as the history.
    pub(crate) fn changes_after(&self, after: u64) -> Option<(Vec<Event>, broadcast::Receiver<Event>)> {
        let inner = self.lock();
        if after < inner.compacted {
            return None;
        }
        let receiver = self.changes.subscribe();
        let past = inner
            .history
            .iter()
            .filter(|e| e.version > after)
            .cloned()
            .collect();
        Some((past, receiver))
    }
}

impl Inner {
    /// Stamps a new version on `object`, stores (or removes) it, and tells the history and the watches.
    fn commit(
        &mut self,
        changes: &broadcast::Sender<Event>,
        key: &Key,
        mut object: Value,
        change: Change,
    ) -> Value {
        self.version += 1;
        let version = self.version;
        metadata(&mut object).insert("resourceVersion".into(), json!(version.to_string()));
        if change == Change::Deleted {
            self.objects.remove(key);
        } else {
            self.objects.insert(key.clone(), object.clone());
        }
        let event = Event {
            version,
            change,
            key: key.clone(),
            object: object.clone(),
        };
        if self.history.len() == HISTORY
            && let Some(oldest) = self.history.pop_front()
        {
            self.compacted = oldest.version;
        }
        self.history.push_back(event.clone());
        // Nobody watching is fine.
        let _ = changes.send(event);
        object
    }
}

/// The `metadata` map of `object`, made one if it is missing or not a map.
pub(crate) fn metadata(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let Some(map) = object.as_object_mut() else {
        unreachable!("made an object above")
    };
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    match meta.as_object_mut() {
        Some(meta) => meta,
        None => unreachable!("made an object above"),
    }
}

/// Now as the API server writes timestamps (RFC 3339, seconds, UTC).
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}
