//! Seed sweeps and replay.
//!
//! A failing seed is saved as a self-contained failure file (see [`crate::failure`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::scenario::Scenario;
use crate::shards::{SeedRow, ShardHeader};

/// Parse `A..B` and an optional `I/N` shard into the seeds this machine runs. `I` counts
/// from 1, or from 0 when `zero_based` (Kubernetes' `JOB_COMPLETION_INDEX`).
pub fn seeds_of(range: &str, shard: Option<&str>, zero_based: bool) -> Result<Vec<u64>, String> {
    let (a, b) = range
        .split_once("..")
        .ok_or_else(|| format!("--seeds {range:?}: expected A..B"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("--seeds {range:?}: bad start"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("--seeds {range:?}: bad end"))?;
    if b <= a {
        return Err(format!("--seeds {range:?}: empty range"));
    }
    let (i, n) = match shard {
        None => (1, 1),
        Some(s) => {
            let (i, n) = s
                .split_once('/')
                .ok_or_else(|| format!("--shard {s:?}: expected I/N"))?;
            let i: u64 = i.parse().map_err(|_| format!("--shard {s:?}: bad I"))?;
            let n: u64 = n.parse().map_err(|_| format!("--shard {s:?}: bad N"))?;
            if zero_based {
                if n == 0 || i >= n {
                    return Err(format!("--shard {s:?} --zero-based: need 0 <= I < N"));
                }
                (i + 1, n)
            } else {
                if n == 0 || i == 0 || i > n {
                    return Err(format!("--shard {s:?}: need 1 <= I <= N"));
                }
                (i, n)
            }
        }
    };
    Ok((a..b).filter(|s| (s - a) % n == i - 1).collect())
}

/// Where a sweep puts its output.
pub struct SweepOut {
    /// `--out DIR`: write the shard there (rows, histogram, failure files, runs under
    /// `DIR/runs/`) for `merge`; without it, the report goes to `reports/<scenario>/`.
    pub dir: Option<PathBuf>,
    /// Keep every run's directory (history, report); without it a shard keeps only the runs
    /// that failed (a 10,000-seed campaign's histories would not fit).
    pub keep_passing: bool,
    /// `--shard I/N` counts I from 0.
    pub zero_based: bool,
}

/// `detcd-sim sweep`.
pub fn sweep(
    scenario: &str,
    range: &str,
    shard: Option<&str>,
    jobs: usize,
    out: &SweepOut,
) -> ExitCode {
    let shard_1 = shard.map(|sh| {
        // Recorded 1-based whatever the caller counted from.
        match (out.zero_based, sh.split_once('/')) {
            (true, Some((i, n))) => i
                .parse::<u64>()
                .map(|i| format!("{}/{n}", i + 1))
                .unwrap_or_else(|_| sh.to_string()),
            _ => sh.to_string(),
        }
    });
    let s = match Scenario::find(scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let seeds = match seeds_of(range, shard, out.zero_based) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let header = ShardHeader {
        format: crate::shards::SHARD_FORMAT,
        scenario: s.name.clone(),
        scenario_digest: crate::shards::scenario_digest(&s),
        commit: crate::shards::commit(),
        version: env!("CARGO_PKG_VERSION").into(),
        range: range.trim().to_string(),
        shard: shard_1.unwrap_or_else(|| "1/1".into()),
    };
    let runs_dir = match &out.dir {
        Some(d) => d.join("runs"),
        None => Path::new("reports").join(&s.name),
    };
    let wall = Instant::now();
    let mut rows: Vec<SeedRow> = Vec::new();
    let mut hist = crate::report::new_histogram();
    let mut histogram_runs = 0u64;
    let mut sim_s = 0.0;
    // Each seed runs in a child process of its own: a run is byte-for-byte reproducible from
    // its seed in a fresh process (which is how `run` and `replay` execute it), so the digest a
    // sweep records is the one a replay will find.
    let exe = std::env::current_exe().unwrap_or_else(|_| "detcd-sim".into());
    let scenario_path = Scenario::path_of(scenario);
    let mut queue = seeds.iter().copied();
    let mut running: Vec<(u64, Instant, std::process::Child)> = Vec::new();
    let mut done = 0usize;
    let mut failed = 0usize;
    // A progress bar on a terminal (hidden otherwise); each seed's line prints above it.
    let bar = indicatif::ProgressBar::new(seeds.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} seeds, {msg} ({elapsed}, about {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(s.name.clone());
    bar.set_message("0 failed");
    // A hidden bar prints nothing, so off a terminal the lines go to stdout as they are.
    let say = |line: String| {
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    loop {
        while running.len() < jobs.max(1) {
            let Some(seed) = queue.next() else { break };
            let run_dir = runs_dir.join(format!("seed-{seed}"));
            match std::process::Command::new(&exe)
                .args([
                    "run",
                    &scenario_path.display().to_string(),
                    "--seed",
                    &seed.to_string(),
                    "--out",
                    &run_dir.display().to_string(),
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
            {
                Ok(child) => running.push((seed, Instant::now(), child)),
                Err(e) => {
                    eprintln!("detcd-sim: cannot start a run: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        if running.is_empty() {
            break;
        }
        let (seed, t, mut child) = running.remove(0);
        let status = child.wait().map(|s| s.code().unwrap_or(1)).unwrap_or(1);
        done += 1;
        bar.inc(1);
        let run_dir = runs_dir.join(format!("seed-{seed}"));
        let report: Option<crate::report::Report> =
            std::fs::read_to_string(run_dir.join("report.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
        let row = match &report {
            Some(r) => SeedRow::of(r, status),
            None => SeedRow::without_report(seed, status),
        };
        if let Some(r) = &report {
            sim_s += r.sim_seconds;
            say(format!(
                "[{done}/{}] seed {seed}: {} ({:.1} sim s, {:.1} wall s, digest {})",
                seeds.len(),
                if row.passed { "ok" } else { "FAIL" },
                r.sim_seconds,
                t.elapsed().as_secs_f64(),
                r.history_digest
            ));
            // Every seed's acknowledged writes in one histogram (each run's hgrm).
            if let Some(h) = std::fs::read(run_dir.join("write-latency.hgrm"))
                .ok()
                .and_then(|b| crate::report::histogram_from(&b).ok())
            {
                if hist.add(&h).is_ok() {
                    histogram_runs += 1;
                }
            }
        } else {
            say(format!(
                "[{done}/{}] seed {seed}: no report (exit {status})",
                seeds.len()
            ));
        }
        if !row.passed {
            failed += 1;
            bar.set_message(format!("{failed} failed"));
            if report.is_some() {
                say(format!(
                    "    failed: {}",
                    row.failed.as_deref().unwrap_or_default()
                ));
                let f = crate::shards::failure_file(&s, &row, &header.commit);
                match crate::failure::save_in(out.dir.as_deref().unwrap_or(Path::new("")), &f) {
                    Ok(path) => say(format!("    saved {}", path.display())),
                    Err(e) => eprintln!("detcd-sim: {e}"),
                }
            }
        } else if out.dir.is_some() && !out.keep_passing {
            let _ = std::fs::remove_dir_all(&run_dir);
        }
        rows.push(row);
    }
    bar.finish_and_clear();
    rows.sort_by_key(|r| r.seed);
    let failed_seeds: Vec<u64> = rows.iter().filter(|r| !r.passed).map(|r| r.seed).collect();
    let written = match &out.dir {
        Some(d) => crate::shards::Shard {
            header,
            seeds: seeds.clone(),
            histogram_runs,
            rows,
        }
        .write(d, &hist)
        .map(|_| d.clone()),
        None => {
            let dir = Path::new("reports").join(&s.name);
            crate::shards::write_report(
                &dir,
                &crate::shards::Sweep {
                    scenario: s.name.clone(),
                    rows,
                    hist,
                    histogram_runs,
                },
            )
            .map(|_| dir)
        }
    };
    let written = match written {
        Ok(d) => d,
        Err(e) => {
            eprintln!("detcd-sim: writing the sweep's output: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "sweep {}: {} seeds, {} failed {:?}; {:.1} simulated s in {:.1} wall s; wrote {}",
        s.name,
        seeds.len(),
        failed_seeds.len(),
        failed_seeds,
        sim_s,
        wall.elapsed().as_secs_f64(),
        written.display()
    );
    ExitCode::from(if failed_seeds.is_empty() { 0 } else { 1 })
}

/// `detcd-sim replay`.
pub fn replay(path: &Path, trace: bool) -> ExitCode {
    let f = match crate::failure::load(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if trace {
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let wall = Instant::now();
    let res = crate::outcome::run_and_check(&f.scenario, f.seed);
    res.print_summary(wall.elapsed(), true);
    let same_digest = res.digest == f.history_digest;
    let same_failure = res
        .first_failure()
        .map(|c| c.starts_with(&f.failed_check))
        .unwrap_or(false);
    println!(
        "replay of {}: digest {} ({}), failure {}",
        path.display(),
        res.digest,
        if same_digest {
            "same as recorded"
        } else {
            "DIFFERENT from recorded"
        },
        if same_failure {
            format!("reproduced ({})", f.failed_check)
        } else if res.passed() {
            "not reproduced: every check passes now".into()
        } else {
            format!("different: {}", res.first_failure().unwrap_or_default())
        }
    );
    ExitCode::from(if res.passed() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_range() {
        let all = seeds_of("1..11", None, false).unwrap();
        let mut joined: Vec<u64> = (1..=3)
            .flat_map(|i| seeds_of("1..11", Some(&format!("{i}/3")), false).unwrap())
            .collect();
        joined.sort();
        assert_eq!(all, joined);
        for i in 0..3 {
            assert_eq!(
                seeds_of("1..11", Some(&format!("{i}/3")), true).unwrap(),
                seeds_of("1..11", Some(&format!("{}/3", i + 1)), false).unwrap()
            );
        }
        assert!(seeds_of("5..5", None, false).is_err());
        assert!(seeds_of("1..5", Some("4/3"), false).is_err());
        assert!(seeds_of("1..5", Some("0/3"), false).is_err());
        assert!(seeds_of("1..5", Some("3/3"), true).is_err());
    }
}
