//! The v3 history format: serde types, one JSON object per line (see the module docs of
//! [`crate::v3`] for examples). Requests refuse unknown fields, so a request using
//! something the model does not know (sort orders, min/max revision filters,
//! `ignore_value`, ...) fails to parse instead of being checked with the wrong meaning.

use serde::{Deserialize, Serialize};

/// A key-value pair as `mvccpb.KeyValue` carries it (keys and values as strings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value (empty for `keys_only`).
    #[serde(default)]
    pub value: String,
    /// Revision of the put that created the key since its last delete.
    #[serde(default)]
    pub create_revision: i64,
    /// Revision of the last write.
    #[serde(default)]
    pub mod_revision: i64,
    /// Puts since creation (1 on create).
    #[serde(default)]
    pub version: i64,
    /// Lease ID (0: none).
    #[serde(default)]
    pub lease: i64,
}

/// `RangeRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RangeRequest {
    /// Key.
    pub key: String,
    /// Range end: empty = the key alone, `"\u0000"` = every key ≥ key, else [key, range_end).
    #[serde(default)]
    pub range_end: String,
    /// Revision to read at (≤ 0: current).
    #[serde(default)]
    pub revision: i64,
    /// Maximum kvs returned (0: no limit).
    #[serde(default)]
    pub limit: i64,
    /// Serializable (local) read.
    #[serde(default)]
    pub serializable: bool,
    /// Drop values.
    #[serde(default)]
    pub keys_only: bool,
    /// Only the count.
    #[serde(default)]
    pub count_only: bool,
}

/// `PutRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
    /// Lease ID (0: none).
    #[serde(default)]
    pub lease: i64,
    /// Return the previous kv.
    #[serde(default)]
    pub prev_kv: bool,
}

/// `DeleteRangeRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeleteRangeRequest {
    /// Key.
    pub key: String,
    /// Range end, as for [`RangeRequest::range_end`].
    #[serde(default)]
    pub range_end: String,
    /// Return the deleted kvs.
    #[serde(default)]
    pub prev_kv: bool,
}

/// `Compare.target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompareTarget {
    /// `version`.
    Version,
    /// `create_revision`.
    Create,
    /// `mod_revision`.
    Mod,
    /// `value`.
    Value,
    /// `lease`.
    Lease,
}

/// `Compare.result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompareResult {
    /// `==`.
    Equal,
    /// `>`.
    Greater,
    /// `<`.
    Less,
    /// `!=`.
    NotEqual,
}

/// A compare's operand: a number (VERSION, CREATE, MOD, LEASE) or a value (VALUE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Operand {
    /// A number.
    Int(i64),
    /// A value.
    Value(String),
}

/// `Compare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// What to compare.
    pub target: CompareTarget,
    /// How.
    pub result: CompareResult,
    /// Key.
    pub key: String,
    /// Range end (every key in the range must satisfy the compare).
    #[serde(default)]
    pub range_end: String,
    /// Against what.
    pub operand: Operand,
}

/// `TxnRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    /// Compares (all must hold for `success`).
    #[serde(default)]
    pub compares: Vec<Compare>,
    /// Ops run when every compare holds.
    #[serde(default)]
    pub success: Vec<Request>,
    /// Ops run otherwise.
    #[serde(default)]
    pub failure: Vec<Request>,
}

/// `CompactionRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CompactRequest {
    /// Compact up to this revision.
    pub revision: i64,
    /// `physical` (no effect on the model).
    #[serde(default)]
    pub physical: bool,
}

/// `LeaseRevokeRequest`; the checker also stands a lease's expiry for one (a revocation
/// the leader proposed: see [`crate::v3::lease`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LeaseRevokeRequest {
    /// Lease ID.
    pub id: i64,
    /// Every key the history ever put with this lease (filled in by the checker, never
    /// read from or written to a history): the keys a revocation may delete.
    #[serde(skip)]
    pub keys: Vec<String>,
}

/// A KV request (`RequestOp` inside a txn: `compact` and `lease_revoke` are not allowed
/// there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// `Range`.
    Range(RangeRequest),
    /// `Put`.
    Put(PutRequest),
    /// `DeleteRange`.
    DeleteRange(DeleteRangeRequest),
    /// `Txn`.
    Txn(TxnRequest),
    /// `Compact`.
    Compact(CompactRequest),
    /// `LeaseRevoke` (the Lease service's, not a KV request): deletes every key attached
    /// to the lease in one revision (none: no new revision) and ends the lease.
    LeaseRevoke(LeaseRevokeRequest),
}

/// `RangeResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RangeResponse {
    /// `header.revision`.
    pub header_revision: i64,
    /// The kvs.
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    /// Keys in the range (before `limit`).
    #[serde(default)]
    pub count: i64,
    /// Whether `limit` left kvs out.
    #[serde(default)]
    pub more: bool,
}

/// `PutResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PutResponse {
    /// `header.revision`.
    pub header_revision: i64,
    /// The previous kv (asked with `prev_kv`, and the key existed).
    #[serde(default)]
    pub prev_kv: Option<KeyValue>,
}

/// `DeleteRangeResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeleteRangeResponse {
    /// `header.revision`.
    pub header_revision: i64,
    /// Keys deleted.
    #[serde(default)]
    pub deleted: i64,
    /// The deleted kvs (asked with `prev_kv`).
    #[serde(default)]
    pub prev_kvs: Vec<KeyValue>,
}

/// `TxnResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TxnResponse {
    /// `header.revision`.
    pub header_revision: i64,
    /// Whether the compares held.
    #[serde(default)]
    pub succeeded: bool,
    /// One response per op of the branch taken.
    #[serde(default)]
    pub responses: Vec<Response>,
}

/// `CompactionResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CompactResponse {
    /// `header.revision`.
    pub header_revision: i64,
}

/// `LeaseRevokeResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LeaseRevokeResponse {
    /// `header.revision` (the store's revision after the revocation).
    pub header_revision: i64,
}

/// A KV response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// `Range`.
    Range(RangeResponse),
    /// `Put`.
    Put(PutResponse),
    /// `DeleteRange`.
    DeleteRange(DeleteRangeResponse),
    /// `Txn`.
    Txn(TxnResponse),
    /// `Compact`.
    Compact(CompactResponse),
    /// `LeaseRevoke`.
    LeaseRevoke(LeaseRevokeResponse),
}

impl Response {
    /// `header.revision`.
    pub fn header_revision(&self) -> i64 {
        match self {
            Response::Range(r) => r.header_revision,
            Response::Put(r) => r.header_revision,
            Response::DeleteRange(r) => r.header_revision,
            Response::Txn(r) => r.header_revision,
            Response::Compact(r) => r.header_revision,
            Response::LeaseRevoke(r) => r.header_revision,
        }
    }

    /// Whether this response shows a change to the store (a put, a delete of something,
    /// a txn whose branch did either), i.e. the request took a new revision. A lease
    /// revocation's response does not say (the checker decides, see `lin::classify_all`):
    /// taken as a change here.
    pub fn changed(&self) -> bool {
        match self {
            Response::LeaseRevoke(_) => true,
            Response::Put(_) => true,
            Response::DeleteRange(d) => d.deleted > 0,
            Response::Txn(t) => t.responses.iter().any(Response::changed),
            Response::Range(_) | Response::Compact(_) => false,
        }
    }
}

/// A gRPC error as a client sees it (`tonic::Status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrpcError {
    /// The code's name (`InvalidArgument`, `OutOfRange`, `Unavailable`, ...).
    pub code: String,
    /// The message (`etcdserver: mvcc: required revision has been compacted`, ...).
    #[serde(default)]
    pub message: String,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered.
    Ok(Response),
    /// An error known not to have been applied.
    Error(GrpcError),
    /// No answer (timeout, connection lost): may or may not have taken effect.
    Indeterminate,
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique id (reports name operations by it).
    pub id: u64,
    /// The client (one outstanding operation per client at a time).
    pub client: u64,
    /// The member the request was sent to (None: unknown).
    #[serde(default)]
    pub member: Option<u64>,
    /// Invocation time (ns).
    pub call_ns: u64,
    /// Return time (ns); None for an indeterminate operation the client gave up on
    /// without a time (it is then treated as returning after everything).
    #[serde(default)]
    pub return_ns: Option<u64>,
    /// The request.
    pub request: Request,
    /// The outcome.
    pub outcome: Outcome,
}

/// `WatchCreateRequest.filters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WatchFilter {
    /// No put events.
    Noput,
    /// No delete events.
    Nodelete,
}

/// A watch as created (`WatchCreateRequest`), by one watcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// Watcher id (unique in the history; responses name it).
    pub watcher: u64,
    /// Client.
    #[serde(default)]
    pub client: u64,
    /// Member.
    #[serde(default)]
    pub member: Option<u64>,
    /// When the create request was sent (ns).
    pub call_ns: u64,
    /// Key.
    pub key: String,
    /// Range end, as for [`RangeRequest::range_end`].
    #[serde(default)]
    pub range_end: String,
    /// Start revision (0: the revision after the current one).
    #[serde(default)]
    pub start_revision: i64,
    /// Events carry the previous kv.
    #[serde(default)]
    pub prev_kv: bool,
    /// Filters.
    #[serde(default)]
    pub filters: Vec<WatchFilter>,
}

/// `mvccpb.Event.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// A put.
    Put,
    /// A delete (the kv holds the key and the delete's revision as `mod_revision`).
    Delete,
}

/// `mvccpb.Event`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Type.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The kv after the event.
    pub kv: KeyValue,
    /// The kv before (with `prev_kv`, when the key existed).
    #[serde(default)]
    pub prev_kv: Option<KeyValue>,
}

/// One `WatchResponse` a watcher received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    /// Watcher id.
    pub watcher: u64,
    /// Receive time (ns).
    pub at_ns: u64,
    /// `header.revision`.
    #[serde(default)]
    pub header_revision: i64,
    /// `created`.
    #[serde(default)]
    pub created: bool,
    /// `canceled`.
    #[serde(default)]
    pub canceled: bool,
    /// `compact_revision` (a watch canceled because its start was compacted).
    #[serde(default)]
    pub compact_revision: i64,
    /// `fragment`.
    #[serde(default)]
    pub fragment: bool,
    /// Events.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// A lease grant (`LeaseGrantRequest` with the ID the client chose, and how it ended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// Client.
    #[serde(default)]
    pub client: u64,
    /// Member.
    #[serde(default)]
    pub member: Option<u64>,
    /// Lease ID asked for.
    pub lease: i64,
    /// TTL asked for (seconds).
    pub ttl: i64,
    /// Invocation time (ns).
    pub call_ns: u64,
    /// Return time (ns; None: no answer).
    #[serde(default)]
    pub return_ns: Option<u64>,
    /// The TTL granted (the answer's; None: refused or no answer).
    #[serde(default)]
    pub granted_ttl: Option<i64>,
    /// The error it was refused with (then the lease was not granted).
    #[serde(default)]
    pub error: Option<GrpcError>,
}

/// One answered KeepAlive (a request and its response on a `LeaseKeepAlive` stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseKeepAlive {
    /// Client.
    #[serde(default)]
    pub client: u64,
    /// Member whose stream carried it.
    #[serde(default)]
    pub member: Option<u64>,
    /// Lease ID.
    pub lease: i64,
    /// When the request was sent (ns).
    pub call_ns: u64,
    /// When the response arrived (ns).
    pub return_ns: u64,
    /// The TTL answered (0: the lease was not found, i.e. it had expired or was revoked).
    pub ttl: i64,
}

/// One line of a v3 history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// A KV operation.
    Op(Op),
    /// A watch created.
    Watch(Watch),
    /// A response a watcher received.
    WatchResponse(WatchResponse),
    /// A lease grant.
    LeaseGrant(LeaseGrant),
    /// An answered KeepAlive.
    LeaseKeepalive(LeaseKeepAlive),
    /// A member's process restarted at this time (its serializable reads may start over
    /// from what it had persisted).
    Restart {
        /// Member.
        member: u64,
        /// When (ns).
        at_ns: u64,
    },
}

/// A v3 history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// KV operations.
    pub ops: Vec<Op>,
    /// Watches created.
    pub watches: Vec<Watch>,
    /// Watch responses received, in the order each watcher received them.
    pub watch_responses: Vec<WatchResponse>,
    /// Member restarts (member, ns).
    pub restarts: Vec<(u64, u64)>,
    /// Lease grants.
    pub lease_grants: Vec<LeaseGrant>,
    /// Answered KeepAlives.
    pub keepalives: Vec<LeaseKeepAlive>,
}

impl History {
    /// Read JSON lines (blank lines skipped).
    pub fn parse(text: &str) -> Result<History, String> {
        let mut h = History::default();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let l: Line = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
            match l {
                Line::Op(o) => h.ops.push(o),
                Line::Watch(w) => h.watches.push(w),
                Line::WatchResponse(r) => h.watch_responses.push(r),
                Line::Restart { member, at_ns } => h.restarts.push((member, at_ns)),
                Line::LeaseGrant(g) => h.lease_grants.push(g),
                Line::LeaseKeepalive(k) => h.keepalives.push(k),
            }
        }
        Ok(h)
    }

    /// Write JSON lines.
    pub fn to_jsonl(&self) -> String {
        let mut s = String::new();
        let mut push = |l: Line| {
            s.push_str(&serde_json::to_string(&l).expect("serialisable"));
            s.push('\n');
        };
        for o in &self.ops {
            push(Line::Op(o.clone()));
        }
        for w in &self.watches {
            push(Line::Watch(w.clone()));
        }
        for r in &self.watch_responses {
            push(Line::WatchResponse(r.clone()));
        }
        for &(member, at_ns) in &self.restarts {
            push(Line::Restart { member, at_ns });
        }
        for g in &self.lease_grants {
            push(Line::LeaseGrant(g.clone()));
        }
        for k in &self.keepalives {
            push(Line::LeaseKeepalive(k.clone()));
        }
        s
    }
}
