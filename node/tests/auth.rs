//! v2 auth across a real 3-member cluster: set up on one member, enforced on every member,
//! and still enforced after every member restarts from its snapshots and WAL. Also drives
//! Debian's `etcdctl` (v2) user, role and auth commands when it is installed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(15);

fn basic(user: &str, pw: &str) -> String {
    use std::io::Write;
    // base64 by hand keeps the test free of extra crates
    let raw = format!("{user}:{pw}");
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.write_all(&[table[((n >> (18 - 6 * i)) & 63) as usize]])
                    .unwrap();
            } else {
                out.push(b'=');
            }
        }
    }
    format!("Basic {}", String::from_utf8(out).unwrap())
}

fn put_json(addr: &str, path: &str, auth: Option<&str>, body: &str) -> Resp {
    let h: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    http_with("PUT", addr, path, &h, Some(("application/json", body)), T).unwrap()
}

fn call(method: &str, addr: &str, path: &str, auth: Option<&str>, form: Option<&str>) -> Resp {
    let h: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let body = form.map(|f| ("application/x-www-form-urlencoded", f));
    http_with(method, addr, path, &h, body, T).unwrap()
}

#[test]
fn auth_is_replicated_and_survives_restarts_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = static_cluster(dir.path(), 3);
    for m in members.iter_mut() {
        // snapshots every few entries, so restarts load auth state from a snapshot
        m.args.extend(["--snapshot-count".into(), "5".into()]);
        m.start();
    }
    let a0 = members[0].addr();
    eventually(Duration::from_secs(30), "a leader", || leader_of(&members));
    let root = basic("root", "rootpw");
    let alice = basic("alice", "alicepw");
    eventually(T, "root created", || {
        let r = put_json(
            &a0,
            "/v2/auth/users/root",
            None,
            r#"{"user":"root","password":"rootpw"}"#,
        );
        (r.status == 201).then_some(())
    });
    let r = put_json(
        &a0,
        "/v2/auth/roles/app",
        None,
        r#"{"role":"app","permissions":{"kv":{"read":["/app/*"],"write":["/app/*"]}}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = put_json(
        &a0,
        "/v2/auth/users/alice",
        None,
        r#"{"user":"alice","password":"alicepw","roles":["app"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(call("PUT", &a0, "/v2/auth/enable", None, None).status, 200);
    let r = put_json(
        &a0,
        "/v2/auth/roles/guest",
        Some(&root),
        r#"{"role":"guest","revoke":{"kv":{"read":["/*"],"write":["/*"]}}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Enough writes for several snapshots.
    for i in 0..20 {
        let r = call(
            "PUT",
            &a0,
            &format!("/v2/keys/app/k{i}"),
            Some(&alice),
            Some("value=v"),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }

    let check = |members: &[Member]| {
        for m in members {
            let a = m.addr();
            eventually(T, "auth enforced on every member", || {
                let anon = call("GET", &a, "/v2/keys/app/k0", None, None);
                (anon.status == 401).then_some(())
            });
            assert_eq!(
                call("GET", &a, "/v2/keys/app/k0", Some(&alice), None).status,
                200
            );
            let denied = call("PUT", &a, "/v2/keys/other", Some(&alice), Some("value=x"));
            assert_eq!(denied.status, 401, "{}", denied.body);
            assert_eq!(denied.json()["errorCode"], 110);
            let wrong = call(
                "GET",
                &a,
                "/v2/keys/app/k0",
                Some(&basic("alice", "nope")),
                None,
            );
            assert_eq!(wrong.status, 401);
            assert_eq!(call("GET", &a, "/v2/auth/users", None, None).status, 401);
            let users = call("GET", &a, "/v2/auth/users", Some(&root), None);
            assert_eq!(users.status, 200);
            assert!(users.body.contains("\"alice\""), "{}", users.body);
            assert_eq!(
                call("GET", &a, "/v2/auth/enable", None, None).body.trim(),
                r#"{"enabled":true}"#
            );
        }
    };
    check(&members);

    // Every member down, then up again: auth comes back from snapshots and the WAL.
    for m in members.iter_mut() {
        m.kill();
    }
    assert!(
        std::fs::read_dir(members[0].data_dir.join("member/snap"))
            .unwrap()
            .count()
            > 0,
        "no snapshot was taken"
    );
    for m in members.iter_mut() {
        m.start();
    }
    eventually(Duration::from_secs(30), "a leader after restart", || {
        leader_of(&members)
    });
    check(&members);
    // A change after the restart still replicates.
    let r = put_json(
        &a0,
        "/v2/auth/users/alice",
        Some(&root),
        r#"{"user":"alice","revoke":["app"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let a2 = members[2].addr();
    eventually(T, "the revoke on member 2", || {
        (call("GET", &a2, "/v2/keys/app/k0", Some(&alice), None).status == 401).then_some(())
    });
}

#[test]
fn etcdctl_user_role_and_auth_commands() {
    if !require_bin("etcdctl", "Debian package etcd-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut m = static_cluster(dir.path(), 1).remove(0);
    m.start();
    eventually(Duration::from_secs(20), "a leader", || {
        (get(&m.addr(), "/v2/members/leader").ok()?.status == 200).then_some(())
    });
    let endpoint = format!("http://{}", m.addr());
    let ctl = |args: &[&str]| {
        let o = Command::new("etcdctl")
            .env("ETCDCTL_API", "2")
            .args(["--endpoints", &endpoint])
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let must = |args: &[&str]| {
        let (ok, out) = ctl(args);
        assert!(ok, "etcdctl {args:?}: {out}");
        out
    };
    must(&["user", "add", "root:rootpw"]);
    must(&["role", "add", "app"]);
    must(&["role", "grant", "app", "--path", "/app/*", "--readwrite"]);
    must(&["user", "add", "alice:alicepw"]);
    must(&["user", "grant", "alice", "--roles", "app"]);
    let out = must(&["user", "get", "alice"]);
    assert!(out.contains("app"), "{out}");
    let out = must(&["role", "get", "app"]);
    assert!(out.contains("/app/*"), "{out}");
    let out = must(&["user", "list"]);
    assert!(out.contains("alice") && out.contains("root"), "{out}");
    must(&["auth", "enable"]);
    must(&[
        "--username",
        "root:rootpw",
        "role",
        "revoke",
        "guest",
        "--path",
        "/*",
        "--readwrite",
    ]);
    must(&["--username", "alice:alicepw", "set", "/app/x", "1"]);
    let out = must(&["--username", "alice:alicepw", "get", "/app/x"]);
    assert_eq!(out.trim(), "1");
    let (ok, out) = ctl(&["--username", "alice:alicepw", "set", "/other", "1"]);
    assert!(!ok && out.contains("110"), "{out}");
    let (ok, out) = ctl(&["get", "/app/x"]);
    assert!(!ok && out.contains("110"), "{out}");
    must(&["--username", "root:rootpw", "auth", "disable"]);
    let out = must(&["get", "/app/x"]);
    assert_eq!(out.trim(), "1");
}
