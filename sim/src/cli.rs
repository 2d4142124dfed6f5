//! The command line: `run`, `sweep`, `merge`, `replay`, `shrink`, `check`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::scenario::Scenario;

#[derive(Parser)]
#[command(
    name = "detcd-sim",
    about = "Deterministic simulation of detcd clusters under faults"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one seed of a scenario; writes history.jsonl and the report.
    Run {
        /// Scenario file (scenarios/NAME.toml) or name.
        scenario: String,
        /// Seed (drawn and printed when absent).
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory (default reports/<scenario>/seed-<N>/).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run many seeds.
    Sweep {
        /// Scenario file or name.
        scenario: String,
        /// Seed range A..B (B exclusive).
        #[arg(long, default_value = "1..11")]
        seeds: String,
        /// This machine's slice of the range: I/N (1-based).
        #[arg(long)]
        shard: Option<String>,
        /// Seeds run at once (each in its own process).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Write this shard's output to DIR for `merge` (rows, histogram, failure files; the
        /// runs under DIR/runs/, passing ones removed) instead of reports/<scenario>/.
        #[arg(long)]
        out: Option<PathBuf>,
        /// With --out: keep the passing runs' directories too.
        #[arg(long)]
        keep_passing: bool,
        /// --shard's I counts from 0 (Kubernetes' JOB_COMPLETION_INDEX).
        #[arg(long)]
        zero_based: bool,
    },
    /// Join shard directories (`sweep --out`) into one sweep report; refuses shards of other
    /// scenarios or commits, and seed sets that overlap or leave gaps (exit 2).
    Merge {
        /// Shard directories, or directories whose subdirectories are shards.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the report goes (default reports/<scenario>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Wait until this many finished shards are present (a merge step that starts with
        /// the shards, as in deploy/k8s/sweep-job.yaml).
        #[arg(long)]
        expect: Option<usize>,
        /// How long --expect waits before giving up, seconds.
        #[arg(long, default_value_t = 86_400)]
        wait_s: u64,
    },
    /// Re-run a failure file and confirm the same digest and failure.
    Replay {
        /// Failure file (failures/<scenario>-<seed>.toml).
        file: PathBuf,
        /// Print every member's and the nemesis' event log (RUST_LOG filters it).
        #[arg(long)]
        trace: bool,
    },
    /// Find a smaller run that still fails the same check; writes <name>-<seed>-min.toml.
    Shrink {
        /// Failure file (failures/<scenario>-<seed>.toml).
        file: PathBuf,
    },
    /// Check a recorded history (needs no simulator).
    Check {
        /// The rest goes to the checker.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// Entry point.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.cmd {
        Cmd::Check { rest } => {
            let mut args = vec!["check".to_string()];
            args.extend(rest);
            ExitCode::from(detcd_checker::cli_main(&args) as u8)
        }
        Cmd::Run {
            scenario,
            seed,
            out,
        } => {
            let s = match Scenario::find(&scenario) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("detcd-sim: {e}");
                    return ExitCode::from(2);
                }
            };
            let seed = seed.unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                t.as_nanos() as u64 % 1_000_000_007
            });
            let dir =
                out.unwrap_or_else(|| PathBuf::from(format!("reports/{}/seed-{seed}", s.name)));
            let wall = Instant::now();
            let res = crate::outcome::run_and_check(&s, seed);
            if let Err(e) = res.write(&dir) {
                eprintln!("detcd-sim: writing {}: {e}", dir.display());
                return ExitCode::from(2);
            }
            res.print_summary(wall.elapsed(), true);
            println!("wrote {}", dir.display());
            ExitCode::from(if res.passed() { 0 } else { 1 })
        }
        Cmd::Sweep {
            scenario,
            seeds,
            shard,
            jobs,
            out,
            keep_passing,
            zero_based,
        } => crate::sweep::sweep(
            &scenario,
            &seeds,
            shard.as_deref(),
            jobs,
            &crate::sweep::SweepOut {
                dir: out,
                keep_passing,
                zero_based,
            },
        ),
        Cmd::Merge {
            dirs,
            out,
            expect,
            wait_s,
        } => ExitCode::from(crate::shards::merge(
            &dirs,
            out.as_deref(),
            expect.map(|n| (n, std::time::Duration::from_secs(wait_s))),
        )),
        Cmd::Replay { file, trace } => crate::sweep::replay(&file, trace),
        Cmd::Shrink { file } => crate::shrink::shrink(&file),
    }
}
