//! Watch guarantees, after etcd's robustness rules, checked against the operation history:
//!
//! 1. a watcher's events arrive in strictly increasing index order (no duplicates);
//! 2. every event matches a write in the history (same key, index and value; an
//!    indeterminate write may be the one that matches), and no expire event appears for a key
//!    under the watched prefix (the workload gives no key a TTL it could outlive: refreshes
//!    set a day);
//! 3. no gaps: a watch from waitIndex N gets the first matching acknowledged write at or
//!    after N, and between two consecutive events no acknowledged write under the watched
//!    prefix is skipped — so by the time a watch completes, nothing it should have seen is
//!    missing;
//! 5. TTL refreshes (`refresh`) are never delivered: as etcd 3.4 does (checked against its
//!    binary: a refresh takes an index, and the next event's prevNode carries it, but no
//!    watcher of the key or of a prefix above it gets an event, with or without a
//!    waitIndex at or below it), an event at a refresh's index is a violation, and a
//!    refresh is not a write a watcher may skip;
//! 4. every event lies within what the watcher watched: its key is the watched key or under
//!    it as a directory (`/k/a/1` is under `/k/a`; `/k/ab/1` and `/kx/1` share the string
//!    prefix but are not).
//!
//! Also checked here, across keys: etcd's index strictly increases in real-time order across
//! acknowledged writes (a fact the per-key split of the linearizability check cannot see).

use std::collections::BTreeMap;

use crate::import::{NativeOp, WatchLine};

/// Operations that take an index when they succeed (`refresh` too: it takes one without
/// an event for watchers).
pub(crate) const WRITES: &[&str] = &[
    "refresh",
    "set",
    "create",
    "update",
    "cas_value",
    "cas_index",
    "delete",
    "cad",
    "mkdir",
    "rmdir",
    "rdelete",
];

pub(crate) fn acked_index(o: &NativeOp) -> Option<u64> {
    (o.outcome.get("ok").and_then(|b| b.as_bool()) == Some(true))
        .then(|| o.outcome.get("index").and_then(|i| i.as_u64()))
        .flatten()
}

pub(crate) fn is_delete(f: &str) -> bool {
    matches!(f, "delete" | "cad" | "rmdir" | "rdelete")
}

/// Acknowledged writes by index; a violation if two share one.
pub(crate) fn writes_by_index(ops: &[NativeOp], out: &mut Vec<String>) -> BTreeMap<u64, usize> {
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

/// Whether `key` is the watched key `prefix` or lies under it as a directory.
pub fn under(prefix: &str, key: &str) -> bool {
    let dir = prefix.trim_end_matches('/');
    key == prefix
        || (key.len() > dir.len() && key.starts_with(dir) && key[dir.len()..].starts_with('/'))
}

/// Check every watcher's events. Each watch line names the key its watcher watched
/// (recursively); `default_prefix` stands in for lines that do not (older histories).
pub fn check_watches(ops: &[NativeOp], watches: &[WatchLine], default_prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let by_index = writes_by_index(ops, &mut Vec::new());
    let mut by_watcher: BTreeMap<u64, Vec<&WatchLine>> = BTreeMap::new();
    for w in watches {
        by_watcher.entry(w.watcher).or_default().push(w);
    }
    for (wid, events) in by_watcher {
        let mut last: Option<u64> = None;
        let prefix = events
            .first()
            .and_then(|e| e.prefix.as_deref())
            .unwrap_or(default_prefix);
        let under = |k: &str| under(prefix, k);
        for e in events {
            if e.prefix.as_deref().is_some_and(|p| p != prefix) {
                out.push(format!(
                    "watcher {wid}: event at index {} says it watched {:?}, its first said {prefix:?}",
                    e.index,
                    e.prefix.as_deref().unwrap_or_default()
                ));
            }
            if e.action == "cleared" {
                last = Some(e.index);
                continue;
            }
            // 4. the event lies within the watched key.
            if !under(&e.key) {
                out.push(format!(
                    "watcher {wid}: event {} {} at index {} is outside the watched {prefix:?}",
                    e.action, e.key, e.index
                ));
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
                            "watcher {wid}: expire event for {} at {}, a key with no TTL that could run out",
                            e.key, e.index
                        ));
                    }
                    true
                }
                action => {
                    let del = action == "delete" || action == "compareAndDelete";
                    match by_index.get(&e.index).map(|i| &ops[*i]) {
                        Some(o) if o.f == "refresh" => {
                            out.push(format!(
                                "watcher {wid}: event {} {} at index {} is op {}'s TTL refresh, which etcd never sends to watchers",
                                e.action, e.key, e.index, o.id
                            ));
                            true
                        }
                        Some(o) => {
                            o.key == e.key && is_delete(&o.f) == del && (del || o.value == e.value)
                        }
                        // An indeterminate write may have taken effect at this index.
                        None => ops.iter().any(|o| {
                            WRITES.contains(&o.f.as_str())
                                && o.f != "refresh"
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
                    if under(&ops[*i].key) && ops[*i].f != "refresh" {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn history(watch_prefix: Option<&str>, events: &[(&str, u64)]) -> crate::import::Native {
        let mut lines = Vec::new();
        for (i, (key, index)) in events.iter().enumerate() {
            let v = format!("c{i}-1");
            lines.push(
                json!({"type": "op", "id": i, "client": i, "f": "set", "key": key,
                "value": v, "prev_value": null, "prev_index": null, "invoke_ns": i * 10,
                "return_ns": i * 10 + 5, "outcome": {"ok": true, "value": v, "index": index,
                "prev_value": null, "prev_index": null}, "member": 0, "etcd_index": null}),
            );
        }
        for (i, (key, index)) in events.iter().enumerate() {
            if !watch_prefix.is_none_or(|p| under(p, key)) {
                continue;
            }
            let mut w = json!({"type": "watch", "watcher": 0, "at_ns": i * 10 + 6,
                "action": "set", "key": key, "index": index, "value": format!("c{i}-1"),
                "wait_index": if i == 0 { 1 } else { events[i - 1].1 + 1 }});
            if let Some(p) = watch_prefix {
                w["prefix"] = json!(p);
            }
            lines.push(w);
        }
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        crate::import::native(&text.join("\n")).expect("history reads")
    }

    #[test]
    fn under_means_the_key_or_below_it_as_a_directory() {
        assert!(under("/k", "/k"));
        assert!(under("/k", "/k/a/1"));
        assert!(under("/k/", "/k/a/1"));
        assert!(under("/k/a", "/k/a/1"));
        assert!(!under("/k", "/kx/3"));
        assert!(!under("/k/a", "/k/ab/1"));
        assert!(!under("/k/a", "/k/b/2"));
    }

    #[test]
    fn events_within_each_watchers_prefix_pass() {
        let writes = [("/k/a/1", 2), ("/k/ab/2", 3), ("/kx/3", 4), ("/k/a/4", 5)];
        for p in ["/k", "/k/a", "/k/ab", "/kx"] {
            // The watcher got exactly the events under its prefix.
            let h = history(Some(p), &writes);
            let v = check_watches(&h.all_ops, &h.watches, "/nowhere");
            assert!(v.is_empty(), "{p}: {v:?}");
        }
    }

    #[test]
    fn an_event_outside_the_watched_prefix_fails() {
        let writes = [("/k/a/1", 2), ("/k/ab/2", 3), ("/kx/3", 4), ("/k/a/4", 5)];
        // Every write's event delivered to a watcher of /k/a: /k/ab/2 and /kx/3 share the
        // string prefix but are not under the directory.
        let mut h = history(None, &writes);
        for w in &mut h.watches {
            w.prefix = Some("/k/a".into());
        }
        let v = check_watches(&h.all_ops, &h.watches, "/k");
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            v[0].contains("event set /k/ab/2 at index 3 is outside the watched \"/k/a\""),
            "{v:?}"
        );
        assert!(
            v[1].contains("event set /kx/3 at index 4 is outside"),
            "{v:?}"
        );
        // Without a prefix on the lines, the default stands in: /kx/3 is outside /k.
        let h = history(None, &writes);
        let v = check_watches(&h.all_ops, &h.watches, "/k");
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("/kx/3"), "{v:?}");
    }

    /// Writes, the third a TTL refresh of the first key (index 4), and a watcher of `/k/a`
    /// that got the writes' events only, as etcd delivers them.
    fn with_a_refresh() -> crate::import::Native {
        let writes = [("/k/a/1", 2), ("/k/a/4", 3), ("/k/a/1", 4), ("/k/a/4", 5)];
        let mut h = history(Some("/k/a"), &writes);
        let r = &mut h.all_ops[2];
        r.f = "refresh".into();
        r.value = None;
        r.outcome = json!({"ok": true, "value": "c0-1", "index": 4, "prev_value": "c0-1",
            "prev_index": 2});
        h.watches.remove(2);
        // After its event at 3 the watcher asked from 4: the refresh's index.
        h.watches[2].wait_index = 4;
        h
    }

    #[test]
    fn a_refresh_under_the_watched_prefix_has_no_event_and_is_not_missed() {
        let h = with_a_refresh();
        assert_eq!(h.watches.len(), 3);
        let v = check_watches(&h.all_ops, &h.watches, "/k");
        assert!(v.is_empty(), "{v:?}");
        // The refresh still takes its place in the index order.
        assert!(check_index_order(&h.all_ops).is_empty());
    }

    #[test]
    fn a_refresh_delivered_to_a_watcher_fails() {
        let mut h = with_a_refresh();
        // The node sent the refresh as an update event.
        let mut e = h.watches[1].clone();
        e.action = "update".into();
        e.key = "/k/a/1".into();
        e.index = 4;
        e.value = Some("c0-1".into());
        e.wait_index = 4;
        h.watches.insert(2, e);
        h.watches[3].wait_index = 5;
        let v = check_watches(&h.all_ops, &h.watches, "/k");
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("event update /k/a/1 at index 4 is op 2's TTL refresh"),
            "{v:?}"
        );
    }

    #[test]
    fn a_skipped_write_under_the_watchers_own_prefix_fails() {
        let writes = [("/k/a/1", 2), ("/k/ab/2", 3), ("/k/a/4", 5)];
        let mut h = history(Some("/k/a"), &writes);
        // Drop the event of /k/a/1 (index 2); the next one asked from waitIndex 1.
        h.watches.remove(0);
        h.watches[0].wait_index = 1;
        let v = check_watches(&h.all_ops, &h.watches, "/k");
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("skipped op 0 (set /k/a/1 at index 2)"),
            "{v:?}"
        );
    }
}
