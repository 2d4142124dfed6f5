//! Reads checked against the writes and against the index each member answered with
//! (`X-Etcd-Index`), serializable (`get`) reads included, which the linearizability check
//! leaves out (etcd v2 promises them no linearizability, but it does promise these):
//!
//! 1. per member, the index never goes back: a read sent to a member and invoked after an
//!    earlier answer of that member returned reports an `X-Etcd-Index` at least that
//!    answer's (a read's `X-Etcd-Index`, an acknowledged write's modifiedIndex: etcd answers
//!    a write only after the member applied it). A pair is compared only when no fault that
//!    may have restarted the member (any kind but those that leave its process running)
//!    overlaps the time from the earlier answer's invocation to the later one's return: a
//!    restarted member's index is only as new as its disk;
//! 2. a read's answer is explained by the writes: the value read was written to that key by
//!    a write of the history (acknowledged or indeterminate; values are unique per write),
//!    with the modifiedIndex read if that write was acknowledged, or by a TTL refresh of the
//!    key that kept that value (acknowledged at that index, or indeterminate; a refresh
//!    gives the key a new modifiedIndex, not a new value); the modifiedIndex is at
//!    most `X-Etcd-Index`, and no acknowledged write to the key has an index in
//!    (modifiedIndex, `X-Etcd-Index`] (it would have been visible). A key read as missing
//!    (error 100) at index x had no acknowledged create, set, update or swap at or below x
//!    left standing: one is flagged only when no acknowledged delete of the key lies between
//!    it and x and no indeterminate delete of the key was invoked before the read returned;
//! 3. a quorum read invoked after an acknowledged write returned reports an `X-Etcd-Index`
//!    at least that write's index.
//!
//! Histories without `member` or `etcd_index` (written before they were recorded) get only
//! the checks that do not need them.

use std::collections::BTreeMap;

use crate::import::{FaultLine, NativeOp};
use crate::watch::{acked_index, is_delete, WRITES};

/// Fault kinds that leave every member's process, and so its in-memory index, in place.
/// Any other kind (crash, power loss, replacement, rolling restart, a failpoint crash, a
/// kind this list does not know) may restart its targets.
pub const KEEP_PROCESS: &[&str] = &[
    "isolate",
    "minority-majority",
    "bridge",
    "ring",
    "one-way",
    "pause",
    "clock-skew",
    "flaky",
    "slow-disk",
    "failpoint-pause",
];

/// What the reads check found.
#[derive(Debug, Default)]
pub struct ReadsReport {
    /// Violations, one line each.
    pub violations: Vec<String>,
    /// Answered serializable reads.
    pub serializable: usize,
    /// Answered quorum reads.
    pub quorum: usize,
    /// Reads compared with an earlier answer of the same member (check 1).
    pub ordered_pairs: usize,
}

fn is_read(f: &str) -> bool {
    f == "get" || f == "qget"
}

fn ok(o: &NativeOp) -> bool {
    o.outcome.get("ok").and_then(|b| b.as_bool()) == Some(true)
}

fn error_code(o: &NativeOp) -> Option<u64> {
    (o.outcome.get("ok").and_then(|b| b.as_bool()) == Some(false))
        .then(|| o.outcome.get("error").and_then(|c| c.as_u64()))
        .flatten()
}

fn indeterminate(o: &NativeOp) -> bool {
    o.outcome.as_str() == Some("indeterminate")
}

/// An answered read with its `X-Etcd-Index`: ok, or the key missing (100).
fn read_index(o: &NativeOp) -> Option<u64> {
    if !is_read(&o.f) || o.return_ns.is_none() || !(ok(o) || error_code(o) == Some(100)) {
        return None;
    }
    o.etcd_index
}

/// The windows of faults that may have restarted `member`, sorted by start.
fn restart_windows(faults: &[FaultLine], member: usize) -> Vec<(u64, u64)> {
    let mut w: Vec<(u64, u64)> = faults
        .iter()
        .filter(|f| !KEEP_PROCESS.contains(&f.kind.as_str()))
        .filter(|f| f.targets.is_empty() || f.targets.contains(&member))
        .map(|f| (f.start_ns, f.end_ns.max(f.start_ns)))
        .collect();
    w.sort();
    w
}

/// The stretch between restart windows that `[from, to]` lies in, or None if it overlaps one.
fn segment(windows: &[(u64, u64)], from: u64, to: u64) -> Option<usize> {
    if windows.iter().any(|&(s, e)| s <= to && e >= from) {
        return None;
    }
    Some(windows.iter().filter(|&&(_, e)| e < from).count())
}

/// Check 1: per member, per stretch without a restart, answers' indexes in real-time order.
fn member_order(ops: &[NativeOp], faults: &[FaultLine], r: &mut ReadsReport) {
    // (member, segment) -> answers (return, index, id) and reads (invoke, index, id).
    type Answers = Vec<(u64, u64, u64)>;
    let mut groups: BTreeMap<(usize, usize), (Answers, Answers)> = BTreeMap::new();
    let mut windows: BTreeMap<usize, Vec<(u64, u64)>> = BTreeMap::new();
    for o in ops {
        let (Some(member), Some(ret)) = (o.member, o.return_ns) else {
            continue;
        };
        let index = match read_index(o) {
            Some(x) => Some(x),
            None if WRITES.contains(&o.f.as_str()) => acked_index(o),
            None => None,
        };
        let Some(index) = index else { continue };
        let w = windows
            .entry(member)
            .or_insert_with(|| restart_windows(faults, member));
        let Some(seg) = segment(w, o.invoke_ns, ret) else {
            continue;
        };
        let g = groups.entry((member, seg)).or_default();
        g.0.push((ret, index, o.id));
        if is_read(&o.f) {
            g.1.push((o.invoke_ns, index, o.id));
        }
    }
    for ((member, _), (mut answers, reads)) in groups {
        answers.sort();
        // Prefix maxima of the index over answers in return order.
        let mut best: Vec<(u64, u64)> = Vec::with_capacity(answers.len());
        for &(_, index, id) in &answers {
            let m = match best.last() {
                Some(&(bi, bid)) if bi >= index => (bi, bid),
                _ => (index, id),
            };
            best.push(m);
        }
        for (invoke, index, id) in reads {
            let n = answers.partition_point(|a| a.0 < invoke);
            if n == 0 {
                continue;
            }
            r.ordered_pairs += 1;
            let (bi, bid) = best[n - 1];
            if bi > index {
                r.violations.push(format!(
                    "member {member} answered read op {id} with X-Etcd-Index {index}, after it had answered op {bid} at index {bi} (op {bid} returned before op {id} was invoked, no restart between)"
                ));
            }
        }
    }
}

/// Check 2: every answered read explained by the writes.
fn explained(ops: &[NativeOp], r: &mut ReadsReport) {
    // Per key: acknowledged writes by index (id, is_delete), and every write that may have
    // taken effect.
    let mut acked: BTreeMap<&str, BTreeMap<u64, (u64, bool)>> = BTreeMap::new();
    let mut maybe: BTreeMap<&str, Vec<&NativeOp>> = BTreeMap::new();
    for o in ops.iter().filter(|o| WRITES.contains(&o.f.as_str())) {
        if let Some(i) = acked_index(o) {
            acked
                .entry(&o.key)
                .or_default()
                .insert(i, (o.id, is_delete(&o.f)));
            maybe.entry(&o.key).or_default().push(o);
        } else if indeterminate(o) {
            maybe.entry(&o.key).or_default().push(o);
        }
    }
    let empty = BTreeMap::new();
    for o in ops
        .iter()
        .filter(|o| is_read(&o.f) && o.return_ns.is_some())
    {
        let x = o.etcd_index;
        let writes = acked.get(o.key.as_str()).unwrap_or(&empty);
        if ok(o) {
            let Some(m) = o.outcome.get("index").and_then(|i| i.as_u64()) else {
                continue;
            };
            let Some(v) = o.outcome.get("value").and_then(|v| v.as_str()) else {
                continue; // a directory: the workload reads keys only
            };
            let same: Vec<&&NativeOp> = maybe
                .get(o.key.as_str())
                .map(|w| {
                    w.iter()
                        .filter(|w| !is_delete(&w.f) && w.value.as_deref() == Some(v))
                        .collect()
                })
                .unwrap_or_default();
            if same.is_empty() {
                r.violations.push(format!(
                    "read op {id} of {key} returned {v:?} (index {m}), which no write of the history wrote to {key}",
                    id = o.id,
                    key = o.key
                ));
            } else if !same.iter().any(|w| acked_index(w).is_none_or(|i| i == m))
                && !refreshed(maybe.get(o.key.as_str()), v, m)
            {
                let w = same[0];
                r.violations.push(format!(
                    "read op {} of {} returned {v:?} with modifiedIndex {m}, but op {} wrote it at index {}",
                    o.id,
                    o.key,
                    w.id,
                    acked_index(w).unwrap_or(0)
                ));
            }
            let Some(x) = x else { continue };
            if m > x {
                r.violations.push(format!(
                    "read op {} of {} returned modifiedIndex {m} above its X-Etcd-Index {x}",
                    o.id, o.key
                ));
            } else if let Some((i, (wid, _))) = writes.range(m + 1..x + 1).next() {
                r.violations.push(format!(
                    "read op {} of {} at X-Etcd-Index {x} returned {v:?} (index {m}), but acknowledged op {wid} wrote the key at index {i}",
                    o.id, o.key
                ));
            }
        } else if error_code(o) == Some(100) {
            let Some(x) = x else { continue };
            let Some((&i, &(wid, _))) = writes.range(..=x).rev().find(|(_, (_, del))| !del) else {
                continue;
            };
            let deleted_after = writes.range(i + 1..x + 1).any(|(_, (_, del))| *del);
            let ret = o.return_ns.unwrap_or(u64::MAX);
            let maybe_deleted = maybe.get(o.key.as_str()).is_some_and(|w| {
                w.iter()
                    .any(|w| is_delete(&w.f) && indeterminate(w) && w.invoke_ns < ret)
            });
            if !deleted_after && !maybe_deleted {
                r.violations.push(format!(
                    "read op {} found {} missing at X-Etcd-Index {x}, but acknowledged op {wid} wrote it at index {i} and nothing deleted it before {x}",
                    o.id, o.key
                ));
            }
        }
    }
}

/// Whether a TTL refresh among a key's writes may have given value `v` modifiedIndex `m`:
/// one acknowledged at `m` that kept `v`, or an indeterminate one.
fn refreshed(writes: Option<&Vec<&NativeOp>>, v: &str, m: u64) -> bool {
    writes.is_some_and(|w| {
        w.iter().filter(|w| w.f == "refresh").any(|w| {
            indeterminate(w)
                || (acked_index(w) == Some(m)
                    && w.outcome.get("value").and_then(|x| x.as_str()) == Some(v))
        })
    })
}

/// Check 3: quorum reads see every write acknowledged before they were invoked.
fn quorum_after_writes(ops: &[NativeOp], r: &mut ReadsReport) {
    let mut writes: Vec<(u64, u64, u64)> = ops
        .iter()
        .filter(|o| WRITES.contains(&o.f.as_str()))
        .filter_map(|o| Some((o.return_ns?, acked_index(o)?, o.id)))
        .collect();
    writes.sort();
    let mut best: Vec<(u64, u64)> = Vec::with_capacity(writes.len());
    for &(_, index, id) in &writes {
        let m = match best.last() {
            Some(&(bi, bid)) if bi >= index => (bi, bid),
            _ => (index, id),
        };
        best.push(m);
    }
    for o in ops.iter().filter(|o| o.f == "qget") {
        let Some(x) = read_index(o) else { continue };
        let n = writes.partition_point(|w| w.0 < o.invoke_ns);
        if n == 0 {
            continue;
        }
        let (bi, bid) = best[n - 1];
        if x < bi {
            r.violations.push(format!(
                "quorum read op {} answered with X-Etcd-Index {x}, but op {bid} had been acknowledged at index {bi} before it was invoked",
                o.id
            ));
        }
    }
}

/// Run the three checks over a history's operations and faults.
pub fn check_reads(ops: &[NativeOp], faults: &[FaultLine]) -> ReadsReport {
    let mut r = ReadsReport::default();
    for o in ops
        .iter()
        .filter(|o| o.return_ns.is_some() && (ok(o) || error_code(o) == Some(100)))
    {
        match o.f.as_str() {
            "get" => r.serializable += 1,
            "qget" => r.quorum += 1,
            _ => {}
        }
    }
    member_order(ops, faults, &mut r);
    explained(ops, &mut r);
    quorum_after_writes(ops, &mut r);
    r
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use serde_json::{json, Value};

    use super::*;

    /// An op line: `f` on `key` by `client`, sent to `member`, from `t` to `t + 5` (None:
    /// indeterminate), with its outcome and (reads) X-Etcd-Index.
    #[allow(clippy::too_many_arguments)]
    fn op(
        id: u64,
        member: usize,
        f: &str,
        key: &str,
        value: Option<&str>,
        t: u64,
        ret: Option<u64>,
        outcome: Value,
        x: Option<u64>,
    ) -> String {
        json!({"type": "op", "id": id, "client": id, "f": f, "key": key, "value": value,
            "prev_value": null, "prev_index": null, "invoke_ns": t, "return_ns": ret,
            "outcome": outcome, "member": member, "etcd_index": x})
        .to_string()
    }

    fn okv(v: &str, index: u64) -> Value {
        json!({"ok": true, "value": v, "index": index, "prev_value": null, "prev_index": null})
    }

    fn okdel(index: u64) -> Value {
        json!({"ok": true, "value": null, "index": index, "prev_value": null, "prev_index": null})
    }

    fn missing() -> Value {
        json!({"ok": false, "error": 100})
    }

    fn check(lines: &[String]) -> ReadsReport {
        let text = lines.join("\n");
        let h = crate::import::native(&text).expect("history reads");
        check_reads(&h.all_ops, &h.faults)
    }

    /// A clean history: a write acknowledged by member 0, serializable reads on members 0
    /// and 1 (member 1 lagging, but never going back), a quorum read, a miss before the
    /// create and after the delete.
    fn clean() -> Vec<String> {
        vec![
            op(0, 1, "get", "/k/a/1", None, 0, Some(5), missing(), Some(3)),
            op(
                1,
                0,
                "create",
                "/k/a/1",
                Some("c1-1"),
                10,
                Some(15),
                okv("c1-1", 4),
                None,
            ),
            op(
                2,
                0,
                "get",
                "/k/a/1",
                None,
                20,
                Some(25),
                okv("c1-1", 4),
                Some(4),
            ),
            op(
                3,
                1,
                "get",
                "/k/a/1",
                None,
                20,
                Some(25),
                missing(),
                Some(3),
            ),
            op(
                4,
                1,
                "get",
                "/k/a/1",
                None,
                30,
                Some(35),
                okv("c1-1", 4),
                Some(4),
            ),
            op(
                5,
                0,
                "set",
                "/k/a/1",
                Some("c5-1"),
                40,
                Some(45),
                okv("c5-1", 5),
                None,
            ),
            op(
                6,
                2,
                "qget",
                "/k/a/1",
                None,
                50,
                Some(55),
                okv("c5-1", 5),
                Some(5),
            ),
            op(
                7,
                1,
                "get",
                "/k/a/1",
                None,
                50,
                Some(55),
                okv("c1-1", 4),
                Some(4),
            ),
            op(8, 2, "delete", "/k/a/1", None, 60, Some(65), okdel(6), None),
            op(
                9,
                2,
                "get",
                "/k/a/1",
                None,
                70,
                Some(75),
                missing(),
                Some(6),
            ),
            op(
                10,
                1,
                "get",
                "/k/a/1",
                None,
                70,
                Some(75),
                okv("c5-1", 5),
                Some(5),
            ),
        ]
    }

    #[test]
    fn a_clean_history_passes() {
        let r = check(&clean());
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.serializable, r.quorum), (7, 1));
        assert!(r.ordered_pairs >= 5, "{}", r.ordered_pairs);
    }

    #[test]
    fn a_member_whose_index_goes_back_fails_unless_it_restarted_between() {
        let mut h = clean();
        // Member 1 answered at index 5 (op 10, returned at 75); a later read there at 4.
        h.push(op(
            11,
            1,
            "get",
            "/k/a/1",
            None,
            80,
            Some(85),
            okv("c1-1", 4),
            Some(4),
        ));
        let r = check(&h);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("member 1 answered read op 11 with X-Etcd-Index 4, after it had answered op 10 at index 5"), "{:?}", r.violations);
        // A crash of member 1 between the two: the pair is not compared.
        let mut h2 = h.clone();
        h2.push(json!({"type": "fault", "kind": "crash", "targets": [1], "start_ns": 76, "end_ns": 78, "detail": ""}).to_string());
        let r = check(&h2);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        // A partition of member 1 does not restart it: still compared.
        let mut h3 = h.clone();
        h3.push(json!({"type": "fault", "kind": "isolate", "targets": [1], "start_ns": 76, "end_ns": 78, "detail": ""}).to_string());
        assert_eq!(check(&h3).violations.len(), 1);
        // A crash of another member does not excuse member 1.
        let mut h4 = h;
        h4.push(json!({"type": "fault", "kind": "crash", "targets": [0], "start_ns": 76, "end_ns": 78, "detail": ""}).to_string());
        assert_eq!(check(&h4).violations.len(), 1);
    }

    #[test]
    fn a_member_answers_at_least_the_index_of_a_write_it_acknowledged() {
        let mut h = clean();
        // Member 0 acknowledged op 5 at index 5; a later serializable read there at 4.
        h.push(op(
            11,
            0,
            "get",
            "/k/b/2",
            None,
            80,
            Some(85),
            missing(),
            Some(4),
        ));
        let r = check(&h);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(
            r.violations[0].contains("after it had answered op 5 at index 5"),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn a_refresh_gives_the_value_a_new_index_that_reads_must_see() {
        let mut h = clean();
        // /k/b/2 created at 7, then refreshed at 8 (value kept, new modifiedIndex).
        h.push(op(
            11,
            0,
            "create",
            "/k/b/2",
            Some("c11-1"),
            80,
            Some(85),
            okv("c11-1", 7),
            None,
        ));
        h.push(op(
            12,
            0,
            "refresh",
            "/k/b/2",
            None,
            90,
            Some(95),
            okv("c11-1", 8),
            None,
        ));
        // Read at the refresh's index: explained by the refresh.
        h.push(op(
            13,
            0,
            "get",
            "/k/b/2",
            None,
            100,
            Some(105),
            okv("c11-1", 8),
            Some(8),
        ));
        let r = check(&h);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        // A read at X-Etcd-Index 8 that still shows index 7 missed the refresh.
        h.push(op(
            14,
            1,
            "get",
            "/k/b/2",
            None,
            100,
            Some(105),
            okv("c11-1", 7),
            Some(8),
        ));
        let r = check(&h);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(
            r.violations[0].contains("but acknowledged op 12 wrote the key at index 8"),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn a_value_no_write_wrote_fails() {
        let mut h = clean();
        h.push(op(
            11,
            3,
            "get",
            "/k/a/1",
            None,
            80,
            Some(85),
            okv("c9-9", 5),
            Some(5),
        ));
        // Written, but to another key.
        h.push(op(
            12,
            2,
            "get",
            "/k/b/2",
            None,
            80,
            Some(85),
            okv("c5-1", 5),
            Some(6),
        ));
        let r = check(&h);
        assert_eq!(r.violations.len(), 2, "{:?}", r.violations);
        assert!(r
            .violations
            .iter()
            .all(|v| v.contains("which no write of the history wrote")));
        // An indeterminate write of that value explains it.
        h.push(op(
            13,
            0,
            "set",
            "/k/a/1",
            Some("c9-9"),
            60,
            None,
            json!("indeterminate"),
            None,
        ));
        h.push(op(
            14,
            0,
            "set",
            "/k/b/2",
            Some("c9-8"),
            60,
            None,
            json!("indeterminate"),
            None,
        ));
        let r = check(&h);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    }

    #[test]
    fn a_value_read_with_the_wrong_index_or_after_it_was_overwritten_fails() {
        let mut h = clean();
        // c1-1 was acknowledged at index 4, read as index 3 (from a member not seen before).
        h.push(op(
            11,
            3,
            "get",
            "/k/a/1",
            None,
            80,
            Some(85),
            okv("c1-1", 3),
            Some(3),
        ));
        let r = check(&h);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(
            r.violations[0].contains("but op 1 wrote it at index 4"),
            "{:?}",
            r.violations
        );
        // c1-1 at index 5: op 5's set at index 5 would have been visible.
        let mut h = clean();
        h.push(op(
            11,
            0,
            "get",
            "/k/a/1",
            None,
            48,
            Some(49),
            okv("c1-1", 4),
            Some(5),
        ));
        let r = check(&h);
        assert!(
            r.violations
                .iter()
                .any(|v| v.contains("but acknowledged op 5 wrote the key at index 5")),
            "{:?}",
            r.violations
        );
        // A modifiedIndex above the answer's index.
        let mut h = clean();
        h.push(op(
            11,
            1,
            "get",
            "/k/a/1",
            None,
            80,
            Some(85),
            okv("c5-1", 5),
            Some(4),
        ));
        let r = check(&h);
        assert!(
            r.violations
                .iter()
                .any(|v| v.contains("above its X-Etcd-Index 4")),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn a_key_read_missing_after_an_acknowledged_create_fails_unless_a_delete_may_explain_it() {
        let mut h = clean();
        // Missing at index 5 on member 2 (which has not answered before): op 5 set it at 5.
        h.push(op(
            11,
            2,
            "get",
            "/k/a/1",
            None,
            46,
            Some(49),
            missing(),
            Some(5),
        ));
        let r = check(&h);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(
            r.violations[0]
                .contains("found /k/a/1 missing at X-Etcd-Index 5, but acknowledged op 5"),
            "{:?}",
            r.violations
        );
        // An indeterminate delete invoked before the read returned may have removed it.
        let mut h2 = h.clone();
        h2.push(op(
            12,
            0,
            "delete",
            "/k/a/1",
            None,
            47,
            None,
            json!("indeterminate"),
            None,
        ));
        assert!(check(&h2).violations.is_empty());
        // One invoked after the read returned cannot have.
        let mut h3 = h;
        h3.push(op(
            12,
            0,
            "delete",
            "/k/a/1",
            None,
            50,
            None,
            json!("indeterminate"),
            None,
        ));
        assert_eq!(check(&h3).violations.len(), 1);
    }

    #[test]
    fn a_quorum_read_below_an_earlier_acknowledged_write_fails() {
        let mut h = clean();
        // Op 8 (index 6) returned at 65; a quorum read invoked at 66 on member 1 at index 5.
        h.push(op(
            11,
            1,
            "qget",
            "/k/b/2",
            None,
            66,
            Some(69),
            missing(),
            Some(5),
        ));
        let r = check(&h);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("quorum read op 11 answered with X-Etcd-Index 5, but op 8 had been acknowledged at index 6"), "{:?}", r.violations);
        // The same answer as a serializable read is fine (member 1 lags).
        let mut h = clean();
        h.push(op(
            11,
            1,
            "get",
            "/k/b/2",
            None,
            66,
            Some(69),
            missing(),
            Some(5),
        ));
        assert!(check(&h).violations.is_empty());
    }

    #[test]
    fn histories_without_members_or_indexes_get_the_value_check_only() {
        let lines: Vec<String> = clean()
            .into_iter()
            .map(|l| {
                let mut v: Value = serde_json::from_str(&l).unwrap();
                v.as_object_mut().unwrap().remove("member");
                v.as_object_mut().unwrap().remove("etcd_index");
                v.to_string()
            })
            .collect();
        let r = check(&lines);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.ordered_pairs, 0);
    }

    /// A random history of a store whose members apply a shared log at their own pace (a
    /// member applies a write before acknowledging it, a quorum read catches its member up
    /// to the log's head first, and a restart may take a member back to a durable prefix)
    /// passes; one more serializable read answered below its member's last answer fails.
    #[test]
    fn random_member_lag_histories_pass_and_a_read_below_its_members_last_answer_fails() {
        for seed in 0..20u64 {
            println!("seed {seed}");
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let keys = ["/k/a/0", "/k/b/1", "/kx/2"];
            // The log: (key, Some(value) or None for a delete); store index = position + 1.
            let mut log: Vec<(usize, Option<String>)> = Vec::new();
            let mut applied = [0usize; 3];
            let mut lines = Vec::new();
            // Each member's last answer since its last restart: its index.
            let mut last_answer: [Option<usize>; 3] = [None; 3];
            let state = |log: &[(usize, Option<String>)], upto: usize, k: usize| {
                log[..upto]
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(_, (key, _))| *key == k)
                    .and_then(|(i, (_, v))| v.clone().map(|v| (v, i as u64 + 1)))
            };
            for id in 0..300u64 {
                let t = id * 10;
                let m = rng.gen_range(0..3);
                let k = rng.gen_range(0..3);
                // Members catch up by a random amount.
                for a in applied.iter_mut() {
                    *a = (*a + rng.gen_range(0..3)).min(log.len());
                }
                match rng.gen_range(0..6) {
                    0 | 1 => {
                        let v = format!("c{id}-1");
                        log.push((k, Some(v.clone())));
                        applied[m] = log.len();
                        last_answer[m] = Some(log.len());
                        let out = okv(&v, log.len() as u64);
                        lines.push(op(
                            id,
                            m,
                            "set",
                            keys[k],
                            Some(&v),
                            t,
                            Some(t + 5),
                            out,
                            None,
                        ));
                    }
                    2 => {
                        if state(&log, log.len(), k).is_some() {
                            log.push((k, None));
                            applied[m] = log.len();
                            last_answer[m] = Some(log.len());
                            let out = okdel(log.len() as u64);
                            lines.push(op(
                                id,
                                m,
                                "delete",
                                keys[k],
                                None,
                                t,
                                Some(t + 5),
                                out,
                                None,
                            ));
                        }
                    }
                    3 if rng.gen_bool(0.1) => {
                        // A restart: the member comes back with a durable prefix.
                        applied[m] = rng.gen_range(0..=applied[m]);
                        last_answer[m] = None;
                        lines.push(json!({"type": "fault", "kind": "crash", "targets": [m], "start_ns": t, "end_ns": t + 1, "detail": ""}).to_string());
                    }
                    f => {
                        let quorum = f == 5;
                        if quorum {
                            applied[m] = log.len();
                        }
                        let x = applied[m];
                        let out = match state(&log, x, k) {
                            Some((v, i)) => okv(&v, i),
                            None => missing(),
                        };
                        let f = if quorum { "qget" } else { "get" };
                        lines.push(op(
                            id,
                            m,
                            f,
                            keys[k],
                            None,
                            t + 2,
                            Some(t + 5),
                            out,
                            Some(x as u64),
                        ));
                        last_answer[m] = Some(x);
                    }
                }
            }
            let r = check(&lines);
            assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
            assert!(r.serializable > 20 && r.quorum > 20, "seed {seed}");
            // One more read on a member that answered at y > 0 since its last restart,
            // answered at y - 1.
            let Some((m, y)) = (0..3)
                .filter_map(|m| last_answer[m].filter(|y| *y > 0).map(|y| (m, y)))
                .next()
            else {
                continue;
            };
            let t = 300 * 10;
            let x = y as u64 - 1;
            let out = match state(&log, x as usize, 0) {
                Some((v, i)) => okv(&v, i),
                None => missing(),
            };
            lines.push(op(
                300,
                m,
                "get",
                keys[0],
                None,
                t,
                Some(t + 5),
                out,
                Some(x),
            ));
            let r = check(&lines);
            assert_eq!(r.violations.len(), 1, "seed {seed}: {:?}", r.violations);
            assert!(
                r.violations[0].contains(&format!(
                    "member {m} answered read op 300 with X-Etcd-Index {x}"
                )),
                "seed {seed}: {:?}",
                r.violations
            );
        }
    }
}
