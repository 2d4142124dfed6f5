//! etcd 3.4's Lock and Election services (`v3lockpb.Lock`, `v3electionpb.Election`) over gRPC
//! on real 3-member detcd clusters: callers at different members queue on one lock in
//! create-revision order, each Lock call answering only once every older key is gone; a caller
//! that gives up while waiting leaves no key behind; a lease's end releases its lock.
//! Campaigns queue the same way, Observe follows proclamations and changes of leader, a
//! resign hands over to the next candidate. (What each call answers, errors included, is
//! compared with etcd 3.4.23 in the v3 conformance corpus, `conformance/v3corpus.py`.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use detcd_node::rt::h2::H2Channel;
use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::kv_client::KvClient;
use detcd_proto::etcdserverpb::lease_client::LeaseClient;
use detcd_proto::v3electionpb as epb;
use detcd_proto::v3electionpb::election_client::ElectionClient;
use detcd_proto::v3lockpb as lpb;
use detcd_proto::v3lockpb::lock_client::LockClient;

type Channel = H2Channel<tonic::body::Body>;

async fn channel(addr: SocketAddr) -> Channel {
    H2Channel::connect(addr).await.expect("connect")
}

async fn grant(addr: SocketAddr, ttl: i64) -> i64 {
    let mut l = LeaseClient::new(channel(addr).await);
    l.lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("lease grant")
        .into_inner()
        .id
}

/// The keys under `q/`, oldest first, read through `addr`.
async fn queue(addr: SocketAddr) -> Vec<String> {
    let mut kv = KvClient::new(channel(addr).await);
    let r = kv
        .range(pb::RangeRequest {
            key: b"q/".to_vec(),
            range_end: b"q0".to_vec(),
            sort_target: pb::range_request::SortTarget::Create as i32,
            sort_order: pb::range_request::SortOrder::Ascend as i32,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.kvs
        .into_iter()
        .map(|kv| String::from_utf8(kv.key).unwrap())
        .collect()
}

/// A Lock call on `q` with `lease`, made through `addr` in a task of its own.
fn lock(
    addr: SocketAddr,
    lease: i64,
) -> tokio::task::JoinHandle<Result<lpb::LockResponse, tonic::Status>> {
    tokio::spawn(async move {
        let mut l = LockClient::new(channel(addr).await);
        l.lock(lpb::LockRequest {
            name: b"q".to_vec(),
            lease,
        })
        .await
        .map(|r| r.into_inner())
    })
}

async fn unlock(addr: SocketAddr, key: &str) -> pb::ResponseHeader {
    let mut l = LockClient::new(channel(addr).await);
    l.unlock(lpb::UnlockRequest {
        key: key.as_bytes().to_vec(),
    })
    .await
    .expect("unlock")
    .into_inner()
    .header
    .expect("a header")
}

/// The members' client addresses.
fn addrs_of(ms: &[Member]) -> Vec<SocketAddr> {
    ms.iter().map(|m| m.addr().parse().unwrap()).collect()
}

/// A started static 3-member detcd cluster in `dir` that has a leader: its members (stopped
/// when dropped) and their client addresses.
fn detcd_cluster(dir: &std::path::Path) -> (Vec<Member>, Vec<SocketAddr>) {
    let mut ms = static_cluster(dir, 3);
    for m in ms.iter_mut() {
        m.start();
    }
    eventually(Duration::from_secs(30), "a leader", || leader_of(&ms));
    let addrs = addrs_of(&ms);
    (ms, addrs)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Poll `f` every 50 ms for up to 10 s.
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn lock_callers_queue_in_order_and_a_caller_that_leaves_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let (_ms, addrs) = detcd_cluster(dir.path());
    let rt = runtime();
    rt.block_on(async {
        // A holds the lock (through member 0); B (member 1) and C (member 2, no lease of
        // its own: the service grants one) queue behind it, in that order.
        let (la, lb) = (grant(addrs[0], 60).await, grant(addrs[1], 60).await);
        let a = lock(addrs[0], la)
            .await
            .unwrap()
            .expect("A locks a free lock");
        let a_key = format!("q/{la:x}");
        assert_eq!(String::from_utf8(a.key.clone()).unwrap(), a_key);
        let b = lock(addrs[1], lb);
        until("B queued", || async { queue(addrs[2]).await.len() == 2 }).await;
        let c = lock(addrs[2], 0);
        until("C queued", || async { queue(addrs[2]).await.len() == 3 }).await;
        let waiting = queue(addrs[0]).await;
        assert_eq!(waiting[..2], [a_key.clone(), format!("q/{lb:x}")]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !b.is_finished() && !c.is_finished(),
            "a held lock was granted"
        );

        // A unlocks (through member 2): B, and only B, gets the lock, with a header at or
        // after the unlock.
        let unlocked = unlock(addrs[2], &a_key).await;
        let b = tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .expect("B is granted the lock once A unlocked")
            .unwrap()
            .expect("B's lock");
        assert_eq!(String::from_utf8(b.key).unwrap(), format!("q/{lb:x}"));
        assert!(b.header.unwrap().revision >= unlocked.revision);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!c.is_finished(), "C was granted a lock B holds");

        // C gives up (its client goes away): its key goes too, so D, queued after it, is
        // not stuck behind a caller that left.
        let c_key = queue(addrs[0]).await[1].clone();
        c.abort();
        until("C's key deleted", || async {
            !queue(addrs[1]).await.contains(&c_key)
        })
        .await;

        // B's lease ends (revoked): its key goes with it, and the next caller locks at once.
        let mut l = LeaseClient::new(channel(addrs[0]).await);
        l.lease_revoke(pb::LeaseRevokeRequest { id: lb })
            .await
            .expect("revoke");
        let ld = grant(addrs[1], 60).await;
        let d = tokio::time::timeout(Duration::from_secs(10), lock(addrs[1], ld))
            .await
            .expect("a free lock is granted at once")
            .unwrap()
            .expect("D's lock");
        assert_eq!(String::from_utf8(d.key).unwrap(), format!("q/{ld:x}"));
        assert_eq!(queue(addrs[2]).await, [format!("q/{ld:x}")]);

        // Errors come back as etcd's Lock service gives them: code Unknown, etcd's message.
        let mut lc = LockClient::new(channel(addrs[0]).await);
        let e = lc
            .lock(lpb::LockRequest {
                name: b"q".to_vec(),
                lease: 12345,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unknown);
        assert_eq!(e.message(), "etcdserver: requested lease not found");
        let e = lc
            .unlock(lpb::UnlockRequest { key: vec![] })
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (tonic::Code::Unknown, "etcdserver: key is not provided")
        );
    });
}

/// A Campaign call on election `el` with `lease` and `value`, made through `addr` in a task.
fn campaign(
    addr: SocketAddr,
    lease: i64,
    value: &str,
) -> tokio::task::JoinHandle<Result<epb::CampaignResponse, tonic::Status>> {
    let value = value.as_bytes().to_vec();
    tokio::spawn(async move {
        let mut e = ElectionClient::new(channel(addr).await);
        e.campaign(epb::CampaignRequest {
            name: b"el".to_vec(),
            lease,
            value,
        })
        .await
        .map(|r| r.into_inner())
    })
}

/// The keys under `el/`, read through `addr`.
async fn candidates(addr: SocketAddr) -> Vec<String> {
    let mut kv = KvClient::new(channel(addr).await);
    let r = kv
        .range(pb::RangeRequest {
            key: b"el/".to_vec(),
            range_end: b"el0".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.kvs
        .into_iter()
        .map(|kv| String::from_utf8(kv.key).unwrap())
        .collect()
}

#[test]
fn election_campaigns_queue_observe_follows_and_a_resign_hands_over() {
    let dir = tempfile::tempdir().unwrap();
    let (_ms, addrs) = detcd_cluster(dir.path());
    let rt = runtime();
    rt.block_on(async {
        let (la, lb) = (grant(addrs[0], 60).await, grant(addrs[1], 60).await);
        let mut e = ElectionClient::new(channel(addrs[2]).await);
        let none = e
            .leader(epb::LeaderRequest {
                name: b"el".to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (none.code(), none.message()),
            (tonic::Code::Unknown, "election: no leader")
        );
        // A is elected at once (through member 0).
        let a = campaign(addrs[0], la, "a")
            .await
            .unwrap()
            .expect("A campaigns");
        let a_leader = a.leader.expect("a leader key");
        assert_eq!(a_leader.key, format!("el/{la:x}").into_bytes());
        assert_eq!(a_leader.lease, la);
        // An observer at member 2 sees A first.
        let mut obs = e
            .observe(epb::LeaderRequest {
                name: b"el".to_vec(),
            })
            .await
            .expect("observe")
            .into_inner();
        let first = obs.message().await.unwrap().expect("the leader");
        assert_eq!(first.kv.as_ref().unwrap().value, b"a");
        // B (member 1) and C (member 2, no lease: one is granted) queue behind A.
        let b = campaign(addrs[1], lb, "b");
        until("B a candidate", || async {
            candidates(addrs[2]).await.len() == 2
        })
        .await;
        let c = campaign(addrs[2], 0, "c");
        until("C a candidate", || async {
            candidates(addrs[0]).await.len() == 3
        })
        .await;
        // A proclaims: the observer sees the new value, at the proclaim's revision.
        let p = e
            .proclaim(epb::ProclaimRequest {
                leader: Some(a_leader.clone()),
                value: b"a2".to_vec(),
            })
            .await
            .expect("proclaim")
            .into_inner();
        let next = obs.message().await.unwrap().expect("the new value");
        assert_eq!(next.kv.as_ref().unwrap().value, b"a2");
        assert_eq!(next.header.unwrap().revision, p.header.unwrap().revision);
        assert!(
            !b.is_finished() && !c.is_finished(),
            "elected while A leads"
        );
        // C gives up: it resigns (its key goes).
        let c_key = candidates(addrs[0])
            .await
            .into_iter()
            .find(|k| *k != format!("el/{la:x}") && *k != format!("el/{lb:x}"))
            .expect("C's key");
        c.abort();
        until("C's key deleted", || async {
            !candidates(addrs[1]).await.contains(&c_key)
        })
        .await;
        // A resigns: B is elected, the observer sees B.
        e.resign(epb::ResignRequest {
            leader: Some(a_leader.clone()),
        })
        .await
        .expect("resign");
        let b = tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .expect("B is elected once A resigned")
            .unwrap()
            .expect("B's campaign");
        assert_eq!(b.leader.unwrap().key, format!("el/{lb:x}").into_bytes());
        let seen = tokio::time::timeout(Duration::from_secs(10), obs.message())
            .await
            .expect("the observer sees the new leader")
            .unwrap()
            .expect("B");
        assert_eq!(seen.kv.as_ref().unwrap().value, b"b");
        // A's old key no longer leads: proclaiming with it fails.
        let stale = e
            .proclaim(epb::ProclaimRequest {
                leader: Some(a_leader),
                value: b"x".to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (stale.code(), stale.message()),
            (tonic::Code::Unknown, "election: not leader")
        );
        let l = e
            .leader(epb::LeaderRequest {
                name: b"el".to_vec(),
            })
            .await
            .expect("leader")
            .into_inner();
        assert_eq!(l.kv.unwrap().key, format!("el/{lb:x}").into_bytes());
    });
}

/// An Observe asked with `hasleader` (clientv3's `WithRequireLeader`) ends once its member has
/// had no leader for a few election timeouts, with what etcd 3.4.23's stream interceptor
/// answers then (Unavailable, "etcdserver: no leader"). The same on detcd and on etcd.
#[test]
fn an_observe_that_requires_a_leader_ends_when_its_member_loses_the_leader() {
    if !require_bin("etcd", "Debian package etcd-server")
        || !require_bin("etcdctl", "Debian package etcd-client")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut ends = Vec::new();
    for bin in ["detcd", "etcd"] {
        let d = dir.path().join(bin);
        std::fs::create_dir_all(&d).unwrap();
        let mut ms = static_cluster(&d, 3);
        for m in ms.iter_mut() {
            if bin == "etcd" {
                m.start_binary("etcd");
            } else {
                m.start();
            }
        }
        let addrs = addrs_of(&ms);
        let eps: Vec<String> = ms.iter().map(Member::addr).collect();
        eventually(Duration::from_secs(30), "a cluster that answers v3", || {
            (etcdctl3(&eps.join(","), &["put", "ready", "1"], None).0 == 0).then_some(())
        });
        let mut obs = rt.block_on(async {
            let la = grant(addrs[0], 60).await;
            campaign(addrs[0], la, "a")
                .await
                .unwrap()
                .expect("campaign");
            let mut e = ElectionClient::new(channel(addrs[0]).await);
            let mut req = tonic::Request::new(epb::LeaderRequest {
                name: b"el".to_vec(),
            });
            req.metadata_mut()
                .insert("hasleader", "true".parse().unwrap());
            let mut obs = e.observe(req).await.expect("observe").into_inner();
            let first = obs.message().await.unwrap().expect("the leader");
            assert_eq!(first.kv.unwrap().value, b"a", "{bin}");
            obs
        });
        ms[1].kill();
        ms[2].kill();
        let end = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), obs.message())
                .await
                .unwrap_or_else(|_| panic!("{bin}: the Observe went on without a leader"))
        });
        let st = end.expect_err("the stream ends with an error");
        ends.push((bin, st.code(), st.message().to_string()));
    }
    assert_eq!(ends[0].1, ends[1].1, "{ends:?}");
    assert_eq!(ends[0].2, ends[1].2, "{ends:?}");
    assert_eq!(ends[0].1, tonic::Code::Unavailable, "{ends:?}");
}
