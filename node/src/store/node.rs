//! The tree: nodes (files and directories) and their external views as etcd's JSON shows
//! them (`key, dir, value, nodes, expiration, ttl, modifiedIndex, createdIndex`, each omitted
//! when empty, exactly as Go's `omitempty` does).

use imbl::OrdMap;

use serde::{Deserialize, Serialize};

use super::error::json_str;

/// A node of the tree. Its path is implicit (the keys leading to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Index of the write that created it.
    pub created: u64,
    /// Index of the last write that changed it.
    pub modified: u64,
    /// When it expires (ms since the UNIX epoch, log clock); None = permanent.
    pub expire_ms: Option<u64>,
    /// A value or children.
    pub kind: Kind,
}

/// File or directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A key with a value.
    File(String),
    /// A directory, children by name (ordered: every member lists and hashes alike). A
    /// persistent map: cloning a tree shares it (a snapshot's copy costs O(1)), and a write
    /// copies only the path it changes.
    Dir(OrdMap<String, Node>),
}

impl Node {
    /// A new directory.
    pub fn dir(index: u64, expire_ms: Option<u64>) -> Node {
        Node {
            created: index,
            modified: index,
            expire_ms,
            kind: Kind::Dir(OrdMap::new()),
        }
    }

    /// A new file.
    pub fn file(value: String, index: u64, expire_ms: Option<u64>) -> Node {
        Node {
            created: index,
            modified: index,
            expire_ms,
            kind: Kind::File(value),
        }
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }

    /// The value of a file ("" for a directory).
    pub fn value(&self) -> &str {
        match &self.kind {
            Kind::File(v) => v,
            Kind::Dir(_) => "",
        }
    }

    /// Children of a directory.
    pub fn children(&self) -> Option<&OrdMap<String, Node>> {
        match &self.kind {
            Kind::Dir(c) => Some(c),
            Kind::File(_) => None,
        }
    }

    /// Mutable children of a directory.
    pub fn children_mut(&mut self) -> Option<&mut OrdMap<String, Node>> {
        match &mut self.kind {
            Kind::Dir(c) => Some(c),
            Kind::File(_) => None,
        }
    }

    /// The view of this node at `path`, as of `now_ms`. `recursive` includes grandchildren;
    /// a directory's own view lists its children only when `with_children`.
    pub fn view(&self, path: &str, with_children: bool, recursive: bool, now_ms: u64) -> NodeView {
        let (expiration_ms, ttl) = expiration_and_ttl(self.expire_ms, now_ms);
        let mut v = NodeView {
            key: path.to_string(),
            dir: self.is_dir(),
            value: None,
            nodes: None,
            expiration_ms,
            ttl,
            modified: self.modified,
            created: self.created,
        };
        match &self.kind {
            Kind::File(val) => v.value = Some(val.clone()),
            Kind::Dir(children) if with_children => {
                let list = children
                    .iter()
                    .filter(|(name, _)| !name.starts_with('_'))
                    .map(|(name, child)| {
                        child.view(&join(path, name), recursive, recursive, now_ms)
                    })
                    .collect();
                v.nodes = Some(list);
            }
            Kind::Dir(_) => {}
        }
        v
    }
}

/// `path/name` without doubling the root slash.
pub fn join(path: &str, name: &str) -> String {
    if path == "/" || path.is_empty() {
        format!("/{name}")
    } else {
        format!("{path}/{name}")
    }
}

/// etcd's remaining TTL: whole seconds, rounded up; 0 once expired (and then omitted).
pub fn expiration_and_ttl(expire_ms: Option<u64>, now_ms: u64) -> (Option<u64>, i64) {
    match expire_ms {
        None => (None, 0),
        Some(e) => {
            let left = e as i64 - now_ms as i64;
            let ttl = if left <= 0 { 0 } else { (left + 999) / 1000 };
            (Some(e), ttl)
        }
    }
}

/// A node as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Path ("" for the root, which etcd shows without a key).
    pub key: String,
    /// Whether it is a directory.
    pub dir: bool,
    /// Value (files).
    pub value: Option<String>,
    /// Children (directory listings).
    pub nodes: Option<Vec<NodeView>>,
    /// Expiration (ms since the UNIX epoch).
    pub expiration_ms: Option<u64>,
    /// Remaining seconds.
    pub ttl: i64,
    /// modifiedIndex.
    pub modified: u64,
    /// createdIndex.
    pub created: u64,
}

impl NodeView {
    /// etcd's JSON for this node.
    pub fn write_json(&self, out: &mut String) {
        out.push('{');
        let mut first = true;
        let mut field = |out: &mut String, name: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
        };
        if !self.key.is_empty() {
            field(out, "key");
            out.push_str(&json_str(&self.key));
        }
        if self.dir {
            field(out, "dir");
            out.push_str("true");
        }
        if let Some(v) = &self.value {
            field(out, "value");
            out.push_str(&json_str(v));
        }
        if let Some(nodes) = self.nodes.as_ref().filter(|n| !n.is_empty()) {
            field(out, "nodes");
            out.push('[');
            for (i, n) in nodes.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                n.write_json(out);
            }
            out.push(']');
        }
        if let Some(e) = self.expiration_ms {
            field(out, "expiration");
            out.push_str(&json_str(&rfc3339_nano(e)));
        }
        if self.ttl != 0 {
            field(out, "ttl");
            out.push_str(&self.ttl.to_string());
        }
        if self.modified != 0 {
            field(out, "modifiedIndex");
            out.push_str(&self.modified.to_string());
        }
        if self.created != 0 {
            field(out, "createdIndex");
            out.push_str(&self.created.to_string());
        }
        out.push('}');
    }
}

/// Time (ms since the UNIX epoch, UTC) as Go's RFC3339Nano: fraction without trailing zeros.
pub fn rfc3339_nano(ms: u64) -> String {
    let secs = ms / 1000;
    let frac = ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let mut y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    if mo <= 2 {
        y += 1;
    }
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}");
    if frac != 0 {
        let f = format!("{frac:03}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_go() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(1_795_920_357_361), "2026-11-29T02:45:57.361Z");
        assert_eq!(rfc3339_nano(951_782_400_500), "2000-02-29T00:00:00.5Z");
    }

    #[test]
    fn ttl_rounds_up_and_vanishes_once_expired() {
        assert_eq!(expiration_and_ttl(Some(30_000), 0), (Some(30_000), 30));
        assert_eq!(expiration_and_ttl(Some(30_000), 1), (Some(30_000), 30));
        assert_eq!(expiration_and_ttl(Some(30_000), 29_001), (Some(30_000), 1));
        assert_eq!(expiration_and_ttl(Some(30_000), 30_000), (Some(30_000), 0));
    }
}
