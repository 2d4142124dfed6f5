//! The Ready loop: the one task that drives raft-rs.
//!
//! raft-rs is sans-IO: time enters by `tick()`, messages by `step()`, and everything it wants
//! done leaves in a `Ready`. Each Ready is handled by these duties, in this order:
//!
//! 1. [`RaftLoop::send`] the leader's messages (appends, heartbeats) at once: a leader may send
//!    entries to followers while it persists them itself.
//! 2. [`RaftLoop::install_snapshot`]: a snapshot from the leader is written to disk, then to
//!    raft's storage, then restores the state machine.
//! 3. [`RaftLoop::apply`] committed entries, in log order, exactly once each.
//! 4. [`RaftLoop::persist`] new entries and the hard state to the WAL with **one fsync** (group
//!    commit), and only then to raft's in-memory log.
//! 5. [`RaftLoop::send`] the persisted messages (votes, append acks): they promise that
//!    something is on disk, so they never leave before step 4.
//! 6. advance, then send and apply what the light ready adds.
//!
//! The loop's other duties live beside it: [`reads`] (read-index batching), [`election`]
//! (seeded election timeouts, the shortcut when the leader's stream closes), [`conf`]
//! (membership changes) and [`snapshot`] (taking and installing snapshots).
//!
//! Invariants checked here (through the member's [`crate::rt::Probe`]): applied ≤ committed;
//! commit, term and store index never go back; a vote never changes within its term; entries
//! apply in strictly increasing index order; a snapshot holds the state of its own index; the
//! member list is raft's configuration.

mod conf;
mod effects;
mod election;
#[cfg(test)]
mod golden;
mod reads;
mod snapshot;
mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use raft::eraftpb::{Entry, EntryType, HardState, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::mpsc;

pub use reads::ReadWaiters;

use super::storage::NodeStorage;
use super::{Applied, Counters, Inbox, Shared};
use crate::failpoints;
use crate::sm::{Op, Outcome, Proposal};
use crate::storage::snap::SnapDir;
use crate::storage::wal::{Wal, WalError};
use crate::transport::Transport;

/// Why the loop stopped the member: its storage failed or held something it cannot use.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The WAL failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// raft-rs's storage refused an operation.
    #[error("raft storage: {0}")]
    Raft(#[from] raft::Error),
    /// A snapshot file could not be written or purged.
    #[error("snapshot file: {0}")]
    SnapshotFile(std::io::Error),
    /// The leader's snapshot could not be restored.
    #[error("snapshot {index}: {reason}")]
    BadSnapshot {
        /// Its index.
        index: u64,
        /// What was wrong.
        reason: String,
    },
    /// The v3 keyspace's backend failed to commit or restore.
    #[error("v3 backend: {0}")]
    V3Backend(std::io::Error),
    /// A committed entry could not be decoded.
    #[error("entry {index}: {reason}")]
    BadEntry {
        /// Its index.
        index: u64,
        /// What was wrong.
        reason: String,
    },
}

/// How often the v3 keyspace is made durable while writes are applied (etcd commits its
/// backend every 100 ms). Between times the applied writes sit in the keyspace's open batch,
/// visible to reads but not committed: a crash loses them and the WAL replays them, since the
/// log is compacted only behind a durable commit. Durable commits also let the backend reuse
/// the pages it freed.
pub const V3_DURABLE_EVERY: Duration = Duration::from_millis(100);

/// Applied entries after which the open v3 batch is committed before [`V3_DURABLE_EVERY`] is
/// due (etcd's backend batch limit is 10,000 operations). Between commits, reads and watchers
/// read through the open batch, so they see every applied write; committing once per batch
/// rather than once per Ready spares a B-tree copy-on-write of every touched page per Ready.
pub const V3_BATCH_ENTRIES_MAX: u64 = 10_000;

/// Bytes of applied entries after which the open v3 batch is committed early, so that a
/// burst of large values cannot hold an unbounded batch in memory.
pub const V3_BATCH_BYTES_MAX: u64 = 64 << 20;

/// What the v3 keyspace's open batch holds since it was last committed.
#[derive(Debug, Default)]
struct V3Batch {
    /// Entries applied to it.
    entries: u64,
    /// Their bytes.
    bytes: u64,
}

/// Tuning of the loop.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Time per Raft tick (the heartbeat interval).
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Take a snapshot every this many applied entries.
    pub snapshot_count: u64,
    /// Entries kept in the log behind a snapshot for slow followers.
    pub catchup_entries: u64,
    /// Snapshot files kept.
    pub max_snapshots: usize,
    /// WAL segments kept.
    pub max_wals: usize,
    /// How often the leader proposes a SYNC (TTL expiry, log clock).
    pub sync_interval: Duration,
    /// How long the leader may leave its own new entries unsynced while followers that form
    /// a quorum without it keep up (zero: the leader fsyncs every Ready, like the others).
    pub leader_sync_delay: Duration,
}

/// Inbox messages handled per loop turn before the Ready is processed: bounds latency while
/// still batching many proposals into one fsync.
const INBOX_BATCH_MAX: usize = 4096;

/// Bytes of entries stepped as one MsgPropose, or joined into one append, at most (raft-rs's
/// `max_size_per_msg`); a larger proposal or append goes alone.
const BATCH_BYTES_MAX: usize = super::MAX_MSG_BYTES as usize;

/// Proposals gathered from the inbox, not yet stepped (see [`RaftLoop::drain_inbox`]).
#[derive(Default)]
struct ProposalBatch {
    /// The entries, in inbox order.
    entries: Vec<Entry>,
    /// Their data's bytes.
    bytes: usize,
    /// This member's proposers among them, told whether raft-rs took the batch.
    accepted: Vec<tokio::sync::oneshot::Sender<Option<crate::rt::Instant>>>,
}

/// The Raft task's state.
pub struct RaftLoop {
    /// raft-rs.
    raw: RawNode<NodeStorage>,
    /// raft-rs's storage.
    storage: NodeStorage,
    /// The WAL.
    wal: Wal,
    /// The disk under the WAL (for its fsync latency).
    disk: Arc<dyn crate::storage::Disk>,
    /// Snapshot files.
    snaps: SnapDir,
    /// Shared with handlers.
    shared: Arc<Shared>,
    /// Peer messages out.
    transport: Arc<Transport>,
    /// The inbox.
    inbox: mpsc::UnboundedReceiver<Inbox>,
    /// Tuning.
    cfg: LoopConfig,
    /// Index of the newest snapshot.
    snap_index: u64,
    /// The snapshot being written off the loop, if any.
    pending_snapshot: Option<snapshot::PendingSnapshot>,
    /// Read-index requests in flight, by context: every read that arrived in one inbox batch
    /// shares one context, so one round of heartbeats confirms them all (as etcd batches).
    reads: HashMap<Vec<u8>, ReadWaiters>,
    /// Reads that arrived in the current inbox batch, not yet handed to raft: this member's
    /// own, and on the leader the followers' (see [`RaftLoop::flush_read_batch`]).
    read_batch: ReadWaiters,
    /// Next read-index context.
    read_seq: u64,
    /// Last applied index.
    applied: u64,
    /// Last hard state seen (for the never-go-back assertions).
    last_hs: HardState,
    /// A membership change was applied: the snapshot served to new members must include it
    /// (raft-rs refuses a snapshot whose configuration lacks the receiver).
    snapshot_due: bool,
    /// When the v3 keyspace was last made durable (see [`V3_DURABLE_EVERY`]).
    v3_durable_at: crate::rt::Instant,
    /// The v3 keyspace's open batch (see [`V3_BATCH_ENTRIES_MAX`]).
    v3_batch: V3Batch,
    /// The newest Ready whose entries the leader wrote without an fsync (see
    /// [`RaftLoop::may_defer_sync`]); raft-rs is told they are persisted only after the fsync.
    unsynced: Option<u64>,
    /// Membership changes forwarded by followers while raft-rs still counts an earlier one
    /// as unapplied (see [`RaftLoop::hold_conf_change`]); stepped once it is applied.
    held_conf_props: Vec<Message>,
    /// The leader whose stream closed (see [`RaftLoop::on_peer_gone`]) and how many more
    /// quick campaigns this member may start while no new leader is known.
    leader_gone: Option<(u64, u8)>,
}

/// What the loop starts from (see [`RaftLoop::new`]).
pub struct LoopParts {
    /// raft-rs.
    pub raw: RawNode<NodeStorage>,
    /// raft-rs's storage.
    pub storage: NodeStorage,
    /// The WAL.
    pub wal: Wal,
    /// The disk under the WAL (for its fsync latency).
    pub disk: Arc<dyn crate::storage::Disk>,
    /// Snapshot files.
    pub snaps: SnapDir,
    /// Shared with handlers.
    pub shared: Arc<Shared>,
    /// Peer messages out.
    pub transport: Arc<Transport>,
    /// The inbox.
    pub inbox: mpsc::UnboundedReceiver<Inbox>,
    /// Tuning.
    pub cfg: LoopConfig,
    /// Index of the newest snapshot.
    pub snap_index: u64,
    /// Last applied index.
    pub applied: u64,
    /// The hard state recovered from the WAL.
    pub hs: HardState,
}

impl RaftLoop {
    /// The loop of a member opened from `parts`.
    pub fn new(parts: LoopParts) -> RaftLoop {
        let started = parts.shared.clock.now();
        RaftLoop {
            raw: parts.raw,
            storage: parts.storage,
            wal: parts.wal,
            disk: parts.disk,
            snaps: parts.snaps,
            shared: parts.shared,
            transport: parts.transport,
            inbox: parts.inbox,
            cfg: parts.cfg,
            snap_index: parts.snap_index,
            pending_snapshot: None,
            reads: HashMap::new(),
            read_batch: ReadWaiters::default(),
            read_seq: 0,
            applied: parts.applied,
            last_hs: parts.hs,
            snapshot_due: false,
            v3_durable_at: started,
            v3_batch: V3Batch::default(),
            unsynced: None,
            held_conf_props: Vec::new(),
            leader_gone: None,
        }
    }

    /// Run until the member is stopped.
    pub async fn run(mut self) {
        let mut ticker = crate::rt::interval(self.cfg.tick);
        ticker.set_missed(crate::rt::Missed::Delay);
        let mut sync = crate::rt::interval(self.cfg.sync_interval);
        sync.set_missed(crate::rt::Missed::Delay);
        self.fix_election_timeout();
        let mut sync_timer = Box::pin(crate::rt::sleep(self.cfg.leader_sync_delay));
        loop {
            let mut sync_now = false;
            tokio::select! {
                // `biased`: tokio's fair select draws from a process-wide counter, which no
                // simulator seed controls; a fixed polling order keeps runs reproducible.
                biased;
                _ = ticker.tick() => {
                    self.raw.tick();
                    let damage = {
                        let m = self.shared.mvcc.lock().expect("mvcc lock");
                        m.damage().map(|d| format!("{}: {d}", m.path().display()))
                    };
                    if let Some(d) = damage {
                        self.fail(LoopError::V3Backend(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("a read found the v3 backend damaged: {d}"),
                        )));
                        return;
                    }
                }
                _ = sync.tick() => {
                    self.propose_sync();
                    self.lease_tick();
                }
                _ = &mut sync_timer, if self.unsynced.is_some() => sync_now = true,
                written = snapshot::PendingSnapshot::written(&mut self.pending_snapshot) => {
                    self.pending_snapshot = None;
                    if let Err(e) = self.snapshot_saved(written) {
                        self.fail(e);
                        return;
                    }
                }
                msg = self.inbox.recv() => {
                    let Some(msg) = msg else { return };
                    self.handle(msg);
                    self.drain_inbox();
                }
            }
            let turn_started = self.shared.clock.now();
            // Group commit on the leader: before paying an fsync for new entries, let the
            // request handlers that are already runnable hand in their proposals too.
            if self.raw.raft.state == StateRole::Leader
                && !self.raw.raft.raft_log.unstable.entries.is_empty()
            {
                tokio::task::yield_now().await;
                self.drain_inbox();
            }
            self.flush_read_batch();
            self.fix_election_timeout();
            let mut res = Ok(());
            if sync_now {
                res = self.sync_deferred().await;
            }
            let was_unsynced = self.unsynced.is_some();
            if res.is_ok() {
                res = self.on_ready().await;
            }
            // Only a Ready advances raft-rs's applied index: held membership changes that it
            // freed are stepped now, not at the next wake-up (a heartbeat on an idle leader).
            if res.is_ok() && self.release_held_conf_changes() {
                res = self.on_ready().await;
            }
            if let Err(e) = res {
                self.fail(e);
                return;
            }
            (self.shared.counters.timings.loop_turn)
                .observe(self.shared.clock.now() - turn_started);
            if !was_unsynced && self.unsynced.is_some() {
                // A deferred fsync began in this turn: it is due `leader_sync_delay` from now.
                sync_timer = Box::pin(crate::rt::sleep(self.cfg.leader_sync_delay));
            }
            if self.shared.stopped.borrow().is_some() {
                return;
            }
        }
    }

    /// Stop the member: its storage failed.
    fn fail(&self, e: LoopError) {
        tracing::error!(error = %e, "raft: fatal storage error; stopping this member");
        let _ = self
            .shared
            .stopped
            .send(Some(format!("storage error: {e}")));
    }

    /// Handle what is already queued in the inbox (at most [`INBOX_BATCH_MAX`] messages).
    fn drain_inbox(&mut self) {
        let mut batch = ProposalBatch::default();
        for _ in 0..INBOX_BATCH_MAX {
            match self.inbox.try_recv() {
                Ok(m) => self.handle_batching(m, &mut batch),
                Err(_) => break,
            }
        }
        self.propose_batch(&mut batch);
    }

    /// Handle one inbox message; consecutive proposals (this member's, and on the leader
    /// those its followers forward) gather in `batch` and go to raft-rs as one MsgPropose,
    /// so a follower gets one append for them rather than one each (and answers once).
    /// Anything else first proposes what gathered, so the inbox's order holds.
    fn handle(&mut self, msg: Inbox) {
        let mut batch = ProposalBatch::default();
        self.handle_batching(msg, &mut batch);
        self.propose_batch(&mut batch);
    }

    fn handle_batching(&mut self, msg: Inbox, batch: &mut ProposalBatch) {
        let (entries, accepted) = match msg {
            Inbox::Propose { data, accepted } => {
                Counters::add(&self.shared.counters.proposals, 1);
                let e = Entry {
                    data: data.into(),
                    ..Default::default()
                };
                (vec![e], Some(accepted))
            }
            Inbox::Peer(mut m)
                if m.get_msg_type() == MessageType::MsgPropose
                    && m.get_entries()
                        .iter()
                        .all(|e| e.get_entry_type() == EntryType::EntryNormal) =>
            {
                Counters::add(&self.shared.counters.msgs_recv, 1);
                (m.take_entries().into(), None)
            }
            other => {
                self.propose_batch(batch);
                self.handle_one(other);
                return;
            }
        };
        let size = entry_bytes(&entries);
        if batch.bytes + size > BATCH_BYTES_MAX {
            self.propose_batch(batch);
        }
        batch.bytes += size;
        batch.entries.extend(entries);
        batch.accepted.extend(accepted);
    }

    /// Step the gathered proposals as one MsgPropose: raft-rs takes or drops them together
    /// (it drops them while no leader is known), and each proposer hears which.
    fn propose_batch(&mut self, batch: &mut ProposalBatch) {
        if batch.entries.is_empty() {
            return;
        }
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.raw.raft.id;
        m.set_entries(std::mem::take(&mut batch.entries).into());
        let taken = self
            .raw
            .raft
            .step(m)
            .is_ok()
            .then(|| self.shared.clock.now());
        for accepted in batch.accepted.drain(..) {
            let _ = accepted.send(taken);
        }
        batch.bytes = 0;
    }

    fn handle_one(&mut self, msg: Inbox) {
        match msg {
            Inbox::Propose { .. } => unreachable!("proposals are batched"),
            Inbox::ConfChange {
                cc,
                context,
                accepted,
            } => {
                // raft-rs would turn it into an empty entry (an earlier change is not applied
                // yet in its view) and the request would wait for nothing: not accepted, so
                // the handler proposes it again shortly.
                let ok = !self.conf_change_pending()
                    && self.raw.propose_conf_change(context, cc).is_ok();
                let _ = accepted.send(ok);
            }
            Inbox::ReadIndex { done } => self.read_batch.local.push(done),
            Inbox::Peer(m) => {
                Counters::add(&self.shared.counters.msgs_recv, 1);
                let Some(m) = self.hold_conf_change(m) else {
                    return;
                };
                let Some(m) = self.batch_remote_read(m) else {
                    return;
                };
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(error = %e, "raft: step failed");
                }
            }
            Inbox::Unreachable(id) => self.raw.report_unreachable(id),
            Inbox::PeerGone(id) => self.on_peer_gone(id),
            Inbox::Removed => self.stop_removed(),
            Inbox::TransferLeader(to) => {
                if self.raw.raft.state == StateRole::Leader {
                    self.raw.transfer_leader(to);
                }
            }
            Inbox::Progress(reply) => {
                let r = &self.raw.raft;
                let progress = if r.state == StateRole::Leader {
                    r.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect()
                } else {
                    Vec::new()
                };
                let _ = reply.send(progress);
            }
            Inbox::SnapshotSent(id, ok) => self.raw.report_snapshot(
                id,
                if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                },
            ),
        }
    }

    /// The lessor's turn (every sync interval, 500 ms as etcd's `expireLeases` loop): follow
    /// leadership (promotion per term, demotion), and as leader propose the revocation of
    /// every lease past its deadline. A revocation is an entry with no request id: nobody
    /// waits for it, and it is not re-proposed to a later leader (that leader keeps its own
    /// deadlines); if it is lost, [`crate::lease::REVOKE_RETRY`] later it is proposed again.
    fn lease_tick(&mut self) {
        // Primary once this term's no-op applied (an entry of the term applied), as etcd.
        let term = self.raw.raft.term;
        let leader_term = (self.raw.raft.state == StateRole::Leader
            && self.raw.raft.raft_log.term(self.applied).ok() == Some(term))
        .then_some(term);
        let leases = match leader_term {
            Some(_) => self.shared.mvcc.lock().expect("mvcc lock").leases(),
            None => Vec::new(),
        };
        let now = self.shared.clock.now();
        let extend = self.cfg.tick * self.cfg.election_ticks as u32;
        let expired =
            self.shared
                .lessor
                .lock()
                .expect("lessor lock")
                .tick(now, leader_term, &leases, extend);
        for id in expired {
            tracing::debug!(lease = %format!("{id:x}"), "lease expired: proposing its revocation");
            let p = Proposal {
                id: 0,
                time_ms: self.shared.clock.wall_ms(),
                op: Op::Lease(crate::sm::LeaseOp::Revoke { id }),
            };
            let _ = self
                .raw
                .propose(vec![], serde_json::to_vec(&p).expect("proposal serialises"));
        }
    }

    /// The leader proposes a SYNC: it advances the log clock and expires TTL keys.
    fn propose_sync(&mut self) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        let p = Proposal {
            id: 0,
            time_ms: self.shared.clock.wall_ms(),
            op: Op::Sync,
        };
        let data = serde_json::to_vec(&p).expect("proposal serialises");
        let _ = self.raw.propose(vec![], data);
        if self
            .shared
            .sm
            .lock()
            .expect("sm lock")
            .meta
            .cluster_version
            .is_none()
        {
            let op = Op::ClusterVersion(crate::api::CLUSTER_VERSION.to_string());
            let p = Proposal {
                id: 0,
                time_ms: 0,
                op,
            };
            let _ = self
                .raw
                .propose(vec![], serde_json::to_vec(&p).expect("proposal serialises"));
        }
    }

    async fn on_ready(&mut self) -> Result<(), LoopError> {
        // Drop read waiters whose requester gave up (timed out), so the map stays bounded.
        // Followers' requests are dropped once this member no longer leads (raft-rs forgets
        // them, and the followers ask again).
        let leads = self.raw.raft.state == StateRole::Leader;
        self.reads.retain(|_, w| {
            w.local.retain(|tx| !tx.is_closed());
            if !leads {
                w.remote.clear();
            }
            !w.is_empty()
        });
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
            // The lessor follows leadership at once: demoted on losing it (etcd's Demote);
            // promoted only when this term's no-op applies (see `apply`).
            self.lease_tick();
        }
        self.send(rd.take_messages());
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot().clone())?;
        }
        for rs in rd.take_read_states() {
            self.read_index_known(&rs.request_ctx, rs.index);
        }
        let committed = rd.take_committed_entries();
        let woke = !committed.is_empty();
        self.apply(committed)?;
        if woke {
            // Answer the requests applied first: the rest of the Ready (a WAL write, maybe
            // an fsync on this thread) and of the turn would otherwise run before them.
            crate::rt::run_woken_first().await;
        }
        if self.may_defer_sync(&rd) {
            // The leader's own copy is written but not synced; followers that form a quorum
            // without it commit the entries, and what they commit is applied from here.
            self.persist(rd.entries(), rd.hs(), false, true)?;
            self.unsynced = Some(rd.number());
            self.raw.advance_append_async(rd);
            self.raw.advance_apply();
            self.apply_committed_unsynced()?;
            self.publish_status();
            self.maybe_snapshot()?;
            return Ok(());
        }
        let mut synced = self.persist(rd.entries(), rd.hs(), rd.must_sync(), false)?;
        if !synced && self.unsynced.is_some() {
            // `advance` below tells raft-rs that every earlier Ready is persisted: make it so.
            self.sync_wal()?;
            synced = true;
        }
        self.unsynced = None;
        if synced {
            self.wait_sync_latency().await;
            self.shared
                .probe
                .failpoint(failpoints::BEFORE_SEND_PERSISTED);
        }
        self.send(rd.take_persisted_messages());
        if self.shared.stopped.borrow().is_some() {
            // This member applied its own removal: it stops here. raft-rs must not advance a
            // leader that is no longer in its own configuration (it would unwrap its missing
            // progress; found by membership-under-faults seed 2).
            return Ok(());
        }
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.storage.mem.wl().mut_hard_state().commit = commit;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.publish_status();
        self.maybe_snapshot()?;
        Ok(())
    }

    /// Whether the leader may write this Ready's entries without an fsync: only new entries
    /// and a commit index (no snapshot, no new term or vote, nothing that waits for
    /// persistence), and followers that form a quorum without the leader replicate and have
    /// matched everything committed, so they commit without it. raft-rs counts the leader's
    /// own copy only after [`RaftLoop::sync_deferred`]. If such a follower stops answering,
    /// commits wait for that fsync (at most `leader_sync_delay` later); the commit index
    /// then passes the silent follower's match, and the leader fsyncs every Ready again
    /// until the follower catches up.
    fn may_defer_sync(&self, rd: &raft::Ready) -> bool {
        let r = &self.raw.raft;
        if self.cfg.leader_sync_delay.is_zero()
            || r.state != StateRole::Leader
            || !rd.snapshot().is_empty()
            || !rd.persisted_messages().is_empty()
            || (rd.entries().is_empty() && self.unsynced.is_none())
            || rd
                .hs()
                .is_some_and(|hs| hs.term != self.last_hs.term || hs.vote != self.last_hs.vote)
        {
            return false;
        }
        let committed = r.raft_log.committed;
        let keeping_up = r
            .prs()
            .iter()
            .filter(|(id, pr)| {
                **id != r.id
                    && pr.state == raft::ProgressState::Replicate
                    && pr.matched >= committed
            })
            .map(|(id, _)| *id)
            .collect();
        r.prs().has_quorum(&keeping_up)
    }

    /// The deferred fsync of the leader's own entries; then raft-rs counts its copy.
    async fn sync_deferred(&mut self) -> Result<(), LoopError> {
        let Some(number) = self.unsynced.take() else {
            return Ok(());
        };
        self.sync_wal()?;
        self.wait_sync_latency().await;
        self.raw.on_persist_ready(number);
        Ok(())
    }

    /// One fsync of everything the WAL holds, counted.
    fn sync_wal(&mut self) -> Result<(), LoopError> {
        let started = self.shared.clock.now();
        self.wal.sync()?;
        (self.shared.counters.timings.wal_fsync).observe(self.shared.clock.now() - started);
        self.shared.probe.effect(|| "fsync the WAL".into());
        Counters::add(&self.shared.counters.fsyncs, 1);
        Ok(())
    }

    /// The fsync's time (the simulated disk's seeded latency) passes before anything that
    /// depends on it may happen.
    async fn wait_sync_latency(&mut self) {
        let latency = self.disk.sync_latency();
        if !latency.is_zero() {
            // Exact: a simulated disk may owe less than a millisecond.
            crate::rt::sleep_exact(latency).await;
        }
    }

    /// raft-rs hands out committed entries only up to the member's own durable index. A
    /// leader with unsynced entries applies what followers committed without it: those
    /// entries are on a quorum's disks. raft-rs hands them out again after the fsync; they
    /// are skipped then.
    fn apply_committed_unsynced(&mut self) -> Result<(), LoopError> {
        let committed = self.raw.raft.raft_log.committed;
        if committed <= self.applied {
            return Ok(());
        }
        let entries = raft::Storage::entries(
            &self.storage.mem,
            self.applied + 1,
            committed + 1,
            None,
            raft::GetEntriesContext::empty(false),
        )?;
        self.apply(entries)
    }

    /// Duties 1 and 5: hand messages to the transport.
    fn send(&mut self, msgs: Vec<Message>) {
        for m in coalesce_appends(msgs) {
            Counters::add(&self.shared.counters.msgs_sent, 1);
            if m.get_msg_type() == MessageType::MsgHeartbeat {
                Counters::add(&self.shared.counters.heartbeats_sent, 1);
            }
            self.shared.probe.effect(|| effects::send(&m));
            self.transport.send(m, &self.shared.counters);
        }
    }

    /// Duty 4: entries and hard state to the WAL, one fsync (none when `defer`red, see
    /// [`RaftLoop::may_defer_sync`]), then to raft's log. Returns whether it fsynced.
    fn persist(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
        must_sync: bool,
        defer: bool,
    ) -> Result<bool, LoopError> {
        if let Some(hs) = hs {
            let (last, probe) = (&self.last_hs, &self.shared.probe);
            probe.invariant(hs.term >= last.term, "term-monotonic", || {
                format!("term went back: {} -> {}", last.term, hs.term)
            });
            probe.invariant(
                hs.term != last.term || last.vote == 0 || hs.vote == last.vote || hs.vote == 0,
                "vote-stable",
                || {
                    format!(
                        "vote changed within term {}: {:x} -> {:x}",
                        hs.term, last.vote, hs.vote
                    )
                },
            );
            probe.invariant(hs.commit >= last.commit, "commit-monotonic", || {
                format!("commit went back: {} -> {}", last.commit, hs.commit)
            });
            self.last_hs = hs.clone();
        }
        if entries.is_empty() && hs.is_none() {
            return Ok(false);
        }
        let before = self.wal.syncs;
        let started = self.shared.clock.now();
        // raft-rs says when an fsync is owed: new entries, or a new term or vote. A hard state
        // whose only change is the commit index is written without one (as etcd does): a
        // lost commit index is learned again from the leader, and nothing acknowledged or
        // sent depends on it being on disk.
        match hs {
            _ if defer => self.wal.save_deferred(entries, hs),
            Some(hs) if entries.is_empty() && !must_sync => self.wal.save_unsynced(hs),
            _ => self.wal.save(None, entries, hs),
        }?;
        let synced = self.wal.syncs > before;
        if synced {
            (self.shared.counters.timings.wal_fsync).observe(self.shared.clock.now() - started);
        }
        (self.shared.probe).effect(|| effects::wal_write(entries, hs, synced));
        Counters::add(&self.shared.counters.fsyncs, self.wal.syncs - before);
        Counters::add(
            &self.shared.counters.entries_persisted,
            entries.len() as u64,
        );
        if !entries.is_empty() {
            self.storage.mem.wl().append(entries)?;
        }
        if let Some(hs) = hs {
            self.storage.mem.wl().set_hardstate(hs.clone());
        }
        Ok(self.wal.syncs > before)
    }

    /// Duty 3: apply committed entries in order, waking the requests that proposed them.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), LoopError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut woken: Vec<(u64, Applied)> = Vec::new();
        {
            let shared = Arc::clone(&self.shared);
            let mut sm = shared.sm.lock().expect("sm lock");
            let mut mvcc = shared.mvcc.lock().expect("mvcc lock");
            let store_index = sm.store.index();
            let v3_revision = mvcc.revision();
            // One reading of the clock for the batch: its entries apply in the same turn.
            let applied_at = shared.clock.now();
            mvcc.set_now(applied_at);
            for e in entries {
                if e.index <= self.applied {
                    continue; // already in the state machine (restored from a snapshot)
                }
                let applied = self.applied;
                shared
                    .probe
                    .invariant(e.index == applied + 1, "apply-in-order", || {
                        format!("entry {} applied after entry {applied}", e.index)
                    });
                self.applied = e.index;
                self.v3_batch.entries += 1;
                self.v3_batch.bytes += e.data.len() as u64;
                sm.meta.applied_index = e.index;
                shared.probe.effect(|| format!("apply entry {}", e.index));
                shared.probe.applied(e.index, e.term, &e.data);
                match e.get_entry_type() {
                    // An empty normal entry is the new leader's no-op. The empty conf-change
                    // entry that leaves a joint configuration must NOT be skipped.
                    EntryType::EntryNormal if e.data.is_empty() => {
                        // The new leader's no-op: every entry of earlier terms has applied.
                        // etcd promotes its lessor here (`applyEntryNormal`): leases of
                        // earlier terms, those whose grant applied just now included, start
                        // at now + TTL + the election timeout; a grant of this term applies
                        // after it and starts at its own TTL.
                        if self.raw.raft.state == StateRole::Leader && e.term == self.raw.raft.term
                        {
                            let extend = self.cfg.tick * self.cfg.election_ticks as u32;
                            let expired = (shared.lessor.lock().expect("lessor lock")).tick(
                                applied_at,
                                Some(e.term),
                                &mvcc.leases(),
                                extend,
                            );
                            debug_assert!(expired.is_empty(), "nothing expires at a promotion");
                        }
                    }
                    EntryType::EntryNormal => match serde_json::from_slice::<Proposal>(&e.data) {
                        Ok(p) => {
                            if let Some(outcome) = sm.apply(&p, e.index, &mut mvcc) {
                                lease_applied(&shared, &p, &outcome, applied_at);
                                if p.id != 0 {
                                    woken.push((
                                        p.id,
                                        Applied {
                                            outcome,
                                            index: e.index,
                                            term: e.term,
                                            at: applied_at,
                                        },
                                    ));
                                }
                            }
                        }
                        Err(err) => {
                            tracing::error!(index = e.index, error = %err, "apply: undecodable entry skipped")
                        }
                    },
                    EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                        if let Some((id, applied)) = self.apply_conf_change(&mut sm, &e)? {
                            woken.push((id, applied));
                        }
                    }
                }
            }
            let now = sm.store.index();
            shared
                .probe
                .invariant(now >= store_index, "store-index-monotonic", || {
                    format!("the v2 store index went back: {store_index} -> {now}")
                });
            // The v3 keyspace's consistent index follows every entry, and the batch's writes
            // become visible to reads before anyone is answered. They become durable at the
            // next snapshot (or periodic flush): until then the WAL replays them.
            mvcc.set_index(self.applied);
            let (held, revision) = (mvcc.consistent_index(), mvcc.revision());
            shared
                .probe
                // At least what the loop applied; more only while a restarted member
                // re-applies entries its keyspace already held (they are skipped). Less only
                // if a write met a storage failure: the flush below then stops the member
                // before it answers anyone (the `disk-rot` scenario).
                .invariant(
                    held >= self.applied || mvcc.failure().is_some(),
                    "v3-consistent-index",
                    || {
                        format!(
                            "the v3 keyspace holds index {held} after the loop applied {}",
                            self.applied
                        )
                    },
                );
            shared
                .probe
                .invariant(revision >= v3_revision, "v3-revision-monotonic", || {
                    format!("the v3 revision went back: {v3_revision} -> {revision}")
                });
            let durable =
                applied_at.saturating_duration_since(self.v3_durable_at) >= V3_DURABLE_EVERY;
            // The batch stays open (reads see it) until a durable commit is due or it is
            // large; a write that met a storage failure is flushed now, so that the member
            // stops before it answers anyone.
            if durable
                || self.v3_batch.entries >= V3_BATCH_ENTRIES_MAX
                || self.v3_batch.bytes >= V3_BATCH_BYTES_MAX
                || mvcc.failure().is_some()
            {
                self.v3_batch = V3Batch::default();
                let commits = mvcc.commit_due(durable);
                let started = shared.clock.now();
                if let Err(e) = mvcc.flush(durable) {
                    // Named with the file, as every storage failure that stops a member; with
                    // the damage a read met first, if one did (redb then fails every later
                    // call with "Previous I/O error occurred", which names no cause).
                    let named = match mvcc.damage() {
                        Some(d) => format!("{}: {d} (then: {e})", mvcc.path().display()),
                        None => format!("{}: {e}", mvcc.path().display()),
                    };
                    return Err(LoopError::V3Backend(std::io::Error::new(e.kind(), named)));
                }
                if commits {
                    let took = shared.clock.now() - started;
                    shared.counters.timings.backend_commit.observe(took);
                }
                if durable {
                    self.v3_durable_at = applied_at;
                }
            }
            // Watchers see the batch only now, applied and answerable (events are read back
            // only while a watcher exists).
            let hub = &shared.watch_hub;
            let published = hub.revision();
            shared
                .probe
                .invariant(revision >= published, "watch-revision-monotonic", || {
                    format!(
                        "watchers were shown revision {published}, the keyspace is at {revision}"
                    )
                });
            if revision != published || mvcc.compact_revision() != hub.compacted() {
                let events = if hub.active() && revision > v3_revision {
                    mvcc.events(v3_revision + 1, revision, 0).ok()
                } else {
                    None
                };
                hub.publish(v3_revision, revision, mvcc.compact_revision(), events);
            }
        }
        self.shared.applied.send_replace(self.applied);
        if !woken.is_empty() {
            self.shared.probe.failpoint(failpoints::APPLY_BEFORE_ANSWER);
        }
        let mut waiters = self.shared.waiters.lock().expect("waiters lock");
        for (id, applied) in woken {
            if let Some(tx) = waiters.remove(&id) {
                self.shared
                    .probe
                    .effect(|| format!("answer request {id} (entry {})", applied.index));
                let _ = tx.send(applied);
            }
        }
        Ok(())
    }
}

/// The leader's lessor follows the lease set as entries apply (etcd's `lessor.Grant` and
/// `Revoke`, called from the apply on every member): a grant's deadline starts when it
/// applies, whichever member proposed it, and a revoked lease's deadline is dropped at once.
fn lease_applied(shared: &Shared, p: &Proposal, outcome: &Outcome, now: crate::rt::Instant) {
    match (&p.op, outcome) {
        (_, Outcome::LeaseGrant(Ok(g))) => {
            (shared.lessor.lock().expect("lessor lock")).granted(g.id, g.ttl, now)
        }
        (Op::Lease(crate::sm::LeaseOp::Revoke { id }), Outcome::LeaseRevoke(Ok(_))) => {
            shared.lessor.lock().expect("lessor lock").revoked(*id)
        }
        _ => {}
    }
}

/// The data bytes of `entries`.
fn entry_bytes(entries: &[Entry]) -> usize {
    entries.iter().map(|e| e.data.len()).sum()
}

/// Join each append to the append just before it to the same peer when the second continues
/// the first (it starts at the first's last entry, with that entry's term, in the same
/// term): the follower then does in one step what it would have done in two, and answers
/// once. A leader steps several proposals and acknowledgements per Ready, and raft-rs sends
/// each follower an append for every one of them (its own `batch_append` skips the
/// continuity check, see `server.rs`). Messages to one peer keep their order; no append
/// moves past another message to its peer.
///
/// An append that repeats the one just before it to the same peer (the same entries after
/// the same index) goes once, with the newer commit index. raft-rs sends a probing
/// follower an append for every heartbeat response it steps, and a follower that a
/// partition cut off answers, once it heals, every heartbeat queued for it meanwhile (the
/// leader sends one to every follower per quorum-read batch): thousands of copies of the
/// same append of up to 1 MiB in one turn (`bridge` seed 1 with sub-millisecond network
/// delays: 16,000 copies, 294 KB of Raft traffic per acknowledged write).
fn coalesce_appends(msgs: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(msgs.len());
    // Per peer: the position in `out` of the newest message to it, and its entry bytes.
    let mut newest: Vec<(u64, usize, usize)> = Vec::new();
    for mut m in msgs {
        let bytes = entry_bytes(m.get_entries());
        let slot = newest.iter().position(|(to, ..)| *to == m.to);
        if let Some(k) = slot {
            let (_, j, held) = &mut newest[k];
            let prev = &mut out[*j];
            if repeats(prev, &m) {
                prev.commit = m.commit;
                continue;
            }
            let fits = prev.get_entries().is_empty() || *held + bytes <= BATCH_BYTES_MAX;
            if fits && continues(prev, &m) {
                prev.commit = m.commit;
                prev.mut_entries().extend(m.take_entries());
                *held += bytes;
                continue;
            }
            newest[k] = (m.to, out.len(), bytes);
        } else {
            newest.push((m.to, out.len(), bytes));
        }
        out.push(m);
    }
    out
}

/// Whether `prev` and `next` are both appends from one leader's term to one peer, `next`'s
/// commit index no lower: what [`repeats`] and [`continues`] both ask first.
fn same_appends(prev: &Message, next: &Message) -> bool {
    let append = MessageType::MsgAppend;
    prev.get_msg_type() == append
        && next.get_msg_type() == append
        && (prev.to, prev.from, prev.term) == (next.to, next.from, next.term)
        && !prev.reject
        && !next.reject
        && next.commit >= prev.commit
}

/// Whether append `next` repeats append `prev` to the same peer: the same entries after the
/// same index (see [`coalesce_appends`]).
fn repeats(prev: &Message, next: &Message) -> bool {
    let span = |m: &Message| {
        let e = m.get_entries();
        (
            e.first().map(|e| (e.index, e.term)),
            e.last().map(|e| (e.index, e.term)),
            e.len(),
        )
    };
    same_appends(prev, next)
        && (prev.index, prev.log_term) == (next.index, next.log_term)
        && span(prev) == span(next)
}

/// Whether append `next` continues append `prev` to the same peer (see [`coalesce_appends`]).
fn continues(prev: &Message, next: &Message) -> bool {
    if !same_appends(prev, next) {
        return false;
    }
    let (last_index, last_term) = match prev.get_entries().last() {
        Some(e) => (e.index, e.term),
        None => (prev.index, prev.log_term),
    };
    next.index == last_index && next.log_term == last_term
}

#[cfg(test)]
mod coalesce_tests {
    use super::*;

    fn app(to: u64, index: u64, log_term: u64, entries: &[(u64, u64)], commit: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        (m.to, m.from, m.term) = (to, 1, 3);
        (m.index, m.log_term, m.commit) = (index, log_term, commit);
        m.set_entries(
            entries
                .iter()
                .map(|&(index, term)| Entry {
                    index,
                    term,
                    data: vec![0; 8].into(),
                    ..Default::default()
                })
                .collect(),
        );
        m
    }

    fn heartbeat(to: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.to = to;
        m
    }

    fn shape(ms: &[Message]) -> Vec<(MessageType, u64, u64, usize, u64)> {
        ms.iter()
            .map(|m| {
                let n = m.get_entries().len();
                (m.get_msg_type(), m.to, m.index, n, m.commit)
            })
            .collect()
    }

    #[test]
    fn appends_that_continue_each_other_go_as_one_per_peer() {
        use MessageType::*;
        let msgs = vec![
            app(2, 10, 3, &[(11, 3)], 9),
            app(3, 10, 3, &[(11, 3)], 9),
            app(2, 11, 3, &[(12, 3), (13, 3)], 9),
            // A commit notice: no entries, continues the one before.
            app(2, 13, 3, &[], 12),
            app(3, 11, 3, &[(12, 3), (13, 3)], 12),
        ];
        assert_eq!(
            shape(&coalesce_appends(msgs)),
            vec![(MsgAppend, 2, 10, 3, 12), (MsgAppend, 3, 10, 3, 12)]
        );
    }

    #[test]
    fn an_empty_append_takes_the_entries_that_follow_it() {
        use MessageType::*;
        let msgs = vec![app(2, 13, 3, &[], 12), app(2, 13, 3, &[(14, 3)], 12)];
        assert_eq!(
            shape(&coalesce_appends(msgs)),
            vec![(MsgAppend, 2, 13, 1, 12)]
        );
    }

    #[test]
    fn appends_that_do_not_continue_or_are_separated_stay_apart() {
        use MessageType::*;
        let hb = heartbeat(2);
        let msgs = vec![
            // A gap: 11 is followed by an append at 12 (progress reset, as in the raft-rs
            // batching bug of v3-swarm seed 106).
            app(2, 10, 3, &[(11, 3)], 9),
            app(2, 12, 3, &[(13, 3)], 9),
            // Another term for the previous entry.
            app(2, 13, 2, &[(14, 3)], 9),
            // A heartbeat to the same peer in between: nothing moves past it.
            hb,
            app(2, 14, 3, &[(15, 3)], 9),
        ];
        assert_eq!(
            shape(&coalesce_appends(msgs)),
            vec![
                (MsgAppend, 2, 10, 1, 9),
                (MsgAppend, 2, 12, 1, 9),
                (MsgAppend, 2, 13, 1, 9),
                (MsgHeartbeat, 2, 0, 0, 0),
                (MsgAppend, 2, 14, 1, 9),
            ]
        );
    }

    #[test]
    fn an_append_repeated_to_a_probing_peer_goes_once_with_the_newest_commit() {
        use MessageType::*;
        let hb = heartbeat(2);
        let probe = |commit: u64| app(2, 10, 3, &[(11, 3), (12, 3)], commit);
        let msgs = vec![
            probe(9),
            probe(9),
            app(3, 10, 3, &[(11, 3)], 9),
            probe(12),
            // Another message to the peer in between: the copy after it goes too.
            hb,
            probe(12),
            // Not a repeat: another span, or an older commit index.
            app(2, 10, 3, &[(11, 3)], 12),
            app(2, 10, 3, &[(11, 3)], 11),
        ];
        assert_eq!(
            shape(&coalesce_appends(msgs)),
            vec![
                (MsgAppend, 2, 10, 2, 12),
                (MsgAppend, 3, 10, 1, 9),
                (MsgHeartbeat, 2, 0, 0, 0),
                (MsgAppend, 2, 10, 2, 12),
                (MsgAppend, 2, 10, 1, 12),
                (MsgAppend, 2, 10, 1, 11),
            ]
        );
    }

    #[test]
    fn a_coalesced_append_stays_under_the_size_limit() {
        let big = |index: u64| {
            let mut m = app(2, index, 3, &[(index + 1, 3)], 9);
            m.mut_entries()[0].data = vec![0; BATCH_BYTES_MAX / 2 + 1].into();
            m
        };
        assert_eq!(coalesce_appends(vec![big(10), big(11)]).len(), 2);
    }
}
