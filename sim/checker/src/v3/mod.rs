//! The etcd v3 checker: linearizability of KV operations (Range, Put, DeleteRange, Txn,
//! Compact) over one global MVCC state, serializable reads, and watches.
//!
//! # History format
//!
//! JSON lines, one object per line, tagged by `"type"` (see [`types::Line`]); fields
//! follow the protobuf messages as a tonic client sees them, with keys and values as
//! strings, `header.revision` flattened to `header_revision`, and absent proto fields
//! allowed to be omitted (they default to zero/empty/false).
//!
//! ```text
//! {"type":"op","id":1,"client":0,"member":2,"call_ns":100,"return_ns":900,
//!  "request":{"put":{"key":"a","value":"v1","lease":0,"prev_kv":true}},
//!  "outcome":{"ok":{"put":{"header_revision":2,"prev_kv":null}}}}
//! {"type":"op","id":2,"client":1,"call_ns":200,"return_ns":800,
//!  "request":{"range":{"key":"a","range_end":"b","revision":0,"limit":0,"serializable":false,
//!                      "keys_only":false,"count_only":false}},
//!  "outcome":{"ok":{"range":{"header_revision":1,"kvs":[],"count":0,"more":false}}}}
//! {"type":"op","id":3,"client":2,"call_ns":300,"return_ns":null,
//!  "request":{"txn":{"compares":[{"target":"MOD","result":"EQUAL","key":"a","range_end":"","operand":2}],
//!                    "success":[{"put":{"key":"a","value":"v3"}}],
//!                    "failure":[{"range":{"key":"a"}}]}},
//!  "outcome":"indeterminate"}
//! {"type":"op","id":4,"client":3,"call_ns":400,"return_ns":500,
//!  "request":{"range":{"key":"a","revision":1}},
//!  "outcome":{"error":{"code":"OutOfRange","message":"etcdserver: mvcc: required revision has been compacted"}}}
//! {"type":"op","id":5,"client":4,"call_ns":400,"return_ns":500,"request":{"compact":{"revision":2}},
//!  "outcome":{"ok":{"compact":{"header_revision":3}}}}
//! {"type":"watch","watcher":7,"client":5,"member":0,"call_ns":50,"key":"a","range_end":"\u0000",
//!  "start_revision":0,"prev_kv":true,"filters":["NODELETE"]}
//! {"type":"watch_response","watcher":7,"at_ns":60,"header_revision":1,"created":true}
//! {"type":"watch_response","watcher":7,"at_ns":950,"header_revision":2,
//!  "events":[{"type":"PUT","kv":{"key":"a","value":"v1","create_revision":2,"mod_revision":2,
//!             "version":1,"lease":0},"prev_kv":null}]}
//! {"type":"restart","member":2,"at_ns":5000}
//! ```
//!
//! (`tests/data/v3/example.jsonl` holds these lines, one object per line, and passes.)
//!
//! Responses: `range` {header_revision, kvs, count, more}, `put` {header_revision,
//! prev_kv}, `delete_range` {header_revision, deleted, prev_kvs}, `txn` {header_revision,
//! succeeded, responses: one per op of the branch taken, in the same shape}, `compact`
//! {header_revision}. Outcomes: `{"ok": response}`, `{"error": {code, message}}` — an
//! error known not to have been applied (gRPC code name and message) — or
//! `"indeterminate"` (timeout, connection lost: may or may not have been applied;
//! `return_ns` may then be null or when the client gave up). Compares: `target` VERSION |
//! CREATE | MOD | VALUE | LEASE, `result` EQUAL | GREATER | LESS | NOT_EQUAL, `operand` a
//! number or a string (for VALUE). Watches: a `watch` line per created watch (a resumed
//! watch is a new watcher with `start_revision` = last revision seen + 1), then its
//! `watch_response` lines in the order received. `restart` lines mark member process
//! restarts (serializable reads are compared per member only between restarts).
//!
//! # Model
//!
//! One global state (see [`store`]): revision (fresh: 1), compact revision (-1), and per
//! key its whole history since the start, so a Range at an older revision is answered
//! **exactly** (unlike etcd's robustness model, which accepts any answer to a historical
//! read). Responses are matched including header revision, sub-responses of a Txn
//! included (nested txns' headers excepted).
//!
//! # Search
//!
//! See [`lin`]: the header revisions of answered operations fix the total order up to the
//! order of reads within a revision, so the check is a real-time sweep plus a replay;
//! revisions no acknowledged write claims are filled from the indeterminate writes by a
//! depth-first search. Before it, checks no placement of indeterminate writes can change
//! (every kv seen was put by someone, at its acknowledged revision when all its writers
//! were acknowledged; no kv older than an acknowledged put of its key at or below the
//! revision read). The search is pruned by what was observed (a unique put value seen at
//! revision R pins its writer to R, as etcd's `patch_history` does; a write the reads
//! would have seen is not tried at an unobserved revision, nor one whose event a watcher
//! covering that revision did not receive) and backjumps over choices a
//! failure cannot depend on. It stops after [`Limits::max_steps`] (default 2M) or at
//! [`Limits::deadline`]: the verdict is then Unknown and [`V3Report::probable`] holds the
//! deepest failure met. Without indeterminate writes the search never branches.
//!
//! Serializable reads are checked apart: per member (between restarts) the header
//! revision never goes back in real time, and the answer equals the model's at the header
//! revision (at the requested revision for a historical read; a serializable read's
//! compacted error is accepted whenever a compaction past its revision had been invoked).
//! Errors are checked where the model can judge them: InvalidArgument ones statically,
//! "future revision" only if no operation returned before the call had reached the
//! revision, "compacted" only if a compaction past the revision was invoked before the
//! error returned; other errors (Unavailable, lease not found, ...) count as not applied.
//!
//! Watches: see [`watch`].
//!
//! # Not modelled
//!
//! Leases (a Put's lease is taken as existing; lease revocation and expiry deletions,
//! which take revisions no client wrote, would show as unexplained revisions), Range sort
//! orders and min/max revision filters, `ignore_value`/`ignore_lease`, auth, watch
//! progress notifications and fragments (read but not checked), nested txns' header
//! revisions.

pub mod gen;
pub mod lease;
pub mod lin;
pub mod store;
pub mod types;
pub mod watch;

use std::collections::BTreeMap;

pub use lin::Limits;
use lin::{classify, ret, Class};
use store::{validate, Store, StoreError};
pub use types::*;

/// What kind of rule a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationKind {
    /// Real-time order and revision order disagree.
    RealTime,
    /// Two acknowledged writes claim one revision.
    DuplicateRevision,
    /// An answer differs from the model's at its revision.
    Response,
    /// A revision no write in the history can have made.
    UnexplainedRevision,
    /// An error the model says cannot have happened.
    Error,
    /// A serializable read's answer differs from the model's at its revision.
    Serializable,
    /// A member's revision went back.
    MemberOrder,
    /// A watch guarantee.
    Watch(watch::WatchRule),
}

/// One violation, with the operations that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub kind: ViolationKind,
    /// Ids of the operations (or watcher ids, for watch rules) that show it.
    pub ops: Vec<u64>,
    /// A readable explanation.
    pub explanation: String,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V3Verdict {
    /// Every check passed.
    Ok,
    /// At least one violation.
    Violations,
    /// The search ran out of steps or time (other checks may still have found violations;
    /// [`V3Report::probable`] says where the search got stuck).
    Unknown,
}

/// Everything the v3 checker says about a history.
#[derive(Debug, Clone)]
pub struct V3Report {
    /// The verdict.
    pub verdict: V3Verdict,
    /// Violations (the linearizability search reports the deepest failure only).
    pub violations: Vec<Violation>,
    /// When the search ran out of steps or time: the deepest failure it met, a violation
    /// unless a placement of indeterminate writes it did not try explains it.
    pub probable: Option<Violation>,
    /// Operations in the history.
    pub ops: usize,
    /// Answered linearizable operations.
    pub linearizable: usize,
    /// Answered serializable reads.
    pub serializable: usize,
    /// Indeterminate operations that may have written.
    pub indeterminate_writes: usize,
    /// How many of those the linearization found applied.
    pub indeterminate_applied: usize,
    /// Error outcomes; how many the model could judge.
    pub errors: usize,
    /// Error outcomes whose plausibility was checked.
    pub errors_checked: usize,
    /// Revisions replayed.
    pub revisions: i64,
    /// Watch events checked.
    pub watch_events: usize,
    /// Search steps and backtracks.
    pub steps: u64,
    /// Backtracks.
    pub backtracks: u64,
    /// Choices jumped over when backtracking.
    pub jumps: u64,
    /// The linearization found: (revision, id of the op that made it), including the
    /// indeterminate writes it applied (empty unless linearizable).
    pub made_by: Vec<(i64, u64)>,
    /// Leases: granted, ended with keys deleted (by expiry, by revocation), as linearized.
    pub leases: lease::LeaseStats,
}

impl V3Report {
    /// A summary and every violation, as text.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{:?}: {} ops ({} linearizable, {} serializable, {} indeterminate writes of which {} applied, {} errors of which {} checked), {} revisions, {} watch events; search {} steps, {} backtracks, {} jumps\n",
            self.verdict,
            self.ops,
            self.linearizable,
            self.serializable,
            self.indeterminate_writes,
            self.indeterminate_applied,
            self.errors,
            self.errors_checked,
            self.revisions,
            self.watch_events,
            self.steps,
            self.backtracks,
            self.jumps
        );
        if let Some(v) = &self.probable {
            s.push_str(&format!(
                "search gave up; deepest failure met {:?} (ops {:?}):\n  {}\n",
                v.kind, v.ops, v.explanation
            ));
        }
        for v in &self.violations {
            s.push_str(&format!(
                "violation {:?} (ops {:?}):\n  {}\n",
                v.kind, v.ops, v.explanation
            ));
        }
        s
    }
}

/// One line describing an operation.
pub fn describe_op(op: &Op) -> String {
    if lease::is_expiry(op) {
        if let Request::LeaseRevoke(l) = &op.request {
            return format!(
                "op {} (the expiry of lease {}, keys {:?}, not before {} ns)",
                op.id, l.id, l.keys, op.call_ns
            );
        }
    }
    let o = match &op.outcome {
        Outcome::Ok(r) => serde_json::to_string(r).unwrap_or_default(),
        Outcome::Error(e) => format!("error {} {:?}", e.code, e.message),
        Outcome::Indeterminate => "indeterminate".into(),
    };
    format!(
        "op {} (client {}, member {}, {}..{} ns): {} -> {}",
        op.id,
        op.client,
        op.member.map_or("?".into(), |m| m.to_string()),
        op.call_ns,
        op.return_ns.map_or("?".into(), |r| r.to_string()),
        serde_json::to_string(&op.request).unwrap_or_default(),
        o
    )
}

/// Check a history with default limits.
pub fn check(h: &History) -> V3Report {
    check_with(h, Limits::default())
}

/// Check a history.
pub fn check_with(h: &History, limits: Limits) -> V3Report {
    let prepared = lease::prepare(h);
    let h = &prepared;
    let mut classes: Vec<Class> = h.ops.iter().map(classify).collect();
    lease::classify_revokes(h, &mut classes);
    let lin = lin::search(h, &classes, limits);
    let mut violations = lin.violations;
    let errors_checked = check_errors(h, &classes, &mut violations);
    let mut watch_events = 0;
    if let Some(store) = &lin.store {
        check_serializable(h, &classes, store, &mut violations);
        watch_events = watch::check(h, Some(store), &mut violations);
    } else {
        watch_events = watch::check(h, None, &mut violations).max(watch_events);
    }
    let verdict = if !violations.is_empty() {
        V3Verdict::Violations
    } else if lin.unknown {
        V3Verdict::Unknown
    } else {
        V3Verdict::Ok
    };
    let count = |f: fn(&Class) -> bool| classes.iter().filter(|c| f(c)).count();
    let mut leases = lease::LeaseStats {
        granted: h.lease_grants.iter().filter(|g| g.error.is_none()).count(),
        keepalives: h.keepalives.len(),
        ..Default::default()
    };
    if let Some(store) = &lin.store {
        for (r, i) in lin.made_by.iter().enumerate() {
            let Some(i) = *i else { continue };
            if matches!(h.ops[i].request, Request::LeaseRevoke(_)) {
                if lease::is_expiry(&h.ops[i]) {
                    leases.expired += 1;
                } else {
                    leases.revoked += 1;
                }
                leases.keys_deleted += store.events(r as i64).len();
            }
        }
    }
    V3Report {
        verdict,
        violations,
        probable: lin.probable.clone(),
        ops: h.ops.iter().filter(|o| !lease::is_expiry(o)).count(),
        linearizable: count(|c| matches!(c, Class::Write(_) | Class::Read(_))),
        serializable: count(|c| matches!(c, Class::Serial(_))),
        indeterminate_writes: count(|c| matches!(c, Class::IndetWrite)),
        indeterminate_applied: lin.indeterminate_applied,
        errors: count(|c| matches!(c, Class::Error)),
        errors_checked,
        revisions: lin.store.as_ref().map_or(0, |s| s.rev),
        watch_events,
        steps: lin.steps,
        backtracks: lin.backtracks,
        jumps: lin.jumps,
        made_by: if lin.store.is_some() {
            lin.made_by
                .iter()
                .enumerate()
                .filter_map(|(r, i)| i.map(|i| (r as i64, h.ops[i].id)))
                .collect()
        } else {
            Vec::new()
        },
        leases,
    }
}

fn read_revisions(req: &Request, out: &mut Vec<i64>) {
    match req {
        Request::Range(r) if r.revision > 0 => out.push(r.revision),
        Request::Txn(t) => {
            for r in t.success.iter().chain(&t.failure) {
                read_revisions(r, out);
            }
        }
        _ => {}
    }
}

/// Error outcomes: plausible or not. Returns how many were judged.
fn check_errors(h: &History, classes: &[Class], out: &mut Vec<Violation>) -> usize {
    // Answered linearizable ops by return time, with the running maximum revision.
    let mut answered: Vec<(u64, i64, u64)> = classes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Class::Write(r) | Class::Read(r) => Some((ret(&h.ops[i]), *r, h.ops[i].id)),
            _ => None,
        })
        .collect();
    answered.sort();
    let mut run = Vec::with_capacity(answered.len());
    let mut best = (1i64, u64::MAX);
    for a in &answered {
        if a.1 > best.0 {
            best = (a.1, a.2);
        }
        run.push(best);
    }
    let reached = |call: u64| {
        let n = answered.partition_point(|a| a.0 < call);
        if n == 0 {
            (1, u64::MAX)
        } else {
            run[n - 1]
        }
    };
    let compacts: Vec<(u64, i64, u64)> = h
        .ops
        .iter()
        .filter(|o| !matches!(o.outcome, Outcome::Error(_)))
        .filter_map(|o| match &o.request {
            Request::Compact(c) => Some((o.call_ns, c.revision, o.id)),
            _ => None,
        })
        .collect();
    let mut judged = 0;
    for op in &h.ops {
        let Outcome::Error(e) = &op.outcome else {
            continue;
        };
        let stat = validate(&op.request).err();
        let rec = StoreError::recognise(e);
        let mut bad: Option<String> = None;
        match (stat, rec) {
            (Some(s), Some(x)) => {
                judged += 1;
                if s != x {
                    bad = Some(format!(
                        "the request is invalid ({} \"{}\"), yet it failed with another error",
                        s.code(),
                        s.message()
                    ));
                }
            }
            (Some(_), None) | (None, None) | (None, Some(StoreError::LeaseNotFound)) => {}
            (
                None,
                Some(
                    x @ (StoreError::EmptyKey
                    | StoreError::DuplicateKey
                    | StoreError::TooManyOps
                    | StoreError::CompactInTxn),
                ),
            ) => {
                judged += 1;
                bad = Some(format!(
                    "a valid request refused as invalid ({} \"{}\")",
                    x.code(),
                    x.message()
                ));
            }
            (None, Some(StoreError::FutureRev)) => {
                judged += 1;
                let mut revs = Vec::new();
                match &op.request {
                    Request::Compact(c) => revs.push(c.revision),
                    r => read_revisions(r, &mut revs),
                }
                let serial = store::is_serializable(&op.request);
                let (rev, by) = reached(op.call_ns);
                if !revs.iter().any(|&q| serial || q > rev) {
                    bad = Some(if revs.is_empty() {
                        "no revision was asked for".into()
                    } else {
                        format!(
                            "revision(s) {revs:?} already reached: op {by} returned at revision {rev} before this op was invoked"
                        )
                    });
                }
            }
            (None, Some(StoreError::Compacted)) => {
                judged += 1;
                let mut need = Vec::new();
                match &op.request {
                    // Compacting at or below the compact revision.
                    Request::Compact(c) => need.push(c.revision - 1),
                    r => read_revisions(r, &mut need),
                }
                let explained = need.iter().any(|&q| {
                    compacts
                        .iter()
                        .any(|&(call, c, id)| id != op.id && c > q && call <= ret(op))
                });
                if !explained {
                    bad = Some(if need.is_empty() {
                        "no revision was asked for".into()
                    } else {
                        "no compaction past the revision asked for was invoked before the error returned".into()
                    });
                }
            }
        }
        if let Some(b) = bad {
            out.push(Violation {
                kind: ViolationKind::Error,
                ops: vec![op.id],
                explanation: format!("{}\n  {b}", describe_op(op)),
            });
        }
    }
    judged
}

/// Serializable reads: answers equal the model at their revision; per member, revisions
/// never go back between restarts.
fn check_serializable(h: &History, classes: &[Class], store: &Store, out: &mut Vec<Violation>) {
    // Contents are checked by the search (a state constraint at the header revision);
    // what is left is a header revision beyond the history's end.
    for (i, c) in classes.iter().enumerate() {
        let Class::Serial(r) = *c else { continue };
        if r < 1 || r > store.rev {
            out.push(Violation {
                kind: ViolationKind::Serializable,
                ops: vec![h.ops[i].id],
                explanation: format!(
                    "{}\n  header revision {r} was never reached (the history ends at {})",
                    describe_op(&h.ops[i]),
                    store.rev
                ),
            });
        }
    }
    // Per member and restart epoch: (ret, header, id) of answers; serializable reads.
    let mut restarts: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(m, t) in &h.restarts {
        restarts.entry(m).or_default().push(t);
    }
    for v in restarts.values_mut() {
        v.sort();
    }
    type Group = (Vec<(u64, i64, u64)>, Vec<(u64, i64, u64)>);
    let mut groups: BTreeMap<(u64, usize), Group> = BTreeMap::new();
    for (i, c) in classes.iter().enumerate() {
        let (Class::Write(r) | Class::Read(r) | Class::Serial(r)) = *c else {
            continue;
        };
        let op = &h.ops[i];
        let Some(m) = op.member else { continue };
        let rs = restarts.get(&m).map(Vec::as_slice).unwrap_or(&[]);
        let epoch = rs.partition_point(|&t| t <= op.call_ns);
        if rs.partition_point(|&t| t <= ret(op)) != epoch {
            continue; // spans a restart
        }
        let g = groups.entry((m, epoch)).or_default();
        g.0.push((ret(op), r, op.id));
        if matches!(c, Class::Serial(_)) {
            g.1.push((op.call_ns, r, op.id));
        }
    }
    for ((m, _), (mut answers, reads)) in groups {
        answers.sort();
        let mut run: Vec<(i64, u64)> = Vec::with_capacity(answers.len());
        for &(_, r, id) in &answers {
            let b = match run.last() {
                Some(&(br, bid)) if br >= r => (br, bid),
                _ => (r, id),
            };
            run.push(b);
        }
        for (call, r, id) in reads {
            let n = answers.partition_point(|a| a.0 < call);
            if n == 0 {
                continue;
            }
            let (br, bid) = run[n - 1];
            if br > r {
                out.push(Violation {
                    kind: ViolationKind::MemberOrder,
                    ops: vec![bid, id],
                    explanation: format!(
                        "member {m} answered serializable read op {id} at revision {r} after it had answered op {bid} at revision {br} (op {bid} returned before op {id} was invoked, no restart between)"
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
