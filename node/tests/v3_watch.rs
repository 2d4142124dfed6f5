//! etcd 3.4's Watch service on real detcd processes: `etcdctl watch` prints the same on
//! detcd and on etcd; a gRPC watch stream answers every kind of request (auto and chosen
//! ids, duplicates, empty ranges, filters, prev_kv, compacted start, cancel, progress) as
//! etcd does; a watcher that reconnects at `last + 1` across a leader kill sees every
//! acknowledged write exactly once, in revision order.
//! Without `etcd` or `etcdctl` these fail under CI (`CI` set) and skip, saying so, elsewhere.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use detcd_node::rt::h2::H2Channel;
use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::kv_client::KvClient;
use detcd_proto::etcdserverpb::watch_client::WatchClient;

type Channel = H2Channel<tonic::body::Body>;

fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    etcdctl3(endpoints, args, stdin)
}

/// Mask what legitimately differs between two servers in etcdctl's JSON lines (ids, term).
fn normalise(s: &str) -> String {
    without_etcdctl_logs(s)
        .lines()
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(mut v) => {
                mask_fields(&mut v, &["cluster_id", "member_id", "raft_term"]);
                v.to_string()
            }
            Err(_) => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes made before the watchers start (revisions 2..=9 on a fresh server).
const WRITES: &[&[&str]] = &[
    &["put", "w/a", "1"],
    &["put", "w/a", "2"],
    &["put", "w/b", "x"],
    &["del", "w/a"],
    &["txn"],
    &["put", "other", "1"],
    &["del", "w/", "--prefix"],
    &["put", "w/end", "1"],
];
const TXN: &str = "\n\nput w/c 1\nput w/d 2\n\n";

/// Watch commands, each run for a while after the writes (all start from a revision, so what
/// they print does not depend on when they connect).
const WATCHES: &[&[&str]] = &[
    &["watch", "--prefix", "w/", "--rev", "1"],
    &[
        "-w",
        "json",
        "watch",
        "--prefix",
        "w/",
        "--prev-kv",
        "--rev",
        "1",
    ],
    &["watch", "w/a", "--rev", "1"],
    &["watch", "w/a", "--rev", "3", "--prev-kv"],
    &["-w", "json", "watch", "w/", "w/c", "--rev", "4"],
    &["watch", "w/", "w/c", "--rev", "4", "--prev-kv"],
    &["watch", "--prefix", "", "--rev", "6"],
    &["-w", "json", "watch", "w/end", "--rev", "9"],
];

/// After `compaction 4`: watching from before it is canceled, from it works.
///
/// Not `compaction 5`: revision 5 is the tombstone of `w/a`, which a compaction at 5 drops.
/// etcd drops it in its backend's next batch commit (up to 100 ms later), so whether a watch
/// from 5 started just after prints that DELETE depends on etcd's timing; detcd drops it at
/// once, as etcd's state is once the commit lands. Revision 4 (`put w/b x`) is the newest
/// version of its key at 4 and survives on both.
const COMPACT_AT: &str = "4";
const AFTER_COMPACTION: &[&[&str]] = &[
    &["watch", "w/a", "--rev", "3"],
    &["-w", "json", "watch", "--prefix", "w/", "--rev", "3"],
    &["watch", "--prefix", "w/", "--rev", "4"],
];

/// Then auth on: a user who may read only `w/end` watches it, and is refused elsewhere.
const AUTH_SETUP: &[&[&str]] = &[
    &["user", "add", "root:rootpw"],
    &["auth", "enable"],
    &["--user", "root:rootpw", "user", "add", "u:upw"],
    &["--user", "root:rootpw", "role", "add", "r"],
    &[
        "--user",
        "root:rootpw",
        "role",
        "grant-permission",
        "r",
        "read",
        "w/end",
    ],
    &["--user", "root:rootpw", "user", "grant-role", "u", "r"],
];
const WITH_AUTH: &[&[&str]] = &[
    &["--user", "u:upw", "watch", "w/end", "--rev", "9"],
    &["--user", "u:upw", "watch", "w/a", "--rev", "5"],
    &["--user", "u:upw", "watch", "--prefix", "w/", "--rev", "5"],
    &["--user", "u:nope", "watch", "w/end", "--rev", "9"],
    &[
        "--user",
        "root:rootpw",
        "watch",
        "--prefix",
        "w/",
        "--rev",
        "8",
    ],
];

/// Run each watch command for `run_for` (in parallel), then stop it; what each printed.
fn watch_outputs(addr: &str, cmds: &[&[&str]], run_for: Duration) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    for (i, args) in cmds.iter().enumerate() {
        let out = std::fs::File::create(dir.path().join(format!("{i}.out"))).unwrap();
        let child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", addr])
            .args(*args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("etcdctl starts");
        children.push(child);
    }
    std::thread::sleep(run_for);
    let mut outs = Vec::new();
    for (i, mut c) in children.into_iter().enumerate() {
        let _ = c.kill();
        let status = c.wait().unwrap();
        let printed = std::fs::read_to_string(dir.path().join(format!("{i}.out"))).unwrap();
        // Killed (still watching) or exited with its own status (canceled by the server).
        let how = match status.code() {
            Some(code) => format!("exit {code}"),
            None => "watching".to_string(),
        };
        outs.push(format!("[{how}]\n{}", normalise(&printed)));
    }
    outs
}

/// The gateway's `/v3/watch` for `body`, read for 2 s: the status line and each
/// `{"result":…}` line, ids and term masked.
fn gateway_watch(addr: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    write!(
        s,
        "POST /v3/watch HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1);
    // Chunked: the JSON lines are whole chunks; the size lines are not JSON.
    let lines: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(normalise)
        .collect();
    format!("{status}\n{}", lines.join("\n"))
}

fn run_script(addr: &str) -> Vec<String> {
    for w in WRITES {
        let stdin = (w[0] == "txn").then_some(TXN);
        let (code, out) = etcdctl(addr, w, stdin);
        assert_eq!(code, 0, "etcdctl {w:?}: {out}");
    }
    let mut outs = watch_outputs(addr, WATCHES, Duration::from_secs(3));
    // The same history through the JSON gateway (w/ up to w0, from revision 1, prev_kv).
    outs.push(gateway_watch(
        addr,
        r#"{"create_request":{"key":"dy8=","range_end":"dzA=","start_revision":1,"prev_kv":true}}"#,
    ));
    let (code, out) = etcdctl(addr, &["compaction", COMPACT_AT], None);
    assert_eq!(code, 0, "compaction: {out}");
    outs.extend(watch_outputs(
        addr,
        AFTER_COMPACTION,
        Duration::from_secs(3),
    ));
    for a in AUTH_SETUP {
        let (code, out) = etcdctl(addr, a, None);
        assert_eq!(code, 0, "etcdctl {a:?}: {out}");
    }
    outs.extend(watch_outputs(addr, WITH_AUTH, Duration::from_secs(3)));
    outs
}

/// A fresh single member of `bin` (detcd or etcd) under `dir`, answering v3.
fn single(dir: &std::path::Path, bin: &str) -> Member {
    let d = dir.join(bin);
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
    m
}

fn both_present() -> bool {
    require_bin("etcdctl", "Debian package etcd-client")
        && require_bin("etcd", "Debian package etcd-server")
}

#[test]
fn etcdctl_watch_prints_the_same_for_detcd_and_etcd() {
    if !both_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for bin in ["detcd", "etcd"] {
        let m = single(dir.path(), bin);
        outs.push(run_script(&m.addr()));
    }
    let gateway: &[&str] = &["(gateway) POST /v3/watch"];
    let cmds: Vec<&[&str]> = WATCHES
        .iter()
        .copied()
        .chain([gateway])
        .chain(AFTER_COMPACTION.iter().copied())
        .chain(WITH_AUTH.iter().copied())
        .collect();
    let mut diffs = Vec::new();
    for (i, args) in cmds.iter().enumerate() {
        if outs[0][i] != outs[1][i] {
            diffs.push(format!(
                "etcdctl {}:\n--- detcd:\n{}\n--- etcd:\n{}",
                args.join(" "),
                outs[0][i],
                outs[1][i]
            ));
        }
    }
    // The commands did see something: the full-prefix watcher printed every write, and the
    // gateway streamed the created answer and the events.
    assert!(outs[0][0].contains("w/end"), "{}", outs[0][0]);
    let gw = &outs[0][WATCHES.len()];
    assert!(
        gw.contains("\"created\":true") && gw.contains("dy9lbmQ="),
        "{gw}"
    );
    assert!(
        diffs.is_empty(),
        "{} of {} watch commands differ:\n{}",
        diffs.len(),
        cmds.len(),
        diffs.join("\n")
    );
}

fn addr_of(m: &Member) -> SocketAddr {
    m.addr().parse().unwrap()
}

async fn kv(addr: SocketAddr) -> KvClient<Channel> {
    KvClient::new(H2Channel::connect(addr).await.expect("connect"))
}

fn create(key: &str, f: impl FnOnce(&mut pb::WatchCreateRequest)) -> pb::WatchRequest {
    let mut c = pb::WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    f(&mut c);
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(c)),
    }
}

fn cancel(id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id: id },
        )),
    }
}

fn progress() -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        )),
    }
}

async fn put(kv: &mut KvClient<Channel>, k: &str, v: &str) -> i64 {
    let r = kv
        .put(pb::PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner();
    r.header.unwrap().revision
}

/// A scripted watch session; every response, per watch id, in the order it came, with the
/// ids and term of the server masked.
async fn session(addr: SocketAddr) -> BTreeMap<i64, Vec<String>> {
    let mut kv = kv(addr).await;
    put(&mut kv, "a", "1").await; // 2
    put(&mut kv, "a", "2").await; // 3
    put(&mut kv, "b", "1").await; // 4
    kv.delete_range(pb::DeleteRangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    })
    .await
    .expect("delete"); // 5
    kv.compact(pb::CompactionRequest {
        revision: 3,
        ..Default::default()
    })
    .await
    .expect("compact");

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<pb::WatchRequest>();
    let requests =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut got: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut progress_seen = 0;
    // Wait until `n` progress answers (watch id -1, no cancel) arrived.
    macro_rules! until_progress {
        ($answers:ident, $n:expr) => {
            while progress_seen < $n {
                let r = tokio::time::timeout(Duration::from_secs(10), $answers.message())
                    .await
                    .expect("a watch response within 10 s")
                    .expect("stream open")
                    .expect("stream not ended");
                if r.watch_id == -1 && !r.canceled {
                    progress_seen += 1;
                }
                let entry = got.entry(r.watch_id).or_default();
                if r.events.is_empty() {
                    let mut v = serde_json::to_value(&r).unwrap();
                    mask_fields(&mut v, &["cluster_id", "member_id", "raft_term"]);
                    entry.push(v.to_string());
                } else {
                    // How events are batched into responses, and so the revision in their
                    // header, depends on timing in etcd (its unsynced watchers catch up
                    // every 100 ms): compare the events one by one, and check the header
                    // is not behind them.
                    let at = r.header.as_ref().map_or(0, |h| h.revision);
                    for ev in &r.events {
                        let kv = ev.kv.as_ref().unwrap();
                        assert!(at >= kv.mod_revision, "header {at} behind event {ev:?}");
                        entry.push(format!("event {}", serde_json::to_value(ev).unwrap()));
                    }
                }
            }
        };
    }
    let send = |r| tx.send(r).expect("request sent");
    // Auto id 0, from a compacted revision: created, then canceled with the compaction.
    send(create("a", |c| c.start_revision = 1));
    // Chosen id 9 from a compacted revision: canceled with the compaction, but its id stays
    // taken until the client cancels it (below).
    send(create("a", |c| {
        c.watch_id = 9;
        c.start_revision = 2
    }));
    // Auto id 1, from revision 4 with prev_kv: the delete at 5 with a's value before it.
    send(create("a", |c| {
        c.start_revision = 4;
        c.prev_kv = true
    }));
    // Auto id 2, every key from "a", deletes only.
    send(create("a", |c| {
        c.range_end = vec![0];
        c.start_revision = 3;
        c.filters = vec![pb::watch_create_request::FilterType::Noput as i32];
    }));
    // Chosen id 7 on b from now on; a second 7 is refused; so is an empty range.
    send(create("b", |c| c.watch_id = 7));
    send(create("c", |c| c.watch_id = 7));
    send(create("b", |c| c.range_end = b"a".to_vec()));
    // Canceling an unknown id answers nothing.
    send(cancel(99));
    // Auto id 3 on b, puts only, with progress notification asked (none at 10 minutes).
    send(create("b", |c| {
        c.progress_notify = true;
        c.filters = vec![pb::watch_create_request::FilterType::Nodelete as i32];
    }));
    send(progress());
    // (grpc-go answers the call only with its first message: send the requests first.)
    let mut w = WatchClient::new(H2Channel::connect(addr).await.expect("connect"));
    let mut answers = w.watch(requests).await.expect("watch").into_inner();
    until_progress!(answers, 1);
    put(&mut kv, "b", "2").await; // 6: to 7 and 3
    kv.delete_range(pb::DeleteRangeRequest {
        key: b"b".to_vec(),
        prev_kv: true,
        ..Default::default()
    })
    .await
    .expect("delete b"); // 7: to 7 and 2
    send(cancel(7));
    put(&mut kv, "b", "3").await; // 8: to 3 only
                                  // Give the events time to arrive (etcd sends a watcher's events and the stream's
                                  // control answers on separate paths), then ask for progress again to end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The compacted watch 9: a second 9 is still a duplicate; canceling it is answered.
    send(create("c", |c| c.watch_id = 9));
    send(cancel(9));
    send(progress());
    until_progress!(answers, 2);
    got
}

/// On a store never compacted, a watch from revision -1 starts at the next revision (etcd
/// reads its history from `uint64(-1)`, finds nothing, and syncs the watcher now); from -2
/// it is canceled as compacted, with compact revision -1.
async fn from_minus_one(addr: SocketAddr) -> Vec<String> {
    let mut kv = kv(addr).await;
    put(&mut kv, "m", "1").await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<pb::WatchRequest>();
    let requests =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    tx.send(create("m", |c| c.start_revision = -1)).unwrap();
    tx.send(create("m", |c| c.start_revision = -2)).unwrap();
    tx.send(progress()).unwrap();
    let mut w = WatchClient::new(H2Channel::connect(addr).await.expect("connect"));
    let mut answers = w.watch(requests).await.expect("watch").into_inner();
    let mut got = Vec::new();
    async fn next(answers: &mut tonic::Streaming<pb::WatchResponse>) -> String {
        let r = tokio::time::timeout(Duration::from_secs(10), answers.message())
            .await
            .expect("a watch response within 10 s")
            .expect("stream open")
            .expect("stream not ended");
        let mut v = serde_json::to_value(&r).unwrap();
        mask_fields(&mut v, &["cluster_id", "member_id", "raft_term"]);
        v.to_string()
    }
    // created 0, created 1, canceled 1 (compacted), progress: in etcd the cancel comes from
    // its 100 ms sync loop, so wait for all four and compare them as a set.
    for _ in 0..4 {
        got.push(next(&mut answers).await);
    }
    put(&mut kv, "m", "2").await;
    // Only the new revision's event: nothing from the history before it.
    got.push(next(&mut answers).await);
    got.sort();
    got
}

#[test]
fn a_watch_from_revision_minus_one_starts_now_as_etcd() {
    if !both_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut outs = Vec::new();
    for bin in ["detcd", "etcd"] {
        let m = single(dir.path(), bin);
        outs.push(rt.block_on(from_minus_one(addr_of(&m))));
    }
    assert!(
        outs[0]
            .iter()
            .any(|r| r.contains("\"compact_revision\":\"-1\"")),
        "{:?}",
        outs[0]
    );
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn a_watch_stream_answers_every_request_as_etcd_does() {
    if !both_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut outs = Vec::new();
    for bin in ["detcd", "etcd"] {
        let m = single(dir.path(), bin);
        outs.push(rt.block_on(session(addr_of(&m))));
    }
    // Every kind of answer was seen at all.
    let all: String = outs[0].values().flatten().cloned().collect();
    for needle in [
        "\"compact_revision\":\"3\"",
        "\"cancel_reason\":\"mvcc: duplicate watch ID provided on the WatchStream\"",
        "\"cancel_reason\":\"mvcc: watcher range is empty\"",
        "\"prev_kv\"",
        "\"type\":\"DELETE\"",
    ] {
        assert!(all.contains(needle), "no {needle} in {all}");
    }
    let ids: Vec<&i64> = outs[0].keys().chain(outs[1].keys()).collect();
    let mut diffs = Vec::new();
    for id in ids {
        let (d, e) = (outs[0].get(id), outs[1].get(id));
        if d != e {
            diffs.push(format!("watch id {id}:\n  detcd: {d:?}\n  etcd:  {e:?}"));
        }
    }
    diffs.dedup();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// Follow every key under `k/` from revision `from`, first on member `first`, on whichever
/// member answers after that, resuming at `last + 1` after any error, until it sees `k/end`.
/// Every (key, value, revision) seen, in the order seen.
async fn follow(addrs: Vec<SocketAddr>, first: usize, from: i64) -> Vec<(String, String, i64)> {
    let mut seen: Vec<(String, String, i64)> = Vec::new();
    let mut next = from;
    let mut member = first;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher never saw k/end: at revision {next}"
        );
        let addr = addrs[member];
        member = (member + 1) % addrs.len();
        let Ok(Ok(ch)) =
            tokio::time::timeout(Duration::from_secs(2), H2Channel::connect(addr)).await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut w = WatchClient::new(ch);
        let req = create("k/", |c| {
            c.range_end = b"k0".to_vec();
            c.start_revision = next;
        });
        let requests = futures::stream::iter(vec![req]).chain(futures::stream::pending());
        let Ok(resp) = w.watch(requests).await else {
            continue;
        };
        let mut answers = resp.into_inner();
        loop {
            let r = match tokio::time::timeout(Duration::from_secs(3), answers.message()).await {
                Ok(Ok(Some(r))) => r,
                _ => break, // silent, ended or failed: resume elsewhere
            };
            assert!(!r.canceled, "watch canceled: {r:?}");
            for ev in r.events {
                let kv = ev.kv.unwrap();
                assert!(
                    kv.mod_revision >= next,
                    "event at {} after {next}",
                    kv.mod_revision
                );
                next = kv.mod_revision + 1;
                let key = String::from_utf8(kv.key).unwrap();
                if key == "k/end" {
                    return seen;
                }
                seen.push((key, String::from_utf8(kv.value).unwrap(), kv.mod_revision));
            }
        }
    }
}

use futures::StreamExt;

#[test]
fn a_watcher_resuming_at_last_plus_one_sees_every_write_once_across_a_leader_kill() {
    if !require_bin("etcdctl", "Debian package etcd-client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ms = static_cluster(dir.path(), 3);
    for m in ms.iter_mut() {
        m.start();
    }
    let eps: Vec<String> = ms.iter().map(Member::addr).collect();
    let eps = eps.join(",");
    eventually(Duration::from_secs(30), "a cluster that answers v3", || {
        (etcdctl(&eps, &["put", "ready", "1"], None).0 == 0).then_some(())
    });
    let addrs: Vec<SocketAddr> = ms.iter().map(addr_of).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_, out) = etcdctl(&eps, &["-w", "json", "get", "ready"], None);
    let start: i64 = serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["header"]
        ["revision"]
        .as_i64()
        .unwrap()
        + 1;
    // The watcher follows from the first write on, on the leader, which is killed after the
    // writer's first 100 puts (of 300; then `k/end` until it is acknowledged).
    const N: usize = 300;
    let leader = leader_of(&ms).expect("a leader");
    let watcher = rt.spawn(follow(addrs.clone(), leader, start));
    let acked: Vec<(String, String, i64)> = rt.block_on(async {
        let mut acked = Vec::new();
        let mut member = (leader + 1) % addrs.len();
        let mut client: Option<KvClient<Channel>> = None;
        let mut i = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "writes stalled at {i}"
            );
            if i == 100 && ms[leader].child.is_some() {
                ms[leader].kill();
            }
            if client.is_none() {
                match H2Channel::connect(addrs[member]).await {
                    Ok(ch) => client = Some(KvClient::new(ch)),
                    Err(_) => {
                        member = (member + 1) % addrs.len();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            let (k, v) = if i < N {
                (format!("k/{i:04}"), format!("v{i}"))
            } else {
                ("k/end".to_string(), "end".to_string())
            };
            let req = pb::PutRequest {
                key: k.clone().into_bytes(),
                value: v.clone().into_bytes(),
                ..Default::default()
            };
            let c = client.as_mut().unwrap();
            match tokio::time::timeout(Duration::from_secs(5), c.put(req)).await {
                Ok(Ok(_)) if i >= N => break,
                Ok(Ok(r)) => {
                    acked.push((k, v, r.into_inner().header.unwrap().revision));
                    i += 1;
                }
                // Not acknowledged: go on with the next key on another member (this one may
                // or may not have been written; the watcher may see it).
                _ => {
                    client = None;
                    member = (member + 1) % addrs.len();
                    i = (i + 1).min(N);
                }
            }
        }
        acked
    });
    assert!(
        acked.len() >= N - 10,
        "only {} of {N} puts acknowledged",
        acked.len()
    );
    let seen = rt.block_on(watcher).expect("the watcher finished");
    // In revision order, each revision once, and every acknowledged write among them with
    // its value and revision.
    for pair in seen.windows(2) {
        assert!(
            pair[0].2 < pair[1].2,
            "out of order or duplicated: {pair:?}"
        );
    }
    let seen_set: std::collections::HashSet<_> = seen.iter().cloned().collect();
    for a in &acked {
        assert!(
            seen_set.contains(a),
            "acknowledged {a:?} never seen by the watcher"
        );
    }
    // Nothing seen that was never written.
    for s in &seen {
        let i: usize = s.0["k/".len()..].parse().expect("a written key");
        assert_eq!(s.1, format!("v{i}"), "{s:?}");
    }
}

/// `etcdctl watch` asks for a leader (clientv3's `WithRequireLeader`: `hasleader` metadata). A
/// member that has had no leader for three election timeouts ends such a stream with "no
/// leader", and refuses a new one at once, and any unary call that asks for a leader; the
/// same on detcd as on etcd 3.4.23.
#[test]
fn a_watch_that_requires_a_leader_ends_when_its_member_loses_the_leader() {
    if !both_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for bin in ["detcd", "etcd"] {
        let d = dir.path().join(bin);
        std::fs::create_dir_all(&d).unwrap();
        let mut ms = static_cluster(&d, 3);
        for m in ms.iter_mut() {
            if bin == "etcd" {
                m.start_binary("etcd");
            } else {
                m.start();
            }
        }
        let eps: Vec<String> = ms.iter().map(Member::addr).collect();
        eventually(Duration::from_secs(30), "a cluster that answers v3", || {
            (etcdctl(&eps.join(","), &["put", "ready", "1"], None).0 == 0).then_some(())
        });
        let log = d.join("watch.out");
        let mut watch = std::process::Command::new("etcdctl")
            .args(["--endpoints", &eps[0], "watch", "k"])
            .env("ETCDCTL_API", "3")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(d.join("watch.err")).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(etcdctl(&eps[0], &["put", "k", "seen"], None).0, 0);
        ms[1].kill();
        ms[2].kill();
        let status = eventually(Duration::from_secs(30), "the watch to end", || {
            watch.try_wait().unwrap()
        });
        let out = std::fs::read_to_string(&log).unwrap()
            + &std::fs::read_to_string(d.join("watch.err")).unwrap();
        assert!(!status.success(), "{bin}: {out}");
        assert!(out.contains("seen"), "{bin}: {out}");
        assert!(out.contains("etcdserver: no leader"), "{bin}: {out}");
        let (code, again) = etcdctl(&eps[0], &["watch", "k"], None);
        assert_ne!(code, 0, "{bin}: {again}");
        assert!(again.contains("etcdserver: no leader"), "{bin}: {again}");
        // A unary call asking for a leader is refused too (etcd's unary interceptor); one
        // that does not ask is served (a serializable read).
        let rt = tokio::runtime::Runtime::new().unwrap();
        let range = |require_leader: bool| {
            rt.block_on(async {
                let mut req = tonic::Request::new(pb::RangeRequest {
                    key: b"k".to_vec(),
                    serializable: true,
                    ..Default::default()
                });
                if require_leader {
                    req.metadata_mut()
                        .insert("hasleader", "true".parse().unwrap());
                }
                kv(addr_of(&ms[0])).await.range(req).await
            })
        };
        let refused = range(true).expect_err("a unary call asking for a leader");
        assert_eq!(
            refused.code(),
            tonic::Code::Unavailable,
            "{bin}: {refused:?}"
        );
        assert_eq!(refused.message(), "etcdserver: no leader", "{bin}");
        let served = range(false).unwrap_or_else(|e| panic!("{bin}: {e:?}"));
        assert_eq!(served.into_inner().kvs[0].value, b"seen", "{bin}");
    }
}

/// One watch stream (etcdctl's interactive watch: every `watch` line a new watch on the same
/// stream) opened by a user with a token, a watch created on it, then the auth store changed
/// (root adds a user), then a second watch created on the same stream: etcd checks each
/// create with the token as of then, so the second is created too and both see the put.
fn watch_across_an_auth_change(addr: &str) -> String {
    use std::io::Write;
    for args in AUTH_SETUP {
        assert_eq!(etcdctl(addr, args, None).0, 0, "{args:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::fs::File::create(dir.path().join("out")).unwrap();
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", addr, "--user", "u:upw", "watch", "-i"])
        .stdin(Stdio::piped())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("etcdctl starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"watch w/end\n").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let root = ["--user", "root:rootpw"];
    assert_eq!(
        etcdctl(
            addr,
            &[&root[..], &["user", "add", "bob:bobpw"]].concat(),
            None
        )
        .0,
        0
    );
    stdin.write_all(b"watch w/end\n").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        etcdctl(addr, &[&root[..], &["put", "w/end", "v1"]].concat(), None).0,
        0
    );
    std::thread::sleep(Duration::from_secs(1));
    let _ = child.kill();
    let _ = child.wait();
    normalise(&std::fs::read_to_string(dir.path().join("out")).unwrap())
}

#[test]
fn a_watch_created_after_an_auth_change_is_checked_as_of_then() {
    if !both_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for bin in ["detcd", "etcd"] {
        let m = single(dir.path(), bin);
        outs.push(watch_across_an_auth_change(&m.addr()));
    }
    // Both watches saw the put.
    assert_eq!(
        outs[1].matches("v1").count(),
        2,
        "etcd printed:\n{}",
        outs[1]
    );
    assert_eq!(outs[0], outs[1]);
}

/// Puts from `writers` concurrent clients (each on its own connection) under `p/`, watched
/// from the revision after the current one; every response the watcher got until it had
/// seen them all, as (header revision, each event's mod revision).
async fn concurrent_puts_watched(
    addr: SocketAddr,
    writers: usize,
    each: usize,
) -> Vec<(i64, Vec<i64>)> {
    use futures::StreamExt;
    let mut w = WatchClient::new(H2Channel::connect(addr).await.expect("connect"));
    let requests = futures::stream::iter(vec![create("p/", |c| c.range_end = b"p0".to_vec())])
        .chain(futures::stream::pending());
    let mut responses = w.watch(requests).await.expect("watch").into_inner();
    let created = responses.next().await.expect("created").expect("created");
    assert!(created.created, "{created:?}");
    let mut kvs = Vec::new();
    for _ in 0..writers {
        kvs.push(kv(addr).await);
    }
    let puts = kvs.into_iter().enumerate().map(|(i, mut kv)| async move {
        for n in 0..each {
            put(&mut kv, &format!("p/{i}-{n}"), "v").await;
        }
    });
    let writing = futures::future::join_all(puts);
    let reading = async {
        let mut seen = Vec::new();
        let mut events = 0;
        while events < writers * each {
            let r = responses
                .next()
                .await
                .expect("a response")
                .expect("no error");
            let revs: Vec<i64> = r
                .events
                .iter()
                .map(|e| e.kv.as_ref().unwrap().mod_revision)
                .collect();
            events += revs.len();
            seen.push((r.header.unwrap().revision, revs));
        }
        seen
    };
    let (_, seen) = tokio::time::timeout(Duration::from_secs(30), async {
        futures::join!(writing, reading)
    })
    .await
    .expect("every put seen within 30 s");
    seen
}

/// etcd's `notify` sends a synced watcher each revision's events in a response of their own,
/// headed with that revision, however many revisions one commit brought; detcd applies
/// several in one batch and must not fold them into one response.
#[test]
fn a_caught_up_watcher_gets_one_response_per_revision_as_etcd() {
    if !both_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for bin in ["detcd", "etcd"] {
        let m = single(dir.path(), bin);
        let seen = rt.block_on(concurrent_puts_watched(addr_of(&m), 16, 25));
        let folded: Vec<&(i64, Vec<i64>)> = seen
            .iter()
            .filter(|(header, revs)| revs.iter().any(|r| r != header))
            .collect();
        assert!(
            folded.is_empty(),
            "{bin}: {} of {} responses hold events of other revisions than their header's: {:?}",
            folded.len(),
            seen.len(),
            &folded[..folded.len().min(5)]
        );
        assert_eq!(seen.len(), 16 * 25, "{bin}: one response per put");
    }
}
