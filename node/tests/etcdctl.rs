//! Debian's `etcdctl` (API v2) against detcd and against etcd 3.4, side by side: the same
//! commands on a fresh member of each must print the same output (after masking what
//! legitimately differs: member and cluster ids, store indexes and expiration times) and exit
//! with the same status. Without `etcd` or `etcdctl` it fails under CI (`CI` set) and skips,
//! saying so, elsewhere.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Mask ids, indexes and times.
fn normalise(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let mut l = line.to_string();
        // "[12]" index suffixes of errors, "index": n, createdIndex/modifiedIndex
        let re_like = |l: &str| -> String {
            let mut o = String::new();
            let mut chars = l.chars().peekable();
            let mut prev_alpha = false;
            while let Some(c) = chars.next() {
                if c.is_ascii_digit() && !prev_alpha {
                    let mut num = c.to_string();
                    while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                        num.push(*d);
                        chars.next();
                    }
                    o.push_str(if num.len() >= 2 { "<n>" } else { &num });
                    prev_alpha = false;
                } else {
                    prev_alpha = c.is_ascii_alphabetic();
                    o.push(c);
                }
            }
            o
        };
        if let Some(i) = l.find("\"expiration\":\"") {
            let end = l[i + 14..].find('"').map(|e| i + 14 + e).unwrap_or(l.len());
            l.replace_range(i + 14..end, "<ts>");
        }
        // 16-hex-digit member ids
        let words: Vec<String> = l
            .split_inclusive(|c: char| !c.is_ascii_hexdigit())
            .map(|w| {
                let core = w.trim_end_matches(|c: char| !c.is_ascii_hexdigit());
                if core.len() >= 12
                    && core.chars().all(|c| c.is_ascii_hexdigit())
                    && core.chars().any(|c| c.is_ascii_alphabetic())
                {
                    w.replacen(core, "<id>", 1)
                } else {
                    w.to_string()
                }
            })
            .collect();
        l = re_like(&words.concat());
        out.push_str(&l);
        out.push('\n');
    }
    out
}

const COMMANDS: &[&[&str]] = &[
    &["set", "/a", "1"],
    &["get", "/a"],
    &["mk", "/a", "2"],
    &["mk", "/b", "2"],
    &["update", "/a", "3"],
    &["update", "/nope", "1"],
    &["get", "/nope"],
    &["set", "/a", "4", "--swap-with-value", "wrong"],
    &["set", "/a", "4", "--swap-with-value", "3"],
    &["mkdir", "/d"],
    &["mkdir", "/d"],
    &["set", "/d/x", "y"],
    &["ls", "/d"],
    &["ls", "--recursive", "/"],
    &["rmdir", "/d"],
    &["rm", "--recursive", "/d"],
    &["rm", "/a", "--with-value", "nope"],
    &["rm", "/a"],
    &["get", "/a"],
    &["-o", "json", "get", "/b"],
    &["-o", "extended", "get", "/b"],
    &["set", "/t", "v", "--ttl", "60"],
    &["updatedir", "/nodir", "--ttl", "5"],
    &["mk", "--in-order", "/q", "first"],
    &["cluster-health"],
    &["member", "list"],
    // Watches after index 1 replay the event history (same indexes on both servers).
    &["watch", "--after-index", "1", "/b"],
    &["watch", "--recursive", "--after-index", "1", "/d"],
    &["watch", "--forever", "--after-index", "1", "/b"],
    &[
        "exec-watch",
        "--after-index",
        "1",
        "/b",
        "--",
        "sh",
        "-c",
        "echo $ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE",
    ],
    &[
        "exec-watch",
        "--recursive",
        "--after-index",
        "1",
        "/",
        "--",
        "sh",
        "-c",
        "echo $ETCD_WATCH_ACTION $ETCD_WATCH_KEY",
    ],
];

fn run_all(addr: &str) -> Vec<(i32, String)> {
    COMMANDS
        .iter()
        .map(|args| {
            // Watches run under `timeout 2`: `watch --forever` and `exec-watch` never return by
            // themselves (exit 124 on both servers), and a one-shot watch must not hang the test.
            let endless = args[0] == "exec-watch" || args[0] == "watch";
            let mut cmd = if endless {
                let mut c = Command::new("timeout");
                c.args(["2", "etcdctl"]);
                c
            } else {
                Command::new("etcdctl")
            };
            let o = cmd
                .env("ETCDCTL_API", "2")
                .args(["--endpoints", &format!("http://{addr}")])
                .args(*args)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let mut text = normalise(&text);
            if args[0] == "ls" {
                // etcd lists a directory in Go map order, which varies: compare sorted.
                let mut lines: Vec<&str> = text.lines().collect();
                lines.sort_unstable();
                text = lines.join("\n");
            }
            (o.status.code().unwrap_or(-1), text)
        })
        .collect()
}

#[test]
fn etcdctl_prints_the_same_for_detcd_and_etcd() {
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
            m.args.push("--enable-v2=true".into());
            m.start_binary("etcd");
        } else {
            m.start();
        }
        // Led, published and with the cluster version recorded: store index 3, as a fresh
        // etcd member (so the indexes etcdctl prints line up).
        eventually(Duration::from_secs(20), "a leader at index 3", || {
            let led = get(&m.addr(), "/v2/members/leader").ok()?.status == 200;
            let idx: u64 = get(&m.addr(), "/v2/keys/")
                .ok()?
                .header("X-Etcd-Index")?
                .parse()
                .ok()?;
            (led && idx >= 3).then_some(())
        });
        outs.push(run_all(&m.addr()));
    }
    let mut diffs = Vec::new();
    for (i, args) in COMMANDS.iter().enumerate() {
        if outs[0][i] != outs[1][i] {
            diffs.push(format!(
                "etcdctl {}:\n  detcd ({}): {}\n  etcd  ({}): {}",
                args.join(" "),
                outs[0][i].0,
                outs[0][i].1.trim(),
                outs[1][i].0,
                outs[1][i].1.trim()
            ));
        }
    }
    println!(
        "{} etcdctl commands, {} differ",
        COMMANDS.len(),
        diffs.len()
    );
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
