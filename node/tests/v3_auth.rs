//! etcd's v3 auth on real detcd processes, driven by Debian's `etcdctl` (API v3): the same
//! `user`, `role` and `auth` commands, and the same reads and writes as users allowed and
//! denied, print the same on detcd and on etcd 3.4.23 (each a fresh single member); a token
//! one member issued works on the others; a 3-member cluster keeps users, roles and the
//! enabled flag across a restart and a snapshot. Without `etcd` or `etcdctl` these fail under
//! CI (`CI` set) and skip, saying so, elsewhere.

mod common;

use std::time::Duration;

use common::*;

/// Mask what legitimately differs between two servers: cluster and member ids, the Raft term,
/// the time stamps and client ids of etcdctl's log lines (the gRPC error they name is kept:
/// it shows the status code).
fn normalise(s: &str) -> String {
    let mut out = String::new();
    for l in s.lines() {
        if l.starts_with("{\"level\":") {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            out.push_str(&format!("log: {}\n", v["error"].as_str().unwrap_or("")));
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(l.trim()) {
            Ok(mut v) if v.is_object() => {
                mask_fields(&mut v, &["cluster_id", "member_id", "raft_term"]);
                out.push_str(&format!("{v}\n"));
            }
            _ => out.push_str(&format!("{}\n", l.trim_end())),
        }
    }
    out
}

/// The script: (args, stdin), run in order on a fresh member of each server.
const SCRIPT: &[(&[&str], Option<&str>)] = &[
    (&["auth", "enable"], None),
    (&["user", "add", "root:pw"], None),
    (&["user", "add", "root:other"], None),
    (
        &["-w", "json", "user", "add", "alice", "--interactive=false"],
        Some("apw\n"),
    ),
    (&["user", "add", "nopw", "--no-password"], None),
    (&["user", "get", "root"], None),
    (&["user", "get", "nobody"], None),
    (&["user", "list"], None),
    (&["-w", "json", "user", "list"], None),
    (&["role", "add", "r1"], None),
    (&["role", "add", "r1"], None),
    (&["-w", "json", "role", "add", "r2"], None),
    (&["role", "list"], None),
    (&["role", "get", "r1"], None),
    (&["role", "get", "nope"], None),
    (&["role", "grant-permission", "r1", "read", "foo"], None),
    (
        &[
            "role",
            "grant-permission",
            "r1",
            "readwrite",
            "a/",
            "--prefix",
        ],
        None,
    ),
    (
        &["role", "grant-permission", "r1", "write", "k", "--from-key"],
        None,
    ),
    (&["role", "grant-permission", "r1", "write", "foo"], None),
    (&["role", "grant-permission", "r2", "read", "b", "c"], None),
    (&["role", "grant-permission", "nope", "read", "x"], None),
    (&["role", "get", "r1"], None),
    (&["-w", "json", "role", "get", "r1"], None),
    (&["role", "revoke-permission", "r2", "b", "c"], None),
    (&["role", "revoke-permission", "r2", "b", "c"], None),
    (&["role", "revoke-permission", "nope", "x"], None),
    (&["user", "grant-role", "alice", "r1"], None),
    (&["user", "grant-role", "alice", "r1"], None),
    (&["user", "grant-role", "alice", "r2"], None),
    (&["user", "grant-role", "alice", "nope"], None),
    (&["user", "grant-role", "nobody", "r1"], None),
    (&["user", "revoke-role", "alice", "r2"], None),
    (&["user", "revoke-role", "alice", "r2"], None),
    (&["user", "revoke-role", "nobody", "r1"], None),
    (&["user", "get", "alice"], None),
    (&["user", "get", "alice", "--detail"], None),
    (&["-w", "json", "user", "get", "alice"], None),
    (
        &["user", "passwd", "alice", "--interactive=false"],
        Some("apw2\n"),
    ),
    (
        &["user", "passwd", "nobody", "--interactive=false"],
        Some("x\n"),
    ),
    (&["put", "foo", "v0"], None),
    (&["put", "a/1", "v1"], None),
    (&["put", "b", "v2"], None),
    // The root user exists, without the root role: etcdctl adds the role and grants it.
    (&["auth", "enable"], None),
    (&["auth", "enable"], None),
    (&["role", "list"], None),
    (&["get", "foo"], None),
    (&["put", "foo", "x"], None),
    (&["user", "list"], None),
    (&["--user", "root:wrong", "get", "foo"], None),
    (&["--user", "nobody:x", "get", "foo"], None),
    (&["--user", "nopw:x", "get", "foo"], None),
    (&["--user", "root:pw", "user", "list"], None),
    (&["--user", "root:pw", "role", "list"], None),
    (&["--user", "root:pw", "user", "get", "root"], None),
    (&["--user", "root:pw", "-w", "json", "get", "foo"], None),
    (
        &["--user", "root:pw", "-w", "json", "put", "foo", "v3"],
        None,
    ),
    (&["--user", "alice:apw", "get", "foo"], None),
    (&["--user", "alice:apw2", "-w", "json", "get", "foo"], None),
    (&["--user", "alice:apw2", "put", "foo", "x"], None),
    (&["--user", "alice:apw2", "put", "a/2", "x"], None),
    (&["--user", "alice:apw2", "get", "a/", "--prefix"], None),
    (&["--user", "alice:apw2", "get", "a", "--prefix"], None),
    (&["--user", "alice:apw2", "put", "kz", "x"], None),
    (&["--user", "alice:apw2", "get", "kz"], None),
    (&["--user", "alice:apw2", "del", "a/2"], None),
    (&["--user", "alice:apw2", "del", "a/1", "--prev-kv"], None),
    (&["--user", "alice:apw2", "get", "b"], None),
    (
        &["--user", "alice:apw2", "txn"],
        Some("value(\"foo\") = \"v3\"\n\nput a/3 t\n\nput b t\n\n"),
    ),
    (
        &["--user", "alice:apw2", "txn"],
        Some("value(\"b\") = \"v2\"\n\nput a/3 t\n\n\n"),
    ),
    (
        &["--user", "alice:apw2", "-w", "json", "txn"],
        Some("value(\"foo\") = \"v3\"\n\nput a/3 t\nget foo\n\n\n"),
    ),
    (&["--user", "alice:apw2", "user", "list"], None),
    (&["--user", "alice:apw2", "user", "get", "alice"], None),
    (&["--user", "alice:apw2", "user", "get", "root"], None),
    (&["--user", "alice:apw2", "role", "get", "r1"], None),
    (&["--user", "alice:apw2", "role", "get", "r2"], None),
    (&["--user", "alice:apw2", "role", "add", "r3"], None),
    (&["--user", "alice:apw2", "auth", "disable"], None),
    (&["--user", "root:pw", "user", "delete", "root"], None),
    (
        &["--user", "root:pw", "user", "revoke-role", "root", "root"],
        None,
    ),
    (&["--user", "root:pw", "role", "delete", "root"], None),
    (&["--user", "root:pw", "role", "delete", "r1"], None),
    (&["--user", "root:pw", "user", "get", "alice"], None),
    (&["--user", "alice:apw2", "get", "foo"], None),
    (&["--user", "root:pw", "user", "delete", "alice"], None),
    (&["--user", "root:pw", "user", "delete", "alice"], None),
    (&["--user", "alice:apw2", "get", "foo"], None),
    (&["--user", "root:pw", "role", "delete", "nope"], None),
    (
        &["--user", "root:pw", "-w", "json", "auth", "disable"],
        None,
    ),
    (&["auth", "disable"], None),
    (&["-w", "json", "get", "foo"], None),
    (&["user", "delete", "root"], None),
    (&["role", "delete", "root"], None),
    (&["user", "list"], None),
    (&["role", "list"], None),
];

fn start(dir: &std::path::Path, bin: &str) -> Member {
    let d = dir.join(bin);
    std::fs::create_dir_all(&d).unwrap();
    let mut m = static_cluster(&d, 1).remove(0);
    if bin == "etcd" {
        m.start_binary("etcd");
    } else {
        m.start();
    }
    eventually(Duration::from_secs(20), "a member that answers v3", || {
        (etcdctl3(&m.addr(), &["get", "x"], None).0 == 0).then_some(())
    });
    m
}

#[test]
fn etcdctl_user_role_and_auth_commands_print_the_same_for_detcd_and_etcd() {
    if !require_bin("etcdctl", "Debian package etcd-client")
        || !require_bin("etcd", "Debian package etcd-server")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for bin in ["detcd", "etcd"] {
        let m = start(dir.path(), bin);
        let out: Vec<(i32, String)> = SCRIPT
            .iter()
            .map(|(args, stdin)| {
                let (code, out) = etcdctl3(&m.addr(), args, *stdin);
                (code, normalise(&out))
            })
            .collect();
        outs.push(out);
    }
    let mut diffs = Vec::new();
    for (i, (args, stdin)) in SCRIPT.iter().enumerate() {
        if outs[0][i] != outs[1][i] {
            diffs.push(format!(
                "etcdctl {} {:?}:\n  detcd ({}): {}\n  etcd  ({}): {}",
                args.join(" "),
                stdin.unwrap_or(""),
                outs[0][i].0,
                outs[0][i].1,
                outs[1][i].0,
                outs[1][i].1
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} commands differ:\n{}",
        diffs.len(),
        SCRIPT.len(),
        diffs.join("\n")
    );
    // Not vacuous: the script saw both answers and refusals.
    let all: String = outs[0].iter().map(|(_, o)| o.as_str()).collect();
    for want in [
        "etcdserver: permission denied",
        "etcdserver: user name is empty",
        "etcdserver: invalid auth management",
        "Authentication Enabled",
        "KV Read:",
    ] {
        assert!(all.contains(want), "the script never printed {want:?}");
    }
}

/// POST a JSON body to the v3 gateway with an optional `Authorization` token.
fn gw(addr: &str, path: &str, body: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
    let r = http_with(
        "POST",
        addr,
        path,
        &headers,
        Some(("application/json", body)),
        Duration::from_secs(10),
    )
    .unwrap();
    (r.status, serde_json::from_str(&r.body).unwrap_or_default())
}

#[test]
fn a_token_from_one_member_works_on_every_member_and_auth_survives_restarts() {
    if !require_bin("etcdctl", "Debian package etcd-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut members = static_cluster(dir.path(), 3);
    for m in members.iter_mut() {
        m.args
            .extend(["--snapshot-count".to_string(), "5".to_string()]);
        m.start();
    }
    let a = members[0].addr();
    eventually(Duration::from_secs(30), "a cluster that answers v3", || {
        (etcdctl3(&a, &["put", "k", "v"], None).0 == 0).then_some(())
    });
    for args in [
        &["user", "add", "root:pw"][..],
        &["user", "add", "u:upw"],
        &["role", "add", "r"],
        &["role", "grant-permission", "r", "read", "k"],
        &["user", "grant-role", "u", "r"],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        let (code, out) = etcdctl3(&a, args, None);
        assert_eq!(code, 0, "etcdctl {args:?}: {out}");
    }
    let (st, login) = gw(
        &a,
        "/v3/auth/authenticate",
        r#"{"name":"u","password":"upw"}"#,
        None,
    );
    assert_eq!(st, 200, "{login}");
    let token = login["token"].as_str().unwrap().to_string();
    for m in &members {
        let (st, r) = gw(&m.addr(), "/v3/kv/range", r#"{"key":"aw=="}"#, Some(&token));
        assert_eq!(
            (st, r["count"].as_str()),
            (200, Some("1")),
            "{}: {r}",
            m.addr()
        );
        let (st, r) = gw(
            &m.addr(),
            "/v3/kv/put",
            r#"{"key":"aw==","value":"eA=="}"#,
            Some(&token),
        );
        assert_eq!(
            (st, r["error"].as_str()),
            (403, Some("etcdserver: permission denied")),
            "{}: {r}",
            m.addr()
        );
    }
    // Enough writes for snapshots, then every member restarted: users, roles, permissions and
    // the enabled flag come back (tokens do not: they are in memory, as etcd's).
    for i in 0..12 {
        let (code, out) = etcdctl3(
            &a,
            &["--user", "root:pw", "put", &format!("s{i}"), "x"],
            None,
        );
        assert_eq!(code, 0, "{out}");
    }
    for m in members.iter_mut() {
        m.kill();
    }
    for m in members.iter_mut() {
        m.start();
    }
    let b = members[1].addr();
    eventually(Duration::from_secs(30), "the restarted cluster", || {
        (etcdctl3(&b, &["--user", "root:pw", "get", "k"], None).0 == 0).then_some(())
    });
    for m in &members {
        let (code, out) = etcdctl3(&m.addr(), &["get", "k"], None);
        assert!(code != 0 && out.contains("user name is empty"), "{out}");
        let (code, out) = etcdctl3(&m.addr(), &["--user", "u:upw", "get", "k"], None);
        assert_eq!((code, out.trim()), (0, "k\nv"), "{}", m.addr());
        let (_, out) = etcdctl3(&m.addr(), &["--user", "u:upw", "put", "k", "y"], None);
        assert!(out.contains("permission denied"), "{out}");
        let (_, out) = etcdctl3(&m.addr(), &["--user", "root:pw", "role", "get", "r"], None);
        assert!(out.contains("KV Read:\n\tk"), "{out}");
    }
    let (st, r) = gw(&b, "/v3/kv/range", r#"{"key":"aw=="}"#, Some(&token));
    assert_eq!(
        (st, r["error"].as_str()),
        (401, Some("etcdserver: invalid auth token")),
        "{r}"
    );
}

/// Gateway requests (path, body, whose token: "" none, "bad" a made-up one), in order.
const GATEWAY: &[(&str, &str, &str)] = &[
    ("/v3/kv/range", r#"{"key":"Zm9v"}"#, "bad"),
    (
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"pw"}"#,
        "",
    ),
    ("/v3/auth/enable", "{}", ""),
    (
        "/v3/auth/user/add",
        r#"{"name":"root","password":"pw"}"#,
        "",
    ),
    ("/v3/auth/user/add", r#"{"name":"","password":"pw"}"#, ""),
    ("/v3/auth/user/add", r#"{"name":"u","password":"upw"}"#, ""),
    (
        "/v3/auth/user/add",
        r#"{"name":"np","options":{"no_password":true}}"#,
        "",
    ),
    ("/v3/auth/enable", "{}", ""),
    (
        "/v3/auth/user/grant",
        r#"{"user":"root","role":"root"}"#,
        "",
    ),
    ("/v3/auth/role/add", r#"{"name":""}"#, ""),
    ("/v3/auth/role/add", r#"{"name":"r"}"#, ""),
    (
        "/v3/auth/role/grant",
        r#"{"name":"r","perm":{"permType":"READWRITE","key":"YQ==","range_end":"Yw=="}}"#,
        "",
    ),
    (
        "/v3/auth/role/grant",
        r#"{"name":"r","perm":{"key":"eg=="}}"#,
        "",
    ),
    ("/v3/auth/role/get", r#"{"role":"r"}"#, ""),
    ("/v3/auth/role/get", r#"{"role":"root"}"#, ""),
    ("/v3/auth/role/list", "{}", ""),
    ("/v3/auth/user/grant", r#"{"user":"u","role":"r"}"#, ""),
    ("/v3/auth/user/get", r#"{"name":"u"}"#, ""),
    ("/v3/auth/user/list", "{}", ""),
    ("/v3/auth/role/revoke", r#"{"role":"r","key":"eg=="}"#, ""),
    ("/v3/auth/role/revoke", r#"{"role":"r","key":"eg=="}"#, ""),
    ("/v3/auth/user/revoke", r#"{"name":"u","role":"nope"}"#, ""),
    (
        "/v3/auth/user/changepw",
        r#"{"name":"u","password":"upw2"}"#,
        "",
    ),
    ("/v3/auth/enable", "{}", ""),
    (
        "/v3/auth/authenticate",
        r#"{"name":"u","password":"upw"}"#,
        "",
    ),
    (
        "/v3/auth/authenticate",
        r#"{"name":"np","password":""}"#,
        "",
    ),
    (
        "/v3/auth/authenticate",
        r#"{"name":"u","password":"upw2"}"#,
        "",
    ),
    (
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"pw"}"#,
        "",
    ),
    // Alarm needs no permission, but a token it carries must be valid (etcd's raw auth
    // error, code Unknown).
    ("/v3/maintenance/alarm", r#"{"action":"GET"}"#, "bad"),
    ("/v3/maintenance/alarm", r#"{"action":"GET"}"#, "u"),
    // The password is checked before the request's own token.
    (
        "/v3/auth/authenticate",
        r#"{"name":"u","password":"wrong"}"#,
        "bad",
    ),
    ("/v3/kv/put", r#"{"key":"Yg==","value":"dg=="}"#, "u"),
    ("/v3/kv/put", r#"{"key":"eg==","value":"dg=="}"#, "u"),
    ("/v3/kv/range", r#"{"key":"YQ==","range_end":"Yw=="}"#, "u"),
    ("/v3/kv/range", r#"{"key":"YQ==","range_end":"ZA=="}"#, "u"),
    (
        "/v3/kv/deleterange",
        r#"{"key":"Yg==","prev_kv":true}"#,
        "u",
    ),
    ("/v3/auth/user/list", "{}", "u"),
    ("/v3/auth/user/get", r#"{"name":"u"}"#, "u"),
    ("/v3/auth/role/get", r#"{"role":"r"}"#, "u"),
    ("/v3/auth/role/get", r#"{"role":"root"}"#, "u"),
    ("/v3/auth/user/list", "{}", "root"),
    ("/v3/auth/user/delete", r#"{"name":"root"}"#, "root"),
    ("/v3/auth/role/delete", r#"{"role":"root"}"#, "root"),
    (
        "/v3/auth/user/revoke",
        r#"{"name":"root","role":"root"}"#,
        "root",
    ),
    ("/v3/lease/grant", r#"{"TTL":60,"ID":7}"#, "u"),
    (
        "/v3/kv/put",
        r#"{"key":"YQ==","value":"dg==","lease":7}"#,
        "root",
    ),
    ("/v3/lease/revoke", r#"{"ID":7}"#, "u"),
    ("/v3/kv/lease/revoke", r#"{"ID":7}"#, ""),
    (
        "/v3/auth/user/changepw",
        r#"{"name":"u","password":"upw3"}"#,
        "root",
    ),
    ("/v3/kv/range", r#"{"key":"YQ=="}"#, "u"),
    ("/v3/auth/disable", "{}", "u"),
    ("/v3/auth/disable", "{}", "root"),
    ("/v3/kv/range", r#"{"key":"YQ=="}"#, "root"),
    ("/v3/kv/range", r#"{"key":"YQ=="}"#, ""),
    (
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"pw"}"#,
        "",
    ),
    // Auth off: "not enabled" comes before the (now unknown) token.
    (
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"pw"}"#,
        "bad",
    ),
    ("/v3/auth/role/delete", r#"{"role":"r"}"#, ""),
    ("/v3/auth/user/get", r#"{"name":"u"}"#, ""),
    ("/v3/auth/user/delete", r#"{"name":"root"}"#, ""),
    ("/v3/auth/user/list", "{}", ""),
    ("/v3beta/auth/role/list", "{}", ""),
];

#[test]
fn the_auth_gateway_answers_as_etcd_does() {
    if !require_bin("etcd", "Debian package etcd-server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for bin in ["detcd", "etcd"] {
        let m = start(dir.path(), bin);
        let mut tokens = std::collections::HashMap::new();
        let mut out = Vec::new();
        for (path, body, who) in GATEWAY {
            let token = match *who {
                "" => None,
                "bad" => Some("bogus.1".to_string()),
                w => Some(tokens.get(w).cloned().unwrap_or_default()),
            };
            let (st, mut v) = gw(&m.addr(), path, body, token.as_deref());
            if let Some(t) = v["token"].as_str() {
                let user = serde_json::from_str::<serde_json::Value>(body).unwrap()["name"]
                    .as_str()
                    .unwrap()
                    .to_string();
                tokens.insert(user, t.to_string());
            }
            mask_fields(&mut v, &["cluster_id", "member_id", "raft_term", "token"]);
            out.push(format!("{st} {v}"));
        }
        outs.push(out);
    }
    let diffs: Vec<String> = GATEWAY
        .iter()
        .enumerate()
        .filter(|(i, _)| outs[0][*i] != outs[1][*i])
        .map(|(i, (p, b, w))| {
            format!(
                "{p} {b} as {w:?}:\n  detcd: {}\n  etcd:  {}",
                outs[0][i], outs[1][i]
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{} of {} requests differ:\n{}",
        diffs.len(),
        GATEWAY.len(),
        diffs.join("\n")
    );
    let all = outs[0].join("\n");
    for want in ["403 ", "401 ", "412 ", "\"perm\"", "\"users\""] {
        assert!(all.contains(want), "never saw {want:?}:\n{all}");
    }
}
