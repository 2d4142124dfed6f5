//! detcd-client against a real 3-member cluster — detcd, and etcd 3.4 when Debian's
//! `etcd-server` is installed (the client speaks etcd's API, so the same tests must pass).
//! Typed operations and etcd's errors; registration and weighted discovery: picks follow the
//! weights (chi-square over 10,000 picks), a weight change arrives in one watch event,
//! refreshes wake no watcher, an instance that stops refreshing disappears after its TTL, and
//! killing the member the client talks to changes nothing the caller sees.

mod common;

use std::time::Duration;

use common::*;
use detcd_client::{
    register, watch_service, Client, Config, DeleteOptions, GetOptions, SetOptions,
};

#[derive(Clone, Copy, Debug)]
enum Server {
    Detcd,
    Etcd,
}

fn cluster(kind: Server, dir: &std::path::Path) -> Option<Vec<Member>> {
    if let Server::Etcd = kind {
        if !require_bin("etcd", "Debian package etcd-server") {
            return None;
        }
    }
    let mut ms = static_cluster(dir, 3);
    for m in ms.iter_mut() {
        if let Server::Etcd = kind {
            m.args.push("--enable-v2=true".into());
            m.start_binary("etcd");
        } else {
            m.start();
        }
    }
    eventually(Duration::from_secs(30), "a leader", || leader_of(&ms));
    Some(ms)
}

fn client(ms: &[Member]) -> Client {
    let mut cfg = Config::new(ms.iter().map(|m| format!("http://{}", m.addr())));
    cfg.timeout = Duration::from_secs(3);
    cfg.watch_timeout = Duration::from_secs(10);
    Client::new(cfg).unwrap()
}

async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn typed_operations(kind: Server) {
    let dir = tempfile::tempdir().unwrap();
    let Some(ms) = cluster(kind, dir.path()) else {
        return;
    };
    let c = client(&ms);
    detcd_node::rt::block_on(async move {
        let r = c.create("/t/a", "1", None).await.unwrap();
        assert_eq!(
            (r.action.as_str(), r.node.value.as_deref()),
            ("create", Some("1"))
        );
        let e = c.create("/t/a", "2", None).await.unwrap_err();
        assert_eq!(e.code(), Some(105), "{e}");
        let r = c.update("/t/a", "2", Some(60)).await.unwrap();
        assert_eq!(r.prev_node.unwrap().value.as_deref(), Some("1"));
        assert_eq!(r.node.ttl, Some(60));
        assert_eq!(
            c.compare_and_swap("/t/a", "3", "nope")
                .await
                .unwrap_err()
                .code(),
            Some(101)
        );
        let r = c.compare_and_swap("/t/a", "3", "2").await.unwrap();
        assert_eq!(r.action, "compareAndSwap");
        let r = c.refresh("/t/a", 30).await.unwrap();
        assert_eq!((r.node.value.as_deref(), r.node.ttl), (Some("3"), Some(30)));
        let q = c.create_in_order("/t/q", "first", None).await.unwrap();
        let q2 = c.create_in_order("/t/q", "second", None).await.unwrap();
        assert!(q.node.key < q2.node.key);
        let l = c
            .get(
                "/t/q",
                GetOptions {
                    sorted: true,
                    quorum: true,
                    ..GetOptions::default()
                },
            )
            .await
            .unwrap();
        let vals: Vec<_> = l
            .node
            .nodes
            .iter()
            .map(|n| n.value.clone().unwrap())
            .collect();
        assert_eq!(vals, ["first", "second"]);
        c.mkdir("/t/d", None).await.unwrap();
        assert!(c.get("/t/d", GetOptions::default()).await.unwrap().node.dir);
        assert_eq!(
            c.compare_and_delete("/t/a", "x").await.unwrap_err().code(),
            Some(101)
        );
        c.compare_and_delete("/t/a", "3").await.unwrap();
        let e = c.get("/t/a", GetOptions::default()).await.unwrap_err();
        assert!(e.is_key_not_found(), "{e}");
        let d = DeleteOptions {
            recursive: true,
            ..DeleteOptions::default()
        };
        c.delete("/t", d).await.unwrap();
        let s = SetOptions {
            prev_index: Some(1),
            ..SetOptions::default()
        };
        assert!(c.set("/t/none", "v", s).await.is_err());
        // Watch: resumes from the last index, in order, without gaps.
        let before = c
            .set("/w/k", "0", SetOptions::default())
            .await
            .unwrap()
            .node
            .modified_index;
        for i in 1..=5 {
            c.set("/w/k", &i.to_string(), SetOptions::default())
                .await
                .unwrap();
        }
        use futures::StreamExt;
        let w = c.watch(
            "/w",
            detcd_client::WatchOptions {
                recursive: true,
                after_index: before + 1,
            },
        );
        let got: Vec<String> = w
            .take(5)
            .map(|r| r.unwrap().node.value.unwrap())
            .collect()
            .await;
        assert_eq!(got, ["1", "2", "3", "4", "5"]);
        let m = c.members().await.unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(c.sync_endpoints().await.unwrap().len(), 3);
    });
}

fn registry(kind: Server) {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut ms) = cluster(kind, dir.path()) else {
        return;
    };
    let services = client(&ms);
    let caller = client(&ms);
    detcd_node::rt::block_on(async {
        // i1 and i2 must outlive a leader failover (an election plus a request to the dead
        // member timing out); i3, which will be abandoned, has a short TTL.
        let (long, short) = (Duration::from_secs(6), Duration::from_secs(2));
        let r1 = register(&services, "api", "i1", "10.0.0.1:80", 1, long)
            .await
            .unwrap();
        let r2 = register(&services, "api", "i2", "10.0.0.2:80", 2, long)
            .await
            .unwrap();
        let r3 = register(&services, "api", "i3", "10.0.0.3:80", 7, short)
            .await
            .unwrap();
        let mut w = watch_service(&caller, "api").await.unwrap();
        until(Duration::from_secs(5), "three instances", || {
            w.instances().len() == 3
        })
        .await;

        // Picks follow the weights 1:2:7 (chi-square, 2 degrees of freedom, p = 0.001).
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..10_000 {
            *counts.entry(w.pick().unwrap().name).or_insert(0u32) += 1;
        }
        let chi2: f64 = [("i1", 1000.0), ("i2", 2000.0), ("i3", 7000.0)]
            .iter()
            .map(|(n, e)| {
                let o = f64::from(*counts.get(*n).unwrap_or(&0));
                (o - e) * (o - e) / e
            })
            .sum();
        assert!(
            chi2 < 13.82,
            "picks {counts:?} do not follow weights 1:2:7 (chi2 {chi2})"
        );

        // Refreshes (three per TTL: i1 and i2 refresh twice and i3 six times in 4.5 s) wake no
        // watcher.
        let v = w.version();
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert_eq!(w.version(), v, "a refresh woke the watcher");
        assert_eq!(w.instances().len(), 3, "refreshed instances stay");

        // A weight change is seen in one watch event.
        r1.set_weight(5);
        assert!(tokio::time::timeout(Duration::from_secs(5), w.wait_past(v))
            .await
            .unwrap());
        assert_eq!(w.version(), v + 1, "one event");
        let i1 = w.instances().into_iter().find(|i| i.name == "i1").unwrap();
        assert_eq!(i1.weight, 5);

        // An instance that stops refreshing disappears after its TTL.
        let t = tokio::time::Instant::now();
        r3.abandon();
        until(Duration::from_secs(6), "i3 to expire", || {
            w.instances().len() == 2
        })
        .await;
        assert!(
            t.elapsed() >= Duration::from_millis(500),
            "gone before its TTL"
        );
        println!("{kind:?}: abandoned instance gone after {:?}", t.elapsed());

        // Killing the member both clients talk to changes nothing the caller sees.
        let first = ms
            .iter()
            .position(|m| services.endpoints()[0].ends_with(&m.addr()))
            .unwrap();
        ms[first].kill();
        let v = w.version();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let names: Vec<String> = w.instances().into_iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            ["i1", "i2"],
            "instances changed after a member crash"
        );
        assert_eq!(w.version(), v, "nothing changed for the caller");
        r2.set_weight(4);
        assert!(
            tokio::time::timeout(Duration::from_secs(10), w.wait_past(v))
                .await
                .unwrap()
        );
        let i2 = w.instances().into_iter().find(|i| i.name == "i2").unwrap();
        assert_eq!(i2.weight, 4);

        // Deregistering removes the instance at once.
        r1.deregister().await;
        until(Duration::from_secs(5), "i1 gone", || {
            w.instances().len() == 1
        })
        .await;
        r2.deregister().await;
        until(Duration::from_secs(5), "i2 gone", || {
            w.instances().is_empty()
        })
        .await;
        assert!(w.pick().is_none());
    });
}

#[test]
fn typed_operations_against_detcd() {
    typed_operations(Server::Detcd);
}

#[test]
fn typed_operations_against_etcd() {
    typed_operations(Server::Etcd);
}

#[test]
fn registry_against_detcd() {
    registry(Server::Detcd);
}

#[test]
fn registry_against_etcd() {
    registry(Server::Etcd);
}
