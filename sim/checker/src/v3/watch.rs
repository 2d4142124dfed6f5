//! Watch guarantees (etcd's `tests/robustness/validate/watch.go` and the API guarantees
//! page), per watcher:
//!
//! - **Ordered**: event revisions never go back; a later response starts after the
//!   previous one's last revision; within one revision events come in the order the
//!   writes of that revision were made;
//! - **Unique**: no event (revision, key) twice;
//! - **Atomic**: the events of one revision arrive in one response, all of them;
//! - **Reliable**: every change to a watched key from the watch's start revision up to
//!   the last event received is delivered (judged against the linearized writes);
//! - **Resumable**: a watch created at a start revision (e.g. last seen + 1 after a
//!   broken stream) gets exactly the changes from there: every watcher is checked from
//!   its own start, so a resumed watch is checked like any other, and a miss at its very
//!   start is reported as this rule;
//! - **PrevKV**: with `prev_kv`, an event's previous kv is the key's kv just before the
//!   revision (none for a create); without it, none. As in etcd 3.4 (the server reads the
//!   previous kv at revision - 1 and leaves it out when that read fails), an event at or
//!   below a compaction's revision may come without it, once that compaction was invoked;
//! - **IsCreate**: a put event's `create_revision == mod_revision` exactly when its
//!   `version` is 1;
//! - **Filter**: no PUT events under NOPUT, no DELETE under NODELETE; no event outside the
//!   watched range;
//! - **Compaction**: a watch canceled with `compact_revision` c must have started below c
//!   and gets no events after the cancel; what it got before is checked as usual. A watch
//!   that starts below the revision of a compaction its member had applied when it was
//!   created (an acknowledged Compact whose header revision is below the created response's)
//!   gets no events: etcd cancels it with the compact revision.
//!
//! Start revision 0 means the revision after the created response's header revision. The
//! model-based rules (Reliable, Resumable, PrevKV, contents, order within a revision) run
//! only when the linearizability check found a linearization.

use std::collections::{BTreeMap, BTreeSet};

use super::store::{in_range, Store};
use super::types::*;
use super::{Violation, ViolationKind};

/// A watch rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchRule {
    /// Revision order.
    Ordered,
    /// No duplicates.
    Unique,
    /// A revision in one response, complete.
    Atomic,
    /// No gaps.
    Reliable,
    /// A watch from a start revision continues exactly.
    Resumable,
    /// Previous kvs.
    PrevKv,
    /// create_revision == mod_revision ⇔ version 1.
    IsCreate,
    /// Filters and the watched range.
    Filter,
    /// The event is not what the write at its revision did.
    Content,
    /// Compaction cancels.
    Compaction,
}

impl WatchRule {
    /// A kv no write explains: Content for an event's kv, PrevKv for its previous kv.
    pub(crate) fn if_prev(prev: bool) -> WatchRule {
        if prev {
            WatchRule::PrevKv
        } else {
            WatchRule::Content
        }
    }
}

fn v(rule: WatchRule, watcher: u64, text: String) -> Violation {
    Violation {
        kind: ViolationKind::Watch(rule),
        ops: vec![watcher],
        explanation: format!("watcher {watcher}: {text}"),
    }
}

fn show(e: &Event) -> String {
    format!(
        "{:?} {:?}={:?} (rev {}, create {}, version {}{})",
        e.kind,
        e.kv.key,
        e.kv.value,
        e.kv.mod_revision,
        e.kv.create_revision,
        e.kv.version,
        match &e.prev_kv {
            Some(p) => format!(", prev {:?} at {}", p.value, p.mod_revision),
            None => String::new(),
        }
    )
}

/// Check every watcher; returns the number of events checked.
pub fn check(h: &History, store: Option<&Store>, out: &mut Vec<Violation>) -> usize {
    let mut by: BTreeMap<u64, Vec<&WatchResponse>> = BTreeMap::new();
    for r in &h.watch_responses {
        by.entry(r.watcher).or_default().push(r);
    }
    let watches: BTreeMap<u64, &Watch> = h.watches.iter().map(|w| (w.watcher, w)).collect();
    // Acknowledged compactions: (header revision, compact revision).
    let compactions: Vec<(i64, i64)> = h
        .ops
        .iter()
        .filter_map(|o| match (&o.request, &o.outcome) {
            (Request::Compact(c), Outcome::Ok(r)) => Some((r.header_revision(), c.revision)),
            _ => None,
        })
        .collect();
    // Compactions not refused: (invoked at, revision).
    let compacts: Vec<(u64, i64)> = h
        .ops
        .iter()
        .filter(|o| !matches!(o.outcome, Outcome::Error(_)))
        .filter_map(|o| match &o.request {
            Request::Compact(c) => Some((o.call_ns, c.revision)),
            _ => None,
        })
        .collect();
    let mut n = 0;
    for (wid, resps) in by {
        let Some(w) = watches.get(&wid) else {
            out.push(v(
                WatchRule::Filter,
                wid,
                "responses for a watch the history never created".into(),
            ));
            continue;
        };
        n += resps.iter().map(|r| r.events.len()).sum::<usize>();
        if let Some(created) = resps.iter().find(|r| r.created) {
            let below = compactions.iter().find(|&&(hdr, c)| {
                w.start_revision > 0 && w.start_revision < c && hdr < created.header_revision
            });
            if let (Some(&(hdr, c)), Some(e)) =
                (below, resps.iter().flat_map(|r| r.events.iter()).next())
            {
                out.push(v(
                    WatchRule::Compaction,
                    wid,
                    format!(
                        "started at {} below a compaction to {c} (acknowledged at revision {hdr}; the watch was created at revision {}), yet it got events: {}",
                        w.start_revision,
                        created.header_revision,
                        show(e)
                    ),
                ));
                continue;
            }
        }
        let before = out.len();
        structural(w, &resps, out);
        if out.len() == before {
            if let Some(s) = store {
                against_model(w, &resps, s, &compacts, out);
            }
        }
    }
    n
}

fn structural(w: &Watch, resps: &[&WatchResponse], out: &mut Vec<Violation>) {
    let wid = w.watcher;
    let mut last: Option<i64> = None;
    let mut seen: BTreeSet<(i64, String)> = BTreeSet::new();
    let mut canceled_at: Option<usize> = None;
    let mut rev_resp: BTreeMap<i64, usize> = BTreeMap::new();
    for (ri, r) in resps.iter().enumerate() {
        if canceled_at.is_some() && !r.events.is_empty() {
            out.push(v(
                WatchRule::Compaction,
                wid,
                format!(
                    "events after the watch was canceled (response at {} ns)",
                    r.at_ns
                ),
            ));
            return;
        }
        if r.canceled {
            canceled_at = Some(ri);
            if r.compact_revision > 0 && w.start_revision >= r.compact_revision {
                out.push(v(
                    WatchRule::Compaction,
                    wid,
                    format!(
                        "canceled for compaction at {} though it started at {}, which was not compacted",
                        r.compact_revision, w.start_revision
                    ),
                ));
            }
        }
        for e in &r.events {
            let rev = e.kv.mod_revision;
            if !seen.insert((rev, e.kv.key.clone())) {
                out.push(v(
                    WatchRule::Unique,
                    wid,
                    format!("event twice: {}", show(e)),
                ));
                return;
            }
            if let Some(&other) = rev_resp.get(&rev) {
                if other != ri {
                    out.push(v(
                        WatchRule::Atomic,
                        wid,
                        format!("revision {rev} split over responses {other} and {ri}"),
                    ));
                    return;
                }
            }
            rev_resp.insert(rev, ri);
            if last.is_some_and(|l| rev < l) {
                out.push(v(
                    WatchRule::Ordered,
                    wid,
                    format!(
                        "event at revision {rev} after one at {}: {}",
                        last.unwrap_or(0),
                        show(e)
                    ),
                ));
                return;
            }
            last = Some(rev);
            if w.start_revision > 0 && rev < w.start_revision {
                out.push(v(
                    WatchRule::Ordered,
                    wid,
                    format!(
                        "event before the start revision {}: {}",
                        w.start_revision,
                        show(e)
                    ),
                ));
                return;
            }
            if !in_range(&w.key, &w.range_end, &e.kv.key) {
                out.push(v(
                    WatchRule::Filter,
                    wid,
                    format!(
                        "event outside the watched range {:?}..{:?}: {}",
                        w.key,
                        w.range_end,
                        show(e)
                    ),
                ));
                return;
            }
            let filtered = match e.kind {
                EventType::Put => w.filters.contains(&WatchFilter::Noput),
                EventType::Delete => w.filters.contains(&WatchFilter::Nodelete),
            };
            if filtered {
                out.push(v(
                    WatchRule::Filter,
                    wid,
                    format!("event the filters {:?} exclude: {}", w.filters, show(e)),
                ));
                return;
            }
            if e.kind == EventType::Put
                && (e.kv.create_revision == e.kv.mod_revision) != (e.kv.version == 1)
            {
                out.push(v(
                    WatchRule::IsCreate,
                    wid,
                    format!(
                        "create_revision == mod_revision disagrees with version == 1: {}",
                        show(e)
                    ),
                ));
                return;
            }
            if !w.prev_kv && e.prev_kv.is_some() {
                out.push(v(
                    WatchRule::PrevKv,
                    wid,
                    format!("a previous kv the watch did not ask for: {}", show(e)),
                ));
                return;
            }
        }
    }
}

fn against_model(
    w: &Watch,
    resps: &[&WatchResponse],
    s: &Store,
    compacts: &[(u64, i64)],
    out: &mut Vec<Violation>,
) {
    let wid = w.watcher;
    let start = if w.start_revision > 0 {
        w.start_revision
    } else if let Some(c) = resps.iter().find(|r| r.created) {
        c.header_revision + 1
    } else {
        return;
    };
    let got: Vec<(usize, &Event)> = resps
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.events.iter().map(move |e| (i, e)))
        .collect();
    let Some(last) = got.last().map(|(_, e)| e.kv.mod_revision) else {
        return;
    };
    if last > s.rev {
        out.push(v(
            WatchRule::Content,
            wid,
            format!(
                "event at revision {last}, beyond the last revision {}",
                s.rev
            ),
        ));
        return;
    }
    let mut exp: Vec<Event> = Vec::new();
    for rev in start.max(2)..=last {
        for e in s.events(rev) {
            if !in_range(&w.key, &w.range_end, &e.kv.key) {
                continue;
            }
            let filtered = match e.kind {
                EventType::Put => w.filters.contains(&WatchFilter::Noput),
                EventType::Delete => w.filters.contains(&WatchFilter::Nodelete),
            };
            if filtered {
                continue;
            }
            let mut e = e.clone();
            if !w.prev_kv {
                e.prev_kv = None;
            }
            exp.push(e);
        }
    }
    // A previous kv left out because revision - 1 had been compacted away (see the docs).
    if w.prev_kv {
        for (ri, e) in &got {
            let rev = e.kv.mod_revision;
            if e.prev_kv.is_some()
                || !compacts
                    .iter()
                    .any(|&(call, c)| c >= rev && call <= resps[*ri].at_ns)
            {
                continue;
            }
            if let Some(x) = exp
                .iter_mut()
                .find(|x| x.kv.mod_revision == rev && x.kv.key == e.kv.key && x.kind == e.kind)
            {
                x.prev_kv = None;
            }
        }
    }
    let resumed = w.start_revision > 0;
    let mut i = 0;
    for (pos, (ri, e)) in got.iter().enumerate() {
        if exp.get(i) == Some(e) {
            // Atomic: the whole revision in this response.
            let rev = e.kv.mod_revision;
            if exp.get(i + 1).is_some_and(|x| x.kv.mod_revision == rev)
                && got.get(pos + 1).is_none_or(|(rj, _)| rj != ri)
            {
                out.push(v(
                    WatchRule::Atomic,
                    wid,
                    format!(
                        "revision {rev} delivered incompletely: response {ri} ends at {}, the write also did {}",
                        show(e),
                        show(&exp[i + 1])
                    ),
                ));
                return;
            }
            i += 1;
            continue;
        }
        let rev = e.kv.mod_revision;
        let same = exp
            .iter()
            .position(|x| x.kv.mod_revision == rev && x.kv.key == e.kv.key && x.kind == e.kind);
        let (rule, text) =
            match same {
                Some(j) if j > i && exp[i].kv.mod_revision == rev => (
                    WatchRule::Ordered,
                    format!(
                        "within revision {rev}, {} came before {}, which the write made first",
                        show(e),
                        show(&exp[i])
                    ),
                ),
                Some(j) if j > i => (
                    if resumed && i == 0 {
                        WatchRule::Resumable
                    } else {
                        WatchRule::Reliable
                    },
                    format!(
                        "missed {} (made by the write at revision {}) before {}{}",
                        show(&exp[i]),
                        exp[i].kv.mod_revision,
                        show(e),
                        if resumed && i == 0 {
                            format!(" (watch resumed at {})", w.start_revision)
                        } else {
                            String::new()
                        }
                    ),
                ),
                Some(j) if exp[j].kv != e.kv => (
                    WatchRule::Content,
                    format!(
                        "got {}, the write at revision {rev} made {}",
                        show(e),
                        show(&exp[j])
                    ),
                ),
                Some(j) if exp[j].prev_kv != e.prev_kv => (
                    WatchRule::PrevKv,
                    format!("got {}, the previous kv was {:?}", show(e), exp[j].prev_kv),
                ),
                Some(_) => (WatchRule::Unique, format!("got {} again", show(e))),
                None => {
                    (
                        WatchRule::Content,
                        format!(
                    "got {}, but the write at revision {rev} did not {} that key (it did: {})",
                    show(e),
                    if e.kind == EventType::Put { "put" } else { "delete" },
                    s.events(rev)
                        .iter()
                        .map(show)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                    )
                }
            };
        out.push(v(rule, wid, text));
        return;
    }
}
