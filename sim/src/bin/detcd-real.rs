//! `detcd-real SCENARIO [--seed N] [--server detcd|etcd] [--processes [--bin PATH]] [--out DIR]`:
//! a scenario against real containers or processes (see `detcd_sim::real`; `--help` lists the
//! options). `detcd-real --processes --bench watch-fanout|lease-keepalive`: a watch or lease
//! benchmark instead (`detcd_sim::v3bench`). Exit codes: 0 every check passed, 1 a check
//! failed, 2 bad usage.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    detcd_sim::real::main()
}

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    eprintln!("detcd-real runs real containers: build it without the madsim cfg (cargo run --release -p detcd-sim --bin detcd-real)");
    std::process::ExitCode::from(2)
}
