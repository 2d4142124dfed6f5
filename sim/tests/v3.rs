//! The node's v3 API inside the simulator (run with `cargo simtest`): real gRPC (HTTP/2,
//! protobuf) from tonic-generated clients over simulated TCP to the full node, whose v3
//! keyspace lives on the simulated disk. A power loss (every member crashes at once, losing
//! every write not yet fsynced) must keep every acknowledged v3 write; a member cut off while
//! the leader compacts its log catches up by the leader's snapshot, v3 keyspace included.
#![cfg(madsim)]

use std::net::SocketAddr;
use std::time::Duration;

use detcd_node::rt::h2::H2Channel;
use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::kv_client::KvClient;
use detcd_sim::cluster::MemberSim;
use detcd_sim::nemesis::Nemesis;
use detcd_sim::scenario::{Fault, FaultKind, Scenario, Target};

type Client = KvClient<H2Channel<tonic::body::Body>>;

fn small(name: &str, extra: &str) -> Scenario {
    Scenario::parse(
        &format!(
            "name = \"{name}\"\n[workload]\nduration_s = 4.0\nclients = 4\nkeys = 4\nwatchers = 1\n[checks]\nliveness_s = 10.0\n{extra}"
        ),
        "test",
    )
    .unwrap()
}

async fn client(m: &MemberSim) -> Option<Client> {
    let addr: SocketAddr = m.client_addr().parse().ok()?;
    let ch = tokio::time::timeout(Duration::from_secs(1), H2Channel::connect(addr))
        .await
        .ok()?
        .ok()?;
    Some(KvClient::new(ch))
}

/// Put through `m`, with a deadline; true when acknowledged.
async fn put(c: &mut Client, key: &str, value: &str) -> bool {
    let req = pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), c.put(req)).await,
        Ok(Ok(_))
    )
}

/// Every key under `prefix` as member `m` holds it (serializable: its own keyspace), with
/// the header's revision; retried while the member restarts.
async fn local_range(m: &MemberSim, prefix: &str) -> Option<(Vec<(String, String)>, i64)> {
    for _ in 0..50 {
        if let Some(mut c) = client(m).await {
            let mut end = prefix.as_bytes().to_vec();
            *end.last_mut().expect("non-empty prefix") += 1;
            let req = pb::RangeRequest {
                key: prefix.into(),
                range_end: end,
                serializable: true,
                ..Default::default()
            };
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), c.range(req)).await {
                let r = r.into_inner();
                let kvs = r
                    .kvs
                    .iter()
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(&kv.key).into_owned(),
                            String::from_utf8_lossy(&kv.value).into_owned(),
                        )
                    })
                    .collect();
                return Some((kvs, r.header.map_or(0, |h| h.revision)));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[test]
fn a_power_loss_keeps_every_acknowledged_v3_write() {
    let s = small("v3-power-loss", "");
    let (acked, missing, detail) = detcd_sim::run::with_cluster(&s, 5, |members| async move {
        let mut writers = Vec::new();
        for w in 0..4usize {
            let ms = members.clone();
            writers.push(tokio::spawn(async move {
                let m = &ms[w % ms.len()];
                let mut acked = Vec::new();
                let mut c = None;
                for i in 0..300 {
                    if c.is_none() {
                        c = client(m).await;
                    }
                    let Some(cl) = c.as_mut() else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let key = format!("pl/{w}-{i:03}");
                    if put(cl, &key, &format!("v{i}")).await {
                        acked.push((key, format!("v{i}")));
                    } else {
                        c = None;
                    }
                }
                acked
            }));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut nem = Nemesis::new(members.clone(), 5, tokio::time::Instant::now());
        let f = Fault {
            at_s: 0.0,
            duration_s: 1.0,
            kind: FaultKind::PowerLoss,
        };
        nem.apply(&f, 0).await;
        let detail = nem.events.lock().unwrap()[0].detail.clone();
        let mut acked = Vec::new();
        for w in writers {
            acked.extend(w.await.unwrap());
        }
        acked.sort();
        let mut missing = Vec::new();
        for m in members.iter() {
            // Each member's own keyspace, once it has caught up with the last write.
            let mut held = Vec::new();
            for _ in 0..20 {
                held = local_range(m, "pl/").await.map(|r| r.0).unwrap_or_default();
                if acked.iter().all(|kv| held.contains(kv)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            for kv in &acked {
                if !held.contains(kv) {
                    missing.push(format!("{}: {}", m.name, kv.0));
                }
            }
        }
        (acked.len(), missing, detail)
    });
    println!("{acked} v3 writes acknowledged; {detail}");
    assert!(acked > 100, "only {acked} writes were acknowledged");
    assert!(
        missing.is_empty(),
        "acknowledged v3 writes lost: {missing:?}"
    );
}

#[test]
fn a_member_cut_off_catches_up_by_snapshot_with_the_v3_keyspace() {
    // A snapshot every 100 entries, keeping 100 behind it: the log moves past the cut-off
    // member quickly, so it must take the leader's snapshot.
    let s = small(
        "v3-catch-up",
        "[cluster]\nmembers = 3\nsnapshot_count = 100\n",
    );
    let (counts, revs, snapshots) = detcd_sim::run::with_cluster(&s, 7, |members| async move {
        let mut nem = Nemesis::new(members.clone(), 7, tokio::time::Instant::now());
        let cut = Fault {
            at_s: 0.0,
            duration_s: 4.0,
            kind: FaultKind::Isolate {
                target: Target::Member(2),
            },
        };
        let writes = tokio::spawn({
            let ms = members.clone();
            async move {
                let (m, m1) = (&ms[0], &ms[1]);
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut c = None;
                let mut n = 0;
                for i in 0..600 {
                    if c.is_none() {
                        c = client(if i % 2 == 0 { m } else { m1 }).await;
                    }
                    if let Some(cl) = c.as_mut() {
                        if put(cl, &format!("cu/{:03}", i % 400), &format!("v{i}")).await {
                            n += 1;
                        } else {
                            c = None;
                        }
                    }
                }
                n
            }
        });
        nem.apply(&cut, 0).await;
        let acked: usize = writes.await.unwrap();
        assert!(acked > 300, "only {acked} writes acknowledged");
        // After the heal: every member's own keyspace converges to the same state.
        let mut counts = Vec::new();
        let mut revs = Vec::new();
        tokio::time::sleep(Duration::from_secs(3)).await;
        for m in members.iter() {
            let (kvs, rev) = local_range(m, "cu/").await.expect("a member answers");
            counts.push(kvs.len());
            revs.push(rev);
        }
        let snapshots = members[2]
            .shared()
            .map(|s| s.status().applied)
            .unwrap_or_default();
        (counts, revs, snapshots)
    });
    println!("keys per member {counts:?}, revisions {revs:?}, member 2 applied {snapshots}");
    assert!(
        counts.iter().all(|c| *c == counts[0]) && counts[0] == 400,
        "{counts:?}"
    );
    assert!(revs.iter().all(|r| *r == revs[0]), "{revs:?}");
}
