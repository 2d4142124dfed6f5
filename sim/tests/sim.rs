//! Simulator tests (run with `cargo simtest`): determinism, and that each nemesis does what
//! it claims.
#![cfg(madsim)]

use std::time::Duration;

use detcd_sim::client::{form, HttpClient};
use detcd_sim::nemesis::Nemesis;
use detcd_sim::scenario::{Fault, FaultKind, Scenario, Target};

fn small(name: &str, extra: &str) -> Scenario {
    Scenario::parse(
        &format!(
            "name = \"{name}\"\n[workload]\nduration_s = 4.0\nclients = 4\nkeys = 4\nwatchers = 1\n[checks]\nliveness_s = 10.0\n{extra}"
        ),
        "test",
    )
    .unwrap()
}

#[test]
fn same_seed_same_history_different_seed_different_history() {
    let s = small("det", "[[faults]]\nat_s = 1.0\nduration_s = 1.0\nkind = \"crash\"\ntarget = \"leader\"\n");
    let a = detcd_sim::outcome::run_and_check(&s, 7);
    let b = detcd_sim::outcome::run_and_check(&s, 7);
    let c = detcd_sim::outcome::run_and_check(&s, 8);
    println!("seed 7: {} / {}; seed 8: {}", a.digest, b.digest, c.digest);
    assert_eq!(a.history, b.history, "same seed must give a byte-identical history");
    assert_eq!(serde_json::to_string(&a.report).unwrap(), serde_json::to_string(&b.report).unwrap());
    assert_ne!(a.digest, c.digest);
    assert!(a.passed(), "{:?}", a.first_failure());
}

async fn leader_name(m: &[detcd_sim::cluster::MemberSim]) -> Option<usize> {
    for x in m {
        if let Some(sh) = x.shared() {
            if sh.status().is_leader {
                return Some(x.index);
            }
        }
    }
    None
}

#[test]
fn isolating_the_leader_elects_a_new_one_on_the_majority_side() {
    let s = small("isolate", "");
    let (old, new) = detcd_sim::run::with_cluster(&s, 3, |members| async move {
        let old = leader_name(&members).await.expect("a leader");
        let mut nem = Nemesis::new(members.clone(), 3, tokio::time::Instant::now());
        let f = Fault { at_s: 0.0, duration_s: 4.0, kind: FaultKind::Isolate { target: Target::Leader } };
        let m2 = members.clone();
        let probe = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            // The majority elected someone else; ask a majority member who leads.
            m2.iter().filter(|m| m.index != old).find_map(|m| m.shared().map(|s| s.status().leader))
        });
        nem.apply(&f, 0).await;
        let leader_id = probe.await.unwrap().unwrap_or(0);
        let new = members.iter().find(|m| m.shared().is_some_and(|s| s.id == leader_id)).map(|m| m.index);
        (old, new)
    });
    assert!(new.is_some() && new != Some(old), "old leader {old}, leader during isolation {new:?}");
}

#[test]
fn a_paused_member_stops_while_the_others_go_on() {
    let s = small("pause", "");
    let (paused_delta, other_delta) = detcd_sim::run::with_cluster(&s, 5, |members| async move {
        let target = 1usize;
        let other = 0usize;
        let applied = |i: usize| members[i].shared().map(|s| s.status().applied).unwrap_or(0);
        let handle = madsim::runtime::Handle::current();
        handle.pause(members[target].node.id());
        let (p0, o0) = (applied(target), applied(other));
        // Writes go on through the others (a majority).
        let mut c = HttpClient::new(members[other].client_addr());
        for i in 0..20 {
            let _ = c.request("PUT", &format!("/v2/keys/p{i}"), Some(form(&[("value", "x")])), Duration::from_secs(2)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (p1, o1) = (applied(target), applied(other));
        handle.resume(members[target].node.id());
        (p1 - p0, o1 - o0)
    });
    assert_eq!(paused_delta, 0, "a paused member applied entries");
    assert!(other_delta >= 20, "the others applied only {other_delta}");
}

#[test]
fn ttl_expiry_happens_once_at_the_same_index_on_every_member_under_clock_skew() {
    let s = small("skew", "");
    let indexes = detcd_sim::run::with_cluster(&s, 11, |members| async move {
        // Member 1 runs 30 s behind, member 2 30 s ahead.
        members[1].clock.skew().lock().unwrap().offset_ms = -30_000;
        members[2].clock.skew().lock().unwrap().offset_ms = 30_000;
        let mut c = HttpClient::new(members[1].client_addr());
        let r = c.request("PUT", "/v2/keys/lease", Some(form(&[("value", "v"), ("ttl", "2")])), Duration::from_secs(5)).await.unwrap();
        assert!(r.status < 300, "{r:?}");
        let set_index = r.etcd_index.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut seen = Vec::new();
        for m in members.iter() {
            let mut c = HttpClient::new(m.client_addr());
            let gone = c.request("GET", "/v2/keys/lease", None, Duration::from_secs(2)).await.unwrap();
            assert_eq!(gone.status, 404, "{} still has the key", m.name);
            let path = format!("/v2/keys/lease?wait=true&waitIndex={}", set_index + 1);
            let ev = c.request("GET", &path, None, Duration::from_secs(2)).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&ev.body).unwrap();
            assert_eq!(v["action"], "expire", "{}: {v}", m.name);
            seen.push(v["node"]["modifiedIndex"].as_u64().unwrap());
        }
        seen
    });
    assert!(indexes.iter().all(|i| *i == indexes[0]), "expire indexes differ: {indexes:?}");
}
