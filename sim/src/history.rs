//! The run's history as JSON lines (format in docs/formats.md, "History JSON lines"):
//! operations with invoke/return times and outcomes, watch events, faults and leader changes,
//! in a deterministic order, so the same seed gives the same bytes.

use std::time::Duration;

use serde::Serialize;

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
        OpKind::RGet => "rget",
        OpKind::Mkdir => "mkdir",
        OpKind::Rmdir => "rmdir",
        OpKind::RDelete => "rdelete",
        OpKind::Refresh => "refresh",
        OpKind::V3Read => "v3_read",
        OpKind::V3LocalRead => "v3_local_read",
        OpKind::V3Write => "v3_write",
    }
}

// One struct per line type, fields in the order the format lists them (docs/formats.md):
// serialised straight into the output buffer, no intermediate JSON values.
#[derive(Serialize)]
#[serde(tag = "type", rename = "meta")]
struct MetaLine<'a> {
    version: u32,
    scenario: &'a str,
    seed: u64,
    members: usize,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutcomeJson<'a> {
    Ok {
        ok: bool,
        value: &'a Option<String>,
        index: u64,
        prev_value: &'a Option<String>,
        prev_index: Option<u64>,
    },
    Err {
        ok: bool,
        error: u32,
    },
    Word(&'static str),
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "op")]
struct OpLine<'a> {
    id: usize,
    client: u32,
    f: &'static str,
    key: &'a str,
    value: &'a Option<String>,
    prev_value: &'a Option<String>,
    prev_index: Option<u64>,
    invoke_ns: u64,
    return_ns: Option<u64>,
    outcome: OutcomeJson<'a>,
    member: usize,
    etcd_index: Option<u64>,
    // Only in runs with auth on: histories without it keep their bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "watch")]
struct WatchLine<'a> {
    watcher: u32,
    at_ns: u64,
    action: &'a str,
    key: &'a str,
    index: u64,
    value: &'a Option<String>,
    wait_index: u64,
    prefix: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "fault")]
struct FaultLine<'a> {
    kind: &'a str,
    targets: &'a [usize],
    start_ns: u64,
    end_ns: u64,
    detail: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "leader")]
struct LeaderLine {
    at_ns: u64,
    member: Option<usize>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "intruder")]
struct IntruderLine<'a> {
    intruder: &'a str,
    member: usize,
    request: &'a str,
    start_ns: u64,
    end_ns: u64,
    outcome: &'a str,
    detail: &'a str,
}

fn line<T: Serialize>(buf: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(&mut *buf, v).expect("history lines serialise");
    buf.push(b'\n');
}

/// Serialise a run's history.
pub fn to_jsonl(s: &Scenario, out: &RunOutput) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256 * (out.rec.ops.len() + out.rec.watches.len() + 1));
    line(
        &mut buf,
        &MetaLine {
            version: HISTORY_VERSION,
            scenario: &s.name,
            seed: out.seed,
            members: s.cluster.members,
        },
    );
    // Operations in invoke order (ties by client), each with a stable id.
    // (The v3 workload's operations are in the v3 history, `v3_jsonl`.)
    let mut ops: Vec<&crate::workload::OpRecord> = out
        .rec
        .ops
        .iter()
        .filter(|o| {
            !matches!(
                o.kind,
                OpKind::V3Read | OpKind::V3LocalRead | OpKind::V3Write
            )
        })
        .collect();
    ops.sort_by_key(|o| (o.invoke_ns, o.client));
    for (id, o) in ops.iter().enumerate() {
        let outcome = match &o.outcome {
            Outcome::Ok {
                value,
                index,
                prev_value,
                prev_index,
            } => OutcomeJson::Ok {
                ok: true,
                value,
                index: *index,
                prev_value,
                prev_index: *prev_index,
            },
            Outcome::Err { code } => OutcomeJson::Err {
                ok: false,
                error: *code,
            },
            Outcome::Indeterminate => OutcomeJson::Word("indeterminate"),
            Outcome::NotSent => OutcomeJson::Word("not_sent"),
        };
        line(
            &mut buf,
            &OpLine {
                id,
                client: o.client,
                f: kind_name(o.kind),
                key: &o.key,
                value: &o.value,
                prev_value: &o.prev_value,
                prev_index: o.prev_index,
                invoke_ns: o.invoke_ns,
                return_ns: o.return_ns,
                outcome,
                member: o.member,
                etcd_index: o.etcd_index,
                user: o.user.as_deref(),
            },
        );
    }
    let mut watches: Vec<&crate::workload::WatchRecord> = out.rec.watches.iter().collect();
    watches.sort_by_key(|w| (w.watcher, w.at_ns));
    for w in watches {
        line(
            &mut buf,
            &WatchLine {
                watcher: w.watcher,
                at_ns: w.at_ns,
                action: &w.action,
                key: &w.key,
                index: w.index,
                value: &w.value,
                wait_index: w.wait_index,
                prefix: &w.prefix,
            },
        );
    }
    for f in &out.faults {
        line(
            &mut buf,
            &FaultLine {
                kind: &f.kind,
                targets: &f.targets,
                start_ns: f.start_ns,
                end_ns: f.end_ns,
                detail: &f.detail,
            },
        );
    }
    for (t, l) in &out.leaders {
        line(
            &mut buf,
            &LeaderLine {
                at_ns: *t,
                member: *l,
            },
        );
    }
    for i in &out.intruders {
        line(
            &mut buf,
            &IntruderLine {
                intruder: &i.intruder,
                member: i.member,
                request: &i.request,
                start_ns: i.start_ns,
                end_ns: i.end_ns,
                outcome: &i.outcome,
                detail: &i.detail,
            },
        );
    }
    buf
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
                "{} watch events in order, complete, within the watched keys, matching writes",
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

/// The `serializable-reads` check on a history (detcd-checker's reads check): per member, the
/// `X-Etcd-Index` of its answers never goes back between restarts; every read's value and
/// index are explained by the writes; quorum reads report at least the index of every write
/// acknowledged before they were invoked.
pub fn check_reads(history: &[u8]) -> Check {
    let name = "serializable-reads".to_string();
    let text = String::from_utf8_lossy(history);
    match detcd_checker::check_etcd_reads(&text) {
        Err(e) => Check {
            name,
            passed: Some(false),
            detail: format!("history unreadable: {e}"),
        },
        Ok(r) if r.violations.is_empty() => Check {
            name,
            passed: Some(true),
            detail: format!(
                "{} serializable and {} quorum reads explained by the writes; members' indexes never went back ({} ordered pairs)",
                r.serializable, r.quorum, r.ordered_pairs
            ),
        },
        Ok(r) => Check {
            name,
            passed: Some(false),
            detail: format!(
                "{} violation(s); first: {}",
                r.violations.len(),
                r.violations[0]
            ),
        },
    }
}

/// The v3 workload's history (`history-v3.jsonl`): the v3 checker's JSON lines, operations in
/// invoke order (ties by client) with ids in that order. Empty for a v2 workload.
pub fn v3_jsonl(out: &RunOutput) -> Vec<u8> {
    let mut ops = out.rec.v3.clone();
    ops.sort_by_key(|o| (o.call_ns, o.client));
    let mut buf = Vec::new();
    for (id, mut o) in ops.into_iter().enumerate() {
        o.id = id as u64;
        line(&mut buf, &detcd_checker::v3::Line::Op(o));
    }
    for w in &out.rec.v3_watches {
        line(&mut buf, &detcd_checker::v3::Line::Watch(w.clone()));
    }
    for r in &out.rec.v3_watch_responses {
        line(&mut buf, &detcd_checker::v3::Line::WatchResponse(r.clone()));
    }
    for g in &out.rec.v3_lease_grants {
        line(&mut buf, &detcd_checker::v3::Line::LeaseGrant(g.clone()));
    }
    for k in &out.rec.v3_keepalives {
        line(
            &mut buf,
            &detcd_checker::v3::Line::LeaseKeepalive(k.clone()),
        );
    }
    buf
}

/// The v3 checker's verdict on a v3 history: linearizability of every answered and
/// indeterminate operation against etcd 3.4's MVCC model (header revisions matched), and
/// serializable reads against the state at their revision.
pub fn check_v3(history: &[u8], timeout: Duration) -> Check {
    check_v3_leases(history, timeout).0
}

/// [`check_v3`], and what the linearization it found says about leases (None: no
/// linearization, or a history without lease grants).
pub fn check_v3_leases(
    history: &[u8],
    timeout: Duration,
) -> (Check, Option<detcd_checker::v3::lease::LeaseStats>) {
    let text = String::from_utf8_lossy(history);
    let h = match detcd_checker::v3::History::parse(&text) {
        Ok(h) => h,
        Err(e) => {
            return (
                Check {
                    name: "v3-linearizability".into(),
                    passed: Some(false),
                    detail: format!("the v3 history does not parse: {e}"),
                },
                None,
            )
        }
    };
    let limits = detcd_checker::v3::Limits {
        deadline: Some(std::time::Instant::now() + timeout),
        ..Default::default()
    };
    let r = detcd_checker::v3::check_with(&h, limits);
    let passed = match r.verdict {
        detcd_checker::v3::V3Verdict::Ok => Some(true),
        detcd_checker::v3::V3Verdict::Violations => Some(false),
        detcd_checker::v3::V3Verdict::Unknown => None,
    };
    let l = r.leases;
    let detail = if passed == Some(true) {
        let leases = if h.lease_grants.is_empty() {
            String::new()
        } else {
            format!(
                "; leases: {} granted, {} KeepAlives, {} expired and {} revoked with keys ({} keys deleted)",
                l.granted, l.keepalives, l.expired, l.revoked, l.keys_deleted
            )
        };
        format!(
            "{} operations: {} linearizable, {} serializable reads, {} of {} indeterminate writes applied, {} revisions; {} watch events of {} watches checked{leases}",
            r.ops, r.linearizable, r.serializable, r.indeterminate_applied, r.indeterminate_writes, r.revisions, r.watch_events, h.watches.len()
        )
    } else {
        r.render()
    };
    let stats = (passed == Some(true) && !h.lease_grants.is_empty()).then_some(l);
    (
        Check {
            name: "v3-linearizability".into(),
            passed,
            detail,
        },
        stats,
    )
}
