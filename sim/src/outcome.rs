//! A run and its verdicts: run the scenario, write the history, run the checkers, build the
//! report; and write all of it to a directory.

use std::path::Path;
use std::time::Duration;

use crate::output::{Check, RunOutput};
use crate::report::{self, Report};
use crate::scenario::Scenario;

/// Everything one seed produced.
pub struct RunResult {
    /// The raw run.
    pub out: RunOutput,
    /// history.jsonl bytes.
    pub history: Vec<u8>,
    /// history-v3.jsonl bytes (the v3 workload's operations; empty for v2).
    pub v3_history: Vec<u8>,
    /// FNV-1a digest of `history`, hex.
    pub digest: String,
    /// All checks (simulation-side ones and the checkers').
    pub checks: Vec<Check>,
    /// The report.
    pub report: Report,
    /// HTML of the checker's timeline when linearizability failed.
    pub timeline_html: String,
    /// Wall-clock time of the simulation.
    pub wall: Duration,
}

/// FNV-1a over bytes, as 16 hex digits.
pub fn digest(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Run `s` with `seed` in the simulator and check it.
#[cfg(madsim)]
pub fn run_and_check(s: &Scenario, seed: u64) -> RunResult {
    let (out, wall) = crate::run::run(s, seed);
    judge(s, out, wall)
}

/// Check what a run of `s` produced (in the simulator or against real containers) and build
/// its report.
pub fn judge(s: &Scenario, out: RunOutput, wall: Duration) -> RunResult {
    let history = crate::history::to_jsonl(s, &out);
    let v3_history = crate::history::v3_jsonl(&out);
    // Over both histories: the same seed must give the same bytes in each.
    let digest = digest(&[history.as_slice(), v3_history.as_slice()].concat());
    let mut checks = Vec::new();
    let mut timeline_html = String::new();
    let v3 = s.workload.api == crate::scenario::Api::V3;
    let mut leases = None;
    if v3 && s.checks.linearizable {
        let (c, l) = crate::history::check_v3_leases(
            &v3_history,
            Duration::from_secs_f64(s.checks.checker_timeout_s),
        );
        checks.push(c);
        leases = l;
    }
    if !v3 && (s.checks.linearizable || s.checks.watches) {
        let (lin, watches, html) = crate::history::check(
            &history,
            Duration::from_secs_f64(s.checks.checker_timeout_s),
        );
        if s.checks.linearizable {
            timeline_html = html;
            checks.push(lin);
        }
        if s.checks.watches {
            checks.push(watches);
        }
    }
    if !v3 && s.checks.linearizable {
        checks.push(crate::history::check_reads(&history));
    }
    checks.extend(out.checks.iter().cloned());
    checks.push(crate::availability::availability(s, &out));
    checks.push(crate::availability::vacuity_with(s, &out, leases));
    checks.extend(crate::permissions::check(s, &out));
    checks.extend(crate::v3auth::check(s, &out));
    let load_ns = (s.workload.duration_s * 1e9) as u64;
    let report = report::build(
        &s.name,
        &out,
        &checks,
        &digest,
        load_ns,
        s.targets.writes_per_sec,
    );
    if s.targets.writes_per_sec > 0 {
        if let Some(steady) = report.phases.iter().find(|p| p.name == "steady") {
            checks.push(Check {
                name: "throughput".into(),
                passed: Some(steady.writes_per_sec >= s.targets.writes_per_sec as f64),
                detail: format!(
                    "steady phase: {:.1} acknowledged writes/s (target {})",
                    steady.writes_per_sec, s.targets.writes_per_sec
                ),
            });
        }
    }
    let report = Report {
        checks: checks.iter().map(report::verdict).collect(),
        ..report
    };
    RunResult {
        out,
        history,
        v3_history,
        digest,
        checks,
        report,
        timeline_html,
        wall,
    }
}

impl RunResult {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed == Some(true))
    }

    /// "name: detail" of the first check that did not pass.
    pub fn first_failure(&self) -> Option<String> {
        self.checks
            .iter()
            .find(|c| c.passed != Some(true))
            .map(|c| format!("{}: {}", c.name, c.detail))
    }

    /// Write history.jsonl, report.json, report.md and report.html into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("history.jsonl"), &self.history)?;
        if !self.v3_history.is_empty() {
            std::fs::write(dir.join("history-v3.jsonl"), &self.v3_history)?;
        }
        let json = serde_json::to_string_pretty(&self.report).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json + "\n")?;
        let md = report::markdown(&self.report);
        std::fs::write(
            dir.join("report.html"),
            crate::html::page(
                &self.report,
                &md,
                &self.timeline_html,
                &report::write_points(&self.out),
            ),
        )?;
        std::fs::write(dir.join("report.md"), md)?;
        std::fs::write(
            dir.join("write-latency.hgrm"),
            report::histogram_bytes(&report::write_histogram(&self.out)),
        )?;
        Ok(())
    }

    /// The lines `run` prints.
    pub fn print_summary(&self, wall: Duration, simulated: bool) {
        println!("scenario {} seed {}", self.report.scenario, self.out.seed);
        println!("history digest {}", self.digest);
        let speed = |w: Duration| self.report.sim_seconds / w.as_secs_f64().max(1e-9);
        if simulated {
            println!(
                "simulated {:.1} s in {:.2} wall s ({:.0}x real time); {} operations; the simulation alone {:.2} wall s ({:.0}x), checks and report the rest",
                self.report.sim_seconds,
                wall.as_secs_f64(),
                speed(wall),
                self.report.operations,
                self.wall.as_secs_f64(),
                speed(self.wall),
            );
        } else {
            println!(
                "ran {:.1} s of load in {:.2} wall s with checks and report; {} operations",
                self.report.sim_seconds,
                wall.as_secs_f64(),
                self.report.operations
            );
        }
        for c in &self.checks {
            let v = match c.passed {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "unknown",
            };
            println!("  {:<13} {v:<7} {}", c.name, c.detail);
        }
        if let Some(steady) = self.report.phases.first() {
            println!(
                "  steady phase: {:.0} writes/s, write p50 {:.2} ms p99 {:.2} ms",
                steady.writes_per_sec, steady.writes.p50_ms, steady.writes.p99_ms
            );
        }
    }
}
