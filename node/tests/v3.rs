//! etcd's v3 API on real detcd processes, driven by Debian's `etcdctl` (API v3, gRPC): the
//! same commands print the same on detcd and on etcd 3.4; a cluster killed with `kill -9`
//! restarts with every acknowledged v3 write; a member added late catches up by snapshot.
//! Without `etcd` or `etcdctl` these fail under CI (`CI` set) and skip, saying so, elsewhere.

mod common;

use std::time::Duration;

use common::*;

/// `etcdctl` (API v3) against `endpoints`; (exit status, stdout + stderr).
fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    etcdctl3(endpoints, args, stdin)
}

/// Mask what legitimately differs between two servers: cluster and member ids, the Raft term,
/// etcdctl's log lines.
fn normalise(s: &str) -> String {
    let s = without_etcdctl_logs(s);
    let mut v: serde_json::Value = match serde_json::from_str(s.trim()) {
        Ok(v) => v,
        // Not JSON (an error line, a plain `OK`): compare as printed.
        Err(_) => return s.trim().to_string(),
    };
    mask_fields(&mut v, &["cluster_id", "member_id", "raft_term"]);
    v.to_string()
}

/// etcdctl commands (args, stdin) whose output must be the same on both servers. `-w json`
/// shows every field of the responses, revisions included.
const SCRIPT: &[(&[&str], Option<&str>)] = &[
    (&["-w", "json", "get", "foo"], None),
    (&["put", "foo", "bar"], None),
    (&["-w", "json", "get", "foo"], None),
    (&["-w", "json", "put", "foo", "baz", "--prev-kv"], None),
    (&["-w", "json", "put", "foo2", "x"], None),
    (&["-w", "json", "put", "fop", "y"], None),
    (&["-w", "json", "get", "foo", "--prefix"], None),
    (&["-w", "json", "get", "foo", "--from-key"], None),
    (
        &["-w", "json", "get", "foo", "--prefix", "--limit", "1"],
        None,
    ),
    (
        &[
            "-w",
            "json",
            "get",
            "f",
            "--prefix",
            "--sort-by",
            "VALUE",
            "--order",
            "DESCEND",
        ],
        None,
    ),
    (&["-w", "json", "get", "f", "--prefix", "--keys-only"], None),
    (
        &["-w", "json", "get", "f", "--prefix", "--count-only"],
        None,
    ),
    (&["-w", "json", "get", "foo", "--rev", "2"], None),
    (&["-w", "json", "get", "foo", "--consistency", "s"], None),
    (&["get", "foo", "--rev", "99"], None),
    (&["-w", "json", "put", "foo", "--ignore-value"], None),
    (&["put", "nokey", "--ignore-value"], None),
    (&["put", "foo", "v", "--lease", "1234"], None),
    (&["-w", "json", "del", "nothing"], None),
    (&["-w", "json", "del", "fop", "--prev-kv"], None),
    (
        &["-w", "json", "txn"],
        Some("mod(\"foo\") > \"0\"\n\nput foo txn1\nget foo2\n\nput never x\n\n"),
    ),
    (
        &["-w", "json", "txn"],
        Some("value(\"foo\") = \"nope\"\n\nput never x\n\nget foo\n\n"),
    ),
    (
        &["-w", "json", "txn"],
        Some("version(\"missing\") = \"0\"\ncreate(\"foo\") > \"1\"\n\nget missing\n\n\n"),
    ),
    (&["-w", "json", "compaction", "3"], None),
    (&["compaction", "3"], None),
    (&["compaction", "99"], None),
    (&["get", "foo", "--rev", "2"], None),
    (&["-w", "json", "get", "foo", "--rev", "3"], None),
    (&["-w", "json", "get", "", "--from-key"], None),
];

fn run_script(addr: &str) -> Vec<(i32, String)> {
    SCRIPT
        .iter()
        .map(|(args, stdin)| {
            let (code, out) = etcdctl(addr, args, *stdin);
            (code, normalise(&out))
        })
        .collect()
}

#[test]
fn etcdctl_v3_prints_the_same_for_detcd_and_etcd() {
    if !require_bin("etcdctl", "Debian package etcd-client")
        || !require_bin("etcd", "Debian package etcd-server")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for bin in ["detcd", "etcd"] {
        let d = dir.path().join(bin);
        std::fs::create_dir_all(&d).unwrap();
        let mut m = static_cluster(&d, 1).remove(0);
        if bin == "etcd" {
            m.start_binary("etcd");
        } else {
            m.start();
        }
        eventually(Duration::from_secs(20), "a member that answers v3", || {
            (etcdctl(&m.addr(), &["get", "x"], None).0 == 0).then_some(())
        });
        outs.push(run_script(&m.addr()));
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
}

/// Flags that make a member snapshot (and compact its log) every few entries.
fn snapshot_often(m: &mut Member) {
    m.args
        .extend(["--snapshot-count".to_string(), "25".to_string()]);
}

fn endpoints(ms: &[Member]) -> String {
    ms.iter().map(|m| m.addr()).collect::<Vec<_>>().join(",")
}

/// (key, value, version) triples.
type Keys = Vec<(String, String, i64)>;

/// The keys under `k/` as `member` holds them, read locally (serializable): (key, value,
/// version) triples and the header's revision.
fn local_keys(member: &Member) -> Option<(Keys, i64)> {
    let (code, out) = etcdctl(
        &member.addr(),
        &["-w", "json", "get", "k/", "--prefix", "--consistency", "s"],
        None,
    );
    if code != 0 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
    let b64 = |s: &serde_json::Value| {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(s.as_str().unwrap_or(""))
                .unwrap_or_default(),
        )
        .unwrap_or_default()
    };
    let kvs = v["kvs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    (
                        b64(&kv["key"]),
                        b64(&kv["value"]),
                        kv["version"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some((kvs, v["header"]["revision"].as_i64()?))
}

/// Write `n` keys `k/000`.. through the cluster, each acknowledged, some twice.
fn write_keys(ms: &[Member], n: usize) -> Vec<(String, String, i64)> {
    let eps = endpoints(ms);
    let mut expect = Vec::new();
    for i in 0..n {
        let key = format!("k/{i:03}");
        let (code, out) = etcdctl(&eps, &["put", &key, &format!("v{i}")], None);
        assert_eq!((code, out.trim()), (0, "OK"), "put {key}");
        let version = if i % 3 == 0 {
            let (code, out) = etcdctl(&eps, &["put", &key, &format!("w{i}")], None);
            assert_eq!((code, out.trim()), (0, "OK"), "second put {key}");
            2
        } else {
            1
        };
        let value = if version == 2 {
            format!("w{i}")
        } else {
            format!("v{i}")
        };
        expect.push((key, value, version));
    }
    expect
}

#[test]
fn a_cluster_killed_with_sigkill_restarts_with_every_acknowledged_v3_write() {
    if !require_bin("etcdctl", "Debian package etcd-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ms = static_cluster(dir.path(), 3);
    for m in ms.iter_mut() {
        snapshot_often(m);
        m.start();
    }
    let eps = endpoints(&ms);
    eventually(Duration::from_secs(30), "a cluster that answers v3", || {
        (etcdctl(&eps, &["put", "ready", "1"], None).0 == 0).then_some(())
    });
    let expect = write_keys(&ms, 120);
    // No grace period: the last writes were acknowledged a moment ago.
    for m in ms.iter_mut() {
        m.kill();
    }
    for m in ms.iter_mut() {
        m.start();
    }
    for m in &ms {
        let (kvs, _) = eventually(Duration::from_secs(30), "a restarted member's keys", || {
            local_keys(m).filter(|(kvs, _)| kvs.len() >= expect.len())
        });
        assert_eq!(kvs, expect, "member {} after kill -9 and restart", m.name);
    }
    // The restarted cluster still writes on top of the recovered revision.
    let (code, out) = etcdctl(&eps, &["-w", "json", "put", "k/after", "x"], None);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_member_added_late_catches_up_by_snapshot() {
    if !require_bin("etcdctl", "Debian package etcd-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ms = static_cluster(dir.path(), 3);
    for m in ms.iter_mut() {
        snapshot_often(m);
        m.start();
    }
    let eps = endpoints(&ms);
    eventually(Duration::from_secs(30), "a cluster that answers v3", || {
        (etcdctl(&eps, &["put", "ready", "1"], None).0 == 0).then_some(())
    });
    let expect = write_keys(&ms, 100);
    // Add a fourth member through the v2 members API, then start it empty.
    let (client, peer) = ports();
    let initial: Vec<String> = ms
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
        .chain([format!("infra3=http://127.0.0.1:{peer}")])
        .collect();
    let r = eventually(Duration::from_secs(30), "the member add", || {
        let r = http(
            "POST",
            &ms[0].addr(),
            "/v2/members",
            Some((
                "application/json",
                &format!("{{\"peerURLs\":[\"http://127.0.0.1:{peer}\"]}}"),
            )),
            Duration::from_secs(5),
        )
        .ok()?;
        (r.status == 201).then_some(r)
    });
    assert_eq!(r.status, 201);
    let mut late = member(
        dir.path(),
        "infra3",
        client,
        peer,
        &initial.join(","),
        "existing",
    );
    late.start();
    let (kvs, rev) = eventually(Duration::from_secs(30), "the late member's keys", || {
        local_keys(&late).filter(|(kvs, _)| kvs.len() >= expect.len())
    });
    assert_eq!(kvs, expect, "the late member's keyspace");
    let (_, rev0) = local_keys(&ms[0]).expect("an old member answers");
    assert_eq!(
        rev, rev0,
        "the same revision on the late member and an old one"
    );
    assert!(
        late.logs().contains("installed snapshot"),
        "the late member caught up by snapshot:\n{}",
        late.logs()
    );
}
