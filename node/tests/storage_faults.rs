//! Storage faults on real processes (issue #33): a bit flipped in a stopped member's WAL is
//! never truncated away. By default the member rejoins by itself under a new id (the cluster
//! removes its old id and adds it back, and the leader's snapshot brings the data back);
//! with `--experimental-rejoin-when-damaged=false` it refuses to start, naming the file and
//! the offset of the damaged record, and the operator's remedy (remove the member, wipe its
//! data directory, add it back) brings it back by snapshot. Nothing acknowledged is lost. A
//! rotted v3 keyspace is rebuilt. A member whose filesystem fills up (ENOSPC) or turns
//! read-only (EROFS, a tmpfs mounted over its data directory) stops, naming the file, and
//! comes back with every acknowledged write once the filesystem is healthy.

mod common;

use std::time::Duration;

use common::*;

/// The records of a WAL segment as (offset, payload length), up to the preallocated zeros.
/// The layout is `[len u32 LE][crc32 u32 LE][kind u8][payload]` (node/src/storage/wal.rs).
fn records(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 9 <= data.len() && data[off..off + 9].iter().any(|b| *b != 0) {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        out.push((off, len));
        off += 9 + len;
    }
    out
}

fn put(m: &Member, key: &str, value: &str) -> bool {
    form_put(
        &m.addr(),
        &format!("/v2/keys/{key}"),
        &format!("value={value}"),
    )
    .is_ok_and(|r| r.status == 200 || r.status == 201)
}

/// A 3-member cluster that acknowledged 300 writes, with one follower killed and one bit
/// flipped inside a record in the middle of its newest WAL segment.
struct Damaged {
    _dir: tempfile::TempDir,
    ms: Vec<Member>,
    leader: usize,
    f: usize,
    other: usize,
    acked: Vec<(String, String)>,
    seg: std::path::PathBuf,
    off: usize,
    /// The damaged segment's bytes.
    damaged: Vec<u8>,
}

fn follower_with_a_flipped_wal_bit(follower_args: &[&str]) -> Damaged {
    let dir = tempfile::tempdir().unwrap();
    let mut ms = static_cluster(dir.path(), 3);
    for m in ms.iter_mut() {
        m.start();
    }
    let leader = eventually(Duration::from_secs(30), "a leader", || leader_of(&ms));
    let f = (leader + 1) % 3;
    let other = 3 - leader - f;
    let mut acked = Vec::new();
    for i in 0..300 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        if put(&ms[leader], &k, &v) {
            acked.push((k, v));
        }
    }
    assert_eq!(
        acked.len(),
        300,
        "a healthy cluster acknowledges every write"
    );
    // The follower has every write on its disk (its acks are what committed them).
    eventually(
        Duration::from_secs(20),
        "the follower to hold the last key",
        || {
            let r = get(&ms[f].addr(), "/v2/keys/k299?quorum=false").ok()?;
            (r.status == 200).then_some(())
        },
    );
    ms[f].kill();
    ms[f]
        .args
        .extend(follower_args.iter().map(|a| a.to_string()));

    // Flip one bit inside the payload of a record in the middle of its newest segment.
    let wal_dir = ms[f].data_dir.join("member/wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    let seg = segs.last().unwrap().clone();
    let mut data = std::fs::read(&seg).unwrap();
    let recs = records(&data);
    assert!(recs.len() > 10, "{} records", recs.len());
    let (off, len) = recs[recs.len() / 2];
    assert!(len > 2);
    data[off + 9 + len / 2] ^= 0x04;
    std::fs::write(&seg, &data).unwrap();
    Damaged {
        _dir: dir,
        ms,
        leader,
        f,
        other,
        acked,
        seg,
        off,
        damaged: data,
    }
}

/// The member's id in `/v2/members` as `m` answers it, by name.
fn id_of(m: &Member, name: &str) -> Option<String> {
    let list = get(&m.addr(), "/v2/members").ok()?.json();
    list["members"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == name)
        .and_then(|x| x["id"].as_str())
        .map(str::to_string)
}

#[test]
fn a_bit_flipped_in_a_stopped_members_wal_is_named_and_the_replaced_member_loses_nothing() {
    // With the rejoin off, as etcd: the member refuses and the operator replaces it.
    let Damaged {
        _dir,
        mut ms,
        leader,
        f,
        other,
        acked,
        seg,
        off,
        ..
    } = follower_with_a_flipped_wal_bit(&["-experimental-rejoin-when-damaged=false"]);
    // It refuses to start, naming the file and the record's offset.
    let before = ms[f].logs().len();
    ms[f].start();
    let status = eventually(
        Duration::from_secs(20),
        "the damaged member to exit",
        || ms[f].child.as_mut()?.try_wait().unwrap(),
    );
    ms[f].child = None;
    assert!(!status.success());
    let logs = ms[f].logs()[before..].to_string();
    assert!(logs.contains(&seg.display().to_string()), "{logs}");
    assert!(
        logs.contains(&format!("corrupt record at offset {off}")),
        "{logs}"
    );
    assert!(logs.contains("CRC mismatch"), "{logs}");
    // The cluster serves meanwhile.
    assert!(put(&ms[other], "during", "x"));

    // The operator's remedy: remove it, wipe its data, add it back, start it as `existing`.
    let list = get(&ms[leader].addr(), "/v2/members").unwrap().json();
    let id = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == ms[f].name.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http(
        "DELETE",
        &ms[leader].addr(),
        &format!("/v2/members/{id}"),
        None,
        Duration::from_secs(15),
    )
    .unwrap();
    assert_eq!(r.status, 204, "{}", r.body);
    std::fs::remove_dir_all(&ms[f].data_dir).unwrap();
    let peer = ms[f].peer;
    eventually(Duration::from_secs(30), "the add", || {
        let body = format!("{{\"peerURLs\": [\"http://127.0.0.1:{peer}\"]}}");
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
    let state = ms[f]
        .args
        .iter()
        .position(|a| a == "-initial-cluster-state")
        .unwrap();
    ms[f].args[state + 1] = "existing".into();
    ms[f].start();
    eventually(
        Duration::from_secs(30),
        "the replaced member to catch up",
        || {
            let r = get(&ms[f].addr(), "/v2/keys/during?quorum=false").ok()?;
            (r.status == 200).then_some(())
        },
    );
    for (k, v) in &acked {
        let r = get(&ms[f].addr(), &format!("/v2/keys/{k}?quorum=false")).unwrap();
        assert_eq!(r.status, 200, "{k}: {}", r.body);
        assert_eq!(r.json()["node"]["value"], v.as_str(), "{k}");
    }
}

#[test]
fn a_member_with_a_damaged_wal_rejoins_by_itself_under_a_new_id_and_loses_nothing() {
    let Damaged {
        _dir,
        mut ms,
        leader,
        f,
        other,
        acked,
        seg,
        off,
        damaged,
    } = follower_with_a_flipped_wal_bit(&[]);
    let name = ms[f].name.clone();
    let old_id = id_of(&ms[leader], &name).expect("the member's id");
    let before = ms[f].logs().len();
    ms[f].start();
    // It rejoins by itself: the old id leaves the cluster, a new one with its name and peer
    // URLs comes in, and it catches up by the leader's snapshot.
    assert!(put(&ms[other], "during", "x"));
    let new_id = eventually(Duration::from_secs(60), "a new id for the member", || {
        id_of(&ms[leader], &name).filter(|id| *id != old_id)
    });
    eventually(
        Duration::from_secs(30),
        "the rejoined member to catch up",
        || {
            let r = get(&ms[f].addr(), "/v2/keys/during?quorum=false").ok()?;
            (r.status == 200).then_some(())
        },
    );
    for (k, v) in &acked {
        let r = get(&ms[f].addr(), &format!("/v2/keys/{k}?quorum=false")).unwrap();
        assert_eq!(r.status, 200, "{k}: {}", r.body);
        assert_eq!(r.json()["node"]["value"], v.as_str(), "{k}");
    }
    let list = get(&ms[leader].addr(), "/v2/members").unwrap().json();
    let ids: Vec<&str> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3, "{list}");
    assert!(!ids.contains(&old_id.as_str()), "{list}");
    let logs = ms[f].logs()[before..].to_string();
    assert!(
        logs.contains(&format!("corrupt record at offset {off}")),
        "{logs}"
    );
    assert!(logs.contains("rejoin"), "{logs}");
    // The damaged log is kept aside for the operator, byte for byte; the marker is gone.
    let kept = ms[f]
        .data_dir
        .join("member/wal.damaged.1")
        .join(seg.file_name().unwrap());
    assert!(
        std::fs::read(&kept).is_ok_and(|b| b == damaged),
        "{} holds the damaged segment",
        kept.display()
    );
    assert!(!ms[f].data_dir.join("member-rejoin.json").exists());
    // A restart is an ordinary one now, under the new id.
    ms[f].kill();
    ms[f].start();
    eventually(
        Duration::from_secs(30),
        "the member back after a restart",
        || {
            let r = get(&ms[f].addr(), "/v2/keys/k0?quorum=false").ok()?;
            (r.status == 200).then_some(())
        },
    );
    assert_eq!(id_of(&ms[leader], &name).as_deref(), Some(new_id.as_str()));
    assert!(put(&ms[f], "after", "y"));
}

/// Flip one bit in every copy of `needle` in `path`; how many it found.
fn rot(path: &std::path::Path, needle: &[u8]) -> usize {
    let mut data = std::fs::read(path).unwrap();
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= data.len() {
        if &data[i..i + needle.len()] == needle {
            data[i + needle.len() / 2] ^= 0x10;
            n += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(path, &data).unwrap();
    n
}

#[test]
fn a_damaged_v3_keyspace_is_rebuilt_from_the_snapshot_and_wal_and_serves_every_write() {
    if !require_bin("etcdctl", "Debian package etcd-client") {
        return;
    }
    const MARKER: &str = "marker-value-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    // One member: what it rebuilds from is its own, no peer holds a copy.
    let mut m = static_cluster(dir.path(), 1).remove(0);
    m.args.extend(["--snapshot-count".into(), "50".into()]);
    m.start();
    let ep = m.addr();
    let put = |k: &str, v: &str| etcdctl3(&ep, &["put", k, v], None).0 == 0;
    eventually(Duration::from_secs(20), "a member that answers v3", || {
        put("first", "1").then_some(())
    });
    let mut acked = vec![("first".to_string(), "1".to_string())];
    for i in 0..120 {
        let (k, v) = (
            format!("k{i:03}"),
            if i == 60 {
                MARKER.to_string()
            } else {
                format!("v{i}")
            },
        );
        assert!(put(&k, &v), "put {k}");
        acked.push((k, v));
        if i % 40 == 0 {
            // The keyspace's commits become durable at most every 100 ms.
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    std::thread::sleep(Duration::from_millis(250));
    assert!(put("last", "x"));
    acked.push(("last".into(), "x".into()));
    m.kill();

    let db = m.data_dir.join("member/snap/db");
    let copies = rot(&db, MARKER.as_bytes());
    assert!(copies > 0, "the marker is in {}", db.display());

    let before = m.logs().len();
    m.start();
    eventually(Duration::from_secs(20), "the member to serve again", || {
        let (code, out) = etcdctl3(&ep, &["get", "last", "--print-value-only"], None);
        (code == 0 && out.trim() == "x").then_some(())
    });
    let logs = m.logs()[before..].to_string();
    assert!(
        logs.contains("the v3 keyspace is damaged: rebuilding it from the snapshot and the WAL"),
        "{logs}"
    );
    assert!(m.data_dir.join("member/snap/db.damaged").exists());
    for (k, v) in &acked {
        let (code, out) = etcdctl3(&ep, &["get", k, "--print-value-only"], None);
        assert_eq!((code, out.trim()), (0, v.as_str()), "{k}");
    }
    // The rebuilt keyspace holds the revisions too: each key was written once, in order.
    let (code, out) = etcdctl3(&ep, &["get", "k060", "-w", "json"], None);
    assert_eq!(code, 0, "{out}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["kvs"][0]["mod_revision"], 63, "{out}");

    // It rots again: the second damaged file is kept beside the first, not over it.
    std::thread::sleep(Duration::from_millis(500));
    m.kill();
    assert!(
        rot(&db, MARKER.as_bytes()) > 0,
        "the marker is in the rebuilt file"
    );
    let before = m.logs().len();
    m.start();
    eventually(Duration::from_secs(20), "the member to serve again", || {
        let (code, out) = etcdctl3(&ep, &["get", "k060", "--print-value-only"], None);
        (code == 0 && out.trim() == MARKER).then_some(())
    });
    assert!(m.logs()[before..].contains("the v3 keyspace is damaged"));
    let snap = m.data_dir.join("member/snap");
    assert!(snap.join("db.damaged").exists() && snap.join("db.damaged.1").exists());
}

/// A tmpfs mounted over a directory for the length of a test (unmounted when dropped).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mount a tmpfs of `size` over `at`; None (the test is skipped outside CI, fails in
    /// CI) where this process may not mount (not root).
    fn mount(at: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let opts = format!("size={size}");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|st| st.success());
        require("`mount -t tmpfs`", "run the tests as root", ok).then(|| Tmpfs(at.to_path_buf()))
    }

    fn remount(&self, opts: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .expect("mount runs");
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Put `value` at `key` through any of `ms` (members that stopped are skipped).
fn put_any(ms: &[Member], key: &str, value: &str) -> bool {
    ms.iter().any(|m| {
        form_put(
            &m.addr(),
            &format!("/v2/keys/{key}"),
            &format!("value={value}"),
        )
        .is_ok_and(|r| r.status == 200 || r.status == 201)
    })
}

/// Run one filesystem fault against the data directory of one member of three: writes of
/// 256 KiB values go to the other two until the faulty member has stopped. It must stop by
/// itself (no retrying, no carrying on), with a message naming a file under its data
/// directory and the OS error (`expect`); the other two keep acknowledging writes; once the
/// filesystem is healthy again the member restarts on the same data directory, catches up,
/// and every acknowledged write reads back from it.
fn filesystem_fault(size: &str, fault: impl FnOnce(&Tmpfs, &mut Member), heal: &str, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut ms = static_cluster(dir.path(), 3);
    let Some(fs) = Tmpfs::mount(&ms[2].data_dir, size) else {
        return;
    };
    for m in ms.iter_mut() {
        m.start();
    }
    eventually(Duration::from_secs(30), "a leader", || leader_of(&ms));
    let value = "x".repeat(256 << 10);
    let mut acked = Vec::new();
    for i in 0..10 {
        let key = format!("before{i}");
        assert!(put_any(&ms[..2], &key, &format!("{i}{value}")));
        acked.push((key, i));
    }
    fault(&fs, &mut ms[2]);
    for i in 0..400 {
        let key = format!("big{i}");
        if put_any(&ms[..2], &key, &format!("{i}{value}")) {
            acked.push((key, i));
        }
        if ms[2].child.as_mut().unwrap().try_wait().unwrap().is_some() && i >= 20 {
            break;
        }
    }
    let status = eventually(Duration::from_secs(20), "the faulty member to stop", || {
        ms[2].child.as_mut()?.try_wait().unwrap()
    });
    ms[2].child = None;
    assert!(!status.success());
    let logs = ms[2].logs();
    let under = ms[2].data_dir.display().to_string();
    let line = logs
        .lines()
        .find(|l| l.contains(expect))
        .unwrap_or_else(|| panic!("no line says {expect:?}:\n{logs}"));
    assert!(
        line.contains(&under),
        "the message names no file under {under}: {line}"
    );
    eprintln!(
        "{} writes acknowledged; the member stopped with: {line}",
        acked.len()
    );
    assert!(
        acked.len() >= 20,
        "the other two kept serving: {} writes",
        acked.len()
    );
    assert!(
        put_any(&ms[..2], "after", "1"),
        "the other two serve after the stop"
    );

    fs.remount(heal);
    ms[2].start();
    eventually(Duration::from_secs(60), "the member to catch up", || {
        let r = get(&ms[2].addr(), "/v2/keys/after?quorum=false").ok()?;
        (r.status == 200).then_some(())
    });
    for (k, i) in &acked {
        let r = get(&ms[2].addr(), &format!("/v2/keys/{k}?quorum=false")).unwrap();
        assert_eq!(r.status, 200, "{k}: {}", &r.body[..r.body.len().min(200)]);
        let v = r.json()["node"]["value"].as_str().unwrap().to_string();
        assert!(
            v.starts_with(&i.to_string()) && v.len() == value.len() + i.to_string().len(),
            "{k}"
        );
    }
}

/// ENOSPC: the member's filesystem fills up under load.
#[test]
fn a_member_whose_disk_fills_stops_naming_the_file_and_comes_back_with_every_write() {
    filesystem_fault("24m", |_, _| {}, "size=512m", "No space left on device");
}

/// EROFS: the member restarts on a filesystem that went read-only (as ext4 does after an
/// I/O error with `errors=remount-ro`; Linux refuses to remount it read-only under a process
/// holding files open for writing, so the member is killed first).
#[test]
fn a_member_on_a_read_only_filesystem_stops_naming_the_file_and_comes_back() {
    let fault = |fs: &Tmpfs, m: &mut Member| {
        m.kill();
        fs.remount("ro");
        m.start();
    };
    filesystem_fault("512m", fault, "rw", "Read-only file system");
}
