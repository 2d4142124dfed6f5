//! Wiring: open or bootstrap the member's storage, start Raft, the peer transport and the
//! client API, and run until the member stops.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::rt::watch;
use raft::eraftpb::{ConfState, HardState, Snapshot};
use raft::RawNode;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::cluster::{cluster_id, member_id, url_string, Member, Members};
use crate::config::{ClusterState, Config};
use crate::raft::ready::{LoopConfig, LoopParts, RaftLoop};
use crate::raft::storage::NodeStorage;
use crate::raft::{Counters, Shared, Status};
use crate::rt::{Clock, NodeRng};
use crate::sm::{Op, StateMachine};
use crate::storage::snap::SnapDir;
use crate::storage::wal::{Wal, WalMeta};
use crate::storage::Disk;
use crate::transport::{host_port, Transport};

/// What a member runs on: its disk, its clock and its random seed. Production passes the
/// real disk, an unskewed clock and a seed from the config; the simulator passes its own.
pub struct Env {
    /// The member's disk.
    pub disk: Arc<dyn Disk>,
    /// The member's clock.
    pub clock: Clock,
    /// Seed of the member's rng.
    pub seed: u64,
    /// TLS for the client and peer URLs (see [`crate::tls::load`]).
    pub tls: crate::tls::Tls,
    /// Called once the member is running, with its shared state (the simulator uses it to
    /// check convergence; production passes `None`).
    pub on_start: Option<Box<dyn FnOnce(Arc<Shared>) + Send>>,
    /// Failpoints and invariant reports (the simulator's; production passes the default,
    /// which does nothing at failpoints).
    pub probe: crate::rt::Probe,
    /// Cut WAL segments past this many bytes (None: 64 MiB, as etcd; the simulator cuts
    /// small ones so that runs reach the cut).
    pub wal_segment_bytes: Option<u64>,
}

/// Why a member stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad configuration or a refused start.
    #[error("{0}")]
    Config(String),
    /// Storage could not be opened or recovered.
    #[error("{0}")]
    Storage(String),
    /// The WAL or the snapshots are damaged past local repair (a CRC-failed record before
    /// the log's tail, a gap between snapshot and log, an unreadable snapshot): the member
    /// rejoins under a new id ([`crate::rejoin`]) or refuses to start.
    #[error("{0}")]
    Damaged(String),
    /// A listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The member stopped (removed from the cluster, or a fatal error while running).
    #[error("{0}")]
    Stopped(String),
}

struct Opened {
    storage: NodeStorage,
    wal: Wal,
    sm: StateMachine,
    id: u64,
    applied: u64,
    snap_index: u64,
    hs: HardState,
    /// The v3 keyspace as the newest snapshot holds it (restart only), for a keyspace that
    /// is behind that snapshot (its file lost, or a crash before it was flushed).
    v3_snapshot: Option<Vec<u8>>,
}

fn storage_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(e.to_string())
}

/// The other members' peer URLs, as `--initial-cluster` lists them (whom a joining or
/// rejoining member asks).
pub(crate) fn other_peer_urls(cfg: &Config) -> Vec<String> {
    let own = own_peer_urls(cfg);
    cfg.initial_cluster
        .iter()
        .map(|(_, u)| url_string(u))
        .filter(|u| !own.contains(u))
        .collect()
}

/// This member's peer URLs as strings.
pub(crate) fn own_peer_urls(cfg: &Config) -> Vec<String> {
    cfg.initial_advertise_peer_urls
        .iter()
        .map(url_string)
        .collect()
}

fn initial_members(cfg: &Config) -> Members {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, url) in &cfg.initial_cluster {
        by_name
            .entry(name.clone())
            .or_default()
            .push(url_string(url));
    }
    let mut members = Members::default();
    for (name, urls) in by_name {
        let id = member_id(&urls, &cfg.initial_cluster_token, None);
        members.members.insert(
            id,
            Member {
                id,
                name,
                peer_urls: urls,
                client_urls: vec![],
                is_learner: false,
            },
        );
    }
    members
}

/// Open the member's storage, bootstrapping a new cluster's first state, or joining a
/// running cluster, if there is none.
async fn open(
    cfg: &Config,
    disk: &Arc<dyn Disk>,
    snaps: &SnapDir,
    tls: &crate::tls::Tls,
) -> Result<Opened, NodeError> {
    let wal_dir = cfg.wal_path();
    // A rejoin under way: the member's files are not its own any more (`crate::rejoin`).
    if let Some(marker) = crate::rejoin::pending(disk.as_ref(), cfg).map_err(NodeError::Damaged)? {
        return rejoin(cfg, disk, &wal_dir, tls, marker).await;
    }
    if Wal::exists(disk.as_ref(), &wal_dir) {
        return match restart(disk, &wal_dir, snaps) {
            Err(NodeError::Damaged(why)) => {
                let marker =
                    crate::rejoin::begin(disk.as_ref(), cfg, &why).map_err(NodeError::Damaged)?;
                rejoin(cfg, disk, &wal_dir, tls, marker).await
            }
            other => other,
        };
    }
    if cfg.initial_cluster_state == ClusterState::New
        && (cfg.discovery.is_some() || cfg.discovery_srv.is_some())
    {
        let cfg = discover(cfg).await?;
        return bootstrap(&cfg, disk, &wal_dir, snaps);
    }
    match cfg.initial_cluster_state {
        ClusterState::New => bootstrap(cfg, disk, &wal_dir, snaps),
        ClusterState::Existing => join(cfg, disk, &wal_dir, tls).await,
    }
}

/// The initial cluster from `--discovery` or `--discovery-srv`, as a configuration that
/// bootstraps like `--initial-cluster`.
async fn discover(cfg: &Config) -> Result<Config, NodeError> {
    let mut out = cfg.clone();
    let pairs = if let Some(url) = &cfg.discovery {
        let own = own_peer_urls(cfg);
        let id = member_id(&own, &cfg.initial_cluster_token, None);
        crate::discovery::join_by_url(url, &cfg.name, id, &own)
            .await
            .map_err(NodeError::Config)?
    } else {
        let domain = cfg.discovery_srv.as_deref().unwrap_or_default();
        let server = crate::discovery::dns_server(cfg).map_err(NodeError::Config)?;
        let pairs = crate::discovery::cluster_from_srv(
            server,
            domain,
            &cfg.name,
            &cfg.initial_advertise_peer_urls,
        )
        .await
        .map_err(NodeError::Config)?;
        // This member's entry is in the records' spelling (every member computes the same
        // ids from it); it was matched to the advertised URLs by address.
        out.initial_advertise_peer_urls = pairs
            .iter()
            .filter(|(n, _)| *n == cfg.name)
            .filter_map(|(_, u)| url::Url::parse(u).ok())
            .collect();
        if out.initial_advertise_peer_urls.is_empty() {
            return Err(NodeError::Config(format!(
                "--discovery-srv {domain}: no SRV record matches this member's peer URLs ({})",
                own_peer_urls(cfg).join(",")
            )));
        }
        pairs
    };
    let mut initial = Vec::new();
    for (n, u) in pairs {
        let parsed = url::Url::parse(&u)
            .map_err(|e| NodeError::Config(format!("discovered peer URL {u:?}: {e}")))?;
        initial.push((n, parsed));
    }
    tracing::info!(cluster = ?initial.iter().map(|(n, u)| format!("{n}={u}")).collect::<Vec<_>>(), "discovered the initial cluster");
    out.initial_cluster = initial;
    Ok(out)
}

/// Join a running cluster that already added this member (`POST /v2/members`): learn the
/// member's id and the cluster from a peer, then wait for the leader's snapshot.
async fn join(
    cfg: &Config,
    disk: &Arc<dyn Disk>,
    wal_dir: &std::path::Path,
    tls: &crate::tls::Tls,
) -> Result<Opened, NodeError> {
    let mut own = own_peer_urls(cfg);
    own.sort();
    let peers = other_peer_urls(cfg);
    if peers.is_empty() {
        return Err(NodeError::Config(
            "--initial-cluster-state=existing needs the running members in --initial-cluster"
                .into(),
        ));
    }
    let mut last_err = String::new();
    let mut not_added: Option<String> = None;
    for _ in 0..40 {
        for p in &peers {
            let info = match crate::transport::fetch_cluster_info(
                p,
                &cfg.initial_cluster_token,
                tls.peer_client.as_ref(),
            )
            .await
            {
                Ok(i) => i,
                Err(e) => {
                    last_err = format!("{p}: {e}");
                    continue;
                }
            };
            if let Some(e) = info.error {
                return Err(NodeError::Config(format!("refused by {p}: {e}")));
            }
            let Some(me) = info.members.by_peer_urls(&own) else {
                // The add may not have reached this peer yet (the member that answered the
                // POST applied it first): ask the others, and again, before giving up.
                let known: Vec<String> = info
                    .members
                    .members
                    .values()
                    .map(|m| format!("{}={}", m.name, m.peer_urls.join(",")))
                    .collect();
                not_added = Some(format!(
                    "member {} with peer URLs {} has not been added to the cluster (add it first: POST /v2/members); the cluster has {}",
                    cfg.name,
                    own.join(","),
                    known.join(" ")
                ));
                continue;
            };
            if !me.name.is_empty() && me.name != cfg.name {
                return Err(NodeError::Config(format!(
                    "the cluster knows peer URLs {} as member {:?}, not {:?}",
                    own.join(","),
                    me.name,
                    cfg.name
                )));
            }
            return joined(disk, wal_dir, me.id, info.cluster_id, info.members);
        }
        crate::rt::sleep(Duration::from_millis(250)).await;
    }
    if let Some(e) = not_added {
        return Err(NodeError::Config(e));
    }
    Err(NodeError::Config(format!(
        "could not reach any member of the cluster to join it ({last_err})"
    )))
}

/// A member the cluster added as `id` starts a new, empty log and waits for the leader's
/// snapshot (a member joining with `--initial-cluster-state existing`, or rejoining).
fn joined(
    disk: &Arc<dyn Disk>,
    wal_dir: &std::path::Path,
    id: u64,
    cluster_id: u64,
    members: crate::cluster::Members,
) -> Result<Opened, NodeError> {
    let wal = Wal::create(
        Arc::clone(disk),
        wal_dir,
        WalMeta {
            member_id: id,
            cluster_id,
            joined: Some(members.clone()),
        },
    )
    .map_err(storage_err)?;
    tracing::info!(member = %format!("{id:x}"), cluster = %format!("{cluster_id:x}"), "joining a running cluster");
    Ok(Opened {
        storage: NodeStorage::new(),
        wal,
        sm: StateMachine::new(members, cluster_id),
        id,
        applied: 0,
        snap_index: 0,
        hs: HardState::default(),
        v3_snapshot: None,
    })
}

/// Carry on a rejoin (see [`crate::rejoin`]): the old id out, a new one in, a new log. The
/// marker goes only once the new log exists, so Raft never runs on the damaged files or on
/// a half-made log.
async fn rejoin(
    cfg: &Config,
    disk: &Arc<dyn Disk>,
    wal_dir: &std::path::Path,
    tls: &crate::tls::Tls,
    marker: crate::rejoin::Marker,
) -> Result<Opened, NodeError> {
    let mut dirs = vec![wal_dir.to_path_buf()];
    if cfg.snap_path() != wal_dir {
        dirs.push(cfg.snap_path());
    }
    let j = crate::rejoin::run(disk, cfg, &dirs, tls.peer_client.as_ref(), marker)
        .await
        .map_err(NodeError::Damaged)?;
    let opened = joined(disk, wal_dir, j.id, j.cluster_id, j.members)?;
    crate::rejoin::finish(disk.as_ref(), cfg).map_err(NodeError::Storage)?;
    tracing::warn!(member = %format!("{:x}", j.id), "rejoined the cluster under a new id; the leader's snapshot brings the data back");
    Ok(opened)
}

fn bootstrap(
    cfg: &Config,
    disk: &Arc<dyn Disk>,
    wal_dir: &std::path::Path,
    snaps: &SnapDir,
) -> Result<Opened, NodeError> {
    let members = initial_members(cfg);
    let own = own_peer_urls(cfg);
    let me = members
        .members
        .values()
        .find(|m| m.name == cfg.name)
        .ok_or_else(|| {
            NodeError::Config(format!(
                "--initial-cluster has no member named {:?}",
                cfg.name
            ))
        })?;
    let mut mine = me.peer_urls.clone();
    let mut adv = own.clone();
    mine.sort();
    adv.sort();
    if mine != adv {
        return Err(NodeError::Config(format!(
            "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
            cfg.name,
            mine.join(","),
            adv.join(",")
        )));
    }
    let id = me.id;
    let ids: Vec<u64> = members.members.keys().copied().collect();
    let cid = cluster_id(&ids);
    let sm = StateMachine::new(members, cid);
    // A v3 keyspace to start with (detcd's restore: every member is given the same file).
    let v3 = match &cfg.restore_v3_snapshot {
        Some(p) => {
            let file = disk.read(p).map_err(|e| {
                NodeError::Config(format!(
                    "--experimental-restore-v3-snapshot {}: {e}",
                    p.display()
                ))
            })?;
            let dump = crate::mvcc::dump_of_snapshot_file(&file).map_err(|e| {
                NodeError::Config(format!(
                    "--experimental-restore-v3-snapshot {}: {e}",
                    p.display()
                ))
            })?;
            Some(dump.to_vec())
        }
        None => None,
    };
    // The first state of every member of a new cluster is the same snapshot at index 1, so
    // they all start from identical logs.
    let mut snap = Snapshot {
        data: match &v3 {
            Some(v3) => crate::sm::with_v3(sm.snapshot(), v3),
            None => sm.snapshot(),
        }
        .into(),
        ..Default::default()
    };
    let md = snap.mut_metadata();
    md.index = 1;
    md.term = 1;
    let mut cs = ConfState::default();
    cs.set_voters(ids);
    md.set_conf_state(cs);
    snaps.save(&snap).map_err(storage_err)?;
    let mut wal = Wal::create(
        Arc::clone(disk),
        wal_dir,
        WalMeta {
            member_id: id,
            cluster_id: cid,
            joined: None,
        },
    )
    .map_err(storage_err)?;
    let hs = HardState {
        term: 1,
        commit: 1,
        ..Default::default()
    };
    wal.save(Some((1, 1)), &[], Some(&hs))
        .map_err(storage_err)?;
    let storage = NodeStorage::new();
    storage
        .mem
        .wl()
        .apply_snapshot(snap.clone())
        .map_err(storage_err)?;
    storage.set_snapshot(snap);
    tracing::info!(member = %format!("{id:x}"), cluster = %format!("{cid:x}"), "bootstrapped a new cluster member");
    Ok(Opened {
        storage,
        wal,
        sm,
        id,
        applied: 1,
        snap_index: 1,
        hs,
        v3_snapshot: v3,
    })
}

fn restart(
    disk: &Arc<dyn Disk>,
    wal_dir: &std::path::Path,
    snaps: &SnapDir,
) -> Result<Opened, NodeError> {
    let (mut wal, rec) = Wal::open(Arc::clone(disk), wal_dir).map_err(|e| match e {
        crate::storage::wal::WalError::Corrupt { .. }
        | crate::storage::wal::WalError::Unreadable { .. } => NodeError::Damaged(e.to_string()),
        other => storage_err(other),
    })?;
    let meta = wal.meta().clone();
    let storage = NodeStorage::new();
    let snap = snaps.load_newest().map_err(storage_err)?;
    let v3_snapshot;
    let (sm, snap_index, snap_term) = match snap {
        Some(snap) => {
            let (mut sm, v3) = StateMachine::restore(&snap.data).map_err(NodeError::Damaged)?;
            v3_snapshot = v3.map(<[u8]>::to_vec);
            let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
            if sm.meta.applied_index == 0 {
                // A bootstrap snapshot, or one written before detcd recorded its index.
                sm.meta.applied_index = index;
            }
            if sm.meta.applied_index != index {
                return Err(NodeError::Damaged(format!(
                    "snapshot at index {index} holds the state of index {}; refusing to start",
                    sm.meta.applied_index
                )));
            }
            storage
                .mem
                .wl()
                .apply_snapshot(snap.clone())
                .map_err(storage_err)?;
            storage.set_snapshot(snap);
            (sm, index, term)
        }
        None => {
            // A member that joined and crashed before the leader's first snapshot reached it
            // has only its term and vote: it starts again as it joined, keeping them.
            if let (Some(members), None, true) =
                (meta.joined.clone(), rec.snapshot, rec.entries.is_empty())
            {
                let mut hs = rec.hard_state;
                hs.commit = 0;
                storage.mem.wl().set_hardstate(hs.clone());
                tracing::info!(member = %format!("{:x}", meta.member_id),
                    "recovered a joining member that had not received its first snapshot yet");
                return Ok(Opened {
                    storage,
                    wal,
                    sm: StateMachine::new(members, meta.cluster_id),
                    id: meta.member_id,
                    applied: 0,
                    snap_index: 0,
                    hs,
                    v3_snapshot: None,
                });
            }
            return Err(NodeError::Damaged(format!(
                "{}: WAL present but no readable snapshot",
                wal_dir.display()
            )));
        }
    };
    if let Some((mark, _)) = rec.snapshot {
        if mark > snap_index {
            return Err(NodeError::Damaged(format!(
                "the WAL refers to snapshot {mark} but the newest readable snapshot is {snap_index}: refusing to start with a gap in the log"
            )));
        }
    }
    if rec
        .snapshot
        .map_or(snap_index > 0, |(mark, _)| mark < snap_index)
    {
        // The member crashed between writing a snapshot file and recording it in the WAL
        // (a leader's snapshot being installed): record it now, as the install would have.
        // Without the mark, the entries that follow the snapshot would be appended after
        // the older entries still in the log, and the next restart would find a gap.
        wal.save(Some((snap_index, snap_term)), &[], None)
            .map_err(storage_err)?;
        tracing::info!(
            snapshot = snap_index,
            "recorded in the WAL the snapshot it did not mention yet"
        );
    }
    let entries: Vec<_> = rec
        .entries
        .into_iter()
        .filter(|e| e.index > snap_index)
        .collect();
    if let Some(first) = entries.first() {
        if first.index != snap_index + 1 {
            return Err(NodeError::Damaged(format!(
                "the WAL resumes at entry {} after snapshot {snap_index}: refusing to start with a gap in the log",
                first.index
            )));
        }
        storage.mem.wl().append(&entries).map_err(storage_err)?;
    }
    let mut hs = rec.hard_state;
    hs.commit = hs.commit.max(snap_index);
    storage.mem.wl().set_hardstate(hs.clone());
    tracing::info!(member = %format!("{:x}", meta.member_id), snapshot = snap_index, entries = entries.len(),
        torn_bytes = rec.torn_bytes, "recovered from the WAL");
    Ok(Opened {
        storage,
        wal,
        sm,
        id: meta.member_id,
        applied: snap_index,
        snap_index,
        hs,
        v3_snapshot,
    })
}

/// Open the v3 keyspace (`member/snap/db`, as etcd's backend), creating it on first start.
/// A keyspace behind the newest snapshot (its file lost, or a crash before its last durable
/// commit reached a snapshot it was meant to reach) is rebuilt from the snapshot's v3 part;
/// entries after it are re-applied from the WAL, and those it already holds are skipped.
///
/// A damaged keyspace file ([`crate::mvcc::is_damage`]) is rebuilt the same way, without
/// an operator: the file is kept beside as `db.damaged` (`db.damaged.1`, ... when that is
/// taken) and a new one starts empty. This
/// loses nothing and breaks no Raft rule: the keyspace is derived state, and the snapshot
/// (its v3 part; a snapshot without one is a new cluster's first, taken before any v3
/// write) and the WAL after it, each checked by their own checksums, hold everything it held.
fn open_mvcc(
    cfg: &Config,
    disk: &Arc<dyn Disk>,
    opened: &Opened,
) -> Result<crate::mvcc::Mvcc, NodeError> {
    let path = cfg.snap_path().join("db");
    let opts = crate::mvcc::MvccOptions {
        max_txn_ops: cfg.max_txn_ops,
        cache_bytes: cfg.backend_cache_bytes,
        min_lease_ttl: crate::lease::min_ttl(cfg.heartbeat_interval_ms, cfg.election_timeout_ms),
    };
    let failed = |e: std::io::Error| NodeError::Storage(format!("{}: {e}", path.display()));
    let mut mvcc = match crate::mvcc::Mvcc::open(Arc::clone(disk), &path, opts.clone()) {
        Ok(m) => m,
        Err(e) if crate::mvcc::is_damage(&e) => {
            // Each damaged file is kept: `db.damaged`, then `db.damaged.1`, ...
            let aside = (0..)
                .map(|n| match n {
                    0 => path.with_file_name("db.damaged"),
                    n => path.with_file_name(format!("db.damaged.{n}")),
                })
                .find(|p| !disk.exists(p))
                .expect("an unused name");
            tracing::error!(file = %path.display(), error = %e, kept_as = %aside.display(),
                snapshot = opened.snap_index,
                "the v3 keyspace is damaged: rebuilding it from the snapshot and the WAL");
            disk.rename(&path, &aside).map_err(failed)?;
            crate::mvcc::Mvcc::open(Arc::clone(disk), &path, opts).map_err(failed)?
        }
        Err(e) => return Err(failed(e)),
    };
    let held = mvcc.consistent_index();
    if held < opened.snap_index {
        if let Some(v3) = &opened.v3_snapshot {
            mvcc.restore(v3, opened.snap_index).map_err(|e| {
                NodeError::Storage(format!(
                    "{}: restoring from snapshot {}: {e}",
                    path.display(),
                    opened.snap_index
                ))
            })?;
            tracing::info!(
                held,
                snapshot = opened.snap_index,
                "rebuilt the v3 keyspace from the snapshot"
            );
        }
    }
    Ok(mvcc)
}

/// The period of watch progress notifications as etcd 3.4's `NewWatchServer` sets it from
/// `--experimental-watch-progress-notify-interval`: zero (or unset) leaves its 10-minute
/// default, and anything under 100 ms is raised to 100 ms (`minWatchProgressInterval`).
pub fn watch_progress_interval(flag: Duration) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(600);
    const MIN: Duration = Duration::from_millis(100);
    if flag.is_zero() {
        DEFAULT
    } else if flag < MIN {
        tracing::warn!(
            given = ?flag,
            "adjusting watch progress notify interval to minimum period 100ms"
        );
        MIN
    } else {
        flag
    }
}

async fn bind(url: &url::Url) -> Result<TcpListener, NodeError> {
    let addr = host_port(&url_string(url));
    TcpListener::bind(&addr)
        .await
        .map_err(|source| NodeError::Listen { addr, source })
}

/// Run a member until it stops. Returns an error when it cannot start, or when it stopped
/// because it was removed from the cluster or hit a fatal error.
pub async fn run(cfg: Config, env: Env) -> Result<(), NodeError> {
    let disk = env.disk;
    let snaps = SnapDir::open(Arc::clone(&disk), &cfg.snap_path()).map_err(storage_err)?;
    let opened = open(&cfg, &disk, &snaps, &env.tls).await?;
    // A removed member's data dir must not rejoin silently (etcd refuses it too).
    if opened.sm.meta.members.removed.contains(&opened.id) {
        return Err(NodeError::Config(format!(
            "member {:x} was permanently removed from the cluster; its data dir {} cannot rejoin it \
             (remove the data dir, then add the member again with POST /v2/members)",
            opened.id,
            cfg.data_dir.display()
        )));
    }
    let peer_listeners = {
        let mut v = Vec::new();
        for u in &cfg.listen_peer_urls {
            v.push((bind(u).await?, u.scheme() == "https"));
        }
        v
    };
    let client_listeners = {
        let mut v = Vec::new();
        for u in &cfg.listen_client_urls {
            v.push((bind(u).await?, u.scheme() == "https"));
        }
        v
    };

    let heartbeat = Duration::from_millis(cfg.heartbeat_interval_ms.max(1));
    let election_ticks =
        (cfg.election_timeout_ms / cfg.heartbeat_interval_ms.max(1)).max(2) as usize;
    let raft_cfg = raft::Config {
        id: opened.id,
        election_tick: election_ticks,
        heartbeat_tick: 1,
        applied: opened.applied,
        max_size_per_msg: crate::raft::MAX_MSG_BYTES,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        // Off: raft-rs 0.7's batching appends new entries to a pending MsgAppend to the
        // same peer whenever that message has no entries yet, without checking that they
        // follow its index. After a rejection resets a follower's progress, a pending empty
        // append (index 2088, a commit notice) took entries 2082..2088, and the follower,
        // counting index + entries, acknowledged 2095 while holding 2088; the leader's commit
        // then ran past the follower's log (v3-swarm seed 106). The transport batches frames
        // per write anyway.
        batch_append: false,
        ..Default::default()
    };
    raft_cfg
        .validate()
        .map_err(|e| NodeError::Config(format!("raft config: {e}")))?;
    let raw = RawNode::new(
        &raft_cfg,
        opened.storage.clone(),
        &crate::raft::logger::logger(),
    )
    .map_err(|e| NodeError::Storage(format!("raft: {e}")))?;

    let mvcc = open_mvcc(&cfg, &disk, &opened)?;
    let (v3_rev, v3_compacted) = (mvcc.revision(), mvcc.compact_revision());
    let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
    let (applied_tx, _) = watch::channel(opened.applied);
    let (leader_tx, _) = watch::channel(0u64);
    let (stopped_tx, _) = watch::channel(None);
    let members = opened.sm.meta.members.clone();
    let cid = opened.sm.meta.cluster_id;
    let is_learner = (opened.sm.meta.members.members.get(&opened.id)).is_some_and(|m| m.is_learner);
    let shared = Arc::new(Shared {
        id: opened.id,
        sm: Mutex::new(opened.sm),
        mvcc: Mutex::new(mvcc),
        status: Mutex::new(Status {
            applied: opened.applied,
            commit: opened.hs.commit,
            term: opened.hs.term,
            durable_term: opened.hs.term,
            durable_vote: opened.hs.vote,
            is_learner,
            ..Status::default()
        }),
        waiters: Mutex::new(Default::default()),
        applied: applied_tx,
        leader: leader_tx,
        inbox: inbox_tx.clone(),
        clock: env.clock.clone(),
        rng: NodeRng::from_seed(env.seed),
        counters: Counters::default(),
        stopped: stopped_tx,
        probe: env.probe.clone(),
        lessor: Mutex::new(crate::lease::Lessor::new()),
        watch_hub: Arc::new(crate::watch::Hub::new(v3_rev, v3_compacted)),
    });
    let peer_tls = crate::transport::PeerTls {
        server: env.tls.peer_server.clone(),
        client: env.tls.peer_client.clone(),
    };
    let transport = Transport::new(
        opened.id,
        cid,
        cfg.initial_cluster_token.clone(),
        inbox_tx,
        peer_tls,
    );
    transport.set_members(&members);
    for (l, https) in peer_listeners {
        crate::rt::spawn(Arc::clone(&transport).serve(l, https));
    }
    let lp = LoopConfig {
        tick: heartbeat,
        election_ticks,
        snapshot_count: cfg.snapshot_count.max(1),
        catchup_entries: 5000.min(cfg.snapshot_count.max(1)),
        max_snapshots: cfg.max_snapshots as usize,
        max_wals: cfg.max_wals as usize,
        sync_interval: Duration::from_millis(500),
        leader_sync_delay: Duration::from_millis(cfg.leader_sync_delay_ms),
    };
    let raft_loop = RaftLoop::new(LoopParts {
        raw,
        storage: opened.storage,
        wal: opened.wal.tuned(env.probe.clone(), env.wal_segment_bytes),
        disk: Arc::clone(&disk),
        snaps,
        shared: Arc::clone(&shared),
        transport: Arc::clone(&transport),
        inbox: inbox_rx,
        cfg: lp,
        snap_index: opened.snap_index,
        applied: opened.applied,
        hs: opened.hs,
    });
    crate::rt::spawn(raft_loop.run());

    let client_urls: Vec<String> = cfg.advertise_client_urls.iter().map(url_string).collect();
    let ctx = Arc::new(crate::api::Ctx {
        shared: Arc::clone(&shared),
        name: cfg.name.clone(),
        client_urls: client_urls.clone(),
        peer_urls: own_peer_urls(&cfg),
        start_ms: env.clock.wall_ms(),
        request_timeout: Duration::from_secs(5)
            + Duration::from_millis(2 * cfg.election_timeout_ms),
        read_retry: Duration::from_millis(cfg.election_timeout_ms.max(100)),
        strict_reconfig_check: cfg.strict_reconfig_check,
        token: cfg.initial_cluster_token.clone(),
        transport: Arc::clone(&transport),
        client_cert_auth: env.tls.client_cert_auth,
        verified: Default::default(),
        cors: cfg.cors.clone(),
        max_request_bytes: cfg.max_request_bytes,
        max_txn_ops: cfg.max_txn_ops,
        // etcd's `electionTimeout()`: the election ticks Raft counts, in heartbeats.
        election_timeout: heartbeat * election_ticks as u32,
        min_lease_ttl: crate::lease::min_ttl(cfg.heartbeat_interval_ms, cfg.election_timeout_ms),
        watch_progress_interval: watch_progress_interval(cfg.watch_progress_notify_interval),
        quota_backend_bytes: cfg.quota_backend_bytes,
    });
    // Leases: the leader answers forwarded KeepAlive and TimeToLive requests (a weak
    // reference: the transport should not keep ctx alive). Expiry is the Ready loop's.
    {
        let weak = Arc::downgrade(&ctx);
        transport.set_lease_handler(Arc::new(move |req| match weak.upgrade() {
            Some(ctx) => crate::api::v3::answer_lease(&ctx, req),
            None => crate::transport::LeaseAnswer {
                not_leader: true,
                ..Default::default()
            },
        }));
    }
    // Promotions: only the leader knows whether a learner is in sync, so followers forward
    // them (etcd's peer endpoint `/members/promote/<id>`).
    {
        let weak = Arc::downgrade(&ctx);
        transport.set_promote_handler(Arc::new(move |id| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(ctx) => crate::api::answer_promote(&ctx, id).await,
                    None => crate::transport::PromoteAnswer::NotLeader,
                }
            })
        }));
    }
    // Rejoin steps of a member whose storage is damaged (detcd's own: `crate::rejoin`).
    {
        let weak = Arc::downgrade(&ctx);
        transport.set_rejoin_handler(Arc::new(move |step| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(ctx) => crate::api::answer_rejoin(&ctx, step).await,
                    None => crate::transport::RejoinAnswer::Failed("stopping".into()),
                }
            })
        }));
    }
    // As etcd does (its ReadyNotify), client requests are served only once this member has
    // published its name and client URLs through Raft: until then connections wait in the
    // listen backlog. So a member without a quorum does not answer clients at all, and the
    // first write of a fresh cluster lands after the membership entries, as with etcd.
    {
        let (shared, ctx, name, tls) = (
            Arc::clone(&shared),
            Arc::clone(&ctx),
            cfg.name.clone(),
            env.tls.client.clone(),
        );
        crate::rt::spawn(async move {
            publish(Arc::clone(&shared), name, client_urls).await;
            record_cluster_version(&shared).await;
            for (l, https) in client_listeners {
                let tls = if https { tls.clone() } else { None };
                crate::rt::spawn(crate::api::serve(l, Arc::clone(&ctx), tls));
            }
        });
    }
    tracing::info!(name = %cfg.name, member = %format!("{:x}", shared.id), cluster = %format!("{cid:x}"), "detcd member started");
    if let Some(f) = env.on_start {
        f(Arc::clone(&shared));
    }
    let mut stopped = shared.stopped.subscribe();
    let reason = match stopped.wait_for(|s| s.is_some()).await {
        Ok(()) => stopped.borrow().clone(),
        Err(_) => None,
    };
    Err(NodeError::Stopped(
        reason.unwrap_or_else(|| "stopped".into()),
    ))
}

/// A member publishes its name and client URLs through Raft once it runs, as etcd does, so
/// every member's `/v2/members` shows them.
/// Like etcd, it publishes on every start, until the publication is applied.
async fn publish(shared: Arc<Shared>, name: String, client_urls: Vec<String>) {
    loop {
        let op = Op::Attributes {
            member_id: shared.id,
            name: name.clone(),
            client_urls: client_urls.clone(),
        };
        if shared.propose(op, Duration::from_secs(5)).await.is_ok() {
            return;
        }
        crate::rt::sleep(Duration::from_millis(100)).await;
    }
}

/// Before it answers clients, a member makes sure the cluster version is recorded (etcd 3.4
/// is at its cluster-version entry when it first reports healthy: a fresh single member
/// answers its first request at index 3, not 2). The entry is idempotent, so every member
/// may propose it; the leader's periodic SYNC proposes it too.
async fn record_cluster_version(shared: &Shared) {
    loop {
        let recorded = shared
            .sm
            .lock()
            .expect("sm lock")
            .meta
            .cluster_version
            .is_some();
        if recorded {
            return;
        }
        let op = Op::ClusterVersion(crate::api::CLUSTER_VERSION.to_string());
        if shared.propose(op, Duration::from_secs(5)).await.is_ok() {
            return;
        }
        crate::rt::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FileDisk;

    fn joined_wal(dir: &std::path::Path, joined: Option<Members>) -> (Arc<dyn Disk>, SnapDir) {
        let disk: Arc<dyn Disk> = Arc::new(FileDisk);
        let snaps = SnapDir::open(Arc::clone(&disk), &dir.join("snap")).expect("snap dir");
        let mut wal = Wal::create(
            Arc::clone(&disk),
            &dir.join("wal"),
            WalMeta {
                member_id: 7,
                cluster_id: 9,
                joined,
            },
        )
        .expect("wal");
        let hs = HardState {
            term: 3,
            vote: 2,
            ..Default::default()
        };
        wal.save(None, &[], Some(&hs)).expect("hard state");
        (disk, snaps)
    }

    #[test]
    fn a_joined_member_without_its_first_snapshot_restarts_from_the_members_it_joined_with() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut members = Members::default();
        for id in [1u64, 7] {
            members.members.insert(
                id,
                Member {
                    id,
                    name: String::new(),
                    peer_urls: vec![format!("http://127.0.0.1:{id}")],
                    client_urls: vec![],
                    is_learner: false,
                },
            );
        }
        let (disk, snaps) = joined_wal(tmp.path(), Some(members.clone()));
        let opened = restart(&disk, &tmp.path().join("wal"), &snaps).expect("restarts");
        assert_eq!((opened.id, opened.applied, opened.snap_index), (7, 0, 0));
        assert_eq!(
            (opened.hs.term, opened.hs.vote, opened.hs.commit),
            (3, 2, 0)
        );
        assert_eq!(opened.sm.meta.members, members);
        assert_eq!(opened.sm.meta.cluster_id, 9);
    }

    #[test]
    fn a_bootstrapped_wal_without_a_snapshot_still_refuses_to_start() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (disk, snaps) = joined_wal(tmp.path(), None);
        let err = restart(&disk, &tmp.path().join("wal"), &snaps)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("no readable snapshot"), "{err}");
    }
}
