//! The v2 store: etcd's key tree with indexes, TTLs, watchers and the event history.
//!
//! Pure and synchronous: every member applies the same commands with the same log-clock
//! times and ends with the same tree (see [`Store::digest`]). Semantics follow etcd 3.4's
//! v2 store operation by operation (set, create, update, compare-and-swap, delete,
//! compare-and-delete, in-order create, expiry), including its error codes and causes.

mod error;
mod node;
mod stats;
#[cfg(test)]
mod tests;
mod watch;

use serde::{Deserialize, Serialize};

pub use error::*;
pub use node::{rfc3339_nano, Kind, Node, NodeView};
pub use stats::Stats;
pub use watch::{Event, Hub, Watch, HISTORY_EVENTS_MAX};

/// The HTTP method of a write (etcd's v2 request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteMethod {
    /// PUT: set, create, update, compare-and-swap.
    Put,
    /// POST: create in order.
    Post,
    /// DELETE: delete, compare-and-delete.
    Delete,
}

/// A replicated write, as etcd's v2 request carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Method.
    pub method: WriteMethod,
    /// Key, cleaned (`/a/b`; `/` for the root).
    pub key: String,
    /// Value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// `dir=true`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir: bool,
    /// `prevValue` ("" = none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prev_value: String,
    /// `prevIndex` (0 = none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prev_index: u64,
    /// `prevExist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_exist: Option<bool>,
    /// `recursive=true`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recursive: bool,
    /// `ttl` in seconds (None = permanent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// `refresh=true`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub refresh: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

/// The store.
#[derive(Debug)]
pub struct Store {
    root: Node,
    index: u64,
    stats: Stats,
    hub: Hub,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

/// What a snapshot holds: tree, index, history and stats (not watchers).
#[derive(Serialize, Deserialize)]
struct Saved {
    root: Node,
    index: u64,
    history: Vec<Event>,
    stats: Stats,
}

/// A copy of the store as a snapshot saves it ([`Store::copy`]).
pub struct StoreCopy(Saved);

impl StoreCopy {
    /// The snapshot bytes ([`Store::restore`] reads them).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("store serialises")
    }
}

/// Split `/a/b/c` into its segments.
fn segments(key: &str) -> impl Iterator<Item = &str> {
    key.split('/').filter(|s| !s.is_empty())
}

/// The parent directory and the last segment of a cleaned key.
fn split(key: &str) -> (String, String) {
    match key.rfind('/') {
        Some(0) | None => ("/".to_string(), key.trim_start_matches('/').to_string()),
        Some(i) => (key[..i].to_string(), key[i + 1..].to_string()),
    }
}

impl Store {
    /// An empty store (index 0).
    pub fn new() -> Store {
        Store {
            root: Node::dir(0, None),
            index: 0,
            stats: Stats::default(),
            hub: Hub::default(),
        }
    }

    /// The current etcd index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The node at `key`, or etcd's error naming the first missing path (or the file in the
    /// way).
    fn lookup(&self, key: &str) -> Result<&Node, EtcdError> {
        let mut cur = &self.root;
        let mut path = String::new();
        for seg in segments(key) {
            let Some(children) = cur.children() else {
                return Err(EtcdError::new(
                    NOT_DIR,
                    if path.is_empty() { "/".into() } else { path },
                    self.index,
                ));
            };
            path.push('/');
            path.push_str(seg);
            match children.get(seg) {
                Some(c) => cur = c,
                None => return Err(EtcdError::new(KEY_NOT_FOUND, path, self.index)),
            }
        }
        Ok(cur)
    }

    fn lookup_mut(&mut self, key: &str) -> Option<&mut Node> {
        let mut cur = &mut self.root;
        for seg in segments(key) {
            cur = cur.children_mut()?.get_mut(seg)?;
        }
        Some(cur)
    }

    /// The directory `dir`, creating missing directories (with index `new_index`); etcd's
    /// `walk` with `checkDir`.
    fn make_dirs(&mut self, dir: &str, new_index: u64) -> Result<&mut Node, EtcdError> {
        let index = self.index;
        let mut cur = &mut self.root;
        let mut path = String::new();
        for seg in segments(dir) {
            path.push('/');
            path.push_str(seg);
            let children = cur
                .children_mut()
                .expect("walk only descends into directories");
            let child = children
                .entry(seg.to_string())
                .or_insert_with(|| Node::dir(new_index, None));
            if !child.is_dir() {
                return Err(EtcdError::new(NOT_DIR, path, index));
            }
            cur = child;
        }
        Ok(cur)
    }

    fn expire_at(now_ms: u64, ttl: Option<u64>) -> Option<u64> {
        ttl.map(|t| now_ms.saturating_add(t.saturating_mul(1000)))
    }

    /// Apply one replicated write at log-clock time `now_ms`.
    pub fn apply(&mut self, c: &Command, now_ms: u64) -> Result<Event, EtcdError> {
        let r = match c.method {
            WriteMethod::Post => self.create(&c.key, c.dir, &c.value, true, c.ttl, now_ms),
            WriteMethod::Put => match c.prev_exist {
                Some(true) if c.prev_index == 0 && c.prev_value.is_empty() => {
                    self.update(c, now_ms)
                }
                Some(true) => self.compare_and_swap(c, now_ms),
                Some(false) => self.create(&c.key, c.dir, &c.value, false, c.ttl, now_ms),
                None if c.prev_index > 0 || !c.prev_value.is_empty() => {
                    self.compare_and_swap(c, now_ms)
                }
                None => self.set(c, now_ms),
            },
            WriteMethod::Delete if c.prev_index > 0 || !c.prev_value.is_empty() => {
                self.compare_and_delete(c, now_ms)
            }
            WriteMethod::Delete => self.delete(&c.key, c.dir, c.recursive, now_ms),
        };
        self.stats.count(c, &r);
        r
    }

    fn create(
        &mut self,
        key: &str,
        dir: bool,
        value: &str,
        unique: bool,
        ttl: Option<u64>,
        now_ms: u64,
    ) -> Result<Event, EtcdError> {
        self.internal_create(
            key,
            dir,
            value,
            unique,
            false,
            Self::expire_at(now_ms, ttl),
            "create",
            now_ms,
        )
        .inspect(|e| {
            self.hub.notify(e, &[]);
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn internal_create(
        &mut self,
        key: &str,
        dir: bool,
        value: &str,
        unique: bool,
        replace: bool,
        expire_ms: Option<u64>,
        action: &str,
        now_ms: u64,
    ) -> Result<Event, EtcdError> {
        let cur = self.index;
        let next = cur + 1;
        let key = if unique {
            node::join(key, &format!("{next:020}"))
        } else {
            key.to_string()
        };
        if key == "/" {
            return Err(EtcdError::new(ROOT_RONLY, "/", cur));
        }
        let (parent, name) = split(&key);
        let parent_node = self.make_dirs(&parent, next)?;
        let children = parent_node.children_mut().expect("a directory");
        let mut prev = None;
        if let Some(existing) = children.get(&name) {
            if !replace {
                return Err(EtcdError::new(NODE_EXIST, key, cur));
            }
            if existing.is_dir() {
                return Err(EtcdError::new(NOT_FILE, key, cur));
            }
            prev = Some(existing.view(&key, false, false, now_ms));
            children.remove(&name);
        }
        let n = if dir {
            Node::dir(next, expire_ms)
        } else {
            Node::file(value.to_string(), next, expire_ms)
        };
        let view = n.view(&key, false, false, now_ms);
        children.insert(name, n);
        self.index = next;
        Ok(Event {
            action: action.to_string(),
            node: view,
            prev,
            etcd_index: next,
            refresh: false,
            internal: false,
        })
    }

    fn set(&mut self, c: &Command, now_ms: u64) -> Result<Event, EtcdError> {
        let existing = match self.lookup(&c.key) {
            Ok(n) => Some((n.value().to_string(), n.view(&c.key, false, false, now_ms))),
            Err(e) if e.code == KEY_NOT_FOUND => {
                if c.refresh {
                    return Err(e);
                }
                None
            }
            Err(e) => return Err(e),
        };
        let value = match (&existing, c.refresh) {
            (Some((v, _)), true) => v.clone(),
            _ => c.value.clone(),
        };
        let mut e = self.internal_create(
            &c.key,
            c.dir,
            &value,
            false,
            true,
            Self::expire_at(now_ms, c.ttl),
            "set",
            now_ms,
        )?;
        if let Some((_, view)) = existing {
            e.prev = Some(view);
        }
        self.publish(e, c.refresh, &[])
    }

    fn publish(
        &mut self,
        mut e: Event,
        refresh: bool,
        deleted: &[String],
    ) -> Result<Event, EtcdError> {
        if refresh {
            e.refresh = true;
            self.hub.add_refresh(&e);
        } else {
            self.hub.notify(&e, deleted);
        }
        Ok(e)
    }

    fn update(&mut self, c: &Command, now_ms: u64) -> Result<Event, EtcdError> {
        if c.key == "/" {
            return Err(EtcdError::new(ROOT_RONLY, "/", self.index));
        }
        let cur = self.index;
        let next = cur + 1;
        let n = self.lookup(&c.key)?;
        if n.is_dir() && !c.value.is_empty() {
            return Err(EtcdError::new(NOT_FILE, c.key.clone(), cur));
        }
        let prev = n.view(&c.key, false, false, now_ms);
        let expire = Self::expire_at(now_ms, c.ttl);
        let node = self.lookup_mut(&c.key).expect("looked up above");
        node.modified = next;
        node.expire_ms = expire;
        if let Kind::File(v) = &mut node.kind {
            if !c.refresh {
                *v = c.value.clone();
            }
        }
        let view = node.view(&c.key, false, false, now_ms);
        self.index = next;
        let e = Event {
            action: "update".into(),
            node: view,
            prev: Some(prev),
            etcd_index: next,
            refresh: false,
            internal: false,
        };
        self.publish(e, c.refresh, &[])
    }

    fn compare(n: &Node, prev_value: &str, prev_index: u64, index: u64) -> Result<(), EtcdError> {
        let index_ok = prev_index == 0 || n.modified == prev_index;
        let value_ok = prev_value.is_empty() || n.value() == prev_value;
        let cause = match (value_ok, index_ok) {
            (true, true) => return Ok(()),
            (false, true) => format!("[{prev_value} != {}]", n.value()),
            (true, false) => format!("[{prev_index} != {}]", n.modified),
            (false, false) => format!(
                "[{prev_value} != {}] [{prev_index} != {}]",
                n.value(),
                n.modified
            ),
        };
        Err(EtcdError::new(TEST_FAILED, cause, index))
    }

    fn compare_and_swap(&mut self, c: &Command, now_ms: u64) -> Result<Event, EtcdError> {
        if c.key == "/" {
            return Err(EtcdError::new(ROOT_RONLY, "/", self.index));
        }
        let n = self.lookup(&c.key)?;
        if n.is_dir() {
            return Err(EtcdError::new(NOT_FILE, c.key.clone(), self.index));
        }
        Self::compare(n, &c.prev_value, c.prev_index, self.index)?;
        let prev = n.view(&c.key, false, false, now_ms);
        self.index += 1;
        let next = self.index;
        let expire = Self::expire_at(now_ms, c.ttl);
        let node = self.lookup_mut(&c.key).expect("looked up above");
        node.modified = next;
        node.expire_ms = expire;
        if !c.refresh {
            node.kind = Kind::File(c.value.clone());
        }
        let view = node.view(&c.key, false, false, now_ms);
        let e = Event {
            action: "compareAndSwap".into(),
            node: view,
            prev: Some(prev),
            etcd_index: next,
            refresh: false,
            internal: false,
        };
        self.publish(e, c.refresh, &[])
    }

    /// Remove the node at `key` (which exists), returning the paths of every node removed.
    fn remove(&mut self, key: &str) -> Vec<String> {
        let (parent, name) = split(key);
        let mut removed = Vec::new();
        if let Some(p) = self.lookup_mut(&parent).and_then(|p| p.children_mut()) {
            if let Some(n) = p.remove(&name) {
                collect_paths(&n, key, &mut removed);
            }
        }
        removed
    }

    fn delete(
        &mut self,
        key: &str,
        dir: bool,
        recursive: bool,
        now_ms: u64,
    ) -> Result<Event, EtcdError> {
        if key == "/" {
            return Err(EtcdError::new(ROOT_RONLY, "/", self.index));
        }
        let dir = dir || recursive;
        let n = self.lookup(key)?;
        if n.is_dir() {
            if !dir {
                return Err(EtcdError::new(NOT_FILE, key, self.index));
            }
            if !recursive && n.children().is_some_and(|c| !c.is_empty()) {
                return Err(EtcdError::new(DIR_NOT_EMPTY, key, self.index));
            }
        }
        let next = self.index + 1;
        let prev = n.view(key, false, false, now_ms);
        let node = NodeView {
            value: None,
            nodes: None,
            expiration_ms: None,
            ttl: 0,
            modified: next,
            ..prev.clone()
        };
        let removed = self.remove(key);
        self.index = next;
        let e = Event {
            action: "delete".into(),
            node,
            prev: Some(prev),
            etcd_index: next,
            refresh: false,
            internal: false,
        };
        self.publish(e, false, &removed)
    }

    fn compare_and_delete(&mut self, c: &Command, now_ms: u64) -> Result<Event, EtcdError> {
        let n = self.lookup(&c.key)?;
        if n.is_dir() {
            return Err(EtcdError::new(NOT_FILE, c.key.clone(), self.index));
        }
        Self::compare(n, &c.prev_value, c.prev_index, self.index)?;
        let prev = n.view(&c.key, false, false, now_ms);
        self.index += 1;
        let next = self.index;
        let node = NodeView {
            value: None,
            nodes: None,
            expiration_ms: None,
            ttl: 0,
            modified: next,
            ..prev.clone()
        };
        let removed = self.remove(&c.key);
        let e = Event {
            action: "compareAndDelete".into(),
            node,
            prev: Some(prev),
            etcd_index: next,
            refresh: false,
            internal: false,
        };
        self.publish(e, false, &removed)
    }

    /// Delete every node whose expiration is at or before `now_ms`, each its own "expire"
    /// event and index, in (expiration, key) order.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Event> {
        let mut due = Vec::new();
        collect_expired(&self.root, "", now_ms, &mut due);
        due.sort();
        let mut events = Vec::new();
        for (_, key) in due {
            // An earlier expiry in this pass may have removed it with its parent.
            let Ok(n) = self.lookup(&key) else { continue };
            let prev = n.view(&key, false, false, now_ms);
            self.index += 1;
            let next = self.index;
            let node = NodeView {
                value: None,
                nodes: None,
                expiration_ms: None,
                ttl: 0,
                modified: next,
                ..prev.clone()
            };
            let removed = self.remove(&key);
            let e = Event {
                action: "expire".into(),
                node,
                prev: Some(prev),
                etcd_index: next,
                refresh: false,
                internal: false,
            };
            self.hub.notify(&e, &removed);
            self.stats.expire_count += 1;
            events.push(e);
        }
        events
    }

    /// An internal write (etcd keeps membership and the cluster version in its v2 store, so
    /// they take store indexes): the index moves on and the history records it, invisibly.
    pub fn internal_write(&mut self, what: &str) -> u64 {
        self.index += 1;
        let node = NodeView {
            key: what.to_string(),
            dir: false,
            value: None,
            nodes: None,
            expiration_ms: None,
            ttl: 0,
            modified: self.index,
            created: self.index,
        };
        let e = Event {
            action: "set".into(),
            node,
            prev: None,
            etcd_index: self.index,
            refresh: false,
            internal: true,
        };
        self.hub.notify(&e, &[]);
        self.index
    }

    /// Whether any node has a TTL.
    pub fn has_ttl_keys(&self) -> bool {
        self.next_expiry().is_some()
    }

    /// The earliest expiration in the tree.
    pub fn next_expiry(&self) -> Option<u64> {
        let mut due = Vec::new();
        collect_expired(&self.root, "", u64::MAX, &mut due);
        due.into_iter().map(|(t, _)| t).min()
    }

    /// A read (`GET`), as of this member's clock `now_ms` (for the TTL shown).
    pub fn get(
        &mut self,
        key: &str,
        recursive: bool,
        sorted: bool,
        now_ms: u64,
    ) -> Result<Event, EtcdError> {
        let _ = sorted; // children are kept sorted, so every listing is sorted
        let r = self.lookup(key).map(|n| {
            let shown = if key == "/" { "" } else { key };
            let view = n.view(shown, true, recursive, now_ms);
            Event {
                action: "get".into(),
                node: view,
                prev: None,
                etcd_index: self.index,
                refresh: false,
                internal: false,
            }
        });
        self.stats.count_get(r.is_ok());
        r
    }

    /// Start a watch (`wait=true`).
    pub fn watch(
        &mut self,
        key: &str,
        recursive: bool,
        stream: bool,
        since: Option<u64>,
    ) -> Result<Watch, EtcdError> {
        self.hub.watch(key, recursive, stream, since, self.index)
    }

    /// Watchers currently registered.
    pub fn watcher_count(&self) -> usize {
        self.hub.watcher_count()
    }

    /// `/v2/stats/store` JSON.
    pub fn stats_json(&self) -> String {
        self.stats.to_json(self.hub.watcher_count())
    }

    /// Serialise for a snapshot (tree, index, history, stats; not watchers).
    pub fn snapshot(&self) -> Vec<u8> {
        self.copy().encode()
    }

    /// What a snapshot of the store holds, copied cheaply (the tree is shared, see
    /// [`node::Kind::Dir`]): the Ready loop takes this and serialises it elsewhere.
    pub fn copy(&self) -> StoreCopy {
        StoreCopy(Saved {
            root: self.root.clone(),
            index: self.index,
            history: self.hub.history.iter().cloned().collect(),
            stats: self.stats.clone(),
        })
    }

    /// Rebuild from [`Store::snapshot`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<Store, String> {
        let saved: Saved =
            serde_json::from_slice(bytes).map_err(|e| format!("store snapshot: {e}"))?;
        let mut hub = Hub::default();
        hub.history = saved.history.into();
        Ok(Store {
            root: saved.root,
            index: saved.index,
            stats: saved.stats,
            hub,
        })
    }

    /// A stable digest of the tree and the index (FNV-1a over a canonical encoding): equal
    /// on every member that applied the same log.
    pub fn digest(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut feed = |b: &[u8]| {
            for x in b {
                h = (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3);
            }
        };
        feed(&self.index.to_le_bytes());
        digest_node(&self.root, &mut feed);
        h
    }
}

fn digest_node(n: &Node, feed: &mut impl FnMut(&[u8])) {
    feed(&n.created.to_le_bytes());
    feed(&n.modified.to_le_bytes());
    feed(&n.expire_ms.unwrap_or(0).to_le_bytes());
    match &n.kind {
        Kind::File(v) => {
            feed(b"f");
            feed(&(v.len() as u64).to_le_bytes());
            feed(v.as_bytes());
        }
        Kind::Dir(children) => {
            feed(b"d");
            feed(&(children.len() as u64).to_le_bytes());
            for (name, c) in children {
                feed(&(name.len() as u64).to_le_bytes());
                feed(name.as_bytes());
                digest_node(c, feed);
            }
        }
    }
}

fn collect_paths(n: &Node, path: &str, out: &mut Vec<String>) {
    if let Some(children) = n.children() {
        for (name, c) in children {
            collect_paths(c, &node::join(path, name), out);
        }
    }
    out.push(path.to_string());
}

fn collect_expired(n: &Node, path: &str, now_ms: u64, out: &mut Vec<(u64, String)>) {
    if let Some(children) = n.children() {
        for (name, c) in children {
            let p = node::join(if path.is_empty() { "/" } else { path }, name);
            if let Some(t) = c.expire_ms {
                if t <= now_ms {
                    out.push((t, p.clone()));
                }
            }
            collect_expired(c, &p, now_ms, out);
        }
    }
}
