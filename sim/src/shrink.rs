//! `shrink`: from a failure file, find a smaller run that still fails the same check.
//!
//! Greedy and deterministic: each candidate simplification (drop one fault, drop the swarm,
//! halve a fault window, halve the duration, the clients, the keys, the watchers, the
//! registry load, a smaller cluster) is run with the same seed, in a child process as every
//! recorded run is, and kept if the same check still fails. Passes repeat until nothing more
//! can be removed or the budget (runs and wall time) is spent. The result is written beside
//! the input as `<name>-<seed>-min.toml`, with what was removed printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::failure::FailureFile;
use crate::scenario::{FaultKind, Scenario, Target};

/// Candidate runs at most.
const RUNS_MAX: usize = 60;
/// Wall time at most.
const WALL_MAX: Duration = Duration::from_secs(600);

/// How big a scenario is, for "strictly smaller": compared lexicographically.
pub fn size(s: &Scenario) -> (usize, u64, u64, usize, usize, usize, usize, usize) {
    (
        s.faults.len() + usize::from(s.swarm.is_some()) * 100,
        (s.faults.iter().map(|f| f.duration_s).sum::<f64>() * 1000.0) as u64,
        (s.workload.duration_s * 1000.0) as u64,
        s.cluster.members,
        s.workload.clients,
        s.workload.keys,
        s.workload.watchers,
        if s.registry.instances > 0 {
            s.registry.instances + s.registry.callers
        } else {
            0
        } + s.locks.clients,
    )
}

/// The first failing check's name of `s` at `seed`, run in a child process (None: passed).
fn first_failure(
    s: &Scenario,
    seed: u64,
    scratch: &Path,
) -> Result<Option<(String, String)>, String> {
    let file = scratch.join("candidate.toml");
    let text = toml::to_string(s).map_err(|e| format!("encoding a candidate: {e}"))?;
    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    let out = scratch.join("run");
    let _ = std::fs::remove_dir_all(&out);
    let exe = std::env::current_exe().unwrap_or_else(|_| "detcd-sim".into());
    let status = std::process::Command::new(exe)
        .args([
            "run",
            &file.display().to_string(),
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("starting a run: {e}"))?;
    let report: crate::report::Report = std::fs::read_to_string(out.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| format!("a candidate run wrote no report (exit {status})"))?;
    Ok(report
        .checks
        .iter()
        .find(|c| c.verdict != "pass")
        .map(|c| (c.name.clone(), report.history_digest.clone())))
}

fn targets_member(t: &Target, n: usize) -> bool {
    matches!(t, Target::Member(m) if *m >= n)
}

/// Simplifications of `s`, each with a description.
fn candidates(s: &Scenario) -> Vec<(String, Scenario)> {
    let mut out = Vec::new();
    for i in (0..s.faults.len()).rev() {
        let mut c = s.clone();
        let f = c.faults.remove(i);
        out.push((
            format!(
                "dropped fault {i} ({:?} at {} s)",
                kind_name(&f.kind),
                f.at_s
            ),
            c,
        ));
    }
    if s.swarm.is_some() {
        let mut c = s.clone();
        c.swarm = None;
        out.push(("dropped the swarm faults".into(), c));
    }
    for i in 0..s.faults.len() {
        if s.faults[i].duration_s > 0.5 {
            let mut c = s.clone();
            c.faults[i].duration_s = (c.faults[i].duration_s / 2.0 * 10.0).round() / 10.0;
            out.push((
                format!("halved fault {i}'s window to {} s", c.faults[i].duration_s),
                c,
            ));
        }
    }
    if s.workload.duration_s > 1.0 {
        let mut c = s.clone();
        c.workload.duration_s = (s.workload.duration_s / 2.0).max(1.0).round();
        c.faults.retain(|f| f.at_s < c.workload.duration_s);
        out.push((format!("duration {} s", c.workload.duration_s), c));
    }
    let mut halve =
        |what: &str, get: fn(&Scenario) -> usize, set: fn(&mut Scenario, usize), min: usize| {
            let v = get(s);
            if v > min {
                let mut c = s.clone();
                set(&mut c, (v / 2).max(min));
                out.push((format!("{what} {}", get(&c)), c));
            }
        };
    halve(
        "clients",
        |s| s.workload.clients,
        |s, v| s.workload.clients = v,
        1,
    );
    halve("keys", |s| s.workload.keys, |s, v| s.workload.keys = v, 1);
    halve(
        "watchers",
        |s| s.workload.watchers,
        |s, v| s.workload.watchers = v,
        0,
    );
    if s.registry.instances > 0 {
        halve(
            "registry callers",
            |s| s.registry.callers,
            |s, v| s.registry.callers = v,
            1,
        );
    }
    if s.locks.clients > 0 {
        halve(
            "lock clients",
            |s| s.locks.clients,
            |s, v| s.locks.clients = v,
            1,
        );
    }
    if s.cluster.members > 1 {
        let n = s.cluster.members - 2;
        if !s
            .faults
            .iter()
            .any(|f| f.kind.target().is_some_and(|t| targets_member(t, n)))
        {
            let mut c = s.clone();
            c.cluster.members = n;
            out.push((format!("{n} members"), c));
        }
    }
    out.retain(|(_, c)| c.validate_public().is_ok());
    out
}

fn kind_name(k: &FaultKind) -> String {
    format!("{k:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or("")
        .to_string()
}

/// `detcd-sim shrink FILE`.
pub fn shrink(path: &Path) -> ExitCode {
    let f = match crate::failure::load(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("detcd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let scratch = std::env::temp_dir().join(format!("detcd-shrink-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&scratch);
    let wall = Instant::now();
    let mut runs = 0usize;
    let mut best = f.scenario.clone();
    let mut digest = f.history_digest.clone();
    let mut removed = Vec::new();
    'passes: loop {
        let mut progressed = false;
        for (what, c) in candidates(&best) {
            if runs >= RUNS_MAX || wall.elapsed() >= WALL_MAX {
                println!(
                    "shrink: budget spent ({runs} runs, {:.0} s)",
                    wall.elapsed().as_secs_f64()
                );
                break 'passes;
            }
            runs += 1;
            match first_failure(&c, f.seed, &scratch) {
                Ok(Some((check, d))) if check == f.failed_check => {
                    println!("  - {what}: still fails {check}");
                    removed.push(what);
                    best = c;
                    digest = d;
                    progressed = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("detcd-sim: {e}");
                    let _ = std::fs::remove_dir_all(&scratch);
                    return ExitCode::from(2);
                }
            }
        }
        if !progressed {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let out: PathBuf = path.with_file_name(format!("{}-{}-min.toml", f.scenario.name, f.seed));
    let min = FailureFile {
        history_digest: digest,
        scenario: best,
        ..f.clone()
    };
    let text = match toml::to_string(&min) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("detcd-sim: encoding the shrunk failure: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::write(&out, text) {
        eprintln!("detcd-sim: writing {}: {e}", out.display());
        return ExitCode::from(2);
    }
    println!(
        "shrink: {} simplification(s) in {runs} runs ({:.1} s); wrote {}",
        removed.len(),
        wall.elapsed().as_secs_f64(),
        out.display()
    );
    ExitCode::from(if removed.is_empty() { 1 } else { 0 })
}
