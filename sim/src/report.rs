//! Throughput and latency reports of one run: per phase (steady, each fault window, the
//! recovery after each heal), from the recorded history, in simulated time — so the same seed
//! gives the same report, byte for byte.
//!
//! `report.json` follows [`Report`] (schema version [`REPORT_VERSION`], documented in
//! docs/formats.md); `report.md` holds the tables a person reads first.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::output::FaultEvent;
use crate::output::{Check, MemberStats, RunOutput};
use crate::workload::Outcome;

/// Version of the report schema.
pub const REPORT_VERSION: u32 = 1;
/// Width of a throughput bucket.
pub const BUCKET_MS: u64 = 100;

/// Latency percentiles of one operation class in one phase, in ms of simulated time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Acknowledged operations.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// One phase of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Phase {
    /// "steady", "fault: <kind>", "recovery after <kind>".
    pub name: String,
    /// Start (s since the start of the load).
    pub start_s: f64,
    /// End.
    pub end_s: f64,
    /// Acknowledged writes per second.
    pub writes_per_sec: f64,
    /// Acknowledged reads per second.
    pub reads_per_sec: f64,
    /// Write latency.
    pub writes: Latency,
    /// Read latency.
    pub reads: Latency,
    /// Whether the phase meets the writes/s target (None when no target applies).
    pub meets_target: Option<bool>,
}

/// An unavailability window: from a fault's start to the first write acknowledged after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Unavailability {
    /// The fault.
    pub fault: String,
    /// Fault start (s).
    pub start_s: f64,
    /// Seconds until the first write invoked after the fault start was acknowledged (None:
    /// none was, before the end of the load).
    pub unavailable_s: Option<f64>,
}

/// What the cluster did per acknowledged write. `null`: not measured (a real cluster whose
/// server does not expose the counter, or whose member restarted during the load).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Cost {
    /// Raft messages sent per acknowledged write (all members).
    pub msgs_per_write: Option<f64>,
    /// Raft bytes sent per acknowledged write.
    pub bytes_per_write: Option<f64>,
    /// WAL fsyncs per acknowledged write (all members).
    pub fsyncs_per_write: Option<f64>,
    /// Entries persisted per fsync: the group-commit factor.
    pub entries_per_fsync: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Schema version.
    pub version: u32,
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Digest of history.jsonl.
    pub history_digest: String,
    /// Simulated seconds of the run.
    pub sim_seconds: f64,
    /// Operations recorded.
    pub operations: u64,
    /// Of which indeterminate.
    pub indeterminate: u64,
    /// Check verdicts.
    pub checks: Vec<CheckRow>,
    /// The writes/s target (0 = none).
    pub target_writes_per_sec: u64,
    /// Phases.
    pub phases: Vec<Phase>,
    /// Acknowledged writes per 100 ms bucket.
    pub throughput: Vec<u64>,
    /// Unavailability after each fault.
    pub unavailability: Vec<Unavailability>,
    /// Leader changes seen by the observer: (s, member index or null).
    pub leaders: Vec<(f64, Option<usize>)>,
    /// Faults.
    pub faults: Vec<FaultRow>,
    /// Cost per write.
    pub cost: Cost,
}

/// A check's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckRow {
    /// Name.
    pub name: String,
    /// "pass", "FAIL" or "unknown".
    pub verdict: String,
    /// Detail.
    pub detail: String,
}

/// A fault window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRow {
    /// Kind.
    pub kind: String,
    /// Targets.
    pub targets: Vec<usize>,
    /// Start (s).
    pub start_s: f64,
    /// End (s).
    pub end_s: f64,
    /// Detail.
    pub detail: String,
}

fn s(ns: u64) -> f64 {
    (ns as f64 / 1e6).round() / 1e3
}

/// An empty latency histogram (µs, 1 µs to 10 min, 3 significant digits): every report's.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Every acknowledged write's latency over the whole run (µs), for sweeps to merge.
pub fn write_histogram(out: &RunOutput) -> Histogram<u64> {
    let mut w = new_histogram();
    for op in &out.rec.ops {
        if let (true, Some(ret), Outcome::Ok { .. }) =
            (op.kind.is_write(), op.return_ns, &op.outcome)
        {
            let _ = w.record(((ret - op.invoke_ns) / 1000).max(1));
        }
    }
    w
}

/// Every write that got an answer or timed out, for the latency-over-time chart: invoked at
/// (s since the load began), latency (ms), acknowledged.
pub fn write_points(out: &RunOutput) -> Vec<crate::html::WritePoint> {
    out.rec
        .ops
        .iter()
        .filter(|op| op.kind.is_write())
        .filter_map(|op| {
            let ret = op.return_ns?;
            Some((
                op.invoke_ns as f64 / 1e9,
                (ret - op.invoke_ns) as f64 / 1e6,
                matches!(op.outcome, Outcome::Ok { .. }),
            ))
        })
        .collect()
}

/// A histogram as hdrhistogram's V2 bytes (the `.hgrm` file of a run).
pub fn histogram_bytes(h: &Histogram<u64>) -> Vec<u8> {
    use hdrhistogram::serialization::Serializer as _;
    let mut buf = Vec::new();
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("histogram serialises");
    buf
}

/// Read a `.hgrm` file's bytes back.
pub fn histogram_from(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| format!("{e:?}"))
}

/// Percentiles of a histogram of µs, in ms.
pub fn latency(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
    if h.is_empty() {
        return Latency {
            count: 0,
            p50_ms: 0.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            max_ms: 0.0,
        };
    }
    Latency {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

/// A check as a report row.
pub fn verdict(c: &Check) -> CheckRow {
    CheckRow {
        name: c.name.clone(),
        verdict: match c.passed {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "unknown",
        }
        .into(),
        detail: c.detail.clone(),
    }
}

/// Phase boundaries from the fault windows: steady until the first fault, then each fault
/// window and the recovery up to the next fault (or the end).
fn phases_of(faults: &[FaultEvent], end_ns: u64) -> Vec<(String, u64, u64, bool)> {
    let mut out = Vec::new();
    let mut faults: Vec<&FaultEvent> = faults.iter().collect();
    faults.sort_by_key(|f| f.start_ns);
    let first = faults
        .first()
        .map(|f| f.start_ns)
        .unwrap_or(end_ns)
        .min(end_ns);
    out.push(("steady".to_string(), 0, first, true));
    for (i, f) in faults.iter().enumerate() {
        let fs = f.start_ns.min(end_ns);
        let fe = f.end_ns.min(end_ns).max(fs);
        out.push((format!("fault: {}", f.kind), fs, fe, true));
        let next = faults
            .get(i + 1)
            .map(|n| n.start_ns)
            .unwrap_or(end_ns)
            .min(end_ns)
            .max(fe);
        if next > fe {
            out.push((format!("recovery after {}", f.kind), fe, next, false));
        }
    }
    out
}

/// Build the report of a run.
pub fn build(
    name: &str,
    out: &RunOutput,
    checks: &[Check],
    digest: &str,
    load_ns: u64,
    target: u64,
) -> Report {
    let end_ns = load_ns;
    let phases = phases_of(&out.faults, end_ns)
        .into_iter()
        .map(|(pname, a, b, counts)| {
            let mut w = new_histogram();
            let mut r = w.clone();
            for op in &out.rec.ops {
                let Some(ret) = op.return_ns else { continue };
                if !matches!(op.outcome, Outcome::Ok { .. } | Outcome::Err { .. })
                    || ret < a
                    || ret >= b
                {
                    continue;
                }
                let us = ((ret - op.invoke_ns) / 1000).max(1);
                if op.kind.is_write() {
                    let _ = w.record(us);
                } else {
                    let _ = r.record(us);
                }
            }
            let secs = ((b - a) as f64 / 1e9).max(1e-9);
            let wps = (w.len() as f64 / secs * 10.0).round() / 10.0;
            Phase {
                name: pname,
                start_s: s(a),
                end_s: s(b),
                writes_per_sec: wps,
                reads_per_sec: (r.len() as f64 / secs * 10.0).round() / 10.0,
                writes: latency(&w),
                reads: latency(&r),
                meets_target: (target > 0 && counts && b - a >= 500_000_000)
                    .then_some(wps >= target as f64),
            }
        })
        .collect();
    let buckets = (end_ns / (BUCKET_MS * 1_000_000) + 1) as usize;
    let mut throughput = vec![0u64; buckets];
    let mut acked_writes = 0u64;
    for op in &out.rec.ops {
        if op.kind.is_write() && matches!(op.outcome, Outcome::Ok { .. } | Outcome::Err { .. }) {
            if let Some(ret) = op.return_ns {
                acked_writes += 1;
                let b = (ret / (BUCKET_MS * 1_000_000)) as usize;
                if b < buckets {
                    throughput[b] += 1;
                }
            }
        }
    }
    let unavailability = out
        .faults
        .iter()
        .map(|f| {
            let first = out
                .rec
                .ops
                .iter()
                .filter(|o| {
                    o.kind.is_write()
                        && o.invoke_ns >= f.start_ns
                        && matches!(o.outcome, Outcome::Ok { .. })
                })
                .filter_map(|o| o.return_ns)
                .min();
            Unavailability {
                fault: f.kind.clone(),
                start_s: s(f.start_ns),
                unavailable_s: first.map(|t| s(t - f.start_ns)),
            }
        })
        .collect();
    let sum = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| a + b);
    let tot = out
        .members
        .iter()
        .fold(MemberStats::zero(), |a, m| MemberStats {
            msgs_sent: sum(a.msgs_sent, m.msgs_sent),
            bytes_sent: sum(a.bytes_sent, m.bytes_sent),
            fsyncs: sum(a.fsyncs, m.fsyncs),
            entries: sum(a.entries, m.entries),
        });
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let per = |x: Option<u64>| x.map(|x| round2(x as f64 / acked_writes.max(1) as f64));
    Report {
        version: REPORT_VERSION,
        scenario: name.to_string(),
        seed: out.seed,
        history_digest: digest.to_string(),
        sim_seconds: s(out.sim_ns),
        operations: out.rec.ops.len() as u64,
        indeterminate: out
            .rec
            .ops
            .iter()
            .filter(|o| o.outcome == Outcome::Indeterminate)
            .count() as u64,
        checks: checks.iter().map(verdict).collect(),
        target_writes_per_sec: target,
        phases,
        throughput,
        unavailability,
        leaders: out.leaders.iter().map(|(t, l)| (s(*t), *l)).collect(),
        faults: out
            .faults
            .iter()
            .map(|f| FaultRow {
                kind: f.kind.clone(),
                targets: f.targets.clone(),
                start_s: s(f.start_ns),
                end_s: s(f.end_ns),
                detail: f.detail.clone(),
            })
            .collect(),
        cost: Cost {
            msgs_per_write: per(tot.msgs_sent),
            bytes_per_write: per(tot.bytes_sent),
            fsyncs_per_write: per(tot.fsyncs),
            entries_per_fsync: tot
                .entries
                .zip(tot.fsyncs)
                .map(|(e, f)| round2(e as f64 / f.max(1) as f64)),
        },
    }
}

/// The Markdown report.
pub fn markdown(r: &Report) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# {} — seed {}\n", r.scenario, r.seed);
    let _ = writeln!(
        m,
        "History digest `{}`; {} operations ({} indeterminate) over {:.1} simulated seconds.\n",
        r.history_digest, r.operations, r.indeterminate, r.sim_seconds
    );
    let _ = writeln!(
        m,
        "## Verdicts\n\n| check | verdict | detail |\n|---|---|---|"
    );
    for c in &r.checks {
        let _ = writeln!(
            m,
            "| {} | {} | {} |",
            c.name,
            c.verdict,
            c.detail.replace('|', "\\|")
        );
    }
    let _ = writeln!(
        m,
        "\n## Throughput and latency per phase (simulated time)\n"
    );
    if r.target_writes_per_sec > 0 {
        let _ = writeln!(
            m,
            "Target: {} acknowledged writes/s in the steady and fault phases.\n",
            r.target_writes_per_sec
        );
    }
    let _ = writeln!(
        m,
        "| phase | from s | to s | writes/s | reads/s | write p50 | p90 | p99 | p99.9 | max | read p50 | p99 | target |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in &r.phases {
        let t = match p.meets_target {
            Some(true) => "met",
            Some(false) => "**short**",
            None => "—",
        };
        let _ = writeln!(
            m,
            "| {} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            p.name, p.start_s, p.end_s, p.writes_per_sec, p.reads_per_sec, p.writes.p50_ms, p.writes.p90_ms, p.writes.p99_ms,
            p.writes.p999_ms, p.writes.max_ms, p.reads.p50_ms, p.reads.p99_ms, t
        );
    }
    let _ = writeln!(m, "\nLatencies in ms.\n\n## Faults and unavailability\n");
    if r.faults.is_empty() {
        let _ = writeln!(m, "No faults.");
    } else {
        let _ = writeln!(m, "| fault | targets | from s | to s | unavailable s | detail |\n|---|---|---|---|---|---|");
        for (f, u) in r.faults.iter().zip(&r.unavailability) {
            let un = u
                .unavailable_s
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "never recovered".into());
            let _ = writeln!(
                m,
                "| {} | {:?} | {:.2} | {:.2} | {} | {} |",
                f.kind, f.targets, f.start_s, f.end_s, un, f.detail
            );
        }
    }
    let _ = writeln!(m, "\n## Leaders\n");
    let changes: Vec<String> = r
        .leaders
        .iter()
        .map(|(t, l)| {
            format!(
                "{t:.2}s: {}",
                l.map(|x| format!("infra{x}"))
                    .unwrap_or_else(|| "none".into())
            )
        })
        .collect();
    let _ = writeln!(m, "{}\n", changes.join(", "));
    let f = |x: Option<f64>| x.map_or_else(|| "n/a".to_string(), |x| x.to_string());
    let _ = writeln!(
        m,
        "## Cost per acknowledged write\n\n{} Raft messages, {} bytes, {} fsyncs (all members); {} entries per fsync (group commit).",
        f(r.cost.msgs_per_write),
        f(r.cost.bytes_per_write),
        f(r.cost.fsyncs_per_write),
        f(r.cost.entries_per_fsync)
    );
    let c = &r.cost;
    if [
        c.msgs_per_write,
        c.bytes_per_write,
        c.fsyncs_per_write,
        c.entries_per_fsync,
    ]
    .contains(&None)
    {
        let _ = writeln!(
            m,
            "\nn/a: not measured (the server does not expose it, or a member restarted during the load)."
        );
    }
    m
}
