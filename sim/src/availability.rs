//! Checks that a run did something: availability (outside fault windows the cluster has a
//! leader and acknowledges writes) and vacuity (a check that had nothing to check says so,
//! and fails unless the scenario expects it). Both read only the recorded run, so they judge
//! simulated and real runs alike.

use crate::output::{Check, RunOutput};
use crate::scenario::Scenario;
use crate::workload::{OpKind, Outcome};

/// Fault kinds that cannot excuse unavailability: a member's wall clock does not drive Raft.
const HARMLESS: &[&str] = &["clock-skew"];

/// `[start, end)` spans in ns.
type Spans = Vec<(u64, u64)>;

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The recovery time after a fault and the longest stall allowed, in ns.
fn bounds(s: &Scenario) -> (u64, u64) {
    let election = s.cluster.election_ms * 1_000_000;
    let or = |v: f64, d: u64| if v > 0.0 { (v * 1e9) as u64 } else { d };
    (
        or(s.checks.recovery_s, 3 * election),
        or(s.checks.max_stall_s, 2 * election),
    )
}

/// The parts of `[0, load)` outside every fault window (each extended by `recovery`).
fn available(out: &RunOutput, load: u64, recovery: u64) -> Spans {
    let mut excused: Spans = out
        .faults
        .iter()
        .filter(|f| !HARMLESS.contains(&f.kind.as_str()))
        .map(|f| {
            (
                f.start_ns,
                f.end_ns.max(f.start_ns).saturating_add(recovery),
            )
        })
        .collect();
    excused.sort_unstable();
    let mut spans = Vec::new();
    let mut at = 0;
    for (a, b) in excused {
        if a > at {
            spans.push((at, a.min(load)));
        }
        at = at.max(b);
    }
    if at < load {
        spans.push((at, load));
    }
    spans.retain(|(a, b)| b > a);
    spans
}

/// Every stretch longer than `stall` inside `spans` with no point of `points` (sorted).
fn stalls(spans: &Spans, points: &[u64], stall: u64) -> Spans {
    let mut found = Vec::new();
    for &(a, b) in spans {
        let mut last = a;
        let inside = points.iter().copied().filter(|p| *p >= a && *p <= b);
        for p in inside.chain(std::iter::once(b)) {
            if p - last > stall {
                found.push((last, p));
            }
            last = p;
        }
    }
    found
}

/// The stretches of `spans` during which the observer saw no leader, longer than `stall`.
fn leaderless(out: &RunOutput, spans: &Spans, load: u64, stall: u64) -> Spans {
    let mut none: Spans = Vec::new();
    for (i, (at, who)) in out.leaders.iter().enumerate() {
        if who.is_none() {
            let end = out.leaders.get(i + 1).map(|x| x.0).unwrap_or(load);
            none.push((*at, end));
        }
    }
    let mut found = Vec::new();
    for &(a, b) in spans {
        for &(x, y) in &none {
            let (lo, hi) = (a.max(x), b.min(y));
            if hi > lo && hi - lo > stall {
                found.push((lo, hi));
            }
        }
    }
    found
}

/// Availability: outside fault windows (each followed by the recovery time) the observer
/// sees a leader and writes are acknowledged, with no stretch longer than the allowed stall
/// without either; an open-loop load also gets at least half of its offered write rate.
pub fn availability(s: &Scenario, out: &RunOutput) -> Check {
    let load = (s.workload.duration_s * 1e9) as u64;
    let (recovery, stall) = bounds(s);
    let spans = available(out, load, recovery);
    let total: u64 = spans.iter().map(|(a, b)| b - a).sum();
    let mut acks: Vec<u64> = out
        .rec
        .ops
        .iter()
        .filter(|o| o.kind.is_write() && matches!(o.outcome, Outcome::Ok { .. }))
        .filter_map(|o| o.return_ns)
        .collect();
    acks.sort_unstable();
    let no_writes = stalls(&spans, &acks, stall);
    let no_leader = leaderless(out, &spans, load, stall);
    let mut problems: Vec<String> = no_writes
        .iter()
        .map(|(a, b)| {
            format!(
                "no write acknowledged from {:.2} s to {:.2} s ({:.2} s)",
                secs(*a),
                secs(*b),
                secs(b - a)
            )
        })
        .chain(no_leader.iter().map(|(a, b)| {
            format!(
                "no leader from {:.2} s to {:.2} s ({:.2} s)",
                secs(*a),
                secs(*b),
                secs(b - a)
            )
        }))
        .collect();
    let acked_inside = acks
        .iter()
        .filter(|t| spans.iter().any(|(a, b)| *t >= a && *t < b))
        .count();
    let rate = if total > 0 {
        acked_inside as f64 / secs(total)
    } else {
        0.0
    };
    if s.workload.mode == crate::scenario::LoadMode::Open && total > stall {
        let m = &s.workload.mix;
        let all = m.get + m.qget + m.set + m.create + m.update + m.cas_value + m.cas_index;
        let writes = all - m.get - m.qget + m.delete + m.cad;
        let offered = s.workload.rate as f64 * writes as f64 / (all + m.delete + m.cad) as f64;
        if rate < offered / 2.0 {
            problems.push(format!(
                "{rate:.0} writes/s acknowledged outside faults, under half the {offered:.0} offered"
            ));
        }
    }
    let head = format!(
        "{:.1} s outside fault windows (recovery {:.1} s after each), stall allowed {:.1} s",
        secs(total),
        secs(recovery),
        secs(stall)
    );
    Check {
        name: "availability".into(),
        passed: Some(problems.is_empty()),
        detail: if problems.is_empty() {
            format!("{head}: {rate:.0} acknowledged writes/s there, a leader throughout")
        } else {
            format!("{head}: {}", problems.join("; "))
        },
    }
}

/// Vacuity: what each check needed in order to mean something. Fails for every check that
/// had nothing to look at, unless the scenario lists it in `checks.expect_vacuous`.
pub fn vacuity(s: &Scenario, out: &RunOutput) -> Check {
    vacuity_with(s, out, None)
}

/// [`vacuity`], with what the v3 checker's linearization says about leases: with lease
/// clients in the workload, at least one lease must have ended (expired or revoked) with
/// keys to delete, or the lease checks had nothing to check (`leases`).
pub fn vacuity_with(
    s: &Scenario,
    out: &RunOutput,
    leases: Option<detcd_checker::v3::lease::LeaseStats>,
) -> Check {
    let load = (s.workload.duration_s * 1e9) as u64;
    let expected = |name: &str| s.checks.expect_vacuous.iter().any(|v| v == name);
    let mut empty: Vec<String> = Vec::new();
    let mut fine: Vec<String> = Vec::new();
    // Watches: events delivered.
    if s.checks.watches && s.workload.watchers > 0 {
        let events = out
            .rec
            .watches
            .iter()
            .filter(|w| w.action != "cleared")
            .count()
            + out
                .rec
                .v3_watch_responses
                .iter()
                .map(|r| r.events.len())
                .sum::<usize>();
        if events == 0 {
            empty.push("watches: no watcher received an event".into());
        } else {
            fine.push(format!("{events} watch events"));
        }
    }
    // Serializable reads: local gets answered (the serializable-reads check reads them).
    if s.checks.linearizable && s.workload.mix.get > 0 {
        let local = out
            .rec
            .ops
            .iter()
            .filter(|o| {
                matches!(o.kind, OpKind::Get | OpKind::V3LocalRead) && o.return_ns.is_some()
            })
            .count();
        if local == 0 {
            empty.push("serializable-reads: no serializable read was answered".into());
        } else {
            fine.push(format!("{local} serializable reads"));
        }
    }
    // Leases: ended with keys deleted (only known when the v3 check found a linearization;
    // when it did not, that check fails on its own).
    if s.workload.leases > 0 && s.checks.linearizable {
        if let Some(l) = leases {
            if l.expired + l.revoked == 0 {
                empty.push(format!(
                    "leases: no lease ended with keys to delete ({} granted, none expired or revoked with keys)",
                    l.granted
                ));
            } else {
                fine.push(format!(
                    "{} leases expired and {} revoked with keys",
                    l.expired, l.revoked
                ));
            }
        }
    }
    // A leader, ever.
    if out.leaders.iter().all(|(_, who)| who.is_none()) {
        empty.push("leaders: the observer never saw a leader".into());
    } else {
        fine.push("a leader seen".into());
    }
    // Reads after each fault: what the fault did must be read back.
    let (recovery, _) = bounds(s);
    let mut unread = Vec::new();
    for f in &out.faults {
        if HARMLESS.contains(&f.kind.as_str()) || f.end_ns.saturating_add(recovery) >= load {
            continue;
        }
        let read = out.rec.ops.iter().any(|o| {
            matches!(o.kind, OpKind::QGet | OpKind::V3Read)
                && o.invoke_ns >= f.end_ns
                && matches!(o.outcome, Outcome::Ok { .. } | Outcome::Err { code: 100 })
        });
        if !read {
            unread.push(format!("{} at {:.2} s", f.kind, secs(f.start_ns)));
        }
    }
    if unread.is_empty() {
        fine.push("a quorum read after every fault".into());
    } else {
        empty.push(format!(
            "reads-after-faults: no quorum read answered after {}",
            unread.join(", ")
        ));
    }
    let names = |v: &str| v.split(':').next().unwrap_or_default().to_string();
    let (allowed, failing): (Vec<String>, Vec<String>) =
        empty.into_iter().partition(|e| expected(&names(e)));
    Check {
        name: "vacuity".into(),
        passed: Some(failing.is_empty()),
        detail: match (failing.is_empty(), allowed.is_empty()) {
            (true, true) => format!("every check had something to check: {}", fine.join(", ")),
            (true, false) => format!(
                "nothing to check, as the scenario expects: {}; {}",
                allowed.join("; "),
                fine.join(", ")
            ),
            (false, _) => format!("nothing to check: {}", failing.join("; ")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{FaultEvent, MemberStats};
    use crate::workload::{OpRecord, Recorder};

    fn write_at(ns: u64) -> OpRecord {
        OpRecord {
            client: 0,
            kind: OpKind::Set,
            key: "/k/1".into(),
            value: Some(format!("v{ns}")),
            prev_value: None,
            prev_index: None,
            invoke_ns: ns.saturating_sub(1_000_000),
            return_ns: Some(ns),
            outcome: Outcome::Ok {
                value: Some(format!("v{ns}")),
                index: ns,
                prev_value: None,
                prev_index: None,
            },
            member: 0,
            etcd_index: None,
            user: None,
        }
    }

    fn run(acks: &[u64], leaders: Vec<(u64, Option<usize>)>, faults: Vec<FaultEvent>) -> RunOutput {
        RunOutput {
            seed: 1,
            rec: Recorder {
                ops: acks.iter().map(|t| write_at(*t)).collect(),
                ..Default::default()
            },
            faults,
            leaders,
            sim_ns: 10_000_000_000,
            checks: vec![],
            members: vec![MemberStats::zero()],
            failpoint_hits: vec![],
            intruders: vec![],
        }
    }

    fn scenario() -> Scenario {
        Scenario::parse("name = \"t\"\n[workload]\nduration_s = 10.0\n", "t.toml").unwrap()
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_cluster_that_serves_nothing_fails_availability_and_says_when() {
        let s = scenario();
        let c = availability(&s, &run(&[S / 2], vec![(0, None)], vec![]));
        assert_eq!(c.passed, Some(false), "{}", c.detail);
        assert!(
            c.detail
                .contains("no write acknowledged from 0.50 s to 10.00 s"),
            "{}",
            c.detail
        );
        assert!(
            c.detail.contains("no leader from 0.00 s to 10.00 s"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn stalls_inside_fault_windows_and_their_recovery_are_excused() {
        let s = scenario();
        let acks: Vec<u64> = (0..100)
            .map(|i| i * S / 10)
            .filter(|t| !(2 * S..6 * S).contains(t))
            .collect();
        let crash = FaultEvent {
            kind: "crash".into(),
            targets: vec![0],
            start_ns: 2 * S,
            end_ns: 3 * S,
            detail: String::new(),
        };
        let ok = availability(&s, &run(&acks, vec![(0, Some(0))], vec![crash.clone()]));
        assert_eq!(ok.passed, Some(true), "{}", ok.detail);
        // The same gap with no fault to explain it fails.
        let bad = availability(&s, &run(&acks, vec![(0, Some(0))], vec![]));
        assert_eq!(bad.passed, Some(false), "{}", bad.detail);
        assert!(
            bad.detail.contains("from 1.90 s to 6.00 s"),
            "{}",
            bad.detail
        );
        // Clock skew excuses nothing.
        let skew = FaultEvent {
            kind: "clock-skew".into(),
            ..crash
        };
        let c = availability(&s, &run(&acks, vec![(0, Some(0))], vec![skew]));
        assert_eq!(c.passed, Some(false), "{}", c.detail);
    }

    #[test]
    fn a_check_with_nothing_to_check_fails_unless_expected() {
        let mut s = scenario();
        let out = run(&[S], vec![(0, Some(0))], vec![]);
        let c = vacuity(&s, &out);
        assert_eq!(c.passed, Some(false), "{}", c.detail);
        assert!(
            c.detail.contains("watches: no watcher received an event"),
            "{}",
            c.detail
        );
        // The run has no local read either (the default mix has some).
        assert!(
            c.detail
                .contains("serializable-reads: no serializable read was answered"),
            "{}",
            c.detail
        );
        s.checks.expect_vacuous = vec!["watches".into()];
        assert_eq!(vacuity(&s, &out).passed, Some(false));
        s.checks.expect_vacuous = vec!["watches".into(), "serializable-reads".into()];
        let c = vacuity(&s, &out);
        assert_eq!(c.passed, Some(true), "{}", c.detail);
    }
}
