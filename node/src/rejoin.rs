//! Rejoin of a member whose log or snapshots are damaged past local repair (detcd's own;
//! etcd 3.4 refuses to start and leaves the member's replacement to the operator).
//!
//! Such a member may have acknowledged entries it no longer holds, and may have voted in a
//! term it no longer remembers. Truncating its log and carrying on under its id could lose
//! committed writes or make it vote twice (Alagappan et al., "Protocol-Aware Recovery for
//! Consensus-Based Storage", FAST 2018). So it never speaks under its old id again. It does
//! what an operator does, through a running member's peer port:
//!
//! 1. It writes a marker (`<data-dir>/member-rejoin.json`, durably) and moves its WAL and
//!    snapshot directories' files aside (`wal.damaged.N`, `snap.damaged.N`, kept for the
//!    operator). From here on the marker, not the log, says what the member is.
//! 2. It asks a member to remove the member with its peer URLs (`RejoinStep::Remove`). The
//!    removal is a conf change committed by a quorum of the *other* members, so every entry
//!    the old id ever helped commit is on a quorum without it.
//! 3. It asks for a member with its peer URLs to be added (`RejoinStep::Add`): a new id,
//!    with the strict reconfiguration check, as `POST /v2/members`.
//! 4. It creates a new, empty log under the new id (as a member joining with
//!    `--initial-cluster-state existing`), then deletes the marker. Only then does Raft run:
//!    the leader sends it a snapshot. Its new id never acknowledged or voted for anything.
//!
//! Each step is idempotent (a removal finds no member with the URLs; an addition finds the
//! member it added), so a member that crashes or times out mid-way just starts again, and
//! the marker sends it back here. Where it cannot rejoin (no other member in
//! `--initial-cluster`; the flag off) it refuses to start and says what the operator can do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::Members;
use crate::config::Config;
use crate::storage::Disk;
use crate::transport::{RejoinAnswer, RejoinStep};

/// How far a rejoin got (the marker's content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// The cluster may still hold the damaged member's old id.
    Remove,
    /// The old id is gone (`removed`: which one, when this member's ask removed it).
    Add {
        /// The id removed, as the answering member said.
        removed: Option<u64>,
    },
}

/// The marker of a rejoin under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The stage reached.
    pub stage: Stage,
    /// What damage started it.
    pub why: String,
}

/// A member's place in the cluster once it is added back.
#[derive(Debug)]
pub struct Joined {
    /// Its new id.
    pub id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// The members, this one among them.
    pub members: Members,
}

/// Where the marker lives (beside `member/`, so moving the member's files never moves it).
pub fn marker_path(cfg: &Config) -> PathBuf {
    cfg.data_dir.join("member-rejoin.json")
}

/// The marker of a rejoin under way, if there is one. A marker whose bytes are damaged (or
/// cannot be read back) still says that a rejoin was under way, which is all that safety
/// needs: the rejoin starts again from its first step, which is idempotent (`swarm` seed 142:
/// a bit flipped in the marker made the member refuse to start).
pub fn pending(disk: &dyn Disk, cfg: &Config) -> Result<Option<Marker>, String> {
    let path = marker_path(cfg);
    if !disk.exists(&path) {
        return Ok(None);
    }
    let parsed = disk
        .read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<Marker>(&bytes).map_err(|e| e.to_string()));
    Ok(Some(parsed.unwrap_or_else(|e| {
        tracing::warn!(marker = %path.display(), error = %e,
            "the rejoin marker is damaged: the rejoin starts again from its first step");
        Marker {
            stage: Stage::Remove,
            why: format!("a rejoin was under way (its marker was damaged: {e})"),
        }
    })))
}

fn save(disk: &dyn Disk, cfg: &Config, marker: &Marker) -> Result<(), String> {
    let path = marker_path(cfg);
    disk.create_dir_all(&cfg.data_dir)
        .and_then(|()| {
            disk.write_atomic(
                &path,
                &serde_json::to_vec(marker).expect("marker serialises"),
            )
        })
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The rejoin is complete (the new log exists): remove the marker.
pub fn finish(disk: &dyn Disk, cfg: &Config) -> Result<(), String> {
    let path = marker_path(cfg);
    disk.remove(&path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A member found damage (`why`) that it cannot repair from its own files. With the flag
/// on and other members to ask, start a rejoin: the marker, durably, then the damaged files
/// moved aside. Otherwise the refusal to start, with what the operator can do.
pub fn begin(disk: &dyn Disk, cfg: &Config, why: &str) -> Result<Marker, String> {
    if !cfg.rejoin_when_damaged {
        return Err(format!(
            "{why}. To replace this member: remove it (etcdctl member remove <id>), move its data dir away, \
             add it back (etcdctl member add) and start it with --initial-cluster-state=existing; \
             or start it with --experimental-rejoin-when-damaged=true to have it do that itself"
        ));
    }
    if crate::server::other_peer_urls(cfg).is_empty() {
        return Err(format!(
            "{why}. No other member is listed in --initial-cluster to rejoin from: \
             restore the data dir from a backup (etcdctl snapshot restore)"
        ));
    }
    tracing::error!(damage = %why,
        "this member's storage is damaged past local repair: it will rejoin the cluster under a new id (its files are kept aside)");
    let marker = Marker {
        stage: Stage::Remove,
        why: why.to_string(),
    };
    save(disk, cfg, &marker)?;
    Ok(marker)
}

/// Move every file of `dir` into a new sibling `<dir>.damaged.N` (kept for the operator;
/// nothing reads it again). Returns where, when there was anything to move.
fn move_aside(disk: &dyn Disk, dir: &Path) -> Result<Option<PathBuf>, String> {
    let names = disk
        .list(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    if names.is_empty() {
        return Ok(None);
    }
    let base = dir.file_name().map_or_else(
        || "member".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let aside = (1..)
        .map(|n| dir.with_file_name(format!("{base}.damaged.{n}")))
        .find(|p| disk.list(p).map_or(true, |v| v.is_empty()) && !disk.exists(p))
        .expect("an unused name");
    disk.create_dir_all(&aside)
        .map_err(|e| format!("{}: {e}", aside.display()))?;
    for n in names {
        disk.rename(&dir.join(&n), &aside.join(&n))
            .map_err(|e| format!("moving {} aside: {e}", dir.join(&n).display()))?;
    }
    Ok(Some(aside))
}

/// How long one start of the member keeps asking before it gives up (it asks again on its
/// next start: the marker stays).
const REJOIN_PATIENCE: Duration = Duration::from_secs(60);
/// How long one ask may take (the answering member waits for its conf change to apply).
const ASK_LIMIT: Duration = Duration::from_secs(10);
/// The pause between rounds of asks.
const ASK_PAUSE: Duration = Duration::from_millis(500);

/// Carry a rejoin from `marker` to the point where the member's new log can be created:
/// the damaged files out of the way, the old id removed, the new one added.
pub async fn run(
    disk: &Arc<dyn Disk>,
    cfg: &Config,
    dirs: &[PathBuf],
    tls: Option<&Arc<rustls::ClientConfig>>,
    mut marker: Marker,
) -> Result<Joined, String> {
    // Whatever is in the member's directories now is the damaged member's (or a log this
    // rejoin created and crashed before using: Raft never ran on it while the marker was
    // there). None of it may be used.
    for dir in dirs {
        if let Some(aside) = move_aside(disk.as_ref(), dir)? {
            tracing::warn!(from = %dir.display(), to = %aside.display(), "kept the damaged member's files aside");
        }
    }
    let own = crate::server::own_peer_urls(cfg);
    let peers = crate::server::other_peer_urls(cfg);
    // The runtime seam's time (simulated under madsim); a member's clock skew does not
    // matter to how long it keeps asking.
    let started = crate::rt::Instant::now();
    let mut last = String::from("no member answered");
    loop {
        for p in &peers {
            let step = match &marker.stage {
                Stage::Remove => RejoinStep::Remove(own.clone()),
                Stage::Add { .. } => RejoinStep::Add(own.clone()),
            };
            let answer =
                crate::transport::ask_rejoin(p, &cfg.initial_cluster_token, step, tls, ASK_LIMIT)
                    .await;
            match answer {
                Ok(RejoinAnswer::Removed(removed)) => {
                    tracing::info!(by = %p, removed = ?removed.map(crate::cluster::id_hex),
                        "rejoin: the damaged member's old id is out of the cluster");
                    marker.stage = Stage::Add { removed };
                    save(disk.as_ref(), cfg, &marker)?;
                }
                Ok(RejoinAnswer::Added {
                    id,
                    cluster_id,
                    members,
                }) => {
                    if !members.members.contains_key(&id) {
                        last = format!("{p}: answered an addition its members do not show");
                        continue;
                    }
                    // Never the id this member had (the removal's answer named it): a
                    // member that had not applied the removal yet could name it as added.
                    let old = match &marker.stage {
                        Stage::Add { removed } => *removed,
                        Stage::Remove => None,
                    };
                    if Some(id) == old || members.removed.contains(&id) {
                        last = format!(
                            "{p}: answered with the removed id {}",
                            crate::cluster::id_hex(id)
                        );
                        continue;
                    }
                    tracing::info!(by = %p, member = %crate::cluster::id_hex(id),
                        "rejoin: added back under a new id");
                    return Ok(Joined {
                        id,
                        cluster_id,
                        members,
                    });
                }
                Ok(RejoinAnswer::Failed(why)) => last = format!("{p}: {why}"),
                Err(e) => last = format!("{p}: {e}"),
            }
        }
        if started.elapsed() >= REJOIN_PATIENCE {
            return Err(format!(
                "could not rejoin the cluster within {} s ({last}); the rejoin goes on at the next start ({} is kept). \
                 It needs a quorum of the other members running",
                REJOIN_PATIENCE.as_secs(),
                marker_path(cfg).display()
            ));
        }
        crate::rt::sleep(ASK_PAUSE).await;
    }
}
