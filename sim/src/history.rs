//! The run's history as JSON lines (format in docs/formats.md, "History JSON lines"):
//! operations with invoke/return times and outcomes, watch events, faults and leader changes,
//! in a deterministic order, so the same seed gives the same bytes.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::output::{Check, RunOutput};
use crate::scenario::Scenario;
use crate::workload::{OpKind, Outcome};

/// Version of the history format.
pub const HISTORY_VERSION: u32 = 1;

/// The name of an operation kind in the history.
pub fn kind_name(k: OpKind) -> &'static str {
    match k {
        OpKind::Get => "get",
        OpKind::QGet => "qget",
        OpKind::Set => "set",
        OpKind::Create => "create",
        OpKind::Update => "update",
        OpKind::CasValue => "cas_value",
        OpKind::CasIndex => "cas_index",
        OpKind::Delete => "delete",
        OpKind::Cad => "cad",
    }
}

/// Serialise a run's history.
pub fn to_jsonl(s: &Scenario, out: &RunOutput) -> Vec<u8> {
    let mut text = String::new();
    let line = |text: &mut String, v: serde_json::Value| {
        let _ = writeln!(text, "{v}");
    };
    line(
        &mut text,
        json!({"type": "meta", "version": HISTORY_VERSION, "scenario": s.name, "seed": out.seed, "members": s.cluster.members}),
    );
    // Operations in invoke order (ties by client), each with a stable id.
    let mut ops: Vec<&crate::workload::OpRecord> = out.rec.ops.iter().collect();
    ops.sort_by_key(|o| (o.invoke_ns, o.client));
    for (id, o) in ops.iter().enumerate() {
        let outcome = match &o.outcome {
            Outcome::Ok {
                value,
                index,
                prev_value,
                prev_index,
            } => {
                json!({"ok": true, "value": value, "index": index, "prev_value": prev_value, "prev_index": prev_index})
            }
            Outcome::Err { code } => json!({"ok": false, "error": code}),
            Outcome::Indeterminate => json!("indeterminate"),
            Outcome::NotSent => json!("not_sent"),
        };
        line(
            &mut text,
            json!({
                "type": "op", "id": id, "client": o.client, "f": kind_name(o.kind), "key": o.key,
                "value": o.value, "prev_value": o.prev_value, "prev_index": o.prev_index,
                "invoke_ns": o.invoke_ns, "return_ns": o.return_ns, "outcome": outcome, "member": o.member,
            }),
        );
    }
    let mut watches: Vec<&crate::workload::WatchRecord> = out.rec.watches.iter().collect();
    watches.sort_by_key(|w| (w.watcher, w.at_ns));
    for w in watches {
        line(
            &mut text,
            json!({"type": "watch", "watcher": w.watcher, "at_ns": w.at_ns, "action": w.action, "key": w.key,
                   "index": w.index, "value": w.value, "wait_index": w.wait_index}),
        );
    }
    for f in &out.faults {
        line(
            &mut text,
            json!({"type": "fault", "kind": f.kind, "targets": f.targets, "start_ns": f.start_ns, "end_ns": f.end_ns, "detail": f.detail}),
        );
    }
    for (t, l) in &out.leaders {
        line(
            &mut text,
            json!({"type": "leader", "at_ns": t, "member": l}),
        );
    }
    text.into_bytes()
}

/// The checker's verdicts on a history: linearizability of quorum reads and writes (with the
/// real-time order of etcd's global index) and the watch guarantees, plus the checker's HTML
/// timeline of a failing partition.
pub fn check(history: &[u8], timeout: Duration) -> (Check, Check, String) {
    let text = String::from_utf8_lossy(history);
    let r = match detcd_checker::check_etcd_history(&text, timeout, crate::workload::KEY_PREFIX) {
        Ok(r) => r,
        Err(e) => {
            let bad = |name: &str| Check {
                name: name.into(),
                passed: Some(false),
                detail: format!("history unreadable: {e}"),
            };
            return (bad("linearizable"), bad("watches"), String::new());
        }
    };
    let (passed, detail) = match (&r.verdict, r.index_violations.first()) {
        (detcd_checker::Verdict::Unknown, _) => (
            None,
            format!(
                "the search did not finish within {} s",
                timeout.as_secs_f64()
            ),
        ),
        (detcd_checker::Verdict::Illegal(f), _) => (
            Some(false),
            format!(
                "{} of {} checked operations' keys have no linearization; first: key {}",
                f.len(),
                r.ops_checked,
                f[0].key.clone().unwrap_or_default()
            ),
        ),
        (detcd_checker::Verdict::Ok, Some(v)) => (Some(false), format!("global index order: {v}")),
        (detcd_checker::Verdict::Ok, None) => (
            Some(true),
            format!(
                "{} quorum reads and writes linearizable; index order holds",
                r.ops_checked
            ),
        ),
    };
    let lin = Check {
        name: "linearizable".into(),
        passed,
        detail,
    };
    let watches = match r.watch_violations.first() {
        None => Check {
            name: "watches".into(),
            passed: Some(true),
            detail: format!(
                "{} watch events in order, complete, matching writes",
                r.watch_events
            ),
        },
        Some(v) => Check {
            name: "watches".into(),
            passed: Some(false),
            detail: format!("{} violation(s); first: {v}", r.watch_violations.len()),
        },
    };
    (lin, watches, r.html)
}
