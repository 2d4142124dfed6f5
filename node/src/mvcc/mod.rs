//! etcd 3.4's v3 MVCC keyspace, durable in an embedded B-tree (redb) over the [`Disk`] seam.
//!
//! Synchronous and sans-network: the Raft apply loop calls [`Mvcc::apply`] for each committed
//! write, [`Mvcc::set_index`] for entries with no v3 effect, and [`Mvcc::flush`] at the end of
//! each batch. Deterministic: no thread, clock or randomness here or in redb (see
//! [`backend`]).
//!
//! Layout (three redb tables):
//! - `kv`: (key, main revision, sub revision) → one tag byte (2 put, 3 tombstone), the
//!   CRC-32C of the tag and payload, and the payload: the marshalled `mvccpb.KeyValue` (a
//!   tombstone's holds only the key, as etcd stores it). Every read checks the CRC ([`entry`]):
//!   redb verifies its pages' checksums only when it opens the file, and a page read again
//!   later (the keyspace may exceed redb's cache) could have rotted since; the backend seam
//!   checks every 4 KiB block read back as well, keys and branches included
//!   ([`backend`]). Entries written before the CRC (tags 0 and 1) are read without one. A
//!   range at an earlier revision scans this table in key order; one at the current
//!   revision looks each key up through [`Latest`], the live keys' newest revisions in
//!   memory (as etcd holds every key in its `treeIndex`). Values never stay in memory, so
//!   they may exceed it.
//! - `rev`: (main, sub) → key: what changed at each revision (compaction; watch history).
//! - `meta`: consistent index, current revision, compacted revision.
//! - `lease` (see `lease.rs`) and `alarm` (see `maint.rs`).
//!
//! One redb write transaction is open per apply batch; `flush` commits it (durably or not).
//! Semantics follow etcd 3.4.23 (`mvcc/kvstore*.go`, `etcdserver/apply.go`); the request
//! checks it makes before proposing are [`check_range`], [`check_put`], [`check_delete`] and
//! [`check_txn`].

mod auth;
pub(crate) mod backend;
mod check;
mod lease;
mod maint;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use detcd_proto::etcdserverpb as pb;
use detcd_proto::mvccpb;
use pb::request_op::Request;
use pb::response_op::Response;
use prost::Message;
use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

pub use auth::{AuthError, AuthInfo, AuthOp, AuthResp, Caller, ROOT, TOKEN_TTL};
pub use check::{check_delete, check_put, check_range, check_txn};
pub use lease::{LeaseGrant, LEASE_MAX_TTL};
use maint::ALARMS;
pub use maint::{
    dump_of_snapshot_file, quota_cost, snapshot_file, Costed, HashKv, DEFAULT_QUOTA_BYTES,
};

use crate::storage::{Disk, RandomFile};

/// (key, main revision, sub revision) → tag byte + marshalled KeyValue.
type KvKey = (&'static [u8], i64, i64);
const KV: TableDefinition<KvKey, &[u8]> = TableDefinition::new("kv");
/// (main, sub) → key.
const REVS: TableDefinition<(i64, i64), &[u8]> = TableDefinition::new("rev");
/// name → value (i64 values stored as their two's-complement bits).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// lease ID → granted TTL (seconds, after the minimum was applied): the replicated lease set.
const LEASES: TableDefinition<i64, i64> = TableDefinition::new("lease");

const META_INDEX: &str = "consistent_index";
const META_REV: &str = "revision";
const META_COMPACT: &str = "compact_revision";

/// A put and a tombstone as written before entries carried a checksum (still read).
const TAG_PUT_V1: u8 = 0;
const TAG_TOMBSTONE_V1: u8 = 1;
/// A put and a tombstone followed by the CRC-32C (little-endian) of the tag and payload.
const TAG_PUT: u8 = 2;
const TAG_TOMBSTONE: u8 = 3;

/// Keys with more revisions than this in a scan are skipped by a seek rather than read.
const SCAN_SEEK_AFTER: usize = 8;

/// Tuning.
#[derive(Debug, Clone)]
pub struct MvccOptions {
    /// etcd's `--max-txn-ops` (128): for the caller's [`check_txn`]; apply does not re-count.
    pub max_txn_ops: usize,
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
    /// This member's minimum lease TTL in seconds ([`crate::lease::min_ttl`]): leases read
    /// back at open or from a snapshot get at least this TTL, in memory only (etcd's
    /// `initAndRecover`), so a restart with a longer election timeout raises short leases.
    pub min_lease_ttl: i64,
}

impl Default for MvccOptions {
    fn default() -> MvccOptions {
        MvccOptions {
            max_txn_ops: 128,
            cache_bytes: DEFAULT_CACHE_BYTES,
            min_lease_ttl: 0,
        }
    }
}

/// A v3 request's failure, as etcd reports it (`etcdserver/api/v3rpc/rpctypes/error.go`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V3Error {
    /// ErrGRPCEmptyKey.
    EmptyKey,
    /// ErrGRPCKeyNotFound (also: a nil op in a txn).
    KeyNotFound,
    /// ErrGRPCValueProvided (`ignore_value` with a value).
    ValueProvided,
    /// ErrGRPCLeaseProvided (`ignore_lease` with a lease).
    LeaseProvided,
    /// ErrGRPCTooManyOps (`--max-txn-ops`).
    TooManyOps,
    /// ErrGRPCDuplicateKey (`checkIntervals`).
    DuplicateKey,
    /// ErrGRPCCompacted.
    Compacted,
    /// ErrGRPCFutureRev.
    FutureRev,
    /// ErrGRPCLeaseNotFound.
    LeaseNotFound,
    /// ErrGRPCLeaseExist (a grant of an ID in use).
    LeaseExists,
    /// ErrGRPCLeaseTTLTooLarge (a grant over [`LEASE_MAX_TTL`]).
    LeaseTtlTooLarge,
    /// ErrGRPCNoSpace (the quota: the caller's).
    NoSpace,
    /// ErrGRPCCorrupt: a CORRUPT alarm is raised (etcd's `applierV3Corrupt`).
    Corrupt,
    /// ErrGRPCRequestTooLarge (the caller's).
    RequestTooLarge,
    /// `txn_read` was given a txn with a write in it (not an etcd error: a caller's mistake).
    NotReadOnly,
    /// The store failed (I/O or corrupt data); the text says how. Not an etcd error: etcd
    /// panics here. After it, [`Mvcc::flush`] fails too.
    Storage(String),
    /// An auth failure (a write refused when it applied, or an Auth request's error).
    Auth(AuthError),
}

impl V3Error {
    /// The gRPC status code etcd answers with.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            V3Error::EmptyKey
            | V3Error::KeyNotFound
            | V3Error::ValueProvided
            | V3Error::LeaseProvided
            | V3Error::TooManyOps
            | V3Error::DuplicateKey
            | V3Error::RequestTooLarge => Code::InvalidArgument,
            V3Error::Compacted | V3Error::FutureRev | V3Error::LeaseTtlTooLarge => Code::OutOfRange,
            V3Error::LeaseNotFound => Code::NotFound,
            V3Error::LeaseExists => Code::FailedPrecondition,
            V3Error::NoSpace => Code::ResourceExhausted,
            V3Error::Corrupt => Code::DataLoss,
            V3Error::NotReadOnly => Code::InvalidArgument,
            V3Error::Storage(_) => Code::Internal,
            V3Error::Auth(e) => e.code(),
        }
    }

    /// etcd's exact message.
    pub fn message(&self) -> &'static str {
        match self {
            V3Error::EmptyKey => "etcdserver: key is not provided",
            V3Error::KeyNotFound => "etcdserver: key not found",
            V3Error::ValueProvided => "etcdserver: value is provided",
            V3Error::LeaseProvided => "etcdserver: lease is provided",
            V3Error::TooManyOps => "etcdserver: too many operations in txn request",
            V3Error::DuplicateKey => "etcdserver: duplicate key given in txn request",
            V3Error::Compacted => "etcdserver: mvcc: required revision has been compacted",
            V3Error::FutureRev => "etcdserver: mvcc: required revision is a future revision",
            V3Error::LeaseNotFound => "etcdserver: requested lease not found",
            V3Error::LeaseExists => "etcdserver: lease already exists",
            V3Error::LeaseTtlTooLarge => "etcdserver: too large lease TTL",
            V3Error::NoSpace => "etcdserver: mvcc: database space exceeded",
            V3Error::Corrupt => "etcdserver: corrupt cluster",
            V3Error::RequestTooLarge => "etcdserver: request is too large",
            V3Error::NotReadOnly => "detcd: txn is not read-only",
            V3Error::Storage(_) => "detcd: mvcc storage failure",
            V3Error::Auth(e) => e.message(),
        }
    }
}

impl std::fmt::Display for V3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            V3Error::Storage(e) => write!(f, "{}: {e}", self.message()),
            _ => f.write_str(self.message()),
        }
    }
}

impl std::error::Error for V3Error {}

/// A write committed through Raft.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteReq {
    /// KV.Put.
    Put(pb::PutRequest),
    /// KV.DeleteRange.
    DeleteRange(pb::DeleteRangeRequest),
    /// KV.Txn with a write in it (a read-only one may come too: it changes nothing).
    Txn(pb::TxnRequest),
    /// KV.Compact.
    Compaction(pb::CompactionRequest),
}

/// Its answer (header: revision only).
#[derive(Debug, Clone, PartialEq)]
pub enum WriteResp {
    /// To a Put.
    Put(pb::PutResponse),
    /// To a DeleteRange.
    DeleteRange(pb::DeleteRangeResponse),
    /// To a Txn.
    Txn(pb::TxnResponse),
    /// To a Compaction.
    Compaction(pb::CompactionResponse),
}

fn storage_err(e: impl std::fmt::Display) -> V3Error {
    V3Error::Storage(e.to_string())
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A damaged v3 backend file (see [`Mvcc::open`]).
fn damage(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the v3 backend file is damaged ({what})"),
    )
}

/// Whether [`Mvcc::open`] refused the file as damaged (rather than failing to read it).
pub fn is_damage(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData
}

/// A redb error while opening: damage, the disk's own I/O error, or another failure. A
/// range of the file that cannot be read (`EIO`: a latent sector error) is damage too: the
/// keyspace is derived state, rebuilt from the snapshot and the WAL like a rotted one.
fn open_err(e: impl Into<redb::Error>) -> io::Error {
    match e.into() {
        redb::Error::Io(e) if crate::storage::is_media_error(&e) => {
            damage(format!("a read failed: {e}"))
        }
        redb::Error::Io(e) => e,
        redb::Error::Corrupted(what) => damage(format!("redb: {what}")),
        e => io::Error::other(e.to_string()),
    }
}

fn header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// How far a range reaches past its key (etcd's `range_end`, after `mkGteRange`).
#[derive(Debug, Clone, Copy)]
enum End<'a> {
    /// Empty `range_end`: the key alone.
    Single,
    /// `"\0"`: every key ≥ the key.
    FromKey,
    /// Keys in [key, end).
    Before(&'a [u8]),
}

fn end_of(range_end: &[u8]) -> End<'_> {
    match range_end {
        [] => End::Single,
        [0] => End::FromKey,
        e => End::Before(e),
    }
}

impl End<'_> {
    fn contains(&self, key: &[u8], k: &[u8]) -> bool {
        match self {
            End::Single => k == key,
            End::FromKey => k >= key,
            End::Before(e) => k >= key && k < *e,
        }
    }
}

/// What [`entry`] reports about a stored value that fails its checks.
const CORRUPT: &str = "corrupt key-value";

fn entry_crc(tag: u8, payload: &[u8]) -> u32 {
    let mut h = maint::Crc32c::default();
    h.update(&[tag]);
    h.update(payload);
    h.sum()
}

/// A stored value's kind (true: a put) and payload, its checksum verified.
fn entry(raw: &[u8]) -> Result<(bool, &[u8]), V3Error> {
    match raw.split_first() {
        Some((&tag @ (TAG_PUT | TAG_TOMBSTONE), rest)) if rest.len() >= 4 => {
            let (sum, payload) = rest.split_at(4);
            if u32::from_le_bytes(sum.try_into().expect("4 bytes")) != entry_crc(tag, payload) {
                return Err(storage_err(format!("{CORRUPT}: checksum mismatch")));
            }
            Ok((tag == TAG_PUT, payload))
        }
        Some((&TAG_PUT_V1, payload)) => Ok((true, payload)),
        Some((&TAG_TOMBSTONE_V1, payload)) => Ok((false, payload)),
        _ => Err(storage_err(format!("{CORRUPT}: bad tag"))),
    }
}

/// Decode a stored value: `None` for a tombstone.
fn decode(raw: &[u8]) -> Result<Option<mvccpb::KeyValue>, V3Error> {
    match entry(raw)? {
        (true, payload) => decode_put(payload).map(Some),
        (false, _) => Ok(None),
    }
}

/// Decode the payload of a put whose checksum [`entry`] verified.
fn decode_put(payload: &[u8]) -> Result<mvccpb::KeyValue, V3Error> {
    mvccpb::KeyValue::decode(payload).map_err(|e| storage_err(format!("{CORRUPT}: {e}")))
}

fn encode_entry(tag: u8, kv: &mvccpb::KeyValue) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + kv.encoded_len());
    v.extend_from_slice(&[tag, 0, 0, 0, 0]);
    kv.encode(&mut v).expect("a Vec grows");
    let sum = entry_crc(tag, &v[5..]);
    v[1..5].copy_from_slice(&sum.to_le_bytes());
    v
}

fn encode_put(kv: &mvccpb::KeyValue) -> Vec<u8> {
    encode_entry(TAG_PUT, kv)
}

fn encode_tombstone(key: &[u8]) -> Vec<u8> {
    let kv = mvccpb::KeyValue {
        key: key.to_vec(),
        ..Default::default()
    };
    encode_entry(TAG_TOMBSTONE, &kv)
}

/// The newest stored entry of `key` at or below revision `rev` (its main and sub revision,
/// raw), if any.
fn latest_at<T: ReadableTable<KvKey, &'static [u8]>>(
    t: &T,
    key: &[u8],
    rev: i64,
) -> Result<Option<(i64, i64, Vec<u8>)>, V3Error> {
    let mut it = t
        .range::<(&[u8], i64, i64)>((key, i64::MIN, i64::MIN)..=(key, rev, i64::MAX))
        .map_err(storage_err)?;
    match it.next_back() {
        Some(e) => {
            let (k, v) = e.map_err(storage_err)?;
            let (_, main, sub) = k.value();
            Ok(Some((main, sub, v.value().to_vec())))
        }
        None => Ok(None),
    }
}

/// Every live key of the keyspace → the (main, sub) revision of its newest entry, a put:
/// what a read at the current revision needs to find a key's value with one lookup
/// (etcd's in-memory `treeIndex` plays this part; only keys and revisions are held here,
/// values stay in the tables). Rebuilt from the tables when the keyspace is opened,
/// restored or its batch aborted; kept up to date by every write as it goes into them.
type Latest = BTreeMap<Vec<u8>, (i64, i64)>;

/// [`Latest`] for the tables `t` at revision `rev` (one scan).
fn build_latest<T: ReadableTable<KvKey, &'static [u8]>>(
    t: &T,
    rev: i64,
) -> Result<Latest, V3Error> {
    let mut latest = Latest::new();
    scan_entries(t, b"", End::FromKey, rev, |k, main, sub, _| {
        latest.insert(k.to_vec(), (main, sub));
        Ok(true)
    })?;
    Ok(latest)
}

/// Visit the live keys of [key, end) at revision `rev`, in key order, with the payload of
/// their newest entry at `rev` (never a tombstone), its checksum verified once here: decode
/// it with [`decode_put`]. `f` returns whether to go on. With `latest` ([`Latest`] for
/// these tables: only when `rev` is their current revision) each key is one lookup.
fn scan<T: ReadableTable<KvKey, &'static [u8]>>(
    t: &T,
    latest: Option<&Latest>,
    key: &[u8],
    end: End<'_>,
    rev: i64,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, V3Error>,
) -> Result<(), V3Error> {
    let Some(latest) = latest else {
        return scan_entries(t, key, end, rev, |k, _, _, payload| f(k, payload));
    };
    #[cfg(test)]
    let mut seen: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    #[cfg(test)]
    let mut stopped = false;
    let mut visit = |k: &[u8], main: i64, sub: i64| -> Result<bool, V3Error> {
        let raw = t.get((k, main, sub)).map_err(storage_err)?.ok_or_else(|| {
            storage_err(format!(
                "{CORRUPT}: the newest entry ({main}, {sub}) of a live key is missing"
            ))
        })?;
        match entry(raw.value())? {
            (true, payload) => {
                let go_on = f(k, payload)?;
                #[cfg(test)]
                {
                    seen.push((k.to_vec(), payload.to_vec()));
                    stopped = !go_on;
                }
                Ok(go_on)
            }
            (false, _) => Err(storage_err(format!(
                "{CORRUPT}: the newest entry ({main}, {sub}) of a live key is a tombstone"
            ))),
        }
    };
    match end {
        End::Single => {
            if let Some(&(main, sub)) = latest.get(key) {
                visit(key, main, sub)?;
            }
        }
        End::Before(e) if e <= key => {}
        _ => {
            let upper = match end {
                End::Before(e) => Bound::Excluded(e),
                _ => Bound::Unbounded,
            };
            for (k, &(main, sub)) in latest.range::<[u8], _>((Bound::Included(key), upper)) {
                if !visit(k, main, sub)? {
                    break;
                }
            }
        }
    }
    // The index must answer what the tables do: the unit tests check every indexed read
    // against the scan. Not in other builds: the scan reads pages the lookups do not, and
    // on a damaged backend a rotten one poisons redb (every later write fails), so a
    // simulated member would stop where a real one goes on. The simulator's checkers judge
    // the answers instead. A scan that meets damage is not compared.
    #[cfg(test)]
    {
        let mut want: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let scanned = scan_entries(t, key, end, rev, |k, _, _, payload| {
            want.push((k.to_vec(), payload.to_vec()));
            Ok(!stopped || want.len() < seen.len())
        });
        assert!(
            scanned.is_err() || want == seen,
            "mvcc: the key index disagrees with the tables at revision {rev}: {} keys read, {} stored",
            seen.len(),
            want.len()
        );
    }
    Ok(())
}

/// [`scan`] over the tables alone, with each entry's main and sub revision.
fn scan_entries<T: ReadableTable<KvKey, &'static [u8]>>(
    t: &T,
    key: &[u8],
    end: End<'_>,
    rev: i64,
    mut f: impl FnMut(&[u8], i64, i64, &[u8]) -> Result<bool, V3Error>,
) -> Result<(), V3Error> {
    // A put's payload to `f`; a tombstone skipped (go on).
    let mut visit = |k: &[u8], (main, sub, raw): (i64, i64, &[u8])| -> Result<bool, V3Error> {
        match entry(raw)? {
            (true, payload) => f(k, main, sub, payload),
            (false, _) => Ok(true),
        }
    };
    if let End::Single = end {
        if let Some((main, sub, raw)) = latest_at(t, key, rev)? {
            visit(key, (main, sub, &raw))?;
        }
        return Ok(());
    }
    if let End::Before(e) = end {
        if e <= key {
            return Ok(());
        }
    }
    let upper: Bound<(&[u8], i64, i64)> = match end {
        End::Before(e) => Bound::Excluded((e, i64::MIN, i64::MIN)),
        _ => Bound::Unbounded,
    };
    let mut lower_key: Vec<u8> = key.to_vec();
    let mut lower_incl = true;
    'outer: loop {
        let lower: Bound<(&[u8], i64, i64)> = if lower_incl {
            Bound::Included((lower_key.as_slice(), i64::MIN, i64::MIN))
        } else {
            Bound::Excluded((lower_key.as_slice(), i64::MAX, i64::MAX))
        };
        let it = t
            .range::<(&[u8], i64, i64)>((lower, upper))
            .map_err(storage_err)?;
        // The key being read, its entries seen, its newest entry at `rev` so far.
        let mut cur: Option<Vec<u8>> = None;
        let mut seen = 0usize;
        let mut best: Option<(i64, i64, Vec<u8>)> = None;
        for e in it {
            let (k, v) = e.map_err(storage_err)?;
            let (kb, main, sub) = k.value();
            if cur.as_deref() != Some(kb) {
                if let (Some(c), Some((m, s, b))) = (cur.take(), best.take()) {
                    if !visit(&c, (m, s, &b))? {
                        return Ok(());
                    }
                }
                cur = Some(kb.to_vec());
                seen = 0;
            }
            seen += 1;
            if main <= rev {
                best = Some((main, sub, v.value().to_vec()));
            }
            if main > rev || seen > SCAN_SEEK_AFTER {
                // The rest of this key's entries are newer, or many: seek past them.
                let c = cur.take().unwrap_or_default();
                if main <= rev {
                    best = latest_at(t, &c, rev)?;
                }
                if let Some((m, s, b)) = best.take() {
                    if !visit(&c, (m, s, &b))? {
                        return Ok(());
                    }
                }
                lower_key = c;
                lower_incl = false;
                continue 'outer;
            }
        }
        if let (Some(c), Some((m, s, b))) = (cur, best) {
            visit(&c, (m, s, &b))?;
        }
        return Ok(());
    }
}

/// Changes made so far by the write being applied (not yet in the tables): the newest state
/// of each key it touched (`None`: deleted) and the changes in order.
#[derive(Default)]
struct Overlay {
    latest: BTreeMap<Vec<u8>, Option<mvccpb::KeyValue>>,
    /// (key, Some(kv) put / None tombstone), in sub-revision order.
    changes: Vec<(Vec<u8>, Option<mvccpb::KeyValue>)>,
}

/// What [`Mvcc::apply_inner`] applies: a client's write, or a lease's revocation (its
/// attached keys, sorted, deleted in one revision).
enum Write<'a> {
    Req(&'a WriteReq, &'a dyn Fn(i64) -> bool),
    Revoke(&'a [Vec<u8>]),
}

/// A key that a write moved from one lease to another (0: none).
struct Attach {
    key: Vec<u8>,
    before: i64,
    after: i64,
}

/// A read of the keyspace: committed tables plus, while a write is applied, its overlay.
struct View<'a, T: ReadableTable<KvKey, &'static [u8]>> {
    kv: &'a T,
    /// The revision before the write being applied (or the current one).
    begin_rev: i64,
    compact_rev: i64,
    overlay: Option<&'a Overlay>,
    /// The tables' key index (at `begin_rev`), unless it cannot be trusted.
    latest: Option<&'a Latest>,
}

impl<T: ReadableTable<KvKey, &'static [u8]>> View<'_, T> {
    fn has_changes(&self) -> bool {
        self.overlay.is_some_and(|o| !o.changes.is_empty())
    }

    /// The store revision a read sees now (`storeTxnWrite.Range`: +1 once it changed).
    fn cur_rev(&self) -> i64 {
        self.begin_rev + i64::from(self.has_changes())
    }

    /// `rangeKeys`: the live kvs of [key, end) at `rev` (≤ 0: now), with their count; only
    /// the first `limit` (0: all) are decoded unless the overlay must be merged.
    fn range_keys(
        &self,
        key: &[u8],
        end: End<'_>,
        rev: i64,
        limit: usize,
        count_only: bool,
    ) -> Result<(Vec<mvccpb::KeyValue>, usize), V3Error> {
        let cur = self.cur_rev();
        let rev = if rev > cur {
            return Err(V3Error::FutureRev);
        } else if rev <= 0 {
            cur
        } else {
            rev
        };
        if rev < self.compact_rev {
            return Err(V3Error::Compacted);
        }
        let overlay = self.overlay.filter(|o| !o.latest.is_empty() && rev == cur);
        let Some(o) = overlay else {
            let mut kvs = Vec::new();
            let mut count = 0usize;
            let latest = self.latest.filter(|_| rev >= self.begin_rev);
            scan(
                self.kv,
                latest,
                key,
                end,
                rev.min(self.begin_rev),
                |_, payload| {
                    count += 1;
                    if !count_only && (limit == 0 || kvs.len() < limit) {
                        kvs.push(decode_put(payload)?);
                    }
                    Ok(true)
                },
            )?;
            return Ok((kvs, count));
        };
        let mut merged: BTreeMap<Vec<u8>, mvccpb::KeyValue> = BTreeMap::new();
        scan(
            self.kv,
            self.latest,
            key,
            end,
            self.begin_rev,
            |k, payload| {
                if !o.latest.contains_key(k) {
                    merged.insert(k.to_vec(), decode_put(payload)?);
                }
                Ok(true)
            },
        )?;
        for (k, v) in &o.latest {
            if let Some(kv) = v {
                if end.contains(key, k) {
                    merged.insert(k.clone(), kv.clone());
                }
            }
        }
        let count = merged.len();
        let mut kvs: Vec<mvccpb::KeyValue> = if count_only {
            Vec::new()
        } else {
            merged.into_values().collect()
        };
        if limit > 0 {
            kvs.truncate(limit);
        }
        Ok((kvs, count))
    }

    /// The key's current kv (overlay first).
    fn get(&self, key: &[u8]) -> Result<Option<mvccpb::KeyValue>, V3Error> {
        if let Some(o) = self.overlay {
            if let Some(v) = o.latest.get(key) {
                return Ok(v.clone());
            }
        }
        let mut kv = None;
        scan(
            self.kv,
            self.latest,
            key,
            End::Single,
            self.begin_rev,
            |_, payload| {
                kv = Some(decode_put(payload)?);
                Ok(true)
            },
        )?;
        Ok(kv)
    }

    /// etcd 3.4 `applierV3backend.Range` on this view.
    fn range(&self, r: &pb::RangeRequest) -> Result<pb::RangeResponse, V3Error> {
        use pb::range_request::{SortOrder, SortTarget};
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let sorted = r.sort_order != SortOrder::None as i32;
        // Fetch everything when sorting or filtering; else one more than the limit for `more`.
        let limit = if sorted || filtered || r.limit <= 0 {
            0
        } else {
            (r.limit as usize).saturating_add(1)
        };
        let (mut kvs, count) = self.range_keys(
            &r.key,
            end_of(&r.range_end),
            r.revision,
            limit,
            r.count_only,
        )?;
        if r.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
        }
        if r.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
        }
        if r.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
        }
        if r.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
        }
        let mut order = r.sort_order;
        if r.sort_target != SortTarget::Key as i32 && order == SortOrder::None as i32 {
            // Results come sorted by key: ASCEND by default only for other targets.
            order = SortOrder::Ascend as i32;
        }
        if order == SortOrder::Ascend as i32 || order == SortOrder::Descend as i32 {
            // etcd's sort.Sort is unstable (ties in any order); here ties keep key order.
            let target = r.sort_target;
            kvs.sort_by(|a, b| {
                if target == SortTarget::Version as i32 {
                    a.version.cmp(&b.version)
                } else if target == SortTarget::Create as i32 {
                    a.create_revision.cmp(&b.create_revision)
                } else if target == SortTarget::Mod as i32 {
                    a.mod_revision.cmp(&b.mod_revision)
                } else if target == SortTarget::Value as i32 {
                    a.value.cmp(&b.value)
                } else {
                    a.key.cmp(&b.key)
                }
            });
            if order == SortOrder::Descend as i32 {
                kvs.reverse();
            }
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(pb::RangeResponse {
            header: header(self.cur_rev()),
            kvs,
            more,
            count: count as i64,
        })
    }

    /// `applyCompare`: every key in the compare's range must satisfy it; no key compares as
    /// a zero KeyValue, except that a VALUE compare then fails.
    fn compare(&self, c: &pb::Compare) -> bool {
        use pb::compare::{CompareResult, CompareTarget, TargetUnion};
        let Ok((kvs, _)) = self.range_keys(&c.key, end_of(&c.range_end), 0, 0, false) else {
            return false;
        };
        let one = |kv: &mvccpb::KeyValue| {
            let ord = if c.target == CompareTarget::Value as i32 {
                let v: &[u8] = match &c.target_union {
                    Some(TargetUnion::Value(v)) => v,
                    _ => &[],
                };
                kv.value.as_slice().cmp(v)
            } else {
                let (have, want) = match (CompareTarget::try_from(c.target), &c.target_union) {
                    (Ok(CompareTarget::Create), Some(TargetUnion::CreateRevision(r))) => {
                        (kv.create_revision, *r)
                    }
                    (Ok(CompareTarget::Create), _) => (kv.create_revision, 0),
                    (Ok(CompareTarget::Mod), Some(TargetUnion::ModRevision(r))) => {
                        (kv.mod_revision, *r)
                    }
                    (Ok(CompareTarget::Mod), _) => (kv.mod_revision, 0),
                    (Ok(CompareTarget::Version), Some(TargetUnion::Version(r))) => (kv.version, *r),
                    (Ok(CompareTarget::Version), _) => (kv.version, 0),
                    (Ok(CompareTarget::Lease), Some(TargetUnion::Lease(r))) => (kv.lease, *r),
                    (Ok(CompareTarget::Lease), _) => (kv.lease, 0),
                    _ => (0, 0),
                };
                have.cmp(&want)
            };
            match CompareResult::try_from(c.result) {
                Ok(CompareResult::Equal) => ord.is_eq(),
                Ok(CompareResult::NotEqual) => ord.is_ne(),
                Ok(CompareResult::Greater) => ord.is_gt(),
                Ok(CompareResult::Less) => ord.is_lt(),
                Err(_) => true,
            }
        };
        if kvs.is_empty() {
            if c.target == CompareTarget::Value as i32 {
                return false;
            }
            return one(&mvccpb::KeyValue::default());
        }
        kvs.iter().all(one)
    }

    /// `compareToPath`: the branch taken by the txn and by each nested txn on that path, all
    /// evaluated on the state before the txn.
    fn txn_path(&self, t: &pb::TxnRequest, path: &mut Vec<bool>) {
        let ok = t.compare.iter().all(|c| self.compare(c));
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let Some(Request::RequestTxn(n)) = &op.request {
                self.txn_path(n, path);
            }
        }
    }

    /// `checkRequests` with `checkPut` (when `write`) and `checkRange` along the path.
    fn check_txn_ops(
        &self,
        t: &pb::TxnRequest,
        path: &[bool],
        pos: &mut usize,
        write: bool,
        lease_known: &dyn Fn(i64) -> bool,
    ) -> Result<(), V3Error> {
        let ok = path.get(*pos).copied().unwrap_or(false);
        *pos += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(Request::RequestTxn(n)) => {
                    self.check_txn_ops(n, path, pos, write, lease_known)?
                }
                Some(Request::RequestPut(p)) if write => {
                    if (p.ignore_value || p.ignore_lease) && self.get(&p.key)?.is_none() {
                        return Err(V3Error::KeyNotFound);
                    }
                    if p.lease != 0 && !lease_known(p.lease) {
                        return Err(V3Error::LeaseNotFound);
                    }
                }
                Some(Request::RequestRange(r)) => {
                    if r.revision > self.begin_rev {
                        return Err(V3Error::FutureRev);
                    }
                    if r.revision != 0 && r.revision < self.compact_rev {
                        return Err(V3Error::Compacted);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether every op of the txn (both branches, nested) is a range (`isTxnReadonly`).
fn txn_read_only(t: &pb::TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) => true,
            Some(Request::RequestTxn(n)) => txn_read_only(n),
            _ => false,
        })
}

/// `newTxnResp`: the response skeleton; a nested txn's header is present but empty.
fn txn_resp_skeleton(ok: bool, top: bool) -> pb::TxnResponse {
    pb::TxnResponse {
        header: if top {
            None
        } else {
            Some(pb::ResponseHeader::default())
        },
        succeeded: ok,
        responses: Vec::new(),
    }
}

/// A write being applied: the committed tables (read through `View`) plus its overlay.
struct Applier<'a, T: ReadableTable<KvKey, &'static [u8]>> {
    view: View<'a, T>,
    overlay: Overlay,
}

impl<'a, T: ReadableTable<KvKey, &'static [u8]>> Applier<'a, T> {
    fn view(&self) -> View<'_, T> {
        View {
            kv: self.view.kv,
            begin_rev: self.view.begin_rev,
            compact_rev: self.view.compact_rev,
            overlay: Some(&self.overlay),
            latest: self.view.latest,
        }
    }

    /// `storeTxnWrite.put`.
    fn put_kv(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<(), V3Error> {
        let rev = self.view.begin_rev + 1;
        let prev = self.view().get(key)?;
        let (create, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (rev, 1),
        };
        let kv = mvccpb::KeyValue {
            key: key.to_vec(),
            create_revision: create,
            mod_revision: rev,
            version,
            value,
            lease,
        };
        self.overlay.latest.insert(key.to_vec(), Some(kv.clone()));
        self.overlay.changes.push((key.to_vec(), Some(kv)));
        Ok(())
    }

    /// `applierV3backend.Put` inside a write (checks done by the caller).
    fn put(
        &mut self,
        p: &pb::PutRequest,
        lease_known: &dyn Fn(i64) -> bool,
    ) -> Result<pb::PutResponse, V3Error> {
        let mut value = p.value.clone();
        let mut lease = p.lease;
        let prev = if p.ignore_value || p.ignore_lease || p.prev_kv {
            self.view().get(&p.key)?
        } else {
            None
        };
        if p.ignore_value || p.ignore_lease {
            let Some(prev) = &prev else {
                return Err(V3Error::KeyNotFound);
            };
            if p.ignore_value {
                value = prev.value.clone();
            }
            if p.ignore_lease {
                lease = prev.lease;
            }
        }
        if lease != 0 && !p.ignore_lease && !lease_known(lease) {
            return Err(V3Error::LeaseNotFound);
        }
        self.put_kv(&p.key, value, lease)?;
        Ok(pb::PutResponse {
            header: header(self.view.begin_rev + 1),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    /// `applierV3backend.DeleteRange` inside a write.
    fn delete(&mut self, d: &pb::DeleteRangeRequest) -> Result<pb::DeleteRangeResponse, V3Error> {
        let (kvs, _) = self
            .view()
            .range_keys(&d.key, end_of(&d.range_end), 0, 0, false)?;
        for kv in &kvs {
            self.overlay.latest.insert(kv.key.clone(), None);
            self.overlay.changes.push((kv.key.clone(), None));
        }
        let rev = self.view().cur_rev();
        Ok(pb::DeleteRangeResponse {
            header: header(rev),
            deleted: kvs.len() as i64,
            prev_kvs: if d.prev_kv { kvs } else { Vec::new() },
        })
    }

    /// `applyTxn`: the ops of the branch on `path`, in order, each seeing the ones before.
    fn txn_ops(
        &mut self,
        t: &pb::TxnRequest,
        path: &[bool],
        pos: &mut usize,
        resp: &mut pb::TxnResponse,
        lease_known: &dyn Fn(i64) -> bool,
    ) -> Result<(), V3Error> {
        let ok = path.get(*pos).copied().unwrap_or(false);
        *pos += 1;
        for op in if ok { &t.success } else { &t.failure } {
            let r = match &op.request {
                Some(Request::RequestRange(r)) => {
                    Some(Response::ResponseRange(self.view().range(r)?))
                }
                Some(Request::RequestPut(p)) => {
                    Some(Response::ResponsePut(self.put(p, lease_known)?))
                }
                Some(Request::RequestDeleteRange(d)) => {
                    Some(Response::ResponseDeleteRange(self.delete(d)?))
                }
                Some(Request::RequestTxn(n)) => {
                    let nok = path.get(*pos).copied().unwrap_or(false);
                    let mut nresp = txn_resp_skeleton(nok, false);
                    self.txn_ops(n, path, pos, &mut nresp, lease_known)?;
                    Some(Response::ResponseTxn(nresp))
                }
                None => None,
            };
            resp.responses.push(pb::ResponseOp { response: r });
        }
        Ok(())
    }

    /// etcd 3.4 `applierV3backend.Txn`.
    fn txn(
        &mut self,
        t: &pb::TxnRequest,
        lease_known: &dyn Fn(i64) -> bool,
    ) -> Result<pb::TxnResponse, V3Error> {
        let write = !txn_read_only(t);
        if write {
            // What checkIntervals refused before proposing cannot be applied either.
            check::check_intervals(&t.success)?;
            check::check_intervals(&t.failure)?;
        }
        let mut path = Vec::new();
        self.view().txn_path(t, &mut path);
        self.view()
            .check_txn_ops(t, &path, &mut 0, write, lease_known)?;
        let mut resp = txn_resp_skeleton(path[0], true);
        self.txn_ops(t, &path, &mut 0, &mut resp, lease_known)?;
        resp.header = header(self.view().cur_rev());
        Ok(resp)
    }
}

/// A consistent copy of the keyspace as of the last flush, cheap to take; [`MvccDump::encode`]
/// serialises it (off the apply loop).
pub struct MvccDump {
    rtx: redb::ReadTransaction,
}

/// The dump's magic: version 3 carries, after the kv entries, the lease set, the alarms and
/// the v3 auth state.
const DUMP_MAGIC: &[u8; 16] = b"detcd-mvcc-dump3";
/// Version 2 (leases; no alarms, no auth): still read, as a dump with no alarms and a fresh
/// auth state.
const DUMP_MAGIC_V2: &[u8; 16] = b"detcd-mvcc-dump2";
/// Version 1 (before leases): still read, as a dump with no leases.
const DUMP_MAGIC_V1: &[u8; 16] = b"detcd-mvcc-dump1";

impl MvccDump {
    /// The consistent index the dump was taken at.
    pub fn index(&self) -> io::Result<u64> {
        let meta = self.rtx.open_table(META).map_err(io_err)?;
        Ok(meta
            .get(META_INDEX)
            .map_err(io_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// The dump's bytes: magic, consistent index, revision, compacted revision, the number of
    /// kv entries, each (key length u32, key, main i64, sub i64, value length u32, value), and
    /// the number of leases, each (ID i64, TTL i64), the number of alarms, each (member u64,
    /// type i64), the v3 auth state (`auth::dump_auth`), and a CRC-32 of all before it;
    /// integers little-endian.
    pub fn encode(self) -> io::Result<Vec<u8>> {
        let meta = self.rtx.open_table(META).map_err(io_err)?;
        let get = |name: &str| -> io::Result<u64> {
            Ok(meta
                .get(name)
                .map_err(io_err)?
                .map(|v| v.value())
                .unwrap_or(0))
        };
        let kv = self.rtx.open_table(KV).map_err(io_err)?;
        let mut out = Vec::new();
        out.extend_from_slice(DUMP_MAGIC);
        out.extend_from_slice(&get(META_INDEX)?.to_le_bytes());
        out.extend_from_slice(&get(META_REV)?.to_le_bytes());
        out.extend_from_slice(&get(META_COMPACT)?.to_le_bytes());
        out.extend_from_slice(&kv.len().map_err(io_err)?.to_le_bytes());
        for e in kv.iter().map_err(io_err)? {
            let (k, v) = e.map_err(io_err)?;
            let (key, main, sub) = k.value();
            let v = v.value();
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&main.to_le_bytes());
            out.extend_from_slice(&sub.to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        let leases = self.rtx.open_table(LEASES).map_err(io_err)?;
        out.extend_from_slice(&leases.len().map_err(io_err)?.to_le_bytes());
        for e in leases.iter().map_err(io_err)? {
            let (id, ttl) = e.map_err(io_err)?;
            out.extend_from_slice(&id.value().to_le_bytes());
            out.extend_from_slice(&ttl.value().to_le_bytes());
        }
        let alarms = self.rtx.open_table(ALARMS).map_err(io_err)?;
        out.extend_from_slice(&alarms.len().map_err(io_err)?.to_le_bytes());
        for e in alarms.iter().map_err(io_err)? {
            let (k, _) = e.map_err(io_err)?;
            let (member, alarm) = k.value();
            out.extend_from_slice(&member.to_le_bytes());
            out.extend_from_slice(&(alarm as i64).to_le_bytes());
        }
        auth::dump_auth(&self.rtx, &mut out)?;
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }
}

impl Mvcc {
    /// The dump of a fresh keyspace (revision 1, nothing compacted, no keys): what a Raft
    /// snapshot without a v3 part stands for (a new cluster's first snapshot).
    pub fn empty_dump() -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(DUMP_MAGIC);
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(&(-1i64 as u64).to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        auth::empty_auth_dump(&mut out);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

/// The page cache a member's keyspace gets unless told otherwise.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Reads a dump (see [`MvccDump::encode`]), every length checked.
struct DumpReader<'a> {
    data: &'a [u8],
}

impl<'a> DumpReader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.data.len() < n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "mvcc dump: truncated",
            ));
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Ok(a)
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

/// The v3 keyspace.
pub struct Mvcc {
    /// The batch's write transaction, open from the first apply until `flush`. Declared
    /// before `db` so that it is dropped (aborted) first: redb's `Database::drop` starts a
    /// write transaction of its own and would wait for this one forever.
    wtx: Option<redb::WriteTransaction>,
    /// The open database; taken only by `Drop`.
    db: Option<redb::Database>,
    file: Arc<dyn RandomFile>,
    /// The backend file's path (for messages).
    path: std::path::PathBuf,
    opts: MvccOptions,
    consistent_index: u64,
    rev: i64,
    compact_rev: i64,
    /// A storage failure during apply: the state may be half-written; flush refuses.
    failed: Option<String>,
    /// A storage failure met by a read (see [`Mvcc::damage`]).
    damage: std::sync::OnceLock<String>,
    /// The in-memory index/revisions differ from the open batch's meta table.
    meta_dirty: bool,
    /// A commit since the last durable one was not durable.
    undurable: bool,
    /// The replicated lease set (mirrors the `lease` table) with the keys attached to each
    /// (rebuilt from the keyspace when opened or restored, kept up to date by every write).
    leases: BTreeMap<i64, lease::Lease>,
    /// The live keys' newest revisions ([`Latest`]), as the tables (the open batch's
    /// writes included) hold them; None while it cannot be trusted (a write failed half
    /// way, a rebuild failed): reads then scan.
    latest: Option<Latest>,
    /// The v3 auth state (mirrors the `auth_*` tables) and this member's tokens.
    auth: auth::AuthStore,
    /// The member's clock as of the current apply batch (token lifetimes only).
    now: Option<crate::rt::Instant>,
    /// The raised alarms (member, type), mirroring the `alarm` table.
    alarms: std::collections::BTreeSet<(u64, i32)>,
    /// Live keys at the current revision (counted when opened or restored, kept up to date
    /// by every write).
    keys: u64,
}

impl std::fmt::Debug for Mvcc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mvcc")
            .field("consistent_index", &self.consistent_index)
            .field("rev", &self.rev)
            .field("compact_rev", &self.compact_rev)
            .finish()
    }
}

/// Read the meta values of a committed or open transaction's table.
fn read_meta<T: ReadableTable<&'static str, u64>>(t: &T) -> io::Result<Option<(u64, i64, i64)>> {
    let get =
        |n: &str| -> io::Result<Option<u64>> { Ok(t.get(n).map_err(io_err)?.map(|v| v.value())) };
    match (get(META_INDEX)?, get(META_REV)?, get(META_COMPACT)?) {
        (Some(i), Some(r), Some(c)) => Ok(Some((i, r as i64, c as i64))),
        (None, None, None) => Ok(None),
        _ => Err(damage("its meta table is incomplete".into())),
    }
}

/// Closing: redb commits its allocator state when a `Database` is dropped, reading its
/// free-page table; on a damaged file that can panic. What is durable was flushed already
/// (a clean close only makes the next open faster), so a panic there is caught: a member
/// stopping on a damaged disk must not bring down its process (or the simulator) on the way.
impl Drop for Mvcc {
    fn drop(&mut self) {
        let (wtx, db) = (self.wtx.take(), self.db.take());
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            drop(wtx);
            drop(db);
        }));
    }
}

impl Mvcc {
    /// Open the keyspace at `path` on `disk`: create it if absent (revision 1, nothing
    /// compacted: etcd's `compactMainRev = -1`), else recover what the last durable flush
    /// left.
    ///
    /// A damaged file is refused with an error of kind [`io::ErrorKind::InvalidData`]
    /// ([`is_damage`]): redb found a page whose checksum does not match in every root it
    /// could fall back to, redb failed (panicked) reading it, or a record in it does not
    /// decode. Every open verifies the checksums of every page, not only after a crash: a
    /// bit that flipped in a file closed cleanly is found too. A damaged last commit alone
    /// is not refused: redb falls back to the commit before it, and the caller re-applies
    /// the entries after that commit's consistent index from the WAL.
    pub fn open(disk: Arc<dyn Disk>, path: &Path, opts: MvccOptions) -> io::Result<Mvcc> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                disk.create_dir_all(parent)?;
            }
        }
        let file: Arc<dyn RandomFile> = Arc::from(disk.open_random(path)?);
        // A damaged page redb trusts can make it panic (an index out of bounds while it reads
        // its free-page table: found by the `disk-corruption` scenario). A damaged backend is
        // a reason to refuse (or rebuild) with a message, not to crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_redb(Arc::clone(&file), path, opts)
        }));
        match opened {
            Ok(r) => r.map(|mut m| {
                m.path = path.to_path_buf();
                m
            }),
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(damage(format!("redb failed reading it: {what}")))
            }
        }
    }

    fn open_redb(file: Arc<dyn RandomFile>, path: &Path, opts: MvccOptions) -> io::Result<Mvcc> {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(opts.cache_bytes);
        let (backend, verified) = backend::DiskBackend::new(Arc::clone(&file), path);
        let mut db = builder.create_with_backend(backend).map_err(open_err)?;
        // redb verifies the checksums by itself only after an unclean shutdown.
        if !db.check_integrity().map_err(open_err)? {
            tracing::warn!(
                "the v3 backend's last commit was damaged: rolled back to the commit before it"
            );
        }
        // Every page in use was read and its checksum matched: the backend checks every
        // later read against what it read (or was written) here.
        verified.now();
        let wtx = db.begin_write().map_err(open_err)?;
        let meta = {
            wtx.open_table(KV).map_err(open_err)?;
            wtx.open_table(REVS).map_err(open_err)?;
            wtx.open_table(LEASES).map_err(open_err)?;
            wtx.open_table(auth::AUTH_USERS).map_err(open_err)?;
            wtx.open_table(auth::AUTH_ROLES).map_err(open_err)?;
            wtx.open_table(ALARMS).map_err(open_err)?;
            let mut meta = wtx.open_table(META).map_err(open_err)?;
            match read_meta(&meta)? {
                Some(m) => m,
                None => {
                    meta.insert(META_INDEX, 0).map_err(open_err)?;
                    meta.insert(META_REV, 1).map_err(open_err)?;
                    meta.insert(META_COMPACT, -1i64 as u64).map_err(open_err)?;
                    (0, 1, -1)
                }
            }
        };
        wtx.commit().map_err(open_err)?;
        let mut m = Mvcc {
            db: Some(db),
            file,
            path: std::path::PathBuf::new(),
            wtx: None,
            opts,
            consistent_index: meta.0,
            rev: meta.1,
            compact_rev: meta.2,
            failed: None,
            damage: std::sync::OnceLock::new(),
            meta_dirty: false,
            undurable: false,
            leases: BTreeMap::new(),
            latest: None,
            auth: auth::AuthStore::default(),
            now: None,
            alarms: Default::default(),
            keys: 0,
        };
        // The pages' checksums matched; a record that still does not make sense is damage
        // the checksums missed (or written so by a bug): as untrustworthy either way.
        let loaded = m
            .count_keys()
            .and_then(|()| m.load_leases())
            .and_then(|()| m.load_auth())
            .and_then(|()| m.load_alarms());
        if let Err(e) = loaded {
            return Err(if e.kind() == io::ErrorKind::InvalidData {
                e
            } else {
                damage(format!("a record does not load: {e}"))
            });
        }
        Ok(m)
    }

    fn db(&self) -> &redb::Database {
        self.db.as_ref().expect("open until dropped")
    }

    fn db_mut(&mut self) -> &mut redb::Database {
        self.db.as_mut().expect("open until dropped")
    }

    /// The options it was opened with.
    pub fn options(&self) -> &MvccOptions {
        &self.opts
    }

    /// The highest Raft index applied (durable after `flush(true)`).
    pub fn consistent_index(&self) -> u64 {
        self.consistent_index
    }

    /// The store's revision.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// The last compacted revision; -1 before any compaction (etcd's `compactMainRev`).
    pub fn compact_revision(&self) -> i64 {
        self.compact_rev
    }

    fn wtx(&mut self) -> Result<&redb::WriteTransaction, V3Error> {
        if self.wtx.is_none() {
            self.wtx = Some(self.db().begin_write().map_err(storage_err)?);
        }
        Ok(self.wtx.as_ref().expect("just opened"))
    }

    fn write_meta(&mut self) -> Result<(), V3Error> {
        let (i, r, c) = (self.consistent_index, self.rev, self.compact_rev);
        let wtx = self.wtx()?;
        let mut meta = wtx.open_table(META).map_err(storage_err)?;
        meta.insert(META_INDEX, i).map_err(storage_err)?;
        meta.insert(META_REV, r as u64).map_err(storage_err)?;
        meta.insert(META_COMPACT, c as u64).map_err(storage_err)?;
        Ok(())
    }

    /// Apply a write committed at Raft `index`. `None` when `index <= consistent_index`
    /// (applied before a restart). The events are the changes it made, in order.
    pub fn apply(
        &mut self,
        index: u64,
        req: &WriteReq,
        lease_known: &dyn Fn(i64) -> bool,
    ) -> Option<(Result<WriteResp, V3Error>, Vec<mvccpb::Event>)> {
        let (out, attached) = self.apply_write(index, Write::Req(req, lease_known))?;
        self.attach(attached);
        Some(out)
    }

    /// [`Mvcc::apply`] without updating the lease set's attached keys: the caller does.
    #[allow(clippy::type_complexity)]
    fn apply_write(
        &mut self,
        index: u64,
        w: Write<'_>,
    ) -> Option<(
        (Result<WriteResp, V3Error>, Vec<mvccpb::Event>),
        Vec<Attach>,
    )> {
        if index <= self.consistent_index {
            return None;
        }
        if let Some(e) = &self.failed {
            return Some(((Err(V3Error::Storage(e.clone())), Vec::new()), Vec::new()));
        }
        let out = match self.apply_inner(w) {
            Ok(x) => x,
            Err(e @ V3Error::Storage(_)) => {
                self.failed = Some(e.to_string());
                return Some(((Err(e), Vec::new()), Vec::new()));
            }
            Err(e) => ((Err(e), Vec::new()), Vec::new()),
        };
        self.consistent_index = index;
        self.meta_dirty = true;
        Some(out)
    }

    #[allow(clippy::type_complexity)]
    fn apply_inner(
        &mut self,
        w: Write<'_>,
    ) -> Result<
        (
            (Result<WriteResp, V3Error>, Vec<mvccpb::Event>),
            Vec<Attach>,
        ),
        V3Error,
    > {
        // etcd's corrupt applier while a CORRUPT alarm is raised: every write it applies
        // (put, delete, txn, compaction) fails; reads are not applied and go on.
        if self.corrupt() {
            if let Write::Req(..) = w {
                return Ok(((Err(V3Error::Corrupt), Vec::new()), Vec::new()));
            }
        }
        if let Write::Req(WriteReq::Compaction(c), _) = w {
            return Ok((
                (
                    self.compact(c.revision).map(WriteResp::Compaction),
                    Vec::new(),
                ),
                Vec::new(),
            ));
        }
        // etcd's capped applier while a NOSPACE alarm is raised: no put, no txn with a put.
        if self.no_space() {
            match w {
                Write::Req(WriteReq::Put(_), _) => {
                    return Ok(((Err(V3Error::NoSpace), Vec::new()), Vec::new()))
                }
                Write::Req(WriteReq::Txn(t), _) if quota_cost(Costed::Txn(t)) > 0 => {
                    return Ok(((Err(V3Error::NoSpace), Vec::new()), Vec::new()))
                }
                _ => {}
            }
        }
        // The index leaves `self` while the write goes into the tables (the write
        // transaction borrows all of `self`), and comes back whatever the outcome.
        let mut latest = self.latest.take();
        let out = self.apply_to_tables(w, latest.as_mut());
        // A storage error may have left some of the write's entries in the tables: the
        // index is not trusted again until the batch is aborted and it is rebuilt.
        self.latest = latest.filter(|_| out.is_ok());
        out
    }

    /// The rest of [`Mvcc::apply_inner`]: a write that may change keys, into the tables and
    /// the key index `latest`.
    #[allow(clippy::type_complexity)]
    fn apply_to_tables(
        &mut self,
        w: Write<'_>,
        latest: Option<&mut Latest>,
    ) -> Result<
        (
            (Result<WriteResp, V3Error>, Vec<mvccpb::Event>),
            Vec<Attach>,
        ),
        V3Error,
    > {
        let (begin_rev, compact_rev) = (self.rev, self.compact_rev);
        let wtx = self.wtx()?;
        let mut kv = wtx.open_table(KV).map_err(storage_err)?;
        let (resp, overlay) = {
            let mut a = Applier {
                view: View {
                    kv: &kv,
                    begin_rev,
                    compact_rev,
                    overlay: None,
                    latest: latest.as_deref(),
                },
                overlay: Overlay::default(),
            };
            let resp = match w {
                Write::Revoke(keys) => {
                    // `lessor.Revoke`: the attached keys, sorted, deleted in one txn.
                    let mut deleted = 0;
                    for key in keys {
                        if a.view().get(key)?.is_some() {
                            a.overlay.latest.insert(key.clone(), None);
                            a.overlay.changes.push((key.clone(), None));
                            deleted += 1;
                        }
                    }
                    Ok(WriteResp::DeleteRange(pb::DeleteRangeResponse {
                        header: header(a.view().cur_rev()),
                        deleted,
                        prev_kvs: Vec::new(),
                    }))
                }
                Write::Req(WriteReq::Put(p), lease_known) => {
                    // Outside a txn the lease is checked before anything else.
                    if p.lease != 0 && !lease_known(p.lease) {
                        Err(V3Error::LeaseNotFound)
                    } else {
                        a.put(p, lease_known).map(WriteResp::Put)
                    }
                }
                Write::Req(WriteReq::DeleteRange(d), _) => a.delete(d).map(WriteResp::DeleteRange),
                Write::Req(WriteReq::Txn(t), lease_known) => {
                    a.txn(t, lease_known).map(WriteResp::Txn)
                }
                Write::Req(WriteReq::Compaction(_), _) => unreachable!("handled above"),
            };
            (resp, a.overlay)
        };
        let resp = match resp {
            Err(e @ V3Error::Storage(_)) => return Err(e),
            Err(e) => return Ok(((Err(e), Vec::new()), Vec::new())),
            Ok(r) => r,
        };
        if overlay.changes.is_empty() {
            return Ok(((Ok(resp), Vec::new()), Vec::new()));
        }
        // Which keys move between leases: each touched key's lease before and after.
        let mut attached = Vec::new();
        // Live keys after the write minus before it (etcd's `keysGauge`).
        let mut live_delta = 0i64;
        for (key, now) in &overlay.latest {
            let mut was = None;
            scan(
                &kv,
                latest.as_deref(),
                key,
                End::Single,
                begin_rev,
                |_, payload| {
                    was = Some(decode_put(payload)?);
                    Ok(true)
                },
            )?;
            live_delta += i64::from(now.is_some()) - i64::from(was.is_some());
            let before = was.map_or(0, |kv| kv.lease);
            let after = now.as_ref().map_or(0, |kv| kv.lease);
            if before != after {
                attached.push(Attach {
                    key: key.clone(),
                    before,
                    after,
                });
            }
        }
        let rev = begin_rev + 1;
        let mut revs = wtx.open_table(REVS).map_err(storage_err)?;
        let mut events = Vec::with_capacity(overlay.changes.len());
        // The index follows once every entry is in the tables.
        let mut indexed = Vec::with_capacity(overlay.changes.len());
        for (sub, (key, change)) in overlay.changes.into_iter().enumerate() {
            let sub = sub as i64;
            let (raw, ev) = match change {
                Some(kv) => (
                    encode_put(&kv),
                    mvccpb::Event {
                        r#type: mvccpb::event::EventType::Put as i32,
                        kv: Some(kv),
                        prev_kv: None,
                    },
                ),
                None => (
                    encode_tombstone(&key),
                    mvccpb::Event {
                        r#type: mvccpb::event::EventType::Delete as i32,
                        kv: Some(mvccpb::KeyValue {
                            key: key.clone(),
                            mod_revision: rev,
                            ..Default::default()
                        }),
                        prev_kv: None,
                    },
                ),
            };
            kv.insert((key.as_slice(), rev, sub), raw.as_slice())
                .map_err(storage_err)?;
            revs.insert((rev, sub), key.as_slice())
                .map_err(storage_err)?;
            let put = ev.r#type == mvccpb::event::EventType::Put as i32;
            indexed.push((key, put.then_some((rev, sub))));
            events.push(ev);
        }
        drop((kv, revs));
        if let Some(latest) = latest {
            for (key, at) in indexed {
                match at {
                    Some(at) => latest.insert(key, at),
                    None => latest.remove(&key),
                };
            }
        }
        self.rev = rev;
        self.keys = self.keys.saturating_add_signed(live_delta);
        Ok(((Ok(resp), events), attached))
    }

    /// `store.Compact`: drop, per key, every revision ≤ `rev` but the newest, and that one
    /// too if it is a tombstone below `rev`. A tombstone at `rev` itself stays until a later
    /// compaction: a watch may start at the compaction revision and must see that Delete
    /// (etcd 3.4.23 dropped it, etcd-io/etcd#18089, fixed upstream by keeping it, #18274;
    /// found here by v3-partitions seeds 56 and 121, the watch check's `Resumable`).
    fn compact(&mut self, rev: i64) -> Result<pb::CompactionResponse, V3Error> {
        if rev <= self.compact_rev {
            return Err(V3Error::Compacted);
        }
        if rev > self.rev {
            return Err(V3Error::FutureRev);
        }
        let from = self.compact_rev.max(0);
        let cur = self.rev;
        let wtx = self.wtx()?;
        let mut kv = wtx.open_table(KV).map_err(storage_err)?;
        let mut revs = wtx.open_table(REVS).map_err(storage_err)?;
        // Only keys changed in [previous compaction, rev] have anything left to drop (the
        // previous compaction's own revision for the tombstones it kept).
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for e in revs
            .range::<(i64, i64)>((from, i64::MIN)..=(rev, i64::MAX))
            .map_err(storage_err)?
        {
            keys.push(e.map_err(storage_err)?.1.value().to_vec());
        }
        keys.sort();
        keys.dedup();
        for key in keys {
            let mut entries: Vec<(i64, i64, bool)> = Vec::new();
            for e in kv
                .range::<(&[u8], i64, i64)>(
                    (key.as_slice(), i64::MIN, i64::MIN)..=(key.as_slice(), rev, i64::MAX),
                )
                .map_err(storage_err)?
            {
                let (k, v) = e.map_err(storage_err)?;
                let (_, main, sub) = k.value();
                entries.push((main, sub, !entry(v.value())?.0));
            }
            let keep_newest = entries
                .last()
                .is_some_and(|&(main, _, tomb)| !tomb || main == rev);
            let n = entries.len() - usize::from(keep_newest);
            for &(main, sub, _) in &entries[..n] {
                kv.remove((key.as_slice(), main, sub))
                    .map_err(storage_err)?;
                revs.remove((main, sub)).map_err(storage_err)?;
            }
        }
        drop((kv, revs));
        self.compact_rev = rev;
        Ok(pb::CompactionResponse {
            header: header(cur),
        })
    }

    /// Record that Raft `index` was applied with no v3 effect.
    pub fn set_index(&mut self, index: u64) {
        if index <= self.consistent_index || self.failed.is_some() {
            return;
        }
        self.consistent_index = index;
        self.meta_dirty = true;
    }

    /// The storage failure that stopped writes, if one did: every later write and
    /// [`Mvcc::flush`] fails with it, and the consistent index stays where it was.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Whether [`Mvcc::flush`]`(durable)` would commit a transaction (for its latency metric).
    pub fn commit_due(&self, durable: bool) -> bool {
        self.failed.is_none()
            && (self.wtx.is_some() || self.meta_dirty || (durable && self.undurable))
    }

    /// The backend file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// End of an apply batch: commit the open write transaction; `durable` makes it (and
    /// every earlier commit) survive a crash (fsync), else it is only visible.
    pub fn flush(&mut self, durable: bool) -> io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(io::Error::other(e.clone()));
        }
        if self.meta_dirty {
            // The batch's meta, once: it commits (or is lost) with the batch's data.
            if let Err(e) = self.write_meta() {
                self.failed = Some(e.to_string());
                return Err(io_err(e));
            }
        }
        let mut wtx = match self.wtx.take() {
            Some(w) => w,
            None if durable && self.undurable => {
                // Earlier non-durable commits become durable with an empty durable one.
                self.db().begin_write().map_err(io_err)?
            }
            None => return Ok(()),
        };
        wtx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(io_err)?;
        if let Err(e) = wtx.commit() {
            self.failed = Some(e.to_string());
            return Err(io_err(e));
        }
        self.meta_dirty = false;
        self.undurable = !durable;
        Ok(())
    }

    /// Remember a storage failure met while reading (see [`Mvcc::damage`]); pass `r` on.
    fn noting<T>(&self, r: Result<T, V3Error>) -> Result<T, V3Error> {
        if let Err(V3Error::Storage(e)) = &r {
            let _ = self.damage.set(e.clone());
        }
        r
    }

    /// What a read found wrong with the backend (a checksum that did not match, a record
    /// that did not decode, an I/O error), if one did: the member must stop (etcd panics).
    /// Reads are made by request handlers under the keyspace's lock, so they cannot stop
    /// the member themselves; the Ready loop looks at every tick. Once restarted, the
    /// member verifies every page and rebuilds a damaged keyspace (see `server::open_mvcc`).
    pub fn damage(&self) -> Option<&str> {
        self.damage.get().map(String::as_str)
    }

    /// What a read that met damage records (for tests of whoever reacts to it).
    #[cfg(test)]
    pub(crate) fn note_damage(&self, what: &str) {
        let _ = self.noting::<()>(Err(storage_err(what)));
    }

    fn read_view<T: ReadableTable<KvKey, &'static [u8]>, R>(
        &self,
        kv: &T,
        f: impl FnOnce(&View<'_, T>) -> R,
    ) -> R {
        f(&View {
            kv,
            begin_rev: self.rev,
            compact_rev: self.compact_rev,
            overlay: None,
            latest: self.latest.as_ref(),
        })
    }

    /// A Range on the current state (the open batch's writes included).
    pub fn range(&self, r: &pb::RangeRequest) -> Result<pb::RangeResponse, V3Error> {
        self.noting(self.range_inner(r))
    }

    fn range_inner(&self, r: &pb::RangeRequest) -> Result<pb::RangeResponse, V3Error> {
        match &self.wtx {
            Some(w) => {
                let kv = w.open_table(KV).map_err(storage_err)?;
                self.read_view(&kv, |v| v.range(r))
            }
            None => {
                let rtx = self.db().begin_read().map_err(storage_err)?;
                let kv = rtx.open_table(KV).map_err(storage_err)?;
                self.read_view(&kv, |v| v.range(r))
            }
        }
    }

    /// A txn whose ops are all ranges, evaluated on the current state without a revision.
    pub fn txn_read(&self, r: &pb::TxnRequest) -> Result<pb::TxnResponse, V3Error> {
        self.noting(self.txn_read_inner(r))
    }

    fn txn_read_inner(&self, r: &pb::TxnRequest) -> Result<pb::TxnResponse, V3Error> {
        if !txn_read_only(r) {
            return Err(V3Error::NotReadOnly);
        }
        fn run<T: ReadableTable<KvKey, &'static [u8]>>(
            r: &pb::TxnRequest,
            v: &View<'_, T>,
        ) -> Result<pb::TxnResponse, V3Error> {
            let mut path = Vec::new();
            v.txn_path(r, &mut path);
            v.check_txn_ops(r, &path, &mut 0, false, &|_| true)?;
            let mut a = Applier {
                view: View {
                    kv: v.kv,
                    begin_rev: v.begin_rev,
                    compact_rev: v.compact_rev,
                    overlay: None,
                    latest: v.latest,
                },
                overlay: Overlay::default(),
            };
            let mut resp = txn_resp_skeleton(path[0], true);
            a.txn_ops(r, &path, &mut 0, &mut resp, &|_| true)?;
            resp.header = header(v.cur_rev());
            Ok(resp)
        }
        match &self.wtx {
            Some(w) => {
                let kv = w.open_table(KV).map_err(storage_err)?;
                self.read_view(&kv, |v| run(r, v))
            }
            None => {
                let rtx = self.db().begin_read().map_err(storage_err)?;
                let kv = rtx.open_table(KV).map_err(storage_err)?;
                self.read_view(&kv, |v| run(r, v))
            }
        }
    }

    /// The events of revisions `from..=to` still kept (a watcher catching up from history,
    /// as etcd's `syncWatchers` reads them from the backend), in revision order, at most
    /// `limit` (0: all) — never splitting a revision unless one alone is over the limit.
    /// `from` below the compacted revision is [`V3Error::Compacted`]; `to` is capped at the
    /// current revision. A delete's event carries the key and its revision only, as `apply`'s.
    pub fn events(&self, from: i64, to: i64, limit: usize) -> Result<Vec<mvccpb::Event>, V3Error> {
        self.noting(self.events_inner(from, to, limit))
    }

    fn events_inner(
        &self,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<mvccpb::Event>, V3Error> {
        if from < self.compact_rev {
            return Err(V3Error::Compacted);
        }
        let to = to.min(self.rev);
        if from > to {
            return Ok(Vec::new());
        }
        fn read<
            R: ReadableTable<(i64, i64), &'static [u8]>,
            K: ReadableTable<KvKey, &'static [u8]>,
        >(
            revs: &R,
            kv: &K,
            from: i64,
            to: i64,
            limit: usize,
        ) -> Result<Vec<mvccpb::Event>, V3Error> {
            let mut out = Vec::new();
            let mut last_main = i64::MIN;
            for e in revs
                .range::<(i64, i64)>((from, i64::MIN)..=(to, i64::MAX))
                .map_err(storage_err)?
            {
                let (k, key) = e.map_err(storage_err)?;
                let (main, sub) = k.value();
                if limit > 0 && out.len() >= limit && main != last_main {
                    break;
                }
                last_main = main;
                let key = key.value();
                let raw = kv
                    .get((key, main, sub))
                    .map_err(storage_err)?
                    .ok_or_else(|| storage_err("rev table names a missing kv entry"))?
                    .value()
                    .to_vec();
                out.push(match decode(&raw)? {
                    Some(kv) => mvccpb::Event {
                        r#type: mvccpb::event::EventType::Put as i32,
                        kv: Some(kv),
                        prev_kv: None,
                    },
                    None => mvccpb::Event {
                        r#type: mvccpb::event::EventType::Delete as i32,
                        kv: Some(mvccpb::KeyValue {
                            key: key.to_vec(),
                            mod_revision: main,
                            ..Default::default()
                        }),
                        prev_kv: None,
                    },
                });
            }
            Ok(out)
        }
        match &self.wtx {
            Some(w) => {
                let revs = w.open_table(REVS).map_err(storage_err)?;
                let kv = w.open_table(KV).map_err(storage_err)?;
                read(&revs, &kv, from, to, limit)
            }
            None => {
                let rtx = self.db().begin_read().map_err(storage_err)?;
                let revs = rtx.open_table(REVS).map_err(storage_err)?;
                let kv = rtx.open_table(KV).map_err(storage_err)?;
                read(&revs, &kv, from, to, limit)
            }
        }
    }

    /// A consistent copy of the keyspace as of the last `flush` (the open batch's writes are
    /// not in it: flush first). Send + 'static: serialise it anywhere.
    pub fn dump(&self) -> io::Result<MvccDump> {
        Ok(MvccDump {
            rtx: self.db().begin_read().map_err(io_err)?,
        })
    }

    /// Replace the whole keyspace with a dump; the consistent index becomes `index`. Durable
    /// on return. A bad dump changes nothing. The open batch, if any, is dropped.
    pub fn restore(&mut self, data: &[u8], index: u64) -> io::Result<()> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("mvcc dump: {m}"));
        let v1 = data.starts_with(DUMP_MAGIC_V1);
        let v2 = data.starts_with(DUMP_MAGIC_V2);
        if data.len() < DUMP_MAGIC.len() + 4 || !(data.starts_with(DUMP_MAGIC) || v1 || v2) {
            return Err(bad("not a dump"));
        }
        let (body, crc) = data.split_at(data.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(bad("checksum mismatch"));
        }
        let mut r = DumpReader {
            data: &body[DUMP_MAGIC.len()..],
        };
        let _dump_index = r.u64()?;
        let rev = r.u64()? as i64;
        let compact = r.u64()? as i64;
        let n = r.u64()?;
        if rev < 1 || compact > rev {
            return Err(bad("bad revisions"));
        }
        self.abort_batch()?;
        let mut wtx = self.db().begin_write().map_err(io_err)?;
        wtx.delete_table(KV).map_err(io_err)?;
        wtx.delete_table(REVS).map_err(io_err)?;
        wtx.delete_table(LEASES).map_err(io_err)?;
        wtx.delete_table(ALARMS).map_err(io_err)?;
        {
            let mut kv = wtx.open_table(KV).map_err(io_err)?;
            let mut revs = wtx.open_table(REVS).map_err(io_err)?;
            for _ in 0..n {
                let klen = r.u32()? as usize;
                let key = r.take(klen)?;
                let main = r.u64()? as i64;
                let sub = r.u64()? as i64;
                let vlen = r.u32()? as usize;
                let v = r.take(vlen)?;
                if main > rev || decode(v).is_err() {
                    return Err(bad("bad entry"));
                }
                kv.insert((key, main, sub), v).map_err(io_err)?;
                revs.insert((main, sub), key).map_err(io_err)?;
            }
            let mut leases = wtx.open_table(LEASES).map_err(io_err)?;
            let n = if v1 { 0 } else { r.u64()? };
            for _ in 0..n {
                let id = r.u64()? as i64;
                let ttl = r.u64()? as i64;
                leases.insert(id, ttl).map_err(io_err)?;
            }
            drop(leases);
            let mut alarms = wtx.open_table(ALARMS).map_err(io_err)?;
            let n = if v1 || v2 { 0 } else { r.u64()? };
            for _ in 0..n {
                let member = r.u64()?;
                let alarm = i32::try_from(r.u64()? as i64).map_err(|_| bad("bad alarm"))?;
                alarms.insert((member, alarm), 0).map_err(io_err)?;
            }
            drop(alarms);
            auth::restore_auth(&wtx, if v1 || v2 { None } else { Some(&mut r) })?;
            if !r.data.is_empty() {
                return Err(bad("trailing bytes"));
            }
            let mut meta = wtx.open_table(META).map_err(io_err)?;
            meta.insert(META_INDEX, index).map_err(io_err)?;
            meta.insert(META_REV, rev as u64).map_err(io_err)?;
            meta.insert(META_COMPACT, compact as u64).map_err(io_err)?;
        }
        wtx.set_durability(Durability::Immediate).map_err(io_err)?;
        wtx.commit().map_err(io_err)?;
        self.consistent_index = index;
        self.rev = rev;
        self.compact_rev = compact;
        self.failed = None;
        self.meta_dirty = false;
        self.undurable = false;
        self.count_keys()?;
        self.load_leases()?;
        self.load_auth()?;
        self.load_alarms()
    }

    /// Drop the open batch, if any, and go back to the last committed state.
    fn abort_batch(&mut self) -> io::Result<()> {
        if let Some(w) = self.wtx.take() {
            w.abort().map_err(io_err)?;
            let rtx = self.db().begin_read().map_err(io_err)?;
            let meta = rtx.open_table(META).map_err(io_err)?;
            let (i, r, c) = read_meta(&meta)?.ok_or_else(|| io_err("mvcc: no meta table"))?;
            self.consistent_index = i;
            self.rev = r;
            self.compact_rev = c;
            self.meta_dirty = false;
            self.count_keys()?;
            self.load_leases()?;
            self.load_auth()?;
            self.load_alarms()?;
        }
        Ok(())
    }

    /// Index and count the live keys of the committed keyspace (one scan, when opened or
    /// restored, or its batch aborted).
    fn count_keys(&mut self) -> io::Result<()> {
        let rtx = self.db().begin_read().map_err(io_err)?;
        let kv = rtx.open_table(KV).map_err(io_err)?;
        self.latest = None;
        let latest = build_latest(&kv, self.rev).map_err(io_err)?;
        self.keys = latest.len() as u64;
        self.latest = Some(latest);
        Ok(())
    }

    /// Live keys at the current revision (etcd's `etcd_debugging_mvcc_keys_total`).
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The database file's size in bytes (etcd's `dbSize`).
    pub fn db_size(&self) -> u64 {
        self.file.len().unwrap_or(0)
    }

    /// The bytes of the file in use by pages (etcd's `dbSizeInUse`). redb counts them by
    /// walking every tree: O(pages), for a Status call, not for every request.
    pub fn db_size_in_use(&self) -> u64 {
        let stats = match &self.wtx {
            Some(w) => w.stats(),
            None => match self.db().begin_write() {
                Ok(w) => {
                    let s = w.stats();
                    let _ = w.abort();
                    s
                }
                Err(_) => return 0,
            },
        };
        stats
            .map(|s| s.allocated_pages() * s.page_size() as u64)
            .unwrap_or(0)
    }
}
