//! The v3 keyspace against etcd 3.4.23's behaviour (each test cites the etcd fact it pins;
//! "§3" is shared/reference/etcd-v3.md §3), a model-based random test, restarts, dumps and
//! crashes.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use detcd_proto::etcdserverpb as pb;
use detcd_proto::mvccpb;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::range_request::{SortOrder, SortTarget};
use pb::request_op::Request;
use pb::response_op::Response;

use super::*;
use crate::storage::{Disk, DiskFile, FileDisk, RandomFile};

// ---------------------------------------------------------------------------------------
// A crash-test disk: random-access files only, a crash loses the unsynced writes (all, or a
// seeded subset when torn).

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

impl Op {
    fn apply(&self, img: &mut Vec<u8>) {
        match self {
            Op::Write(off, d) => {
                let (o, e) = (*off as usize, *off as usize + d.len());
                if img.len() < e {
                    img.resize(e, 0);
                }
                img[o..e].copy_from_slice(d);
            }
            Op::SetLen(l) => img.resize(*l as usize, 0),
        }
    }
}

#[derive(Debug, Default)]
struct MemFile {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Op>,
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<PathBuf, MemFile>,
    fsyncs: u64,
    /// Every write and sync fails (a dead disk).
    failing: bool,
}

#[derive(Debug, Default, Clone)]
struct MemDisk {
    st: Arc<Mutex<MemState>>,
}

impl MemDisk {
    /// Lose the unsynced writes; with `keep`, keep those it says yes to (in order).
    fn crash(&self, mut keep: impl FnMut() -> bool) {
        let mut st = self.st.lock().unwrap();
        for f in st.files.values_mut() {
            for op in std::mem::take(&mut f.pending) {
                if keep() {
                    op.apply(&mut f.durable);
                }
            }
            f.current = f.durable.clone();
        }
    }
    fn fsyncs(&self) -> u64 {
        self.st.lock().unwrap().fsyncs
    }
}

#[derive(Debug)]
struct MemRandom {
    disk: MemDisk,
    path: PathBuf,
}

impl MemRandom {
    fn change(&self, op: Op) -> io::Result<()> {
        let mut st = self.disk.st.lock().unwrap();
        if st.failing {
            return Err(io::Error::other("disk failed"));
        }
        let f = st
            .files
            .get_mut(&self.path)
            .ok_or(io::ErrorKind::NotFound)?;
        op.apply(&mut f.current);
        f.pending.push(op);
        Ok(())
    }
}

impl RandomFile for MemRandom {
    fn len(&self) -> io::Result<u64> {
        let st = self.disk.st.lock().unwrap();
        Ok(st
            .files
            .get(&self.path)
            .map_or(0, |f| f.current.len() as u64))
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = self.disk.st.lock().unwrap();
        let f = st.files.get(&self.path).ok_or(io::ErrorKind::NotFound)?;
        let end = offset as usize + buf.len();
        if end > f.current.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&f.current[offset as usize..end]);
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.change(Op::Write(offset, data.to_vec()))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.change(Op::SetLen(len))
    }
    fn sync(&self) -> io::Result<()> {
        let mut st = self.disk.st.lock().unwrap();
        if st.failing {
            return Err(io::Error::other("disk failed"));
        }
        st.fsyncs += 1;
        let f = st
            .files
            .get_mut(&self.path)
            .ok_or(io::ErrorKind::NotFound)?;
        for op in std::mem::take(&mut f.pending) {
            op.apply(&mut f.durable);
        }
        Ok(())
    }
}

impl Disk for MemDisk {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn list(&self, _dir: &Path) -> io::Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.st.lock().unwrap();
        Ok(st
            .files
            .get(path)
            .ok_or(io::ErrorKind::NotFound)?
            .current
            .clone())
    }
    fn open_append(&self, _path: &Path, _t: Option<u64>) -> io::Result<Box<dyn DiskFile>> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn open_random(&self, path: &Path) -> io::Result<Box<dyn RandomFile>> {
        self.st
            .lock()
            .unwrap()
            .files
            .entry(path.to_path_buf())
            .or_default();
        Ok(Box::new(MemRandom {
            disk: self.clone(),
            path: path.to_path_buf(),
        }))
    }
    fn write_atomic(&self, _path: &Path, _data: &[u8]) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.st.lock().unwrap().files.remove(path);
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        let f = st.files.remove(from).ok_or(io::ErrorKind::NotFound)?;
        st.files.insert(to.to_path_buf(), f);
        Ok(())
    }
    fn exists(&self, path: &Path) -> bool {
        self.st.lock().unwrap().files.contains_key(path)
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

const DB: &str = "/m/v3.db";

fn opts() -> MvccOptions {
    MvccOptions {
        max_txn_ops: 128,
        cache_bytes: 1 << 20,
        min_lease_ttl: 0,
    }
}

fn open_mem(disk: &MemDisk) -> Mvcc {
    Mvcc::open(Arc::new(disk.clone()), Path::new(DB), opts()).unwrap()
}

fn fresh() -> Mvcc {
    open_mem(&MemDisk::default())
}

/// A store plus the next Raft index.
struct S {
    m: Mvcc,
    index: u64,
}

fn any_lease(_: i64) -> bool {
    true
}

impl S {
    fn new() -> S {
        S {
            m: fresh(),
            index: 0,
        }
    }
    fn apply(&mut self, req: WriteReq) -> (Result<WriteResp, V3Error>, Vec<mvccpb::Event>) {
        self.index += 1;
        self.m.apply(self.index, &req, &any_lease).unwrap()
    }
    fn put(&mut self, k: &str, v: &str) -> pb::PutResponse {
        match self.apply(WriteReq::Put(put(k, v))).0 {
            Ok(WriteResp::Put(p)) => p,
            r => panic!("{r:?}"),
        }
    }
    fn put_req(&mut self, p: pb::PutRequest) -> Result<pb::PutResponse, V3Error> {
        self.apply(WriteReq::Put(p)).0.map(|r| match r {
            WriteResp::Put(p) => p,
            r => panic!("{r:?}"),
        })
    }
    fn del(&mut self, d: pb::DeleteRangeRequest) -> Result<pb::DeleteRangeResponse, V3Error> {
        self.apply(WriteReq::DeleteRange(d)).0.map(|r| match r {
            WriteResp::DeleteRange(p) => p,
            r => panic!("{r:?}"),
        })
    }
    fn txn(&mut self, t: pb::TxnRequest) -> Result<pb::TxnResponse, V3Error> {
        self.apply(WriteReq::Txn(t)).0.map(|r| match r {
            WriteResp::Txn(p) => p,
            r => panic!("{r:?}"),
        })
    }
    fn compact(&mut self, rev: i64) -> Result<pb::CompactionResponse, V3Error> {
        self.apply(WriteReq::Compaction(pb::CompactionRequest {
            revision: rev,
            physical: false,
        }))
        .0
        .map(|r| match r {
            WriteResp::Compaction(p) => p,
            r => panic!("{r:?}"),
        })
    }
    fn get(&self, r: pb::RangeRequest) -> Result<pb::RangeResponse, V3Error> {
        self.m.range(&r)
    }
    fn keys(&self, r: pb::RangeRequest) -> Vec<String> {
        self.get(r)
            .unwrap()
            .kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect()
    }
}

fn put(k: &str, v: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

fn del(k: &str, end: &str) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn rng(k: &str, end: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn op_put(k: &str, v: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestPut(put(k, v))),
    }
}
fn op_del(k: &str, end: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestDeleteRange(del(k, end))),
    }
}
fn op_range(k: &str, end: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestRange(rng(k, end))),
    }
}
fn op_txn(t: pb::TxnRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::RequestTxn(t)),
    }
}

fn cmp(k: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> pb::Compare {
    pb::Compare {
        key: k.into(),
        target: target as i32,
        result: result as i32,
        target_union: Some(u),
        range_end: Vec::new(),
    }
}

fn kv(k: &str, v: &str, create: i64, modr: i64, ver: i64) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: k.into(),
        value: v.into(),
        create_revision: create,
        mod_revision: modr,
        version: ver,
        lease: 0,
    }
}

fn rev_of(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().expect("header").revision
}

// ---------------------------------------------------------------------------------------
// Errors and request checks.

/// rpctypes/error.go: codes and exact texts.
#[test]
fn errors_have_etcds_codes_and_texts() {
    assert_eq!(
        V3Error::Compacted.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(V3Error::Compacted.code(), tonic::Code::OutOfRange);
    assert_eq!(
        V3Error::FutureRev.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(
        V3Error::EmptyKey.message(),
        "etcdserver: key is not provided"
    );
    assert_eq!(V3Error::EmptyKey.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        V3Error::DuplicateKey.message(),
        "etcdserver: duplicate key given in txn request"
    );
    assert_eq!(
        V3Error::TooManyOps.message(),
        "etcdserver: too many operations in txn request"
    );
    assert_eq!(V3Error::LeaseNotFound.code(), tonic::Code::NotFound);
    assert_eq!(
        V3Error::LeaseNotFound.message(),
        "etcdserver: requested lease not found"
    );
    assert_eq!(V3Error::NoSpace.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        V3Error::NoSpace.message(),
        "etcdserver: mvcc: database space exceeded"
    );
    assert_eq!(V3Error::KeyNotFound.message(), "etcdserver: key not found");
    assert_eq!(
        V3Error::ValueProvided.message(),
        "etcdserver: value is provided"
    );
    assert_eq!(
        V3Error::LeaseProvided.message(),
        "etcdserver: lease is provided"
    );
    assert_eq!(
        V3Error::RequestTooLarge.message(),
        "etcdserver: request is too large"
    );
}

/// v3rpc/key.go checkPutRequest / checkRangeRequest / checkDeleteRequest.
#[test]
fn single_request_checks() {
    assert_eq!(check_range(&rng("", "")), Err(V3Error::EmptyKey));
    assert_eq!(check_range(&rng("a", "")), Ok(()));
    assert_eq!(check_delete(&del("", "z")), Err(V3Error::EmptyKey));
    assert_eq!(check_put(&put("", "v")), Err(V3Error::EmptyKey));
    let mut p = put("k", "v");
    p.ignore_value = true;
    assert_eq!(check_put(&p), Err(V3Error::ValueProvided));
    p.value.clear();
    assert_eq!(check_put(&p), Ok(()));
    let mut p = put("k", "v");
    p.ignore_lease = true;
    p.lease = 5;
    assert_eq!(check_put(&p), Err(V3Error::LeaseProvided));
}

/// key.go checkTxnRequest (max of compares/success/failure vs --max-txn-ops; empty compare
/// key; nil op → "key not found") and checkIntervals (duplicate puts, put inside a delete,
/// nested txns, then/else may share a key; a from-key delete ("\0") overlaps nothing in 3.4).
#[test]
fn txn_checks() {
    let many: Vec<_> = (0..129).map(|i| op_put(&format!("k{i}"), "v")).collect();
    let t = pb::TxnRequest {
        success: many.clone(),
        ..Default::default()
    };
    assert_eq!(check_txn(&t, 128), Err(V3Error::TooManyOps));
    assert_eq!(check_txn(&t, 129), Ok(()));
    let t = pb::TxnRequest {
        compare: vec![cmp(
            "",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        )],
        ..Default::default()
    };
    assert_eq!(check_txn(&t, 128), Err(V3Error::EmptyKey));
    let t = pb::TxnRequest {
        success: vec![pb::RequestOp { request: None }],
        ..Default::default()
    };
    assert_eq!(check_txn(&t, 128), Err(V3Error::KeyNotFound));
    let dup = |ops: Vec<pb::RequestOp>| {
        check_txn(
            &pb::TxnRequest {
                success: ops,
                ..Default::default()
            },
            128,
        )
    };
    assert_eq!(
        dup(vec![op_put("a", "1"), op_put("a", "2")]),
        Err(V3Error::DuplicateKey)
    );
    assert_eq!(
        dup(vec![op_put("b", "1"), op_del("a", "c")]),
        Err(V3Error::DuplicateKey)
    );
    assert_eq!(
        dup(vec![op_del("b", ""), op_put("b", "1")]),
        Err(V3Error::DuplicateKey)
    );
    assert_eq!(dup(vec![op_put("c", "1"), op_del("a", "c")]), Ok(()));
    assert_eq!(dup(vec![op_range("a", "z"), op_put("a", "1")]), Ok(()));
    // The 3.4 quirk: [key, "\0") is an empty interval.
    assert_eq!(dup(vec![op_del("a", "\0"), op_put("b", "1")]), Ok(()));
    // Nested: a put in the child and one in the parent collide; then/else may share a key.
    let child = pb::TxnRequest {
        success: vec![op_put("x", "1")],
        failure: vec![op_put("x", "2")],
        ..Default::default()
    };
    assert_eq!(dup(vec![op_txn(child.clone())]), Ok(()));
    assert_eq!(
        dup(vec![op_txn(child.clone()), op_put("x", "3")]),
        Err(V3Error::DuplicateKey)
    );
    assert_eq!(
        dup(vec![op_txn(child.clone()), op_del("w", "y")]),
        Err(V3Error::DuplicateKey)
    );
    let del_child = pb::TxnRequest {
        success: vec![op_del("a", "m")],
        ..Default::default()
    };
    assert_eq!(
        dup(vec![op_txn(del_child), op_put("b", "1")]),
        Err(V3Error::DuplicateKey)
    );
    // The nested txn's own limit is the parent's less the parent's count.
    let inner = pb::TxnRequest {
        success: (0..3).map(|i| op_put(&format!("n{i}"), "v")).collect(),
        ..Default::default()
    };
    let outer = pb::TxnRequest {
        success: vec![op_txn(inner), op_put("o", "v")],
        ..Default::default()
    };
    assert_eq!(check_txn(&outer, 5), Ok(()));
    assert_eq!(check_txn(&outer, 4), Err(V3Error::TooManyOps));
}

// ---------------------------------------------------------------------------------------
// Revisions, Put, DeleteRange.

/// §3 Revisions: fresh store at 1, compactMainRev -1; the first write is revision 2; every
/// put makes a revision, even with the same value; version counts puts since creation.
#[test]
fn put_revisions_and_versions() {
    let mut s = S::new();
    assert_eq!(
        (
            s.m.revision(),
            s.m.compact_revision(),
            s.m.consistent_index()
        ),
        (1, -1, 0)
    );
    let r = s.get(rng("a", "")).unwrap();
    assert_eq!((rev_of(&r.header), r.count, r.kvs.len()), (1, 0, 0));
    assert_eq!(rev_of(&s.put("a", "1").header), 2);
    assert_eq!(rev_of(&s.put("a", "1").header), 3);
    assert_eq!(rev_of(&s.put("b", "x").header), 4);
    let r = s.get(rng("a", "")).unwrap();
    assert_eq!(r.kvs, vec![kv("a", "1", 2, 3, 2)]);
    assert_eq!(rev_of(&r.header), 4);
    assert_eq!(s.m.consistent_index(), 3);
}

/// apply.go Put: prev_kv returns the old pair; ignore_value / ignore_lease keep the old
/// value / lease and need the key ("key not found"); unknown lease → "requested lease not
/// found", no revision.
#[test]
fn put_options() {
    let mut s = S::new();
    let mut p = put("k", "");
    p.ignore_value = true;
    assert_eq!(s.put_req(p.clone()), Err(V3Error::KeyNotFound));
    assert_eq!(s.m.revision(), 1);
    let mut first = put("k", "v1");
    first.lease = 7;
    s.put_req(first).unwrap();
    let mut pv = put("k", "v2");
    pv.prev_kv = true;
    pv.ignore_lease = true;
    let r = s.put_req(pv).unwrap();
    let mut want = kv("k", "v1", 2, 2, 1);
    want.lease = 7;
    assert_eq!(r.prev_kv, Some(want));
    let got = &s.get(rng("k", "")).unwrap().kvs[0];
    assert_eq!(
        (got.value.as_slice(), got.lease, got.version),
        (&b"v2"[..], 7, 2)
    );
    // ignore_value without ignore_lease: the value stays, the lease is the request's (none).
    let r = s.put_req(p).unwrap();
    assert_eq!(r.prev_kv, None);
    let got = &s.get(rng("k", "")).unwrap().kvs[0];
    assert_eq!(
        (got.value.as_slice(), got.lease, got.version),
        (&b"v2"[..], 0, 3)
    );
    // Unknown lease.
    s.index += 1;
    let mut l = put("k", "v");
    l.lease = 99;
    let (r, ev) =
        s.m.apply(s.index, &WriteReq::Put(l), &|id| id == 7)
            .unwrap();
    assert_eq!(r, Err(V3Error::LeaseNotFound));
    assert!(ev.is_empty());
    assert_eq!(s.m.revision(), 4);
    assert_eq!(
        s.m.consistent_index(),
        s.index,
        "a failed request still uses its index"
    );
}

/// apply.go DeleteRange + kvstore_txn.go deleteRange: deleting nothing makes no revision;
/// prev_kv lists the deleted pairs; a delete ends the key's generation (a new put starts at
/// version 1 with a new create revision); delete events carry the key and the revision.
#[test]
fn delete_range() {
    let mut s = S::new();
    let r = s.del(del("a", "")).unwrap();
    assert_eq!((r.deleted, rev_of(&r.header)), (0, 1));
    s.put("a", "1");
    s.put("b", "2");
    s.put("c", "3");
    let mut d = del("a", "c");
    d.prev_kv = true;
    let (r, ev) = s.apply(WriteReq::DeleteRange(d));
    let WriteResp::DeleteRange(r) = r.unwrap() else {
        panic!()
    };
    assert_eq!(r.deleted, 2);
    assert_eq!(rev_of(&r.header), 5);
    assert_eq!(
        r.prev_kvs,
        vec![kv("a", "1", 2, 2, 1), kv("b", "2", 3, 3, 1)]
    );
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].r#type, mvccpb::event::EventType::Delete as i32);
    assert_eq!(
        ev[1].kv,
        Some(mvccpb::KeyValue {
            key: b"b".to_vec(),
            mod_revision: 5,
            ..Default::default()
        })
    );
    assert_eq!(s.keys(rng("a", "\0")), vec!["c"]);
    s.put("a", "again");
    assert_eq!(
        s.get(rng("a", "")).unwrap().kvs,
        vec![kv("a", "again", 6, 6, 1)]
    );
    // The old generation is still readable at its revision.
    let mut at = rng("a", "");
    at.revision = 4;
    assert_eq!(s.get(at).unwrap().kvs, vec![kv("a", "1", 2, 2, 1)]);
    // Deleting the same (now absent) key again: nothing, no revision.
    let r = s.del(del("b", "")).unwrap();
    assert_eq!((r.deleted, rev_of(&r.header), s.m.revision()), (0, 6, 6));
}

// ---------------------------------------------------------------------------------------
// Range.

fn abc(s: &mut S) {
    // rev 2..=6: a=1, b=22, c=3, a=11, d=4
    s.put("a", "1");
    s.put("b", "22");
    s.put("c", "3");
    s.put("a", "11");
    s.put("d", "4");
}

/// §3 Range: single key, [key, end), prefix, from-key "\0", all ("\0","\0"), end ≤ key.
#[test]
fn range_extents() {
    let mut s = S::new();
    abc(&mut s);
    s.put("ab", "x");
    assert_eq!(s.keys(rng("a", "")), vec!["a"]);
    assert_eq!(s.keys(rng("a", "c")), vec!["a", "ab", "b"]);
    assert_eq!(s.keys(rng("a", "b")), vec!["a", "ab"]); // prefix "a"
    assert_eq!(s.keys(rng("b", "\0")), vec!["b", "c", "d"]);
    assert_eq!(s.keys(rng("\0", "\0")), vec!["a", "ab", "b", "c", "d"]);
    assert!(s.keys(rng("c", "a")).is_empty());
    assert!(s.keys(rng("zz", "")).is_empty());
}

/// rangeKeys: revision > current → future; < compacted → compacted (at it is fine); ≤ 0 →
/// current; the header is the current revision even for an old read.
#[test]
fn range_at_revisions() {
    let mut s = S::new();
    abc(&mut s);
    let mut r = rng("a", "e");
    r.revision = 3;
    let got = s.get(r.clone()).unwrap();
    assert_eq!(got.kvs, vec![kv("a", "1", 2, 2, 1), kv("b", "22", 3, 3, 1)]);
    assert_eq!(rev_of(&got.header), 6);
    r.revision = 7;
    assert_eq!(s.get(r.clone()), Err(V3Error::FutureRev));
    r.revision = -3;
    assert_eq!(s.get(r.clone()).unwrap().count, 4);
    r.revision = 1;
    assert_eq!(s.get(r.clone()).unwrap().count, 0);
    s.compact(4).unwrap();
    r.revision = 3;
    assert_eq!(s.get(r.clone()), Err(V3Error::Compacted));
    r.revision = 4;
    let got = s.get(r.clone()).unwrap();
    assert_eq!(
        got.kvs,
        vec![
            kv("a", "1", 2, 2, 1),
            kv("b", "22", 3, 3, 1),
            kv("c", "3", 4, 4, 1)
        ]
    );
}

/// apply.go Range: count is before limit and filters; more is what limit cut after
/// filtering and sorting; count_only gives no kvs; keys_only drops values.
#[test]
fn range_limit_count_more_keys_only() {
    let mut s = S::new();
    abc(&mut s);
    let mut r = rng("a", "\0");
    r.limit = 2;
    let got = s.get(r.clone()).unwrap();
    assert_eq!((got.count, got.more, got.kvs.len()), (4, true, 2));
    r.limit = 4;
    let got = s.get(r.clone()).unwrap();
    assert_eq!((got.count, got.more, got.kvs.len()), (4, false, 4));
    r.limit = 0;
    r.count_only = true;
    let got = s.get(r.clone()).unwrap();
    assert_eq!((got.count, got.more, got.kvs.len()), (4, false, 0));
    r.count_only = false;
    r.keys_only = true;
    let got = s.get(r.clone()).unwrap();
    assert!(got.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(got.kvs[0].version, 2);
    // Filters: mod ≥ 4 leaves c (4), a (5), d (6); count stays 4.
    let mut f = rng("a", "\0");
    f.min_mod_revision = 4;
    f.limit = 2;
    let got = s.get(f.clone()).unwrap();
    assert_eq!(got.count, 4);
    assert!(got.more);
    assert_eq!(
        got.kvs.iter().map(|k| k.key.clone()).collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"c".to_vec()]
    );
    let mut f = rng("a", "\0");
    f.max_mod_revision = 4;
    f.min_create_revision = 3;
    f.max_create_revision = 4;
    let got = s.get(f).unwrap();
    assert_eq!(got.kvs.len(), 2); // b (3), c (4)
}

/// apply.go Range sort: ASCEND/DESCEND per target; order NONE with a target other than KEY
/// sorts ascending; limit applies after the sort.
#[test]
fn range_sort() {
    let mut s = S::new();
    abc(&mut s);
    let keys = |r: &pb::RangeRequest| s.keys(r.clone());
    let mut r = rng("a", "\0");
    r.sort_order = SortOrder::Descend as i32;
    assert_eq!(keys(&r), vec!["d", "c", "b", "a"]);
    r.sort_target = SortTarget::Mod as i32;
    assert_eq!(keys(&r), vec!["d", "a", "c", "b"]);
    r.sort_order = SortOrder::None as i32;
    assert_eq!(keys(&r), vec!["b", "c", "a", "d"]);
    r.sort_target = SortTarget::Value as i32;
    assert_eq!(keys(&r), vec!["a", "b", "c", "d"]); // "11" < "22" < "3" < "4"
    r.sort_target = SortTarget::Version as i32;
    r.sort_order = SortOrder::Descend as i32;
    r.limit = 1;
    let got = s.get(r.clone()).unwrap();
    assert_eq!(
        (got.kvs[0].key.as_slice(), got.more, got.count),
        (&b"a"[..], true, 4)
    );
    r.sort_target = SortTarget::Create as i32;
    assert_eq!(keys(&r), vec!["d"]);
}

// ---------------------------------------------------------------------------------------
// Txn.

/// apply.go applyCompare/compareKV: every target and result; a missing key compares as a
/// zero KeyValue except VALUE, which then fails; a range compare must hold for every key.
#[test]
fn txn_compares() {
    let mut s = S::new();
    abc(&mut s);
    let ok = |s: &mut S, c: pb::Compare| {
        s.txn(pb::TxnRequest {
            compare: vec![c],
            ..Default::default()
        })
        .unwrap()
        .succeeded
    };
    use CompareResult::*;
    use CompareTarget as T;
    assert!(ok(
        &mut s,
        cmp("a", T::Version, Equal, TargetUnion::Version(2))
    ));
    assert!(ok(
        &mut s,
        cmp("a", T::Create, Equal, TargetUnion::CreateRevision(2))
    ));
    assert!(ok(
        &mut s,
        cmp("a", T::Mod, Greater, TargetUnion::ModRevision(4))
    ));
    assert!(ok(
        &mut s,
        cmp("a", T::Mod, Less, TargetUnion::ModRevision(6))
    ));
    assert!(ok(
        &mut s,
        cmp("a", T::Value, Equal, TargetUnion::Value(b"11".to_vec()))
    ));
    assert!(ok(
        &mut s,
        cmp("a", T::Value, NotEqual, TargetUnion::Value(b"1".to_vec()))
    ));
    assert!(ok(&mut s, cmp("a", T::Lease, Equal, TargetUnion::Lease(0))));
    assert!(!ok(
        &mut s,
        cmp("a", T::Value, Less, TargetUnion::Value(b"1".to_vec()))
    ));
    // Missing key: zeros.
    assert!(ok(
        &mut s,
        cmp("zz", T::Version, Equal, TargetUnion::Version(0))
    ));
    assert!(ok(
        &mut s,
        cmp("zz", T::Create, Equal, TargetUnion::CreateRevision(0))
    ));
    assert!(ok(
        &mut s,
        cmp("zz", T::Mod, Less, TargetUnion::ModRevision(1))
    ));
    assert!(!ok(
        &mut s,
        cmp("zz", T::Value, Equal, TargetUnion::Value(Vec::new()))
    ));
    assert!(!ok(
        &mut s,
        cmp("zz", T::Value, NotEqual, TargetUnion::Value(b"x".to_vec()))
    ));
    // Range compares: all of a, b, c have version ≥ 1; only a has version 2.
    let mut c = cmp("a", T::Version, Greater, TargetUnion::Version(0));
    c.range_end = b"d".to_vec();
    assert!(ok(&mut s, c.clone()));
    c.result = Equal as i32;
    c.target_union = Some(TargetUnion::Version(2));
    assert!(!ok(&mut s, c));
    // Failed compares took the failure branch; read-only txns made no revision.
    assert_eq!(s.m.revision(), 6);
}

/// apply.go Txn: one main revision per txn, sub-revisions inside, later ops see earlier
/// ones; sub-responses carry a header with only the revision (a put's is the new revision,
/// a range's the revision as seen at that point); a nested txn's header is empty (3.4
/// newTxnResp); nested compares are evaluated before the txn runs (compareToPath).
#[test]
fn txn_ops_and_headers() {
    let mut s = S::new();
    s.put("a", "1"); // rev 2
    let nested = pb::TxnRequest {
        // Evaluated before the outer txn: a is still at version 1.
        compare: vec![cmp(
            "a",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(1),
        )],
        success: vec![op_put("n", "yes")],
        failure: vec![op_put("n", "no")],
    };
    let t = pb::TxnRequest {
        compare: vec![],
        success: vec![
            op_range("a", ""),
            op_put("a", "2"),
            op_range("a", ""),
            op_del("b", ""),
            op_txn(nested),
            op_put("b", "3"),
        ],
        failure: vec![],
    };
    // op_del("b") then op_put("b") collide: checkIntervals refuses, at apply too.
    assert_eq!(s.txn(t.clone()), Err(V3Error::DuplicateKey));
    let mut t = t;
    t.success.pop();
    let (r, ev) = s.apply(WriteReq::Txn(t));
    let WriteResp::Txn(r) = r.unwrap() else {
        panic!()
    };
    assert!(r.succeeded);
    assert_eq!(rev_of(&r.header), 3);
    let Some(Response::ResponseRange(r0)) = &r.responses[0].response else {
        panic!()
    };
    assert_eq!((rev_of(&r0.header), r0.kvs[0].version), (2, 1));
    let Some(Response::ResponsePut(p1)) = &r.responses[1].response else {
        panic!()
    };
    assert_eq!(
        p1.header,
        Some(pb::ResponseHeader {
            revision: 3,
            ..Default::default()
        })
    );
    let Some(Response::ResponseRange(r2)) = &r.responses[2].response else {
        panic!()
    };
    assert_eq!(
        (rev_of(&r2.header), &r2.kvs[0]),
        (3, &kv("a", "2", 2, 3, 2))
    );
    let Some(Response::ResponseDeleteRange(d3)) = &r.responses[3].response else {
        panic!()
    };
    assert_eq!((rev_of(&d3.header), d3.deleted), (3, 0));
    let Some(Response::ResponseTxn(n4)) = &r.responses[4].response else {
        panic!()
    };
    assert_eq!(n4.header, Some(pb::ResponseHeader::default()));
    assert!(n4.succeeded);
    assert_eq!(ev.len(), 2);
    assert_eq!(
        s.get(rng("n", "")).unwrap().kvs,
        vec![kv("n", "yes", 3, 3, 1)]
    );
    // Both writes share revision 3, sub-revisions 0 and 1.
    assert_eq!(ev[1].kv.as_ref().unwrap().mod_revision, 3);
    assert_eq!(s.m.revision(), 3);
}

/// apply.go Txn: a txn that changed nothing (only ranges, or a delete of nothing) makes no
/// revision; checkRange refuses future and compacted revisions for the whole txn; checkPut
/// refuses ignore_value on a missing key and an unknown lease, with nothing applied.
#[test]
fn txn_no_change_and_checks() {
    let mut s = S::new();
    abc(&mut s);
    let t = pb::TxnRequest {
        success: vec![op_del("zz", ""), op_range("a", "")],
        ..Default::default()
    };
    let r = s.txn(t).unwrap();
    assert_eq!((rev_of(&r.header), s.m.revision()), (6, 6));
    let mut future = rng("a", "");
    future.revision = 9;
    let t = pb::TxnRequest {
        success: vec![
            op_put("x", "1"),
            pb::RequestOp {
                request: Some(Request::RequestRange(future)),
            },
        ],
        ..Default::default()
    };
    assert_eq!(s.txn(t), Err(V3Error::FutureRev));
    let mut iv = put("missing", "");
    iv.ignore_value = true;
    let t = pb::TxnRequest {
        success: vec![
            op_put("x", "1"),
            pb::RequestOp {
                request: Some(Request::RequestPut(iv)),
            },
        ],
        ..Default::default()
    };
    assert_eq!(s.txn(t), Err(V3Error::KeyNotFound));
    let mut l = put("y", "1");
    l.lease = 5;
    s.index += 1;
    let t = pb::TxnRequest {
        success: vec![
            op_put("x", "1"),
            pb::RequestOp {
                request: Some(Request::RequestPut(l)),
            },
        ],
        ..Default::default()
    };
    let (r, _) = s.m.apply(s.index, &WriteReq::Txn(t), &|_| false).unwrap();
    assert_eq!(r, Err(V3Error::LeaseNotFound));
    assert_eq!(s.m.revision(), 6);
    assert!(s.keys(rng("x", "")).is_empty());
    // txn_read: the same ranges without Raft; a write in it is refused.
    let t = pb::TxnRequest {
        compare: vec![cmp(
            "a",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(2),
        )],
        success: vec![op_range("a", "c")],
        failure: vec![op_range("zz", "")],
    };
    let r = s.m.txn_read(&t).unwrap();
    assert!(r.succeeded);
    assert_eq!(rev_of(&r.header), 6);
    let Some(Response::ResponseRange(rr)) = &r.responses[0].response else {
        panic!()
    };
    assert_eq!(rr.count, 2);
    assert_eq!(
        s.m.txn_read(&pb::TxnRequest {
            success: vec![op_put("q", "1")],
            ..Default::default()
        }),
        Err(V3Error::NotReadOnly)
    );
}

/// kvstore.go Compact: ≤ compacted → compacted, > current → future; keeps per key the newest
/// revision ≤ rev unless it is a tombstone; the response has the current revision; no
/// revision is made.
#[test]
fn compaction() {
    let mut s = S::new();
    s.put("a", "1"); // 2
    s.put("a", "2"); // 3
    s.put("b", "1"); // 4
    s.del(del("b", "")).unwrap(); // 5
    s.put("c", "1"); // 6
    s.put("a", "3"); // 7
    assert_eq!(s.compact(8), Err(V3Error::FutureRev));
    let r = s.compact(6).unwrap();
    assert_eq!(rev_of(&r.header), 7);
    assert_eq!((s.m.revision(), s.m.compact_revision()), (7, 6));
    assert_eq!(s.compact(6), Err(V3Error::Compacted));
    assert_eq!(s.compact(5), Err(V3Error::Compacted));
    let mut at = rng("\0", "\0");
    at.revision = 6;
    assert_eq!(
        s.get(at).unwrap().kvs,
        vec![kv("a", "2", 2, 3, 2), kv("c", "1", 6, 6, 1)]
    );
    // What is physically left: a@3, a@7, c@6 (b's put and tombstone are gone).
    s.m.flush(false).unwrap();
    let rtx = s.m.db().begin_read().unwrap();
    let t = rtx.open_table(KV).unwrap();
    let left: Vec<(Vec<u8>, i64)> = t
        .iter()
        .unwrap()
        .map(|e| {
            let (k, _) = e.unwrap();
            let (key, main, _) = k.value();
            (key.to_vec(), main)
        })
        .collect();
    assert_eq!(
        left,
        vec![(b"a".to_vec(), 3), (b"a".to_vec(), 7), (b"c".to_vec(), 6)]
    );
    let revs = rtx.open_table(REVS).unwrap();
    assert_eq!(revs.len().unwrap(), 3);
}

// ---------------------------------------------------------------------------------------
// Restart, consistent index, dump/restore, crash.

/// etcd's consistent-index rule: an entry at or below the applied index is skipped after a
/// restart; reopening after flush(true) gives the same state (real files).
#[test]
fn restart_on_real_files() {
    let dir = std::env::temp_dir().join(format!("detcd-mvcc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("member/v3.db");
    let disk: Arc<dyn Disk> = Arc::new(FileDisk);
    let before;
    {
        let mut m = Mvcc::open(Arc::clone(&disk), &path, opts()).unwrap();
        for i in 1..=20u64 {
            let (r, _) = m
                .apply(
                    i,
                    &WriteReq::Put(put(&format!("k{}", i % 7), &i.to_string())),
                    &any_lease,
                )
                .unwrap();
            r.unwrap();
        }
        m.set_index(21);
        m.flush(true).unwrap();
        before = m.range(&rng("\0", "\0")).unwrap();
        assert_eq!(m.consistent_index(), 21);
    }
    let mut m = Mvcc::open(disk, &path, opts()).unwrap();
    assert_eq!((m.consistent_index(), m.revision()), (21, 21));
    assert_eq!(m.range(&rng("\0", "\0")).unwrap(), before);
    assert!(m
        .apply(21, &WriteReq::Put(put("x", "y")), &any_lease)
        .is_none());
    assert!(m
        .apply(5, &WriteReq::Put(put("x", "y")), &any_lease)
        .is_none());
    assert!(m
        .apply(22, &WriteReq::Put(put("x", "y")), &any_lease)
        .is_some());
    assert!(m.db_size() >= m.db_size_in_use() && m.db_size_in_use() > 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn all_at(m: &Mvcc) -> (u64, i64, i64, pb::RangeResponse) {
    (
        m.consistent_index(),
        m.revision(),
        m.compact_revision(),
        m.range(&rng("\0", "\0")).unwrap(),
    )
}

/// Dump and restore: the copy answers every range (old revisions too) as the original and
/// takes the given index; a corrupt dump is refused and changes nothing.
#[test]
fn dump_restore_round_trip() {
    let mut s = S::new();
    abc(&mut s);
    s.del(del("b", "")).unwrap();
    s.compact(3).unwrap();
    s.put("e", "5");
    s.m.flush(false).unwrap();
    let dump = s.m.dump().unwrap();
    assert_eq!(dump.index().unwrap(), s.index);
    fn is_send_static<T: Send + 'static>(_: &T) {}
    is_send_static(&dump);
    let bytes = dump.encode().unwrap();
    let mut t = S::new();
    t.put("junk", "1");
    t.m.restore(&bytes, 100).unwrap();
    assert_eq!(t.m.consistent_index(), 100);
    assert_eq!(
        (t.m.revision(), t.m.compact_revision()),
        (s.m.revision(), 3)
    );
    for rev in [0, 3, 4, 5, 6, 7, 8] {
        let mut r = rng("\0", "\0");
        r.revision = rev;
        assert_eq!(t.m.range(&r), s.m.range(&r), "rev {rev}");
    }
    // Restored state is durable: reopen a crashed copy.
    let disk = MemDisk::default();
    let mut u = open_mem(&disk);
    u.restore(&bytes, 50).unwrap();
    drop(u);
    disk.crash(|| false);
    let u = open_mem(&disk);
    assert_eq!(all_at(&u).3, s.m.range(&rng("\0", "\0")).unwrap());
    assert_eq!(u.consistent_index(), 50);
    // Corrupt dumps.
    let before = all_at(&t.m);
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    assert!(t.m.restore(&bad, 200).is_err());
    assert!(t.m.restore(&bytes[..bytes.len() - 1], 200).is_err());
    assert!(t.m.restore(b"", 200).is_err());
    assert_eq!(all_at(&t.m), before);
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A crash loses what was not flushed durably; any subset of the unsynced writes surviving
/// (a torn flush) still recovers to the last durable flush: redb's commit checksums.
#[test]
fn crash_recovers_last_durable_flush() {
    for seed in 1..=40u64 {
        let disk = MemDisk::default();
        let mut m = open_mem(&disk);
        let mut index = 0;
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut durable = all_at(&m);
        for _round in 0..6 {
            for _ in 0..(1 + rng.below(20)) {
                index += 1;
                let k = format!("k{}", rng.below(30));
                let req = if rng.below(5) == 0 {
                    WriteReq::DeleteRange(del(&k, ""))
                } else {
                    WriteReq::Put(put(&k, &"v".repeat(rng.below(300) as usize)))
                };
                m.apply(index, &req, &any_lease).unwrap().0.unwrap();
            }
            let d = rng.below(3) == 0;
            m.flush(d).unwrap();
            if d {
                durable = all_at(&m);
            }
        }
        // The un-flushed batch too.
        index += 1;
        m.apply(index, &WriteReq::Put(put("late", "x")), &any_lease)
            .unwrap()
            .0
            .unwrap();
        let fsyncs = disk.fsyncs();
        std::mem::forget(m); // a crash: no orderly close
        let torn = seed % 2 == 0;
        disk.crash(|| torn && rng.below(2) == 0);
        let m = open_mem(&disk);
        assert_eq!(
            all_at(&m),
            durable,
            "seed {seed} torn {torn} fsyncs {fsyncs}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Model-based random test.

/// The reference: every revision of every key in memory.
#[derive(Default, Clone)]
struct Model {
    rev: i64,
    compact: i64,
    /// key → [(main, value-or-tombstone)], ascending.
    hist: BTreeMap<Vec<u8>, Vec<(i64, Option<mvccpb::KeyValue>)>>,
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        e => k >= key && k < e,
    }
}

type RangeReq = pb::RangeRequest;

impl Model {
    /// A Range with every option, as apply.go Range post-processes rangeKeys' answer.
    fn range_req(
        &self,
        r: &pb::RangeRequest,
        cur: &BTreeMap<Vec<u8>, mvccpb::KeyValue>,
        cur_rev: i64,
    ) -> Result<pb::RangeResponse, V3Error> {
        let mut resp = self.range(&r.key, &r.range_end, r.revision, 0, cur, cur_rev)?;
        let mut kvs = std::mem::take(&mut resp.kvs);
        if r.count_only {
            kvs.clear();
        }
        kvs.retain(|kv| {
            (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
        });
        let mut order = r.sort_order;
        if r.sort_target != 0 && order == 0 {
            order = 1;
        }
        if order == 1 || order == 2 {
            // Stable on the key order they come in.
            match r.sort_target {
                1 => kvs.sort_by_key(|kv| kv.version),
                2 => kvs.sort_by_key(|kv| kv.create_revision),
                3 => kvs.sort_by_key(|kv| kv.mod_revision),
                4 => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
                _ => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
            }
            if order == 2 {
                kvs.reverse();
            }
        }
        if r.limit > 0 && kvs.len() as i64 > r.limit {
            kvs.truncate(r.limit as usize);
            resp.more = true;
        }
        if r.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        resp.kvs = kvs;
        Ok(resp)
    }

    fn new() -> Model {
        Model {
            rev: 1,
            compact: -1,
            hist: BTreeMap::new(),
        }
    }
    fn state_at(&self, rev: i64) -> BTreeMap<Vec<u8>, mvccpb::KeyValue> {
        let mut out = BTreeMap::new();
        for (k, h) in &self.hist {
            if let Some((_, Some(kv))) = h.iter().rev().find(|(m, _)| *m <= rev) {
                out.insert(k.clone(), kv.clone());
            }
        }
        out
    }
    /// A plain range (no sort/filter options) at `rev` with `limit`.
    fn range(
        &self,
        key: &[u8],
        end: &[u8],
        rev: i64,
        limit: i64,
        cur: &BTreeMap<Vec<u8>, mvccpb::KeyValue>,
        cur_rev: i64,
    ) -> Result<pb::RangeResponse, V3Error> {
        if rev > cur_rev {
            return Err(V3Error::FutureRev);
        }
        let at = if rev <= 0 { cur_rev } else { rev };
        if at < self.compact {
            return Err(V3Error::Compacted);
        }
        let st = if at == cur_rev {
            cur.clone()
        } else {
            self.state_at(at)
        };
        let mut kvs: Vec<_> = st
            .into_iter()
            .filter(|(k, _)| in_range(k, key, end))
            .map(|(_, v)| v)
            .collect();
        let count = kvs.len() as i64;
        let more = limit > 0 && kvs.len() as i64 > limit;
        if more {
            kvs.truncate(limit as usize);
        }
        Ok(pb::RangeResponse {
            header: header(cur_rev),
            kvs,
            more,
            count,
        })
    }
}

#[derive(Debug, Clone)]
enum MOp {
    Put(String, String, bool),
    Del(String, String, bool),
    Range(pb::RangeRequest),
    Txn(Vec<(String, i64)>, Vec<MOp>, Vec<MOp>),
    Compact(i64),
}

fn gen_key(r: &mut Rng) -> String {
    ["a", "b", "c", "d", "e", "ab", "ba"][r.below(7) as usize].to_string()
}

fn gen_end(r: &mut Rng, k: &str) -> String {
    match r.below(4) {
        0 | 1 => String::new(),
        2 => "\0".to_string(),
        _ => format!("{k}z"),
    }
}

fn gen_op(r: &mut Rng, rev: i64, depth: u32) -> MOp {
    match r.below(if depth > 0 { 4 } else { 6 }) {
        0 | 1 => MOp::Put(gen_key(r), format!("v{}", r.below(100)), r.below(2) == 0),
        2 => {
            let k = gen_key(r);
            let e = gen_end(r, &k);
            MOp::Del(k, e, r.below(2) == 0)
        }
        3 => {
            let k = gen_key(r);
            let e = gen_end(r, &k);
            let at = r.below(rev as u64 + 2) as i64 - 1;
            let small = |r: &mut Rng| {
                if r.below(3) == 0 {
                    r.below(rev as u64 + 2) as i64
                } else {
                    0
                }
            };
            MOp::Range(pb::RangeRequest {
                revision: if r.below(2) == 0 { 0 } else { at },
                limit: r.below(3) as i64,
                sort_order: if r.below(2) == 0 {
                    0
                } else {
                    r.below(3) as i32
                },
                sort_target: if r.below(2) == 0 {
                    0
                } else {
                    r.below(5) as i32
                },
                keys_only: r.below(4) == 0,
                count_only: r.below(6) == 0,
                min_mod_revision: small(r),
                max_mod_revision: small(r),
                min_create_revision: small(r),
                max_create_revision: small(r),
                ..rng(&k, &e)
            })
        }
        4 => {
            let n = |r: &mut Rng| (0..r.below(4)).map(|_| gen_op(r, rev, depth + 1)).collect();
            let cmps = (0..r.below(3))
                .map(|_| (gen_key(r), r.below(4) as i64))
                .collect();
            MOp::Txn(cmps, n(r), n(r))
        }
        _ => MOp::Compact(r.below(rev as u64 + 2) as i64),
    }
}

fn to_op(op: &MOp) -> pb::RequestOp {
    let request = match op {
        MOp::Put(k, v, pk) => Request::RequestPut(pb::PutRequest {
            prev_kv: *pk,
            ..put(k, v)
        }),
        MOp::Del(k, e, pk) => Request::RequestDeleteRange(pb::DeleteRangeRequest {
            prev_kv: *pk,
            ..del(k, e)
        }),
        MOp::Range(r) => Request::RequestRange(r.clone()),
        MOp::Txn(c, s, f) => Request::RequestTxn(to_txn(c, s, f)),
        MOp::Compact(_) => unreachable!(),
    };
    pb::RequestOp {
        request: Some(request),
    }
}

fn to_txn(c: &[(String, i64)], s: &[MOp], f: &[MOp]) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: c
            .iter()
            .map(|(k, v)| {
                cmp(
                    k,
                    CompareTarget::Version,
                    CompareResult::Equal,
                    TargetUnion::Version(*v),
                )
            })
            .collect(),
        success: s.iter().map(to_op).collect(),
        failure: f.iter().map(to_op).collect(),
    }
}

/// The model applying one write: pending state, changes, and the response.
struct MTxn<'a> {
    m: &'a Model,
    cur: BTreeMap<Vec<u8>, mvccpb::KeyValue>,
    changes: Vec<(Vec<u8>, Option<mvccpb::KeyValue>)>,
}

impl MTxn<'_> {
    fn cur_rev(&self) -> i64 {
        self.m.rev + i64::from(!self.changes.is_empty())
    }
    fn run(
        &mut self,
        op: &MOp,
        path: &mut std::vec::IntoIter<bool>,
    ) -> Result<Option<Response>, V3Error> {
        let new = self.m.rev + 1;
        Ok(Some(match op {
            MOp::Put(k, v, pk) => {
                let key = k.as_bytes().to_vec();
                let prev = self.cur.get(&key).cloned();
                let kv = mvccpb::KeyValue {
                    key: key.clone(),
                    value: v.as_bytes().to_vec(),
                    create_revision: prev.as_ref().map_or(new, |p| p.create_revision),
                    mod_revision: new,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                    lease: 0,
                };
                self.cur.insert(key.clone(), kv.clone());
                self.changes.push((key, Some(kv)));
                Response::ResponsePut(pb::PutResponse {
                    header: header(new),
                    prev_kv: if *pk { prev } else { None },
                })
            }
            MOp::Del(k, e, pk) => {
                let gone: Vec<_> = self
                    .cur
                    .iter()
                    .filter(|(kk, _)| in_range(kk, k.as_bytes(), e.as_bytes()))
                    .map(|(_, v)| v.clone())
                    .collect();
                for kv in &gone {
                    self.cur.remove(&kv.key);
                    self.changes.push((kv.key.clone(), None));
                }
                Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                    header: header(self.cur_rev()),
                    deleted: gone.len() as i64,
                    prev_kvs: if *pk { gone } else { Vec::new() },
                })
            }
            MOp::Range(r) => {
                Response::ResponseRange(self.m.range_req(r, &self.cur, self.cur_rev())?)
            }
            MOp::Txn(_, s, f) => {
                let ok = path.next().unwrap();
                let mut resp = pb::TxnResponse {
                    header: Some(pb::ResponseHeader::default()),
                    succeeded: ok,
                    responses: vec![],
                };
                for o in if ok { s } else { f } {
                    let r = self.run(o, path)?;
                    resp.responses.push(pb::ResponseOp { response: r });
                }
                Response::ResponseTxn(resp)
            }
            MOp::Compact(_) => unreachable!(),
        }))
    }
}

impl Model {
    fn path(&self, c: &[(String, i64)], s: &[MOp], f: &[MOp], out: &mut Vec<bool>) {
        let st = self.state_at(self.rev);
        let ok = c
            .iter()
            .all(|(k, v)| st.get(k.as_bytes()).map_or(0, |kv| kv.version) == *v);
        out.push(ok);
        for o in if ok { s } else { f } {
            if let MOp::Txn(c, s, f) = o {
                self.path(c, s, f, out);
            }
        }
    }
    /// Revisions a branch's ranges ask for, checked before the txn (checkRange).
    fn check_ranges(
        &self,
        ops: &[MOp],
        path: &mut std::vec::IntoIter<bool>,
        ok: bool,
    ) -> Result<(), V3Error> {
        let _ = ok;
        for o in ops {
            match o {
                MOp::Range(RangeReq { revision: rev, .. }) if *rev != 0 => {
                    if *rev > self.rev {
                        return Err(V3Error::FutureRev);
                    }
                    if *rev < self.compact {
                        return Err(V3Error::Compacted);
                    }
                }
                MOp::Txn(_, s, f) => {
                    let ok = path.next().unwrap();
                    self.check_ranges(if ok { s } else { f }, path, ok)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
    fn apply(&mut self, op: &MOp) -> Result<WriteResp, V3Error> {
        if let MOp::Compact(rev) = op {
            if *rev <= self.compact {
                return Err(V3Error::Compacted);
            }
            if *rev > self.rev {
                return Err(V3Error::FutureRev);
            }
            for h in self.hist.values_mut() {
                let keep_from = h.iter().rposition(|(m, _)| *m <= *rev);
                if let Some(i) = keep_from {
                    let drop_n = if h[i].1.is_none() { i + 1 } else { i };
                    h.drain(..drop_n);
                }
            }
            self.hist.retain(|_, h| !h.is_empty());
            self.compact = *rev;
            return Ok(WriteResp::Compaction(pb::CompactionResponse {
                header: header(self.rev),
            }));
        }
        let mut t = MTxn {
            m: self,
            cur: self.state_at(self.rev),
            changes: vec![],
        };
        let resp = match op {
            MOp::Txn(c, s, f) => {
                let tr = to_txn(c, s, f);
                let ro = txn_read_only(&tr);
                if !ro {
                    check::check_intervals(&tr.success)?;
                    check::check_intervals(&tr.failure)?;
                }
                let mut path = vec![];
                self.path(c, s, f, &mut path);
                let ok = path[0];
                let mut it = path.clone().into_iter();
                it.next();
                self.check_ranges(if ok { s } else { f }, &mut it, ok)?;
                let mut it = path.into_iter();
                let Some(Response::ResponseTxn(mut r)) = t.run(op, &mut it)? else {
                    unreachable!()
                };
                r.header = header(t.cur_rev());
                WriteResp::Txn(r)
            }
            MOp::Put(..) => match t.run(op, &mut vec![].into_iter())? {
                Some(Response::ResponsePut(p)) => WriteResp::Put(p),
                _ => unreachable!(),
            },
            MOp::Del(..) => match t.run(op, &mut vec![].into_iter())? {
                Some(Response::ResponseDeleteRange(p)) => WriteResp::DeleteRange(p),
                _ => unreachable!(),
            },
            _ => unreachable!(),
        };
        let changes = std::mem::take(&mut t.changes);
        if !changes.is_empty() {
            self.rev += 1;
            for (k, v) in changes {
                self.hist.entry(k).or_default().push((self.rev, v));
            }
        }
        Ok(resp)
    }
}

fn to_req(op: &MOp) -> Option<WriteReq> {
    Some(match op {
        MOp::Put(..) | MOp::Del(..) => match to_op(op).request? {
            Request::RequestPut(p) => WriteReq::Put(p),
            Request::RequestDeleteRange(d) => WriteReq::DeleteRange(d),
            _ => unreachable!(),
        },
        MOp::Txn(c, s, f) => WriteReq::Txn(to_txn(c, s, f)),
        MOp::Compact(r) => WriteReq::Compaction(pb::CompactionRequest {
            revision: *r,
            physical: false,
        }),
        MOp::Range(..) => return None,
    })
}

/// Random Put/Delete/Txn/Compact/Range-at-revision sequences: the store and the model give
/// the same responses, and the same answers to ranges at every revision since compaction,
/// also after flushes and a reopen. Seeds: 1..=N, or MVCC_SEED=<n> to replay one.
#[test]
fn model_based_random_sequences() {
    let seeds: Vec<u64> = match std::env::var("MVCC_SEED") {
        Ok(s) => vec![s.parse().expect("MVCC_SEED is a number")],
        Err(_) => (1..=60).collect(),
    };
    for seed in seeds {
        let result = std::panic::catch_unwind(|| run_model_case(seed));
        if let Err(e) = result {
            eprintln!("model_based_random_sequences failed: replay with MVCC_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

fn run_model_case(seed: u64) {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let disk = MemDisk::default();
    let mut m = open_mem(&disk);
    let mut model = Model::new();
    let mut index = 0u64;
    for step in 0..80 {
        let op = gen_op(&mut r, model.rev, 0);
        if let MOp::Range(rr) = &op {
            let want = model.range_req(rr, &model.state_at(model.rev), model.rev);
            assert_eq!(m.range(rr), want, "seed {seed} step {step} {op:?}");
            continue;
        }
        let req = to_req(&op).unwrap();
        index += 1;
        let want = model.apply(&op);
        let (got, events) = m.apply(index, &req, &any_lease).unwrap();
        assert_eq!(got, want, "seed {seed} step {step} {op:?}");
        assert_eq!(m.revision(), model.rev, "seed {seed} step {step}");
        if !events.is_empty() {
            assert!(events
                .iter()
                .all(|e| e.kv.as_ref().unwrap().mod_revision == model.rev));
        }
        match r.below(10) {
            0 => m.flush(true).unwrap(),
            1 | 2 => m.flush(false).unwrap(),
            3 => {
                m.flush(true).unwrap();
                drop(m);
                m = open_mem(&disk);
            }
            _ => {}
        }
    }
    // Every revision since compaction answers as the model.
    for rev in model.compact.max(1)..=model.rev {
        let got = m.range(&pb::RangeRequest {
            revision: rev,
            ..rng("\0", "\0")
        });
        let want = model.range(b"\0", b"\0", rev, 0, &model.state_at(model.rev), model.rev);
        assert_eq!(got, want, "seed {seed} final rev {rev}");
    }
}

/// Probed on etcd 3.4.23 (gateway, 2026-12): a fresh store compacts at revision 0 (its
/// compactMainRev is -1); after that a txn range at a negative revision is "compacted"
/// (checkRange: revision < FirstRev) while a plain range at one reads now; a from-key delete
/// and a put of a key it covers pass checkIntervals and both apply, in order.
#[test]
fn probed_quirks() {
    let mut s = S::new();
    s.put("a", "1"); // 2
    assert_eq!(rev_of(&s.compact(0).unwrap().header), 2);
    assert_eq!(s.m.compact_revision(), 0);
    assert_eq!(s.compact(0), Err(V3Error::Compacted));
    let mut neg = rng("a", "");
    neg.revision = -5;
    assert_eq!(s.get(neg.clone()).unwrap().count, 1);
    let t = pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(Request::RequestRange(neg)),
        }],
        ..Default::default()
    };
    assert_eq!(s.m.txn_read(&t), Err(V3Error::Compacted));
    s.put("n", "y"); // 3
    let t = pb::TxnRequest {
        success: vec![op_del("a", "\0"), op_put("b", "2")],
        ..Default::default()
    };
    assert_eq!(check_txn(&t, 128), Ok(()));
    let r = s.txn(t).unwrap();
    assert_eq!(rev_of(&r.header), 4);
    let Some(Response::ResponseDeleteRange(d)) = &r.responses[0].response else {
        panic!()
    };
    assert_eq!(d.deleted, 2);
    assert_eq!(s.keys(rng("\0", "\0")), vec!["b"]);
}

/// Numbers for the report (`cargo test -p detcd-node --lib mvcc::tests::measure -- --ignored
/// --nocapture`): 10,000 puts of 100-byte values over 1,000 keys, 100 per batch, every tenth
/// flush durable, on the in-memory crash disk (so: CPU cost, fsync count, sizes).
#[test]
#[ignore = "a measurement printed for the report, not a check"]
fn measure() {
    // Wall-clock timing is this measurement's point; it runs outside any simulation.
    let disk = MemDisk::default();
    let mut m = open_mem(&disk);
    let t = std::time::Instant::now();
    let n = 10_000u64;
    for i in 1..=n {
        let k = format!("key/{:04}", i % 1000);
        m.apply(i, &WriteReq::Put(put(&k, &"x".repeat(100))), &any_lease)
            .unwrap()
            .0
            .unwrap();
        if i % 100 == 0 {
            m.flush(i % 1000 == 0).unwrap();
        }
    }
    let apply = t.elapsed();
    let fsyncs = disk.fsyncs();
    let t = std::time::Instant::now();
    let all = m.range(&rng("\0", "\0")).unwrap();
    let range = t.elapsed();
    let mut old = rng("\0", "\0");
    old.revision = 5_000;
    let t = std::time::Instant::now();
    let old = m.range(&old).unwrap();
    let range_old = t.elapsed();
    let (size, in_use) = (m.db_size(), m.db_size_in_use());
    let t = std::time::Instant::now();
    m.apply(
        n + 1,
        &WriteReq::Compaction(pb::CompactionRequest {
            revision: 9_000,
            physical: false,
        }),
        &any_lease,
    )
    .unwrap()
    .0
    .unwrap();
    m.flush(true).unwrap();
    let compact = t.elapsed();
    let t = std::time::Instant::now();
    let bytes = m.dump().unwrap().encode().unwrap();
    let dump = t.elapsed();
    let mut other = fresh();
    let t = std::time::Instant::now();
    other.restore(&bytes, 1).unwrap();
    let restore = t.elapsed();
    println!(
        "{n} puts: {:?} ({:.1} µs/put), fsyncs {fsyncs}; range of {} keys {:?}, at an old \
         revision ({} keys) {:?}; db {size} B, in use {in_use} B; compaction to 9000 {:?}, \
         then in use {} B; dump {} B in {:?}; restore {:?}",
        apply,
        apply.as_secs_f64() * 1e6 / n as f64,
        all.count,
        range,
        old.count,
        range_old,
        compact,
        m.db_size_in_use(),
        bytes.len(),
        dump,
        restore
    );
}

/// The index of entries with no v3 effect is kept like any other (durable after
/// flush(true)); a durable flush with nothing new costs no fsync; a non-durable commit is
/// made durable by the next durable flush even if nothing was applied since.
#[test]
fn set_index_and_flush_costs() {
    fn is_send<T: Send>() {}
    is_send::<Mvcc>();
    let disk = MemDisk::default();
    let mut m = open_mem(&disk);
    m.set_index(7);
    m.flush(true).unwrap();
    let f0 = disk.fsyncs();
    m.flush(true).unwrap();
    m.flush(false).unwrap();
    assert_eq!(disk.fsyncs(), f0, "nothing to make durable");
    m.apply(8, &WriteReq::Put(put("a", "1")), &any_lease)
        .unwrap()
        .0
        .unwrap();
    m.flush(false).unwrap();
    assert_eq!(disk.fsyncs(), f0, "a visible-only flush does not fsync");
    m.flush(true).unwrap();
    println!("fsyncs of one durable flush: {}", disk.fsyncs() - f0);
    assert!(disk.fsyncs() > f0);
    m.set_index(9);
    m.flush(true).unwrap();
    drop(m);
    disk.crash(|| false);
    let m = open_mem(&disk);
    assert_eq!((m.consistent_index(), m.revision()), (9, 2));
}

/// Determinism: the same writes give a byte-identical database file (two runs in one
/// process, so std's per-map hash seeds differ between them).
#[test]
fn same_writes_same_bytes() {
    let run = || {
        let disk = MemDisk::default();
        let mut m = open_mem(&disk);
        for i in 1..=300u64 {
            let req = if i == 200 {
                WriteReq::Compaction(pb::CompactionRequest {
                    revision: 150,
                    physical: false,
                })
            } else if i % 7 == 0 {
                WriteReq::DeleteRange(del(&format!("k{}", i % 11), ""))
            } else {
                WriteReq::Put(put(&format!("k{}", i % 11), &"v".repeat((i % 97) as usize)))
            };
            m.apply(i, &req, &any_lease).unwrap().0.unwrap();
            if i % 10 == 0 {
                m.flush(i % 50 == 0).unwrap();
            }
        }
        m.flush(true).unwrap();
        drop(m);
        disk.read(Path::new(DB)).unwrap()
    };
    let a = run();
    assert!(a == run(), "file bytes differ between identical runs");
}

#[test]
fn the_empty_dump_restores_a_fresh_keyspace_at_the_given_index() {
    let mut s = S::new();
    s.put("a", "1");
    s.m.flush(true).unwrap();
    assert_eq!(s.m.revision(), 2);
    s.m.restore(&Mvcc::empty_dump(), 40).unwrap();
    assert_eq!(
        (
            s.m.consistent_index(),
            s.m.revision(),
            s.m.compact_revision()
        ),
        (40, 1, -1)
    );
    let r = s.m.range(&rng("a", "")).unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 0));
    // An entry at or below the restored index is skipped; the next write is revision 2,
    // as on a fresh store.
    assert!(s
        .m
        .apply(40, &WriteReq::Put(put("b", "1")), &any_lease)
        .is_none());
    match s.m.apply(41, &WriteReq::Put(put("b", "1")), &any_lease) {
        Some((Ok(WriteResp::Put(p)), _)) => assert_eq!(p.header.unwrap().revision, 2),
        other => panic!("{other:?}"),
    }
}

/// Numbers for the report: durable flushes on real files (this machine's disk), 10 puts of
/// 100 bytes per batch, 200 batches.
#[test]
#[ignore = "a measurement on this machine's real disk, not a check"]
fn measure_file_flush() {
    let dir = std::env::temp_dir().join(format!("detcd-mvcc-measure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut m = Mvcc::open(Arc::new(FileDisk), &dir.join("v3.db"), opts()).unwrap();
    let mut index = 0;
    let t = std::time::Instant::now();
    for _ in 0..200 {
        for _ in 0..10 {
            index += 1;
            let k = format!("key/{:04}", index % 1000);
            m.apply(index, &WriteReq::Put(put(&k, &"x".repeat(100))), &any_lease)
                .unwrap()
                .0
                .unwrap();
        }
        m.flush(true).unwrap();
    }
    let e = t.elapsed();
    println!(
        "200 durable batches of 10 puts on real files: {:?} ({:.0} µs/batch); db {} B",
        e,
        e.as_secs_f64() * 1e6 / 200.0,
        m.db_size()
    );
    drop(m);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A dead disk: the failure comes back as an error (apply's Storage, or flush's), never a
/// panic, and the store refuses further flushes; a file that is not a database is refused
/// at open.
#[test]
fn io_failures_are_errors() {
    let disk = MemDisk::default();
    let mut m = open_mem(&disk);
    m.apply(1, &WriteReq::Put(put("a", "1")), &any_lease)
        .unwrap()
        .0
        .unwrap();
    m.flush(true).unwrap();
    disk.st.lock().unwrap().failing = true;
    let mut failed = false;
    for i in 2..200u64 {
        let (r, _) = m
            .apply(
                i,
                &WriteReq::Put(put(&format!("k{i}"), &"v".repeat(2000))),
                &any_lease,
            )
            .unwrap();
        if matches!(r, Err(V3Error::Storage(_))) {
            failed = true;
            break;
        }
        if m.flush(i % 2 == 0).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "a dead disk went unnoticed");
    assert!(m.flush(true).is_err());
    std::mem::forget(m);
    disk.st.lock().unwrap().failing = false;
    disk.crash(|| false);
    let m = open_mem(&disk);
    assert_eq!(m.range(&rng("a", "")).unwrap().count, 1);
    // Not a database.
    let junk = MemDisk::default();
    let f = junk.open_random(Path::new(DB)).unwrap();
    f.write_at(0, &[0x5a; 8192]).unwrap();
    f.sync().unwrap();
    assert!(Mvcc::open(Arc::new(junk), Path::new(DB), opts()).is_err());
}

/// History for watchers: the events `apply` returned are the ones `events` reads back, by
/// revision, within a limit that never splits a revision; compacted history is refused.
#[test]
fn events_read_back_history() {
    let mut s = S::new();
    let mut all = Vec::new();
    all.extend(s.apply(WriteReq::Put(put("a", "1"))).1); // 2
    all.extend(s.apply(WriteReq::Put(put("b", "1"))).1); // 3
    all.extend(
        s.apply(WriteReq::Txn(pb::TxnRequest {
            success: vec![op_put("c", "1"), op_del("a", "")],
            ..Default::default()
        }))
        .1,
    ); // 4: two events
    all.extend(s.apply(WriteReq::Put(put("a", "2"))).1); // 5
    assert_eq!(all.len(), 5);
    assert_eq!(s.m.events(0, 100, 0).unwrap(), all);
    s.m.flush(false).unwrap();
    assert_eq!(s.m.events(2, 5, 0).unwrap(), all);
    assert_eq!(s.m.events(4, 4, 0).unwrap(), all[2..4].to_vec());
    // A limit of 3 reaches into revision 4, which comes whole (4 events); 2 stops at 3.
    assert_eq!(s.m.events(2, 5, 3).unwrap(), all[..4].to_vec());
    assert_eq!(s.m.events(2, 5, 2).unwrap(), all[..2].to_vec());
    s.compact(4).unwrap();
    assert_eq!(s.m.events(3, 5, 0), Err(V3Error::Compacted));
    // At the compacted revision: everything made there, a's Delete at 4 included (etcd
    // 3.4.23 loses it, etcd-io/etcd#18089), so a watch starting there misses nothing.
    assert_eq!(s.m.events(4, 5, 0).unwrap(), all[2..].to_vec());
}

/// A tombstone at the compaction revision is kept for watchers starting there, and dropped
/// by the next compaction, even when its key is not written again.
#[test]
fn a_tombstone_at_the_compaction_revision_lasts_until_the_next_compaction() {
    let mut s = S::new();
    s.put("a", "1"); // 2
    s.del(del("a", "")).unwrap(); // 3
    s.put("b", "1"); // 4
    s.put("b", "2"); // 5
    s.compact(3).unwrap();
    let evs = s.m.events(3, 5, 0).unwrap();
    assert_eq!(evs.len(), 3, "{evs:?}");
    assert_eq!(evs[0].r#type, mvccpb::event::EventType::Delete as i32);
    // Never visible to a range: a deleted key.
    let mut at = rng("a", "");
    at.revision = 3;
    assert!(s.get(at).unwrap().kvs.is_empty());
    s.compact(4).unwrap();
    s.m.flush(false).unwrap();
    let rtx = s.m.db().begin_read().unwrap();
    let left: Vec<(Vec<u8>, i64)> = (rtx.open_table(KV).unwrap().iter().unwrap())
        .map(|e| {
            let (k, _) = e.unwrap();
            let (key, main, _) = k.value();
            (key.to_vec(), main)
        })
        .collect();
    assert_eq!(left, vec![(b"b".to_vec(), 4), (b"b".to_vec(), 5)]);
}

// ---------------------------------------------------------------------------------------------
// Leases (etcd 3.4 `lease/lessor.go`, `etcdserver/apply.go`): the replicated lease set.

fn lease_put(k: &str, v: &str, lease: i64) -> WriteReq {
    WriteReq::Put(pb::PutRequest { lease, ..put(k, v) })
}

impl S {
    fn grant(&mut self, id: i64, ttl: i64) -> Result<LeaseGrant, V3Error> {
        self.index += 1;
        self.m.lease_grant(self.index, id, ttl, 2).unwrap()
    }
    fn revoke(&mut self, id: i64) -> (Result<i64, V3Error>, Vec<mvccpb::Event>) {
        self.index += 1;
        self.m.lease_revoke(self.index, id).unwrap()
    }
    fn lput(&mut self, k: &str, v: &str, lease: i64) -> Result<WriteResp, V3Error> {
        self.index += 1;
        self.m
            .apply_with_leases(self.index, &lease_put(k, v, lease))
            .unwrap()
            .0
    }
}

#[test]
fn lease_grant_checks_ttl_and_ids_and_raises_the_minimum() {
    let mut s = S::new();
    assert_eq!(s.grant(5, 1), Ok(LeaseGrant { id: 5, ttl: 2 }));
    assert_eq!(s.grant(5, 100), Err(V3Error::LeaseExists));
    assert_eq!(
        s.grant(6, LEASE_MAX_TTL + 1),
        Err(V3Error::LeaseTtlTooLarge)
    );
    assert_eq!(
        s.grant(6, LEASE_MAX_TTL),
        Ok(LeaseGrant {
            id: 6,
            ttl: LEASE_MAX_TTL
        })
    );
    assert_eq!(s.grant(-3, -10), Ok(LeaseGrant { id: -3, ttl: 2 }));
    assert_eq!(s.m.leases(), vec![(-3, 2), (5, 2), (6, LEASE_MAX_TTL)]);
    assert_eq!(s.m.consistent_index(), s.index);
    // A grant applied before (a replayed entry) does nothing.
    assert_eq!(s.m.lease_grant(1, 9, 10, 2), None);
    assert!(!s.m.lease_exists(9));
    let e = V3Error::LeaseExists;
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: lease already exists"
        )
    );
    let e = V3Error::LeaseTtlTooLarge;
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::OutOfRange, "etcdserver: too large lease TTL")
    );
}

#[test]
fn lease_puts_attach_and_move_keys_and_unknown_leases_fail() {
    let mut s = S::new();
    s.grant(1, 10).unwrap();
    s.grant(2, 10).unwrap();
    assert_eq!(s.lput("x", "1", 9), Err(V3Error::LeaseNotFound));
    assert_eq!(s.m.revision(), 1);
    s.lput("a", "1", 1).unwrap();
    s.lput("b", "1", 1).unwrap();
    s.lput("c", "1", 2).unwrap();
    assert_eq!(s.m.lease_keys(1), vec![b"a".to_vec(), b"b".to_vec()]);
    // A put with another lease moves the key; without one, detaches it; a delete too.
    s.lput("b", "2", 2).unwrap();
    s.lput("c", "2", 0).unwrap();
    assert_eq!(s.m.lease_keys(1), vec![b"a".to_vec()]);
    assert_eq!(s.m.lease_keys(2), vec![b"b".to_vec()]);
    s.index += 1;
    s.m.apply_with_leases(s.index, &WriteReq::DeleteRange(del("a", "")))
        .unwrap()
        .0
        .unwrap();
    assert!(s.m.lease_keys(1).is_empty());
    // ignore_lease keeps the key's lease.
    s.index += 1;
    let p = pb::PutRequest {
        ignore_lease: true,
        ..put("b", "3")
    };
    s.m.apply_with_leases(s.index, &WriteReq::Put(p))
        .unwrap()
        .0
        .unwrap();
    assert_eq!(s.m.lease_keys(2), vec![b"b".to_vec()]);
    let kv = s.get(rng("b", "")).unwrap().kvs.remove(0);
    assert_eq!((kv.lease, kv.value.as_slice()), (2, &b"3"[..]));
    // Inside a txn: a put with an unknown lease fails the whole txn.
    s.index += 1;
    let t = pb::TxnRequest {
        success: vec![op_put("q", "1"), {
            let mut o = op_put("r", "1");
            if let Some(pb::request_op::Request::RequestPut(p)) = &mut o.request {
                p.lease = 77;
            }
            o
        }],
        ..Default::default()
    };
    assert_eq!(
        s.m.apply_with_leases(s.index, &WriteReq::Txn(t)).unwrap().0,
        Err(V3Error::LeaseNotFound)
    );
}

#[test]
fn lease_revoke_deletes_attached_keys_in_one_revision() {
    let mut s = S::new();
    s.grant(1, 10).unwrap();
    s.lput("b", "1", 1).unwrap();
    s.lput("a", "1", 1).unwrap();
    s.put("c", "1");
    assert_eq!(s.m.revision(), 4);
    let (rev, events) = s.revoke(1);
    assert_eq!(rev, Ok(5));
    let keys: Vec<&[u8]> = events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().key.as_slice())
        .collect();
    assert_eq!(keys, vec![&b"a"[..], &b"b"[..]]);
    assert!(events
        .iter()
        .all(|e| e.kv.as_ref().unwrap().mod_revision == 5));
    assert_eq!(s.keys(rng("a", "\0")), vec!["c"]);
    assert!(!s.m.lease_exists(1));
    assert_eq!(s.revoke(1).0, Err(V3Error::LeaseNotFound));
    // A lease with no keys: revoked without a new revision.
    s.grant(2, 10).unwrap();
    assert_eq!(s.revoke(2), (Ok(5), vec![]));
    // Its keys' old revisions are still readable.
    assert_eq!(
        s.get(pb::RangeRequest {
            revision: 4,
            ..rng("a", "")
        })
        .unwrap()
        .kvs
        .len(),
        1
    );
}

/// etcd's `initAndRecover` raises a recovered lease's TTL to the member's minimum, in memory:
/// a member restarted with a longer election timeout keeps short leases alive longer, and
/// the table (what a snapshot carries) keeps the granted TTL.
#[test]
fn a_reopen_raises_lease_ttls_to_the_minimum_in_memory_only() {
    let disk = MemDisk::default();
    let mut s = S {
        m: open_mem(&disk),
        index: 0,
    };
    s.grant(1, 3).unwrap();
    s.grant(2, 30).unwrap();
    s.m.flush(true).unwrap();
    drop(s);
    let longer = MvccOptions {
        min_lease_ttl: 8,
        ..opts()
    };
    let m = Mvcc::open(Arc::new(disk.clone()), Path::new(DB), longer.clone()).unwrap();
    assert_eq!(m.leases(), vec![(1, 8), (2, 30)]);
    assert_eq!(m.lease_ttl(1), Some(8));
    // A snapshot restored on that member raises them too; the dump carries the granted TTL.
    let bytes = m.dump().unwrap().encode().unwrap();
    drop(m);
    let mut t = Mvcc::open(Arc::new(MemDisk::default()), Path::new(DB), longer).unwrap();
    t.restore(&bytes, 10).unwrap();
    assert_eq!(t.leases(), vec![(1, 8), (2, 30)]);
    let mut u = fresh();
    u.restore(&bytes, 10).unwrap();
    assert_eq!(u.leases(), vec![(1, 3), (2, 30)]);
    assert_eq!(open_mem(&disk).leases(), vec![(1, 3), (2, 30)]);
}

#[test]
fn leases_survive_reopen_and_travel_in_dumps() {
    let disk = MemDisk::default();
    let mut s = S {
        m: open_mem(&disk),
        index: 0,
    };
    s.grant(1, 10).unwrap();
    s.grant(2, 30).unwrap();
    s.lput("a", "1", 1).unwrap();
    s.lput("b", "1", 2).unwrap();
    s.m.flush(true).unwrap();
    drop(s);
    disk.crash(|| false);
    let m = open_mem(&disk);
    assert_eq!(m.leases(), vec![(1, 10), (2, 30)]);
    assert_eq!(m.lease_keys(1), vec![b"a".to_vec()]);
    assert_eq!(m.lease_keys(2), vec![b"b".to_vec()]);
    assert_eq!(m.consistent_index(), 4);
    // Dump and restore elsewhere.
    let bytes = m.dump().unwrap().encode().unwrap();
    let mut t = fresh();
    t.restore(&bytes, 10).unwrap();
    assert_eq!(t.leases(), vec![(1, 10), (2, 30)]);
    assert_eq!(t.lease_keys(1), vec![b"a".to_vec()]);
    // Restoring an empty dump drops them.
    t.restore(&Mvcc::empty_dump(), 11).unwrap();
    assert!(t.leases().is_empty());
    // An aborted batch's lease changes are forgotten too.
    drop(m);
    let mut u = S {
        m: open_mem(&disk),
        index: 4,
    };
    u.grant(9, 10).unwrap();
    u.m.restore(&bytes, 20).unwrap();
    assert!(!u.m.lease_exists(9));
}

// ---------------------------------------------------------------------------------------------
// v3 auth (etcd 3.4's auth/store.go and apply_auth.go).

impl S {
    fn auth(&mut self, caller: Caller<'_>, op: AuthOp) -> Result<AuthResp, V3Error> {
        self.index += 1;
        self.m.auth_apply(self.index, caller, &op).unwrap()
    }
    fn root(&mut self, op: AuthOp) -> Result<AuthResp, V3Error> {
        let root = AuthInfo {
            user: ROOT.into(),
            revision: self.m.auth_revision(),
        };
        self.auth(Caller::Client(Some(&root)), op)
    }
    fn put_as(&mut self, ai: Option<&AuthInfo>, k: &str) -> Result<WriteResp, V3Error> {
        self.index += 1;
        self.m
            .apply_as(self.index, &WriteReq::Put(put(k, "v")), Caller::Client(ai))
            .unwrap()
            .0
    }
}

fn user_add(name: &str) -> AuthOp {
    AuthOp::UserAdd {
        name: name.into(),
        hash: b"$2a$10$hash".to_vec(),
        no_password: false,
    }
}

/// Users, roles, a permission and auth on; `u` may write `a`..`c`.
fn auth_fixture(s: &mut S) {
    let none = Caller::Client(None);
    s.auth(none, user_add(ROOT)).unwrap();
    s.auth(none, user_add("u")).unwrap();
    s.auth(none, AuthOp::RoleAdd { name: "r".into() }).unwrap();
    let grant = AuthOp::RoleGrantPermission {
        name: "r".into(),
        perm_type: 1,
        key: b"a".to_vec(),
        range_end: b"c".to_vec(),
    };
    s.auth(none, grant).unwrap();
    for (user, role) in [("u", "r"), (ROOT, ROOT)] {
        let op = AuthOp::UserGrantRole {
            user: user.into(),
            role: role.into(),
        };
        s.auth(none, op).unwrap();
    }
    s.auth(none, AuthOp::Enable).unwrap();
}

#[test]
fn auth_enable_needs_a_root_user_with_the_root_role() {
    let mut s = S::new();
    let none = Caller::Client(None);
    let err = |e| Err(V3Error::Auth(e));
    assert_eq!(
        s.auth(none, AuthOp::Enable),
        err(AuthError::RootUserNotExist)
    );
    s.auth(none, user_add(ROOT)).unwrap();
    assert_eq!(
        s.auth(none, AuthOp::Enable),
        err(AuthError::RootRoleNotExist)
    );
    assert_eq!(
        s.auth(none, user_add(ROOT)),
        err(AuthError::UserAlreadyExist)
    );
    assert_eq!(s.auth(none, user_add("")), err(AuthError::UserEmpty));
    let grant = AuthOp::UserGrantRole {
        user: ROOT.into(),
        role: ROOT.into(),
    };
    assert_eq!(
        s.auth(none, grant),
        Ok(AuthResp::Done),
        "root needs no role record"
    );
    assert_eq!(s.auth(none, AuthOp::Enable), Ok(AuthResp::Done));
    assert!(s.m.auth_enabled());
    // Now only root administers, and root stays root.
    assert_eq!(s.auth(none, AuthOp::UserList), err(AuthError::UserEmpty));
    assert_eq!(
        s.root(AuthOp::UserList),
        Ok(AuthResp::Names(vec![ROOT.into()]))
    );
    let revoke = AuthOp::UserRevokeRole {
        name: ROOT.into(),
        role: ROOT.into(),
    };
    assert_eq!(s.root(revoke), err(AuthError::InvalidAuthMgmt));
    let del = AuthOp::UserDelete { name: ROOT.into() };
    assert_eq!(s.root(del), err(AuthError::InvalidAuthMgmt));
    // Every refusal still took its index.
    assert_eq!(s.m.consistent_index(), s.index);
}

#[test]
fn writes_are_checked_when_they_apply_against_the_entrys_auth_revision() {
    let mut s = S::new();
    auth_fixture(&mut s);
    let u = AuthInfo {
        user: "u".into(),
        revision: s.m.auth_revision(),
    };
    assert!(s.put_as(Some(&u), "b").is_ok());
    assert_eq!(
        s.put_as(Some(&u), "d"),
        Err(V3Error::Auth(AuthError::PermissionDenied))
    );
    assert_eq!(
        s.put_as(None, "b"),
        Err(V3Error::Auth(AuthError::UserEmpty))
    );
    let rev = s.m.revision();
    // An auth change between the check and the apply: the entry is refused.
    s.root(AuthOp::RoleAdd { name: "r2".into() }).unwrap();
    assert_eq!(
        s.put_as(Some(&u), "b"),
        Err(V3Error::Auth(AuthError::AuthOldRevision))
    );
    assert_eq!(s.m.revision(), rev, "refused writes make no revision");
    // The leader's own entries (lease expiry) are not checked.
    s.index += 1;
    assert!(s
        .m
        .apply_as(s.index, &WriteReq::Put(put("z", "v")), Caller::Internal)
        .unwrap()
        .0
        .is_ok());
}

#[test]
fn auth_state_survives_reopen_and_travels_in_dumps_tokens_stay_behind() {
    let disk = MemDisk::default();
    let mut s = S {
        m: open_mem(&disk),
        index: 0,
    };
    auth_fixture(&mut s);
    let login = AuthOp::Authenticate {
        name: "u".into(),
        prefix: "abcdefghijklmnop".into(),
    };
    let token = match s.auth(Caller::Client(None), login).unwrap() {
        AuthResp::Token(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(token, format!("abcdefghijklmnop.{}", s.index));
    let t0 = crate::rt::Instant::now();
    s.m.set_now(t0);
    let login = AuthOp::Authenticate {
        name: "u".into(),
        prefix: "ABCDEFGHIJKLMNOP".into(),
    };
    let timed = match s.auth(Caller::Client(None), login).unwrap() {
        AuthResp::Token(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(s.m.auth_token_user(&token, t0).as_deref(), Some("u"));
    // A token lives TOKEN_TTL from its assignment or its last use.
    let later = t0 + TOKEN_TTL - std::time::Duration::from_secs(1);
    assert_eq!(s.m.auth_token_user(&timed, later).as_deref(), Some("u"));
    let still = later + TOKEN_TTL - std::time::Duration::from_secs(1);
    assert_eq!(s.m.auth_token_user(&timed, still).as_deref(), Some("u"));
    assert_eq!(s.m.auth_token_user(&timed, still + TOKEN_TTL), None);
    assert_eq!(
        s.m.auth_token_user(&timed, still),
        None,
        "an expired token is gone"
    );
    let revision = s.m.auth_revision();
    s.m.flush(true).unwrap();
    drop(s);
    disk.crash(|| false);
    let mut m = open_mem(&disk);
    assert!(m.auth_enabled());
    assert_eq!(m.auth_revision(), revision);
    assert_eq!(
        m.auth_token_user(&token, crate::rt::Instant::now()),
        None,
        "tokens are in memory"
    );
    let bytes = m.dump().unwrap().encode().unwrap();
    let mut t = fresh();
    assert!(!t.auth_enabled());
    assert_eq!(
        t.auth_revision(),
        1,
        "etcd's fresh auth store is at revision 1"
    );
    t.restore(&bytes, 100).unwrap();
    assert!(t.auth_enabled());
    assert_eq!(t.auth_revision(), revision);
    let u = AuthInfo {
        user: "u".into(),
        revision,
    };
    assert_eq!(
        t.auth_check_range(Some(&u), b"a", b"c"),
        Err(AuthError::PermissionDenied)
    );
    let mut s = S { m: t, index: 100 };
    assert!(s.put_as(Some(&u), "a").is_ok());
    assert_eq!(
        s.root(AuthOp::RoleGet { role: "r".into() }),
        Ok(AuthResp::Perms(vec![detcd_proto::authpb::Permission {
            perm_type: 1,
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
        }]))
    );
    // A dump of before auth restores a fresh auth state.
    s.m.restore(&Mvcc::empty_dump(), 200).unwrap();
    s.index = 200;
    assert!(!s.m.auth_enabled());
    assert_eq!(s.root(AuthOp::UserList), Ok(AuthResp::Names(vec![])));
}

#[test]
fn revoking_a_lease_needs_write_access_to_its_keys() {
    let mut s = S::new();
    s.grant(7, 10).unwrap();
    s.lput("a", "1", 7).unwrap();
    s.lput("x", "1", 7).unwrap();
    auth_fixture(&mut s);
    let u = AuthInfo {
        user: "u".into(),
        revision: s.m.auth_revision(),
    };
    s.index += 1;
    let (r, _) =
        s.m.lease_revoke_as(s.index, 7, Caller::Client(Some(&u)))
            .unwrap();
    assert_eq!(r, Err(V3Error::Auth(AuthError::PermissionDenied)));
    assert!(s.m.lease_exists(7));
    s.index += 1;
    let (r, _) = s.m.lease_revoke_as(s.index, 7, Caller::Internal).unwrap();
    assert!(r.is_ok());
    assert!(!s.m.lease_exists(7));
}

// ---------------------------------------------------------------------------------------
// Alarms (etcd's `applyAlarm`, `applierV3Capped`) and HashKV.

fn alarm_req(action: pb::alarm_request::AlarmAction, member: u64) -> pb::AlarmRequest {
    pb::AlarmRequest {
        action: action as i32,
        member_id: member,
        alarm: pb::AlarmType::Nospace as i32,
    }
}

#[test]
fn nospace_caps_writes_until_deactivated_and_survives_dump_and_reopen() {
    use pb::alarm_request::AlarmAction::{Activate, Deactivate, Get};
    let disk = MemDisk::default();
    let mut m = open_mem(&disk);
    let counter = std::cell::Cell::new(0u64);
    let next = || {
        counter.set(counter.get() + 1);
        counter.get()
    };
    let get = pb::AlarmRequest::default();
    assert_eq!(m.alarm(next(), &get).unwrap().unwrap(), vec![]);
    let raised = m.alarm(next(), &alarm_req(Activate, 7)).unwrap().unwrap();
    assert_eq!(raised.len(), 1);
    // Raising it again answers the raised alarm (etcd's `Activate` returns the one held).
    assert_eq!(
        m.alarm(next(), &alarm_req(Activate, 7)).unwrap().unwrap(),
        raised
    );
    assert_eq!(
        m.alarm(next(), &alarm_req(Get, 0)).unwrap().unwrap(),
        raised
    );
    assert!(m.no_space());
    // The capped applier: no put, no txn with a put, no grant; deletes and reads go on.
    let (r, _) = m
        .apply(next(), &WriteReq::Put(put("k", "v")), &any_lease)
        .unwrap();
    assert_eq!(r.unwrap_err(), V3Error::NoSpace);
    let txn = pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(Request::RequestPut(put("k", "v"))),
        }],
        ..Default::default()
    };
    let (r, _) = m
        .apply(next(), &WriteReq::Txn(txn.clone()), &any_lease)
        .unwrap();
    assert_eq!(r.unwrap_err(), V3Error::NoSpace);
    assert_eq!(
        m.lease_grant(next(), 5, 10, 2).unwrap().unwrap_err(),
        V3Error::NoSpace
    );
    let del = pb::DeleteRangeRequest {
        key: b"k".to_vec(),
        ..Default::default()
    };
    assert!(m
        .apply(next(), &WriteReq::DeleteRange(del), &any_lease)
        .unwrap()
        .0
        .is_ok());
    // Durable, and carried by a dump to another keyspace.
    m.flush(true).unwrap();
    let dump = m.dump().unwrap().encode().unwrap();
    let mut other = fresh();
    other.restore(&dump, counter.get()).unwrap();
    assert!(other.no_space());
    drop(m);
    let mut m = open_mem(&disk);
    assert!(m.no_space(), "the alarm survives a reopen");
    // Deactivating an alarm that is not raised answers nothing; this one, itself.
    let none = alarm_req(Deactivate, 8);
    assert_eq!(m.alarm(next(), &none).unwrap().unwrap(), vec![]);
    assert_eq!(
        m.alarm(next(), &alarm_req(Deactivate, 7)).unwrap().unwrap(),
        raised
    );
    assert!(!m.no_space());
    let (r, _) = m.apply(next(), &WriteReq::Txn(txn), &any_lease).unwrap();
    assert!(r.is_ok(), "{r:?}");
    // A replayed entry changes nothing.
    assert!(m.alarm(1, &alarm_req(Activate, 7)).is_none());
    assert!(!m.no_space());
}

#[test]
fn hash_kv_bounds_and_equality_after_the_same_writes() {
    let mut a = S::new();
    let mut b = S::new();
    for s in [&mut a, &mut b] {
        s.put("k", "1");
        s.put("k2", "2");
        s.put("k", "3");
        s.index += 1;
        s.m.apply(
            s.index,
            &WriteReq::Compaction(pb::CompactionRequest {
                revision: 3,
                physical: false,
            }),
            &any_lease,
        )
        .unwrap()
        .0
        .unwrap();
    }
    b.m.flush(false).unwrap();
    assert_eq!(a.m.hash_kv(0).unwrap(), b.m.hash_kv(0).unwrap());
    assert_eq!(a.m.hash_kv(0).unwrap().compact_revision, 3);
    // etcd: a revision at or below the compacted one is compacted; past the store, future.
    assert_eq!(a.m.hash_kv(3).unwrap_err(), V3Error::Compacted);
    assert_eq!(a.m.hash_kv(5).unwrap_err(), V3Error::FutureRev);
    let before = a.m.hash_kv(4).unwrap();
    a.put("k3", "x");
    assert_eq!(
        a.m.hash_kv(4).unwrap().hash,
        before.hash,
        "history does not change"
    );
    assert_ne!(a.m.hash_kv(0).unwrap().hash, before.hash);
}

/// Flip one bit in every copy of `needle` in the file, durably (bit rot under a closed or
/// crashed member). How many copies it found.
fn rot(disk: &MemDisk, needle: &[u8]) -> usize {
    let mut st = disk.st.lock().unwrap();
    let f = st.files.get_mut(Path::new(DB)).unwrap();
    let flip = |img: &mut Vec<u8>| {
        let mut n = 0;
        let mut i = 0;
        while i + needle.len() <= img.len() {
            if &img[i..i + needle.len()] == needle {
                img[i + needle.len() / 2] ^= 0x10;
                n += 1;
                i += needle.len();
            } else {
                i += 1;
            }
        }
        n
    };
    flip(&mut f.current);
    flip(&mut f.durable)
}

/// Many keys with one value that can be found in the file, made durable in several commits.
fn store_with_marker(disk: &MemDisk) -> (Mvcc, &'static str) {
    const MARKER: &str = "marker-value-0123456789abcdef";
    let mut m = open_mem(disk);
    let mut index = 0;
    for i in 0..200 {
        index += 1;
        let v = if i == 100 {
            MARKER.to_string()
        } else {
            format!("v{i}")
        };
        let req = WriteReq::Put(put(&format!("k{i:03}"), &v));
        m.apply(index, &req, &any_lease).unwrap().0.unwrap();
        if i % 50 == 49 {
            m.flush(true).unwrap();
        }
    }
    (m, MARKER)
}

#[test]
fn a_bit_flipped_in_a_cleanly_closed_file_is_refused_as_damage() {
    let disk = MemDisk::default();
    let (m, marker) = store_with_marker(&disk);
    drop(m); // a clean close: redb will not repair on its own when it opens this
    assert!(rot(&disk, marker.as_bytes()) > 0, "the value is on disk");
    let Err(e) = Mvcc::open(Arc::new(disk.clone()), Path::new(DB), opts()) else {
        panic!("a damaged file is refused, not served");
    };
    assert!(is_damage(&e), "{e}");
    assert!(
        e.to_string().contains("the v3 backend file is damaged"),
        "{e}"
    );
}

#[test]
fn a_bit_flipped_in_a_crashed_members_file_is_refused_as_damage() {
    let disk = MemDisk::default();
    let (m, marker) = store_with_marker(&disk);
    // A crash: no close (the file stays marked as in use), unsynced writes lost.
    std::mem::forget(m);
    disk.crash(|| false);
    assert!(rot(&disk, marker.as_bytes()) > 0, "the value is on disk");
    let Err(e) = Mvcc::open(Arc::new(disk.clone()), Path::new(DB), opts()) else {
        panic!("a damaged file is refused, not served");
    };
    assert!(is_damage(&e), "{e}");
}

#[test]
fn an_undamaged_file_opens_after_a_clean_close_and_after_a_crash() {
    let disk = MemDisk::default();
    let (m, marker) = store_with_marker(&disk);
    drop(m);
    let check = |m: &Mvcc| {
        let r = m.range(&rng("k100", "")).unwrap();
        assert_eq!(r.kvs[0].value, marker.as_bytes());
        assert_eq!(m.consistent_index(), 200);
    };
    let reopened = open_mem(&disk);
    check(&reopened);
    std::mem::forget(reopened);
    disk.crash(|| false);
    check(&open_mem(&disk));
}

/// A keyspace of 2000 keys (one of them, `k01000`, holding a marker value) with a cache far
/// smaller than it, so that reads go back to the file as on a keyspace larger than memory;
/// every key read once since, so `k01000`'s page has left the cache.
fn small_cache_store(disk: &MemDisk) -> (Mvcc, &'static str) {
    let small = MvccOptions {
        max_txn_ops: 128,
        cache_bytes: 16 << 10,
        min_lease_ttl: 0,
    };
    let mut m = Mvcc::open(Arc::new(disk.clone()), Path::new(DB), small).unwrap();
    const MARKER: &str = "marker-value-0123456789abcdef";
    let filler = "f".repeat(400);
    for i in 0..2000u64 {
        let v = if i == 1000 { MARKER } else { filler.as_str() };
        let req = WriteReq::Put(put(&format!("k{i:05}"), v));
        m.apply(i + 1, &req, &any_lease).unwrap().0.unwrap();
        if i % 100 == 99 {
            m.flush(true).unwrap();
        }
    }
    assert_eq!(
        m.range(&rng("k01000", "")).unwrap().kvs[0].value,
        MARKER.as_bytes()
    );
    for i in (0..2000).step_by(50) {
        m.range(&rng(&format!("k{i:05}"), "")).unwrap();
    }
    assert!(m.damage().is_none());
    (m, MARKER)
}

#[test]
fn a_value_that_rots_under_a_running_member_is_refused_on_read_and_noted() {
    let disk = MemDisk::default();
    let (m, marker) = small_cache_store(&disk);
    assert!(rot(&disk, marker.as_bytes()) > 0);
    let e = m.range(&rng("k01000", "")).unwrap_err();
    assert!(
        e.to_string().contains("block checksum mismatch at offset"),
        "{e}"
    );
    assert!(m
        .damage()
        .is_some_and(|d| d.contains("block checksum mismatch")));
    // redb serves nothing more after an I/O error from its storage: the member, which
    // stops on the noted damage, could not serve stale or partial reads in the meantime.
    let e = m.range(&rng("k00001", "")).unwrap_err();
    assert!(e.to_string().contains("re-open the database"), "{e}");
}

#[test]
fn a_key_that_rots_under_a_running_member_is_refused_not_missed() {
    // A value's own checksum does not cover the B-tree's keys: without the backend's block
    // checksums, `k01000` rotted to another key would read back as absent.
    let disk = MemDisk::default();
    let (m, _) = small_cache_store(&disk);
    assert!(rot(&disk, b"k01000") > 0);
    let got = m.range(&rng("k01000", ""));
    let e = got.expect_err("a rotted key must not read back as absent");
    assert!(e.to_string().contains("block checksum mismatch"), "{e}");
    assert!(m.damage().is_some());
    // Reopened, the member refuses the file (redb's own checksums), as it must.
    drop(m);
    let Err(e) = Mvcc::open(Arc::new(disk.clone()), Path::new(DB), opts()) else {
        panic!("a rotted file is refused, not served");
    };
    assert!(is_damage(&e), "{e}");
}

#[test]
fn a_misdirected_write_under_a_running_member_is_refused_on_read() {
    // The bytes of a page written whole are remembered; a page that reads back older bytes
    // (its write landed elsewhere, or a failed fsync dropped it) is refused.
    let disk = MemDisk::default();
    let (m, marker) = small_cache_store(&disk);
    // Put the page back as it was before its last write: here, the marker rotted and the
    // rot overwritten by the bytes of another block of the same file.
    let moved = {
        let mut st = disk.st.lock().unwrap();
        let f = st.files.get_mut(Path::new(DB)).unwrap();
        let at = f
            .current
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())
            .unwrap();
        let block = at / 4096 * 4096;
        let other = if block >= 8192 {
            block - 4096
        } else {
            block + 4096
        };
        let copy = f.current[other..other + 4096].to_vec();
        f.current[block..block + 4096].copy_from_slice(&copy);
        block
    };
    let e = m.range(&rng("k01000", "")).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("block checksum mismatch at offset {moved}")),
        "{e}"
    );
}

#[test]
fn entries_written_before_checksums_still_read() {
    let mut s = S::new();
    s.put("a", "1");
    s.m.flush(true).unwrap();
    // An entry as the earlier format wrote it: tag 0 and the marshalled KeyValue.
    let kv = mvccpb::KeyValue {
        key: b"old".to_vec(),
        create_revision: 2,
        mod_revision: 2,
        version: 1,
        value: b"v1".to_vec(),
        lease: 0,
    };
    let mut raw = vec![TAG_PUT_V1];
    kv.encode(&mut raw).unwrap();
    {
        let w = s.m.db().begin_write().unwrap();
        w.open_table(KV)
            .unwrap()
            .insert((b"old".as_slice(), 2, 1), raw.as_slice())
            .unwrap();
        w.commit().unwrap();
    }
    // Written behind the store's back: its key index learns of it as at an open.
    s.m.count_keys().unwrap();
    let got = s.m.range(&rng("old", "")).unwrap();
    assert_eq!(got.kvs, vec![kv]);
    // A flipped bit in a checksummed entry is refused; a wrong tag is too.
    let good = encode_put(&got.kvs[0]);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(decode(&good).is_ok());
    assert!(decode(&bad).is_err());
    bad = good.clone();
    bad[0] = 9;
    assert!(decode(&bad).is_err());
}

/// etcd's `applierV3Corrupt`: while a CORRUPT alarm is raised every write that applies fails
/// with DataLoss "etcdserver: corrupt cluster" (put, delete, write txn, compaction, lease
/// grant and revoke), NOSPACE or not; reads go on; disarmed, writes apply again.
#[test]
fn corrupt_alarm_refuses_every_write_until_deactivated() {
    use pb::alarm_request::AlarmAction::{Activate, Deactivate};
    let disk = MemDisk::default();
    let mut m = open_mem(&disk);
    let mut index = 0u64;
    let mut next = || {
        index += 1;
        index
    };
    let (r, _) = m
        .apply(next(), &WriteReq::Put(put("k", "v")), &any_lease)
        .unwrap();
    r.unwrap();
    assert!(m.lease_grant(next(), 5, 10, 2).unwrap().is_ok());
    let corrupt = |action| pb::AlarmRequest {
        action: action as i32,
        member_id: 7,
        alarm: pb::AlarmType::Corrupt as i32,
    };
    m.alarm(next(), &corrupt(Activate)).unwrap().unwrap();
    assert!(m.corrupt() && !m.no_space());
    let del = pb::DeleteRangeRequest {
        key: b"k".to_vec(),
        ..Default::default()
    };
    for w in [
        WriteReq::Put(put("k", "v2")),
        WriteReq::DeleteRange(del.clone()),
        WriteReq::Compaction(pb::CompactionRequest {
            revision: 1,
            ..Default::default()
        }),
    ] {
        let (r, _) = m.apply(next(), &w, &any_lease).unwrap();
        assert_eq!(r.unwrap_err(), V3Error::Corrupt, "{w:?}");
    }
    assert_eq!(
        m.lease_grant(next(), 6, 10, 2).unwrap().unwrap_err(),
        V3Error::Corrupt
    );
    let (r, _) = m.lease_revoke_as(next(), 5, Caller::Internal).unwrap();
    assert_eq!(r.unwrap_err(), V3Error::Corrupt);
    assert_eq!(V3Error::Corrupt.code(), tonic::Code::DataLoss);
    assert_eq!(V3Error::Corrupt.message(), "etcdserver: corrupt cluster");
    // Nothing changed; disarmed, writes apply again.
    assert_eq!(m.revision(), 2);
    m.alarm(next(), &corrupt(Deactivate)).unwrap().unwrap();
    let (r, _) = m
        .apply(next(), &WriteReq::DeleteRange(del), &any_lease)
        .unwrap();
    r.unwrap();
    assert_eq!(m.revision(), 3);
}
