//! The search: Wing & Gong's backtracking over the history's call/return events, with Lowe's
//! memoisation (a configuration — the set of operations linearized so far and the model
//! state(s) reached — is explored at most once), as Porcupine does it.
//!
//! Events sit in a doubly linked list (arrays of indices). Linearizing an operation lifts its
//! call and return out of the list; backtracking puts them back. A return event reached
//! before its call was linearized means the current prefix cannot be extended: backtrack.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use crate::model::Model;

/// One operation of a history.
#[derive(Debug, Clone)]
pub struct Op<I, O> {
    /// The client (process) that ran it.
    pub client: u64,
    /// Invocation time.
    pub call: u64,
    /// Return time; None = indeterminate (it returns after everything else).
    pub ret: Option<u64>,
    /// Input.
    pub input: I,
    /// Output; None = unknown.
    pub output: Option<O>,
}

/// Why a partition is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The partition's key (None for an unsplit history).
    pub key: Option<String>,
    /// Indexes (into the history) of the partition's operations.
    pub ops: Vec<usize>,
    /// The longest linearizable prefix found, in linearization order.
    pub longest: Vec<usize>,
    /// The operation that could not be placed after that prefix.
    pub unplaced: Option<usize>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Linearizable.
    Ok,
    /// Not linearizable, with the failing partitions.
    Illegal(Vec<Failure>),
    /// The deadline passed first.
    Unknown,
}

/// FxHash: fast, deterministic hashing for the memo table.
#[derive(Default)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    fn write_u8(&mut self, x: u8) {
        self.write_u64(u64::from(x));
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxSet<T> = HashSet<T, BuildHasherDefault<FxHasher>>;

/// Steps a partition may take in the first round; each later round allows 8 times more.
const FIRST_ROUND_STEPS: u64 = 20_000;

/// Check a history against a model, split per key when the model allows it.
///
/// Partitions are checked on all cores, in rounds of growing step budgets: one failing
/// partition proves the history illegal, so an easy failure is found without first
/// exhausting a hard partition's search (Porcupine gets the same from checking partitions
/// concurrently and stopping at the first failure).
pub fn check<M>(model: &M, ops: &[Op<M::Input, M::Output>], deadline: Option<Instant>) -> Verdict
where
    M: Model,
{
    let mut parts: std::collections::BTreeMap<Option<String>, Vec<usize>> = Default::default();
    for (i, op) in ops.iter().enumerate() {
        parts
            .entry(model.partition_key(&op.input))
            .or_default()
            .push(i);
    }
    let parts: Vec<(Option<String>, Vec<usize>)> = parts.into_iter().collect();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let mut pending: Vec<usize> = (0..parts.len()).collect();
    let mut budget = FIRST_ROUND_STEPS;
    loop {
        let results: Vec<(usize, PartResult)> =
            run_round(model, ops, &parts, &pending, budget, deadline, workers);
        let mut failures = Vec::new();
        let mut next = Vec::new();
        for (p, r) in results {
            match r {
                PartResult::Ok => {}
                PartResult::Unknown => return Verdict::Unknown,
                PartResult::OverBudget => next.push(p),
                PartResult::Illegal { longest, unplaced } => failures.push(Failure {
                    key: parts[p].0.clone(),
                    ops: parts[p].1.clone(),
                    longest,
                    unplaced,
                }),
            }
        }
        if !failures.is_empty() {
            failures.sort_by(|a, b| a.key.cmp(&b.key));
            return Verdict::Illegal(failures);
        }
        if next.is_empty() {
            return Verdict::Ok;
        }
        next.sort_unstable();
        pending = next;
        budget = budget.saturating_mul(8);
    }
}

fn run_round<M>(
    model: &M,
    ops: &[Op<M::Input, M::Output>],
    parts: &[(Option<String>, Vec<usize>)],
    pending: &[usize],
    budget: u64,
    deadline: Option<Instant>,
    workers: usize,
) -> Vec<(usize, PartResult)>
where
    M: Model,
{
    let cursor = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(Vec::with_capacity(pending.len()));
    let work = || loop {
        let k = cursor.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(&p) = pending.get(k) else { return };
        let r = check_partition(model, ops, &parts[p].1, deadline, budget);
        out.lock().expect("results lock").push((p, r));
    };
    if workers <= 1 || pending.len() <= 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..workers.min(pending.len()) {
                s.spawn(work);
            }
        });
    }
    let mut v = out.into_inner().expect("results lock");
    v.sort_by_key(|(p, _)| *p);
    v
}

enum PartResult {
    Ok,
    Illegal {
        longest: Vec<usize>,
        unplaced: Option<usize>,
    },
    OverBudget,
    Unknown,
}

struct Bits(Vec<u64>);

impl Bits {
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

fn check_partition<M: Model>(
    model: &M,
    ops: &[Op<M::Input, M::Output>],
    idx: &[usize],
    deadline: Option<Instant>,
    budget: u64,
) -> PartResult {
    let n = idx.len();
    // Events: (time, is_return, local op). Calls sort before returns at equal times, so
    // operations that touch in time count as concurrent.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (local, &g) in idx.iter().enumerate() {
        let op = &ops[g];
        events.push((op.call, false, local));
        events.push((op.ret.unwrap_or(u64::MAX), true, local));
    }
    events.sort();
    let head = 2 * n;
    let tail = 2 * n + 1;
    let mut next = vec![0usize; 2 * n + 2];
    let mut prev = vec![0usize; 2 * n + 2];
    let mut call_node = vec![0usize; n];
    let mut ret_node = vec![0usize; n];
    let mut order = vec![head];
    for (k, (_, is_ret, local)) in events.iter().enumerate() {
        if *is_ret {
            ret_node[*local] = k;
        } else {
            call_node[*local] = k;
        }
        order.push(k);
    }
    order.push(tail);
    for w in order.windows(2) {
        next[w[0]] = w[1];
        prev[w[1]] = w[0];
    }
    let node_op: Vec<(bool, usize)> = events.iter().map(|(_, r, l)| (*r, *l)).collect();

    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, c: usize, r: usize| {
        let (p, nx) = (prev[c], next[c]);
        next[p] = nx;
        prev[nx] = p;
        let (p, nx) = (prev[r], next[r]);
        next[p] = nx;
        prev[nx] = p;
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, c: usize, r: usize| {
        let (p, nx) = (prev[r], next[r]);
        next[p] = r;
        prev[nx] = r;
        let (p, nx) = (prev[c], next[c]);
        next[p] = c;
        prev[nx] = c;
    };

    let mut states: Vec<M::State> = vec![model.init()];
    let mut bits = Bits(vec![0u64; n.div_ceil(64).max(1)]);
    let mut cache: FxSet<(Vec<u64>, Vec<M::State>)> = FxSet::default();
    let mut stack: Vec<(usize, Vec<M::State>)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut unplaced: Option<usize> = None;
    let mut entry = next[head];
    let mut steps = 0u64;
    while next[head] != tail {
        steps += 1;
        if steps > budget {
            return PartResult::OverBudget;
        }
        if steps.is_multiple_of(4096) {
            if let Some(d) = deadline {
                if Instant::now() > d {
                    return PartResult::Unknown;
                }
            }
        }
        let (is_ret, local) = node_op[entry];
        if !is_ret {
            let op = &ops[idx[local]];
            let mut new_states: Vec<M::State> = Vec::new();
            for s in &states {
                new_states.extend(model.step(s, &op.input, op.output.as_ref()));
            }
            if !new_states.is_empty() {
                new_states.sort();
                new_states.dedup();
                bits.set(local);
                if cache.insert((bits.0.clone(), new_states.clone())) {
                    stack.push((entry, std::mem::replace(&mut states, new_states)));
                    lift(&mut next, &mut prev, entry, ret_node[local]);
                    if stack.len() > longest.len() {
                        longest = stack.iter().map(|(e, _)| idx[node_op[*e].1]).collect();
                        unplaced = None;
                    }
                    entry = next[head];
                    continue;
                }
                bits.clear(local);
            }
            entry = next[entry];
        } else {
            if stack.len() == longest.len() && unplaced.is_none() {
                unplaced = Some(idx[local]);
            }
            let Some((e, s)) = stack.pop() else {
                return PartResult::Illegal { longest, unplaced };
            };
            let l = node_op[e].1;
            states = s;
            bits.clear(l);
            unlift(&mut next, &mut prev, e, ret_node[l]);
            entry = next[e];
        }
    }
    let _ = call_node;
    PartResult::Ok
}
