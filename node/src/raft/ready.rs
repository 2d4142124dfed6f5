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
//! Invariants checked here: applied ≤ committed; entries apply in strictly increasing index
//! order; term and vote never go back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChangeV2, ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{mpsc, oneshot};

use super::storage::NodeStorage;
use super::{Applied, Counters, Inbox, Shared};
use crate::cluster::Member;
use crate::failpoints;
use crate::sm::{ConfContext, Op, Outcome, Proposal, StateMachine};
use crate::storage::snap::SnapDir;
use crate::storage::wal::Wal;
use crate::transport::Transport;

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

/// The Raft task's state.
pub struct RaftLoop {
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
    /// Read-index requests in flight, by context: every read that arrived in one inbox batch
    /// shares one context, so one round of heartbeats confirms them all (as etcd batches).
    pub reads: HashMap<Vec<u8>, ReadWaiters>,
    /// Reads that arrived in the current inbox batch, not yet handed to raft: this member's
    /// own, and on the leader the followers' (see [`RaftLoop::flush_read_batch`]).
    pub read_batch: ReadWaiters,
    /// Next read-index context.
    pub read_seq: u64,
    /// Last applied index.
    pub applied: u64,
    /// Last hard state seen (for the never-go-back assertions).
    pub last_hs: HardState,
    /// A membership change was applied: the snapshot served to new members must include it
    /// (raft-rs refuses a snapshot whose configuration lacks the receiver).
    pub snapshot_due: bool,
    /// The newest Ready whose entries the leader wrote without an fsync (see
    /// [`RaftLoop::may_defer_sync`]); raft-rs is told they are persisted only after the fsync.
    pub unsynced: Option<u64>,
    /// Membership changes forwarded by followers while raft-rs still counts an earlier one
    /// as unapplied (see [`RaftLoop::hold_conf_change`]); stepped once it is applied.
    pub held_conf_props: Vec<Message>,
    /// The leader whose stream closed (see [`RaftLoop::on_peer_gone`]) and how many more
    /// quick campaigns this member may start while no new leader is known.
    pub leader_gone: Option<(u64, u8)>,
}

/// Who waits for one read index.
#[derive(Default)]
pub struct ReadWaiters {
    /// This member's reads.
    pub local: Vec<oneshot::Sender<u64>>,
    /// On the leader, followers' read-index requests (follower id, its context), answered
    /// with a `MsgReadIndexResp` as raft-rs would.
    pub remote: Vec<(u64, Entry)>,
}

impl ReadWaiters {
    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }
}

/// At most this many forwarded membership changes wait on the leader; more are dropped (their
/// requests time out, as etcd's do).
const HELD_CONF_PROPS_MAX: usize = 64;

fn is_conf_change(e: &Entry) -> bool {
    matches!(
        e.get_entry_type(),
        EntryType::EntryConfChange | EntryType::EntryConfChangeV2
    )
}

/// Why a membership change cannot apply to the membership as it is now, if it cannot
/// ([`crate::cluster::Members::check_add`], `check_remove`).
fn refuse_conf_change(
    sm: &StateMachine,
    cc: &ConfChangeV2,
    c: &ConfContext,
) -> Option<crate::cluster::Refusal> {
    let members = &sm.meta.members;
    cc.get_changes().iter().find_map(|change| {
        let id = change.node_id;
        match change.get_change_type() {
            raft::eraftpb::ConfChangeType::AddNode
            | raft::eraftpb::ConfChangeType::AddLearnerNode => {
                members.check_add(id, &c.member.peer_urls, c.update).err()
            }
            raft::eraftpb::ConfChangeType::RemoveNode => members.check_remove(id).err(),
        }
    })
}

impl RaftLoop {
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
                }
                _ = sync.tick() => {
                    self.propose_sync();
                }
                _ = &mut sync_timer, if self.unsynced.is_some() => sync_now = true,
                msg = self.inbox.recv() => {
                    let Some(msg) = msg else { return };
                    self.handle(msg);
                    self.drain_inbox();
                }
            }
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
                tracing::error!(error = %e, "raft: fatal storage error; stopping this member");
                let _ = self
                    .shared
                    .stopped
                    .send(Some(format!("storage error: {e}")));
                return;
            }
            if !was_unsynced && self.unsynced.is_some() {
                // A deferred fsync began in this turn: it is due `leader_sync_delay` from now.
                sync_timer = Box::pin(crate::rt::sleep(self.cfg.leader_sync_delay));
            }
            if self.shared.stopped.borrow().is_some() {
                return;
            }
        }
    }

    /// Handle what is already queued in the inbox (at most [`INBOX_BATCH_MAX`] messages).
    fn drain_inbox(&mut self) {
        for _ in 0..INBOX_BATCH_MAX {
            match self.inbox.try_recv() {
                Ok(m) => self.handle(m),
                Err(_) => break,
            }
        }
    }

    /// Hand the reads that arrived in this turn to raft as one ReadIndex request: the read
    /// index raft returns is the leader's commit index when the request was made, valid for
    /// every read that arrived before it. On the leader that includes the followers' requests
    /// that arrived in this turn: raft-rs would confirm each with a heartbeat round of its
    /// own (a third of all peer messages under a read-write load), here one round confirms
    /// them all.
    fn flush_read_batch(&mut self) {
        if self.read_batch.is_empty() {
            return;
        }
        let r = &self.raw.raft;
        if !self.read_batch.remote.is_empty()
            && (r.state != StateRole::Leader || !r.commit_to_current_term())
        {
            // raft-rs drops such requests too (a new leader answers reads only once it has
            // committed in its term); the followers ask again.
            self.read_batch.remote.clear();
            if self.read_batch.local.is_empty() {
                return;
            }
        }
        self.read_seq += 1;
        let ctx = self.read_seq.to_le_bytes().to_vec();
        self.reads
            .insert(ctx.clone(), std::mem::take(&mut self.read_batch));
        Counters::add(&self.shared.counters.read_requests, 1);
        self.raw.read_index(ctx);
    }

    /// A follower's read-index request reaching the leader joins this turn's batch instead
    /// of being stepped (see [`RaftLoop::flush_read_batch`]). Returns the message when it
    /// is not such a request.
    fn batch_remote_read(&mut self, mut m: Box<Message>) -> Option<Box<Message>> {
        let r = &self.raw.raft;
        if m.get_msg_type() != MessageType::MsgReadIndex
            || r.state != StateRole::Leader
            || m.from == r.id
            || m.term != 0
            || m.get_entries().len() != 1
        {
            return Some(m);
        }
        let ctx = m.take_entries().pop().expect("one entry");
        self.read_batch.remote.push((m.from, ctx));
        None
    }

    /// The read index of a batch is known: this member's reads go on, and the leader answers
    /// the followers whose requests were in the batch. Their context comes back with the
    /// index and this term (the entry at that index is of this term: the leader confirms
    /// reads only once it has committed in its term), as raft-rs answers.
    fn read_index_known(&mut self, ctx: &[u8], index: u64) {
        let Some(w) = self.reads.remove(ctx) else {
            return;
        };
        for tx in w.local {
            let _ = tx.send(index);
        }
        let r = &self.raw.raft;
        if w.remote.is_empty() || r.state != StateRole::Leader {
            return;
        }
        let (id, term) = (r.id, r.term);
        let answers = w
            .remote
            .into_iter()
            .map(|(to, ctx)| {
                let mut m = Message::default();
                m.set_msg_type(MessageType::MsgReadIndexResp);
                m.from = id;
                m.to = to;
                m.term = term;
                m.index = index;
                m.set_entries(vec![ctx].into());
                m
            })
            .collect();
        self.send(answers);
    }

    /// raft-rs draws its randomized election timeout from the OS rng, which no simulator can
    /// seed. Whenever the election timer restarted, draw it again from the member's rng.
    /// While the leader is known to be gone and no new one is known, the timer restarts
    /// short instead (see [`RaftLoop::on_peer_gone`]).
    fn fix_election_timeout(&mut self) {
        let r = &self.raw.raft;
        if let Some((gone, _)) = self.leader_gone {
            // A new leader is known, or the old one was heard from after all.
            if r.leader_id != raft::INVALID_ID && (r.leader_id != gone || r.election_elapsed == 0) {
                self.leader_gone = None;
            }
        }
        if self.raw.raft.election_elapsed == 0 && !self.campaign_again() {
            let lo = self.cfg.election_ticks as u64;
            let t = self.shared.rng.range(lo, 2 * lo) as usize;
            self.raw.raft.set_randomized_election_timeout(t);
        }
    }

    fn handle(&mut self, msg: Inbox) {
        match msg {
            Inbox::Propose { data, accepted } => {
                Counters::add(&self.shared.counters.proposals, 1);
                let ok = self.raw.propose(vec![], data).is_ok();
                let _ = accepted.send(ok);
            }
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

    /// The leader's stream to us closed. A crashed process's connections are reset at once
    /// (a partition closes nothing), so rather than wait out the whole election timeout, end
    /// the leader's lease here and let the election timer run out within a few ticks. The
    /// followers that saw it go take turns two ticks apart, by member id (the lowest first):
    /// two that campaigned in the same tick would split the vote and both wait out a full
    /// election timeout (a random 1–3 ticks did that one leader kill in seven); while no
    /// leader is known they keep campaigning at that pace for about one election timeout
    /// ([`RaftLoop::campaign_again`]). Only liveness
    /// changes: if the leader is alive after all, the pre-vote fails at the members still
    /// hearing from it.
    fn on_peer_gone(&mut self, id: u64) {
        let r = &self.raw.raft;
        if r.state != StateRole::Follower || r.leader_id != id {
            return;
        }
        let soon = self.campaign_soon(id);
        // Campaigns (a pre-vote each, harmless while others still hear a leader) go on this
        // often for about one election timeout: the other members may see the leader go
        // later, and ignore pre-votes until they do.
        let again = (self.raw.raft.election_timeout() / soon).saturating_sub(1);
        self.leader_gone = Some((id, again.min(u8::MAX as usize) as u8));
        tracing::info!(leader = %format!("{id:x}"), ticks = soon, "raft: the leader's stream closed; campaigning soon unless it is heard from");
    }

    /// After the leader's stream closed, a campaign began or failed with no leader known (a
    /// member that has not yet seen the leader go ignores the pre-vote; two candidates may
    /// split the vote): if it gets nowhere, try again soon rather than after a whole election
    /// timeout, while the budget set by [`RaftLoop::on_peer_gone`] lasts. True if so.
    fn campaign_again(&mut self) -> bool {
        let r = &self.raw.raft;
        let Some((gone, left)) = self.leader_gone else {
            return false;
        };
        if left == 0 || r.state == StateRole::Leader || r.leader_id != raft::INVALID_ID {
            return false;
        }
        self.leader_gone = Some((gone, left - 1));
        self.campaign_soon(gone);
        true
    }

    /// End the lease of `gone` (the leader whose stream closed) and let the election timer run
    /// out in a few ticks: the voters other than `gone` take turns two ticks apart, by member
    /// id. Returns the ticks.
    fn campaign_soon(&mut self, gone: u64) -> usize {
        let r = &mut self.raw.raft;
        let base = r.election_timeout();
        let rank = r
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .filter(|v| *v != gone && *v < r.id)
            .count();
        let soon = (1 + 2 * rank).min(base.saturating_sub(1).max(1));
        r.set_randomized_election_timeout(base + soon);
        r.election_elapsed = r.election_elapsed.max(base);
        soon
    }

    /// This member was removed from the cluster (it applied its removal, or a peer said so):
    /// it stops.
    fn stop_removed(&self) {
        tracing::warn!("this member was removed from the cluster; stopping");
        let _ = self.shared.stopped.send(Some(
            "the member has been permanently removed from the cluster".into(),
        ));
    }

    /// Whether this member leads and raft-rs still counts a membership change as unapplied:
    /// it would replace a new one with an empty entry. A leader with deferred fsyncs applies
    /// entries before raft-rs may count them applied (raft-rs keeps applied ≤ its own durable
    /// index), so a change a follower already applied and answered can still be pending here
    /// for a few ms; the next request (e.g. removing the member just added) must not vanish.
    /// Held changes count as pending too, so that changes go in the order they arrived.
    fn conf_change_pending(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
            && (self.raw.raft.has_pending_conf() || !self.held_conf_props.is_empty())
    }

    /// A follower's forwarded proposal carrying a membership change while one is pending:
    /// kept and stepped once raft-rs has applied the earlier one (instead of being dropped).
    /// Returns the message when it is not held.
    fn hold_conf_change(&mut self, m: Box<Message>) -> Option<Box<Message>> {
        if m.get_msg_type() != MessageType::MsgPropose
            || !m.get_entries().iter().any(is_conf_change)
            || !self.conf_change_pending()
        {
            return Some(m);
        }
        if self.held_conf_props.len() < HELD_CONF_PROPS_MAX {
            self.held_conf_props.push(*m);
        } else {
            tracing::warn!("raft: too many membership changes waiting; one dropped");
        }
        None
    }

    /// Step the held membership changes once nothing is pending (one at a time: each makes
    /// the next pending again); whether one was stepped. A member that no longer leads drops
    /// them; their requests time out as with any proposal lost in a leader change.
    fn release_held_conf_changes(&mut self) -> bool {
        if self.held_conf_props.is_empty() {
            return false;
        }
        if self.raw.raft.state != StateRole::Leader {
            self.held_conf_props.clear();
            return false;
        }
        let mut stepped = false;
        while !self.held_conf_props.is_empty() && !self.raw.raft.has_pending_conf() {
            let m = self.held_conf_props.remove(0);
            stepped = true;
            if let Err(e) = self.raw.step(m) {
                tracing::debug!(error = %e, "raft: step of a held membership change failed");
            }
        }
        stepped
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

    async fn on_ready(&mut self) -> Result<(), String> {
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
        }
        self.send(rd.take_messages());
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot().clone())?;
        }
        for rs in rd.take_read_states() {
            self.read_index_known(&rs.request_ctx, rs.index);
        }
        self.apply(rd.take_committed_entries())?;
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
    async fn sync_deferred(&mut self) -> Result<(), String> {
        let Some(number) = self.unsynced.take() else {
            return Ok(());
        };
        self.sync_wal()?;
        self.wait_sync_latency().await;
        self.raw.on_persist_ready(number);
        Ok(())
    }

    /// One fsync of everything the WAL holds, counted.
    fn sync_wal(&mut self) -> Result<(), String> {
        self.wal.sync().map_err(|e| e.to_string())?;
        Counters::add(&self.shared.counters.fsyncs, 1);
        Ok(())
    }

    /// The fsync's time (the simulated disk's seeded latency) passes before anything that
    /// depends on it may happen.
    async fn wait_sync_latency(&mut self) {
        let latency = self.disk.sync_latency();
        if !latency.is_zero() {
            crate::rt::sleep(latency).await;
        }
    }

    /// raft-rs hands out committed entries only up to the member's own durable index. A
    /// leader with unsynced entries applies what followers committed without it: those
    /// entries are on a quorum's disks. raft-rs hands them out again after the fsync; they
    /// are skipped then.
    fn apply_committed_unsynced(&mut self) -> Result<(), String> {
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
        )
        .map_err(|e| e.to_string())?;
        self.apply(entries)
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        let mut st = self.shared.status.lock().expect("status lock");
        if st.leader != leader {
            st.leader_changes += 1;
            tracing::info!(leader = %format!("{leader:x}"), term = self.raw.raft.term, "raft: leader changed");
        }
        let was_leader = st.is_leader;
        // The term with the role: an observer never sees a new role beside an old term.
        st.term = self.raw.raft.term;
        st.leader = leader;
        st.is_leader = role == StateRole::Leader;
        if st.is_leader && !was_leader {
            st.leader_since_ms = self.shared.clock.wall_ms();
        }
        drop(st);
        self.shared.leader.send_replace(leader);
    }

    fn publish_status(&mut self) {
        let mut st = self.shared.status.lock().expect("status lock");
        st.term = self.raw.raft.term;
        // `last_hs` is the hard state `persist` last wrote: this turn reaches here only if
        // that write succeeded.
        st.durable_term = self.last_hs.term;
        st.durable_vote = self.last_hs.vote;
        let commit = self.raw.raft.raft_log.committed;
        self.shared
            .probe
            .invariant(commit >= st.commit, "commit-monotonic", || {
                format!("commit went back: {} -> {commit}", st.commit)
            });
        st.commit = commit;
        st.applied = self.applied;
        self.shared
            .probe
            .invariant(st.applied <= st.commit, "applied-le-commit", || {
                format!("applied {} > committed {}", st.applied, st.commit)
            });
    }

    /// Duties 1 and 5: hand messages to the transport.
    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            Counters::add(&self.shared.counters.msgs_sent, 1);
            if m.get_msg_type() == MessageType::MsgHeartbeat {
                Counters::add(&self.shared.counters.heartbeats_sent, 1);
            }
            self.transport.send(m, &self.shared.counters);
        }
    }

    /// Duty 2: a snapshot from the leader replaces our state.
    fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), String> {
        let md = snap.get_metadata().clone();
        let mut sm =
            StateMachine::restore(&snap.data).map_err(|e| format!("snapshot {}: {e}", md.index))?;
        self.check_snapshot_state(&sm, &md);
        sm.meta.applied_index = md.index;
        self.snaps
            .save(&snap)
            .map_err(|e| format!("saving snapshot: {e}"))?;
        self.shared.probe.failpoint(failpoints::SNAPSHOT_INSTALL);
        self.wal
            .save(Some((md.index, md.term)), &[], None)
            .map_err(|e| e.to_string())?;
        self.storage
            .mem
            .wl()
            .apply_snapshot(snap.clone())
            .map_err(|e| e.to_string())?;
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

    /// Duty 4: entries and hard state to the WAL, one fsync (none when `defer`red, see
    /// [`RaftLoop::may_defer_sync`]), then to raft's log. Returns whether it fsynced.
    fn persist(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
        must_sync: bool,
        defer: bool,
    ) -> Result<bool, String> {
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
        // raft-rs says when an fsync is owed: new entries, or a new term or vote. A hard state
        // whose only change is the commit index is written without one (as etcd does): a
        // lost commit index is learned again from the leader, and nothing acknowledged or
        // sent depends on it being on disk.
        match hs {
            _ if defer => self.wal.save_deferred(entries, hs),
            Some(hs) if entries.is_empty() && !must_sync => self.wal.save_unsynced(hs),
            _ => self.wal.save(None, entries, hs),
        }
        .map_err(|e| e.to_string())?;
        Counters::add(&self.shared.counters.fsyncs, self.wal.syncs - before);
        Counters::add(
            &self.shared.counters.entries_persisted,
            entries.len() as u64,
        );
        if !entries.is_empty() {
            self.storage
                .mem
                .wl()
                .append(entries)
                .map_err(|e| e.to_string())?;
        }
        if let Some(hs) = hs {
            self.storage.mem.wl().set_hardstate(hs.clone());
        }
        Ok(self.wal.syncs > before)
    }

    /// Duty 3: apply committed entries in order, waking the requests that proposed them.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut woken: Vec<(u64, Applied)> = Vec::new();
        {
            let shared = Arc::clone(&self.shared);
            let mut sm = shared.sm.lock().expect("sm lock");
            let store_index = sm.store.index();
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
                sm.meta.applied_index = e.index;
                match e.get_entry_type() {
                    // An empty normal entry is the new leader's no-op. The empty conf-change
                    // entry that leaves a joint configuration must NOT be skipped.
                    EntryType::EntryNormal if e.data.is_empty() => {}
                    EntryType::EntryNormal => match serde_json::from_slice::<Proposal>(&e.data) {
                        Ok(p) => {
                            if let Some(outcome) = sm.apply(&p, e.index) {
                                if p.id != 0 {
                                    woken.push((
                                        p.id,
                                        Applied {
                                            outcome,
                                            index: e.index,
                                            term: e.term,
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
        }
        self.shared.applied.send_replace(self.applied);
        if !woken.is_empty() {
            self.shared.probe.failpoint(failpoints::APPLY_BEFORE_ANSWER);
        }
        let mut waiters = self.shared.waiters.lock().expect("waiters lock");
        for (id, applied) in woken {
            if let Some(tx) = waiters.remove(&id) {
                let _ = tx.send(applied);
            }
        }
        Ok(())
    }

    fn apply_conf_change(
        &mut self,
        sm: &mut StateMachine,
        e: &Entry,
    ) -> Result<Option<(u64, Applied)>, String> {
        let cc: ConfChangeV2 = if e.get_entry_type() == EntryType::EntryConfChange {
            // detcd proposes only V2 changes; a V1 one is converted field by field.
            let v1 =
                raft::eraftpb::ConfChange::parse_from_bytes(&e.data).map_err(|x| x.to_string())?;
            let mut single = raft::eraftpb::ConfChangeSingle::default();
            single.set_change_type(v1.get_change_type());
            single.node_id = v1.node_id;
            let mut v2 = ConfChangeV2::default();
            v2.mut_changes().push(single);
            v2.context = v1.context;
            v2
        } else {
            ConfChangeV2::parse_from_bytes(&e.data).map_err(|x| x.to_string())?
        };
        self.shared.probe.failpoint(failpoints::CONF_BEFORE_APPLY);
        let ctx: Option<ConfContext> = serde_json::from_slice(&cc.context).ok();
        if let Some(c) = &ctx {
            // Checked again here, against the membership this entry applies to (as etcd's
            // ValidateConfigurationChange does): the request was checked when it arrived, and
            // another change may have been applied since. Every member decides alike (the
            // same replicated state at the same index), so a refused change touches nothing.
            if let Some((status, msg)) = refuse_conf_change(sm, &cc, c) {
                tracing::info!(index = e.index, reason = %msg, "membership change refused at apply");
                return Ok(Some((
                    c.id,
                    Applied {
                        outcome: Outcome::ConfRefused(status, msg),
                        index: e.index,
                        term: e.term,
                    },
                )));
            }
        }
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(err) => {
                tracing::warn!(error = %err, index = e.index, "conf change rejected by raft");
                return Ok(ctx.map(|c| {
                    (
                        c.id,
                        Applied {
                            outcome: Outcome::Done,
                            index: e.index,
                            term: e.term,
                        },
                    )
                }));
            }
        };
        self.storage.mem.wl().set_conf_state(cs.clone());
        self.snapshot_due = true;
        let mut removed_self = false;
        if let Some(c) = &ctx {
            for change in cc.get_changes() {
                let id = change.node_id;
                match change.get_change_type() {
                    raft::eraftpb::ConfChangeType::AddNode
                    | raft::eraftpb::ConfChangeType::AddLearnerNode => {
                        if c.update {
                            if let Some(m) = sm.meta.members.members.get_mut(&id) {
                                m.peer_urls = c.member.peer_urls.clone();
                            }
                        } else {
                            sm.meta.members.members.entry(id).or_insert_with(|| Member {
                                id,
                                ..c.member.clone()
                            });
                        }
                        sm.store
                            .internal_write(&format!("/0/members/{id:x}/raftAttributes"));
                    }
                    raft::eraftpb::ConfChangeType::RemoveNode => {
                        sm.meta.members.members.remove(&id);
                        sm.store.internal_write(&format!("/0/members/{id:x}"));
                        sm.store
                            .internal_write(&format!("/0/removed_members/{id:x}"));
                        if !sm.meta.members.removed.contains(&id) {
                            sm.meta.members.removed.push(id);
                        }
                        removed_self |= id == self.shared.id;
                    }
                }
            }
        }
        sync_members_with_conf(sm, &cs);
        check_members_match_conf(&self.shared.probe, sm, &cs);
        self.transport.set_members(&sm.meta.members);
        self.shared.probe.failpoint(failpoints::CONF_AFTER_APPLY);
        if removed_self {
            self.stop_removed();
        }
        Ok(ctx.map(|c| {
            (
                c.id,
                Applied {
                    outcome: Outcome::Done,
                    index: e.index,
                    term: e.term,
                },
            )
        }))
    }

    /// Invariants of a snapshot from the leader: it holds the state of its own index (when
    /// it says: snapshots written before detcd recorded it hold 0), that index is past what
    /// this member applied, its member list is its configuration, and the v2 store index
    /// does not go back.
    fn check_snapshot_state(&self, sm: &StateMachine, md: &raft::eraftpb::SnapshotMetadata) {
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

    fn maybe_snapshot(&mut self) -> Result<(), String> {
        if self.applied <= self.snap_index
            || (!self.snapshot_due && self.applied < self.snap_index + self.cfg.snapshot_count)
        {
            return Ok(());
        }
        self.snapshot_due = false;
        let index = self.applied;
        let term = self
            .raw
            .raft
            .raft_log
            .term(index)
            .map_err(|e| e.to_string())?;
        let data = {
            let sm = self.shared.sm.lock().expect("sm lock");
            let held = sm.meta.applied_index;
            self.shared
                .probe
                .invariant(held == index, "snapshot-index", || {
                    format!("snapshot at index {index} holds the state of index {held}")
                });
            sm.snapshot()
        };
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let md = snap.mut_metadata();
        md.index = index;
        md.term = term;
        md.set_conf_state(self.raw.raft.prs().conf().to_conf_state());
        self.snaps
            .save(&snap)
            .map_err(|e| format!("saving snapshot: {e}"))?;
        self.shared.probe.failpoint(failpoints::SNAPSHOT_SAVE);
        self.wal
            .save(Some((index, term)), &[], None)
            .map_err(|e| e.to_string())?;
        self.storage.set_snapshot(snap);
        self.snap_index = index;
        Counters::add(&self.shared.counters.snapshots, 1);
        // Never past what raft-rs itself has applied (a leader with unsynced entries applies
        // ahead of it, and raft-rs still reads those entries from storage).
        let compact_to = index
            .saturating_sub(self.cfg.catchup_entries)
            .min(self.raw.raft.raft_log.applied);
        if compact_to > raft::Storage::first_index(&self.storage.mem).unwrap_or(0) {
            self.storage
                .mem
                .wl()
                .compact(compact_to)
                .map_err(|e| e.to_string())?;
        }
        self.wal
            .release_to(compact_to.saturating_sub(1), self.cfg.max_wals)
            .map_err(|e| e.to_string())?;
        self.snaps
            .purge(self.cfg.max_snapshots)
            .map_err(|e| e.to_string())?;
        tracing::info!(index, term, "raft: took a snapshot and compacted the log");
        Ok(())
    }
}

/// Invariant: the member list is raft's configuration (voters and learners), no more, no
/// fewer.
fn check_members_match_conf(probe: &crate::rt::Probe, sm: &StateMachine, cs: &ConfState) {
    let mut conf: Vec<u64> = cs
        .get_voters()
        .iter()
        .chain(cs.get_learners())
        .copied()
        .collect();
    conf.sort_unstable();
    let listed: Vec<u64> = sm.meta.members.members.keys().copied().collect();
    probe.invariant(listed == conf, "members-match-conf", || {
        format!("member list {listed:x?}, raft configuration {conf:x?}")
    });
}

/// Members known to the state machine but absent from raft's configuration (or vice versa)
/// would make the members API lie; raft's configuration is the truth.
fn sync_members_with_conf(sm: &mut StateMachine, cs: &ConfState) {
    let ids: Vec<u64> = cs
        .get_voters()
        .iter()
        .chain(cs.get_learners())
        .copied()
        .collect();
    sm.meta.members.members.retain(|id, _| ids.contains(id));
}
