//! `detcd-real SCENARIO --seed N [--server detcd|etcd]`: a scenario against real containers
//! (see `detcd_sim::real`). Exit codes: 0 every check passed, 1 a check failed, 2 bad usage.

/// mimalloc: allocation was about a fifth of the simulator's CPU time with the system
/// allocator (perf); the tutorial scenario runs ~10% faster with it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    detcd_sim::real::main()
}

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    eprintln!("detcd-real runs real containers: build it without the madsim cfg (cargo run --release -p detcd-sim --bin detcd-real)");
    std::process::ExitCode::from(2)
}
