//! Failure files: a failing seed saved as a self-contained `failures/<scenario>-<seed>.toml`
//! (the scenario itself, the seed, the detcd version and commit, the failed check and the
//! history digest), so it replays anywhere without the original scenario file. `sweep`
//! writes them, `replay` and `shrink` read them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;

/// A saved failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureFile {
    /// The seed.
    pub seed: u64,
    /// detcd version that failed.
    pub version: String,
    /// Git commit that failed: the one the simulator was built from ([`crate::shards::commit`]).
    pub commit: String,
    /// The first failed check.
    pub failed_check: String,
    /// Digest of the failing run's history.
    pub history_digest: String,
    /// One line: what the bug was (filled in for the regression corpus).
    #[serde(default)]
    pub cause: String,
    /// The scenario, complete.
    pub scenario: Scenario,
}

/// The working tree's commit at run time, as `git rev-parse --short HEAD` says (`unknown`
/// without git): the fallback of [`crate::shards::commit`] for a build without git.
pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Where the failure of `scenario` at `seed` is saved.
pub fn path_of(scenario: &str, seed: u64) -> PathBuf {
    Path::new("failures").join(format!("{scenario}-{seed}.toml"))
}

/// Save `f` as [`path_of`] its scenario and seed; returns where.
pub fn save(f: &FailureFile) -> Result<PathBuf, String> {
    save_in(Path::new(""), f)
}

/// Save `f` as `root`/[`path_of`] (a shard keeps its failures under its own directory).
pub fn save_in(root: &Path, f: &FailureFile) -> Result<PathBuf, String> {
    let path = root.join(path_of(&f.scenario.name, f.seed));
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let text = toml::to_string(f).map_err(|e| format!("encoding failure file: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

/// Load a failure file.
pub fn load(path: &Path) -> Result<FailureFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))
}
