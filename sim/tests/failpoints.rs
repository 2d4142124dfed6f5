//! Every failpoint of the node fires in the simulator, and a member crashed right there
//! recovers with every check passing; a broken invariant fails the run with a check that
//! names it. Run with `cargo simtest`.
#![cfg(madsim)]

use detcd_sim::outcome::{run_and_check, RunResult};
use detcd_sim::output::FaultEvent;
use detcd_sim::scenario::Scenario;

/// A 3-member cluster that cuts WAL segments (64 KiB), snapshots often and has a follower
/// replaced (membership changes, a snapshot installed), with one crash armed at `name` on
/// its first hit after the load started.
fn armed(name: &str, target: &str) -> Scenario {
    Scenario::parse(
        &format!(
            r#"name = "fp-{name}"
[cluster]
snapshot_count = 300
[disk]
wal_segment_kib = 64
[workload]
duration_s = 8.0
clients = 6
keys = 6
watchers = 1
[[faults]]
at_s = 1.0
duration_s = 1.0
kind = "replace"
target = "follower"
[[failpoints]]
name = "{name}"
action = "crash"
target = {target}
nth = 1
duration_s = 0.5
"#
        ),
        "test",
    )
    .unwrap()
}

/// The crashes failpoints made in a run.
fn crashes(r: &RunResult) -> Vec<&FaultEvent> {
    r.out
        .faults
        .iter()
        .filter(|f| f.kind == "failpoint-crash")
        .collect()
}

#[test]
fn every_failpoint_fires_and_a_crash_there_loses_nothing() {
    for (name, _) in detcd_node::failpoints::ALL {
        let seed = 11;
        eprintln!("failpoint {name}, seed {seed}");
        let r = run_and_check(&armed(name, "\"random\""), seed);
        let fired = crashes(&r);
        assert_eq!(fired.len(), 1, "{name}: {:?}", r.out.faults);
        assert!(fired[0].detail.starts_with(&format!("crashed at {name}:")));
        let hits = r
            .out
            .failpoint_hits
            .iter()
            .find(|(n, _)| n == name)
            .map(|x| x.1)
            .unwrap_or(0);
        assert!(hits >= 1, "{name}: no hit counted");
        assert!(
            r.passed(),
            "{name}: a crash at the failpoint failed the run: {:?}",
            r.first_failure()
        );
    }
}

#[test]
fn a_failpoint_aimed_at_the_leader_crashes_the_leader() {
    let r = run_and_check(&armed("before-send-persisted", "\"leader\""), 5);
    let fired = crashes(&r);
    assert_eq!(fired.len(), 1);
    let leader_then = r
        .out
        .leaders
        .iter()
        .rev()
        .find(|(at, _)| *at <= fired[0].start_ns)
        .and_then(|x| x.1);
    assert_eq!(
        leader_then,
        Some(fired[0].targets[0]),
        "{:?}",
        r.out.leaders
    );
    assert!(r.passed(), "{:?}", r.first_failure());
}

#[test]
fn unknown_failpoints_are_refused_with_the_known_names() {
    let e = Scenario::parse(
        "name = \"x\"\n[[failpoints]]\nname = \"nope\"\naction = \"crash\"\nnth = 1\n",
        "s.toml",
    )
    .unwrap_err();
    assert!(e.0.contains("unknown failpoint \"nope\""), "{e}");
    assert!(e.0.contains("wal-before-fsync"), "{e}");
    let e = Scenario::parse(
        "name = \"x\"\n[[failpoints]]\nname = \"wal-cut\"\naction = \"crash\"\n",
        "s.toml",
    )
    .unwrap_err();
    assert!(e.0.contains("set `nth`"), "{e}");
}

#[test]
fn a_member_that_crashed_installing_a_snapshot_restarts_twice_with_its_log_whole() {
    // Member 2 is cut off until the leader has compacted past it, so it catches up by a
    // snapshot; it crashes with the snapshot file written and not yet recorded in its WAL,
    // restarts, appends what follows the snapshot, and is crashed again. Before the restart
    // recorded the snapshot in the WAL, the second restart found entries after a gap
    // (its old entries, then the snapshot's successors) and refused to start.
    let s = Scenario::parse(
        r#"name = "fp-install-twice"
[cluster]
snapshot_count = 100
[workload]
duration_s = 9.0
clients = 6
keys = 6
watchers = 1
[[faults]]
at_s = 1.0
duration_s = 2.5
kind = "isolate"
target = { member = 2 }
[[faults]]
at_s = 6.0
duration_s = 0.5
kind = "crash"
target = { member = 2 }
[[failpoints]]
name = "snapshot-install"
action = "crash"
target = { member = 2 }
nth = 1
duration_s = 0.5
"#,
        "test",
    )
    .unwrap();
    let r = run_and_check(&s, 3);
    assert!(
        r.out.faults.iter().any(|f| f.kind == "failpoint-crash"),
        "the snapshot install was never reached: {:?}",
        r.out.faults
    );
    assert!(r.passed(), "{:?}", r.first_failure());
}
