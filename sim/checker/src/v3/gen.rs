//! A seeded generator of valid v3 histories: clients run random overlapping operations
//! against a sequential etcd (the model store), each taking effect at a random instant
//! between its call and its return; a fraction get no answer (indeterminate), half of
//! them applied; watchers get every change in their range from their start revision,
//! in random batches of whole revisions. Puts write unique values.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::store::{Store, StoreError};
use super::types::*;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Operations.
    pub ops: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys (`k000`, `k001`, ...).
    pub keys: usize,
    /// Fraction of operations left indeterminate.
    pub indeterminate: f64,
    /// Members the clients talk to.
    pub members: u64,
    /// Watchers (each watches a random range; some resume once).
    pub watchers: usize,
    /// Per mille of operations that compact.
    pub compact_permille: u32,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            ops: 1000,
            clients: 8,
            keys: 8,
            indeterminate: 0.05,
            members: 3,
            watchers: 3,
            compact_permille: 5,
        }
    }
}

fn key(i: usize) -> String {
    format!("k{i:03}")
}

fn err(e: StoreError) -> Outcome {
    Outcome::Error(GrpcError {
        code: e.code().into(),
        message: format!("etcdserver: {}", e.message()),
    })
}

fn range(k: String, end: String) -> Request {
    Request::Range(RangeRequest {
        key: k,
        range_end: end,
        ..RangeRequest::default()
    })
}

fn put(k: String, value: String, prev_kv: bool) -> Request {
    Request::Put(PutRequest {
        key: k,
        value,
        lease: 0,
        prev_kv,
    })
}

fn compare(target: CompareTarget, result: CompareResult, k: String, operand: Operand) -> Compare {
    Compare {
        target,
        result,
        key: k,
        range_end: String::new(),
        operand,
    }
}

/// Build a request for the store's current state (so compares hit about half the time).
fn request(rng: &mut ChaCha8Rng, s: &Store, cfg: &GenConfig, n: usize) -> Request {
    let nk = cfg.keys.max(1);
    let k = key(rng.gen_range(0..nk));
    let value = format!("v{n}");
    let cur = s.kv_at(&k, s.rev).cloned();
    let r = rng.gen_range(0..1000u32);
    match r {
        0..=299 => Request::Range(RangeRequest {
            key: k,
            serializable: rng.gen_bool(0.15),
            ..RangeRequest::default()
        }),
        300..=349 => {
            let a = rng.gen_range(0..nk);
            let b = rng.gen_range(a..=nk);
            Request::Range(RangeRequest {
                key: key(a),
                range_end: if rng.gen_bool(0.3) {
                    "\0".into()
                } else {
                    key(b)
                },
                limit: if rng.gen_bool(0.5) {
                    rng.gen_range(1..4)
                } else {
                    0
                },
                count_only: rng.gen_bool(0.1),
                keys_only: rng.gen_bool(0.1),
                serializable: rng.gen_bool(0.1),
                ..RangeRequest::default()
            })
        }
        350..=399 => {
            let lo = s.compact.max(1);
            let revision = match rng.gen_range(0..10) {
                0 => s.rev + rng.gen_range(1..3),
                1 if s.compact > 1 => rng.gen_range(1..s.compact),
                _ => rng.gen_range(lo..=s.rev),
            };
            Request::Range(RangeRequest {
                key: k,
                range_end: if rng.gen_bool(0.3) {
                    "\0".into()
                } else {
                    String::new()
                },
                revision,
                ..RangeRequest::default()
            })
        }
        400..=649 => put(k, value, rng.gen_bool(0.7)),
        650..=719 => Request::DeleteRange(DeleteRangeRequest {
            key: k,
            range_end: String::new(),
            prev_kv: rng.gen_bool(0.5),
        }),
        720..=734 => {
            let a = rng.gen_range(0..nk);
            Request::DeleteRange(DeleteRangeRequest {
                key: key(a),
                range_end: key(rng.gen_range(a..=nk.min(a + 3))),
                prev_kv: rng.gen_bool(0.5),
            })
        }
        735..=879 => {
            let m = match (&cur, rng.gen_bool(0.6)) {
                (Some(kv), true) => kv.mod_revision,
                (None, true) => 0,
                _ => rng.gen_range(0..s.rev + 1),
            };
            Request::Txn(TxnRequest {
                compares: vec![compare(
                    CompareTarget::Mod,
                    CompareResult::Equal,
                    k.clone(),
                    Operand::Int(m),
                )],
                success: vec![put(k.clone(), value, rng.gen_bool(0.5))],
                failure: vec![range(k, String::new())],
            })
        }
        880..=939 => {
            let k2 = key(rng.gen_range(0..nk));
            let k3 = key(rng.gen_range(0..nk));
            let v2 = s.kv_at(&k2, s.rev).map_or(0, |kv| kv.version);
            let target = if rng.gen_bool(0.5) {
                CompareTarget::Version
            } else {
                CompareTarget::Create
            };
            let mut success = vec![put(k.clone(), value.clone(), true)];
            if k2 != k {
                success.push(put(k2.clone(), format!("{value}b"), false));
            }
            if k3 != k && k3 != k2 {
                success.push(Request::DeleteRange(DeleteRangeRequest {
                    key: k3,
                    range_end: String::new(),
                    prev_kv: true,
                }));
            }
            Request::Txn(TxnRequest {
                compares: vec![
                    compare(
                        target,
                        if rng.gen_bool(0.5) {
                            CompareResult::Greater
                        } else {
                            CompareResult::Less
                        },
                        k.clone(),
                        Operand::Int(rng.gen_range(0..4)),
                    ),
                    compare(
                        CompareTarget::Version,
                        CompareResult::Equal,
                        k2.clone(),
                        Operand::Int(if rng.gen_bool(0.7) { v2 } else { v2 + 1 }),
                    ),
                ],
                success,
                failure: vec![range(k, String::new()), range(key(0), "\0".into())],
            })
        }
        940..=979 => {
            let want = match (&cur, rng.gen_bool(0.6)) {
                (Some(kv), true) => kv.value.clone(),
                _ => "nope".into(),
            };
            let other = key(rng.gen_range(0..nk));
            Request::Txn(TxnRequest {
                compares: vec![compare(
                    CompareTarget::Value,
                    if rng.gen_bool(0.8) {
                        CompareResult::Equal
                    } else {
                        CompareResult::NotEqual
                    },
                    k.clone(),
                    Operand::Value(want),
                )],
                success: vec![Request::DeleteRange(DeleteRangeRequest {
                    key: k,
                    range_end: String::new(),
                    prev_kv: true,
                })],
                failure: if rng.gen_bool(0.5) {
                    vec![put(other, value, false)]
                } else {
                    Vec::new()
                },
            })
        }
        980..=989 => {
            // Invalid: an empty key, or two puts of one key in a txn.
            if rng.gen_bool(0.5) {
                put(String::new(), value, false)
            } else {
                Request::Txn(TxnRequest {
                    compares: Vec::new(),
                    success: vec![put(k.clone(), value.clone(), false), put(k, value, false)],
                    failure: Vec::new(),
                })
            }
        }
        _ => {
            if r - 990 < cfg.compact_permille.min(10) {
                let revision = if rng.gen_bool(0.8) && s.rev > s.compact.max(1) {
                    rng.gen_range(s.compact.max(1) + 1..=s.rev)
                } else {
                    rng.gen_range(s.compact.max(0)..=s.rev + 2)
                };
                Request::Compact(CompactRequest {
                    revision,
                    physical: false,
                })
            } else {
                Request::Range(RangeRequest {
                    key: k,
                    ..RangeRequest::default()
                })
            }
        }
    }
}

/// Generate a valid history.
pub fn history(seed: u64, cfg: &GenConfig) -> History {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let clients = cfg.clients.max(1);
    let mut clock = vec![0u64; clients];
    // (linearization time, client, call, ret)
    let mut planned = Vec::with_capacity(cfg.ops);
    for _ in 0..cfg.ops {
        let c = rng.gen_range(0..clients);
        let call = clock[c] + rng.gen_range(1..10);
        let lin = call + rng.gen_range(0..20);
        let ret = lin + rng.gen_range(0..20);
        clock[c] = ret;
        planned.push((lin, c as u64, call, ret));
    }
    planned.sort();
    let mut s = Store::new();
    let mut ops = Vec::with_capacity(cfg.ops);
    // (time, revision) after each op, for watches.
    let mut timeline: Vec<(u64, i64)> = vec![(0, 1)];
    for (n, &(lin, client, call, ret)) in planned.iter().enumerate() {
        let req = request(&mut rng, &s, cfg, n);
        let indet = rng.gen_bool(cfg.indeterminate);
        let member = rng.gen_range(0..cfg.members.max(1));
        let outcome = if indet {
            if rng.gen_bool(0.5) {
                let _ = s.apply(&req);
            }
            Outcome::Indeterminate
        } else {
            let serial = super::store::is_serializable(&req);
            let got = match s.read(&req, s.rev, !serial) {
                Some(x) => x,
                None => s.apply(&req),
            };
            match got {
                Ok(r) => Outcome::Ok(r),
                Err(e) => err(e),
            }
        };
        s.commit();
        timeline.push((lin, s.rev));
        ops.push(Op {
            id: n as u64,
            client,
            member: Some(member),
            call_ns: call,
            return_ns: if indet && rng.gen_bool(0.5) {
                None
            } else {
                Some(ret)
            },
            request: req,
            outcome,
        });
    }
    ops.sort_by_key(|o| (o.call_ns, o.id));
    let mut h = History {
        ops,
        ..History::default()
    };
    watches(&mut rng, cfg, &s, &timeline, &mut h);
    h
}

fn watches(
    rng: &mut ChaCha8Rng,
    cfg: &GenConfig,
    s: &Store,
    timeline: &[(u64, i64)],
    h: &mut History,
) {
    let end_t = timeline.last().map_or(0, |t| t.0);
    // When each revision was made.
    let mut made_at = vec![0u64; (s.rev + 1) as usize];
    for w in timeline.windows(2) {
        for r in (w[0].1 + 1)..=w[1].1 {
            made_at[r as usize] = w[1].0;
        }
    }
    let nk = cfg.keys.max(1);
    let mut next_id = 1000u64;
    for i in 0..cfg.watchers {
        let t0 = rng.gen_range(0..=end_t);
        let at = timeline[timeline.partition_point(|t| t.0 <= t0) - 1].1;
        let a = rng.gen_range(0..nk);
        let (k, end) = match rng.gen_range(0..3) {
            0 => (key(a), String::new()),
            1 => (key(a), key(rng.gen_range(a..=nk))),
            _ => (key(0), "\0".to_string()),
        };
        let mut w = Watch {
            watcher: next_id,
            client: 10_000 + i as u64,
            member: Some(rng.gen_range(0..cfg.members.max(1))),
            call_ns: t0,
            key: k,
            range_end: end,
            start_revision: 0,
            prev_kv: rng.gen_bool(0.5),
            filters: match rng.gen_range(0..6) {
                0 => vec![WatchFilter::Noput],
                1 => vec![WatchFilter::Nodelete],
                _ => Vec::new(),
            },
        };
        next_id += 1;
        let mut start = at + 1;
        // Compaction state at t0: any compact applied before.
        let compacted = s.compact;
        if rng.gen_bool(0.3) && at > 1 {
            let from = rng.gen_range(1..=at);
            w.start_revision = from;
            start = from;
        }
        h.watches.push(w.clone());
        h.watch_responses.push(WatchResponse {
            watcher: w.watcher,
            at_ns: t0 + 1,
            header_revision: at,
            created: true,
            canceled: false,
            compact_revision: 0,
            fragment: false,
            events: Vec::new(),
        });
        if w.start_revision > 0 && w.start_revision < compacted {
            // The generator does not track when compaction happened; only watches that
            // start at or above the final compact revision stay open.
            h.watch_responses.push(WatchResponse {
                watcher: w.watcher,
                at_ns: t0 + 2,
                header_revision: at,
                created: false,
                canceled: true,
                compact_revision: compacted,
                fragment: false,
                events: Vec::new(),
            });
            continue;
        }
        // Deliver [start, stop], in batches; maybe break and resume once.
        let stop = if rng.gen_bool(0.7) {
            s.rev
        } else {
            rng.gen_range(start.min(s.rev)..=s.rev)
        };
        let resume_at = if rng.gen_bool(0.4) {
            Some(rng.gen_range(start..=stop.max(start)))
        } else {
            None
        };
        let mut rev = start;
        let mut batch: Vec<Event> = Vec::new();
        let mut n_revs = 0;
        let target = rng.gen_range(1..4);
        while rev <= stop {
            if Some(rev) == resume_at && w.watcher < 1_000_000 {
                // Flush, then resume as a new watcher from here.
                flush(
                    h,
                    &w,
                    &mut batch,
                    made_at[(rev - 1).max(0) as usize],
                    rev - 1,
                );
                let mut w2 = w.clone();
                w2.watcher = next_id + 1_000_000;
                next_id += 1;
                w2.start_revision = rev;
                w2.call_ns = made_at[(rev - 1).max(0) as usize] + 1;
                h.watches.push(w2.clone());
                w = w2;
            }
            for e in s.events(rev) {
                let inr = super::store::in_range(&w.key, &w.range_end, &e.kv.key);
                let filtered = match e.kind {
                    EventType::Put => w.filters.contains(&WatchFilter::Noput),
                    EventType::Delete => w.filters.contains(&WatchFilter::Nodelete),
                };
                if inr && !filtered {
                    let mut e = e.clone();
                    if !w.prev_kv {
                        e.prev_kv = None;
                    }
                    batch.push(e);
                }
            }
            n_revs += 1;
            if n_revs >= target {
                flush(h, &w, &mut batch, made_at[rev as usize], rev);
                n_revs = 0;
            }
            rev += 1;
        }
        flush(h, &w, &mut batch, made_at[stop.max(0) as usize], stop);
    }
}

fn flush(h: &mut History, w: &Watch, batch: &mut Vec<Event>, at: u64, rev: i64) {
    if batch.is_empty() {
        return;
    }
    h.watch_responses.push(WatchResponse {
        watcher: w.watcher,
        at_ns: at + 1,
        header_revision: rev,
        created: false,
        canceled: false,
        compact_revision: 0,
        fragment: false,
        events: std::mem::take(batch),
    });
}
