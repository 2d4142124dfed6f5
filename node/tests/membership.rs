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
