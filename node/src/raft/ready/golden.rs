//! Golden traces of the Ready loop, in the style of etcd-io/raft's data-driven tests: a
//! scripted sequence of inputs (a campaign, peers' messages, a proposal) and the exact order
//! of what the loop does to the outside world (write the WAL and fsync, send, apply,
//! answer), compared with `tests/golden/ready.txt` (relative to node/). The order is the
//! point: a vote or an append ack sent before the fsync that it promises, or an answer before
//! its entry applied, changes the trace.
//!
//! `UPDATE_GOLDEN=1 cargo test --release -p detcd-node --lib golden` rewrites the file after
//! a deliberate change; review its diff like code.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::eraftpb::{ConfState, Entry, HardState, Message, MessageType};
use raft::{RawNode, StateRole};
use tokio::sync::{mpsc, oneshot};

use super::{LoopConfig, LoopParts, RaftLoop};
use crate::cluster::{Member, Members};
use crate::raft::storage::NodeStorage;
use crate::raft::{Counters, Inbox, Shared, Status};
use crate::rt::{watch, Clock, NodeRng, Probe, ProbeHandler};
use crate::sm::{Op, Proposal, StateMachine};
use crate::storage::snap::SnapDir;
use crate::storage::wal::{Wal, WalMeta};
use crate::storage::{Disk, FileDisk};
use crate::transport::{PeerTls, Transport};

/// Collects the loop's effects, one line each.
#[derive(Default)]
struct Trace(Mutex<Vec<String>>);

impl ProbeHandler for Trace {
    fn hit(&self, _name: &'static str) {}
    fn violated(&self, name: &'static str, detail: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("INVARIANT {name}: {detail}"));
    }
    fn wants_effects(&self) -> bool {
        true
    }
    fn effect(&self, what: &str) {
        self.0.lock().unwrap().push(what.to_string());
    }
}

/// Member 1 of a fresh 3-member cluster (ids 1, 2, 3) with its loop, not running: the
/// script drives it step by step.
fn member(dir: &Path, trace: Arc<Trace>) -> RaftLoop {
    let disk: Arc<dyn Disk> = Arc::new(FileDisk);
    let members = Members {
        members: (1..=3)
            .map(|id| {
                (
                    id,
                    Member {
                        id,
                        name: format!("m{id}"),
                        peer_urls: vec![format!("http://127.0.0.1:{}", 12380 + id)],
                        client_urls: vec![],
                        is_learner: false,
                    },
                )
            })
            .collect(),
        removed: vec![],
    };
    let storage = NodeStorage::new();
    let cs = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    storage.mem.wl().set_conf_state(cs);
    let cfg = raft::Config {
        id: 1,
        election_tick: 10,
        heartbeat_tick: 1,
        check_quorum: true,
        pre_vote: true,
        batch_append: false,
        max_size_per_msg: crate::raft::MAX_MSG_BYTES,
        max_inflight_msgs: 256,
        ..Default::default()
    };
    let raw = RawNode::new(&cfg, storage.clone(), &crate::raft::logger::logger()).unwrap();
    let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
    let probe = Probe::with_handler(trace);
    let shared = Arc::new(Shared {
        id: 1,
        sm: Mutex::new(StateMachine::new(members.clone(), 0xc1)),
        mvcc: Mutex::new(
            crate::mvcc::Mvcc::open(
                Arc::clone(&disk),
                &dir.join("db"),
                crate::mvcc::MvccOptions {
                    max_txn_ops: 128,
                    cache_bytes: crate::mvcc::DEFAULT_CACHE_BYTES,
                    min_lease_ttl: 0,
                },
            )
            .unwrap(),
        ),
        status: Mutex::new(Status::default()),
        waiters: Mutex::new(HashMap::new()),
        applied: watch::channel(0).0,
        leader: watch::channel(0).0,
        inbox: inbox_tx.clone(),
        clock: Clock::new(),
        rng: NodeRng::from_seed(1),
        counters: Counters::default(),
        stopped: watch::channel(None).0,
        probe: probe.clone(),
        lessor: Mutex::new(crate::lease::Lessor::new()),
        watch_hub: Arc::new(crate::watch::Hub::new(1, 0)),
    });
    let transport = Transport::new(1, 0xc1, "t".into(), inbox_tx, PeerTls::default());
    let meta = WalMeta {
        member_id: 1,
        cluster_id: 0xc1,
        joined: None,
    };
    let wal = Wal::create(Arc::clone(&disk), &dir.join("wal"), meta)
        .unwrap()
        .tuned(probe, None);
    let snaps = SnapDir::open(Arc::clone(&disk), &dir.join("snap")).unwrap();
    RaftLoop::new(LoopParts {
        raw,
        storage,
        wal,
        disk,
        snaps,
        shared,
        transport,
        inbox: inbox_rx,
        cfg: LoopConfig {
            tick: Duration::from_millis(100),
            election_ticks: 10,
            snapshot_count: 10_000,
            catchup_entries: 5_000,
            max_snapshots: 5,
            max_wals: 5,
            sync_interval: Duration::from_millis(500),
            // The leader fsyncs every Ready: the trace shows the plain order.
            leader_sync_delay: Duration::ZERO,
        },
        snap_index: 0,
        applied: 0,
        hs: HardState::default(),
    })
}

fn msg(t: MessageType, from: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.from = from;
    m.to = 1;
    m.term = term;
    m
}

/// Step one peer message into the loop and handle the Ready it makes.
async fn step(lp: &mut RaftLoop, trace: &Trace, label: &str, m: Message) {
    trace.0.lock().unwrap().push(format!("> {label}"));
    lp.handle(Inbox::Peer(Box::new(m)));
    lp.on_ready().await.unwrap();
}

/// The leader's script: win an election, replicate a proposal, commit it on an ack, apply
/// and answer it.
async fn leader_script(dir: &Path) -> Vec<String> {
    let trace = Arc::new(Trace::default());
    let mut lp = member(dir, trace.clone());
    trace.0.lock().unwrap().push("> campaign".into());
    lp.raw.campaign().unwrap();
    lp.on_ready().await.unwrap();
    let mut pre = msg(MessageType::MsgRequestPreVoteResponse, 2, 1);
    pre.reject = false;
    step(&mut lp, &trace, "pre-vote granted by 2", pre).await;
    let vote = msg(MessageType::MsgRequestVoteResponse, 2, 1);
    step(&mut lp, &trace, "vote granted by 2", vote).await;
    assert_eq!(lp.raw.raft.state, StateRole::Leader);
    let mut ack = msg(MessageType::MsgAppendResponse, 2, 1);
    ack.index = 1;
    step(
        &mut lp,
        &trace,
        "2 acks entry 1 (the leader's empty entry)",
        ack,
    )
    .await;
    // A client's write: its request waits for the answer.
    let (tx, mut answered) = oneshot::channel();
    lp.shared.waiters.lock().unwrap().insert(7, tx);
    let p = Proposal {
        id: 7,
        time_ms: 0,
        op: Op::ClusterVersion("3.4.0".into()),
    };
    trace.0.lock().unwrap().push("> propose request 7".into());
    let (accepted, _) = oneshot::channel();
    lp.handle(Inbox::Propose {
        data: serde_json::to_vec(&p).unwrap(),
        accepted,
    });
    lp.on_ready().await.unwrap();
    assert!(
        answered.try_recv().is_err(),
        "answered before a quorum had it"
    );
    let mut ack = msg(MessageType::MsgAppendResponse, 3, 1);
    ack.index = 2;
    step(&mut lp, &trace, "3 acks entry 2", ack).await;
    assert!(answered.try_recv().is_ok(), "request 7 was never answered");
    let lines = trace.0.lock().unwrap().clone();
    lines
}

/// The follower's script: grant a vote, then take the leader's entries: each promise (the
/// vote, the ack) leaves only after the WAL fsync that backs it.
async fn follower_script(dir: &Path) -> Vec<String> {
    let trace = Arc::new(Trace::default());
    let mut lp = member(dir, trace.clone());
    let mut v = msg(MessageType::MsgRequestVote, 2, 1);
    v.log_term = 0;
    v.index = 0;
    step(&mut lp, &trace, "2 asks for a vote in term 1", v).await;
    let mut app = msg(MessageType::MsgAppend, 2, 1);
    app.index = 0;
    app.log_term = 0;
    app.commit = 0;
    let e1 = Entry {
        index: 1,
        term: 1,
        ..Default::default()
    };
    app.entries = vec![e1].into();
    step(&mut lp, &trace, "2 appends entry 1", app).await;
    let mut hb = msg(MessageType::MsgHeartbeat, 2, 1);
    hb.commit = 1;
    step(&mut lp, &trace, "2's heartbeat commits entry 1", hb).await;
    let lines = trace.0.lock().unwrap().clone();
    lines
}

#[tokio::test]
async fn the_ready_loop_does_its_effects_in_the_golden_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut got =
        vec!["## leader: elected, replicates, commits on an ack, applies, answers".to_string()];
    got.extend(leader_script(&dir.path().join("leader")).await);
    got.push(String::new());
    got.push("## follower: votes, appends, applies what the leader commits".into());
    got.extend(follower_script(&dir.path().join("follower")).await);
    let got = got.join("\n") + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ready.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "the Ready loop's effects differ from {}:\n--- want\n{want}\n--- got\n{got}",
        path.display()
    );
}

/// Not a golden trace: a member whose keyspace read met damage (a request handler's read,
/// which cannot stop the member itself) stops at the loop's next tick, naming it.
#[tokio::test]
async fn a_member_whose_read_found_damage_stops_at_the_next_tick() {
    let dir = tempfile::tempdir().unwrap();
    let lp = member(dir.path(), Arc::new(Trace::default()));
    let shared = Arc::clone(&lp.shared);
    // As the server does: someone listens for the reason.
    let _listener = shared.stopped.subscribe();
    shared
        .mvcc
        .lock()
        .unwrap()
        .note_damage("corrupt key-value: checksum mismatch");
    tokio::time::timeout(Duration::from_secs(10), lp.run())
        .await
        .expect("the loop stops instead of running on");
    let why = shared.stopped.borrow().clone().expect("a reason");
    // Named with the file, as every storage failure that stops a member.
    let file = shared.mvcc.lock().unwrap().path().display().to_string();
    assert!(!file.is_empty());
    assert!(
        why.contains(&format!(
            "a read found the v3 backend damaged: {file}: corrupt key-value: checksum mismatch"
        )),
        "{why}"
    );
}

/// Not a golden trace: proposals queued together leave a follower as one MsgPropose to the
/// leader (one message, not one each), and the proposers hear that raft took them.
#[tokio::test]
async fn proposals_queued_together_are_forwarded_as_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let trace = Arc::new(Trace::default());
    let mut lp = member(dir.path(), trace.clone());
    // Member 2 leads term 1: its append makes member 1 a follower that knows it.
    let mut app = msg(MessageType::MsgAppend, 2, 1);
    app.entries = vec![Entry {
        index: 1,
        term: 1,
        ..Default::default()
    }]
    .into();
    step(&mut lp, &trace, "2 appends entry 1", app).await;
    trace.0.lock().unwrap().clear();
    let mut answers = Vec::new();
    for id in 1..=3u64 {
        let p = Proposal {
            id,
            time_ms: 0,
            op: Op::ClusterVersion("3.4.0".into()),
        };
        let (accepted, taken) = oneshot::channel();
        answers.push(taken);
        lp.shared
            .inbox
            .send(Inbox::Propose {
                data: serde_json::to_vec(&p).unwrap(),
                accepted,
            })
            .unwrap();
    }
    lp.drain_inbox();
    lp.on_ready().await.unwrap();
    let sent: Vec<String> = trace
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("send MsgPropose"))
        .cloned()
        .collect();
    assert_eq!(
        sent,
        vec!["send MsgPropose to 2 (term 0, index 0, commit 0, 3 entries)".to_string()]
    );
    for mut a in answers {
        assert!(
            matches!(a.try_recv(), Ok(Some(_))),
            "a proposer was not told"
        );
    }
}

/// Not a golden trace: a follower that knows no leader refuses queued proposals, and says
/// so to each proposer.
#[tokio::test]
async fn proposals_without_a_leader_are_refused_each() {
    let dir = tempfile::tempdir().unwrap();
    let lp = &mut member(dir.path(), Arc::new(Trace::default()));
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (accepted, taken) = oneshot::channel();
        answers.push(taken);
        lp.shared
            .inbox
            .send(Inbox::Propose {
                data: b"{}".to_vec(),
                accepted,
            })
            .unwrap();
    }
    lp.drain_inbox();
    for mut a in answers {
        assert!(
            matches!(a.try_recv(), Ok(None)),
            "a proposer was not refused"
        );
    }
}
