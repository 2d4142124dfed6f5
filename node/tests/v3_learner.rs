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

/// The members' `endpoint status` answers: (endpoint, member id, leader id), as hex.
fn statuses(eps: &[String]) -> Vec<(String, String, String)> {
    eps.iter()
        .map(|ep| {
            let (rc, out) = ctl(ep, &["-w", "json", "endpoint", "status"]);
            assert_eq!(rc, 0, "{ep}: {out}");
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let st = &v[0]["Status"];
            (
                ep.clone(),
                format!("{:x}", st["header"]["member_id"].as_u64().unwrap()),
                format!("{:x}", st["leader"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// A gateway answer in the transcript: status and body.
fn transcript_http(transcript: &mut Vec<String>, path: &str, r: &Resp) {
    assert_eq!(r.status, 503, "{path}: {}", r.body);
    assert!(
        r.body.contains("rpc not supported for learner"),
        "{path}: {}",
        r.body
    );
    transcript.push(format!("learner POST {path} -> {}\n{}", r.status, r.body));
}

/// Two voters and a learner of `binary` (detcd or etcd 3.4): what the learner answers to
/// each kind of request, then promotions asked of the learner and of the follower (which
/// only the leader can decide). Returns the transcript: each command with its exit code and
/// output, ids and the cluster id masked.
fn learner_transcript(binary: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (ca, pa) = ports();
    let (cb, pb) = ports();
    let (cl, pl) = ports();
    let a_url = format!("infra0=http://127.0.0.1:{pa}");
    let mut a = member(dir.path(), "infra0", ca, pa, &a_url, "new");
    a.start_binary(binary);
    let a_ep = a.addr();
    eventually(Duration::from_secs(20), "A to serve", || {
        (ctl(&a_ep, &["put", "k0", "v0"]).0 == 0).then_some(())
    });
    let b_peer = format!("http://127.0.0.1:{pb}");
    let (rc, out) = ctl(
        &a_ep,
        &["member", "add", "infra1", &format!("--peer-urls={b_peer}")],
    );
    assert_eq!(rc, 0, "{out}");
    let ab = format!("{a_url},infra1={b_peer}");
    let mut b = member(dir.path(), "infra1", cb, pb, &ab, "existing");
    b.start_binary(binary);
    let b_started = std::time::Instant::now();
    let b_ep = b.addr();
    eventually(Duration::from_secs(30), "B to join", || {
        (ctl(&b_ep, &["put", "k1", "v1"]).0 == 0).then_some(())
    });
    let l_peer = format!("http://127.0.0.1:{pl}");
    // Both refuse ("etcdserver: unhealthy cluster") until every voter has been connected
    // for 5 s, learners included: certain while B has run for less than that.
    let add = [
        "member",
        "add",
        "l2",
        "--learner",
        &format!("--peer-urls={l_peer}"),
    ];
    let (rc, out) = ctl(&a_ep, &add);
    if b_started.elapsed() < Duration::from_secs(4) {
        assert!(
            rc != 0 && out.contains("etcdserver: unhealthy cluster"),
            "{out}"
        );
    } else {
        println!("B ran for over 4 s before the learner's addition: refusal not checked");
    }
    eventually(Duration::from_secs(20), "the learner's addition", || {
        (ctl(&a_ep, &add).0 == 0).then_some(())
    });
    let (l_id, _) = listed(&a_ep, &l_peer).expect("the learner is listed");
    let mut l = member(
        dir.path(),
        "l2",
        cl,
        pl,
        &format!("{ab},l2={l_peer}"),
        "existing",
    );
    l.start_binary(binary);
    let l_ep = l.addr();
    eventually(Duration::from_secs(30), "the learner to catch up", || {
        let (rc, out) = ctl(&l_ep, &["get", "k1", "--consistency=s"]);
        (rc == 0 && out.contains("v1")).then_some(())
    });
    let st = statuses(&[a_ep.clone(), b_ep.clone()]);
    let follower = st
        .iter()
        .find(|(_, me, leader)| me != leader)
        .map(|(ep, ..)| ep.clone())
        .expect("one of the two voters follows");
    let (a_id, _) = listed(&a_ep, &format!("http://127.0.0.1:{pa}")).unwrap();
    let (cid_rc, cid_out) = ctl(&a_ep, &["-w", "json", "member", "list"]);
    assert_eq!(cid_rc, 0);
    let v: serde_json::Value = serde_json::from_str(&cid_out).unwrap();
    let cid = format!("{:x}", v["header"]["cluster_id"].as_u64().unwrap());

    let (mut transcript, mut gateway) = (Vec::new(), Vec::new());
    let mut run = |who: &str, ep: &str, args: &[&str]| {
        let (rc, out) = ctl(ep, args);
        let line = format!("{who} $ etcdctl {} -> {rc}\n{out}", args.join(" "));
        // etcdctl pads ids to 16 hex digits (`%16x`): the padding goes with the id.
        let mask = |s: &str| {
            let s = s.replace(&l_id, "<learner>").replace(&a_id, "<infra0>");
            let s = s.replace(&cid, "<cluster>");
            s.lines()
                .map(|l| {
                    l.split(' ')
                        .filter(|w| !w.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                        + "\n"
                })
                .collect::<String>()
        };
        transcript.push(mask(&line));
        (rc, out)
    };
    // What a learner serves: serializable reads and Status; nothing else, streams included.
    let (rc, out) = run("learner", &l_ep, &["get", "k1", "--consistency=s"]);
    assert!(rc == 0 && out.contains("v1"), "{out}");
    for args in [
        &["get", "k1"][..],
        &["put", "k2", "v2"],
        &["del", "k0"],
        &["lease", "grant", "10"],
        &["member", "list"],
        &["member", "promote", &l_id],
        &["compaction", "1"],
        &["alarm", "list"],
    ] {
        let (rc, out) = run("learner", &l_ep, args);
        assert!(
            rc != 0 && out.contains("rpc not supported for learner"),
            "{args:?}: {out}"
        );
    }
    // The JSON gateway refuses the same (etcd's gateway calls its own gRPC server).
    for (path, body) in [
        ("/v3/kv/put", r#"{"key":"azI=","value":"djI="}"#),
        ("/v3/kv/range", r#"{"key":"azE="}"#),
        ("/v3/lease/grant", r#"{"TTL":10}"#),
    ] {
        let r = http(
            "POST",
            &l_ep,
            path,
            Some(("application/json", body)),
            Duration::from_secs(5),
        )
        .unwrap();
        transcript_http(&mut gateway, path, &r);
    }
    // The gateway's watch stream ends at once with the stream interceptor's error.
    let r = http(
        "POST",
        &l_ep,
        "/v3/watch",
        Some(("application/json", r#"{"create_request":{"key":"azE="}}"#)),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(
        r.body.contains("rpc not supported for learner"),
        "{}",
        r.body
    );
    gateway.push(format!(
        "learner POST /v3/watch -> {}\n{}",
        r.status, r.body
    ));
    let r = http(
        "POST",
        &l_ep,
        "/v3/kv/range",
        Some(("application/json", r#"{"key":"azE=","serializable":true}"#)),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(r#""value":"djE=""#), "{}", r.body);
    // etcdctl 3.4's health check is a linearizable get: a learner reads as unhealthy.
    let (rc, _) = ctl(&l_ep, &["endpoint", "health"]);
    assert_ne!(rc, 0);
    let (rc, out) = ctl(&l_ep, &["endpoint", "status"]);
    assert_eq!(rc, 0, "{out}");
    // Promotions asked of the follower go to the leader, which alone knows the learner's
    // progress: refusals for a voter and for an unknown id, then the learner's promotion.
    let (rc, out) = run("follower", &follower, &["member", "promote", &a_id]);
    assert!(
        rc != 0 && out.contains("can only promote a learner member"),
        "{out}"
    );
    let (rc, out) = run("follower", &follower, &["member", "promote", "1234"]);
    assert!(rc != 0 && out.contains("member not found"), "{out}");
    let (rc, out) = run("follower", &follower, &["member", "promote", &l_id]);
    assert!(rc == 0 && out.contains("promoted"), "{out}");
    let (_, learner) = listed(&follower, &l_peer).expect("still listed");
    assert!(
        !learner,
        "the follower lists the promoted member as a voter at once"
    );
    // A voter now: it serves writes and linearizable reads.
    eventually(
        Duration::from_secs(10),
        "the promoted member to serve writes",
        || (ctl(&l_ep, &["put", "k3", "v3"]).0 == 0).then_some(()),
    );
    let (rc, out) = run("promoted", &l_ep, &["get", "k3", "--print-value-only"]);
    assert!(rc == 0 && out.contains("v3"), "{out}");
    drop((a, b, l));
    transcript.extend(gateway);
    transcript
}

#[test]
fn a_learner_serves_only_serializable_reads_and_followers_forward_promotions_as_etcd() {
    if !require_bin("etcdctl", "Debian package etcd-client")
        || !require_bin("etcd", "Debian package etcd-server")
    {
        return;
    }
    let ours = learner_transcript(env!("CARGO_BIN_EXE_detcd"));
    let theirs = learner_transcript("etcd");
    assert_eq!(ours.len(), theirs.len());
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o, t, "detcd and etcd 3.4 answer differently");
    }
}
