//! `detcd-sim`: run seeded fault scenarios against the real detcd node inside madsim, sweep
//! seeds, replay and shrink failures, and check recorded histories.
//!
//! Exit codes: 0 every check passed, 1 a check failed, 2 bad usage or input.

/// mimalloc: allocation was about a fifth of the simulator's CPU time with the system
/// allocator (perf); the tutorial scenario runs ~10% faster with it (scripts/sim-speed).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    detcd_sim::cli::main()
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    // Without the simulator only the checker is available.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("check") {
        return std::process::ExitCode::from(detcd_checker::cli_main(&args) as u8);
    }
    eprintln!("detcd-sim: build it with the madsim cfg: `cargo sim <command>` (see README.md)");
    std::process::ExitCode::from(2)
}
