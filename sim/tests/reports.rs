//! Snapshot tests of reports: for a fixed seed of two scenarios, report.md and report.json are
//! compared with the committed snapshots, so a change to the node or the harness that changes
//! what a run does shows up in review. (Regenerate with INSTA_UPDATE=always and review the diff.)
#![cfg(madsim)]

fn report(scenario: &str, seed: u64) -> (String, String) {
    let out = std::env::temp_dir().join(format!(
        "detcd-report-{scenario}-{seed}-{}",
        std::process::id()
    ));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_detcd-sim"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["run", scenario, "--seed", &seed.to_string(), "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running detcd-sim");
    assert!(status.success(), "{scenario} seed {seed} failed");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let json = std::fs::read_to_string(out.join("report.json")).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    (md, json)
}

#[test]
fn tutorial_seed_1_report() {
    let (md, json) = report("tutorial", 1);
    insta::assert_snapshot!("tutorial-1.md", md);
    insta::assert_snapshot!("tutorial-1.json", json);
}

#[test]
fn leader_crash_seed_1_report() {
    let (md, json) = report("leader-crash", 1);
    insta::assert_snapshot!("leader-crash-1.md", md);
    insta::assert_snapshot!("leader-crash-1.json", json);
}
