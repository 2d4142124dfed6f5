//! detcd-client's v3 API against a real 3-member cluster — detcd, and etcd 3.4.23 (the same
//! test cases; both must pass). Typed KV and txn with etcd's errors; a watch that resumes
//! across killing the member it is connected to (the leader) with every event exactly once, in
//! order, and a compaction cancel surfaced as an error; leases (grant, keep-alive, expiry,
//! revoke); registration on a lease and weighted discovery.
//! Without `etcd` the etcd cases fail under CI (`CI` set) and skip, saying so, elsewhere.

mod common;

use std::time::Duration;

use common::*;
use detcd_client::v3::{
    self, Compare, CompareOp, DeleteOptions, ErrorKind, EventType, GetOptions, GrpcCode,
    KeepAliveState, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use detcd_client::{Config, Error};
use futures::StreamExt;

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
            // For `leader_of` (the v2 members API).
            m.args.push("--enable-v2=true".into());
            m.start_binary("etcd");
        } else {
            m.start();
        }
    }
    eventually(Duration::from_secs(30), "a leader", || leader_of(&ms));
    Some(ms)
}

fn url(m: &Member) -> String {
    format!("http://{}", m.addr())
}

/// A v3 client for these members, tried in this order.
fn client_of(ms: &[&Member]) -> v3::Client {
    let mut cfg = Config::new(ms.iter().map(|m| url(m)));
    cfg.timeout = Duration::from_secs(3);
    cfg.watch_timeout = Duration::from_secs(5);
    v3::Client::new(cfg).unwrap()
}

fn client(ms: &[Member]) -> v3::Client {
    client_of(&ms.iter().collect::<Vec<_>>())
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

fn grpc(e: &Error) -> (GrpcCode, &str, ErrorKind) {
    match e {
        Error::Grpc(g) => (g.code, g.message.as_str(), g.kind),
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

fn kv_and_txn(kind: Server) {
    let dir = tempfile::tempdir().unwrap();
    let Some(ms) = cluster(kind, dir.path()) else {
        return;
    };
    let c = client(&ms);
    detcd_node::rt::block_on(async move {
        let r1 = c.put("a", "1", PutOptions::new()).await.unwrap();
        assert!(r1.prev_kv.is_none());
        let r2 = c.put("a", "2", PutOptions::new().prev_kv()).await.unwrap();
        assert_eq!(r2.header.revision, r1.header.revision + 1);
        let prev = r2.prev_kv.unwrap();
        assert_eq!((prev.value_str().as_ref(), prev.version), ("1", 1));
        let g = c.get("a", GetOptions::new()).await.unwrap();
        let a = &g.kvs[0];
        assert_eq!(
            (
                a.value.as_slice(),
                a.version,
                a.create_revision,
                a.mod_revision
            ),
            (&b"2"[..], 2, r1.header.revision, r2.header.revision)
        );
        assert_eq!(g.header.revision, r2.header.revision);
        // The past, by revision.
        let old = c
            .get("a", GetOptions::new().revision(r1.header.revision))
            .await
            .unwrap();
        assert_eq!(old.value(), Some(&b"1"[..]));
        assert!(c
            .get("missing", GetOptions::new())
            .await
            .unwrap()
            .kvs
            .is_empty());

        // Ranges: prefix, limit, sort, keys only, count only, serializable.
        for i in 1..=3 {
            c.put(format!("p/{i}"), format!("v{i}"), PutOptions::new())
                .await
                .unwrap();
        }
        let all = c.get("p/", GetOptions::new().prefix()).await.unwrap();
        assert_eq!(all.count, 3);
        let keys: Vec<_> = all.kvs.iter().map(|k| k.key_str().into_owned()).collect();
        assert_eq!(keys, ["p/1", "p/2", "p/3"]);
        let lim = c
            .get(
                "p/",
                GetOptions::new()
                    .prefix()
                    .limit(2)
                    .sort(SortTarget::Key, SortOrder::Descend),
            )
            .await
            .unwrap();
        let keys: Vec<_> = lim.kvs.iter().map(|k| k.key_str().into_owned()).collect();
        assert_eq!(
            (keys, lim.more, lim.count),
            (vec!["p/3".into(), "p/2".into()], true, 3)
        );
        let ko = c
            .get("p/", GetOptions::new().prefix().keys_only())
            .await
            .unwrap();
        assert!(ko.kvs.iter().all(|k| k.value.is_empty()) && ko.kvs.len() == 3);
        let co = c
            .get("p/", GetOptions::new().prefix().count_only())
            .await
            .unwrap();
        assert_eq!((co.kvs.len(), co.count), (0, 3));
        let ranged = c
            .get("p/2", GetOptions::new().range_end("p/3").serializable())
            .await
            .unwrap();
        assert_eq!(ranged.kvs.len(), 1);

        // Deletes: one key, a prefix with prev_kv.
        let d = c.delete("p/1", DeleteOptions::new()).await.unwrap();
        assert_eq!(d.deleted, 1);
        let d = c
            .delete("p/", DeleteOptions::new().prefix().prev_kv())
            .await
            .unwrap();
        assert_eq!(d.deleted, 2);
        let vals: Vec<_> = d
            .prev_kvs
            .iter()
            .map(|k| k.value_str().into_owned())
            .collect();
        assert_eq!(vals, ["v2", "v3"]);
        assert_eq!(
            c.delete("p/", DeleteOptions::new().prefix())
                .await
                .unwrap()
                .deleted,
            0
        );

        // Txn, success branch: every kind of compare holds.
        let t = Txn::new()
            .when([
                Compare::value("a", CompareOp::Equal, "2"),
                Compare::version("a", CompareOp::Equal, 2),
                Compare::create_revision("a", CompareOp::Equal, r1.header.revision),
                Compare::mod_revision("a", CompareOp::Less, r2.header.revision + 1),
                Compare::version("p/", CompareOp::Equal, 0).with_prefix(),
            ])
            .and_then([
                TxnOp::put("a", "3", PutOptions::new().prev_kv()),
                TxnOp::get("a", GetOptions::new()),
            ])
            .or_else([TxnOp::get("a", GetOptions::new())]);
        let r = c.txn(t).await.unwrap();
        assert!(r.succeeded);
        match &r.responses[..] {
            [TxnOpResponse::Put(p), TxnOpResponse::Get(g)] => {
                assert_eq!(p.prev_kv.as_ref().unwrap().value, b"2");
                assert_eq!(g.value(), Some(&b"3"[..]));
            }
            other => panic!("success branch answered {other:?}"),
        }
        let txn_rev = r.header.revision;

        // Failure branch.
        let r = c
            .txn(
                Txn::new()
                    .when([Compare::value("a", CompareOp::Equal, "nope")])
                    .and_then([TxnOp::put("a", "x", PutOptions::new())])
                    .or_else([
                        TxnOp::get("a", GetOptions::new()),
                        TxnOp::txn(Txn::new().and_then([TxnOp::put("b", "1", PutOptions::new())])),
                    ]),
            )
            .await
            .unwrap();
        assert!(!r.succeeded);
        match &r.responses[..] {
            [TxnOpResponse::Get(g), TxnOpResponse::Txn(inner)] => {
                assert_eq!(g.value(), Some(&b"3"[..]));
                assert!(inner.succeeded);
            }
            other => panic!("failure branch answered {other:?}"),
        }
        assert_eq!(r.header.revision, txn_rev + 1, "the nested put wrote");

        // Create if absent: the first succeeds, the second finds the key.
        let create = || {
            Txn::new()
                .when([Compare::create_revision("new", CompareOp::Equal, 0)])
                .and_then([TxnOp::put("new", "1", PutOptions::new())])
        };
        assert!(c.txn(create()).await.unwrap().succeeded);
        assert!(!c.txn(create()).await.unwrap().succeeded);
        // A read-only txn.
        let r = c
            .txn(Txn::new().and_then([TxnOp::get("new", GetOptions::new())]))
            .await
            .unwrap();
        assert!(r.succeeded);

        // etcd's errors, code and message.
        let head = c.get("a", GetOptions::new()).await.unwrap().header.revision;
        let e = c
            .get("a", GetOptions::new().revision(head + 100))
            .await
            .unwrap_err();
        assert_eq!(
            grpc(&e),
            (
                GrpcCode::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
                ErrorKind::FutureRev
            )
        );
        let e = c.put("", "v", PutOptions::new()).await.unwrap_err();
        assert_eq!(
            grpc(&e),
            (
                GrpcCode::InvalidArgument,
                "etcdserver: key is not provided",
                ErrorKind::EmptyKey
            )
        );
        let e = c
            .put("k", "v", PutOptions::new().lease(0x7777))
            .await
            .unwrap_err();
        assert_eq!(
            grpc(&e),
            (
                GrpcCode::NotFound,
                "etcdserver: requested lease not found",
                ErrorKind::LeaseNotFound
            )
        );
        let e = c
            .txn(Txn::new().and_then([
                TxnOp::put("d", "1", PutOptions::new()),
                TxnOp::put("d", "2", PutOptions::new()),
            ]))
            .await
            .unwrap_err();
        assert_eq!(grpc(&e).2, ErrorKind::DuplicateKey, "{e}");
        c.compact(head, true).await.unwrap();
        let e = c
            .get("a", GetOptions::new().revision(r1.header.revision))
            .await
            .unwrap_err();
        assert_eq!(
            grpc(&e),
            (
                GrpcCode::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
                ErrorKind::Compacted
            )
        );
        assert!(e.is_compacted() && !e.is_indeterminate());
        println!("{kind:?}: KV and txn cases pass");
    });
}

/// (kind, key, value, mod_revision) of every event.
type Seen = Vec<(EventType, String, String, i64)>;

async fn collect_until(w: &mut v3::Watch, last: i64, limit: Duration, seen: &mut Seen) {
    let end = tokio::time::Instant::now() + limit;
    while seen.last().is_none_or(|e| e.3 < last) {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let b = tokio::time::timeout(left, w.next())
            .await
            .unwrap_or_else(|_| {
                panic!("no event up to revision {last} within {limit:?}; seen {seen:?}")
            })
            .expect("the watch goes on")
            .expect("no error");
        assert!(!b.events.is_empty(), "an empty batch was yielded");
        for e in b.events {
            seen.push((
                e.kind,
                e.kv.key_str().into_owned(),
                e.kv.value_str().into_owned(),
                e.kv.mod_revision,
            ));
        }
    }
}

fn watch_resume(kind: Server) {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut ms) = cluster(kind, dir.path()) else {
        return;
    };
    let leader = leader_of(&ms).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // The watch connects to the leader first; the writer never talks to it.
    let watcher = client_of(&[&ms[leader], &ms[others[0]], &ms[others[1]]]);
    let writer = client_of(&[&ms[others[0]], &ms[others[1]]]);
    let leader_url = url(&ms[leader]);
    let ms_ref = &mut ms;
    detcd_node::rt::block_on(async move {
        let first = writer
            .put("w/k", "0", PutOptions::new())
            .await
            .unwrap()
            .header
            .revision;
        for i in 1..5 {
            writer
                .put("w/k", i.to_string(), PutOptions::new())
                .await
                .unwrap();
        }
        writer.delete("w/k", DeleteOptions::new()).await.unwrap();
        writer.put("other", "x", PutOptions::new()).await.unwrap();
        // From a past revision: the history, then live changes.
        let mut w = watcher.watch("w/", WatchOptions::new().prefix().start_revision(first));
        let mut seen = Seen::new();
        collect_until(&mut w, first + 5, Duration::from_secs(10), &mut seen).await;
        let vals: Vec<_> = seen.iter().map(|e| (e.0, e.2.as_str())).collect();
        assert_eq!(
            vals,
            [
                (EventType::Put, "0"),
                (EventType::Put, "1"),
                (EventType::Put, "2"),
                (EventType::Put, "3"),
                (EventType::Put, "4"),
                (EventType::Delete, ""),
            ]
        );
        assert_eq!(w.endpoint().as_deref(), Some(leader_url.as_str()));
        assert_eq!(w.next_revision(), first + 6);

        // Writes go on while the member the watch is connected to (the leader) is killed.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let wr = writer.clone();
        let writes = tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..60 {
                let key = format!("w/{}", i % 4);
                let value = format!("v{i}");
                // Retry while the cluster elects a new leader; an indeterminate write may
                // or may not show up, but then once and in order.
                let mut tries = 0;
                loop {
                    match wr
                        .put(key.as_str(), value.as_str(), PutOptions::new())
                        .await
                    {
                        Ok(r) => {
                            acked.push((value.clone(), r.header.revision));
                            break;
                        }
                        Err(e) => {
                            tries += 1;
                            assert!(tries < 100, "write {i} failed 100 times: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                if i == 15 {
                    let _ = tx.send(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        });
        rx.recv().await.unwrap();
        ms_ref[leader].kill();
        let acked = writes.await.unwrap();
        let last = acked.last().unwrap().1;
        collect_until(&mut w, last, Duration::from_secs(30), &mut seen).await;
        assert!(w.reconnects() >= 1, "the watch was not resumed");
        assert_ne!(w.endpoint().as_deref(), Some(leader_url.as_str()));
        // Exactly once, in order: what a fresh watch from the same revision reports.
        let mut fresh = writer.watch("w/", WatchOptions::new().prefix().start_revision(first));
        let mut expect = Seen::new();
        collect_until(&mut fresh, last, Duration::from_secs(10), &mut expect).await;
        assert_eq!(seen.len(), expect.len());
        assert_eq!(seen, expect, "the resumed watch differs from a fresh one");
        assert!(
            seen.windows(2).all(|p| p[0].3 < p[1].3),
            "revisions in order"
        );
        for (v, rev) in &acked {
            assert!(
                seen.iter().any(|e| &e.2 == v && e.3 == *rev),
                "acknowledged write {v} at {rev} not seen"
            );
        }
        println!(
            "{kind:?}: watch resumed {} time(s) across the leader kill; {} events exactly once",
            w.reconnects(),
            seen.len()
        );

        // A watch from a compacted revision ends with the compaction, as an error.
        writer.compact(last, false).await.unwrap();
        let mut old = writer.watch("w/", WatchOptions::new().prefix().start_revision(first));
        let e = tokio::time::timeout(Duration::from_secs(10), old.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(e, Error::Compacted { compact_revision } if compact_revision == last),
            "{e:?}"
        );
        assert!(e.is_compacted());
        assert!(
            old.next().await.is_none(),
            "the stream ends after the cancel"
        );
    });
}

/// Send a signal to a member's process (`STOP`, `CONT`).
fn signal(m: &Member, sig: &str) {
    let pid = m.child.as_ref().expect("running").id().to_string();
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A member that hangs (SIGSTOP: its connections stay open and silent) is noticed by the
/// watch's progress request going unanswered; the watch resumes on the next endpoint with
/// every event exactly once.
fn watch_hung_member(kind: Server) {
    let dir = tempfile::tempdir().unwrap();
    let Some(ms) = cluster(kind, dir.path()) else {
        return;
    };
    let leader = leader_of(&ms).unwrap();
    let hung = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let watcher = client_of(&[&ms[hung], &ms[other], &ms[leader]]);
    let writer = client_of(&[&ms[leader], &ms[other]]);
    let hung_url = url(&ms[hung]);
    let ms = &ms;
    detcd_node::rt::block_on(async move {
        let first = writer
            .put("h/0", "a", PutOptions::new())
            .await
            .unwrap()
            .header
            .revision;
        let mut w = watcher.watch("h/", WatchOptions::new().prefix().start_revision(first));
        let mut seen = Seen::new();
        collect_until(&mut w, first, Duration::from_secs(10), &mut seen).await;
        assert_eq!(w.endpoint().as_deref(), Some(hung_url.as_str()));
        signal(&ms[hung], "STOP");
        let t = tokio::time::Instant::now();
        let mut last = first;
        for i in 0..20 {
            last = writer
                .put(format!("h/{}", i % 3), format!("v{i}"), PutOptions::new())
                .await
                .unwrap()
                .header
                .revision;
        }
        // watch_timeout (5 s) of silence, then the progress request's timeout (3 s).
        collect_until(&mut w, last, Duration::from_secs(20), &mut seen).await;
        let took = t.elapsed();
        signal(&ms[hung], "CONT");
        assert!(w.reconnects() >= 1);
        assert_ne!(w.endpoint().as_deref(), Some(hung_url.as_str()));
        let mut fresh = writer.watch("h/", WatchOptions::new().prefix().start_revision(first));
        let mut expect = Seen::new();
        collect_until(&mut fresh, last, Duration::from_secs(10), &mut expect).await;
        assert_eq!(seen, expect, "the resumed watch differs from a fresh one");
        assert_eq!(seen.len(), 21);
        println!("{kind:?}: watch left the hung member and caught up after {took:?}");
    });
}

fn lease(kind: Server) {
    let dir = tempfile::tempdir().unwrap();
    let Some(ms) = cluster(kind, dir.path()) else {
        return;
    };
    let c = client(&ms);
    detcd_node::rt::block_on(async move {
        // Grant, attach, time to live with keys, list.
        let l = c.lease_grant(10, 0).await.unwrap();
        assert!(l.id > 0);
        assert_eq!(l.ttl, 10);
        c.put("l/a", "1", PutOptions::new().lease(l.id))
            .await
            .unwrap();
        c.put("l/b", "1", PutOptions::new().lease(l.id))
            .await
            .unwrap();
        // Renewed first: a lease granted right after the election may carry the new
        // leader's extension (by the election timeout) until its first renewal.
        assert_eq!(c.lease_keep_alive_once(l.id).await.unwrap(), 10);
        let t = c.lease_time_to_live(l.id, true).await.unwrap();
        assert_eq!((t.id, t.granted_ttl), (l.id, 10));
        assert!((1..=10).contains(&t.ttl), "{t:?}");
        let mut keys = t.keys.clone();
        keys.sort();
        assert_eq!(keys, [b"l/a".to_vec(), b"l/b".to_vec()]);
        assert!(c.leases().await.unwrap().contains(&l.id));

        // A client-chosen id, once.
        let mine = c.lease_grant(30, 0x1234).await.unwrap();
        assert_eq!(mine.id, 0x1234);
        let e = c.lease_grant(30, 0x1234).await.unwrap_err();
        assert_eq!(
            grpc(&e),
            (
                GrpcCode::FailedPrecondition,
                "etcdserver: lease already exists",
                ErrorKind::LeaseExist
            )
        );

        // Revoke: the keys go at once, in one revision.
        let before = c
            .get("l/", GetOptions::new())
            .await
            .unwrap()
            .header
            .revision;
        let h = c.lease_revoke(l.id).await.unwrap();
        assert_eq!(h.revision, before + 1, "both keys deleted in one revision");
        assert_eq!(
            c.get("l/", GetOptions::new().prefix()).await.unwrap().count,
            0
        );
        let e = c.lease_revoke(l.id).await.unwrap_err();
        assert_eq!(
            grpc(&e),
            (
                GrpcCode::NotFound,
                "etcdserver: requested lease not found",
                ErrorKind::LeaseNotFound
            )
        );
        assert_eq!(c.lease_time_to_live(l.id, false).await.unwrap().ttl, -1);

        // Keep-alive: a 2 s lease outlives 5 s while renewed, then expires once it is not.
        let short = c.lease_grant(2, 0).await.unwrap();
        c.put("k/short", "1", PutOptions::new().lease(short.id))
            .await
            .unwrap();
        let mut ka = c.lease_keep_alive(short.id);
        assert!(ka.changed().await);
        assert_eq!(ka.state(), KeepAliveState::Alive { ttl: short.ttl });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(c.get("k/short", GetOptions::new()).await.unwrap().count, 1);
        assert!(matches!(ka.state(), KeepAliveState::Alive { .. }));
        let stopped = tokio::time::Instant::now();
        ka.stop();
        let c2 = c.clone();
        let mut gone = false;
        while stopped.elapsed() < Duration::from_secs(15) {
            if c2.get("k/short", GetOptions::new()).await.unwrap().count == 0 {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "the key outlived its lease by 15 s");
        assert!(
            stopped.elapsed() >= Duration::from_millis(500),
            "expired before its TTL: {:?}",
            stopped.elapsed()
        );
        println!(
            "{kind:?}: lease of {} s expired {:?} after its keep-alive stopped",
            short.ttl,
            stopped.elapsed()
        );
        let e = c.lease_keep_alive_once(short.id).await.unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::LeaseNotFound));

        // A keep-alive of a lease that is revoked meanwhile ends with Gone.
        let l3 = c.lease_grant(5, 0).await.unwrap();
        let mut ka3 = c.lease_keep_alive(l3.id);
        assert!(ka3.changed().await);
        c.lease_revoke(l3.id).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), ka3.gone())
            .await
            .unwrap();
        assert_eq!(ka3.state(), KeepAliveState::Gone);
    });
}

fn registry(kind: Server) {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut ms) = cluster(kind, dir.path()) else {
        return;
    };
    let services = client(&ms);
    let caller = client(&ms);
    let admin = client(&ms);
    let ms_ref = &mut ms;
    detcd_node::rt::block_on(async move {
        let ttl = Duration::from_secs(5);
        let r1 = v3::register(&services, "api", "i1", "10.0.0.1:80", 1, ttl)
            .await
            .unwrap();
        let r2 = v3::register(&services, "api", "i2", "10.0.0.2:80", 2, ttl)
            .await
            .unwrap();
        let mut w = v3::watch_service(&caller, "api").await.unwrap();
        assert_eq!(w.instances().len(), 2, "the first read finds both");
        let r3 = v3::register(
            &services,
            "api",
            "i3",
            "10.0.0.3:80",
            7,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        until(Duration::from_secs(5), "i3 to appear", || {
            w.instances().len() == 3
        })
        .await;

        // Over any 10 picks (weights 1:2:7) each instance is chosen exactly weight times.
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..1000 {
            *counts.entry(w.pick().unwrap().name).or_insert(0u32) += 1;
        }
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            [("i1".into(), 100), ("i2".into(), 200), ("i3".into(), 700)]
        );

        // Keep-alives wake no watcher.
        let v = w.version();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(w.version(), v, "a keep-alive woke the watcher");
        assert_eq!(w.instances().len(), 3, "kept-alive instances stay");

        // A weight change is one event.
        r1.set_weight(5);
        assert!(tokio::time::timeout(Duration::from_secs(5), w.wait_past(v))
            .await
            .unwrap());
        assert_eq!(w.version(), v + 1, "one event");
        let i1 = w.instances().into_iter().find(|i| i.name == "i1").unwrap();
        assert_eq!((i1.weight, i1.addr.as_str()), (5, "10.0.0.1:80"));

        // An abandoned instance disappears when its lease expires.
        let t = tokio::time::Instant::now();
        r3.abandon();
        until(Duration::from_secs(10), "i3 to expire", || {
            w.instances().len() == 2
        })
        .await;
        assert!(
            t.elapsed() >= Duration::from_millis(500),
            "gone before its TTL"
        );
        println!("{kind:?}: abandoned instance gone after {:?}", t.elapsed());

        // Someone revokes i2's lease: it disappears, and its registration puts it back on a
        // new lease (created again: a create revision after the revoke).
        let old = r2.lease();
        let revoked = admin.lease_revoke(old).await.unwrap().revision;
        until(Duration::from_secs(10), "i2 on a new lease", || {
            r2.lease() != old
        })
        .await;
        let k = admin
            .get("/services/api/i2", GetOptions::new())
            .await
            .unwrap();
        assert!(k.kvs[0].create_revision > revoked && k.kvs[0].lease == r2.lease());
        until(Duration::from_secs(5), "i2 back", || {
            w.instances().len() == 2
        })
        .await;

        // Killing the member both clients talk to changes nothing the caller sees.
        let first = ms_ref
            .iter()
            .position(|m| services.current_endpoint() == url(m))
            .unwrap();
        ms_ref[first].kill();
        let v = w.version();
        tokio::time::sleep(Duration::from_secs(8)).await;
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

        // Deregistering revokes the lease: the instance goes at once.
        let lease1 = r1.lease();
        r1.deregister().await;
        until(Duration::from_secs(5), "i1 gone", || {
            w.instances().len() == 1
        })
        .await;
        assert_eq!(
            admin.lease_time_to_live(lease1, false).await.unwrap().ttl,
            -1
        );
        r2.deregister().await;
        until(Duration::from_secs(5), "i2 gone", || {
            w.instances().is_empty()
        })
        .await;
        assert!(w.pick().is_none());
    });
}

#[test]
fn kv_and_txn_against_detcd() {
    kv_and_txn(Server::Detcd);
}

#[test]
fn kv_and_txn_against_etcd() {
    kv_and_txn(Server::Etcd);
}

#[test]
fn watch_resume_against_detcd() {
    watch_resume(Server::Detcd);
}

#[test]
fn watch_resume_against_etcd() {
    watch_resume(Server::Etcd);
}

#[test]
fn watch_hung_member_against_detcd() {
    watch_hung_member(Server::Detcd);
}

#[test]
fn watch_hung_member_against_etcd() {
    watch_hung_member(Server::Etcd);
}

#[test]
fn lease_against_detcd() {
    lease(Server::Detcd);
}

#[test]
fn lease_against_etcd() {
    lease(Server::Etcd);
}

#[test]
fn registry_against_detcd() {
    registry(Server::Detcd);
}

#[test]
fn registry_against_etcd() {
    registry(Server::Etcd);
}
