//! Snapshots: taking one every `snapshot_count` entries (and after a membership change), and
//! installing the leader's.

use std::sync::Arc;

use raft::eraftpb::Snapshot;

use super::conf::check_members_match_conf;
use super::{LoopError, RaftLoop};
use crate::failpoints;
use crate::raft::Counters;
use crate::sm::StateMachine;

impl RaftLoop {
    /// Duty 2: a snapshot from the leader replaces our state.
    pub(super) fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), LoopError> {
        let md = snap.get_metadata().clone();
        let (mut sm, v3) =
            StateMachine::restore(&snap.data).map_err(|reason| LoopError::BadSnapshot {
                index: md.index,
                reason,
            })?;
        self.check_snapshot_state(&sm, &md);
        sm.meta.applied_index = md.index;
        // The v3 keyspace first, durably: once the snapshot is recorded, the log behind it
        // is gone, and the keyspace must already hold what it held.
        {
            let mut mvcc = self.shared.mvcc.lock().expect("mvcc lock");
            let before = mvcc.revision();
            match v3 {
                Some(v3) => mvcc.restore(v3, md.index),
                // A snapshot without the v3 part comes from a leader that has never taken one
                // since v3 writes existed: only a new cluster's first snapshot.
                None => mvcc.restore(&crate::mvcc::Mvcc::empty_dump(), md.index),
            }
            .map_err(LoopError::V3Backend)?;
            let (held, after) = (mvcc.consistent_index(), mvcc.revision());
            let probe = &self.shared.probe;
            probe.invariant(held == md.index, "v3-consistent-index", || {
                format!(
                    "the v3 keyspace holds index {held} after installing snapshot {}",
                    md.index
                )
            });
            probe.invariant(after >= before, "v3-revision-monotonic", || {
                format!("the leader's snapshot takes the v3 revision back: {before} -> {after}")
            });
            // Watchers behind the snapshot's revision read it from the restored keyspace.
            self.shared
                .watch_hub
                .publish(before, after, mvcc.compact_revision(), None);
        }
        self.snaps.save(&snap).map_err(LoopError::SnapshotFile)?;
        self.shared.probe.failpoint(failpoints::SNAPSHOT_INSTALL);
        self.wal.save(Some((md.index, md.term)), &[], None)?;
        self.storage.mem.wl().apply_snapshot(snap.clone())?;
        self.storage.set_snapshot(snap);
        self.snap_index = md.index;
        self.applied = md.index;
        let members = sm.meta.members.clone();
        *self.shared.sm.lock().expect("sm lock") = sm;
        self.transport.set_members(&members);
        self.shared.applied.send_replace(md.index);
        tracing::info!(
            index = md.index,
            term = md.term,
            "raft: installed snapshot from the leader"
        );
        Ok(())
    }

    /// Invariants of a snapshot from the leader: it holds the state of its own index (when
    /// it says: snapshots written before detcd recorded it hold 0), that index is past what
    /// this member applied, its member list is its configuration, and the v2 store index
    /// does not go back.
    pub(super) fn check_snapshot_state(
        &self,
        sm: &StateMachine,
        md: &raft::eraftpb::SnapshotMetadata,
    ) {
        let probe = &self.shared.probe;
        let held = sm.meta.applied_index;
        probe.invariant(held == 0 || held == md.index, "snapshot-index", || {
            format!(
                "snapshot at index {} holds the state of index {held}",
                md.index
            )
        });
        let applied = self.applied;
        probe.invariant(md.index > applied, "snapshot-ahead", || {
            format!(
                "installing a snapshot at {} over applied {applied}",
                md.index
            )
        });
        check_members_match_conf(probe, sm, md.get_conf_state());
        let (ours, theirs) = (
            self.shared.sm.lock().expect("sm lock").store.index(),
            sm.store.index(),
        );
        probe.invariant(theirs >= ours, "store-index-monotonic", || {
            format!("the leader's snapshot takes the v2 store index back: {ours} -> {theirs}")
        });
    }

    /// Take a snapshot when one is due: the state machine is copied here (cheaply: the
    /// tree is shared), then serialised and written to its file by a task off the loop,
    /// as etcd does; [`RaftLoop::snapshot_saved`] records it once the file is durable. One
    /// snapshot is in flight at a time.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), LoopError> {
        if self.pending_snapshot.is_some()
            || self.applied <= self.snap_index
            || (!self.snapshot_due && self.applied < self.snap_index + self.cfg.snapshot_count)
        {
            return Ok(());
        }
        self.snapshot_due = false;
        let index = self.applied;
        let term = self.raw.raft.raft_log.term(index)?;
        let copy = {
            let sm = self.shared.sm.lock().expect("sm lock");
            let mut mvcc = self.shared.mvcc.lock().expect("mvcc lock");
            // Durable before the log behind the snapshot may be compacted (the WAL no longer
            // replays what is older), and a consistent copy of it goes into the snapshot for
            // followers that need one.
            if mvcc.consistent_index() > index {
                // A restarted member still re-applying entries its keyspace already holds:
                // the keyspace is ahead of the state machine, and a snapshot must hold one
                // index. Take it once the replay has caught up.
                self.snapshot_due = true;
                return Ok(());
            }
            let (commits, started) = (mvcc.commit_due(true), self.shared.clock.now());
            mvcc.flush(true).map_err(LoopError::V3Backend)?;
            if commits {
                let took = self.shared.clock.now() - started;
                self.shared.counters.timings.backend_commit.observe(took);
            }
            let dump = mvcc.dump().map_err(LoopError::V3Backend)?;
            let held = dump.index().map_err(LoopError::V3Backend)?;
            self.shared
                .probe
                .invariant(held == index, "snapshot-index", || {
                    format!("snapshot at index {index} holds the v3 keyspace of index {held}")
                });
            sm.copy(Some(dump))
        };
        let held = copy.applied_index();
        self.shared
            .probe
            .invariant(held == index, "snapshot-index", || {
                format!("snapshot at index {index} holds the state of index {held}")
            });
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let snaps = self.snaps.clone();
        let shared = Arc::clone(&self.shared);
        let task = crate::rt::spawn(async move {
            let started = shared.clock.now();
            let written = crate::rt::spawn_blocking(move || {
                let mut snap = Snapshot {
                    data: copy.encode()?.into(),
                    ..Default::default()
                };
                let md = snap.mut_metadata();
                md.index = index;
                md.term = term;
                md.set_conf_state(conf);
                snaps.save(&snap).map(|_| snap)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))?;
            (shared.counters.timings.snapshot_save).observe(shared.clock.now() - started);
            Ok(written)
        });
        self.pending_snapshot = Some(PendingSnapshot { index, task });
        Ok(())
    }

    /// The snapshot written off the loop is durable: the WAL records it, raft's storage
    /// serves it to lagging followers, and the log behind it is compacted.
    pub(super) fn snapshot_saved(
        &mut self,
        written: std::io::Result<Snapshot>,
    ) -> Result<(), LoopError> {
        let snap = written.map_err(LoopError::SnapshotFile)?;
        let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
        if index <= self.snap_index {
            // The leader's snapshot was installed meanwhile: it is newer, and the WAL
            // records that one. The file written here is older and is purged in time.
            return Ok(());
        }
        self.shared.probe.failpoint(failpoints::SNAPSHOT_SAVE);
        self.wal.save(Some((index, term)), &[], None)?;
        self.storage.set_snapshot(snap);
        self.snap_index = index;
        Counters::add(&self.shared.counters.snapshots, 1);
        // Never past what raft-rs itself has applied (a leader with unsynced entries applies
        // ahead of it, and raft-rs still reads those entries from storage).
        let compact_to = index
            .saturating_sub(self.cfg.catchup_entries)
            .min(self.raw.raft.raft_log.applied);
        if compact_to > raft::Storage::first_index(&self.storage.mem).unwrap_or(0) {
            self.storage.mem.wl().compact(compact_to)?;
        }
        self.wal
            .release_to(compact_to.saturating_sub(1), self.cfg.max_wals)?;
        self.snaps
            .purge(self.cfg.max_snapshots)
            .map_err(LoopError::SnapshotFile)?;
        tracing::info!(index, term, "raft: took a snapshot and compacted the log");
        Ok(())
    }
}

/// A snapshot being serialised and written off the loop.
pub(super) struct PendingSnapshot {
    /// The index whose state it holds.
    pub(super) index: u64,
    /// The task writing it; it yields the snapshot once its file is durable.
    pub(super) task: tokio::task::JoinHandle<std::io::Result<Snapshot>>,
}

impl PendingSnapshot {
    /// Wait for the snapshot in flight, if any (never resolves when there is none).
    pub(super) async fn written(
        pending: &mut Option<PendingSnapshot>,
    ) -> std::io::Result<Snapshot> {
        match pending {
            Some(p) => match (&mut p.task).await {
                Ok(r) => r,
                Err(e) => Err(std::io::Error::other(format!(
                    "writing the snapshot at {}: {e}",
                    p.index
                ))),
            },
            None => std::future::pending().await,
        }
    }
}
