//! The sequential model: etcd 3.4's MVCC store, with every key's history kept (so a Range
//! at an older revision is answered exactly) and an undo log (so the search can step back).
//!
//! Rules (etcd 3.4 `mvcc/kvstore*.go`, `etcdserver/apply.go`, `v3rpc/key.go`):
//! - a fresh store is at revision 1, compact revision -1; the first write makes revision 2;
//! - every Put takes a new revision (even with the same value); a DeleteRange of nothing
//!   and a Txn that changed nothing do not; all writes of one Txn share one revision and
//!   later ops of a Txn see earlier ones; sub-responses carry the store revision as the
//!   Txn saw it at that op (the begin revision, +1 once the Txn has changed something);
//! - `create_revision` is the revision of the put that created the key since its last
//!   delete, `version` is 1 on create and +1 per put; a delete resets both;
//! - compares: every key in a compare's range must satisfy it; a compare on no key
//!   compares zero values, except VALUE, which is then false;
//! - Range: `revision` > current → future-revision error; `revision` < compact revision
//!   → compacted error (reading *at* the compact revision is allowed); ≤ 0 → current;
//!   `count` = keys in range before `limit`; `more` = `limit` left kvs out; `count_only`
//!   → no kvs, `more` false; `keys_only` → values dropped; the header revision is the
//!   current revision even for a Range at an older one;
//! - Compact(rev): rev ≤ compact revision → compacted; rev > current → future revision;
//! - static checks: empty key; more than 128 ops in a txn's compares, success or
//!   failure; two puts of one key, or a put inside a deleted range, in one branch
//!   (nested txns included) → duplicate key.
//!
//! - LeaseRevoke(id) (a client's, or a lease expiry, which is a revocation the leader
//!   proposes): every key whose kv names the lease is deleted, in key order, at one new
//!   revision (none attached: no new revision); the lease is then over, so a second
//!   revocation, or a Put naming it, fails with "requested lease not found".
//!
//! Not modelled: lease grants (a Put's lease is taken as existing until it is revoked or
//! expires), sort orders and min/max revision filters of Range, auth.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::types::*;

/// etcd's `--max-txn-ops` default.
pub const MAX_TXN_OPS: usize = 128;

/// An error the store answers (etcd's code and message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// `etcdserver: key is not provided`.
    EmptyKey,
    /// `etcdserver: mvcc: required revision has been compacted`.
    Compacted,
    /// `etcdserver: mvcc: required revision is a future revision`.
    FutureRev,
    /// `etcdserver: duplicate key given in txn request`.
    DuplicateKey,
    /// `etcdserver: too many operations in txn request`.
    TooManyOps,
    /// A compact inside a txn (no such `RequestOp`).
    CompactInTxn,
    /// `etcdserver: requested lease not found`.
    LeaseNotFound,
}

impl StoreError {
    /// The gRPC code's name.
    pub fn code(self) -> &'static str {
        match self {
            StoreError::Compacted | StoreError::FutureRev => "OutOfRange",
            StoreError::LeaseNotFound => "NotFound",
            _ => "InvalidArgument",
        }
    }

    /// The part of the message a client can rely on.
    pub fn message(self) -> &'static str {
        match self {
            StoreError::EmptyKey => "key is not provided",
            StoreError::Compacted => "required revision has been compacted",
            StoreError::FutureRev => "required revision is a future revision",
            StoreError::DuplicateKey => "duplicate key given in txn request",
            StoreError::TooManyOps => "too many operations in txn request",
            StoreError::CompactInTxn => "compact is not a txn operation",
            StoreError::LeaseNotFound => "requested lease not found",
        }
    }

    /// Whether a recorded error is this one (same code, message containing ours).
    pub fn matches(self, e: &GrpcError) -> bool {
        e.code == self.code() && e.message.contains(self.message())
    }

    /// The error a recorded one names, if the model knows it.
    pub fn recognise(e: &GrpcError) -> Option<StoreError> {
        [
            StoreError::EmptyKey,
            StoreError::Compacted,
            StoreError::FutureRev,
            StoreError::DuplicateKey,
            StoreError::TooManyOps,
        ]
        .into_iter()
        .find(|s| s.matches(e))
    }
}

/// Whether `k` lies in [key, end) with etcd's conventions for `end` ("" = key alone,
/// "\0" = no upper bound).
pub fn in_range(key: &str, end: &str, k: &str) -> bool {
    if end.is_empty() {
        k == key
    } else if end == "\0" {
        k >= key
    } else {
        k >= key && k < end
    }
}

#[derive(Debug, Clone)]
enum Undo {
    Key(String),
    Rev(i64),
    Compact(i64),
    Changes,
    Ended(i64),
}

/// One key's history: (revision, kv or tombstone), in revision order.
type KeyHistory = Vec<(i64, Option<KeyValue>)>;

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    /// Current revision.
    pub rev: i64,
    /// Compact revision (-1: never compacted).
    pub compact: i64,
    keys: BTreeMap<String, KeyHistory>,
    /// Events per revision (index = revision), in the order the writes happened.
    changes: Vec<Vec<Event>>,
    /// Leases revoked or expired.
    ended: BTreeSet<i64>,
    undo: Vec<Undo>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// A fresh store: revision 1, never compacted.
    pub fn new() -> Store {
        Store {
            rev: 1,
            compact: -1,
            keys: BTreeMap::new(),
            changes: vec![Vec::new(), Vec::new()],
            ended: BTreeSet::new(),
            undo: Vec::new(),
        }
    }

    /// A point to roll back to.
    pub fn mark(&self) -> usize {
        self.undo.len()
    }

    /// Roll back to a mark.
    pub fn rollback(&mut self, mark: usize) {
        while self.undo.len() > mark {
            match self.undo.pop().expect("undo entry") {
                Undo::Key(k) => {
                    let h = self.keys.get_mut(&k).expect("key with history");
                    h.pop();
                    if h.is_empty() {
                        self.keys.remove(&k);
                    }
                }
                Undo::Rev(r) => self.rev = r,
                Undo::Compact(c) => self.compact = c,
                Undo::Changes => {
                    self.changes.pop();
                }
                Undo::Ended(id) => {
                    self.ended.remove(&id);
                }
            }
        }
    }

    /// Whether lease `id` was revoked or expired.
    pub fn lease_ended(&self, id: i64) -> bool {
        self.ended.contains(&id)
    }

    /// Forget the undo log (nothing before this point will be rolled back).
    pub fn commit(&mut self) {
        self.undo.clear();
    }

    /// The events of revision `rev` (empty for revision 1 and unknown revisions).
    pub fn events(&self, rev: i64) -> &[Event] {
        usize::try_from(rev)
            .ok()
            .and_then(|r| self.changes.get(r))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The kv of `key` at revision `rev` (None: absent).
    pub fn kv_at(&self, key: &str, rev: i64) -> Option<&KeyValue> {
        let h = self.keys.get(key)?;
        let n = h.partition_point(|(r, _)| *r <= rev);
        if n == 0 {
            return None;
        }
        h[n - 1].1.as_ref()
    }

    /// The kvs in [key, end) at `rev`, in key order.
    pub fn kvs_at<'a>(
        &'a self,
        key: &'a str,
        end: &'a str,
        rev: i64,
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        let range: Box<dyn Iterator<Item = (&String, &KeyHistory)>> = if end.is_empty() {
            Box::new(self.keys.get_key_value(key).into_iter())
        } else if end == "\0" {
            Box::new(
                self.keys
                    .range::<str, _>((Bound::Included(key), Bound::Unbounded)),
            )
        } else if key < end {
            Box::new(
                self.keys
                    .range::<str, _>((Bound::Included(key), Bound::Excluded(end))),
            )
        } else {
            Box::new(std::iter::empty())
        };
        range.filter_map(move |(_, h)| {
            let n = h.partition_point(|(r, _)| *r <= rev);
            if n == 0 {
                None
            } else {
                h[n - 1].1.as_ref()
            }
        })
    }

    fn push(&mut self, key: &str, rev: i64, kv: Option<KeyValue>) {
        self.keys
            .entry(key.to_string())
            .or_default()
            .push((rev, kv));
        self.undo.push(Undo::Key(key.to_string()));
    }

    /// Apply a top-level request: its response, or the error etcd answers (and then the
    /// store is unchanged).
    pub fn apply(&mut self, req: &Request) -> Result<Response, StoreError> {
        validate(req)?;
        if let Request::Compact(c) = req {
            if c.revision <= self.compact {
                return Err(StoreError::Compacted);
            }
            if c.revision > self.rev {
                return Err(StoreError::FutureRev);
            }
            self.undo.push(Undo::Compact(self.compact));
            self.compact = c.revision;
            return Ok(Response::Compact(CompactResponse {
                header_revision: self.rev,
            }));
        }
        if let Request::LeaseRevoke(l) = req {
            return self.revoke(l);
        }
        let mark = self.mark();
        let begin = self.rev;
        let mut changed = false;
        let mut events = Vec::new();
        match self.exec(req, begin, &mut changed, &mut events) {
            Ok(mut resp) => {
                if changed {
                    self.undo.push(Undo::Rev(self.rev));
                    self.rev = begin + 1;
                    self.changes.push(events);
                    self.undo.push(Undo::Changes);
                }
                if let Response::Txn(t) = &mut resp {
                    t.header_revision = self.rev;
                }
                Ok(resp)
            }
            Err(e) => {
                self.rollback(mark);
                Err(e)
            }
        }
    }

    /// A lease's end: its keys deleted at one revision, in key order.
    fn revoke(&mut self, l: &LeaseRevokeRequest) -> Result<Response, StoreError> {
        if self.ended.contains(&l.id) {
            return Err(StoreError::LeaseNotFound);
        }
        self.ended.insert(l.id);
        self.undo.push(Undo::Ended(l.id));
        let begin = self.rev;
        let mut keys: Vec<&String> = l.keys.iter().collect();
        keys.sort();
        keys.dedup();
        let gone: Vec<KeyValue> = keys
            .into_iter()
            .filter_map(|k| self.kv_at(k, begin))
            .filter(|kv| kv.lease == l.id)
            .cloned()
            .collect();
        if !gone.is_empty() {
            let rev = begin + 1;
            let mut events = Vec::with_capacity(gone.len());
            for kv in gone {
                self.push(&kv.key, rev, None);
                events.push(Event {
                    kind: EventType::Delete,
                    kv: KeyValue {
                        key: kv.key.clone(),
                        mod_revision: rev,
                        ..KeyValue::default()
                    },
                    prev_kv: Some(kv),
                });
            }
            self.undo.push(Undo::Rev(self.rev));
            self.rev = rev;
            self.changes.push(events);
            self.undo.push(Undo::Changes);
        }
        Ok(Response::LeaseRevoke(LeaseRevokeResponse {
            header_revision: self.rev,
        }))
    }

    fn compare(&self, c: &Compare, cur: i64) -> bool {
        let mut any = false;
        for kv in self.kvs_at(&c.key, &c.range_end, cur) {
            any = true;
            if !compare_kv(c, kv) {
                return false;
            }
        }
        if !any {
            return c.target != CompareTarget::Value && compare_kv(c, &KeyValue::default());
        }
        true
    }

    fn range(
        &self,
        r: &RangeRequest,
        cur: i64,
        check_compact: bool,
    ) -> Result<RangeResponse, StoreError> {
        if r.revision > cur {
            return Err(StoreError::FutureRev);
        }
        let rev = if r.revision <= 0 { cur } else { r.revision };
        if check_compact && rev < self.compact {
            return Err(StoreError::Compacted);
        }
        let mut resp = RangeResponse {
            header_revision: cur,
            ..RangeResponse::default()
        };
        for kv in self.kvs_at(&r.key, &r.range_end, rev) {
            resp.count += 1;
            if r.count_only {
                continue;
            }
            if r.limit > 0 && resp.kvs.len() as i64 >= r.limit {
                resp.more = true;
                continue;
            }
            let mut kv = kv.clone();
            if r.keys_only {
                kv.value.clear();
            }
            resp.kvs.push(kv);
        }
        Ok(resp)
    }

    /// Answer a read-only request (a Range, or a Txn whose ops are all ranges) as a
    /// member at revision `at` would; `check_compact`: answer the compacted error for a
    /// revision below the compact revision (a serializable read's member may not have
    /// compacted yet, so its check passes false). None: the request may write.
    pub fn read(
        &self,
        req: &Request,
        at: i64,
        check_compact: bool,
    ) -> Option<Result<Response, StoreError>> {
        if may_write(req) {
            return None;
        }
        if let Err(e) = validate(req) {
            return Some(Err(e));
        }
        Some(self.read_inner(req, at, check_compact))
    }

    fn read_inner(
        &self,
        req: &Request,
        at: i64,
        check_compact: bool,
    ) -> Result<Response, StoreError> {
        match req {
            Request::Range(r) => Ok(Response::Range(self.range(r, at, check_compact)?)),
            Request::Txn(t) => {
                let succeeded = t.compares.iter().all(|x| self.compare(x, at));
                let branch = if succeeded { &t.success } else { &t.failure };
                let responses = branch
                    .iter()
                    .map(|op| self.read_inner(op, at, check_compact))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Response::Txn(TxnResponse {
                    header_revision: at,
                    succeeded,
                    responses,
                }))
            }
            _ => Err(StoreError::CompactInTxn),
        }
    }

    fn exec(
        &mut self,
        req: &Request,
        begin: i64,
        changed: &mut bool,
        events: &mut Vec<Event>,
    ) -> Result<Response, StoreError> {
        let cur = |changed: bool| if changed { begin + 1 } else { begin };
        match req {
            // etcd checks a txn's ranges against the revision it began at.
            Request::Range(r) if r.revision > begin => Err(StoreError::FutureRev),
            Request::Range(r) => Ok(Response::Range(self.range(r, cur(*changed), true)?)),
            Request::Put(p) if p.lease != 0 && self.ended.contains(&p.lease) => {
                Err(StoreError::LeaseNotFound)
            }
            Request::Put(p) => {
                let rev = begin + 1;
                let prev = self.kv_at(&p.key, cur(*changed)).cloned();
                let kv = KeyValue {
                    key: p.key.clone(),
                    value: p.value.clone(),
                    create_revision: prev.as_ref().map_or(rev, |k| k.create_revision),
                    mod_revision: rev,
                    version: prev.as_ref().map_or(1, |k| k.version + 1),
                    lease: p.lease,
                };
                self.push(&p.key, rev, Some(kv.clone()));
                *changed = true;
                events.push(Event {
                    kind: EventType::Put,
                    kv,
                    prev_kv: prev.clone(),
                });
                Ok(Response::Put(PutResponse {
                    header_revision: rev,
                    prev_kv: if p.prev_kv { prev } else { None },
                }))
            }
            Request::DeleteRange(d) => {
                let rev = begin + 1;
                let gone: Vec<KeyValue> = self
                    .kvs_at(&d.key, &d.range_end, cur(*changed))
                    .cloned()
                    .collect();
                for kv in &gone {
                    self.push(&kv.key, rev, None);
                    events.push(Event {
                        kind: EventType::Delete,
                        kv: KeyValue {
                            key: kv.key.clone(),
                            mod_revision: rev,
                            ..KeyValue::default()
                        },
                        prev_kv: Some(kv.clone()),
                    });
                }
                if !gone.is_empty() {
                    *changed = true;
                }
                Ok(Response::DeleteRange(DeleteRangeResponse {
                    header_revision: cur(*changed),
                    deleted: gone.len() as i64,
                    prev_kvs: if d.prev_kv { gone } else { Vec::new() },
                }))
            }
            Request::Txn(t) => {
                let c = cur(*changed);
                let succeeded = t.compares.iter().all(|x| self.compare(x, c));
                let branch = if succeeded { &t.success } else { &t.failure };
                let mut responses = Vec::with_capacity(branch.len());
                for op in branch {
                    responses.push(self.exec(op, begin, changed, events)?);
                }
                Ok(Response::Txn(TxnResponse {
                    header_revision: cur(*changed),
                    succeeded,
                    responses,
                }))
            }
            Request::Compact(_) | Request::LeaseRevoke(_) => Err(StoreError::CompactInTxn),
        }
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match c.target {
        CompareTarget::Value => {
            let want = match &c.operand {
                Operand::Value(v) => v.as_str(),
                Operand::Int(_) => "",
            };
            kv.value.as_str().cmp(want)
        }
        t => {
            let want = match c.operand {
                Operand::Int(i) => i,
                Operand::Value(_) => 0,
            };
            let have = match t {
                CompareTarget::Version => kv.version,
                CompareTarget::Create => kv.create_revision,
                CompareTarget::Mod => kv.mod_revision,
                _ => kv.lease,
            };
            have.cmp(&want)
        }
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
        CompareResult::NotEqual => ord != Ordering::Equal,
    }
}

/// etcd's request checks that need no state (`v3rpc/key.go`).
pub fn validate(req: &Request) -> Result<(), StoreError> {
    match req {
        Request::Range(r) if r.key.is_empty() => Err(StoreError::EmptyKey),
        Request::Put(p) if p.key.is_empty() => Err(StoreError::EmptyKey),
        Request::DeleteRange(d) if d.key.is_empty() => Err(StoreError::EmptyKey),
        Request::Txn(t) => {
            validate_txn(t)?;
            check_intervals(&t.success)?;
            check_intervals(&t.failure)?;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn validate_txn(t: &TxnRequest) -> Result<(), StoreError> {
    if t.compares.len() > MAX_TXN_OPS
        || t.success.len() > MAX_TXN_OPS
        || t.failure.len() > MAX_TXN_OPS
    {
        return Err(StoreError::TooManyOps);
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            Request::Txn(n) => validate_txn(n)?,
            Request::Compact(_) | Request::LeaseRevoke(_) => return Err(StoreError::CompactInTxn),
            other => validate(other)?,
        }
    }
    Ok(())
}

type Intervals = Vec<(String, String)>;

/// `checkIntervals`: the puts and deleted ranges of a branch; duplicate-key errors.
fn check_intervals(reqs: &[Request]) -> Result<(BTreeSet<String>, Intervals), StoreError> {
    let mut dels: Intervals = reqs
        .iter()
        .filter_map(|r| match r {
            Request::DeleteRange(d) => Some((d.key.clone(), d.range_end.clone())),
            _ => None,
        })
        .collect();
    let deleted = |dels: &Intervals, k: &str| dels.iter().any(|(s, e)| in_range(s, e, k));
    let mut puts = BTreeSet::new();
    for r in reqs {
        if let Request::Txn(t) = r {
            let (then_p, then_d) = check_intervals(&t.success)?;
            let (else_p, else_d) = check_intervals(&t.failure)?;
            for k in then_p.iter().chain(&else_p) {
                if puts.contains(k) || deleted(&dels, k) {
                    return Err(StoreError::DuplicateKey);
                }
            }
            puts.extend(then_p);
            puts.extend(else_p);
            dels.extend(then_d);
            dels.extend(else_d);
        }
    }
    for r in reqs {
        if let Request::Put(p) = r {
            if !puts.insert(p.key.clone()) || deleted(&dels, &p.key) {
                return Err(StoreError::DuplicateKey);
            }
        }
    }
    Ok((puts, dels))
}

/// Whether a request can change the store (reads and read-only txns cannot).
pub fn may_write(req: &Request) -> bool {
    match req {
        Request::Range(_) => false,
        Request::Put(_)
        | Request::DeleteRange(_)
        | Request::Compact(_)
        | Request::LeaseRevoke(_) => true,
        Request::Txn(t) => t.success.iter().chain(&t.failure).any(may_write),
    }
}

/// Whether a request is a serializable read (a Range with `serializable`, or a read-only
/// Txn all of whose ranges are).
pub fn is_serializable(req: &Request) -> bool {
    fn all_ranges_serializable(reqs: &[Request]) -> bool {
        reqs.iter().all(|r| match r {
            Request::Range(r) => r.serializable,
            Request::Txn(t) => {
                all_ranges_serializable(&t.success) && all_ranges_serializable(&t.failure)
            }
            _ => false,
        })
    }
    match req {
        Request::Range(r) => r.serializable,
        Request::Txn(t) => {
            !may_write(req)
                && (!t.success.is_empty() || !t.failure.is_empty())
                && all_ranges_serializable(&t.success)
                && all_ranges_serializable(&t.failure)
        }
        _ => false,
    }
}
