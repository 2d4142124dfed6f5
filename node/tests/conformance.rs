//! The etcd 3.4.23 conformance corpus (conformance/ at the top of the repository): its runner
//! replays each section (`keys` and `auth` against a fresh single member, `members` against
//! a 3-member cluster) against detcd, and its `diff` against etcd's recording must find no
//! difference. Without python3 it fails under CI (`CI` set) and skips, saying so, elsewhere.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Replay one corpus section against `base` and diff it with etcd 3.4.23's recording.
fn run_section(corpus: &Path, dir: &Path, base: &str, section: &str) {
    let ours = dir.join(format!("{section}.jsonl"));
    let run = Command::new("python3")
        .arg(corpus.join("v2corpus.py"))
        .args(["run", "--base", base, "--sections", section, "--out"])
        .arg(&ours)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "runner failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let theirs = dir.join(format!("etcd-{section}.jsonl"));
    let file = if section == "auth" {
        "etcd-3.4.23-auth.jsonl"
    } else {
        "etcd-3.4.23.jsonl"
    };
    let recording = std::fs::read_to_string(corpus.join(file)).unwrap();
    let tag = format!("\"section\": \"{section}\"");
    let lines: String = recording
        .lines()
        .filter(|l| l.contains(&tag))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&theirs, lines).unwrap();
    let diff = Command::new("python3")
        .arg(corpus.join("v2corpus.py"))
        .arg("diff")
        .arg(&theirs)
        .arg(&ours)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&diff.stdout);
    println!("{section}: {}", out.lines().last().unwrap_or(""));
    assert!(
        diff.status.success(),
        "differences from etcd 3.4.23:\n{out}"
    );
}

/// A fresh single member, used as soon as it first reports healthy, as the recordings used
/// etcd (no waiting for an index: etcd is at index 3 by then, and so must detcd be).
fn fresh_member(dir: &Path) -> Member {
    let mut m = static_cluster(dir, 1).remove(0);
    m.start();
    eventually(
        Duration::from_secs(20),
        "the member to report healthy",
        || get(&m.addr(), "/health").ok().filter(|r| r.status == 200),
    );
    m
}

#[test]
fn auth_section_matches_etcd_3_4() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance");
    if !require_bin("python3", "Debian package python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = fresh_member(dir.path());
    run_section(&corpus, dir.path(), &format!("http://{}", m.addr()), "auth");
}

#[test]
fn keys_section_matches_etcd_3_4() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance");
    if !require_bin("python3", "Debian package python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = fresh_member(dir.path());
    run_section(&corpus, dir.path(), &format!("http://{}", m.addr()), "keys");
}

#[test]
fn members_section_matches_etcd_3_4() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance");
    if !require_bin("python3", "Debian package python3") {
        return;
    }
    // The recording's names and ports (member lists are compared): infra0 2379/2380,
    // infra1 22379/22380, infra2 32379/32380.
    let dir = tempfile::tempdir().unwrap();
    let ports = [(2379u16, 2380u16), (22379, 22380), (32379, 32380)];
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("infra{i}=http://127.0.0.1:{p}"))
        .collect();
    let mut members: Vec<Member> = ports
        .iter()
        .enumerate()
        .map(|(i, (c, p))| {
            member(
                dir.path(),
                &format!("infra{i}"),
                *c,
                *p,
                &initial.join(","),
                "new",
            )
        })
        .collect();
    for m in members.iter_mut() {
        m.start();
    }
    // Every member published, and connected long enough for etcd's reconfiguration check.
    eventually(Duration::from_secs(30), "three started members", || {
        let r = get("127.0.0.1:2379", "/v2/members").ok()?;
        (r.body.matches("\"clientURLs\":[\"http").count() == 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(6));
    run_section(&corpus, dir.path(), "http://127.0.0.1:2379", "members");
}

/// The v3 corpus (`etcd-3.4.23-v3.jsonl`: gRPC through etcdctl and the JSON gateway, KV,
/// leases and auth) against a fresh single member, diffed with etcd's recording.
#[test]
fn v3_corpus_matches_etcd_3_4() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance");
    if !require_bin("python3", "Debian package python3")
        || !require_bin("etcdctl", "Debian package etcd-client")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = fresh_member(dir.path());
    let ours = dir.path().join("v3.jsonl");
    let run = Command::new("python3")
        .arg(corpus.join("v3corpus.py"))
        .args(["run", "--endpoints", &m.addr()])
        .arg("--out")
        .arg(&ours)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "runner failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let theirs = corpus.join("etcd-3.4.23-v3.jsonl");
    let diff = Command::new("python3")
        .arg(corpus.join("v3corpus.py"))
        .arg("diff")
        .arg(&theirs)
        .arg(&ours)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&diff.stdout);
    println!("v3: {}", out.lines().last().unwrap_or(""));
    assert!(
        diff.status.success(),
        "differences from etcd 3.4.23:\n{out}"
    );
}
