//! What the data plane keeps per app and per replica, keyed by the core's ids: the core stores nothing it
//! does not know about.
//!
//! Both tables are read on every request and written once per app or replica, so each is a map swapped
//! whole: readers never lock, and a writer copies the map, leaving out the entries whose app or replica is
//! gone.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use arc_swap::ArcSwap;
use tideway_core::{App, AppId, Replica, ReplicaId};

use crate::app_link::AppLink;
use crate::metrics::ProxyMetrics;
use crate::upstream::ReplicaLink;

/// The data plane's per-app and per-replica state.
pub(crate) struct Links {
    metrics: Arc<ProxyMetrics>,
    apps: Table<AppId, App, AppLink>,
    replicas: Table<ReplicaId, Replica, ReplicaLink>,
}

impl Links {
    /// Empty tables; app links take their metric handles from `metrics`.
    pub(crate) fn new(metrics: Arc<ProxyMetrics>) -> Self {
        Links {
            metrics,
            apps: Table::default(),
            replicas: Table::default(),
        }
    }

    /// The link of `app`, created on its first request.
    pub(crate) fn app(&self, app: &Arc<App>) -> Arc<AppLink> {
        self.apps
            .get_or_insert(app.id(), app, || AppLink::new(self.metrics.for_app(app.name())))
    }

    /// The link of `replica`, created on its first connection.
    pub(crate) fn replica(&self, replica: &Arc<Replica>) -> Arc<ReplicaLink> {
        self.replicas
            .get_or_insert(replica.id(), replica, ReplicaLink::new)
    }

    /// The link of the replica `id`, if a connection ever went there.
    pub(crate) fn existing_replica(&self, id: ReplicaId) -> Option<Arc<ReplicaLink>> {
        self.replicas.get(id)
    }
}

/// Links of type `L` for owners of type `O`, keyed by `K`.
struct Table<K, O, L> {
    entries: ArcSwap<HashMap<K, Entry<O, L>>>,
    /// Serializes writers, so two first requests for different owners never lose one's entry.
    writing: Mutex<()>,
}

struct Entry<O, L> {
    owner: Weak<O>,
    link: Arc<L>,
}

impl<K: Copy + Eq + Hash, O, L> Table<K, O, L> {
    fn get(&self, key: K) -> Option<Arc<L>> {
        self.entries.load().get(&key).map(|entry| Arc::clone(&entry.link))
    }

    fn get_or_insert(&self, key: K, owner: &Arc<O>, make: impl FnOnce() -> L) -> Arc<L> {
        if let Some(link) = self.get(key) {
            return link;
        }
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.entries.load_full();
        if let Some(entry) = current.get(&key) {
            return Arc::clone(&entry.link);
        }
        let link = Arc::new(make());
        let mut next: HashMap<K, Entry<O, L>> = current
            .iter()
            .filter(|(_, entry)| entry.owner.strong_count() > 0)
            .map(|(key, entry)| (*key, entry.clone()))
            .collect();
        next.insert(
            key,
            Entry {
                owner: Arc::downgrade(owner),
                link: Arc::clone(&link),
            },
        );
        self.entries.store(Arc::new(next));
        link
    }
}

impl<K, O, L> Default for Table<K, O, L> {
    fn default() -> Self {
        Table {
            entries: ArcSwap::from_pointee(HashMap::new()),
            writing: Mutex::new(()),
        }
    }
}

impl<O, L> Clone for Entry<O, L> {
    fn clone(&self) -> Self {
        Entry {
            owner: Weak::clone(&self.owner),
            link: Arc::clone(&self.link),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_made_once_and_found_again() {
        let table: Table<u32, u8, String> = Table::default();
        let owner = Arc::new(1);
        let first = table.get_or_insert(7, &owner, || "made".to_owned());
        let again = table.get_or_insert(7, &owner, || "made twice".to_owned());
        assert!(Arc::ptr_eq(&first, &again));
        assert!(table.get(8).is_none());
    }

    #[test]
    fn links_of_owners_that_are_gone_are_dropped_with_the_next_insert() {
        let table: Table<u32, u8, String> = Table::default();
        let gone = Arc::new(1);
        let link = table.get_or_insert(1, &gone, String::new);
        drop(gone);
        let stays = Arc::new(2);
        table.get_or_insert(2, &stays, String::new);
        assert!(table.get(1).is_none());
        assert_eq!(Arc::strong_count(&link), 1, "the table let go of it");
        assert!(table.get(2).is_some());
    }
}
