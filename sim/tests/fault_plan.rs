//! One fault model, two drivers: the simulator's nemesis and `detcd-real` plan a scenario's
//! faults the same way. This test builds in both runtimes: under `--cfg madsim` it lists the
//! plan through the nemesis (`detcd_sim::nemesis::planned`), in the tokio build through
//! `detcd-real` (`detcd_sim::real::planned`), and both compare the list — each fault's start,
//! end, kind and the members it hits — with the one snapshot, `fault_plan__plans.snap`. So
//! `cargo simtest --test fault_plan` and `cargo test -p detcd-sim --test fault_plan` pass
//! together only if the two drivers agree.

use detcd_sim::faultplan::{plan, PlanLine};
use detcd_sim::scenario::Scenario;

#[cfg(madsim)]
use detcd_sim::nemesis::planned;
#[cfg(not(madsim))]
use detcd_sim::real::planned;

/// Who leads at `ns` in these plans: member (second mod n), and nobody in every fifth second
/// (a fault that asks then gets the seeded fallback).
fn leader(n: usize) -> impl Fn(u64) -> Option<usize> {
    move |ns| {
        let s = (ns / 1_000_000_000) as usize;
        (s % 5 != 4).then_some(s % n)
    }
}

/// Every kind and every target rule, duration 0 included, on five members.
const MIXED: &str = r#"
name = "plan-mix"
[cluster]
members = 5
[workload]
duration_s = 30.0
[[faults]]
at_s = 9.0
kind = "crash"
target = "follower"
[[faults]]
at_s = 2.5
duration_s = 1.5
kind = "pause"
target = "random"
[[faults]]
at_s = 4.0
duration_s = 1.0
kind = "isolate"
target = "leader"
[[faults]]
at_s = 4.0
duration_s = 2.0
kind = "one-way"
target = "follower"
[[faults]]
at_s = 5.0
duration_s = 2.0
kind = "minority-majority"
leader_in_minority = true
[[faults]]
at_s = 6.0
duration_s = 1.0
kind = "bridge"
[[faults]]
at_s = 7.0
duration_s = 1.0
kind = "ring"
[[faults]]
at_s = 11.0
duration_s = 5.0
kind = "rolling-restart"
[[faults]]
at_s = 14.0
kind = "power-loss"
[[faults]]
at_s = 1.0
duration_s = 2.0
kind = "flaky"
target = { member = 3 }
"#;

fn scenario(name: &str) -> Scenario {
    if name == "plan-mix" {
        return Scenario::parse(MIXED, "plan-mix").unwrap();
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/").to_string() + name + ".toml";
    Scenario::load(std::path::Path::new(&path)).unwrap()
}

fn show(lines: &[PlanLine]) -> String {
    lines
        .iter()
        .map(|(start, end, kind, targets)| {
            format!(
                "  {:>7.3} s .. {:>7.3} s  {kind:<17} {targets:?}\n",
                *start as f64 / 1e9,
                *end as f64 / 1e9
            )
        })
        .collect()
}

#[test]
fn both_drivers_plan_the_same_faults() {
    let mut text = String::new();
    for name in ["plan-mix", "leader-crash", "swarm"] {
        let s = scenario(name);
        let n = s.cluster.members;
        for seed in 1..=3u64 {
            let lines = planned(&s, seed, leader(n));
            // The driver's list is the shared plan's, whatever the driver.
            let shared: Vec<PlanLine> = plan(&s, seed)
                .faults
                .iter()
                .map(|f| {
                    let l = f.needs_leader().then(|| leader(n)(f.start_ns)).flatten();
                    (
                        f.start_ns,
                        f.end_ns,
                        f.kind_name(),
                        f.choose(n, l).targets(n),
                    )
                })
                .collect();
            assert_eq!(lines, shared, "{name} seed {seed}");
            text.push_str(&format!("{name} seed {seed} ({n} members)\n"));
            text.push_str(&show(&lines));
        }
    }
    insta::assert_snapshot!("plans", text);
}
