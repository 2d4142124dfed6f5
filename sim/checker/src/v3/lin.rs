//! The linearizability search over the global state, pinned by header revisions.
//!
//! Every answered linearizable operation names the revision it ran at: a write that
//! changed the store *made* revision R (its header revision), anything else (a Range, a
//! Txn or DeleteRange that changed nothing, a Compact) ran while the store was at R. So
//! the total order is fixed up to the order of reads within one revision, which does not
//! matter: "slot" R holds the write that made R, then the reads at R. What is left:
//!
//! 1. real time: an operation that returned before another was invoked must sit in an
//!    earlier or the same slot (a write before the reads of its own slot): one sweep;
//! 2. the replay: revisions 2..=max in order; each acknowledged write applied to the model
//!    must answer exactly what the client got (header revision included); each read
//!    answered at R must equal the model's answer at R;
//! 3. revisions no acknowledged write claims ("gaps") must be filled by indeterminate
//!    writes (each may take effect at any revision whose slot it could precede in real
//!    time, or never): a depth-first search over the candidates, pruned by evidence (a kv
//!    seen anywhere with `mod_revision` R says which key and value R wrote, as etcd's
//!    `patch_history` uses unique put values), with backtracking on any later mismatch.
//!
//! Without indeterminate writes the search never branches: the check is one sort and one
//! replay.

use std::collections::BTreeMap;
use std::time::Instant;

use super::store::{is_serializable, may_write, Store, StoreError};
use super::types::*;
use super::{describe_op, Violation, ViolationKind};

/// Where an operation sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// An answered write that made this revision.
    Write(i64),
    /// An answered linearizable read-like operation (or Compact) at this revision.
    Read(i64),
    /// An answered serializable read at this revision.
    Serial(i64),
    /// No answer, may have written.
    IndetWrite,
    /// No answer, cannot have written (dropped), or an indeterminate Compact.
    IndetOther,
    /// An error.
    Error,
}

pub(crate) fn classify(op: &Op) -> Class {
    match &op.outcome {
        Outcome::Ok(resp) => {
            let r = resp.header_revision();
            if is_serializable(&op.request) {
                Class::Serial(r)
            } else if resp.changed() {
                Class::Write(r)
            } else {
                Class::Read(r)
            }
        }
        Outcome::Error(_) => Class::Error,
        Outcome::Indeterminate => {
            if may_write(&op.request) && !matches!(op.request, Request::Compact(_)) {
                Class::IndetWrite
            } else {
                Class::IndetOther
            }
        }
    }
}

/// Nested txn headers are not compared (etcd 3.4 leaves them unset).
pub(crate) fn normalize(resp: &Response, top: bool) -> Response {
    match resp {
        Response::Txn(t) => Response::Txn(TxnResponse {
            header_revision: if top { t.header_revision } else { 0 },
            succeeded: t.succeeded,
            responses: t.responses.iter().map(|r| normalize(r, false)).collect(),
        }),
        r => r.clone(),
    }
}

/// What a kv observed somewhere says about a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Evidence {
    /// The key was put and became this kv.
    Put(KeyValue),
    /// The key was deleted.
    Delete(String),
}

pub(crate) fn collect_kvs<'a>(
    resp: &'a Response,
    req: Option<&Request>,
    out: &mut Vec<&'a KeyValue>,
) {
    match resp {
        Response::Range(r) => {
            let keys_only = matches!(req, Some(Request::Range(q)) if q.keys_only);
            if !keys_only {
                out.extend(r.kvs.iter());
            }
        }
        Response::Put(p) => out.extend(p.prev_kv.iter()),
        Response::DeleteRange(d) => out.extend(d.prev_kvs.iter()),
        Response::Txn(t) => {
            let branch = match req {
                Some(Request::Txn(q)) => Some(if t.succeeded { &q.success } else { &q.failure }),
                _ => None,
            };
            for (i, r) in t.responses.iter().enumerate() {
                collect_kvs(r, branch.and_then(|b| b.get(i)), out);
            }
        }
        Response::Compact(_) => {}
    }
}

fn evidence(h: &History) -> BTreeMap<i64, Vec<Evidence>> {
    let mut ev: BTreeMap<i64, Vec<Evidence>> = BTreeMap::new();
    let mut add = |rev: i64, e: Evidence| {
        let v = ev.entry(rev).or_default();
        if !v.contains(&e) {
            v.push(e);
        }
    };
    for op in &h.ops {
        if let Outcome::Ok(resp) = &op.outcome {
            let mut kvs = Vec::new();
            collect_kvs(resp, Some(&op.request), &mut kvs);
            for kv in kvs {
                add(kv.mod_revision, Evidence::Put(kv.clone()));
            }
        }
    }
    for r in &h.watch_responses {
        for e in &r.events {
            match e.kind {
                EventType::Put => add(e.kv.mod_revision, Evidence::Put(e.kv.clone())),
                EventType::Delete => add(e.kv.mod_revision, Evidence::Delete(e.kv.key.clone())),
            }
            if let Some(p) = &e.prev_kv {
                add(p.mod_revision, Evidence::Put(p.clone()));
            }
        }
    }
    ev
}

fn puts_of<'a>(req: &'a Request, out: &mut Vec<(&'a str, &'a str)>) {
    match req {
        Request::Put(p) => out.push((&p.key, &p.value)),
        Request::Txn(t) => {
            for r in t.success.iter().chain(&t.failure) {
                puts_of(r, out);
            }
        }
        _ => {}
    }
}

/// etcd's `patch_history` trick: an indeterminate write with a put whose (key, value) no
/// other operation writes, seen at exactly one revision, can only have made that revision.
/// Returns the pinned writes by revision, and the others (in call order).
fn pin(
    h: &History,
    indet: &[usize],
    ev: &BTreeMap<i64, Vec<Evidence>>,
) -> (BTreeMap<i64, Vec<usize>>, Vec<usize>) {
    let mut writers: std::collections::HashMap<(&str, &str), usize> = Default::default();
    for op in &h.ops {
        if !matches!(op.outcome, Outcome::Error(_)) {
            let mut p = Vec::new();
            puts_of(&op.request, &mut p);
            for kv in p {
                *writers.entry(kv).or_default() += 1;
            }
        }
    }
    let mut seen: std::collections::HashMap<(&str, &str), Vec<i64>> = Default::default();
    for (&rev, es) in ev {
        for e in es {
            if let Evidence::Put(kv) = e {
                let v = seen
                    .entry((kv.key.as_str(), kv.value.as_str()))
                    .or_default();
                if !v.contains(&rev) {
                    v.push(rev);
                }
            }
        }
    }
    let mut pinned: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut unpinned = Vec::new();
    for &i in indet {
        let mut p = Vec::new();
        puts_of(&h.ops[i].request, &mut p);
        let at = p.iter().find_map(|kv| match seen.get(kv) {
            Some(revs) if revs.len() == 1 && writers.get(kv) == Some(&1) => Some(revs[0]),
            _ => None,
        });
        match at {
            Some(r) => pinned.entry(r).or_default().push(i),
            None => unpinned.push(i),
        }
    }
    (pinned, unpinned)
}

fn satisfies(store: &Store, rev: i64, ev: &[Evidence]) -> bool {
    let events = store.events(rev);
    ev.iter().all(|e| match e {
        Evidence::Put(kv) => events
            .iter()
            .any(|x| x.kind == EventType::Put && &x.kv == kv),
        Evidence::Delete(k) => events
            .iter()
            .any(|x| x.kind == EventType::Delete && &x.kv.key == k),
    })
}

/// The result of the search.
pub(crate) struct LinResult {
    /// The model after the whole history (when linearizable).
    pub store: Option<Store>,
    /// Which op made each revision (index = revision; None for 0, 1).
    pub made_by: Vec<Option<usize>>,
    /// Violations.
    pub violations: Vec<Violation>,
    /// The search ran out of steps or time.
    pub unknown: bool,
    /// Indeterminate writes the linearization applied.
    pub indeterminate_applied: usize,
    /// Search steps (slots placed, including retries).
    pub steps: u64,
    /// Backtracks.
    pub backtracks: u64,
}

struct Fail {
    rev: i64,
    ops: Vec<usize>,
    text: String,
    kind: ViolationKind,
}

struct Frame {
    rev: i64,
    cands: Vec<usize>,
    next: usize,
    mark: usize,
    chosen: Option<usize>,
}

/// Search limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Give up (unknown) after this many slot placements.
    pub max_steps: u64,
    /// Give up (unknown) at this instant.
    pub deadline: Option<Instant>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 50_000_000,
            deadline: None,
        }
    }
}

pub(crate) fn ret(op: &Op) -> u64 {
    op.return_ns.unwrap_or(u64::MAX)
}

/// The real-time check of answered linearizable operations against their slots.
fn real_time(h: &History, classes: &[Class], out: &mut Vec<Violation>) {
    // (call, ret, slot key, index)
    let mut ops: Vec<(u64, u64, (i64, u8), usize)> = classes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let key = match c {
                Class::Write(r) => (*r, 0),
                Class::Read(r) => (*r, 1),
                _ => return None,
            };
            Some((h.ops[i].call_ns, ret(&h.ops[i]), key, i))
        })
        .collect();
    ops.sort();
    let mut by_ret = ops.clone();
    by_ret.sort_by_key(|o| o.1);
    let mut j = 0;
    let mut best: Option<((i64, u8), usize)> = None;
    let mut reported = 0;
    for &(call, _, key, i) in &ops {
        while j < by_ret.len() && by_ret[j].1 < call {
            if best.is_none_or(|(k, _)| by_ret[j].2 > k) {
                best = Some((by_ret[j].2, by_ret[j].3));
            }
            j += 1;
        }
        if let Some((k, b)) = best {
            if k > key {
                reported += 1;
                if reported > 20 {
                    break;
                }
                let what = |key: (i64, u8)| {
                    if key.1 == 0 {
                        format!("made revision {}", key.0)
                    } else {
                        format!("ran at revision {}", key.0)
                    }
                };
                out.push(Violation {
                    kind: ViolationKind::RealTime,
                    ops: vec![h.ops[b].id, h.ops[i].id],
                    explanation: format!(
                        "op {} returned before op {} was invoked, yet op {} {} and op {} {}: \
                         real-time order and revision order disagree\n  {}\n  {}",
                        h.ops[b].id,
                        h.ops[i].id,
                        h.ops[b].id,
                        what(k),
                        h.ops[i].id,
                        what(key),
                        describe_op(&h.ops[b]),
                        describe_op(&h.ops[i])
                    ),
                });
            }
        }
    }
}

fn json<T: serde::Serialize>(t: &T) -> String {
    serde_json::to_string(t).unwrap_or_default()
}

fn answer(r: &Result<Response, StoreError>) -> String {
    match r {
        Ok(resp) => json(resp),
        Err(e) => format!("error {} \"{}\"", e.code(), e.message()),
    }
}

/// Which keys a request touches (for explanations).
fn touched(req: &Request, out: &mut Vec<(String, String)>) {
    match req {
        Request::Range(r) => out.push((r.key.clone(), r.range_end.clone())),
        Request::Put(p) => out.push((p.key.clone(), String::new())),
        Request::DeleteRange(d) => out.push((d.key.clone(), d.range_end.clone())),
        Request::Txn(t) => {
            for c in &t.compares {
                out.push((c.key.clone(), c.range_end.clone()));
            }
            for r in t.success.iter().chain(&t.failure) {
                touched(r, out);
            }
        }
        Request::Compact(_) => {}
    }
}

/// The last writes of the keys an op touches, as of revision `at`: the window that
/// explains the model's answer.
fn context(
    h: &History,
    store: &Store,
    made_by: &[Option<usize>],
    op: usize,
    at: i64,
) -> (Vec<usize>, String) {
    let mut ranges = Vec::new();
    touched(&h.ops[op].request, &mut ranges);
    let mut ops = Vec::new();
    let mut s = String::new();
    for (key, end) in ranges {
        // The newest revisions that touched the range, up to `at`.
        let mut found = 0;
        let mut rev = at;
        while rev >= 2 && found < 3 {
            if store
                .events(rev)
                .iter()
                .any(|e| super::store::in_range(&key, &end, &e.kv.key))
            {
                found += 1;
                if let Some(Some(w)) = made_by.get(rev as usize) {
                    if !ops.contains(w) {
                        ops.push(*w);
                        s.push_str(&format!(
                            "  revision {rev} was made by {}\n",
                            describe_op(&h.ops[*w])
                        ));
                    }
                }
            }
            rev -= 1;
        }
        if found == 0 {
            s.push_str(&format!(
                "  no write touched {key:?}{} up to revision {at}\n",
                if end.is_empty() {
                    String::new()
                } else {
                    format!("..{end:?}")
                }
            ));
        }
    }
    (ops, s)
}

pub(crate) fn search(h: &History, classes: &[Class], limits: Limits) -> LinResult {
    let mut violations = Vec::new();
    real_time(h, classes, &mut violations);

    let mut writes: BTreeMap<i64, usize> = BTreeMap::new();
    let mut reads: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut compacts: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut serials: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut indet = Vec::new();
    let mut max_rev = 1i64;
    for (i, c) in classes.iter().enumerate() {
        match *c {
            Class::Write(r) => {
                if r < 2 {
                    violations.push(Violation {
                        kind: ViolationKind::Response,
                        ops: vec![h.ops[i].id],
                        explanation: format!(
                            "a write answered header revision {r}; the first write makes revision 2\n  {}",
                            describe_op(&h.ops[i])
                        ),
                    });
                    continue;
                }
                if let Some(&other) = writes.get(&r) {
                    violations.push(Violation {
                        kind: ViolationKind::DuplicateRevision,
                        ops: vec![h.ops[other].id, h.ops[i].id],
                        explanation: format!(
                            "two writes were both acknowledged as making revision {r}\n  {}\n  {}",
                            describe_op(&h.ops[other]),
                            describe_op(&h.ops[i])
                        ),
                    });
                    continue;
                }
                writes.insert(r, i);
                max_rev = max_rev.max(r);
            }
            Class::Read(r) => {
                if r < 1 {
                    violations.push(Violation {
                        kind: ViolationKind::Response,
                        ops: vec![h.ops[i].id],
                        explanation: format!(
                            "header revision {r} (a store starts at 1)\n  {}",
                            describe_op(&h.ops[i])
                        ),
                    });
                    continue;
                }
                if matches!(h.ops[i].request, Request::Compact(_)) {
                    compacts.entry(r).or_default().push(i);
                } else {
                    reads.entry(r).or_default().push(i);
                }
                max_rev = max_rev.max(r);
            }
            Class::Serial(r) => {
                if r >= 1 {
                    serials.entry(r).or_default().push(i);
                }
                max_rev = max_rev.max(r);
            }
            Class::IndetWrite => indet.push(i),
            _ => {}
        }
    }
    let ev = evidence(h);
    if let Some((&r, _)) = ev.iter().next_back() {
        max_rev = max_rev.max(r);
    }
    for w in &h.watch_responses {
        max_rev = max_rev.max(w.header_revision);
    }
    if !violations.is_empty() {
        return LinResult {
            store: None,
            made_by: Vec::new(),
            violations,
            unknown: false,
            indeterminate_applied: 0,
            steps: 0,
            backtracks: 0,
        };
    }

    // deadline[r]: the earliest return among answered operations in slots ≥ r.
    let n_slots = (max_rev + 2) as usize;
    let mut deadline = vec![u64::MAX; n_slots + 1];
    for (i, c) in classes.iter().enumerate() {
        if let Class::Write(r) | Class::Read(r) = *c {
            if r >= 0 && (r as usize) < n_slots {
                let d = &mut deadline[r as usize];
                *d = (*d).min(ret(&h.ops[i]));
            }
        }
    }
    for r in (0..n_slots).rev() {
        deadline[r] = deadline[r].min(deadline[r + 1]);
    }
    indet.sort_by_key(|&i| (h.ops[i].call_ns, h.ops[i].id));
    let (pinned_at, unpinned) = pin(h, &indet, &ev);

    let mut store = Store::new();
    let mut made_by: Vec<Option<usize>> = vec![None; n_slots];
    let mut used = vec![false; h.ops.len()];
    let mut frames: Vec<Frame> = Vec::new();
    let mut resume: Option<Frame> = None;
    let mut best: Option<Fail> = None;
    let mut steps = 0u64;
    let mut backtracks = 0u64;
    let mut r = 1i64;
    let no_ev = Vec::new();
    let unknown = |steps, backtracks, violations| LinResult {
        store: None,
        made_by: Vec::new(),
        violations,
        unknown: true,
        indeterminate_applied: 0,
        steps,
        backtracks,
    };
    loop {
        // Slot 1 has no write; its reads and compacts are checked like the others'.
        let fail: Option<Fail> = if r > max_rev {
            break;
        } else {
            steps += 1;
            if steps > limits.max_steps {
                return unknown(steps, backtracks, violations);
            }
            if steps.is_multiple_of(4096) {
                if let Some(d) = limits.deadline {
                    if Instant::now() > d {
                        return unknown(steps, backtracks, violations);
                    }
                }
            }
            let mut fail = None;
            if r == 1 {
                // Nothing to place.
            } else if let Some(&w) = writes.get(&r) {
                let op = &h.ops[w];
                let before = store.mark();
                let got = store.apply(&op.request);
                let Outcome::Ok(rec) = &op.outcome else {
                    unreachable!("answered write")
                };
                let ok = matches!(&got, Ok(resp) if store.rev == r && normalize(resp, true) == normalize(rec, true));
                if ok {
                    made_by[r as usize] = Some(w);
                } else {
                    let changed = store.rev == r;
                    store.rollback(before);
                    let (mut ops, ctx) = context(h, &store, &made_by, w, r - 1);
                    ops.push(w);
                    fail = Some(Fail {
                        rev: r,
                        ops,
                        kind: ViolationKind::Response,
                        text: format!(
                            "{}\n  was acknowledged as making revision {r}; the model at revision {} answers {}{}\n  it got {}\n{ctx}",
                            describe_op(op),
                            r - 1,
                            answer(&got),
                            if got.is_ok() && !changed { " (changing nothing)" } else { "" },
                            json(rec),
                        ),
                    });
                }
            } else {
                // A gap: an indeterminate write made this revision.
                let mut frame = resume.take().unwrap_or_else(|| Frame {
                    rev: r,
                    cands: match pinned_at.get(&r) {
                        // A write whose unique value was seen at this revision.
                        Some(p) => p
                            .iter()
                            .copied()
                            .filter(|&i| !used[i] && h.ops[i].call_ns <= deadline[r as usize])
                            .collect(),
                        // Unobserved: any write not pinned elsewhere, latest call first
                        // (the likeliest to have taken effect last).
                        None => unpinned
                            .iter()
                            .rev()
                            .copied()
                            .filter(|&i| !used[i] && h.ops[i].call_ns <= deadline[r as usize])
                            .collect(),
                    },
                    next: 0,
                    mark: store.mark(),
                    chosen: None,
                });
                let want = ev.get(&r).unwrap_or(&no_ev);
                while frame.next < frame.cands.len() {
                    let c = frame.cands[frame.next];
                    frame.next += 1;
                    if used[c] {
                        continue;
                    }
                    let m = store.mark();
                    if store.apply(&h.ops[c].request).is_ok()
                        && store.rev == r
                        && satisfies(&store, r, want)
                    {
                        used[c] = true;
                        frame.chosen = Some(c);
                        made_by[r as usize] = Some(c);
                        break;
                    }
                    store.rollback(m);
                }
                if frame.chosen.is_some() {
                    frames.push(frame);
                } else {
                    let mut text = format!(
                        "no acknowledged write made revision {r}, and no indeterminate write could have: "
                    );
                    if frame.cands.is_empty() {
                        text.push_str(&format!("none was invoked early enough (before an operation at revision ≥ {r} returned) and left unused"));
                    } else {
                        text.push_str(&format!(
                            "{} candidate(s) invoked early enough, none changes the model at revision {} into what was observed at revision {r}",
                            frame.cands.len(),
                            r - 1
                        ));
                    }
                    for e in want {
                        text.push_str(&format!(
                            "\n  observed at revision {r}: {}",
                            match e {
                                Evidence::Put(kv) => format!("put {}", json(kv)),
                                Evidence::Delete(k) => format!("delete {k:?}"),
                            }
                        ));
                    }
                    let mut ops: Vec<usize> = frame.cands.clone();
                    ops.truncate(5);
                    fail = Some(Fail {
                        rev: r,
                        ops,
                        kind: ViolationKind::UnexplainedRevision,
                        text,
                    });
                }
            }
            if fail.is_none() {
                fail = check_slot(h, &mut store, &made_by, r, &reads, &compacts)
                    .or_else(|| check_serials(h, &store, &made_by, r, &serials));
            }
            fail
        };
        match fail {
            None => {
                if frames.is_empty() {
                    store.commit();
                }
                r += 1;
            }
            Some(f) => {
                if best.as_ref().is_none_or(|b| f.rev > b.rev) {
                    best = Some(f);
                }
                let Some(mut fr) = frames.pop() else {
                    let f = best.expect("a failure");
                    violations.push(Violation {
                        kind: f.kind,
                        ops: f.ops.iter().map(|&i| h.ops[i].id).collect(),
                        explanation: f.text,
                    });
                    return LinResult {
                        store: None,
                        made_by,
                        violations,
                        unknown: false,
                        indeterminate_applied: 0,
                        steps,
                        backtracks,
                    };
                };
                backtracks += 1;
                store.rollback(fr.mark);
                if let Some(c) = fr.chosen.take() {
                    used[c] = false;
                }
                for x in made_by.iter_mut().skip(fr.rev as usize) {
                    *x = None;
                }
                r = fr.rev;
                resume = Some(fr);
            }
        }
    }
    let applied = made_by
        .iter()
        .flatten()
        .filter(|&&i| classes[i] == Class::IndetWrite)
        .count();
    LinResult {
        store: Some(store),
        made_by,
        violations,
        unknown: false,
        indeterminate_applied: applied,
        steps,
        backtracks,
    }
}

/// The smallest revision a request reads at explicitly (None: none).
fn min_read_revision(req: &Request) -> Option<i64> {
    match req {
        Request::Range(r) if r.revision > 0 => Some(r.revision),
        Request::Txn(t) => t
            .success
            .iter()
            .chain(&t.failure)
            .filter_map(min_read_revision)
            .min(),
        _ => None,
    }
}

/// Serializable reads answered at revision `r` must equal the model at `r` (the store is
/// at `r`): a state constraint like any other, so the search may backtrack on it; their
/// order in real time is checked apart, per member.
fn check_serials(
    h: &History,
    store: &Store,
    made_by: &[Option<usize>],
    r: i64,
    serials: &BTreeMap<i64, Vec<usize>>,
) -> Option<Fail> {
    for &i in serials.get(&r)? {
        let op = &h.ops[i];
        let Outcome::Ok(rec) = &op.outcome else {
            continue;
        };
        let Some(got) = store.read(&op.request, r, false) else {
            continue;
        };
        if !matches!(&got, Ok(resp) if normalize(resp, true) == normalize(rec, true)) {
            let (mut ops, ctx) = context(h, store, made_by, i, r);
            ops.push(i);
            return Some(Fail {
                rev: r,
                ops,
                kind: ViolationKind::Serializable,
                text: format!(
                    "{}\n  serializable read answered at revision {r}: {}\n  the model at revision {r} answers {}\n{ctx}",
                    describe_op(op),
                    json(rec),
                    answer(&got)
                ),
            });
        }
    }
    None
}

/// Check the reads and compacts answered at revision `r` (the store is at `r`).
fn check_slot(
    h: &History,
    store: &mut Store,
    made_by: &[Option<usize>],
    r: i64,
    reads: &BTreeMap<i64, Vec<usize>>,
    compacts: &BTreeMap<i64, Vec<usize>>,
) -> Option<Fail> {
    let empty = Vec::new();
    let slot_compacts = compacts.get(&r).unwrap_or(&empty);
    for &i in reads.get(&r).unwrap_or(&empty) {
        let op = &h.ops[i];
        let Outcome::Ok(rec) = &op.outcome else {
            continue;
        };
        let got = match store.read(&op.request, r, true) {
            Some(x) => x,
            None => {
                // A write that changed nothing: apply and undo.
                let m = store.mark();
                let got = store.apply(&op.request);
                let changed = store.rev != r;
                store.rollback(m);
                if changed {
                    let (mut ops, ctx) = context(h, store, made_by, i, r);
                    ops.push(i);
                    return Some(Fail {
                        rev: r,
                        ops,
                        kind: ViolationKind::Response,
                        text: format!(
                            "{}\n  answered as changing nothing at revision {r}, but in the model at revision {r} it writes: {}\n{ctx}",
                            describe_op(op),
                            answer(&got)
                        ),
                    });
                }
                got
            }
        };
        if !matches!(&got, Ok(resp) if normalize(resp, true) == normalize(rec, true)) {
            let (mut ops, ctx) = context(h, store, made_by, i, r);
            ops.push(i);
            return Some(Fail {
                rev: r,
                ops,
                kind: ViolationKind::Response,
                text: format!(
                    "{}\n  answered at revision {r}: {}\n  the model at revision {r} answers {}\n{ctx}",
                    describe_op(op),
                    json(rec),
                    answer(&got)
                ),
            });
        }
        // A compaction of this slot that returned before this read was invoked came first.
        if let Some(q) = min_read_revision(&op.request) {
            for &c in slot_compacts {
                if let Request::Compact(cr) = &h.ops[c].request {
                    if cr.revision > q && ret(&h.ops[c]) < op.call_ns {
                        return Some(Fail {
                            rev: r,
                            ops: vec![c, i],
                            kind: ViolationKind::Response,
                            text: format!(
                                "{}\n  read revision {q} after a compaction to {} had returned:\n  {}",
                                describe_op(op),
                                cr.revision,
                                describe_op(&h.ops[c])
                            ),
                        });
                    }
                }
            }
        }
    }
    let mut sc: Vec<usize> = slot_compacts.clone();
    sc.sort_by_key(|&c| match &h.ops[c].request {
        Request::Compact(cr) => cr.revision,
        _ => 0,
    });
    for c in sc {
        let op = &h.ops[c];
        let before = store.compact;
        let got = store.apply(&op.request);
        if !matches!(&got, Ok(Response::Compact(x)) if x.header_revision == r) {
            return Some(Fail {
                rev: r,
                ops: vec![c],
                kind: ViolationKind::Response,
                text: format!(
                    "{}\n  answered at revision {r}; the model (compact revision {before}) answers {}",
                    describe_op(op),
                    answer(&got)
                ),
            });
        }
    }
    None
}
