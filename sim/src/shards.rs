//! Sweep results that travel: a seed's summary row, a shard's output directory, and the
//! merge of any number of shard directories into one sweep report.
//!
//! A sweep, whole or one shard of it, reduces every seed it ran to a [`SeedRow`] and adds
//! the seed's write latencies into one histogram. `sweep --out DIR` writes those (and the
//! failure files) to `DIR` ([`Shard::write`]); `merge DIR...` reads any number of such
//! directories, refuses ones that do not belong together, and writes the report with
//! [`write_report`] — the same function a one-machine sweep calls on the same rows and
//! histogram, so the merged report is byte-identical to the one-machine report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::failure::FailureFile;
use crate::report::{self, Report};
use crate::scenario::Scenario;

/// The format of `shard.json`.
pub const SHARD_FORMAT: u32 = 1;

/// What a sweep keeps of one seed's run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeedRow {
    /// The seed.
    pub seed: u64,
    /// Every check passed and the run exited 0.
    pub passed: bool,
    /// The first failed check, `name: detail` (or why there is no report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Digest of the run's history (empty without a report).
    pub history_digest: String,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Operations recorded in the history.
    pub operations: u64,
    /// Writes answered: acknowledged, or refused with an error such as a failed compare
    /// (each one checked; the report's throughput counts the same).
    pub acked_writes: u64,
    /// Acknowledged writes/s of the first (steady) phase.
    pub steady_writes_per_sec: Option<f64>,
    /// Write p99 of the first (steady) phase, ms.
    pub steady_write_p99_ms: Option<f64>,
    /// The longest unavailability after a fault, s.
    pub max_unavailable_s: f64,
    /// Operations whose outcome the client could not know (timed out, connection lost):
    /// a jump here between two commits is a liveness regression no check may fail (a bug
    /// that failed every proposal slower than 100 ms multiplied it by ten in
    /// election-storm). Absent in shards written before it was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indeterminate: Option<u64>,
}

impl SeedRow {
    /// The row of a run that wrote `r` and exited with `status`.
    pub fn of(r: &Report, status: i32) -> SeedRow {
        let first_failure = r
            .checks
            .iter()
            .find(|c| c.verdict != "pass")
            .map(|c| format!("{}: {}", c.name, c.detail));
        let passed = first_failure.is_none() && status == 0;
        let steady = r.phases.first();
        SeedRow {
            seed: r.seed,
            passed,
            failed: if passed {
                None
            } else {
                Some(first_failure.unwrap_or_else(|| format!("exit status {status}")))
            },
            history_digest: r.history_digest.clone(),
            sim_seconds: r.sim_seconds,
            operations: r.operations,
            acked_writes: r.throughput.iter().sum(),
            steady_writes_per_sec: steady.map(|p| p.writes_per_sec),
            steady_write_p99_ms: steady.map(|p| p.writes.p99_ms),
            max_unavailable_s: r
                .unavailability
                .iter()
                .filter_map(|u| u.unavailable_s)
                .fold(0.0, f64::max),
            indeterminate: Some(r.indeterminate),
        }
    }

    /// The row of a run that left no report.
    pub fn without_report(seed: u64, status: i32) -> SeedRow {
        SeedRow {
            seed,
            passed: false,
            failed: Some(format!("no report (exit {status})")),
            history_digest: String::new(),
            sim_seconds: 0.0,
            operations: 0,
            acked_writes: 0,
            steady_writes_per_sec: None,
            steady_write_p99_ms: None,
            max_unavailable_s: 0.0,
            indeterminate: None,
        }
    }

    /// The failed check's name (what a failure file records).
    pub fn failed_check(&self) -> &str {
        self.failed
            .as_deref()
            .map(|f| f.split(':').next().unwrap_or(f))
            .unwrap_or("")
    }
}

/// The identity of the code and scenario a shard ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShardHeader {
    /// `shard.json` format.
    pub format: u32,
    /// Scenario name.
    pub scenario: String,
    /// FNV-1a digest of the scenario as the simulator read it (its TOML re-encoded), hex:
    /// two shards of "the same" scenario whose files differ are refused.
    pub scenario_digest: String,
    /// The commit the simulator ran at ([`commit`]).
    pub commit: String,
    /// detcd version.
    pub version: String,
    /// The range the sweep was given, `A..B`.
    pub range: String,
    /// This shard, `I/N` (`1/1` for a whole sweep).
    pub shard: String,
}

/// One shard's output: `DIR/shard.json`, `DIR/write-latency.hgrm`, `DIR/failures/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// What ran.
    #[serde(flatten)]
    pub header: ShardHeader,
    /// The seeds the shard was given.
    pub seeds: Vec<u64>,
    /// Runs whose write-latency histogram was added to the shard's.
    pub histogram_runs: u64,
    /// One row per seed, by seed.
    pub rows: Vec<SeedRow>,
}

/// The commit the simulator runs at: `DETCD_COMMIT` when set, else the commit it was built
/// from (`sim/build.rs`; the working tree's uncommitted changes, if any, are not named),
/// else `git rev-parse --short HEAD` at run time, else `unknown`.
pub fn commit() -> String {
    match std::env::var("DETCD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => match env!("DETCD_BUILD_COMMIT") {
            "unknown" => crate::failure::commit(),
            built => built.to_string(),
        },
    }
}

/// FNV-1a of a scenario's TOML encoding, hex.
pub fn scenario_digest(s: &Scenario) -> String {
    crate::outcome::digest(toml::to_string(s).unwrap_or_default().as_bytes())
}

impl Shard {
    /// Write the shard into `dir` (created): `shard.json` and the merged histogram. The
    /// failure files are written by the sweep as the seeds fail ([`failure_path`]).
    pub fn write(&self, dir: &Path, hist: &Histogram<u64>) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("write-latency.hgrm"),
            report::histogram_bytes(hist),
        )?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("shard.json"), json + "\n")
    }

    /// Read the shard in `dir`.
    pub fn read(dir: &Path) -> Result<(Shard, Histogram<u64>), String> {
        let p = dir.join("shard.json");
        let text = std::fs::read_to_string(&p).map_err(|e| {
            format!(
                "{}: {e} (not the --out directory of a finished `sweep`)",
                p.display()
            )
        })?;
        let shard: Shard =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        if shard.header.format != SHARD_FORMAT {
            return Err(format!(
                "{}: shard format {} (this simulator reads {SHARD_FORMAT})",
                p.display(),
                shard.header.format
            ));
        }
        let h = dir.join("write-latency.hgrm");
        let bytes = std::fs::read(&h).map_err(|e| format!("{}: {e}", h.display()))?;
        let hist = report::histogram_from(&bytes).map_err(|e| format!("{}: {e}", h.display()))?;
        Ok((shard, hist))
    }
}

/// Where a shard in `dir` keeps the failure file of `seed`.
pub fn failure_path(dir: &Path, scenario: &str, seed: u64) -> PathBuf {
    dir.join(crate::failure::path_of(scenario, seed))
}

/// Everything a sweep report is made of.
#[derive(Debug)]
pub struct Sweep {
    /// Scenario name.
    pub scenario: String,
    /// One row per seed, sorted by seed.
    pub rows: Vec<SeedRow>,
    /// Every run's acknowledged write latencies.
    pub hist: Histogram<u64>,
    /// How many runs the histogram holds.
    pub histogram_runs: u64,
}

/// Join shards into one sweep, or say in one line why they do not belong together.
pub fn join(shards: Vec<(PathBuf, Shard, Histogram<u64>)>) -> Result<Sweep, String> {
    let Some((first_dir, first, _)) = shards.first() else {
        return Err("merge: no shard directories given".into());
    };
    let (first_dir, h0) = (first_dir.clone(), first.header.clone());
    let mut owner: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut hist = report::new_histogram();
    let mut histogram_runs = 0;
    for (dir, shard, h) in shards {
        let hd = &shard.header;
        if hd.scenario != h0.scenario {
            return Err(format!(
                "shards of different scenarios: {} ({}) and {} ({})",
                h0.scenario,
                first_dir.display(),
                hd.scenario,
                dir.display()
            ));
        }
        if hd.scenario_digest != h0.scenario_digest {
            return Err(format!(
                "shards ran different versions of scenario {}: digest {} ({}) and {} ({})",
                hd.scenario,
                h0.scenario_digest,
                first_dir.display(),
                hd.scenario_digest,
                dir.display()
            ));
        }
        if hd.commit != h0.commit {
            return Err(format!(
                "shards of different commits: {} ({}) and {} ({})",
                h0.commit,
                first_dir.display(),
                hd.commit,
                dir.display()
            ));
        }
        let ran: Vec<u64> = shard.rows.iter().map(|r| r.seed).collect();
        if ran != shard.seeds {
            return Err(format!(
                "{}: the shard was given {} seeds but has rows for {}",
                dir.display(),
                shard.seeds.len(),
                ran.len()
            ));
        }
        for s in &shard.seeds {
            if let Some(other) = owner.insert(*s, dir.clone()) {
                return Err(format!(
                    "shards overlap: seed {s} is in {} and {}",
                    other.display(),
                    dir.display()
                ));
            }
        }
        hist.add(&h)
            .map_err(|e| format!("{}: histogram: {e:?}", dir.display()))?;
        histogram_runs += shard.histogram_runs;
        rows.extend(shard.rows);
    }
    // The seeds must form one range A..B with nothing missing.
    let seeds: Vec<u64> = owner.keys().copied().collect();
    if let Some(w) = seeds.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(format!(
            "shards leave a gap: seeds {}..{} are in no shard (the seeds run from {} to {})",
            w[0] + 1,
            w[1],
            seeds[0],
            seeds[seeds.len() - 1]
        ));
    }
    rows.sort_by_key(|r| r.seed);
    Ok(Sweep {
        scenario: h0.scenario,
        rows,
        hist,
        histogram_runs,
    })
}

/// The shard directories `args` name: each one that holds a `shard.json`, and each
/// subdirectory that does of one that does not (so `merge SHARDS/` needs no shell glob).
pub fn shard_dirs(args: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for a in args {
        if a.join("shard.json").exists() {
            dirs.push(a.clone());
            continue;
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(a)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.join("shard.json").exists())
                    .collect()
            })
            .unwrap_or_default();
        if subs.is_empty() {
            // Not a shard and holding none: reading it says why.
            dirs.push(a.clone());
        } else {
            subs.sort();
            dirs.append(&mut subs);
        }
    }
    dirs
}

/// `detcd-sim merge DIR... [--out OUT] [--expect N]`: join the shards, copy their failure
/// files to `failures/`, and write `OUT/sweep.{json,md,html}` (OUT defaults to
/// `reports/<scenario>`). With `expect = (n, limit)`, first wait (polling every 2 s, up to
/// `limit`) until `n` finished shards are there. Returns the exit code: 0 all passed, 1 some
/// seed failed, 2 the shards were refused or never all came.
pub fn merge(args: &[PathBuf], out: Option<&Path>, expect: Option<(usize, Duration)>) -> u8 {
    let mut dirs = shard_dirs(args);
    if let Some((n, limit)) = expect {
        let start = Instant::now();
        loop {
            let present = dirs
                .iter()
                .filter(|d| d.join("shard.json").exists())
                .count();
            if present >= n {
                break;
            }
            if start.elapsed() >= limit {
                eprintln!(
                    "detcd-sim: merge: {present} of {n} shards finished after {} s",
                    limit.as_secs()
                );
                return 2;
            }
            std::thread::sleep(Duration::from_secs(2).min(limit));
            dirs = shard_dirs(args);
        }
    }
    let mut shards = Vec::new();
    for d in &dirs {
        match Shard::read(d) {
            Ok((s, h)) => shards.push((d.clone(), s, h)),
            Err(e) => {
                eprintln!("detcd-sim: merge: {e}");
                return 2;
            }
        }
    }
    let failure_files: Vec<(PathBuf, u64)> = shards
        .iter()
        .flat_map(|(d, s, _)| {
            s.rows
                .iter()
                .filter(|r| !r.passed)
                .map(|r| (failure_path(d, &s.header.scenario, r.seed), r.seed))
                .collect::<Vec<_>>()
        })
        .collect();
    let sweep = match join(shards) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("detcd-sim: merge: {e}");
            return 2;
        }
    };
    // Failures travel: each shard's failure file lands where a one-machine sweep puts it.
    for (from, seed) in failure_files {
        let Ok(f) = crate::failure::load(&from) else {
            // A run without a report has no failure file; its row says why.
            continue;
        };
        debug_assert_eq!(f.seed, seed);
        if let Err(e) = crate::failure::save(&f) {
            eprintln!("detcd-sim: merge: {e}");
            return 2;
        }
    }
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new("reports").join(&sweep.scenario));
    if let Err(e) = write_report(&out, &sweep) {
        eprintln!("detcd-sim: merge: writing {}: {e}", out.display());
        return 2;
    }
    let failed: Vec<u64> = sweep
        .rows
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.seed)
        .collect();
    println!(
        "merged {} shards of {}: {} seeds, {} failed {:?}; wrote {}",
        dirs.len(),
        sweep.scenario,
        sweep.rows.len(),
        failed.len(),
        failed,
        out.display()
    );
    u8::from(!failed.is_empty())
}

fn pct(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// `{"min", "p50", "max"}` of `v` (see [`pct`]).
fn spread(v: Vec<f64>) -> serde_json::Value {
    serde_json::json!({"min": pct(v.clone(), 0.0), "p50": pct(v.clone(), 0.5), "max": pct(v, 1.0)})
}

/// `OUT/sweep.{json,md,html}`: the distribution over the seeds of a sweep. Nothing in them
/// depends on where or how the seeds ran, so shards merged equal one machine's sweep.
pub fn write_report(out: &Path, sweep: &Sweep) -> std::io::Result<()> {
    let name = &sweep.scenario;
    let rows = &sweep.rows;
    std::fs::create_dir_all(out)?;
    let wps: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.steady_writes_per_sec)
        .collect();
    let p99: Vec<f64> = rows.iter().filter_map(|r| r.steady_write_p99_ms).collect();
    let un: Vec<f64> = rows
        .iter()
        .filter(|r| !r.history_digest.is_empty())
        .map(|r| r.max_unavailable_s)
        .collect();
    let ind: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.indeterminate)
        .map(|n| n as f64)
        .collect();
    let ml = report::latency(&sweep.hist);
    let failed: Vec<&SeedRow> = rows.iter().filter(|r| !r.passed).collect();
    let sim_s: f64 = rows.iter().map(|r| r.sim_seconds).sum();
    let acked: u64 = rows.iter().map(|r| r.acked_writes).sum();
    let ops: u64 = rows.iter().map(|r| r.operations).sum();
    let range = match (rows.first(), rows.last()) {
        (Some(a), Some(b)) => format!("{}..{}", a.seed, b.seed + 1),
        _ => String::new(),
    };
    let summary = serde_json::json!({
        "version": report::REPORT_VERSION,
        "scenario": name,
        "seeds": rows.len(),
        "range": range,
        "failed": failed.len(),
        "simulated_seconds": (sim_s * 10.0).round() / 10.0,
        "operations": ops,
        "acked_writes": acked,
        "steady_writes_per_sec": spread(wps),
        "steady_write_p99_ms": spread(p99),
        "max_unavailable_s": spread(un),
        // Null for shards written before it was counted.
        "indeterminate_ops": if ind.is_empty() {
            serde_json::json!({"min": null, "p50": null, "max": null})
        } else {
            spread(ind)
        },
        "merged_write_latency_ms": {"runs": sweep.histogram_runs, "count": ml.count, "p50": ml.p50_ms, "p90": ml.p90_ms, "p99": ml.p99_ms, "p999": ml.p999_ms, "max": ml.max_ms},
        "runs": rows,
    });
    std::fs::write(
        out.join("sweep.json"),
        serde_json::to_string_pretty(&summary).map_err(std::io::Error::other)? + "\n",
    )?;
    let mut md = format!(
        "# Sweep of {name}: {} seeds ({range})\n\n\
         {:.1} simulated hours, {ops} operations, {acked} answered writes checked \
         (acknowledged, or refused with an error such as a failed compare).\n\n\
         | metric | min | p50 | max |\n|---|---|---|---|\n",
        rows.len(),
        sim_s / 3600.0,
    );
    for key in [
        "steady_writes_per_sec",
        "steady_write_p99_ms",
        "max_unavailable_s",
        "indeterminate_ops",
    ] {
        let v = &summary[key];
        if v["min"].is_null() {
            // Not counted by the shards' simulator (older shards).
            continue;
        }
        md.push_str(&format!(
            "| {key} | {} | {} | {} |\n",
            v["min"], v["p50"], v["max"]
        ));
    }
    md.push_str(&format!(
        "\nAll acknowledged writes of {} runs in one histogram ({} writes): \
         p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms.\n",
        sweep.histogram_runs, ml.count, ml.p50_ms, ml.p90_ms, ml.p99_ms, ml.p999_ms, ml.max_ms
    ));
    md.push_str(&format!("\nFailed seeds: {}\n", failed.len()));
    for r in &failed {
        let f = crate::failure::path_of(name, r.seed);
        md.push_str(&format!(
            "\n- seed {}: {}. Replay: `cargo sim replay {}`; shrink: `cargo sim shrink {}`\n",
            r.seed,
            r.failed.as_deref().unwrap_or("failed"),
            f.display(),
            f.display()
        ));
    }
    std::fs::write(
        out.join("sweep.html"),
        crate::html::sweep_page(name, rows, &md),
    )?;
    std::fs::write(out.join("sweep.md"), md)
}

/// The failure file a sweep saves for a failed row.
pub fn failure_file(s: &Scenario, row: &SeedRow, commit: &str) -> FailureFile {
    FailureFile {
        seed: row.seed,
        version: env!("CARGO_PKG_VERSION").into(),
        commit: commit.into(),
        failed_check: row.failed_check().to_string(),
        history_digest: row.history_digest.clone(),
        cause: String::new(),
        scenario: s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seed: u64, passed: bool) -> SeedRow {
        SeedRow {
            seed,
            passed,
            failed: (!passed).then(|| "linearizability: a read saw the past".to_string()),
            history_digest: format!("{seed:016x}"),
            sim_seconds: 20.0,
            operations: 100 + seed,
            acked_writes: 50 + seed,
            steady_writes_per_sec: Some(800.0 + seed as f64),
            steady_write_p99_ms: Some(10.0 + seed as f64),
            max_unavailable_s: seed as f64 / 10.0,
            indeterminate: Some(seed * 2),
        }
    }

    fn shard(dir: &str, seeds: &[u64], commit: &str) -> (PathBuf, Shard, Histogram<u64>) {
        let mut h = report::new_histogram();
        for s in seeds {
            h.record(1000 * s).unwrap();
        }
        (
            PathBuf::from(dir),
            Shard {
                header: ShardHeader {
                    format: SHARD_FORMAT,
                    scenario: "swarm".into(),
                    scenario_digest: "00".into(),
                    commit: commit.into(),
                    version: "0".into(),
                    range: "1..7".into(),
                    shard: "1/2".into(),
                },
                seeds: seeds.to_vec(),
                histogram_runs: seeds.len() as u64,
                rows: seeds.iter().map(|s| row(*s, *s != 4)).collect(),
            },
            h,
        )
    }

    #[test]
    fn shards_join_in_any_order_into_the_whole_range() {
        let a = join(vec![
            shard("a", &[2, 4, 6], "c1"),
            shard("b", &[1, 3, 5], "c1"),
        ])
        .unwrap();
        let b = join(vec![
            shard("b", &[1, 3, 5], "c1"),
            shard("a", &[2, 4, 6], "c1"),
        ])
        .unwrap();
        assert_eq!(a.rows, b.rows);
        assert_eq!(
            a.rows.iter().map(|r| r.seed).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(a.hist.len(), 6);
        assert_eq!(a.histogram_runs, 6);
    }

    #[test]
    fn mismatched_shards_are_refused_with_one_line_naming_them() {
        let e = join(vec![shard("a", &[1, 2], "c1"), shard("b", &[2, 3], "c1")]).unwrap_err();
        assert_eq!(e, "shards overlap: seed 2 is in a and b");
        let e = join(vec![shard("a", &[1, 2], "c1"), shard("b", &[5, 6], "c1")]).unwrap_err();
        assert_eq!(
            e,
            "shards leave a gap: seeds 3..5 are in no shard (the seeds run from 1 to 6)"
        );
        let e = join(vec![shard("a", &[1, 2], "c1"), shard("b", &[3], "c2")]).unwrap_err();
        assert_eq!(e, "shards of different commits: c1 (a) and c2 (b)");
        let mut other = shard("b", &[3], "c1");
        other.1.header.scenario = "v3-swarm".into();
        let e = join(vec![shard("a", &[1, 2], "c1"), other]).unwrap_err();
        assert_eq!(
            e,
            "shards of different scenarios: swarm (a) and v3-swarm (b)"
        );
        let mut other = shard("b", &[3], "c1");
        other.1.header.scenario_digest = "01".into();
        let e = join(vec![shard("a", &[1, 2], "c1"), other]).unwrap_err();
        assert!(
            e.starts_with("shards ran different versions of scenario swarm"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        assert!(join(vec![]).is_err());
    }

    #[test]
    fn a_shard_round_trips_through_its_directory() {
        let dir = std::env::temp_dir().join(format!("detcd-shard-{}", std::process::id()));
        let (_, s, h) = shard("x", &[1, 2, 3], "c1");
        s.write(&dir, &h).unwrap();
        let (back, hb) = Shard::read(&dir).unwrap();
        assert_eq!(back, s);
        assert_eq!(hb, h);
        std::fs::remove_dir_all(&dir).unwrap();
        let e = Shard::read(&dir).unwrap_err();
        assert!(e.contains("shard.json"), "{e}");
    }

    #[test]
    fn the_report_lists_each_failed_seed_with_its_shrink_command() {
        let dir = std::env::temp_dir().join(format!("detcd-sweep-{}", std::process::id()));
        let sweep = join(vec![shard("a", &[1, 2, 3, 4, 5, 6], "c1")]).unwrap();
        write_report(&dir, &sweep).unwrap();
        let md = std::fs::read_to_string(dir.join("sweep.md")).unwrap();
        assert!(md.contains("Failed seeds: 1\n"), "{md}");
        assert!(
            md.contains("- seed 4: linearizability: a read saw the past. Replay: `cargo sim replay failures/swarm-4.toml`; shrink: `cargo sim shrink failures/swarm-4.toml`"),
            "{md}"
        );
        assert!(md.contains("# Sweep of swarm: 6 seeds (1..7)"), "{md}");
        // Seed s had 2s indeterminate operations.
        assert!(
            md.contains("| indeterminate_ops | 2.0 | 8.0 | 12.0 |"),
            "{md}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
