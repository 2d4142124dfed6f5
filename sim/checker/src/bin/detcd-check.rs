//! `detcd-check`: the checker on its own (`detcd-sim check` runs the same code);
//! `detcd-check v3 FILE` runs the v3 checker.
fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("check") {
        args.insert(0, "check".into());
    }
    std::process::exit(detcd_checker::cli_main(&args));
}
