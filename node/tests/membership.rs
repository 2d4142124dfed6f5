//! The tutorial's method 1 with real processes: member A alone, `POST /v2/members` with B's
//! peer URL, B started with `--initial-cluster-state existing`, the same for C; every member
//! then lists the same members and a key written on A reads back on B and C. Also: a member
//! that was never added is refused with a clear error.

mod common;

use std::time::Duration;

use common::*;

fn add(a: &Member, peer: u16) -> Resp {
    eventually(
        Duration::from_secs(30),
        "the member add to be accepted",
        || {
            let body = format!("{{\"peerURLs\": [\"http://127.0.0.1:{peer}\"]}}");
            let r = http(
                "POST",
                &a.addr(),
                "/v2/members",
                Some(("application/json", &body)),
                Duration::from_secs(10),
            )
            .ok()?;
            (r.status == 201).then_some(r)
        },
    )
}

#[test]
fn tutorial_method_one_grows_a_cluster_member_by_member() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, pa) = ports();
    let (cb, pb) = ports();
    let (cc, pc) = ports();
    let a_url = format!("autumn-client0=http://127.0.0.1:{pa}");
    let mut a = member(dir.path(), "autumn-client0", ca, pa, &a_url, "new");
    a.start();
    eventually(Duration::from_secs(20), "A to lead", || {
        (get(&a.addr(), "/v2/members/leader").ok()?.status == 200).then_some(())
    });

    let r = add(&a, pb);
    assert_eq!(
        r.json()["peerURLs"][0],
        format!("http://127.0.0.1:{pb}"),
        "{}",
        r.body
    );
    let ab = format!("{a_url},autumn-client1=http://127.0.0.1:{pb}");
    let mut b = member(dir.path(), "autumn-client1", cb, pb, &ab, "existing");
    b.start();
    eventually(Duration::from_secs(30), "B to serve", || {
        (get(&b.addr(), "/v2/keys/").ok()?.status == 200).then_some(())
    });

    add(&a, pc);
    let abc = format!("{ab},autumn-client2=http://127.0.0.1:{pc}");
    let mut c = member(dir.path(), "autumn-client2", cc, pc, &abc, "existing");
    c.start();

    let list = eventually(
        Duration::from_secs(30),
        "identical member lists on A, B and C",
        || {
            let lists: Vec<String> = [&a, &b, &c]
                .iter()
                .map(|m| {
                    get(&m.addr(), "/v2/members")
                        .map(|r| r.body)
                        .unwrap_or_default()
                })
                .collect();
            (lists[0].matches("\"clientURLs\":[\"http").count() == 3
                && lists.iter().all(|l| *l == lists[0]))
            .then(|| lists[0].clone())
        },
    );
    assert!(list.contains("autumn-client2"), "{list}");

    let w = form_put(&a.addr(), "/v2/keys/message", "value=Hello%20autumn").unwrap();
    assert!(w.status < 300, "{w:?}");
    for m in [&b, &c] {
        let r = eventually(Duration::from_secs(10), "the key on every member", || {
            let r = get(&m.addr(), "/v2/keys/message").ok()?;
            (r.status == 200).then_some(r)
        });
        assert_eq!(r.json()["node"]["value"], "Hello autumn");
    }
}

#[test]
fn a_member_that_was_never_added_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, pa) = ports();
    let (cx, px) = ports();
    let a_url = format!("a=http://127.0.0.1:{pa}");
    let mut a = member(dir.path(), "a", ca, pa, &a_url, "new");
    a.start();
    eventually(Duration::from_secs(20), "A to lead", || {
        (get(&a.addr(), "/v2/members/leader").ok()?.status == 200).then_some(())
    });
    let mut x = member(
        dir.path(),
        "x",
        cx,
        px,
        &format!("{a_url},x=http://127.0.0.1:{px}"),
        "existing",
    );
    x.start();
    let status = eventually(Duration::from_secs(20), "the stranger to exit", || {
        x.child.as_mut()?.try_wait().ok()?
    });
    assert!(!status.success());
    assert!(
        x.logs().contains("has not been added to the cluster"),
        "{}",
        x.logs()
    );
    // The cluster is unharmed.
    assert!(form_put(&a.addr(), "/v2/keys/k", "value=v").unwrap().status < 300);
}

fn members_of(m: &Member) -> Vec<(String, String)> {
    let r = get(&m.addr(), "/v2/members").unwrap();
    r.json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_str().unwrap().to_string(),
                x["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn id_of(m: &Member, name: &str) -> String {
    members_of(m)
        .into_iter()
        .find(|(_, n)| n == name)
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("{name} is not a member"))
}

fn delete(via: &Member, id: &str) -> Resp {
    http(
        "DELETE",
        &via.addr(),
        &format!("/v2/members/{id}"),
        None,
        Duration::from_secs(15),
    )
    .unwrap()
}

/// Remove member `id` through `via` as an operator does with etcd: retried while the strict
/// reconfiguration check refuses (500: the peers have been connected for less than 5 s, as
/// right after a start). Returns the answer that was not such a refusal.
fn delete_when_ready(via: &Member, id: &str) -> Resp {
    eventually(
        Duration::from_secs(30),
        "the removal to be accepted",
        || {
            let r = delete(via, id);
            (r.status != 500).then_some(r)
        },
    )
}

/// The removed member's process ends, saying why (in what it logged since `m.start()`).
fn exits_removed(m: &mut Member, log_before: usize) {
    let status = eventually(
        Duration::from_secs(30),
        "the removed member to exit",
        || m.child.as_mut()?.try_wait().unwrap(),
    );
    assert!(!status.success());
    let logs = m.logs();
    let new = &logs[log_before.min(logs.len())..];
    assert!(new.contains("removed"), "{new}");
    m.child = None;
}

fn write_ok(m: &Member, key: &str) {
    eventually(Duration::from_secs(20), "a write to succeed", || {
        let r = form_put(&m.addr(), &format!("/v2/keys/{key}"), "value=v").ok()?;
        (r.status == 201 || r.status == 200).then_some(())
    });
}

#[test]
fn remove_a_follower_replace_it_then_remove_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut ms = static_cluster(dir.path(), 3);
    for m in ms.iter_mut() {
        m.start();
    }
    let leader = eventually(Duration::from_secs(30), "a leader", || leader_of(&ms));
    let f = (leader + 1) % 3;
    let other = 3 - leader - f;
    write_ok(&ms[leader], "before");

    // Remove a follower: 204, it stops with a message, the others go on with 2 members.
    let fid = id_of(&ms[leader], &ms[f].name);
    let r = delete_when_ready(&ms[other], &fid);
    assert_eq!(r.status, 204, "{}", r.body);
    exits_removed(&mut ms[f], 0);
    assert_eq!(members_of(&ms[leader]).len(), 2);
    write_ok(&ms[other], "after-follower-removal");
    assert_eq!(
        delete(&ms[other], &fid).status,
        410,
        "a removed id is gone for good (etcd: 410)"
    );

    // Its data dir cannot be used to rejoin silently: restarted, it stops again.
    let before = ms[f].logs().len();
    ms[f].start();
    exits_removed(&mut ms[f], before);
    assert_eq!(members_of(&ms[leader]).len(), 2);

    // Replace it: add a new member, start it with state existing; it catches up and serves.
    let (c, p) = ports();
    eventually(Duration::from_secs(30), "the add", || {
        let body = format!("{{\"peerURLs\": [\"http://127.0.0.1:{p}\"]}}");
        let r = http(
            "POST",
            &ms[leader].addr(),
            "/v2/members",
            Some(("application/json", &body)),
            Duration::from_secs(10),
        )
        .ok()?;
        (r.status == 201).then_some(())
    });
    let mut initial: Vec<String> = [leader, other]
        .iter()
        .map(|&i| format!("{}=http://127.0.0.1:{}", ms[i].name, ms[i].peer))
        .collect();
    initial.push(format!("infra9=http://127.0.0.1:{p}"));
    let mut d = member(dir.path(), "infra9", c, p, &initial.join(","), "existing");
    d.start();
    eventually(
        Duration::from_secs(30),
        "the new member to have the data",
        || {
            (get(&d.addr(), "/v2/keys/after-follower-removal")
                .ok()?
                .status
                == 200)
                .then_some(())
        },
    );
    eventually(Duration::from_secs(10), "3 named members", || {
        let m = members_of(&ms[leader]);
        (m.len() == 3 && m.iter().all(|(_, n)| !n.is_empty())).then_some(())
    });

    // Remove the leader (asked of a follower): a new leader takes over; the old one stops.
    let lid = id_of(&ms[other], &ms[leader].name);
    let r = delete_when_ready(&ms[other], &lid);
    assert_eq!(r.status, 204, "{}", r.body);
    exits_removed(&mut ms[leader], 0);
    let rest = [&ms[other], &d];
    eventually(Duration::from_secs(30), "a new leader", || {
        let r = get(&ms[other].addr(), "/v2/members/leader").ok()?;
        (r.status == 200 && r.json()["name"] != ms[leader].name.as_str()).then_some(())
    });
    for m in rest {
        write_ok(m, "after-leader-removal");
        assert_eq!(members_of(m).len(), 2);
    }
    assert_eq!(
        get(&d.addr(), "/v2/keys/before").unwrap().status,
        200,
        "nothing acknowledged was lost"
    );
}

#[test]
fn a_member_with_the_wrong_cluster_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, pa) = ports();
    let a_url = format!("a=http://127.0.0.1:{pa}");
    let mut a = member(dir.path(), "a", ca, pa, &a_url, "new");
    a.start();
    eventually(Duration::from_secs(20), "A to lead", || {
        (get(&a.addr(), "/v2/members/leader").ok()?.status == 200).then_some(())
    });
    let (cb, pb) = ports();
    add(&a, pb);
    let mut b = member(
        dir.path(),
        "b",
        cb,
        pb,
        &format!("{a_url},b=http://127.0.0.1:{pb}"),
        "existing",
    );
    for x in b.args.iter_mut() {
        if x == "etcd-cluster" {
            *x = "another-cluster".into();
        }
    }
    b.start();
    let status = eventually(Duration::from_secs(60), "B to give up", || {
        b.child.as_mut()?.try_wait().unwrap()
    });
    assert!(!status.success());
    let logs = b.logs();
    assert!(
        logs.contains("another-cluster") && logs.contains("token"),
        "{logs}"
    );
    b.child = None;
    // A is unharmed (a 2-member cluster with one never-started member has no quorum for
    // writes, which is etcd's behaviour too; reads and the member list still answer).
    assert_eq!(get(&a.addr(), "/v2/members").unwrap().status, 200);
    assert_eq!(get(&a.addr(), "/health").unwrap().status, 200);
}

#[test]
fn etcdctl_member_list_add_remove() {
    if !require_bin("etcdctl", "Debian package etcd-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ms = static_cluster(dir.path(), 3);
    for m in ms.iter_mut() {
        m.start();
    }
    eventually(Duration::from_secs(30), "a leader", || leader_of(&ms));
    let endpoints = ms
        .iter()
        .map(|m| format!("http://{}", m.addr()))
        .collect::<Vec<_>>()
        .join(",");
    let ctl = |args: &[&str]| {
        let o = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "2")
            .args(["--endpoints", &endpoints])
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    };
    let (ok, out) = ctl(&["member", "list"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(out.matches("isLeader=true").count(), 1, "{out}");
    // etcd's reconfiguration check wants every member connected for 5 s first.
    let (_, p) = ports();
    let peer = format!("http://127.0.0.1:{p}");
    let out = eventually(Duration::from_secs(30), "member add", || {
        let (ok, out) = ctl(&["member", "add", "infra9", &peer]);
        ok.then_some(out)
    });
    assert!(out.contains("Added member named infra9"), "{out}");
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let (ok, out) = ctl(&["member", "list"]);
    assert!(
        ok && out.lines().count() == 4 && out.contains(&peer),
        "{out}"
    );
    let id = out
        .lines()
        .find(|l| l.contains(&peer))
        .and_then(|l| l.split(['[', ':']).next())
        .unwrap()
        .trim()
        .to_string();
    let (ok, out) = ctl(&["member", "remove", &id]);
    assert!(ok && out.contains("Removed member"), "{out}");
    let (ok, out) = ctl(&["member", "list"]);
    assert!(ok && out.lines().count() == 3, "{out}");
}

#[test]
fn a_peer_from_another_cluster_is_refused_and_logged_never_merged() {
    let dir = tempfile::tempdir().unwrap();
    let (cx, px) = ports();
    let x_url = format!("x0=http://127.0.0.1:{px}");
    let mut x = member(dir.path(), "x0", cx, px, &x_url, "new");
    x.start();
    eventually(Duration::from_secs(20), "x0 to lead", || {
        (get(&x.addr(), "/v2/members/leader").ok()?.status == 200).then_some(())
    });
    let before = get(&x.addr(), "/v2/members").unwrap().body;
    // y0 believes it bootstraps a 2-member cluster with x0, under another token: another
    // cluster id. Its streams to x0 must be refused.
    let (cy, py) = ports();
    let mut y = member(
        dir.path(),
        "y0",
        cy,
        py,
        &format!("{x_url},y0=http://127.0.0.1:{py}"),
        "new",
    );
    for a in y.args.iter_mut() {
        if a == "etcd-cluster" {
            *a = "another-token".into();
        }
    }
    y.start();
    eventually(Duration::from_secs(20), "x0 to log the refusal", || {
        x.logs().contains("another cluster").then_some(())
    });
    assert_eq!(get(&x.addr(), "/v2/members").unwrap().body, before);
    let r = form_put(&x.addr(), "/v2/keys/still", "value=mine").unwrap();
    assert_eq!(r.status, 201, "x0 still serves alone: {}", r.body);
}
