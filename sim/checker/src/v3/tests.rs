//! Hand-written histories per rule: each must pass, or must fail for the right reason.

use super::store::{Store, StoreError};
use super::watch::WatchRule;
use super::*;

fn kv(k: &str, v: &str, create: i64, m: i64, version: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v.into(),
        create_revision: create,
        mod_revision: m,
        version,
        lease: 0,
    }
}

fn put(k: &str, v: &str) -> Request {
    Request::Put(PutRequest {
        key: k.into(),
        value: v.into(),
        lease: 0,
        prev_kv: true,
    })
}

fn get(k: &str) -> Request {
    Request::Range(RangeRequest {
        key: k.into(),
        ..RangeRequest::default()
    })
}

fn get_at(k: &str, rev: i64) -> Request {
    Request::Range(RangeRequest {
        key: k.into(),
        revision: rev,
        ..RangeRequest::default()
    })
}

fn sget(k: &str) -> Request {
    Request::Range(RangeRequest {
        key: k.into(),
        serializable: true,
        ..RangeRequest::default()
    })
}

fn del(k: &str) -> Request {
    Request::DeleteRange(DeleteRangeRequest {
        key: k.into(),
        range_end: String::new(),
        prev_kv: true,
    })
}

fn compact(rev: i64) -> Request {
    Request::Compact(CompactRequest {
        revision: rev,
        physical: false,
    })
}

fn put_ok(rev: i64, prev: Option<KeyValue>) -> Outcome {
    Outcome::Ok(Response::Put(PutResponse {
        header_revision: rev,
        prev_kv: prev,
    }))
}

fn get_ok(rev: i64, kvs: Vec<KeyValue>) -> Outcome {
    let count = kvs.len() as i64;
    Outcome::Ok(Response::Range(RangeResponse {
        header_revision: rev,
        kvs,
        count,
        more: false,
    }))
}

fn del_ok(rev: i64, prev: Vec<KeyValue>) -> Outcome {
    Outcome::Ok(Response::DeleteRange(DeleteRangeResponse {
        header_revision: rev,
        deleted: prev.len() as i64,
        prev_kvs: prev,
    }))
}

fn error(code: &str, msg: &str) -> Outcome {
    Outcome::Error(GrpcError {
        code: code.into(),
        message: msg.into(),
    })
}

#[derive(Default)]
struct B {
    h: History,
}

impl B {
    fn op(
        &mut self,
        client: u64,
        call: u64,
        ret: Option<u64>,
        request: Request,
        outcome: Outcome,
    ) -> &mut Self {
        self.op_on(client, 0, call, ret, request, outcome)
    }
    fn op_on(
        &mut self,
        client: u64,
        member: u64,
        call: u64,
        ret: Option<u64>,
        request: Request,
        outcome: Outcome,
    ) -> &mut Self {
        let id = self.h.ops.len() as u64;
        self.h.ops.push(Op {
            id,
            client,
            member: Some(member),
            call_ns: call,
            return_ns: ret,
            request,
            outcome,
        });
        self
    }
    fn check(&self) -> V3Report {
        // Every test history also survives a JSON round trip.
        let text = self.h.to_jsonl();
        assert_eq!(History::parse(&text).expect("parses"), self.h);
        check(&self.h)
    }
}

fn passes(b: &B) {
    let r = b.check();
    assert_eq!(r.verdict, V3Verdict::Ok, "{}", r.render());
}

fn fails(b: &B, kind: ViolationKind, needle: &str) -> V3Report {
    let r = b.check();
    assert_eq!(r.verdict, V3Verdict::Violations, "{}", r.render());
    assert!(
        r.violations
            .iter()
            .any(|v| v.kind == kind && v.explanation.contains(needle)),
        "wanted {kind:?} containing {needle:?}:\n{}",
        r.render()
    );
    r
}

/// a=1 at 2, a=2 at 3, read a at 3.
fn base() -> B {
    let mut b = B::default();
    b.op(0, 10, Some(20), put("a", "1"), put_ok(2, None))
        .op(
            0,
            30,
            Some(40),
            put("a", "2"),
            put_ok(3, Some(kv("a", "1", 2, 2, 1))),
        )
        .op(
            1,
            50,
            Some(60),
            get("a"),
            get_ok(3, vec![kv("a", "2", 2, 3, 2)]),
        );
    b
}

// ---------- the model's rules ----------

#[test]
fn revisions_start_at_one_and_every_put_takes_one() {
    let mut s = Store::new();
    assert_eq!((s.rev, s.compact), (1, -1));
    let r = s.apply(&put("a", "x")).unwrap();
    assert_eq!(
        r,
        Response::Put(PutResponse {
            header_revision: 2,
            prev_kv: None
        })
    );
    // The same value again: a new revision, version 2, same create revision.
    let r = s.apply(&put("a", "x")).unwrap();
    assert_eq!(r.header_revision(), 3);
    assert_eq!(s.kv_at("a", 3), Some(&kv("a", "x", 2, 3, 2)));
}

#[test]
fn deleting_nothing_and_unchanged_txns_keep_the_revision() {
    let mut s = Store::new();
    s.apply(&put("a", "1")).unwrap();
    assert_eq!(
        s.apply(&del("zz")).unwrap(),
        Response::DeleteRange(DeleteRangeResponse {
            header_revision: 2,
            deleted: 0,
            prev_kvs: vec![]
        })
    );
    let t = Request::Txn(TxnRequest {
        compares: vec![Compare {
            target: CompareTarget::Value,
            result: CompareResult::Equal,
            key: "a".into(),
            range_end: String::new(),
            operand: Operand::Value("no".into()),
        }],
        success: vec![put("a", "2")],
        failure: vec![get("a")],
    });
    let r = s.apply(&t).unwrap();
    assert_eq!(s.rev, 2);
    let Response::Txn(t) = r else { panic!() };
    assert!(!t.succeeded);
    assert_eq!(t.header_revision, 2);
}

#[test]
fn a_txns_writes_share_one_revision_and_later_ops_see_earlier_ones() {
    let mut s = Store::new();
    let t = Request::Txn(TxnRequest {
        compares: vec![],
        success: vec![get("a"), put("a", "1"), put("b", "2"), get("a"), del("c")],
        failure: vec![],
    });
    let Response::Txn(r) = s.apply(&t).unwrap() else {
        panic!()
    };
    assert_eq!((r.header_revision, s.rev), (2, 2));
    assert!(r.succeeded);
    // Sub-headers: the begin revision until the txn changed something, then +1.
    let heads: Vec<i64> = r.responses.iter().map(Response::header_revision).collect();
    assert_eq!(heads, vec![1, 2, 2, 2, 2]);
    let Response::Range(g) = &r.responses[3] else {
        panic!()
    };
    assert_eq!(g.kvs, vec![kv("a", "1", 2, 2, 1)]);
    assert_eq!(s.events(2).len(), 2);
    assert_eq!(s.events(2)[1].kv.key, "b");
}

#[test]
fn a_delete_resets_version_and_create_revision() {
    let mut s = Store::new();
    s.apply(&put("a", "1")).unwrap();
    s.apply(&put("a", "2")).unwrap();
    let r = s.apply(&del("a")).unwrap();
    assert_eq!(r, del_ok(4, vec![kv("a", "2", 2, 3, 2)]).ok_response());
    s.apply(&put("a", "3")).unwrap();
    assert_eq!(s.kv_at("a", 5), Some(&kv("a", "3", 5, 5, 1)));
    assert_eq!(
        s.events(4)[0].kv,
        KeyValue {
            key: "a".into(),
            mod_revision: 4,
            ..KeyValue::default()
        }
    );
}

impl Outcome {
    fn ok_response(self) -> Response {
        match self {
            Outcome::Ok(r) => r,
            _ => panic!("not ok"),
        }
    }
}

fn cmp(
    target: CompareTarget,
    result: CompareResult,
    key: &str,
    end: &str,
    operand: Operand,
) -> Request {
    Request::Txn(TxnRequest {
        compares: vec![Compare {
            target,
            result,
            key: key.into(),
            range_end: end.into(),
            operand,
        }],
        success: vec![],
        failure: vec![],
    })
}

fn succeeded(s: &mut Store, t: Request) -> bool {
    match s.apply(&t).unwrap() {
        Response::Txn(t) => t.succeeded,
        _ => panic!(),
    }
}

#[test]
fn compares_on_missing_keys_see_zeros_and_value_is_false() {
    use CompareResult::*;
    use CompareTarget::*;
    let mut s = Store::new();
    assert!(succeeded(
        &mut s,
        cmp(Version, Equal, "a", "", Operand::Int(0))
    ));
    assert!(succeeded(&mut s, cmp(Mod, Equal, "a", "", Operand::Int(0))));
    assert!(succeeded(
        &mut s,
        cmp(Create, Less, "a", "", Operand::Int(1))
    ));
    assert!(!succeeded(
        &mut s,
        cmp(Value, Equal, "a", "", Operand::Value(String::new()))
    ));
    assert!(!succeeded(
        &mut s,
        cmp(Value, NotEqual, "a", "", Operand::Value("x".into()))
    ));
}

#[test]
fn a_range_compare_must_hold_for_every_key() {
    use CompareResult::*;
    use CompareTarget::*;
    let mut s = Store::new();
    s.apply(&put("a1", "x")).unwrap();
    s.apply(&put("a2", "x")).unwrap();
    assert!(succeeded(
        &mut s,
        cmp(Value, Equal, "a", "b", Operand::Value("x".into()))
    ));
    s.apply(&put("a3", "y")).unwrap();
    assert!(!succeeded(
        &mut s,
        cmp(Value, Equal, "a", "b", Operand::Value("x".into()))
    ));
    assert!(succeeded(
        &mut s,
        cmp(Version, Greater, "a", "\0", Operand::Int(0))
    ));
    assert!(succeeded(
        &mut s,
        cmp(Mod, Greater, "a2", "\0", Operand::Int(2))
    ));
}

#[test]
fn ranges_at_older_revisions_compaction_and_future_revisions() {
    let mut s = Store::new();
    s.apply(&put("a", "1")).unwrap(); // 2
    s.apply(&put("a", "2")).unwrap(); // 3
    s.apply(&del("a")).unwrap(); // 4
    s.apply(&put("b", "1")).unwrap(); // 5
    let at = |s: &mut Store, rev| s.apply(&get_at("a", rev));
    assert_eq!(
        at(&mut s, 2).unwrap(),
        get_ok(5, vec![kv("a", "1", 2, 2, 1)]).ok_response()
    );
    assert_eq!(at(&mut s, 4).unwrap(), get_ok(5, vec![]).ok_response());
    assert_eq!(at(&mut s, 6), Err(StoreError::FutureRev));
    assert_eq!(
        s.apply(&compact(3)).unwrap(),
        Response::Compact(CompactResponse { header_revision: 5 })
    );
    assert_eq!(at(&mut s, 2), Err(StoreError::Compacted));
    // Reading at the compact revision is allowed.
    assert_eq!(
        at(&mut s, 3).unwrap(),
        get_ok(5, vec![kv("a", "2", 2, 3, 2)]).ok_response()
    );
    assert_eq!(s.apply(&compact(3)), Err(StoreError::Compacted));
    assert_eq!(s.apply(&compact(6)), Err(StoreError::FutureRev));
}

#[test]
fn limit_count_more_count_only_keys_only() {
    let mut s = Store::new();
    for k in ["a", "b", "c", "d"] {
        s.apply(&put(k, "v")).unwrap();
    }
    let q = |limit, count_only, keys_only| {
        Request::Range(RangeRequest {
            key: "a".into(),
            range_end: "d".into(),
            limit,
            count_only,
            keys_only,
            ..RangeRequest::default()
        })
    };
    let Response::Range(r) = s.apply(&q(2, false, false)).unwrap() else {
        panic!()
    };
    assert_eq!((r.kvs.len(), r.count, r.more), (2, 3, true));
    let Response::Range(r) = s.apply(&q(3, false, false)).unwrap() else {
        panic!()
    };
    assert_eq!((r.kvs.len(), r.count, r.more), (3, 3, false));
    let Response::Range(r) = s.apply(&q(1, true, false)).unwrap() else {
        panic!()
    };
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 3, false));
    let Response::Range(r) = s.apply(&q(0, false, true)).unwrap() else {
        panic!()
    };
    assert!(r
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
    // "\0" as range end: every key from "b" on.
    let Response::Range(r) = s
        .apply(&Request::Range(RangeRequest {
            key: "b".into(),
            range_end: "\0".into(),
            ..RangeRequest::default()
        }))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(r.count, 3);
}

#[test]
fn static_request_checks() {
    let mut s = Store::new();
    assert_eq!(s.apply(&put("", "v")), Err(StoreError::EmptyKey));
    let dup = Request::Txn(TxnRequest {
        compares: vec![],
        success: vec![put("a", "1"), put("a", "2")],
        failure: vec![],
    });
    assert_eq!(s.apply(&dup), Err(StoreError::DuplicateKey));
    let in_del = Request::Txn(TxnRequest {
        compares: vec![],
        success: vec![],
        failure: vec![
            Request::DeleteRange(DeleteRangeRequest {
                key: "a".into(),
                range_end: "c".into(),
                prev_kv: false,
            }),
            put("b", "1"),
        ],
    });
    assert_eq!(s.apply(&in_del), Err(StoreError::DuplicateKey));
    let many = Request::Txn(TxnRequest {
        compares: vec![],
        success: (0..129).map(|i| get(&format!("k{i}"))).collect(),
        failure: vec![],
    });
    assert_eq!(s.apply(&many), Err(StoreError::TooManyOps));
    // Puts of one key in different branches are fine.
    let ok = Request::Txn(TxnRequest {
        compares: vec![],
        success: vec![put("a", "1")],
        failure: vec![put("a", "2")],
    });
    assert!(s.apply(&ok).is_ok());
    assert_eq!(s.rev, 2);
}

// ---------- linearizability ----------

#[test]
fn a_valid_history_passes() {
    passes(&base());
}

#[test]
fn a_read_with_the_wrong_header_revision_fails() {
    let mut b = base();
    b.h.ops[2].outcome = get_ok(2, vec![kv("a", "2", 2, 3, 2)]);
    // Revision 2 held a=1; the read also returned after the write at 3 returned.
    let r = b.check();
    assert!(
        r.violations
            .iter()
            .any(|v| v.kind == ViolationKind::RealTime),
        "{}",
        r.render()
    );
}

#[test]
fn a_stale_read_fails_for_real_time() {
    let mut b = base();
    b.h.ops[2].outcome = get_ok(2, vec![kv("a", "1", 2, 2, 1)]);
    fails(
        &b,
        ViolationKind::RealTime,
        "op 1 returned before op 2 was invoked",
    );
}

#[test]
fn a_read_of_the_wrong_value_fails_with_the_writes_that_explain_it() {
    let mut b = base();
    b.h.ops[2].outcome = get_ok(3, vec![kv("a", "1", 2, 3, 2)]);
    // Found before the search: that value was written at 2, not 3.
    fails(
        &b,
        ViolationKind::Response,
        "saw \"a\"=\"1\" with mod_revision 3, but that value was put only by op(s) acknowledged at revision(s) [2]",
    );
    // A wrong version needs the model.
    b.h.ops[2].outcome = get_ok(3, vec![kv("a", "2", 2, 3, 3)]);
    let r = fails(
        &b,
        ViolationKind::Response,
        "the model at revision 3 answers",
    );
    let v = &r.violations[0];
    // The window: the last writes of the key and the read.
    assert_eq!(v.ops, vec![1, 0, 2]);
    assert!(
        v.explanation.contains("revision 3 was made by op 1"),
        "{}",
        v.explanation
    );
}

#[test]
fn two_writes_at_one_revision_fail() {
    let mut b = base();
    b.h.ops[1].outcome = put_ok(2, Some(kv("a", "1", 2, 2, 1)));
    fails(
        &b,
        ViolationKind::DuplicateRevision,
        "both acknowledged as making revision 2",
    );
}

#[test]
fn a_wrong_prev_kv_fails() {
    let mut b = base();
    b.h.ops[1].outcome = put_ok(3, Some(kv("a", "1", 2, 2, 7)));
    fails(
        &b,
        ViolationKind::Response,
        "was acknowledged as making revision 3",
    );
}

#[test]
fn a_revision_no_write_can_explain_fails() {
    let mut b = base();
    // The read says revision 4; nothing made it.
    b.h.ops[2].outcome = get_ok(4, vec![kv("a", "2", 2, 3, 2)]);
    fails(
        &b,
        ViolationKind::UnexplainedRevision,
        "no acknowledged write made revision 4",
    );
}

#[test]
fn an_indeterminate_write_fills_a_gap_when_seen() {
    let mut b = base();
    b.op(2, 41, None, put("b", "x"), Outcome::Indeterminate).op(
        1,
        70,
        Some(80),
        get("b"),
        get_ok(4, vec![kv("b", "x", 4, 4, 1)]),
    );
    passes(&b);
    let r = b.check();
    assert_eq!(r.indeterminate_applied, 1);
    assert_eq!(r.made_by.last(), Some(&(4, 3)));
    // ...or never takes effect.
    b.h.ops.pop();
    passes(&b);
}

#[test]
fn an_indeterminate_write_seen_before_it_was_invoked_fails() {
    let mut b = base();
    b.op(
        1,
        70,
        Some(80),
        get("b"),
        get_ok(4, vec![kv("b", "x", 4, 4, 1)]),
    )
    .op(2, 90, None, put("b", "x"), Outcome::Indeterminate);
    fails(
        &b,
        ViolationKind::UnexplainedRevision,
        "observed at revision 4",
    );
}

#[test]
fn an_unobserved_indeterminate_write_is_found_by_its_effect_on_versions() {
    let mut b = base();
    // Two indeterminate puts; the one to "a" took effect (a's version is 3 at revision 4).
    b.op(2, 41, None, put("c", "x"), Outcome::Indeterminate)
        .op(
            3,
            42,
            None,
            Request::Put(PutRequest {
                key: "a".into(),
                value: "y".into(),
                lease: 0,
                prev_kv: false,
            }),
            Outcome::Indeterminate,
        )
        .op(
            1,
            70,
            Some(80),
            Request::Range(RangeRequest {
                key: "a".into(),
                keys_only: true,
                ..RangeRequest::default()
            }),
            get_ok(4, vec![kv("a", "", 2, 4, 3)]),
        );
    let r = b.check();
    assert_eq!(r.verdict, V3Verdict::Ok, "{}", r.render());
    assert_eq!(r.made_by.last(), Some(&(4, 4)));
}

#[test]
fn a_txn_that_took_the_wrong_branch_fails() {
    let mut b = base();
    let t = Request::Txn(TxnRequest {
        compares: vec![Compare {
            target: CompareTarget::Mod,
            result: CompareResult::Equal,
            key: "a".into(),
            range_end: String::new(),
            operand: Operand::Int(3),
        }],
        success: vec![put("a", "3")],
        failure: vec![get("a")],
    });
    // mod_revision of a is 3: the compare holds, the put makes revision 4.
    let ok = Outcome::Ok(Response::Txn(TxnResponse {
        header_revision: 4,
        succeeded: true,
        responses: vec![Response::Put(PutResponse {
            header_revision: 4,
            prev_kv: Some(kv("a", "2", 2, 3, 2)),
        })],
    }));
    b.op(2, 70, Some(80), t.clone(), ok);
    passes(&b);
    b.h.ops[3].outcome = Outcome::Ok(Response::Txn(TxnResponse {
        header_revision: 3,
        succeeded: false,
        responses: vec![Response::Range(RangeResponse {
            header_revision: 3,
            kvs: vec![kv("a", "2", 2, 3, 2)],
            count: 1,
            more: false,
        })],
    }));
    fails(
        &b,
        ViolationKind::Response,
        "answered as changing nothing at revision 3, but in the model",
    );
}

#[test]
fn historical_reads_are_answered_exactly() {
    let mut b = base();
    b.op(
        1,
        70,
        Some(80),
        get_at("a", 2),
        get_ok(3, vec![kv("a", "1", 2, 2, 1)]),
    );
    passes(&b);
    b.h.ops[3].outcome = get_ok(3, vec![kv("a", "2", 2, 3, 2)]);
    fails(
        &b,
        ViolationKind::Response,
        "the model at revision 3 answers",
    );
}

#[test]
fn a_read_below_the_compact_revision_must_fail() {
    let mut b = base();
    b.op(
        2,
        70,
        Some(80),
        compact(3),
        Outcome::Ok(Response::Compact(CompactResponse { header_revision: 3 })),
    )
    .op(
        1,
        90,
        Some(95),
        get_at("a", 2),
        error(
            "OutOfRange",
            "etcdserver: mvcc: required revision has been compacted",
        ),
    );
    passes(&b);
    // Answered instead, after the compaction returned: wrong.
    b.h.ops[4].outcome = get_ok(3, vec![kv("a", "1", 2, 2, 1)]);
    fails(
        &b,
        ViolationKind::Response,
        "after a compaction to 3 had returned",
    );
}

// ---------- errors ----------

#[test]
fn a_future_revision_error_needs_an_unreached_revision() {
    let mut b = base();
    b.op(
        1,
        70,
        Some(80),
        get_at("a", 4),
        error(
            "OutOfRange",
            "etcdserver: mvcc: required revision is a future revision",
        ),
    );
    passes(&b);
    b.h.ops[3].request = get_at("a", 3);
    fails(
        &b,
        ViolationKind::Error,
        "already reached: op 1 returned at revision 3",
    );
}

#[test]
fn a_compacted_error_needs_a_compaction() {
    let mut b = base();
    b.op(
        1,
        70,
        Some(80),
        get_at("a", 2),
        error(
            "OutOfRange",
            "etcdserver: mvcc: required revision has been compacted",
        ),
    );
    fails(&b, ViolationKind::Error, "no compaction past the revision");
    // An indeterminate compaction invoked before explains it.
    b.op(3, 60, None, compact(3), Outcome::Indeterminate);
    passes(&b);
}

#[test]
fn invalid_argument_errors_are_checked_statically() {
    let mut b = base();
    b.op(
        1,
        70,
        Some(80),
        put("", "x"),
        error("InvalidArgument", "etcdserver: key is not provided"),
    );
    passes(&b);
    b.op(
        1,
        90,
        Some(95),
        put("k", "x"),
        error("InvalidArgument", "etcdserver: key is not provided"),
    );
    fails(
        &b,
        ViolationKind::Error,
        "a valid request refused as invalid",
    );
    b.h.ops.pop();
    // An invalid request answered as if applied.
    b.op(1, 90, Some(95), put("", "x"), put_ok(4, None));
    fails(&b, ViolationKind::Response, "key is not provided");
}

#[test]
fn unknown_errors_count_as_not_applied() {
    let mut b = base();
    b.op(
        1,
        70,
        Some(80),
        put("b", "x"),
        error("Unavailable", "etcdserver: request timed out"),
    );
    let r = b.check();
    assert_eq!(r.verdict, V3Verdict::Ok, "{}", r.render());
    assert_eq!((r.errors, r.errors_checked), (1, 0));
}

// ---------- serializable reads ----------

#[test]
fn serializable_reads_may_be_stale_but_not_wrong_or_going_back() {
    let mut b = base();
    // Stale (revision 2 after 3 was acknowledged) but true at 2: fine.
    b.op_on(
        1,
        1,
        70,
        Some(80),
        sget("a"),
        get_ok(2, vec![kv("a", "1", 2, 2, 1)]),
    );
    passes(&b);
    // Then member 1 answers an older revision: goes back.
    b.op_on(1, 1, 90, Some(95), sget("a"), get_ok(1, vec![]));
    fails(&b, ViolationKind::MemberOrder, "member 1 answered serializable read op 4 at revision 1 after it had answered op 3 at revision 2");
    // Unless the member restarted between.
    b.h.restarts.push((1, 85));
    passes(&b);
    // Wrong content at its revision.
    b.h.ops[3].outcome = get_ok(2, vec![kv("a", "2", 2, 3, 2)]);
    fails(
        &b,
        ViolationKind::Serializable,
        "the model at revision 2 answers",
    );
}

// ---------- watches ----------

fn watch_base() -> B {
    let mut b = base();
    b.op(
        0,
        70,
        Some(80),
        del("a"),
        del_ok(4, vec![kv("a", "2", 2, 3, 2)]),
    )
    .op(0, 90, Some(100), put("b", "1"), put_ok(5, None));
    b.h.watches.push(Watch {
        watcher: 7,
        client: 9,
        member: Some(0),
        call_ns: 1,
        key: "a".into(),
        range_end: "\0".into(),
        start_revision: 0,
        prev_kv: true,
        filters: vec![],
    });
    b.wr(2, 1, true, vec![]);
    b
}

fn ev(kind: EventType, kv: KeyValue, prev: Option<KeyValue>) -> Event {
    Event {
        kind,
        kv,
        prev_kv: prev,
    }
}

fn tomb(k: &str, rev: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        mod_revision: rev,
        ..KeyValue::default()
    }
}

impl B {
    fn wr(&mut self, at: u64, rev: i64, created: bool, events: Vec<Event>) -> &mut Self {
        self.h.watch_responses.push(WatchResponse {
            watcher: 7,
            at_ns: at,
            header_revision: rev,
            created,
            canceled: false,
            compact_revision: 0,
            fragment: false,
            events,
        });
        self
    }
}

fn all_events() -> Vec<Event> {
    vec![
        ev(EventType::Put, kv("a", "1", 2, 2, 1), None),
        ev(
            EventType::Put,
            kv("a", "2", 2, 3, 2),
            Some(kv("a", "1", 2, 2, 1)),
        ),
        ev(EventType::Delete, tomb("a", 4), Some(kv("a", "2", 2, 3, 2))),
        ev(EventType::Put, kv("b", "1", 5, 5, 1), None),
    ]
}

fn watch_fails(events: Vec<Vec<Event>>, rule: WatchRule, needle: &str) {
    let mut b = watch_base();
    for (i, e) in events.into_iter().enumerate() {
        b.wr(100 + i as u64, 5, false, e);
    }
    fails(&b, ViolationKind::Watch(rule), needle);
}

#[test]
fn a_complete_watch_passes_in_any_batching() {
    let e = all_events();
    let mut b = watch_base();
    b.wr(30, 3, false, e[..2].to_vec())
        .wr(110, 5, false, e[2..].to_vec());
    passes(&b);
    let mut b = watch_base();
    b.wr(110, 5, false, e.clone());
    passes(&b);
    assert_eq!(b.check().watch_events, 4);
}

#[test]
fn watch_rules_fail_for_the_right_reason() {
    let e = all_events();
    // Reliable: the event at 3 is missing.
    watch_fails(
        vec![vec![e[0].clone()], vec![e[2].clone()]],
        WatchRule::Reliable,
        "missed Put \"a\"=\"2\"",
    );
    // Unique.
    watch_fails(
        vec![vec![e[0].clone()], vec![e[0].clone()]],
        WatchRule::Unique,
        "event twice",
    );
    // Ordered.
    watch_fails(
        vec![vec![e[1].clone()], vec![e[0].clone()]],
        WatchRule::Ordered,
        "event at revision 2 after one at 3",
    );
    // PrevKV: the previous kv of the put at 3 is wrong.
    let mut bad = e[1].clone();
    bad.prev_kv = Some(kv("a", "0", 2, 2, 1));
    watch_fails(
        vec![vec![e[0].clone(), bad]],
        WatchRule::PrevKv,
        "an event's prev_kv",
    );
    let mut bad = e[1].clone();
    bad.prev_kv = Some(kv("a", "2", 2, 3, 2));
    watch_fails(
        vec![vec![e[0].clone(), bad]],
        WatchRule::PrevKv,
        "the previous kv was",
    );
    // IsCreate: version 1 but create != mod.
    let mut bad = e[0].clone();
    bad.kv.create_revision = 1;
    watch_fails(
        vec![vec![bad]],
        WatchRule::IsCreate,
        "disagrees with version == 1",
    );
    // Content: a value nobody wrote at that revision.
    let mut bad = e[0].clone();
    bad.kv.value = "zzz".into();
    watch_fails(
        vec![vec![bad]],
        WatchRule::Content,
        "a value no operation of the history put",
    );
    // Content: the right value, a lease the write did not attach.
    let mut bad = e[0].clone();
    bad.kv.lease = 5;
    watch_fails(
        vec![vec![bad]],
        WatchRule::Content,
        "the write at revision 2 made",
    );
}

#[test]
fn a_revision_split_over_responses_fails_atomic() {
    // Revision 4 deletes a and b in one txn-less range delete.
    let mut b = B::default();
    b.op(0, 10, Some(20), put("a", "1"), put_ok(2, None))
        .op(0, 30, Some(40), put("b", "1"), put_ok(3, None))
        .op(
            0,
            50,
            Some(60),
            Request::DeleteRange(DeleteRangeRequest {
                key: "a".into(),
                range_end: "c".into(),
                prev_kv: false,
            }),
            del_ok(4, vec![]),
        );
    b.h.ops[2].outcome = Outcome::Ok(Response::DeleteRange(DeleteRangeResponse {
        header_revision: 4,
        deleted: 2,
        prev_kvs: vec![],
    }));
    b.h.watches.push(Watch {
        watcher: 7,
        client: 9,
        member: None,
        call_ns: 45,
        key: "a".into(),
        range_end: "c".into(),
        start_revision: 4,
        prev_kv: false,
        filters: vec![],
    });
    b.wr(
        61,
        4,
        false,
        vec![ev(EventType::Delete, tomb("a", 4), None)],
    );
    fails(
        &b,
        ViolationKind::Watch(WatchRule::Atomic),
        "revision 4 delivered incompletely",
    );
    b.h.watch_responses[0]
        .events
        .push(ev(EventType::Delete, tomb("b", 4), None));
    passes(&b);
    // In the wrong order within the revision.
    b.h.watch_responses[0].events.reverse();
    fails(
        &b,
        ViolationKind::Watch(WatchRule::Ordered),
        "within revision 4",
    );
}

#[test]
fn filters_and_ranges_are_enforced() {
    let e = all_events();
    let mut b = watch_base();
    b.h.watches[0].filters = vec![WatchFilter::Nodelete];
    b.wr(
        110,
        5,
        false,
        vec![e[0].clone(), e[1].clone(), e[3].clone()],
    );
    passes(&b);
    b.h.watch_responses[1].events.insert(2, e[2].clone());
    fails(
        &b,
        ViolationKind::Watch(WatchRule::Filter),
        "filters [Nodelete] exclude",
    );
    let mut b = watch_base();
    b.h.watches[0].range_end = "b".into();
    b.wr(110, 5, false, e.clone());
    fails(
        &b,
        ViolationKind::Watch(WatchRule::Filter),
        "outside the watched range",
    );
}

#[test]
fn a_resumed_watch_continues_exactly() {
    let e = all_events();
    let mut b = watch_base();
    b.wr(30, 3, false, e[..2].to_vec());
    // The stream broke; the client resumes at 4 as watcher 8.
    b.h.watches.push(Watch {
        watcher: 8,
        start_revision: 4,
        call_ns: 85,
        ..b.h.watches[0].clone()
    });
    b.h.watch_responses.push(WatchResponse {
        watcher: 8,
        at_ns: 110,
        header_revision: 5,
        created: false,
        canceled: false,
        compact_revision: 0,
        fragment: false,
        events: e[2..].to_vec(),
    });
    passes(&b);
    b.h.watch_responses.last_mut().unwrap().events.remove(0);
    fails(
        &b,
        ViolationKind::Watch(WatchRule::Resumable),
        "watch resumed at 4",
    );
}

#[test]
fn a_compaction_cancel_ends_the_watch() {
    let e = all_events();
    let mut b = watch_base();
    b.op(
        1,
        101,
        Some(102),
        compact(4),
        Outcome::Ok(Response::Compact(CompactResponse { header_revision: 5 })),
    );
    b.h.watches[0].start_revision = 2;
    b.h.watch_responses.clear();
    b.wr(103, 5, false, vec![]);
    b.h.watch_responses[0].canceled = true;
    b.h.watch_responses[0].compact_revision = 4;
    passes(&b);
    b.wr(104, 5, false, vec![e[0].clone()]);
    fails(
        &b,
        ViolationKind::Watch(WatchRule::Compaction),
        "events after the watch was canceled",
    );
    b.h.watch_responses.pop();
    b.h.watches[0].start_revision = 4;
    fails(
        &b,
        ViolationKind::Watch(WatchRule::Compaction),
        "which was not compacted",
    );
}

#[test]
fn a_watch_below_an_applied_compaction_gets_no_events() {
    let e = all_events();
    // Compacted to 4 (acknowledged at revision 5); a watch from 2 created at revision 5 on
    // a member that had applied the compaction must be canceled, not served.
    let mut b = watch_base();
    b.op(
        1,
        101,
        Some(102),
        compact(4),
        Outcome::Ok(Response::Compact(CompactResponse { header_revision: 5 })),
    );
    b.h.watches[0].start_revision = 2;
    b.h.watch_responses.clear();
    b.wr(103, 5, true, vec![]);
    b.wr(104, 5, false, e.clone());
    // The header of the compaction is not below the created response's: passes.
    passes(&b);
    b.h.watch_responses[0].header_revision = 6;
    b.h.watch_responses[1].header_revision = 6;
    b.op(0, 105, Some(106), put("c", "1"), put_ok(6, None));
    fails(
        &b,
        ViolationKind::Watch(WatchRule::Compaction),
        "below a compaction to 4",
    );
}

// ---------- leases ----------

const S: u64 = 1_000_000_000;

fn lput(k: &str, v: &str, lease: i64) -> Request {
    Request::Put(PutRequest {
        key: k.into(),
        value: v.into(),
        lease,
        prev_kv: false,
    })
}

fn lkv(k: &str, v: &str, create: i64, m: i64, lease: i64) -> KeyValue {
    KeyValue {
        lease,
        ..kv(k, v, create, m, 1)
    }
}

fn revoke(id: i64) -> Request {
    Request::LeaseRevoke(LeaseRevokeRequest {
        id,
        keys: Vec::new(),
    })
}

/// Lease 7 (TTL 2 s) granted at 0, keys a and b put on it at revisions 2 and 3 (by 0.2 s),
/// one KeepAlive sent at 1 s (so it may expire from 3 s on).
fn lease_base() -> B {
    let mut b = B::default();
    b.h.lease_grants.push(LeaseGrant {
        client: 0,
        member: Some(0),
        lease: 7,
        ttl: 2,
        call_ns: 0,
        return_ns: Some(S / 10),
        granted_ttl: Some(2),
        error: None,
    });
    b.h.keepalives.push(LeaseKeepAlive {
        client: 0,
        member: Some(0),
        lease: 7,
        call_ns: S,
        return_ns: S + S / 10,
        ttl: 2,
    });
    b.op(
        0,
        S / 10,
        Some(S / 10 + 10),
        lput("a", "1", 7),
        put_ok(2, None),
    )
    .op(
        0,
        S / 5,
        Some(S / 5 + 10),
        lput("b", "2", 7),
        put_ok(3, None),
    );
    b
}

fn all() -> Request {
    Request::Range(RangeRequest {
        key: "a".into(),
        range_end: "c".into(),
        ..RangeRequest::default()
    })
}

#[test]
fn a_revocation_deletes_every_key_of_its_lease_at_one_revision() {
    let mut s = Store::new();
    s.apply(&lput("a", "1", 7)).unwrap();
    s.apply(&lput("b", "2", 7)).unwrap();
    s.apply(&put("c", "3")).unwrap();
    let keys = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let r = s
        .apply(&Request::LeaseRevoke(LeaseRevokeRequest { id: 7, keys }))
        .unwrap();
    assert_eq!(r.header_revision(), 5);
    assert_eq!(s.events(5).len(), 2);
    assert!(s.kv_at("a", 5).is_none() && s.kv_at("b", 5).is_none());
    assert!(s.kv_at("c", 5).is_some());
    // Over: a second revocation or a put naming it fails, and changes nothing.
    assert_eq!(s.apply(&revoke(7)), Err(StoreError::LeaseNotFound));
    assert_eq!(s.apply(&lput("d", "4", 7)), Err(StoreError::LeaseNotFound));
    assert_eq!(s.rev, 5);
    // A lease with no keys left ends without a new revision.
    let r = s
        .apply(&Request::LeaseRevoke(LeaseRevokeRequest {
            id: 8,
            keys: vec!["a".into()],
        }))
        .unwrap();
    assert_eq!(r.header_revision(), 5);
}

#[test]
fn an_expiry_after_its_ttl_passes_and_is_counted() {
    let mut b = lease_base();
    // Both keys seen gone at revision 4, which no client wrote, at 3.5 s.
    b.op(
        1,
        3 * S + S / 2,
        Some(3 * S + S / 2 + 10),
        all(),
        get_ok(4, vec![]),
    );
    let r = b.check();
    assert_eq!(r.verdict, V3Verdict::Ok, "{}", r.render());
    assert_eq!((r.leases.expired, r.leases.keys_deleted), (1, 2));
}

#[test]
fn a_key_gone_before_its_lease_could_expire_fails() {
    let mut b = lease_base();
    // Seen gone at 2.5 s: the KeepAlive at 1 s kept the lease to 3 s at least.
    b.op(
        1,
        2 * S + S / 2,
        Some(2 * S + S / 2 + 10),
        all(),
        get_ok(4, vec![]),
    );
    fails(
        &b,
        ViolationKind::UnexplainedRevision,
        "could not expire before 3.000 s",
    );
}

#[test]
fn a_lease_end_in_two_revisions_fails() {
    let mut b = lease_base();
    // a gone at 4, b at 5: one lease end deletes both at one revision.
    b.op(
        1,
        4 * S,
        Some(4 * S + 10),
        all(),
        get_ok(4, vec![lkv("b", "2", 3, 3, 7)]),
    )
    .op(1, 5 * S, Some(5 * S + 10), all(), get_ok(5, vec![]));
    let r = b.check();
    assert_eq!(r.verdict, V3Verdict::Violations, "{}", r.render());
}

#[test]
fn deleted_lease_keys_never_come_back() {
    let mut b = lease_base();
    b.op(1, 4 * S, Some(4 * S + 10), all(), get_ok(4, vec![]))
        .op(
            1,
            5 * S,
            Some(5 * S + 10),
            all(),
            get_ok(4, vec![lkv("a", "1", 2, 2, 7), lkv("b", "2", 3, 3, 7)]),
        );
    let r = b.check();
    assert_eq!(r.verdict, V3Verdict::Violations, "{}", r.render());
}

#[test]
fn an_acknowledged_revocation_makes_its_revision() {
    let mut b = lease_base();
    b.op(
        2,
        S / 2,
        Some(S / 2 + 10),
        revoke(7),
        Outcome::Ok(Response::LeaseRevoke(LeaseRevokeResponse {
            header_revision: 4,
        })),
    )
    .op(1, S, Some(S + 10), all(), get_ok(4, vec![]));
    let r = b.check();
    assert_eq!(r.verdict, V3Verdict::Ok, "{}", r.render());
    assert_eq!((r.leases.revoked, r.leases.expired), (1, 0));
    // Keys still there after the revocation returned: a violation.
    let mut b = lease_base();
    b.op(
        2,
        S / 2,
        Some(S / 2 + 10),
        revoke(7),
        Outcome::Ok(Response::LeaseRevoke(LeaseRevokeResponse {
            header_revision: 4,
        })),
    )
    .op(
        1,
        S,
        Some(S + 10),
        all(),
        get_ok(4, vec![lkv("a", "1", 2, 2, 7), lkv("b", "2", 3, 3, 7)]),
    );
    let r = b.check();
    assert_eq!(r.verdict, V3Verdict::Violations, "{}", r.render());
}

#[test]
fn a_prev_kv_below_a_compaction_may_be_left_out() {
    // Watch from 3 with prev_kv; compacted to 3 before the response: the event at 3 may
    // come without its previous kv (etcd reads it at 2, which is compacted away).
    let mut b = watch_base();
    b.h.watches[0].start_revision = 3;
    b.h.watch_responses.clear();
    b.wr(103, 5, true, vec![]);
    let e = vec![ev(EventType::Put, kv("a", "2", 2, 3, 2), None)];
    b.wr(104, 5, false, e);
    fails(
        &b,
        ViolationKind::Watch(WatchRule::PrevKv),
        "the previous kv was",
    );
    b.op(
        1,
        101,
        Some(102),
        compact(3),
        Outcome::Ok(Response::Compact(CompactResponse { header_revision: 5 })),
    );
    passes(&b);
}

/// disk-corruption seed 124: two indeterminate writes could fill a gap revision, a put
/// nobody saw (called last) and a delete. A NODELETE watcher covering the gap saw nothing
/// there, so only the delete fits; the search must not settle on the put and leave the
/// watch check to fail.
#[test]
fn a_watchers_silence_chooses_between_indeterminate_writes() {
    let silent = |filters: Vec<WatchFilter>| {
        let mut b = base();
        b.op(2, 41, None, del("a"), Outcome::Indeterminate)
            .op(3, 45, None, put("a", "x"), Outcome::Indeterminate)
            .op(0, 70, Some(80), put("b", "1"), put_ok(5, None));
        b.h.watches.push(Watch {
            watcher: 7,
            client: 9,
            member: Some(0),
            call_ns: 1,
            key: "a".into(),
            range_end: "\0".into(),
            start_revision: 2,
            prev_kv: false,
            filters,
        });
        b.wr(
            90,
            5,
            false,
            vec![
                ev(EventType::Put, kv("a", "1", 2, 2, 1), None),
                ev(EventType::Put, kv("a", "2", 2, 3, 2), None),
                ev(EventType::Put, kv("b", "1", 5, 5, 1), None),
            ],
        );
        b
    };
    let b = silent(vec![WatchFilter::Nodelete]);
    let r = b.check();
    assert_eq!(r.verdict, V3Verdict::Ok, "{}", r.render());
    assert!(r.made_by.contains(&(4, 3)), "{:?}", r.made_by);
    // Without the filter the watcher should have seen either write: the search falls
    // back to ignoring its silence, and the watch check names the event it missed.
    fails(
        &silent(vec![]),
        ViolationKind::Watch(WatchRule::Reliable),
        "missed Put \"a\"=\"x\" (rev 4",
    );
}
