//! etcd 3.4's Cluster and Maintenance services on real detcd processes, driven by Debian's
//! `etcdctl` (API v3) side by side with Debian's etcd 3.4.23: member list/add/update/remove/
//! promote, endpoint status/health/hashkv, alarm list/disarm, defrag, snapshot save and
//! move-leader print the same (ids, ports, terms, indexes and sizes masked); HashKV is etcd's
//! own number for the same writes; the quota raises NOSPACE on every member, which survives a
//! restart and goes with compaction, defragmentation and a disarm; HashKV is equal on every
//! member after writes, a compaction and a restart.
//! Without `etcd` or `etcdctl` these fail under CI (`CI` set) and skip, saying so, elsewhere.

mod common;

use std::time::Duration;

use common::*;

fn etcdctl(endpoints: &str, args: &[&str]) -> (i32, String) {
    etcdctl3(endpoints, args, None)
}

fn endpoints(ms: &[Member]) -> String {
    ms.iter().map(|m| m.addr()).collect::<Vec<_>>().join(",")
}

fn both_installed() -> bool {
    require_bin("etcdctl", "Debian package etcd-client")
        && require_bin("etcd", "Debian package etcd-server")
}

/// What differs legitimately between two clusters: ids, ports, paths, terms, indexes, sizes,
/// timings. `names` maps each text to replace to what it stands for.
struct Masks {
    names: Vec<(String, String)>,
}

impl Masks {
    fn apply(&self, s: &str) -> String {
        let s = without_etcdctl_logs(s);
        // JSON: mask the id fields first (decimal ids replaced in the text would not be
        // JSON any more), then the texts, then sort members by what is left.
        if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(s.trim()) {
            mask_fields(
                &mut v,
                &[
                    "cluster_id",
                    "member_id",
                    "raft_term",
                    "ID",
                    "leader",
                    "dbSize",
                    "dbSizeInUse",
                    "raftIndex",
                    "raftTerm",
                    "raftAppliedIndex",
                    "took",
                    "memberID",
                ],
            );
            let text = self.replace(&v.to_string());
            let mut v: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
            if let Some(serde_json::Value::Array(ms)) = v.get_mut("members") {
                ms.sort_by_key(|m| m.to_string());
            }
            return v.to_string();
        }
        self.text(&s)
    }

    fn replace(&self, s: &str) -> String {
        let mut s = s.to_string();
        // Longest first, so that an id never eats part of another.
        let mut names = self.names.clone();
        names.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        for (k, v) in &names {
            if !k.is_empty() {
                s = s.replace(k.as_str(), v);
            }
        }
        s
    }

    fn text(&self, s: &str) -> String {
        let mut s = self.replace(s);
        // `took = 1.2ms` (endpoint health) varies.
        if let Some(i) = s.find("took = ") {
            let end = s[i..].find('\n').map_or(s.len(), |j| i + j);
            s.replace_range(i..end, "took = <t>");
        }
        // ETCD_INITIAL_CLUSTER lists members in id order: compare them sorted.
        if let Some(i) = s.find("ETCD_INITIAL_CLUSTER=\"") {
            let from = i + "ETCD_INITIAL_CLUSTER=\"".len();
            if let Some(j) = s[from..].find('"') {
                let mut parts: Vec<&str> = s[from..from + j].split(',').collect();
                parts.sort_unstable();
                let sorted = parts.join(",");
                s.replace_range(from..from + j, &sorted);
            }
        }
        // Text tables list members in id order: compare their lines sorted.
        let mut lines: Vec<&str> = s.trim().lines().collect();
        if lines
            .iter()
            .all(|l| l.contains(", started, ") || l.contains(", unstarted, "))
        {
            lines.sort_unstable();
        }
        lines.join("\n")
    }
}

/// A 3-member cluster of `bin` under `dir`, started, answering v3, and with every member
/// connected for etcd's 5 s (a member may only be added then).
fn cluster(dir: &std::path::Path, bin: &str, extra: &[&str]) -> Vec<Member> {
    let mut ms = static_cluster(dir, 3);
    for m in &mut ms {
        m.args.extend(extra.iter().map(|s| s.to_string()));
        if bin == "etcd" {
            m.start_binary("etcd");
        } else {
            m.start();
        }
    }
    let eps = endpoints(&ms);
    eventually(Duration::from_secs(30), "a cluster that answers v3", || {
        (etcdctl(&eps, &["put", "ready", "1"]).0 == 0).then_some(())
    });
    etcdctl(&eps, &["del", "ready"]);
    ms
}

/// The masks of a cluster: member ids (hex and decimal) by name, cluster id, ports.
fn masks_of(ms: &[Member], extra: &[(String, String)]) -> Masks {
    let (code, out) = etcdctl(&ms[0].addr(), &["-w", "json", "member", "list"]);
    assert_eq!(code, 0, "member list: {out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let mut names = Vec::new();
    let cid = v["header"]["cluster_id"].as_u64().unwrap();
    // etcdctl prints some ids with `%16x` (space-padded): mask the padding with the id.
    names.push((format!("{cid:>16x}"), "<cluster>".to_string()));
    names.push((format!("{cid:x}"), "<cluster>".to_string()));
    names.push((cid.to_string(), "<cluster>".to_string()));
    for m in v["members"].as_array().unwrap() {
        let id = m["ID"].as_u64().unwrap();
        let name = m["name"].as_str().unwrap().to_string();
        names.push((format!("{id:x}"), format!("<{name}>")));
        names.push((id.to_string(), format!("<{name}>")));
    }
    for (i, m) in ms.iter().enumerate() {
        names.push((format!(":{}", m.client), format!(":<c{i}>")));
        names.push((format!(":{}", m.peer), format!(":<p{i}>")));
    }
    names.extend(extra.iter().cloned());
    Masks { names }
}

/// Cluster and Maintenance commands whose output must be the same on both servers.
/// `{NP}`/`{NP2}`: free peer ports; `{NEW}`: the id of the member the script added;
/// `{ID0}`: the first member's id; `{SNAP}`: a snapshot path; `@all` first: every endpoint.
const SCRIPT: &[&[&str]] = &[
    &["member", "list"],
    &["-w", "json", "member", "list"],
    &["member", "promote", "1234"],
    &["member", "promote", "{ID0}"],
    &["member", "remove", "1234"],
    &["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"],
    &["member", "add", "newm", "--peer-urls=http://127.0.0.1:{NP}"],
    &["member", "list"],
    &["-w", "json", "member", "list"],
    &["member", "add", "dup", "--peer-urls=http://127.0.0.1:{NP}"],
    &[
        "member",
        "update",
        "{NEW}",
        "--peer-urls=http://127.0.0.1:{NP2}",
    ],
    &["-w", "json", "member", "list"],
    &["member", "remove", "{NEW}"],
    &["member", "remove", "{NEW}"],
    &["member", "list"],
    &["-w", "json", "endpoint", "status"],
    &["endpoint", "health"],
    &["-w", "json", "endpoint", "health"],
    &["alarm", "list"],
    &["alarm", "disarm"],
    &["put", "k", "v"],
    &["put", "k2", "v2"],
    &["del", "k"],
    &["put", "k", "v3"],
    &["put", "k3", "v4"],
    &["endpoint", "hashkv"],
    &["-w", "json", "endpoint", "hashkv"],
    &["endpoint", "hashkv", "--rev=3"],
    &["compaction", "4"],
    &["endpoint", "hashkv"],
    &["-w", "json", "endpoint", "hashkv", "--rev=5"],
    &["endpoint", "hashkv", "--rev=4"],
    &["endpoint", "hashkv", "--rev=3"],
    &["endpoint", "hashkv", "--rev=99"],
    &["del", "k", "--prefix"],
    // Physical: etcd removes compacted revisions from its backend in the background, and a
    // HashKV that runs before that, with no key left to keep, hashes them too.
    &["compaction", "--physical", "7"],
    &["-w", "json", "endpoint", "hashkv"],
    &["-w", "json", "endpoint", "status"],
    &["defrag"],
    &["snapshot", "save", "{SNAP}"],
    &["@all", "move-leader", "1234"],
];

fn run_script(ms: &[Member], dir: &std::path::Path) -> Vec<(i32, String)> {
    let (np, np2) = ports();
    let snap = dir.join("snap.db").display().to_string();
    let mut extra = vec![
        (format!(":{np}"), ":<np>".to_string()),
        (format!(":{np2}"), ":<np2>".to_string()),
        (snap.clone(), "<snap>".to_string()),
    ];
    let id0 = {
        let (_, out) = etcdctl(&ms[0].addr(), &["-w", "json", "member", "list"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let mut ids: Vec<(String, u64)> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["ID"].as_u64().unwrap(),
                )
            })
            .collect();
        ids.sort();
        format!("{:x}", ids[0].1)
    };
    let mut new_id = String::new();
    let mut outs = Vec::new();
    for args in SCRIPT {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("{NP}", &np.to_string())
                    .replace("{NP2}", &np2.to_string())
                    .replace("{NEW}", &new_id)
                    .replace("{ID0}", &id0)
                    .replace("{SNAP}", &snap)
            })
            .collect();
        let (eps, args) = match args.split_first() {
            Some((first, rest)) if first == "@all" => (endpoints(ms), rest.to_vec()),
            _ => (ms[0].addr(), args),
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = etcdctl(&eps, &argv);
        if argv.starts_with(&["member", "add"]) && code == 0 && new_id.is_empty() {
            new_id = out
                .split_whitespace()
                .nth(1)
                .expect("Member <id> added")
                .to_string();
            let n = u64::from_str_radix(&new_id, 16).unwrap();
            extra.push((format!("{n:>16x}"), "<new>".to_string()));
            extra.push((new_id.clone(), "<new>".to_string()));
            extra.push((
                u64::from_str_radix(&new_id, 16).unwrap().to_string(),
                "<new>".to_string(),
            ));
        }
        outs.push((code, out));
    }
    let masks = masks_of(ms, &extra);
    outs.into_iter()
        .map(|(code, out)| (code, masks.apply(&out)))
        .collect()
}

#[test]
fn etcdctl_cluster_and_maintenance_commands_print_the_same_for_detcd_and_etcd() {
    if !both_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for bin in ["detcd", "etcd"] {
        let d = dir.path().join(bin);
        std::fs::create_dir_all(&d).unwrap();
        let ms = cluster(&d, bin, &[]);
        // etcd adds a member only once every voter has been connected for 5 s.
        std::thread::sleep(Duration::from_secs(6));
        let mut out = run_script(&ms, &d);
        // MoveLeader asked of a follower (etcdctl always asks the leader; the gateway asks
        // whichever member it is given): etcd's "not leader".
        let status = |m: &Member| {
            http(
                "POST",
                &m.addr(),
                "/v3/maintenance/status",
                Some(("application/json", "{}")),
                Duration::from_secs(10),
            )
            .unwrap()
            .json()
        };
        let leader_id = status(&ms[0])["leader"].as_str().unwrap().to_string();
        let follower = ms
            .iter()
            .find(|m| status(m)["header"]["member_id"].as_str() != Some(leader_id.as_str()))
            .expect("a follower");
        let body = format!(r#"{{"targetID":"{leader_id}"}}"#);
        out.push((
            0,
            gateway_answer(
                follower,
                "POST",
                "/v3/maintenance/transfer-leadership",
                &body,
            ),
        ));
        outs.push(out);
        let snap = std::fs::metadata(d.join("snap.db")).expect("snapshot saved");
        assert_eq!(snap.len() % 512, 32, "{bin}: a snapshot ends in a sha256");
    }
    assert_eq!(outs[0].last(), outs[1].last(), "MoveLeader on a follower");
    assert!(
        outs[0].last().unwrap().1.contains("etcdserver: not leader"),
        "{:?}",
        outs[0].last()
    );
    let mut diffs = Vec::new();
    for (i, args) in SCRIPT.iter().enumerate() {
        if outs[0][i] != outs[1][i] {
            diffs.push(format!(
                "etcdctl {}:\n  detcd ({}): {}\n  etcd  ({}): {}",
                args.join(" "),
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

/// Put 20,000-byte values under `fill/` through `eps` until a put fails; that put's output.
fn fill(eps: &str) -> (i32, String) {
    let value = "x".repeat(20_000);
    for i in 0..2000 {
        let (code, out) = etcdctl(eps, &["put", &format!("fill/{i:05}"), &value]);
        if code != 0 {
            return (code, out);
        }
    }
    panic!("2000 puts of 20,000 bytes never exceeded the quota");
}

fn revision(eps: &str) -> i64 {
    let (code, out) = etcdctl(eps, &["-w", "json", "get", "nothing"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

/// What a quota run prints: the failing put, then the alarm's effects, then the way out.
fn quota_script(ms: &[Member]) -> Vec<(i32, String)> {
    let eps = ms[0].addr();
    let mut outs = vec![fill(&eps)];
    for args in [
        &["alarm", "list"][..],
        &["put", "x", "y"],
        &["txn"],
        &["lease", "grant", "100"],
        &["get", "x"],
        &["endpoint", "health"],
        &["-w", "json", "endpoint", "status"],
    ] {
        outs.push(etcdctl(&eps, args));
    }
    // Only the alarms of the status: sizes, indexes and the revision depend on how many
    // puts fitted.
    let (code, status) = outs.pop().expect("status");
    let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap_or_default();
    outs.push((code, v[0]["Status"]["errors"].to_string()));
    // The way out: delete, compact, defragment, disarm.
    let (code, out) = etcdctl(&eps, &["del", "fill/", "--prefix"]);
    outs.push((
        code,
        format!(
            "deleted some: {}",
            out.trim().parse::<u64>().unwrap_or(0) > 0
        ),
    ));
    let rev = revision(&eps);
    let (code, out) = etcdctl(&eps, &["compaction", &rev.to_string()]);
    outs.push((code, out.replace(&rev.to_string(), "<rev>")));
    outs.push(etcdctl(&eps, &["defrag"]));
    outs.push(etcdctl(&eps, &["put", "x", "y"]));
    outs.push(etcdctl(&eps, &["alarm", "disarm"]));
    outs.push(etcdctl(&eps, &["alarm", "list"]));
    outs.push(etcdctl(&eps, &["put", "x", "y"]));
    outs.push(etcdctl(&eps, &["endpoint", "health"]));
    let masks = masks_of(ms, &[]);
    outs.into_iter()
        .map(|(code, out)| {
            // The failing put's key differs (how many fitted).
            let out = out
                .lines()
                .map(|l| {
                    if l.starts_with("Error:") {
                        l.to_string()
                    } else {
                        l.split("fill/").next().unwrap_or(l).to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            (code, masks.apply(&out))
        })
        .collect()
}

#[test]
fn the_quota_raises_nospace_and_writes_fail_until_compaction_defrag_and_disarm_as_in_etcd() {
    if !both_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for bin in ["detcd", "etcd"] {
        let d = dir.path().join(bin);
        std::fs::create_dir_all(&d).unwrap();
        let mut m = static_cluster(&d, 1).remove(0);
        m.args
            .extend(["--quota-backend-bytes".to_string(), "4000000".to_string()]);
        if bin == "etcd" {
            m.start_binary("etcd");
        } else {
            m.start();
        }
        eventually(Duration::from_secs(20), "a member that answers v3", || {
            (etcdctl(&m.addr(), &["get", "x"]).0 == 0).then_some(())
        });
        outs.push(quota_script(std::slice::from_ref(&m)));
    }
    let mut diffs = Vec::new();
    for (i, (d, e)) in outs[0].iter().zip(&outs[1]).enumerate() {
        if d != e {
            diffs.push(format!(
                "step {i}:\n  detcd ({}): {}\n  etcd  ({}): {}",
                d.0, d.1, e.0, e.1
            ));
        }
    }
    assert_eq!(outs[0].len(), outs[1].len());
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    // The failing put was etcd's error, and the alarm was listed.
    assert!(
        outs[0][0].1.contains("database space exceeded"),
        "{:?}",
        outs[0][0]
    );
    assert!(outs[0][1].1.contains("alarm:NOSPACE"), "{:?}", outs[0][1]);
}

#[test]
fn nospace_reaches_every_member_and_survives_a_restart_of_the_cluster() {
    if !require_bin("etcdctl", "Debian package etcd-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ms = cluster(dir.path(), "detcd", &["--quota-backend-bytes", "4000000"]);
    let (code, out) = fill(&ms[0].addr());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("etcdserver: mvcc: database space exceeded"),
        "{out}"
    );
    for m in &ms {
        let (code, out) = etcdctl(&m.addr(), &["alarm", "list"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("alarm:NOSPACE"), "{}: {out}", m.name);
        // Every member refuses writes, whatever its own file's size.
        let (code, out) = etcdctl(&m.addr(), &["put", "small", "v"]);
        assert!(
            code != 0 && out.contains("database space exceeded"),
            "{out}"
        );
    }
    for m in &mut ms {
        m.kill();
    }
    for m in &mut ms {
        m.start();
    }
    let eps = endpoints(&ms);
    let listed = eventually(
        Duration::from_secs(30),
        "alarm list after a restart",
        || {
            let (code, out) = etcdctl(&eps, &["alarm", "list"]);
            (code == 0).then_some(out)
        },
    );
    assert!(listed.contains("alarm:NOSPACE"), "{listed}");
    let (code, out) = etcdctl(&eps, &["put", "small", "v"]);
    assert!(
        code != 0 && out.contains("database space exceeded"),
        "{out}"
    );
    // The way out, then writes work on every member.
    assert_eq!(etcdctl(&eps, &["del", "fill/", "--prefix"]).0, 0);
    let rev = revision(&eps);
    assert_eq!(etcdctl(&eps, &["compaction", &rev.to_string()]).0, 0);
    for m in &ms {
        let (code, out) = etcdctl(&m.addr(), &["defrag"]);
        assert_eq!(code, 0, "{out}");
    }
    let (code, out) = etcdctl(&eps, &["alarm", "disarm"]);
    assert_eq!(code, 0, "{out}");
    for m in &ms {
        let (code, out) = etcdctl(&m.addr(), &["put", "small", "v"]);
        assert_eq!(code, 0, "{}: {out}", m.name);
    }
}

/// Each member's HashKV at `rev`, asked of that member alone.
fn hashes(ms: &[Member], rev: i64) -> Vec<(u64, i64)> {
    ms.iter()
        .map(|m| {
            let (code, out) = etcdctl(
                &m.addr(),
                &["-w", "json", "endpoint", "hashkv", &format!("--rev={rev}")],
            );
            assert_eq!(code, 0, "{}: {out}", m.name);
            let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
            let h = &v[0]["HashKV"];
            (
                h["hash"].as_u64().unwrap(),
                h["compact_revision"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn hashkv_is_equal_on_every_member_after_writes_a_compaction_and_a_restart() {
    if !require_bin("etcdctl", "Debian package etcd-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ms = cluster(dir.path(), "detcd", &["--snapshot-count", "25"]);
    let eps = endpoints(&ms);
    for i in 0..40 {
        assert_eq!(
            etcdctl(&eps, &["put", &format!("k{}", i % 13), &i.to_string()]).0,
            0
        );
        if i % 7 == 3 {
            assert_eq!(etcdctl(&eps, &["del", &format!("k{}", i % 5)]).0, 0);
        }
    }
    let compacted = revision(&eps) - 10;
    assert_eq!(etcdctl(&eps, &["compaction", &compacted.to_string()]).0, 0);
    // A member goes down; the others write on (past a snapshot), then it comes back.
    ms[2].kill();
    let live = endpoints(&ms[..2]);
    for i in 0..40 {
        assert_eq!(etcdctl(&live, &["put", &format!("k{}", i % 11), "w"]).0, 0);
        if i % 9 == 0 {
            assert_eq!(etcdctl(&live, &["del", &format!("k{}", i % 3)]).0, 0);
        }
    }
    let rev = revision(&live);
    ms[2].start();
    let eps = endpoints(&ms);
    eventually(
        Duration::from_secs(30),
        "the restarted member at the revision",
        || {
            let (code, out) = etcdctl(
                &ms[2].addr(),
                &["get", "nothing", "-w", "json", "--consistency=s"],
            );
            let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
            (code == 0 && v["header"]["revision"].as_i64()? >= rev).then_some(())
        },
    );
    let hs = hashes(&ms, rev);
    assert!(
        hs.iter().all(|h| *h == hs[0]),
        "HashKV at {rev} differs: {hs:?}"
    );
    assert_eq!(hs[0].1, compacted, "{hs:?}");
    // Leadership moves where it is asked to (etcdctl finds the leader among the endpoints).
    let leader = leader_of(&ms).expect("a leader");
    let target = (leader + 1) % 3;
    let (_, out) = etcdctl(&ms[target].addr(), &["-w", "json", "endpoint", "status"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let target_id = v[0]["Status"]["header"]["member_id"].as_u64().unwrap();
    let (code, out) = etcdctl(&eps, &["move-leader", &format!("{target_id:x}")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Leadership transferred"), "{out}");
    assert_eq!(leader_of(&ms), Some(target));
}

/// Gateway requests (method, path, body) whose answers must be the same on both servers.
/// `{P0}`: the member's own peer port; `{ID0}`: its id in decimal.
const GATEWAY: &[(&str, &str, &str)] = &[
    ("POST", "/v3/cluster/member/list", "{}"),
    ("POST", "/v3beta/cluster/member/list", ""),
    ("POST", "/v3/cluster/member/promote", "{}"),
    ("POST", "/v3/cluster/member/promote", r#"{"ID":"{ID0}"}"#),
    ("POST", "/v3/cluster/member/remove", r#"{"ID":"1234"}"#),
    (
        "POST",
        "/v3/cluster/member/update",
        r#"{"ID":"1234","peerURLs":["http://127.0.0.1:1"]}"#,
    ),
    ("POST", "/v3/cluster/member/add", r#"{"peerURLs":["bad"]}"#),
    (
        "POST",
        "/v3/cluster/member/add",
        r#"{"peerURLs":["http://127.0.0.1:{P0}"]}"#,
    ),
    ("POST", "/v3/cluster/member/add", r#"{"peerURLs":"x"}"#),
    ("POST", "/v3/maintenance/status", "{}"),
    ("GET", "/v3/maintenance/status", ""),
    ("POST", "/v3/maintenance/alarm", "{}"),
    (
        "POST",
        "/v3/maintenance/alarm",
        r#"{"action":"GET","alarm":"NOSPACE"}"#,
    ),
    (
        "POST",
        "/v3/maintenance/alarm",
        r#"{"action":"DEACTIVATE","memberID":"5"}"#,
    ),
    ("POST", "/v3/kv/put", r#"{"key":"YQ==","value":"Yg=="}"#),
    ("POST", "/v3/maintenance/hash", r#"{"revision":"99"}"#),
    ("POST", "/v3/maintenance/hashkv", "{}"),
    ("POST", "/v3/maintenance/defragment", "{}"),
    ("POST", "/v3/maintenance/transfer-leadership", "{}"),
    (
        "POST",
        "/v3/maintenance/transfer-leadership",
        r#"{"targetID":"{ID0}"}"#,
    ),
    ("POST", "/v3/maintenance/status", "{}"),
];

/// A gateway answer with what differs legitimately masked: status, content type, body.
fn gateway_answer(m: &Member, method: &str, path: &str, body: &str) -> String {
    let r = http(
        method,
        &m.addr(),
        path,
        (!body.is_empty()).then_some(("application/json", body)),
        Duration::from_secs(10),
    )
    .unwrap();
    let ct = r.header("Content-Type").unwrap_or("").to_string();
    let body = match serde_json::from_str::<serde_json::Value>(r.body.trim()) {
        Ok(mut v) => {
            mask_fields(
                &mut v,
                &[
                    "cluster_id",
                    "member_id",
                    "raft_term",
                    "ID",
                    "leader",
                    "dbSize",
                    "dbSizeInUse",
                    "raftIndex",
                    "raftTerm",
                    "raftAppliedIndex",
                    "hash",
                ],
            );
            v.to_string()
                .replace(&m.client.to_string(), "<c0>")
                .replace(&m.peer.to_string(), "<p0>")
        }
        Err(_) => r.body.clone(),
    };
    format!("{} {ct} {body}", r.status)
}

/// A snapshot through the gateway: `{"result":...}` lines whose blobs make a file that
/// `etcdctl snapshot save` would accept (size % 512 == 32).
fn gateway_snapshot_size(m: &Member) -> usize {
    use base64::Engine;
    let r = http(
        "POST",
        &m.addr(),
        "/v3/maintenance/snapshot",
        Some(("application/json", "{}")),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let mut size = 0;
    for line in r.body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let blob = v["result"]["blob"].as_str().unwrap_or("");
        size += base64::engine::general_purpose::STANDARD
            .decode(blob)
            .unwrap()
            .len();
    }
    size
}

#[test]
fn the_cluster_and_maintenance_gateway_answers_as_etcds() {
    if !require_bin("etcd", "Debian package etcd-server") {
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
        let list = eventually(Duration::from_secs(20), "a member that answers v3", || {
            let r = http(
                "POST",
                &m.addr(),
                "/v3/cluster/member/list",
                Some(("application/json", "{}")),
                Duration::from_secs(5),
            )
            .ok()?;
            (r.status == 200).then(|| r.json())
        });
        let id0 = list["members"][0]["ID"].as_str().unwrap().to_string();
        let mut out = Vec::new();
        for (method, path, body) in GATEWAY {
            let body = body
                .replace("{ID0}", &id0)
                .replace("{P0}", &m.peer.to_string());
            out.push(gateway_answer(&m, method, path, &body));
        }
        let size = gateway_snapshot_size(&m);
        assert_eq!(size % 512, 32, "{bin}: snapshot of {size} bytes");
        outs.push(out);
    }
    let diffs: Vec<String> = GATEWAY
        .iter()
        .enumerate()
        .filter(|(i, _)| outs[0][*i] != outs[1][*i])
        .map(|(i, (m, p, b))| {
            format!(
                "{m} {p} {b}:\n  detcd: {}\n  etcd:  {}",
                outs[0][i], outs[1][i]
            )
        })
        .collect();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// Every key with its revisions, and the store's revision, as `etcdctl get "" --prefix`
/// prints them in JSON (ids and terms masked).
fn keyspace(eps: &str) -> String {
    let (code, out) = etcdctl(eps, &["-w", "json", "get", "", "--prefix"]);
    assert_eq!(code, 0, "{out}");
    let mut v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    mask_fields(&mut v, &["cluster_id", "member_id", "raft_term"]);
    v.to_string()
}

#[test]
fn a_new_cluster_restored_from_a_saved_snapshot_has_the_keyspace_and_its_hashkv() {
    if !require_bin("etcdctl", "Debian package etcd-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    let mut a = static_cluster(&a_dir, 1).remove(0);
    a.start();
    eventually(Duration::from_secs(20), "a member that answers v3", || {
        (etcdctl(&a.addr(), &["get", "x"]).0 == 0).then_some(())
    });
    for i in 0..30 {
        assert_eq!(
            etcdctl(&a.addr(), &["put", &format!("k{}", i % 7), &i.to_string()]).0,
            0
        );
    }
    assert_eq!(etcdctl(&a.addr(), &["del", "k3"]).0, 0);
    assert_eq!(etcdctl(&a.addr(), &["compaction", "20"]).0, 0);
    let snap = dir.path().join("a.db").display().to_string();
    let (code, out) = etcdctl(&a.addr(), &["snapshot", "save", &snap]);
    assert_eq!(code, 0, "{out}");
    let want = keyspace(&a.addr());
    let want_hash = hashes(std::slice::from_ref(&a), revision(&a.addr()));
    a.kill();
    // A new 3-member cluster, each member given the file.
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b = cluster(
        &b_dir,
        "detcd",
        &["--experimental-restore-v3-snapshot", &snap],
    );
    // `cluster` wrote (and deleted) a key: the revision is 2 past the snapshot's.
    let rev = revision(&b[0].addr()) - 2;
    assert_eq!(hashes(&b, rev), vec![want_hash[0]; 3]);
    for m in &b {
        let got = keyspace(&m.addr());
        let got = got.replace(
            &format!("\"revision\":{}", rev + 2),
            &format!("\"revision\":{rev}"),
        );
        assert_eq!(got, want, "{}", m.name);
    }
    // A damaged file is refused at start.
    let bad = dir.path().join("bad.db");
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&bad, bytes).unwrap();
    let c_dir = dir.path().join("c");
    std::fs::create_dir_all(&c_dir).unwrap();
    let mut c = static_cluster(&c_dir, 1).remove(0);
    c.args.extend([
        "--experimental-restore-v3-snapshot".to_string(),
        bad.display().to_string(),
    ]);
    c.start();
    let status = c.child.as_mut().unwrap().wait().unwrap();
    assert!(!status.success());
    assert!(c.logs().contains("sha256 mismatch"), "{}", c.logs());
}

/// A single member asked to remove itself: etcd's strict reconfiguration check refuses (no
/// started voter would be left), with its message and code; it is not proposed.
#[test]
fn a_lone_member_may_not_remove_itself_as_in_etcd() {
    if !both_installed() {
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
            (etcdctl(&m.addr(), &["get", "x"]).0 == 0).then_some(())
        });
        let (_, list) = etcdctl(&m.addr(), &["-w", "json", "member", "list"]);
        let v: serde_json::Value = serde_json::from_str(list.trim()).unwrap();
        let id = format!("{:x}", v["members"][0]["ID"].as_u64().unwrap());
        let (code, out) = etcdctl(&m.addr(), &["member", "remove", &id]);
        let (_, after) = etcdctl(&m.addr(), &["member", "list"]);
        outs.push((
            code,
            without_etcdctl_logs(&out).replace(&id, "<id>"),
            after.lines().count(),
        ));
    }
    assert!(
        outs[1].1.contains("not enough started members"),
        "etcd: {:?}",
        outs[1]
    );
    assert_eq!(outs[0], outs[1]);
}
