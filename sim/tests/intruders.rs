//! Intruders on the `tls` scenario's client and peer ports (sim/src/intruders.rs): the
//! shipped scenario keeps every one of them out, and the `intruders` check fails when a
//! member lets them in (client-certificate auth turned off on one side). Run with
//! `cargo simtest --test intruders`.
#![cfg(madsim)]

use detcd_sim::intruders::{outcome, NAMES};
use detcd_sim::outcome::{run_and_check, RunResult};
use detcd_sim::scenario::Scenario;

const SEED: u64 = 1;

fn tls() -> Scenario {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/tls.toml");
    Scenario::load(std::path::Path::new(path)).unwrap()
}

fn run(s: &Scenario) -> RunResult {
    println!("scenario {} seed {SEED}", s.name);
    let r = run_and_check(s, SEED);
    for c in &r.checks {
        println!("{:<18} {:?} {}", c.name, c.passed, c.detail);
    }
    r
}

fn intruders_check(r: &RunResult) -> (Option<bool>, String) {
    let c = r
        .checks
        .iter()
        .find(|c| c.name == "intruders")
        .expect("an intruders check");
    (c.passed, c.detail.clone())
}

#[test]
fn the_tls_scenario_keeps_every_intruder_out() {
    let s = tls();
    assert!(s.cluster.client_cert_auth && s.cluster.peer_client_cert_auth);
    let r = run(&s);
    assert!(r.passed(), "{:?}", r.first_failure());
    assert_eq!(intruders_check(&r).0, Some(true));
    // Every intruder knocked on every member and was refused there, and none got an answer.
    for n in NAMES {
        for m in 0..s.cluster.members {
            assert!(
                r.out
                    .intruders
                    .iter()
                    .any(|e| e.intruder == n && e.member == m && e.outcome == outcome::REFUSED),
                "{n} was never refused by member {m}"
            );
        }
    }
    assert!(r
        .out
        .intruders
        .iter()
        .all(|e| e.outcome != outcome::ANSWERED));
    // ... and every attempt is in the history for a reader.
    let lines = String::from_utf8_lossy(&r.history)
        .lines()
        .filter(|l| l.contains("\"type\":\"intruder\""))
        .count();
    assert_eq!(lines, r.out.intruders.len());
}

#[test]
fn the_check_fails_when_the_client_port_lets_intruders_in() {
    let mut s = tls();
    s.cluster.client_cert_auth = false;
    let r = run(&s);
    let (passed, detail) = intruders_check(&r);
    assert_eq!(passed, Some(false), "{detail}");
    // Both client-port intruders got answers and wrote their keys; the peer port, still
    // verifying, kept its intruders out.
    for n in ["client-no-cert", "client-unknown-ca"] {
        assert!(detail.contains(&format!("{n} got an answer")), "{detail}");
        assert!(detail.contains(&format!("/intruders/{n}-")), "{detail}");
    }
    assert!(!detail.contains("peer-"), "{detail}");
}

#[test]
fn the_check_fails_when_the_peer_port_lets_intruders_in() {
    let mut s = tls();
    s.cluster.peer_client_cert_auth = false;
    let r = run(&s);
    let (passed, detail) = intruders_check(&r);
    assert_eq!(passed, Some(false), "{detail}");
    // Every peer-port intruder got the membership and its forged proposal into the store;
    // the client port, still verifying, kept its intruders out.
    for n in ["peer-client-cert", "peer-no-cert", "peer-unknown-ca"] {
        assert!(
            detail.contains(&format!("{n} got an answer from member")),
            "{detail}"
        );
        assert!(detail.contains(&format!("/intruders/{n}-")), "{detail}");
    }
    assert!(!detail.contains("client-no-cert"), "{detail}");
    assert!(!detail.contains("client-unknown-ca"), "{detail}");
}
