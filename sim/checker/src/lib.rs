//! detcd-checker: a linearizability checker (Wing & Gong's search with Lowe's memoisation
//! and P-compositionality, Porcupine-class), a watch checker and a reads checker (indexes
//! and values of serializable and quorum reads) for etcd v2 histories; and [`v3`], a
//! checker of etcd v3 histories (MVCC revisions, txns, compaction, serializable reads,
//! watches) over one global state, pinned by header revisions.
//! It does not depend on the node or the simulator.
#![warn(missing_docs)]

pub mod cli;
pub mod gen;
pub mod html;
pub mod import;
pub mod model;
pub mod reads;
pub mod search;
pub mod v3;
pub mod watch;

use std::time::{Duration, Instant};

pub use cli::cli_main;
pub use search::{check, Failure, Op, Verdict};

use model::etcd::Etcd;
use model::Model;

/// Everything the checker says about a native (detcd-sim) history.
#[derive(Debug)]
pub struct EtcdReport {
    /// Linearizability of quorum reads and writes, per key.
    pub verdict: Verdict,
    /// Violations of the real-time order of etcd's global index.
    pub index_violations: Vec<String>,
    /// Violations of the watch guarantees.
    pub watch_violations: Vec<String>,
    /// What the reads check found (serializable and quorum reads' indexes and values).
    pub reads: reads::ReadsReport,
    /// Operations checked.
    pub ops_checked: usize,
    /// Watch events checked.
    pub watch_events: usize,
    /// HTML of the failing partition (empty when linearizable).
    pub html: String,
}

/// Check a native history (JSON lines) with the etcd model, the watch checker and the reads
/// checker.
pub fn check_etcd_history(
    text: &str,
    timeout: Duration,
    watch_prefix: &str,
) -> Result<EtcdReport, import::ParseError> {
    let h = import::native(text)?;
    let verdict = check(&Etcd, &h.ops, Some(Instant::now() + timeout));
    let html = match &verdict {
        Verdict::Illegal(fails) => failure_html(&Etcd, &h.ops, fails, &h.faults),
        _ => String::new(),
    };
    Ok(EtcdReport {
        verdict,
        index_violations: watch::check_index_order(&h.all_ops),
        watch_violations: watch::check_watches(&h.all_ops, &h.watches, watch_prefix),
        reads: reads::check_reads(&h.all_ops, &h.faults),
        ops_checked: h.ops.len(),
        watch_events: h.watches.len(),
        html,
    })
}

/// Only the reads check of a native history.
pub fn check_etcd_reads(text: &str) -> Result<reads::ReadsReport, import::ParseError> {
    let h = import::native(text)?;
    Ok(reads::check_reads(&h.all_ops, &h.faults))
}

/// The HTML page for a failed check: the first failing partition in full.
pub fn failure_html<M: Model>(
    model: &M,
    ops: &[Op<M::Input, M::Output>],
    fails: &[Failure],
    faults: &[import::FaultLine],
) -> String {
    let Some(f) = fails.first() else {
        return String::new();
    };
    let bars: Vec<html::Bar> = f
        .ops
        .iter()
        .map(|&i| html::Bar {
            client: ops[i].client,
            call: ops[i].call,
            ret: ops[i].ret,
            label: model.describe(&ops[i].input, ops[i].output.as_ref()),
            order: f.longest.iter().position(|&x| x == i),
            unplaced: f.unplaced == Some(i),
        })
        .collect();
    let windows: Vec<html::Window> = faults
        .iter()
        .map(|w| html::Window {
            label: format!("{} {:?}", w.kind, w.targets),
            start: w.start_ns,
            end: w.end_ns,
        })
        .collect();
    let title = format!(
        "not linearizable: key {}",
        f.key.clone().unwrap_or_else(|| "(all)".into())
    );
    let summary = describe_failure(model, ops, f);
    html::page(
        &title,
        &summary,
        &[html::timeline_svg(&title, &bars, &windows)],
    )
}

/// A few lines on a failing partition.
pub fn describe_failure<M: Model>(
    model: &M,
    ops: &[Op<M::Input, M::Output>],
    f: &Failure,
) -> String {
    let mut s = format!(
        "partition {:?}: {} operations; the longest linearizable prefix has {}.\n",
        f.key.as_deref().unwrap_or("(all)"),
        f.ops.len(),
        f.longest.len()
    );
    for &i in f
        .longest
        .iter()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .iter()
        .rev()
    {
        s.push_str(&format!(
            "  ... linearized: client {} {}\n",
            ops[*i].client,
            model.describe(&ops[*i].input, ops[*i].output.as_ref())
        ));
    }
    if let Some(u) = f.unplaced {
        s.push_str(&format!(
            "  could not place: client {} {} (called {}, returned {:?})\n",
            ops[u].client,
            model.describe(&ops[u].input, ops[u].output.as_ref()),
            ops[u].call,
            ops[u].ret
        ));
    }
    s
}
