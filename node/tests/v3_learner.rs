//! Learner members with real processes, as etcd 3.4 has them: `member add --learner` on a
//! single member keeps its quorum (writes go on while the learner is down), the started
//! learner catches up, `member promote` then makes it a voter, and from then on the cluster
//! needs both members to write. Before it has caught up (never started), promotion is refused
//! with etcd's "in sync" error; a second learner is refused.

mod common;

use std::time::Duration;

use common::*;

fn ctl(eps: &str, args: &[&str]) -> (i32, String) {
    let (rc, out) = etcdctl3(eps, args, None);
    (rc, without_etcdctl_logs(&out))
}

/// The ID (hex) and learner flag of the member with peer URL `peer`, from `member list`.
fn listed(eps: &str, peer: &str) -> Option<(String, bool)> {
    let (rc, out) = ctl(eps, &["-w", "json", "member", "list"]);
    assert_eq!(rc, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["members"].as_array()?.iter().find_map(|m| {
        let urls = m["peerURLs"].as_array()?;
        urls.iter().any(|u| u == peer).then(|| {
            (
                format!("{:x}", m["ID"].as_u64().unwrap()),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
    })
}

#[test]
fn a_learner_keeps_the_quorum_catches_up_and_is_promoted() {
    if !require_bin("etcdctl", "Debian package etcd-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, pa) = ports();
    let (cb, pb) = ports();
    let a_url = format!("infra0=http://127.0.0.1:{pa}");
    let mut a = member(dir.path(), "infra0", ca, pa, &a_url, "new");
    a.start();
    let eps = a.addr();
    eventually(Duration::from_secs(20), "A to serve", || {
        (ctl(&eps, &["put", "k0", "v"]).0 == 0).then_some(())
    });

    let peer = format!("http://127.0.0.1:{pb}");
    let (rc, out) = ctl(
        &eps,
        &[
            "member",
            "add",
            "l1",
            "--learner",
            &format!("--peer-urls={peer}"),
        ],
    );
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("added to cluster"), "{out}");
    let (id, learner) = listed(&eps, &peer).expect("the learner is listed");
    assert!(learner, "listed as a learner");

    // Not started: writes still commit (a learner counts toward no quorum), promotion is
    // refused, and so is a second learner.
    assert_eq!(ctl(&eps, &["put", "k1", "v"]).0, 0);
    let (rc, out) = ctl(&eps, &["member", "promote", &id]);
    assert_eq!(rc, 1);
    assert!(
        out.contains("can only promote a learner member which is in sync with leader"),
        "{out}"
    );
    let (rc, out) = ctl(
        &eps,
        &[
            "member",
            "add",
            "l2",
            "--learner",
            "--peer-urls=http://127.0.0.1:9",
        ],
    );
    assert_eq!(rc, 1);
    assert!(out.contains("too many learner members in cluster"), "{out}");

    // Started, it catches up; then the promotion goes through.
    let ab = format!("{a_url},l1={peer}");
    let mut b = member(dir.path(), "l1", cb, pb, &ab, "existing");
    b.start();
    let out = eventually(Duration::from_secs(30), "the promotion", || {
        let (rc, out) = ctl(&eps, &["member", "promote", &id]);
        (rc == 0).then_some(out)
    });
    assert!(out.contains("promoted"), "{out}");
    let (_, learner) = listed(&eps, &peer).expect("still listed");
    assert!(!learner, "a voter now");
    eventually(Duration::from_secs(20), "B to hold the keys", || {
        let (rc, out) = ctl(&b.addr(), &["get", "k1", "--consistency=s"]);
        (rc == 0 && out.contains("k1")).then_some(())
    });

    // Two voters: with B down, A alone cannot commit a write.
    b.kill();
    let (rc, out) = ctl(&eps, &["--command-timeout=3s", "put", "k2", "v"]);
    assert_ne!(rc, 0, "a write committed without a quorum: {out}");
}
