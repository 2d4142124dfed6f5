//! Seed sweeps and replay.
//!
//! A failing seed is saved as a self-contained failure file (see [`crate::failure`]).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crate::failure::FailureFile;
use crate::scenario::Scenario;

/// Parse `A..B` and an optional `I/N` shard into the seeds this machine runs.
pub fn seeds_of(range: &str, shard: Option<&str>) -> Result<Vec<u64>, String> {
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
            if n == 0 || i == 0 || i > n {
                return Err(format!("--shard {s:?}: need 1 <= I <= N"));
            }
            (i, n)
        }
    };
    Ok((a..b).filter(|s| (s - a) % n == i - 1).collect())
}

/// `detcd-sim sweep`.
pub fn sweep(scenario: &str, range: &str, shard: Option<&str>, jobs: usize) -> ExitCode {
    let s = match Scenario::find(scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let seeds = match seeds_of(range, shard) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let wall = Instant::now();
    let mut failed = Vec::new();
    let mut sim_s = 0.0;
    let mut summaries = Vec::new();
    // Each seed runs in a child process of its own: a run is byte-for-byte reproducible from
    // its seed in a fresh process (which is how `run` and `replay` execute it), so the digest a
    // sweep records is the one a replay will find.
    let exe = std::env::current_exe().unwrap_or_else(|_| "detcd-sim".into());
    let scenario_path = Scenario::path_of(scenario);
    let mut queue = seeds.iter().copied();
    let mut running: Vec<(u64, Instant, std::process::Child)> = Vec::new();
    let mut done = 0usize;
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
            let out = Path::new("reports")
                .join(&s.name)
                .join(format!("seed-{seed}"));
            match std::process::Command::new(&exe)
                .args([
                    "run",
                    &scenario_path.display().to_string(),
                    "--seed",
                    &seed.to_string(),
                    "--out",
                    &out.display().to_string(),
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
        let path = Path::new("reports")
            .join(&s.name)
            .join(format!("seed-{seed}"))
            .join("report.json");
        let report: Option<crate::report::Report> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let Some(report) = report else {
            say(format!(
                "[{done}/{}] seed {seed}: no report (exit {status})",
                seeds.len()
            ));
            failed.push(seed);
            bar.set_message(format!("{} failed", failed.len()));
            continue;
        };
        sim_s += report.sim_seconds;
        let first_failure = report
            .checks
            .iter()
            .find(|c| c.verdict != "pass")
            .map(|c| format!("{}: {}", c.name, c.detail));
        let verdict = if first_failure.is_none() && status == 0 {
            "ok"
        } else {
            "FAIL"
        };
        let line = format!(
            "[{done}/{}] seed {seed}: {verdict} ({:.1} sim s, {:.1} wall s, digest {})",
            seeds.len(),
            report.sim_seconds,
            t.elapsed().as_secs_f64(),
            report.history_digest
        );
        say(line);
        if verdict == "FAIL" {
            let check = first_failure.unwrap_or_else(|| format!("exit status {status}"));
            say(format!("    failed: {check}"));
            let f = FailureFile {
                seed,
                version: env!("CARGO_PKG_VERSION").into(),
                commit: crate::failure::commit(),
                failed_check: check.split(':').next().unwrap_or("").to_string(),
                history_digest: report.history_digest.clone(),
                cause: String::new(),
                scenario: s.clone(),
            };
            match crate::failure::save(&f) {
                Ok(path) => say(format!("    saved {}", path.display())),
                Err(e) => eprintln!("detcd-sim: {e}"),
            }
            failed.push(seed);
            bar.set_message(format!("{} failed", failed.len()));
        }
        summaries.push(report);
    }
    bar.finish_and_clear();
    summaries.sort_by_key(|r| r.seed);
    if let Err(e) = crate::outcome::write_sweep(&s.name, &summaries) {
        eprintln!("detcd-sim: writing the sweep summary: {e}");
    }
    println!(
        "sweep {}: {} seeds, {} failed {:?}; {:.1} simulated s in {:.1} wall s",
        s.name,
        seeds.len(),
        failed.len(),
        failed,
        sim_s,
        wall.elapsed().as_secs_f64()
    );
    ExitCode::from(if failed.is_empty() { 0 } else { 1 })
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
        let all = seeds_of("1..11", None).unwrap();
        let mut joined: Vec<u64> = (1..=3)
            .flat_map(|i| seeds_of("1..11", Some(&format!("{i}/3"))).unwrap())
            .collect();
        joined.sort();
        assert_eq!(all, joined);
        assert!(seeds_of("5..5", None).is_err());
        assert!(seeds_of("1..5", Some("4/3")).is_err());
    }
}
