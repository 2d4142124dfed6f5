//! Events, the 1000-event history and the watcher hub, after etcd's v2 store.
//!
//! A write's event goes to the history and to every watcher at a prefix of its key that is
//! interested: one watching that exact key, a recursive one above it (unless a hidden `_`
//! segment lies between them), or — when a directory is deleted or expires — one watching
//! anything inside it. Non-stream watchers get one event and are removed; a watcher whose
//! queue is full is dropped (its request ends; the client re-watches from its last index).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::error::{EtcdError, EVENT_INDEX_CLEARED};
use super::node::NodeView;

/// How many events the history keeps (etcd: 1000).
pub const HISTORY_EVENTS_MAX: usize = 1000;
/// Events queued per watcher before it is dropped (etcd: 100).
pub const WATCHER_QUEUE_MAX: usize = 100;

/// A change to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// get, set, create, update, compareAndSwap, delete, compareAndDelete, expire.
    pub action: String,
    /// The node after the change.
    pub node: NodeView,
    /// The node before it.
    pub prev: Option<NodeView>,
    /// The store index when the event was produced (X-Etcd-Index).
    pub etcd_index: u64,
    /// A TTL refresh: kept in the history (for index continuity), never sent to watchers.
    pub refresh: bool,
    /// An internal write (membership, cluster version), outside the keys namespace: it takes
    /// an index, as in etcd, but no watcher ever sees it.
    #[serde(default)]
    pub internal: bool,
}

impl Event {
    /// The event's index (its node's modifiedIndex).
    pub fn index(&self) -> u64 {
        self.node.modified
    }

    /// Whether etcd answers it with 201 Created.
    pub fn is_created(&self) -> bool {
        self.action == "create" || (self.action == "set" && self.prev.is_none())
    }

    /// etcd's JSON with its trailing newline; `no_value` drops the nodes (noValueOnSuccess).
    pub fn to_json(&self, no_value: bool) -> String {
        let mut s = String::with_capacity(128);
        s.push_str("{\"action\":");
        s.push_str(&super::error::json_str(&self.action));
        if !no_value {
            s.push_str(",\"node\":");
            self.node.write_json(&mut s);
            if let Some(p) = &self.prev {
                s.push_str(",\"prevNode\":");
                p.write_json(&mut s);
            }
        }
        s.push_str("}\n");
        s
    }
}

/// A registered watcher.
#[derive(Debug)]
struct Watcher {
    recursive: bool,
    stream: bool,
    since: u64,
    tx: mpsc::Sender<Event>,
}

/// What a watch request holds: its events arrive on `rx`.
#[derive(Debug)]
pub struct Watch {
    /// Events (one for a plain watch; many for a stream).
    pub rx: mpsc::Receiver<Event>,
    /// The store index when the watch started (X-Etcd-Index).
    pub start_index: u64,
}

/// History and watchers.
#[derive(Debug, Default)]
pub struct Hub {
    /// The newest events.
    pub history: VecDeque<Event>,
    watchers: BTreeMap<String, Vec<Watcher>>,
}

/// Whether the part of `key` below `watch_path` has a hidden (`_`) segment.
fn is_hidden(watch_path: &str, key: &str) -> bool {
    let rest = if watch_path == "/" {
        key
    } else {
        key.strip_prefix(watch_path).unwrap_or(key)
    };
    rest.split('/').any(|seg| seg.starts_with('_'))
}

impl Hub {
    /// Watchers registered and still listening.
    pub fn watcher_count(&self) -> usize {
        self.watchers
            .values()
            .map(|v| v.iter().filter(|w| !w.tx.is_closed()).count())
            .sum()
    }

    /// Drop every watcher (their requests end).
    pub fn clear_watchers(&mut self) {
        self.watchers.clear();
    }

    fn add_to_history(&mut self, e: &Event) {
        if self.history.len() == HISTORY_EVENTS_MAX {
            self.history.pop_front();
        }
        self.history.push_back(e.clone());
    }

    /// Record a refresh event: history only.
    pub fn add_refresh(&mut self, e: &Event) {
        self.add_to_history(e);
    }

    /// Record `e` and wake the watchers interested in it. `deleted_paths` are the paths of
    /// every node a delete or expiry removed (watchers there are told even when not
    /// recursive).
    pub fn notify(&mut self, e: &Event, deleted_paths: &[String]) {
        self.add_to_history(e);
        if e.internal {
            return;
        }
        for p in deleted_paths {
            self.notify_at(e, p, true);
        }
        let key = e.node.key.clone();
        let mut path = String::from("/");
        self.notify_at(e, "/", false);
        for seg in key.split('/').filter(|s| !s.is_empty()) {
            if path != "/" {
                path.push('/');
            }
            path.push_str(seg);
            let p = path.clone();
            self.notify_at(e, &p, false);
        }
    }

    fn notify_at(&mut self, e: &Event, path: &str, deleted: bool) {
        let Some(list) = self.watchers.get_mut(path) else {
            return;
        };
        let original = e.node.key == path;
        if !original && !deleted && is_hidden(path, &e.node.key) {
            return;
        }
        list.retain(|w| {
            if w.tx.is_closed() {
                return false;
            }
            let interested = (w.recursive || original || deleted) && e.index() >= w.since;
            if !interested {
                return true;
            }
            match w.tx.try_send(e.clone()) {
                Ok(()) => w.stream,
                Err(_) => false, // full or gone: drop it
            }
        });
        if list.is_empty() {
            self.watchers.remove(path);
        }
    }

    /// The first event in the history at or after `index` for `key` (and below it when
    /// `recursive`), or 401 when the history no longer reaches back to `index`.
    pub fn scan(
        &self,
        key: &str,
        recursive: bool,
        index: u64,
        store_index: u64,
    ) -> Result<Option<Event>, EtcdError> {
        let Some(first) = self.history.front() else {
            return Ok(None);
        };
        let start = first.index();
        let last = self.history.back().map(|e| e.index()).unwrap_or(0);
        if index < start {
            return Err(EtcdError::new(
                EVENT_INDEX_CLEARED,
                format!("the requested history has been cleared [{start}/{index}]"),
                store_index,
            ));
        }
        if index > last {
            return Ok(None);
        }
        let prefix = if key.ends_with('/') {
            key.to_string()
        } else {
            format!("{key}/")
        };
        let skip = (index - start) as usize;
        for e in self.history.iter().skip(skip) {
            if e.refresh || e.internal {
                continue;
            }
            let mut ok = e.node.key == key || (recursive && e.node.key.starts_with(&prefix));
            if (e.action == "delete" || e.action == "expire")
                && e.prev.as_ref().is_some_and(|p| p.dir)
            {
                let pk = &e.prev.as_ref().expect("checked").key;
                ok = ok || key.starts_with(pk.as_str());
            }
            if ok {
                return Ok(Some(e.clone()));
            }
        }
        Ok(None)
    }

    /// Start a watch on `key` from `since` (the next index when None).
    pub fn watch(
        &mut self,
        key: &str,
        recursive: bool,
        stream: bool,
        since: Option<u64>,
        store_index: u64,
    ) -> Result<Watch, EtcdError> {
        let mut since = since.filter(|s| *s > 0).unwrap_or(store_index + 1);
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE_MAX);
        if let Some(mut e) = self.scan(key, recursive, since, store_index)? {
            e.etcd_index = store_index;
            since = e.index() + 1;
            let _ = tx.try_send(e);
            if !stream {
                return Ok(Watch {
                    rx,
                    start_index: store_index,
                });
            }
        }
        self.watchers
            .entry(key.to_string())
            .or_default()
            .push(Watcher {
                recursive,
                stream,
                since,
                tx,
            });
        Ok(Watch {
            rx,
            start_index: store_index,
        })
    }
}
