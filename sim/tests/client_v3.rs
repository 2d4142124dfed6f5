//! detcd-client's v3 API inside the simulator (run with `cargo simtest --test client_v3`):
//! the same client the tokio tests run against detcd and etcd, here over simulated TCP to
//! madsim members. A watch connected to the leader resumes on another member when the leader
//! crashes, with every event exactly once, in order; a lease kept alive by the client's task
//! outlives its TTL and expires once it is no longer renewed; a registered instance is seen
//! by discovery and disappears when its registration is withdrawn. The same seed gives the
//! same events, revisions and all (the client reads time only through the seam).
#![cfg(madsim)]

use std::time::Duration;

use detcd_client::v3::{self, GetOptions, KeepAliveState, PutOptions, WatchOptions};
use detcd_client::Config;
use detcd_sim::cluster::MemberSim;
use detcd_sim::nemesis::Nemesis;
use detcd_sim::scenario::{Fault, FaultKind, Scenario, Target};
use futures::StreamExt;

fn small(name: &str) -> Scenario {
    Scenario::parse(
        &format!(
            "name = \"{name}\"\n[workload]\nduration_s = 4.0\nclients = 1\nkeys = 4\n[checks]\nliveness_s = 10.0\n"
        ),
        "test",
    )
    .unwrap()
}

fn client_of(ms: &[&MemberSim]) -> v3::Client {
    let mut cfg = Config::new(ms.iter().map(|m| format!("http://{}", m.client_addr())));
    cfg.timeout = Duration::from_secs(2);
    cfg.watch_timeout = Duration::from_secs(3);
    v3::Client::new(cfg).unwrap()
}

/// (key, value, mod_revision) of every event of a watch up to revision `last`.
async fn collect(w: &mut v3::Watch, last: i64, seen: &mut Vec<(String, String, i64)>) {
    while seen.last().is_none_or(|e| e.2 < last) {
        let b = tokio::time::timeout(Duration::from_secs(30), w.next())
            .await
            .expect("events within 30 s")
            .expect("the watch goes on")
            .expect("no error");
        for e in b.events {
            seen.push((
                e.kv.key_str().into_owned(),
                e.kv.value_str().into_owned(),
                e.kv.mod_revision,
            ));
        }
    }
}

/// The whole run; its result must be the same for the same seed.
fn run(seed: u64) -> (Vec<(String, String, i64)>, u64, Duration) {
    let s = small("client-v3");
    detcd_sim::run::with_cluster(&s, seed, move |members| async move {
        let leader = members
            .iter()
            .position(|m| m.shared().is_some_and(|s| s.status().is_leader))
            .expect("a leader");
        let others: Vec<&MemberSim> = (0..members.len())
            .filter(|i| *i != leader)
            .map(|i| &members[i])
            .collect();
        let watcher = client_of(&[&members[leader], others[0], others[1]]);
        let writer = client_of(&others);

        // Watch from the first write, connected to the leader.
        let first = writer
            .put("w/0", "start", PutOptions::new())
            .await
            .unwrap()
            .header
            .revision;
        let mut w = watcher.watch("w/", WatchOptions::new().prefix().start_revision(first));
        let mut seen = Vec::new();
        collect(&mut w, first, &mut seen).await;
        let leader_url = format!("http://{}", members[leader].client_addr());
        assert_eq!(w.endpoint().as_deref(), Some(leader_url.as_str()));

        // Crash the leader for 3 s while writes go on through the others.
        let mut nem = Nemesis::new(members.clone(), seed, tokio::time::Instant::now());
        let crash = tokio::spawn(async move {
            let f = Fault {
                at_s: 0.0,
                duration_s: 3.0,
                kind: FaultKind::Crash {
                    target: Target::Leader,
                },
            };
            nem.apply(&f, 0).await;
        });
        let mut last = first;
        let mut acked = 0;
        for i in 0..40 {
            for _ in 0..100 {
                match writer
                    .put(format!("w/{}", i % 3), format!("v{i}"), PutOptions::new())
                    .await
                {
                    Ok(r) => {
                        last = r.header.revision;
                        acked += 1;
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(acked, 40, "every write acknowledged in the end");
        collect(&mut w, last, &mut seen).await;
        crash.await.unwrap();
        assert!(
            w.reconnects() >= 1,
            "the watch did not move off the crashed leader"
        );
        let mut fresh = writer.watch("w/", WatchOptions::new().prefix().start_revision(first));
        let mut expect = Vec::new();
        collect(&mut fresh, last, &mut expect).await;
        assert_eq!(seen, expect, "the resumed watch differs from a fresh one");
        assert!(seen.windows(2).all(|p| p[0].2 < p[1].2));

        // A lease kept alive by the client's task outlives its TTL; stopped, it expires.
        let l = writer.lease_grant(2, 0).await.unwrap();
        writer
            .put("l/k", "1", PutOptions::new().lease(l.id))
            .await
            .unwrap();
        let ka = writer.lease_keep_alive(l.id);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(matches!(ka.state(), KeepAliveState::Alive { .. }));
        assert_eq!(writer.get("l/k", GetOptions::new()).await.unwrap().count, 1);
        let t = tokio::time::Instant::now();
        ka.stop();
        while writer.get("l/k", GetOptions::new()).await.unwrap().count == 1 {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "the lease never expired"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let expired_after = t.elapsed();
        assert!(expired_after >= Duration::from_millis(500));

        // Registration and discovery.
        let reg = v3::register(
            &writer,
            "api",
            "a1",
            "10.0.0.1:80",
            3,
            Duration::from_secs(3),
        )
        .await
        .unwrap();
        let found = v3::watch_service(&watcher, "api").await.unwrap();
        assert_eq!(found.pick().map(|i| i.name), Some("a1".to_string()));
        reg.deregister().await;
        let t = tokio::time::Instant::now();
        while !found.instances().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(10), "a1 never went");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (seen, w.reconnects(), expired_after)
    })
}

#[test]
fn the_v3_client_resumes_its_watch_and_keeps_leases_alive_in_the_simulator() {
    let a = run(11);
    println!(
        "{} events exactly once across the leader crash ({} reconnects); lease expired {:?} after its keep-alive stopped",
        a.0.len(),
        a.1,
        a.2
    );
    let b = run(11);
    assert_eq!(a, b, "the same seed gave a different run");
}
