//! The v3 API's requests and answers, typed: keys and values are bytes (`impl Into<Vec<u8>>`
//! takes `&str`, `String` and `Vec<u8>`).

use detcd_proto::etcdserverpb as pb;
use detcd_proto::mvccpb;

/// Every answer's header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// The cluster's id.
    pub cluster_id: u64,
    /// The id of the member that answered.
    pub member_id: u64,
    /// The store's revision when the request was served.
    pub revision: i64,
    /// The member's Raft term.
    pub raft_term: u64,
}

impl Header {
    pub(crate) fn from_pb(h: Option<pb::ResponseHeader>) -> Header {
        let h = h.unwrap_or_default();
        Header {
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            revision: h.revision,
            raft_term: h.raft_term,
        }
    }
}

/// A stored key-value pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty with [`GetOptions::keys_only`]).
    pub value: Vec<u8>,
    /// The revision of the key's creation (since its last deletion).
    pub create_revision: i64,
    /// The revision of its last change.
    pub mod_revision: i64,
    /// How many times it was written since its creation (1 when created).
    pub version: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

impl KeyValue {
    pub(crate) fn from_pb(k: mvccpb::KeyValue) -> KeyValue {
        KeyValue {
            key: k.key,
            value: k.value,
            create_revision: k.create_revision,
            mod_revision: k.mod_revision,
            version: k.version,
            lease: k.lease,
        }
    }

    /// The key as text (invalid UTF-8 replaced).
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }

    /// The value as text (invalid UTF-8 replaced).
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// The end of the range a request covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RangeEnd {
    /// The key alone.
    #[default]
    Key,
    /// Every key that starts with the key (etcdctl's `--prefix`).
    Prefix,
    /// Every key from the key on (etcdctl's `--from-key`).
    FromKey,
    /// Every key in `[key, end)`.
    End(Vec<u8>),
}

/// The first key after every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented and what follows dropped; `\0` (every
/// key) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("not empty") += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

impl RangeEnd {
    pub(crate) fn bytes(&self, key: &[u8]) -> Vec<u8> {
        match self {
            RangeEnd::Key => Vec::new(),
            RangeEnd::Prefix => prefix_end(key),
            RangeEnd::FromKey => vec![0],
            RangeEnd::End(e) => e.clone(),
        }
    }
}

/// What a range is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum SortTarget {
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// In which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum SortOrder {
    Ascend,
    Descend,
}

/// Options of a read (`Range`). Build with the methods: `GetOptions::new().prefix().limit(10)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// The range's end.
    pub range_end: RangeEnd,
    /// At most this many keys (0: no limit).
    pub limit: i64,
    /// Read the store as of this revision (0: the latest).
    pub revision: i64,
    /// Sort the keys.
    pub sort: Option<(SortTarget, SortOrder)>,
    /// Answer from the member's own store, without a quorum round.
    pub serializable: bool,
    /// Keys without values.
    pub keys_only: bool,
    /// Only count the keys.
    pub count_only: bool,
    /// Only keys changed at or after this revision (0: no bound).
    pub min_mod_revision: i64,
    /// Only keys changed at or before this revision (0: no bound).
    pub max_mod_revision: i64,
    /// Only keys created at or after this revision (0: no bound).
    pub min_create_revision: i64,
    /// Only keys created at or before this revision (0: no bound).
    pub max_create_revision: i64,
}

#[allow(missing_docs)]
impl GetOptions {
    pub fn new() -> GetOptions {
        GetOptions::default()
    }
    pub fn prefix(mut self) -> Self {
        self.range_end = RangeEnd::Prefix;
        self
    }
    pub fn from_key(mut self) -> Self {
        self.range_end = RangeEnd::FromKey;
        self
    }
    pub fn range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range_end = RangeEnd::End(end.into());
        self
    }
    pub fn limit(mut self, n: i64) -> Self {
        self.limit = n;
        self
    }
    pub fn revision(mut self, r: i64) -> Self {
        self.revision = r;
        self
    }
    pub fn sort(mut self, t: SortTarget, o: SortOrder) -> Self {
        self.sort = Some((t, o));
        self
    }
    pub fn serializable(mut self) -> Self {
        self.serializable = true;
        self
    }
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
    pub fn mod_revisions(mut self, min: i64, max: i64) -> Self {
        self.min_mod_revision = min;
        self.max_mod_revision = max;
        self
    }
    pub fn create_revisions(mut self, min: i64, max: i64) -> Self {
        self.min_create_revision = min;
        self.max_create_revision = max;
        self
    }

    pub(crate) fn request(&self, key: Vec<u8>) -> pb::RangeRequest {
        use pb::range_request::{SortOrder as O, SortTarget as T};
        let (target, order) = match self.sort {
            None => (T::Key, O::None),
            Some((t, o)) => (
                match t {
                    SortTarget::Key => T::Key,
                    SortTarget::Version => T::Version,
                    SortTarget::Create => T::Create,
                    SortTarget::Mod => T::Mod,
                    SortTarget::Value => T::Value,
                },
                match o {
                    SortOrder::Ascend => O::Ascend,
                    SortOrder::Descend => O::Descend,
                },
            ),
        };
        pb::RangeRequest {
            range_end: self.range_end.bytes(&key),
            key,
            limit: self.limit,
            revision: self.revision,
            sort_order: order as i32,
            sort_target: target as i32,
            serializable: self.serializable,
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: self.min_mod_revision,
            max_mod_revision: self.max_mod_revision,
            min_create_revision: self.min_create_revision,
            max_create_revision: self.max_create_revision,
        }
    }
}

/// The answer to a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetResponse {
    /// The header (its revision is the store's when read).
    pub header: Header,
    /// The keys found (none with `count_only`).
    pub kvs: Vec<KeyValue>,
    /// Whether more keys matched than `limit` let through.
    pub more: bool,
    /// How many keys matched.
    pub count: i64,
}

impl GetResponse {
    pub(crate) fn from_pb(r: pb::RangeResponse) -> GetResponse {
        GetResponse {
            header: Header::from_pb(r.header),
            kvs: r.kvs.into_iter().map(KeyValue::from_pb).collect(),
            more: r.more,
            count: r.count,
        }
    }

    /// The first key's value, if a key was found.
    pub fn value(&self) -> Option<&[u8]> {
        self.kvs.first().map(|k| k.value.as_slice())
    }
}

/// Options of a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Attach the key to this lease (0: none).
    pub lease: i64,
    /// Answer with the previous key-value pair.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

#[allow(missing_docs)]
impl PutOptions {
    pub fn new() -> PutOptions {
        PutOptions::default()
    }
    pub fn lease(mut self, id: i64) -> Self {
        self.lease = id;
        self
    }
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
    pub fn ignore_value(mut self) -> Self {
        self.ignore_value = true;
        self
    }
    pub fn ignore_lease(mut self) -> Self {
        self.ignore_lease = true;
        self
    }

    pub(crate) fn request(&self, key: Vec<u8>, value: Vec<u8>) -> pb::PutRequest {
        pb::PutRequest {
            key,
            value,
            lease: self.lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        }
    }
}

/// The answer to a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The header (its revision is the write's).
    pub header: Header,
    /// The key before the write, when asked for and it existed.
    pub prev_kv: Option<KeyValue>,
}

impl PutResponse {
    pub(crate) fn from_pb(r: pb::PutResponse) -> PutResponse {
        PutResponse {
            header: Header::from_pb(r.header),
            prev_kv: r.prev_kv.map(KeyValue::from_pb),
        }
    }
}

/// Options of a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// The range's end.
    pub range_end: RangeEnd,
    /// Answer with the deleted key-value pairs.
    pub prev_kv: bool,
}

#[allow(missing_docs)]
impl DeleteOptions {
    pub fn new() -> DeleteOptions {
        DeleteOptions::default()
    }
    pub fn prefix(mut self) -> Self {
        self.range_end = RangeEnd::Prefix;
        self
    }
    pub fn from_key(mut self) -> Self {
        self.range_end = RangeEnd::FromKey;
        self
    }
    pub fn range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range_end = RangeEnd::End(end.into());
        self
    }
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    pub(crate) fn request(&self, key: Vec<u8>) -> pb::DeleteRangeRequest {
        pb::DeleteRangeRequest {
            range_end: self.range_end.bytes(&key),
            key,
            prev_kv: self.prev_kv,
        }
    }
}

/// The answer to a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteResponse {
    /// The header (its revision is the delete's if anything was deleted).
    pub header: Header,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted keys, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

impl DeleteResponse {
    pub(crate) fn from_pb(r: pb::DeleteRangeResponse) -> DeleteResponse {
        DeleteResponse {
            header: Header::from_pb(r.header),
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.into_iter().map(KeyValue::from_pb).collect(),
        }
    }
}

/// How a compare relates the key's field to the operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One condition of a transaction: a field of a key (or of every key in a range) compared
/// with an operand. A missing key has version, create and mod revision 0 and no value (a
/// value compare on it is false).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    key: Vec<u8>,
    range_end: Vec<u8>,
    op: CompareOp,
    target: CompareTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CompareTarget {
    Value(Vec<u8>),
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Lease(i64),
}

#[allow(missing_docs)]
impl Compare {
    fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Compare {
        Compare {
            key: key.into(),
            range_end: Vec::new(),
            op,
            target,
        }
    }
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, v: impl Into<Vec<u8>>) -> Compare {
        Compare::new(key, op, CompareTarget::Value(v.into()))
    }
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, v: i64) -> Compare {
        Compare::new(key, op, CompareTarget::Version(v))
    }
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, r: i64) -> Compare {
        Compare::new(key, op, CompareTarget::CreateRevision(r))
    }
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, r: i64) -> Compare {
        Compare::new(key, op, CompareTarget::ModRevision(r))
    }
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, id: i64) -> Compare {
        Compare::new(key, op, CompareTarget::Lease(id))
    }
    /// Compare every key that starts with the key.
    pub fn with_prefix(mut self) -> Self {
        self.range_end = prefix_end(&self.key);
        self
    }
    /// Compare every key in `[key, end)`.
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range_end = end.into();
        self
    }

    fn request(&self) -> pb::Compare {
        use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
        let result = match self.op {
            CompareOp::Equal => R::Equal,
            CompareOp::NotEqual => R::NotEqual,
            CompareOp::Greater => R::Greater,
            CompareOp::Less => R::Less,
        };
        let (target, union) = match &self.target {
            CompareTarget::Value(v) => (T::Value, U::Value(v.clone())),
            CompareTarget::Version(v) => (T::Version, U::Version(*v)),
            CompareTarget::CreateRevision(r) => (T::Create, U::CreateRevision(*r)),
            CompareTarget::ModRevision(r) => (T::Mod, U::ModRevision(*r)),
            CompareTarget::Lease(l) => (T::Lease, U::Lease(*l)),
        };
        pb::Compare {
            result: result as i32,
            target: target as i32,
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            target_union: Some(union),
        }
    }
}

/// One operation of a transaction's branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// A read.
    Get(Vec<u8>, GetOptions),
    /// A write.
    Put(Vec<u8>, Vec<u8>, PutOptions),
    /// A delete.
    Delete(Vec<u8>, DeleteOptions),
    /// A nested transaction.
    Txn(Txn),
}

#[allow(missing_docs)]
impl TxnOp {
    pub fn get(key: impl Into<Vec<u8>>, o: GetOptions) -> TxnOp {
        TxnOp::Get(key.into(), o)
    }
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, o: PutOptions) -> TxnOp {
        TxnOp::Put(key.into(), value.into(), o)
    }
    pub fn delete(key: impl Into<Vec<u8>>, o: DeleteOptions) -> TxnOp {
        TxnOp::Delete(key.into(), o)
    }
    pub fn txn(t: Txn) -> TxnOp {
        TxnOp::Txn(t)
    }

    fn request(&self) -> pb::RequestOp {
        use pb::request_op::Request as R;
        let r = match self {
            TxnOp::Get(k, o) => R::RequestRange(o.request(k.clone())),
            TxnOp::Put(k, v, o) => R::RequestPut(o.request(k.clone(), v.clone())),
            TxnOp::Delete(k, o) => R::RequestDeleteRange(o.request(k.clone())),
            TxnOp::Txn(t) => R::RequestTxn(t.request()),
        };
        pb::RequestOp { request: Some(r) }
    }
}

/// A transaction: if every compare holds, the `and_then` operations run, else the `or_else`
/// ones, atomically at one revision.
///
/// ```
/// use detcd_client::v3::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
/// let t = Txn::new()
///     .when([Compare::mod_revision("k", CompareOp::Equal, 7)])
///     .and_then([TxnOp::put("k", "new", PutOptions::new())])
///     .or_else([TxnOp::get("k", GetOptions::new())]);
/// # let _ = t;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    compares: Vec<Compare>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction (no compares: the success branch runs).
    pub fn new() -> Txn {
        Txn::default()
    }
    /// Add compares (all must hold).
    pub fn when(mut self, c: impl IntoIterator<Item = Compare>) -> Txn {
        self.compares.extend(c);
        self
    }
    /// Add operations to the success branch.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.success.extend(ops);
        self
    }
    /// Add operations to the failure branch.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.failure.extend(ops);
        self
    }
    /// Whether it reads only (can be retried on another member).
    pub(crate) fn read_only(&self) -> bool {
        self.success.iter().chain(&self.failure).all(|o| match o {
            TxnOp::Get(..) => true,
            TxnOp::Txn(t) => t.read_only(),
            _ => false,
        })
    }

    pub(crate) fn request(&self) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: self.compares.iter().map(Compare::request).collect(),
            success: self.success.iter().map(TxnOp::request).collect(),
            failure: self.failure.iter().map(TxnOp::request).collect(),
        }
    }
}

/// One operation's answer in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum TxnOpResponse {
    Get(GetResponse),
    Put(PutResponse),
    Delete(DeleteResponse),
    Txn(TxnResponse),
}

/// The answer to a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// The header (its revision is the transaction's if it wrote).
    pub header: Header,
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// The answers of the branch that ran, in order.
    pub responses: Vec<TxnOpResponse>,
}

impl TxnResponse {
    pub(crate) fn from_pb(r: pb::TxnResponse) -> TxnResponse {
        use pb::response_op::Response as R;
        TxnResponse {
            header: Header::from_pb(r.header),
            succeeded: r.succeeded,
            responses: r
                .responses
                .into_iter()
                .filter_map(|o| {
                    Some(match o.response? {
                        R::ResponseRange(g) => TxnOpResponse::Get(GetResponse::from_pb(g)),
                        R::ResponsePut(p) => TxnOpResponse::Put(PutResponse::from_pb(p)),
                        R::ResponseDeleteRange(d) => {
                            TxnOpResponse::Delete(DeleteResponse::from_pb(d))
                        }
                        R::ResponseTxn(t) => TxnOpResponse::Txn(TxnResponse::from_pb(t)),
                    })
                })
                .collect(),
        }
    }
}

/// A watch event's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum EventType {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// A put or a delete.
    pub kind: EventType,
    /// The key after the change (a delete: the key, with `mod_revision` the delete's).
    pub kv: KeyValue,
    /// The key before the change, when the watch asked for it.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    pub(crate) fn from_pb(e: mvccpb::Event) -> Event {
        Event {
            kind: if e.r#type == mvccpb::event::EventType::Delete as i32 {
                EventType::Delete
            } else {
                EventType::Put
            },
            kv: KeyValue::from_pb(e.kv.unwrap_or_default()),
            prev_kv: e.prev_kv.map(KeyValue::from_pb),
        }
    }
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The header.
    pub header: Header,
    /// Its id.
    pub id: i64,
    /// Its TTL in seconds (etcd raises a TTL under its minimum).
    pub ttl: i64,
}

/// A lease's time to live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// The header.
    pub header: Header,
    /// Its id.
    pub id: i64,
    /// Seconds left (-1: the lease does not exist, or has expired).
    pub ttl: i64,
    /// The TTL it was granted with.
    pub granted_ttl: i64,
    /// The keys attached to it, when asked for.
    pub keys: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn txn_builds_etcds_request() {
        let t = Txn::new()
            .when([Compare::value("k", CompareOp::NotEqual, "v").with_prefix()])
            .and_then([TxnOp::put("k", "w", PutOptions::new().lease(5))])
            .or_else([TxnOp::delete("k", DeleteOptions::new().from_key())]);
        assert!(!t.read_only());
        let r = t.request();
        let c = &r.compare[0];
        assert_eq!(
            (c.result, c.target, c.range_end.as_slice()),
            (
                pb::compare::CompareResult::NotEqual as i32,
                pb::compare::CompareTarget::Value as i32,
                &b"l"[..]
            )
        );
        assert_eq!(
            c.target_union,
            Some(pb::compare::TargetUnion::Value(b"v".to_vec()))
        );
        match &r.failure[0].request {
            Some(pb::request_op::Request::RequestDeleteRange(d)) => {
                assert_eq!(d.range_end, vec![0])
            }
            other => panic!("{other:?}"),
        }
        let read = Txn::new().and_then([TxnOp::txn(
            Txn::new().and_then([TxnOp::get("k", GetOptions::new())]),
        )]);
        assert!(read.read_only());
    }
}
