//! The tutorial's static method with three real `detcd` processes on 127.0.0.1: same
//! members everywhere, a write read back on the others, kill -9 of the leader, a write on
//! the survivors, and the restarted member catching up with nothing lost.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn static_three_member_cluster_survives_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = static_cluster(dir.path(), 3);
    for m in members.iter_mut() {
        m.start();
    }
    let leader = eventually(Duration::from_secs(20), "a leader", || leader_of(&members));

    // GET /v2/members is identical on all three once every member has published itself.
    let lists: Vec<String> = eventually(Duration::from_secs(20), "identical member lists", || {
        let lists: Vec<String> = members
            .iter()
            .map(|m| {
                get(&m.addr(), "/v2/members")
                    .map(|r| r.body)
                    .unwrap_or_default()
            })
            .collect();
        let complete = lists[0].matches("\"clientURLs\":[\"http").count() == 3;
        (complete && lists.iter().all(|l| l == &lists[0])).then_some(lists)
    });
    assert_eq!(
        lists[0].matches("\"name\":\"infra").count(),
        3,
        "{}",
        lists[0]
    );

    // The tutorial's write on one member reads back on the other two.
    let r = form_put(
        &members[0].addr(),
        "/v2/keys/message",
        "value=Hello%20autumn",
    )
    .unwrap();
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let index: u64 = r.header("X-Etcd-Index").unwrap().parse().unwrap();
    for m in &members[1..] {
        let got = eventually(Duration::from_secs(5), "the write on every member", || {
            let r = get(&m.addr(), "/v2/keys/message").ok()?;
            (r.status == 200).then_some(r)
        });
        assert_eq!(got.json()["node"]["value"], "Hello autumn");
        assert_eq!(got.json()["node"]["modifiedIndex"], index);
    }

    // Many acknowledged writes, then kill -9 of the leader.
    for i in 0..50 {
        let r = form_put(
            &members[i % 3].addr(),
            &format!("/v2/keys/acked/{i}"),
            &format!("value=v{i}"),
        )
        .unwrap();
        assert!(r.status < 300, "{r:?}");
    }
    members[leader].kill();
    let survivor = (leader + 1) % 3;
    let r = eventually(Duration::from_secs(20), "a write on the survivors", || {
        let r = form_put(
            &members[survivor].addr(),
            "/v2/keys/after-kill",
            "value=still-here",
        )
        .ok()?;
        (r.status < 300).then_some(r)
    });
    assert_eq!(r.json()["node"]["value"], "still-here");

    // The restarted member catches up: every acknowledged write is there.
    members[leader].start();
    eventually(
        Duration::from_secs(20),
        "the restarted member to catch up",
        || {
            let r = get(&members[leader].addr(), "/v2/keys/after-kill").ok()?;
            (r.status == 200).then_some(())
        },
    );
    let r = get(&members[leader].addr(), "/v2/keys/acked?recursive=true").unwrap();
    let nodes = r.json()["node"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(nodes.len(), 50, "{}", members[leader].logs());
}
