//! Records the commit the simulator is built from (`DETCD_BUILD_COMMIT`), so a failure file
//! or a shard names the code that ran, not whatever the working tree's HEAD is when it runs.
//! Cargo runs this again when HEAD or the branch it points at moves.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DETCD_BUILD_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=DETCD_COMMIT");
    // HEAD itself (a checkout, a detached commit), the branch it names, and packed refs.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(r);
    }
    for w in watched {
        if let Some(p) = git(&["rev-parse", "--git-path", &w]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
