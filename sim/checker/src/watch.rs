//! Watch guarantees, after etcd's robustness rules, checked against the operation history:
//!
//! 1. a watcher's events arrive in strictly increasing index order (no duplicates);
//! 2. every event matches a write in the history (same key, index and value; an
//!    indeterminate write may be the one that matches), and no expire event appears for a key
//!    that was never given a TTL;
//! 3. no gaps: a watch from waitIndex N gets the first matching acknowledged write at or
//!    after N, and between two consecutive events no acknowledged write under the watched
//!    prefix is skipped — so by the time a watch completes, nothing it should have seen is
//!    missing.
//!
//! Also checked here, across keys: etcd's index strictly increases in real-time order across
//! acknowledged writes (a fact the per-key split of the linearizability check cannot see).

use std::collections::BTreeMap;

use crate::import::{NativeOp, WatchLine};

const WRITES: &[&str] = &[
    "set",
    "create",
    "update",
    "cas_value",
    "cas_index",
    "delete",
    "cad",
];

fn acked_index(o: &NativeOp) -> Option<u64> {
    (o.outcome.get("ok").and_then(|b| b.as_bool()) == Some(true))
        .then(|| o.outcome.get("index").and_then(|i| i.as_u64()))
        .flatten()
}

fn is_delete(f: &str) -> bool {
    f == "delete" || f == "cad"
}

/// Acknowledged writes by index; a violation if two share one.
fn writes_by_index(ops: &[NativeOp], out: &mut Vec<String>) -> BTreeMap<u64, usize> {
    let mut by = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        if !WRITES.contains(&o.f.as_str()) {
            continue;
        }
        if let Some(idx) = acked_index(o) {
            if let Some(prev) = by.insert(idx, i) {
                out.push(format!(
                    "ops {} and {} were both acknowledged with index {idx}",
                    ops[prev].id, o.id
                ));
            }
        }
    }
    by
}

/// etcd's index grows in real time: a write acknowledged before another was invoked has
/// the smaller index.
pub fn check_index_order(ops: &[NativeOp]) -> Vec<String> {
    let mut out = Vec::new();
    writes_by_index(ops, &mut out);
    let mut acked: Vec<(u64, u64, u64, u64)> = ops
        .iter()
        .filter(|o| WRITES.contains(&o.f.as_str()))
        .filter_map(|o| Some((o.invoke_ns, o.return_ns?, acked_index(o)?, o.id)))
        .collect();
    let mut by_return = acked.clone();
    by_return.sort_by_key(|a| a.1);
    acked.sort();
    let mut j = 0;
    let mut max_before: Option<(u64, u64)> = None; // (index, id)
    for (invoke, _, index, id) in &acked {
        while j < by_return.len() && by_return[j].1 < *invoke {
            if max_before.is_none_or(|(m, _)| by_return[j].2 > m) {
                max_before = Some((by_return[j].2, by_return[j].3));
            }
            j += 1;
        }
        if let Some((m, mid)) = max_before {
            if *index <= m {
                out.push(format!(
                    "op {id} (index {index}) was invoked after op {mid} (index {m}) was acknowledged, yet got a smaller index"
                ));
            }
        }
    }
    out
}

/// Check every watcher's events. `prefix` is the watched key prefix (recursive watches).
pub fn check_watches(ops: &[NativeOp], watches: &[WatchLine], prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let by_index = writes_by_index(ops, &mut Vec::new());
    let under =
        |k: &str| k == prefix || k.starts_with(&format!("{}/", prefix.trim_end_matches('/')));
    let mut by_watcher: BTreeMap<u64, Vec<&WatchLine>> = BTreeMap::new();
    for w in watches {
        by_watcher.entry(w.watcher).or_default().push(w);
    }
    for (wid, events) in by_watcher {
        let mut last: Option<u64> = None;
        for e in events {
            if e.action == "cleared" {
                last = Some(e.index);
                continue;
            }
            if last.is_some_and(|l| e.index <= l) {
                out.push(format!(
                    "watcher {wid}: event at index {} after index {} (duplicate or out of order)",
                    e.index,
                    last.unwrap_or(0)
                ));
            }
            if e.index < e.wait_index {
                out.push(format!(
                    "watcher {wid}: event at index {} for waitIndex {}",
                    e.index, e.wait_index
                ));
            }
            // 2. the event matches a write.
            let matched = match e.action.as_str() {
                "expire" => {
                    if under(&e.key) {
                        out.push(format!(
                            "watcher {wid}: expire event for {} at {}, a key that never had a TTL",
                            e.key, e.index
                        ));
                    }
                    true
                }
                action => {
                    let del = action == "delete" || action == "compareAndDelete";
                    match by_index.get(&e.index).map(|i| &ops[*i]) {
                        Some(o) => {
                            o.key == e.key && is_delete(&o.f) == del && (del || o.value == e.value)
                        }
                        // An indeterminate write may have taken effect at this index.
                        None => ops.iter().any(|o| {
                            WRITES.contains(&o.f.as_str())
                                && o.return_ns.is_none()
                                && o.key == e.key
                                && is_delete(&o.f) == del
                                && (del || o.value == e.value)
                        }),
                    }
                }
            };
            if !matched {
                out.push(format!(
                    "watcher {wid}: event {} {}={:?} at index {} matches no write in the history",
                    e.action, e.key, e.value, e.index
                ));
            }
            // 3. no acknowledged write under the prefix was skipped.
            let from = last
                .map(|l| l + 1)
                .unwrap_or(e.wait_index)
                .max(e.wait_index);
            if from < e.index {
                for (idx, i) in by_index.range(from..e.index) {
                    if under(&ops[*i].key) {
                        out.push(format!(
                            "watcher {wid}: skipped op {} ({} {} at index {idx}) between waitIndex {from} and the event at {}",
                            ops[*i].id, ops[*i].f, ops[*i].key, e.index
                        ));
                        break;
                    }
                }
            }
            last = Some(e.index);
        }
    }
    out
}
