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
        Response::Compact(_) | Response::LeaseRevoke(_) => {}
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
/// Returns the pinned writes by revision, the others (in call order), and the (key,
/// value) pairs that one operation puts and nobody ever saw.
#[allow(clippy::type_complexity)]
fn pin<'a>(
    h: &'a History,
    indet: &[usize],
    ev: &'a BTreeMap<i64, Vec<Evidence>>,
) -> (
    BTreeMap<i64, Vec<usize>>,
    Vec<usize>,
    std::collections::HashSet<(&'a str, &'a str)>,
) {
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
    let unseen = writers
        .iter()
        .filter(|(kv, &n)| n == 1 && !seen.contains_key(kv))
        .map(|(kv, _)| *kv)
        .collect();
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
    (pinned, unpinned, unseen)
}

/// When a put nobody ever saw can have taken effect: at revision R only if no read
/// observed its key at a revision x with R ≤ x < E, where E is the first revision after R
/// that may have overwritten the key (an acknowledged write that may touch it, or any
/// revision no acknowledged write claims).
struct Visibility {
    /// Per key: sorted revisions at which some Range showed the key's state (present?).
    obs: std::collections::HashMap<String, Vec<(i64, bool)>>,
    /// Per key: sorted revisions of acknowledged writes that may touch it.
    writes: std::collections::HashMap<String, Vec<i64>>,
    /// Sorted revisions no acknowledged write claims.
    gaps: Vec<i64>,
    /// Per key: sorted (revision, version, create_revision) of the key's kv as seen there
    /// (Range kvs, Put prev_kvs, watch events and their prev_kvs).
    versions: std::collections::HashMap<String, Vec<(i64, i64, i64)>>,
    /// Per key: sorted revisions of acknowledged puts (branches taken).
    puts: std::collections::HashMap<String, Vec<i64>>,
}

impl Visibility {
    fn new(
        h: &History,
        classes: &[Class],
        acked: &BTreeMap<i64, usize>,
        max_rev: i64,
    ) -> Visibility {
        let mut keys: std::collections::BTreeSet<&str> = Default::default();
        for op in &h.ops {
            let mut p = Vec::new();
            puts_of(&op.request, &mut p);
            keys.extend(p.iter().map(|kv| kv.0));
        }
        let in_keys = |k: &str, e: &str| -> Vec<String> {
            keys.iter()
                .filter(|x| super::store::in_range(k, e, x))
                .map(|x| x.to_string())
                .collect()
        };
        let mut obs: std::collections::HashMap<String, Vec<(i64, bool)>> = Default::default();
        for (i, op) in h.ops.iter().enumerate() {
            if !matches!(
                classes[i],
                Class::Read(_) | Class::Serial(_) | Class::Write(_)
            ) {
                continue;
            }
            let (Request::Range(q), Outcome::Ok(Response::Range(r))) = (&op.request, &op.outcome)
            else {
                continue;
            };
            if q.count_only || q.limit > 0 || q.keys_only {
                continue;
            }
            let x = if q.revision > 0 {
                q.revision
            } else {
                r.header_revision
            };
            for k in in_keys(&q.key, &q.range_end) {
                let present = r.kvs.iter().any(|kv| kv.key == k);
                obs.entry(k).or_default().push((x, present));
            }
        }
        let mut writes: std::collections::HashMap<String, Vec<i64>> = Default::default();
        for (&r, &i) in acked {
            for k in &keys {
                if writes_into(&h.ops[i].request, k, "") {
                    writes.entry(k.to_string()).or_default().push(r);
                }
            }
        }
        for v in obs.values_mut() {
            v.sort_unstable();
        }
        for v in writes.values_mut() {
            v.sort_unstable();
        }
        let gaps = (2..=max_rev).filter(|r| !acked.contains_key(r)).collect();
        let mut versions: std::collections::HashMap<String, Vec<(i64, i64, i64)>> =
            Default::default();
        let mut seen = |x: i64, kv: &KeyValue| {
            if kv.create_revision > 0 {
                versions.entry(kv.key.clone()).or_default().push((
                    x,
                    kv.version,
                    kv.create_revision,
                ));
            }
        };
        for (i, op) in h.ops.iter().enumerate() {
            if !matches!(
                classes[i],
                Class::Read(_) | Class::Serial(_) | Class::Write(_)
            ) {
                continue;
            }
            match (&op.request, &op.outcome) {
                (Request::Range(q), Outcome::Ok(Response::Range(r))) => {
                    let x = if q.revision > 0 {
                        q.revision
                    } else {
                        r.header_revision
                    };
                    for kv in &r.kvs {
                        seen(x, kv);
                    }
                }
                (Request::Put(_), Outcome::Ok(Response::Put(r))) => {
                    if let Some(kv) = &r.prev_kv {
                        seen(r.header_revision - 1, kv);
                    }
                }
                _ => {}
            }
        }
        for r in &h.watch_responses {
            for e in &r.events {
                if e.kind == EventType::Put {
                    seen(e.kv.mod_revision, &e.kv);
                }
                if let Some(p) = &e.prev_kv {
                    seen(e.kv.mod_revision - 1, p);
                }
            }
        }
        let mut puts: std::collections::HashMap<String, Vec<i64>> = Default::default();
        for (&r, &i) in acked {
            if let Outcome::Ok(resp) = &h.ops[i].outcome {
                let mut taken = Vec::new();
                taken_puts(&h.ops[i].request, resp, &mut taken);
                for (k, _) in taken {
                    puts.entry(k.to_string()).or_default().push(r);
                }
            }
        }
        for v in versions.values_mut() {
            v.sort_unstable();
        }
        Visibility {
            obs,
            writes,
            gaps,
            versions,
            puts,
        }
    }

    /// The observations of `key` from revision `r` until it may have been overwritten.
    fn window(&self, key: &str, r: i64) -> &[(i64, bool)] {
        let next = |v: &[i64]| v.get(v.partition_point(|&x| x <= r)).copied();
        let end = [self.writes.get(key).and_then(|v| next(v)), next(&self.gaps)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(i64::MAX);
        match self.obs.get(key) {
            Some(o) => {
                let from = o.partition_point(|&(x, _)| x < r);
                let to = o.partition_point(|&(x, _)| x < end);
                &o[from..to.max(from)]
            }
            None => &[],
        }
    }

    /// Whether the versions seen around `r` leave no room for another put of `key` at
    /// `r`: seen at x1 < r and at x2 ≥ r with one create_revision (so it existed
    /// throughout and its version counted every put), and the acknowledged puts in
    /// (x1, x2] account for the whole version difference.
    fn no_put_room(&self, key: &str, r: i64) -> bool {
        let Some((x1, v1, x2, v2)) = self.straddle(key, r) else {
            return false;
        };
        let acked = self.puts.get(key).map_or(0, |p| {
            (p.partition_point(|&y| y <= x2) - p.partition_point(|&y| y <= x1)) as i64
        });
        v2 - v1 == acked
    }

    /// Whether the key surely existed from before `r` to at least `r` (seen on both sides
    /// with one create_revision).
    fn throughout(&self, key: &str, r: i64) -> bool {
        self.straddle(key, r).is_some()
    }

    /// The nearest sightings of `key` below `r` and at or above it, if they share a
    /// create_revision: (x1, version1, x2, version2).
    fn straddle(&self, key: &str, r: i64) -> Option<(i64, i64, i64, i64)> {
        let o = self.versions.get(key)?;
        let i = o.partition_point(|&(x, _, _)| x < r);
        let (Some(&(x1, v1, c1)), Some(&(x2, v2, c2))) =
            (i.checked_sub(1).and_then(|j| o.get(j)), o.get(i))
        else {
            return None;
        };
        (c1 == c2).then_some((x1, v1, x2, v2))
    }

    /// Whether an indeterminate write may have made gap revision `r` unseen by the reads:
    /// a Put of a (key, value) nobody saw is impossible where its key was read; a
    /// single-key DeleteRange (which must have deleted the key to make a revision) where
    /// the key was read as present; a Put where the versions seen around `r` leave no
    /// room for it; a Txn when every branch that writes is impossible so.
    fn possible(
        &self,
        req: &Request,
        r: i64,
        unseen: &std::collections::HashSet<(&str, &str)>,
    ) -> bool {
        let put_ok = |p: &PutRequest| {
            (!unseen.contains(&(p.key.as_str(), p.value.as_str()))
                || self.window(&p.key, r).is_empty())
                && !self.no_put_room(&p.key, r)
        };
        // A delete at r would remove a key that was there throughout.
        let delete_ok = |d: &DeleteRangeRequest| {
            !self
                .versions
                .keys()
                .any(|k| super::store::in_range(&d.key, &d.range_end, k) && self.throughout(k, r))
        };
        match req {
            Request::Put(p) => put_ok(p),
            Request::DeleteRange(d) if d.range_end.is_empty() => {
                !self.window(&d.key, r).iter().any(|&(_, present)| present) && delete_ok(d)
            }
            Request::DeleteRange(d) => delete_ok(d),
            Request::Txn(t) => [&t.success, &t.failure].into_iter().any(|b| {
                b.iter().any(super::store::may_write)
                    && b.iter().all(|op| match op {
                        Request::Put(p) => put_ok(p),
                        Request::DeleteRange(d) => delete_ok(d),
                        _ => true,
                    })
            }),
            // A revocation at r deletes a key of its lease; not one that lived through r.
            Request::LeaseRevoke(l) => !l.keys.iter().all(|k| self.throughout(k, r)),
            Request::Range(_) | Request::Compact(_) => false,
        }
    }
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

/// What one watcher saw of the revisions it covers: from its start revision to the last
/// event it received, every change to a key it watches (its filters allowed) reached it
/// (the Reliable rule), so a revision it covers and showed nothing of changed none of
/// its keys. Gap revisions are filled only by writes that agree with that silence (the
/// watch check would reject any other placement after the search).
struct Cover {
    key: String,
    range_end: String,
    no_put: bool,
    no_delete: bool,
    from: i64,
    to: i64,
    /// (revision, type, key) of every event received.
    seen: std::collections::HashSet<(i64, EventType, String)>,
}

fn covers(h: &History) -> Vec<Cover> {
    let mut out = Vec::new();
    for w in &h.watches {
        let resps: Vec<&WatchResponse> = h
            .watch_responses
            .iter()
            .filter(|r| r.watcher == w.watcher)
            .collect();
        let from = if w.start_revision > 0 {
            w.start_revision
        } else if let Some(c) = resps.iter().find(|r| r.created) {
            c.header_revision + 1
        } else {
            continue;
        };
        let seen: std::collections::HashSet<(i64, EventType, String)> = resps
            .iter()
            .flat_map(|r| r.events.iter())
            .map(|e| (e.kv.mod_revision, e.kind, e.kv.key.clone()))
            .collect();
        let Some(to) = seen.iter().map(|(r, _, _)| *r).max() else {
            continue;
        };
        out.push(Cover {
            key: w.key.clone(),
            range_end: w.range_end.clone(),
            no_put: w.filters.contains(&WatchFilter::Noput),
            no_delete: w.filters.contains(&WatchFilter::Nodelete),
            from,
            to,
            seen,
        });
    }
    out
}

/// Whether the model's events at `rev` reached every watcher covering `rev` that should
/// have seen them (see [`Cover`]).
fn quiet(store: &Store, rev: i64, covers: &[Cover]) -> bool {
    let events = store.events(rev);
    covers
        .iter()
        .filter(|c| c.from <= rev && rev <= c.to)
        .all(|c| {
            events.iter().all(|e| {
                let filtered = match e.kind {
                    EventType::Put => c.no_put,
                    EventType::Delete => c.no_delete,
                };
                filtered
                    || !super::store::in_range(&c.key, &c.range_end, &e.kv.key)
                    || c.seen.contains(&(rev, e.kind, e.kv.key.clone()))
            })
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
    /// When it did: the deepest failure it had met (a violation unless some other
    /// placement of the indeterminate writes explains it).
    pub probable: Option<Violation>,
    /// Indeterminate writes the linearization applied.
    pub indeterminate_applied: usize,
    /// Search steps (slots placed, including retries).
    pub steps: u64,
    /// Backtracks.
    pub backtracks: u64,
    /// Choices jumped over when backtracking (they could not matter).
    pub jumps: u64,
}

struct Fail {
    rev: i64,
    ops: Vec<usize>,
    text: String,
    kind: ViolationKind,
    /// What the failure depends on (for backjumping).
    conflict: Conflict,
}

/// What a failure depends on: the state of these key ranges, and whether these
/// indeterminate writes were still free. A gap choice whose every possible candidate
/// writes none of the ranges (and that did not take one of the ops) cannot change the
/// outcome, so backtracking jumps over it (conflict-directed backjumping).
#[derive(Debug, Clone, Default)]
struct Conflict {
    /// Key ranges, each with the revision of the last acknowledged delete of its (single)
    /// key before the failure: writes at or below it cannot matter, the delete reset the
    /// key (None: not yet worked out).
    ranges: Vec<(String, String, Option<i64>)>,
    ops: Vec<usize>,
}

impl Conflict {
    fn of(h: &History, i: usize) -> Conflict {
        let mut ranges = Vec::new();
        touched(&h.ops[i].request, &mut ranges);
        // A read at an older revision depends on the key's whole history.
        let since = min_read_revision(&h.ops[i].request).map(|_| 0);
        Conflict {
            ranges: ranges.into_iter().map(|(k, e)| (k, e, since)).collect(),
            ops: Vec::new(),
        }
    }

    /// Work out the resets for a failure at revision `rev`.
    fn settle(&mut self, resets: &std::collections::HashMap<String, Vec<i64>>, rev: i64) {
        for (k, e, since) in &mut self.ranges {
            if since.is_none() {
                let last = if e.is_empty() {
                    resets.get(k.as_str()).and_then(|v| {
                        let n = v.partition_point(|&x| x < rev);
                        n.checked_sub(1).map(|n| v[n])
                    })
                } else {
                    None
                };
                *since = Some(last.unwrap_or(0));
            }
        }
    }

    fn merge(&mut self, o: &Conflict) {
        for r in &o.ranges {
            if !self.ranges.contains(r) {
                self.ranges.push(r.clone());
            }
        }
        for i in &o.ops {
            if !self.ops.contains(i) {
                self.ops.push(*i);
            }
        }
    }
}

/// Whether two key ranges (etcd's conventions: end "" = the key alone, "\0" = no upper
/// bound) share a key.
fn overlap(a: (&str, &str), b: (&str, &str)) -> bool {
    // Whether x lies below the range's upper bound.
    let below = |x: &str, (k, e): (&str, &str)| {
        if e.is_empty() {
            x <= k
        } else if e == "\0" {
            true
        } else {
            x < e
        }
    };
    let empty = |(k, e): (&str, &str)| !e.is_empty() && e != "\0" && k >= e;
    !empty(a) && !empty(b) && below(a.0, b) && below(b.0, a)
}

/// Whether a request may write into the range [key, end) (any branch).
fn writes_into(req: &Request, key: &str, end: &str) -> bool {
    match req {
        Request::Put(p) => overlap((&p.key, ""), (key, end)),
        Request::DeleteRange(d) => overlap((&d.key, &d.range_end), (key, end)),
        Request::Txn(t) => t
            .success
            .iter()
            .chain(&t.failure)
            .any(|r| writes_into(r, key, end)),
        Request::LeaseRevoke(l) => l.keys.iter().any(|k| overlap((k, ""), (key, end))),
        Request::Range(_) | Request::Compact(_) => false,
    }
}

/// The keys an answered request deleted for sure (single-key deletes that deleted one,
/// and the prev_kvs of range deletes), following the branches taken.
fn deleted_keys(req: &Request, resp: &Response, out: &mut Vec<String>) {
    match (req, resp) {
        (Request::DeleteRange(d), Response::DeleteRange(r)) => {
            if d.range_end.is_empty() && r.deleted == 1 {
                out.push(d.key.clone());
            } else if d.prev_kv {
                out.extend(r.prev_kvs.iter().map(|kv| kv.key.clone()));
            }
        }
        (Request::Txn(t), Response::Txn(r)) => {
            let branch = if r.succeeded { &t.success } else { &t.failure };
            for (q, x) in branch.iter().zip(&r.responses) {
                deleted_keys(q, x, out);
            }
        }
        _ => {}
    }
}

struct Frame {
    rev: i64,
    /// Every write that may fill this gap (used ones are skipped when tried).
    cands: Vec<usize>,
    next: usize,
    mark: usize,
    chosen: Option<usize>,
    /// Conflicts of the failures met below this choice.
    conflict: Conflict,
    /// Candidates refused at this revision (their refusal depends on the state of what
    /// they touch), and ones passed over because a lower choice had taken them.
    refused: Vec<usize>,
    /// How many of the refused would have fit what was observed at this revision but
    /// for a watcher that covered it and did not see their events (see [`Cover`]).
    silenced: usize,
    taken: Vec<usize>,
    /// When resumed by a failure its last choice could not cause: that failure's
    /// conflict; alternatives that cannot change it either are passed over (they would
    /// meet the same failure).
    neutral_to: Option<Conflict>,
}

impl Conflict {
    /// Whether choosing `c` at revision `rev` instead of nothing can change the outcome
    /// of a failure with this conflict.
    fn touched_by(&self, h: &History, rev: i64, c: usize) -> bool {
        self.ops.contains(&c)
            || self.ranges.iter().any(|(k, e, since)| {
                rev > since.unwrap_or(0) && writes_into(&h.ops[c].request, k, e)
            })
    }
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
            max_steps: 2_000_000,
            deadline: None,
        }
    }
}

pub(crate) fn ret(op: &Op) -> u64 {
    op.return_ns.unwrap_or(u64::MAX)
}

/// Checks that no placement of indeterminate writes can change, run before the search
/// (they make most wrong answers cheap to find even when the search would have to try
/// many placements): every kv seen anywhere was written — its (key, value) is put by some
/// operation that was not refused, and when every writer of that (key, value) was
/// acknowledged, at the kv's `mod_revision`; and a key read at revision R with
/// `mod_revision` m had no acknowledged put between m and R (exclusive, inclusive).
fn provenance(h: &History, classes: &[Class], out: &mut Vec<Violation>) {
    use std::collections::HashMap;
    // (key, value) -> (writers, acknowledged revisions).
    type Writers<'a> = HashMap<(&'a str, &'a str), (usize, Vec<(i64, u64)>)>;
    let mut writers: Writers = HashMap::new();
    // key -> acknowledged put revisions (sorted later), with the op id.
    let mut acked_puts: HashMap<&str, Vec<(i64, u64)>> = HashMap::new();
    for (i, op) in h.ops.iter().enumerate() {
        if matches!(op.outcome, Outcome::Error(_)) {
            continue;
        }
        let mut all = Vec::new();
        puts_of(&op.request, &mut all);
        for kv in &all {
            writers.entry(*kv).or_default().0 += 1;
        }
        if let (Class::Write(r), Outcome::Ok(resp)) = (classes[i], &op.outcome) {
            let mut taken = Vec::new();
            taken_puts(&op.request, resp, &mut taken);
            for kv in taken {
                writers.entry(kv).or_default().1.push((r, op.id));
                acked_puts.entry(kv.0).or_default().push((r, op.id));
            }
        }
    }
    for v in acked_puts.values_mut() {
        v.sort();
    }
    let mut reported = 0;
    let mut report =
        |out: &mut Vec<Violation>, kind: ViolationKind, ops: Vec<u64>, text: String| {
            reported += 1;
            if reported <= 20 {
                out.push(Violation {
                    kind,
                    ops,
                    explanation: text,
                });
            }
        };
    // (kv, op index or (watcher, is prev_kv)).
    type Source = Result<usize, (u64, bool)>;
    let mut seen: Vec<(&KeyValue, Source)> = Vec::new();
    for (i, op) in h.ops.iter().enumerate() {
        if let Outcome::Ok(resp) = &op.outcome {
            let mut kvs = Vec::new();
            collect_kvs(resp, Some(&op.request), &mut kvs);
            seen.extend(kvs.into_iter().map(|kv| (kv, Ok(i))));
        }
    }
    for r in &h.watch_responses {
        for e in &r.events {
            if e.kind == EventType::Put {
                seen.push((&e.kv, Err((r.watcher, false))));
            }
            if let Some(p) = &e.prev_kv {
                seen.push((p, Err((r.watcher, true))));
            }
        }
    }
    for (kv, src) in seen {
        let wrong = match writers.get(&(kv.key.as_str(), kv.value.as_str())) {
            None => None,
            Some((n, acked))
                if *n == acked.len() && !acked.iter().any(|a| a.0 == kv.mod_revision) =>
            {
                Some(acked)
            }
            _ => continue,
        };
        // Only now (a violation) describe the source.
        let (kind, mut ids, who) = match src {
            Ok(i) => (
                ViolationKind::Response,
                vec![h.ops[i].id],
                describe_op(&h.ops[i]),
            ),
            Err((w, prev)) => (
                ViolationKind::Watch(super::watch::WatchRule::if_prev(prev)),
                vec![w],
                format!(
                    "watcher {w}: {}",
                    if prev {
                        "an event's prev_kv"
                    } else {
                        "an event"
                    }
                ),
            ),
        };
        let text = match wrong {
            None => format!(
                "{who}\n  saw {:?}={:?} (mod_revision {}), a value no operation of the history put to that key",
                kv.key, kv.value, kv.mod_revision
            ),
            Some(acked) => {
                ids.extend(acked.iter().map(|a| a.1));
                format!(
                    "{who}\n  saw {:?}={:?} with mod_revision {}, but that value was put only by op(s) acknowledged at revision(s) {:?}",
                    kv.key,
                    kv.value,
                    kv.mod_revision,
                    acked.iter().map(|a| a.0).collect::<Vec<_>>()
                )
            }
        };
        report(out, kind, ids, text);
    }
    // Stale kvs in Range answers (linearizable or serializable): the key's state at the
    // revision read cannot be older than an acknowledged put at or below it.
    for op in &h.ops {
        let (Outcome::Ok(Response::Range(resp)), Request::Range(q)) = (&op.outcome, &op.request)
        else {
            continue;
        };
        let at = if q.revision > 0 {
            q.revision
        } else {
            resp.header_revision
        };
        for kv in &resp.kvs {
            let Some(puts) = acked_puts.get(kv.key.as_str()) else {
                continue;
            };
            let n = puts.partition_point(|p| p.0 <= at);
            if n > 0 && puts[n - 1].0 > kv.mod_revision {
                let w = puts[n - 1];
                report(
                    out,
                    ViolationKind::Response,
                    vec![w.1, op.id],
                    format!(
                        "{}\n  read {:?} at revision {at} with mod_revision {}, but op {} put it at revision {} (≤ {at})",
                        describe_op(op),
                        kv.key,
                        kv.mod_revision,
                        w.1,
                        w.0
                    ),
                );
            }
        }
    }
}

/// The (key, value) pairs an answered request put, following the branches its response
/// says were taken.
fn taken_puts<'a>(req: &'a Request, resp: &Response, out: &mut Vec<(&'a str, &'a str)>) {
    match (req, resp) {
        (Request::Put(p), Response::Put(_)) => out.push((&p.key, &p.value)),
        (Request::Txn(t), Response::Txn(r)) => {
            let branch = if r.succeeded { &t.success } else { &t.failure };
            for (q, x) in branch.iter().zip(&r.responses) {
                taken_puts(q, x, out);
            }
        }
        _ => {}
    }
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
        Request::LeaseRevoke(l) => {
            out.extend(l.keys.iter().map(|k| (k.clone(), String::new())));
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
    // Watchers' silence guides the choice of indeterminate writes; when it leaves a gap
    // unexplained, the search runs again without it: if that finds a linearization, the
    // watch check then names the event a watcher missed (a clearer report than an
    // unexplained revision), and if it fails too, that failure stands on its own.
    let covers = covers(h);
    let mut silenced = false;
    let r = search_in(h, classes, limits, &covers, &mut silenced);
    if r.store.is_some() || r.unknown || !silenced {
        return r;
    }
    search_in(h, classes, limits, &[], &mut silenced)
}

fn search_in(
    h: &History,
    classes: &[Class],
    limits: Limits,
    covers: &[Cover],
    silenced: &mut bool,
) -> LinResult {
    let mut violations = Vec::new();
    real_time(h, classes, &mut violations);
    provenance(h, classes, &mut violations);

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
            probable: None,
            indeterminate_applied: 0,
            steps: 0,
            backtracks: 0,
            jumps: 0,
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
    let (pinned_at, unpinned, unseen) = pin(h, &indet, &ev);
    let vis = Visibility::new(h, classes, &writes, max_rev);
    // Per key: revisions of acknowledged writes that surely deleted it.
    let mut resets: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for (&r, &i) in &writes {
        if let Outcome::Ok(resp) = &h.ops[i].outcome {
            let mut keys = Vec::new();
            deleted_keys(&h.ops[i].request, resp, &mut keys);
            for k in keys {
                resets.entry(k).or_default().push(r);
            }
        }
    }

    let mut store = Store::new();
    let mut made_by: Vec<Option<usize>> = vec![None; n_slots];
    let mut used = vec![false; h.ops.len()];
    let mut frames: Vec<Frame> = Vec::new();
    let mut resume: Option<Frame> = None;
    let mut best: Option<Fail> = None;
    let mut steps = 0u64;
    let mut backtracks = 0u64;
    let mut jumped = 0u64;
    let mut r = 1i64;
    let no_ev = Vec::new();
    let unknown = |steps, backtracks, jumps, violations, best: Option<Fail>| LinResult {
        store: None,
        made_by: Vec::new(),
        violations,
        unknown: true,
        probable: best.map(|f| Violation {
            kind: f.kind,
            ops: f.ops.iter().map(|&i| h.ops[i].id).collect(),
            explanation: f.text,
        }),
        indeterminate_applied: 0,
        steps,
        backtracks,
        jumps,
    };
    loop {
        // Slot 1 has no write; its reads and compacts are checked like the others'.
        let fail: Option<Fail> = if r > max_rev {
            break;
        } else {
            steps += 1;
            if steps > limits.max_steps {
                return unknown(steps, backtracks, jumped, violations, best);
            }
            if steps.is_multiple_of(4096) {
                if let Some(d) = limits.deadline {
                    if Instant::now() > d {
                        return unknown(steps, backtracks, jumped, violations, best);
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
                        conflict: Conflict::of(h, w),
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
                            .filter(|&i| h.ops[i].call_ns <= deadline[r as usize])
                            .collect(),
                        // Unobserved: any write not pinned elsewhere, latest call first
                        // (the likeliest to have taken effect last).
                        // Writes that would have been seen at this revision are left out.
                        None => unpinned
                            .iter()
                            .rev()
                            .copied()
                            .filter(|&i| h.ops[i].call_ns <= deadline[r as usize])
                            .filter(|&i| vis.possible(&h.ops[i].request, r, &unseen))
                            .collect(),
                    },
                    next: 0,
                    mark: store.mark(),
                    chosen: None,
                    conflict: Conflict::default(),
                    refused: Vec::new(),
                    silenced: 0,
                    taken: Vec::new(),
                    neutral_to: None,
                });
                let want = ev.get(&r).unwrap_or(&no_ev);
                while frame.next < frame.cands.len() {
                    let c = frame.cands[frame.next];
                    frame.next += 1;
                    if used[c] {
                        frame.taken.push(c);
                        continue;
                    }
                    if frame
                        .neutral_to
                        .as_ref()
                        .is_some_and(|n| !n.touched_by(h, r, c))
                    {
                        continue;
                    }
                    let m = store.mark();
                    if store.apply(&h.ops[c].request).is_ok()
                        && store.rev == r
                        && satisfies(&store, r, want)
                    {
                        if quiet(&store, r, covers) {
                            used[c] = true;
                            frame.chosen = Some(c);
                            made_by[r as usize] = Some(c);
                            break;
                        }
                        frame.silenced += 1;
                        *silenced = true;
                    }
                    frame.refused.push(c);
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
                        if frame.silenced > 0 {
                            text.push_str(&format!(
                                " ({} of them would have, but made an event that a watcher covering revision {r} did not receive: a watch may have missed it)",
                                frame.silenced
                            ));
                        }
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
                    let deleted: Vec<&str> = want
                        .iter()
                        .filter_map(|e| match e {
                            Evidence::Delete(k) => Some(k.as_str()),
                            _ => None,
                        })
                        .collect();
                    text.push_str(&lease_note(
                        h,
                        &store,
                        &used,
                        deadline[r as usize],
                        &deleted,
                    ));
                    let mut ops: Vec<usize> = frame.cands.clone();
                    ops.truncate(5);
                    // It depends on what failed below each candidate, on the state of
                    // whatever the candidates touch or the observations name, and on the
                    // candidates being free.
                    let mut conflict = frame.conflict.clone();
                    for &c in &frame.refused {
                        conflict.merge(&Conflict::of(h, c));
                    }
                    for &c in &frame.taken {
                        conflict.merge(&Conflict {
                            ranges: Vec::new(),
                            ops: vec![c],
                        });
                    }
                    for e in want {
                        let k = match e {
                            Evidence::Put(kv) => kv.key.clone(),
                            Evidence::Delete(k) => k.clone(),
                        };
                        conflict.merge(&Conflict {
                            ranges: vec![(k, String::new(), None)],
                            ops: Vec::new(),
                        });
                    }
                    fail = Some(Fail {
                        rev: r,
                        ops,
                        kind: ViolationKind::UnexplainedRevision,
                        conflict,
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
                let mut conflict = f.conflict.clone();
                conflict.settle(&resets, f.rev);
                if best.as_ref().is_none_or(|b| f.rev > b.rev) {
                    best = Some(f);
                }
                // Back to the newest choice that can matter; choices in between stay
                // as they are in every alternative, so they are dropped with it.
                let relevant = loop {
                    let Some(mut fr) = frames.pop() else {
                        break None;
                    };
                    let chosen = fr.chosen.take();
                    if let Some(c) = chosen {
                        used[c] = false;
                    }
                    let matters = chosen.is_some_and(|c| conflict.ops.contains(&c))
                        || conflict.ranges.iter().any(|(k, e, since)| {
                            fr.rev > since.unwrap_or(0)
                                && fr
                                    .cands
                                    .iter()
                                    .any(|&c| writes_into(&h.ops[c].request, k, e))
                        });
                    if matters {
                        fr.conflict.merge(&conflict);
                        // If the last choice could not cause this failure, neither can
                        // alternatives that leave its ranges and ops alone.
                        fr.neutral_to = match chosen {
                            Some(c) if !conflict.touched_by(h, fr.rev, c) => Some(conflict.clone()),
                            _ => None,
                        };
                        break Some(fr);
                    }
                    jumped += 1;
                    // Its own conflict was met under choices below it: keep it.
                    conflict.merge(&fr.conflict);
                };
                let Some(fr) = relevant else {
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
                        probable: None,
                        indeterminate_applied: 0,
                        steps,
                        backtracks,
                        jumps: jumped,
                    };
                };
                backtracks += 1;
                store.rollback(fr.mark);
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
        probable: None,
        indeterminate_applied: applied,
        steps,
        backtracks,
        jumps: jumped,
    }
}

/// For a revision nothing explains: the lease expiries that would have changed the store
/// there but could not have happened yet (an operation at that revision or later had
/// returned by `deadline`); only those of the keys seen deleted there, if any lease has one.
fn lease_note(
    h: &History,
    store: &Store,
    used: &[bool],
    deadline: u64,
    deleted: &[&str],
) -> String {
    let named = |l: &LeaseRevokeRequest| l.keys.iter().any(|k| deleted.contains(&k.as_str()));
    let any_named = h.ops.iter().any(|op| match &op.request {
        Request::LeaseRevoke(l) => super::lease::is_expiry(op) && named(l),
        _ => false,
    });
    let mut s = String::new();
    for (i, op) in h.ops.iter().enumerate() {
        let Request::LeaseRevoke(l) = &op.request else {
            continue;
        };
        if used[i] || !super::lease::is_expiry(op) || op.call_ns <= deadline {
            continue;
        }
        if any_named && !named(l) {
            continue;
        }
        let live: Vec<&String> = l
            .keys
            .iter()
            .filter(|k| store.kv_at(k, store.rev).is_some_and(|kv| kv.lease == l.id))
            .collect();
        if live.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "\n  lease {} (keys {live:?}) could not expire before {:.3} s (its last acknowledged grant or KeepAlive + TTL), yet an operation at this revision or a later one had returned at {:.3} s",
            l.id,
            op.call_ns as f64 / 1e9,
            deadline as f64 / 1e9
        ));
    }
    s
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
                conflict: Conflict::of(h, i),
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
                        conflict: Conflict::of(h, i),
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
                conflict: Conflict::of(h, i),
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
                            conflict: Conflict::default(),
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
                conflict: Conflict::default(),
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
