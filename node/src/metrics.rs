//! Latency histograms for `/metrics`: where a write's time goes on its way through a member
//! (waiting for the Ready loop, replication and fsync, waking the request) and how long the
//! Ready loop itself is busy at a time. Durations come from the member's clock, so under the
//! simulator they are simulated time and as reproducible as the rest of a run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets: 100 µs doubling up to ~13 s (then +Inf).
const BOUNDS_S: [f64; 18] = {
    let mut b = [0.0; 18];
    let mut i = 0;
    let mut v = 0.0001;
    while i < 18 {
        b[i] = v;
        v *= 2.0;
        i += 1;
    }
    b
};

/// A Prometheus histogram of durations, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; 18],
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Histogram {
    /// Record one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BOUNDS_S.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The longest duration recorded.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns.load(Ordering::Relaxed))
    }

    /// Append the histogram in Prometheus's text format; `labels` is `k="v",…` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in BOUNDS_S.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            out.push_str(&format!(
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}\n"
            ));
        }
        let count = self.count();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        out.push_str(&format!(
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}\n{name}_sum{braces} {sum}\n{name}_count{braces} {count}\n"
        ));
    }
}

/// The member's latency histograms.
#[derive(Debug, Default)]
pub struct Timings {
    /// A write request from its proposal to the Ready loop taking it.
    pub propose_wait: Histogram,
    /// From the Ready loop taking a proposal to the entry applied (replication, fsyncs).
    pub commit_apply: Histogram,
    /// From the entry applied to the waiting request running again.
    pub wake: Histogram,
    /// A write request's whole wait in [`crate::raft::Shared::propose`].
    pub propose_total: Histogram,
    /// One busy turn of the Ready loop (handling its inbox and a Ready).
    pub loop_turn: Histogram,
    /// One write of the WAL that ended in an fsync.
    pub wal_fsync: Histogram,
    /// Serialising and writing one snapshot (off the Ready loop).
    pub snapshot_save: Histogram,
}

impl Timings {
    /// Append every histogram to a `/metrics` page.
    pub fn render(&self, out: &mut String) {
        let mut one = |name: &str, help: &str, parts: &[(&str, &Histogram)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
            for (labels, h) in parts {
                h.render(out, name, labels);
            }
        };
        one(
            "detcd_request_stage_duration_seconds",
            "Where a write request's time goes: waiting for the Ready loop to take its proposal, from then to the entry applied, from then to the request running again, and the whole.",
            &[
                ("stage=\"propose_wait\"", &self.propose_wait),
                ("stage=\"commit_apply\"", &self.commit_apply),
                ("stage=\"wake\"", &self.wake),
                ("stage=\"total\"", &self.propose_total),
            ],
        );
        one(
            "detcd_raft_loop_turn_duration_seconds",
            "How long one turn of the Ready loop keeps it busy (nothing else reaches Raft meanwhile).",
            &[("", &self.loop_turn)],
        );
        one(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of a WAL write ended by an fsync.",
            &[("", &self.wal_fsync)],
        );
        one(
            "etcd_debugging_snap_save_total_duration_seconds",
            "The total latency distributions of saving a v2 snapshot (off the Ready loop).",
            &[("", &self.snapshot_save)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(150));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "stage=\"a\"");
        assert!(
            out.contains("x_bucket{stage=\"a\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{stage=\"a\",le=\"0.0002\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{stage=\"a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{stage=\"a\"} 3\n"), "{out}");
        assert_eq!(h.max(), Duration::from_secs(60));
        let mut plain = String::new();
        h.render(&mut plain, "y", "");
        assert!(
            plain.contains("y_bucket{le=\"+Inf\"} 3\ny_sum 60.0002\ny_count 3\n"),
            "{plain}"
        );
    }
}
