//! etcd's v2 JSON, typed.

use serde::Deserialize;

/// A key or directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Node {
    /// Its key.
    #[serde(default)]
    pub key: String,
    /// Its value (keys only).
    #[serde(default)]
    pub value: Option<String>,
    /// Whether it is a directory.
    #[serde(default)]
    pub dir: bool,
    /// Seconds to live, if it has a TTL.
    #[serde(default)]
    pub ttl: Option<i64>,
    /// When it expires (RFC 3339), if it has a TTL.
    #[serde(default)]
    pub expiration: Option<String>,
    /// Index of its creation.
    #[serde(rename = "createdIndex", default)]
    pub created_index: u64,
    /// Index of its last change.
    #[serde(rename = "modifiedIndex", default)]
    pub modified_index: u64,
    /// Children (listings).
    #[serde(default)]
    pub nodes: Vec<Node>,
}

/// The answer to a keys request or a watch event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Response {
    /// `get`, `set`, `create`, `update`, `delete`, `expire`, `compareAndSwap`,
    /// `compareAndDelete`; empty for a watch poll that ended without an event.
    #[serde(default)]
    pub action: String,
    /// The node acted on.
    #[serde(default)]
    pub node: Node,
    /// Its previous state, for changes.
    #[serde(rename = "prevNode", default)]
    pub prev_node: Option<Node>,
    /// `X-Etcd-Index` of the answer.
    #[serde(skip)]
    pub etcd_index: u64,
}

/// A cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    /// Its id (hex).
    pub id: String,
    /// Its name (empty until it started).
    #[serde(default)]
    pub name: String,
    /// Peer URLs.
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    /// Client URLs.
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
}
