//! The Raft side of a member: the task that owns raft-rs's `RawNode`, the WAL and the state
//! machine, and runs the Ready loop (see [`ready`]). Everything else talks to it through
//! [`Shared`] and its inbox.

pub mod logger;
pub mod ready;
pub mod storage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::rt::watch;
use raft::eraftpb::{ConfChangeV2, Message};
use tokio::sync::{mpsc, oneshot};

use crate::rt::{Clock, NodeRng};
use crate::sm::{Outcome, StateMachine};

/// What the rest of the node asks of the Raft task.
pub enum Inbox {
    /// Propose an encoded [`crate::sm::Proposal`]; `accepted` says when raft took it, or
    /// `None` if it refused (while there is no leader).
    Propose {
        /// Encoded proposal.
        data: Vec<u8>,
        /// When raft took it, or `None`: refused.
        accepted: oneshot::Sender<Option<crate::rt::Instant>>,
    },
    /// Propose a membership change; the context is an encoded [`crate::sm::ConfContext`].
    ConfChange {
        /// The change.
        cc: ConfChangeV2,
        /// Encoded context.
        context: Vec<u8>,
        /// Whether raft accepted it.
        accepted: oneshot::Sender<bool>,
    },
    /// Ask for a read index (linearizable read barrier).
    ReadIndex {
        /// Receives the index once the leader confirmed it.
        done: oneshot::Sender<u64>,
    },
    /// A message from a peer.
    Peer(Box<Message>),
    /// A peer could not be reached.
    Unreachable(u64),
    /// A snapshot to a peer finished (true) or failed.
    SnapshotSent(u64, bool),
    /// The stream a peer sends on was closed or reset (its process may be gone).
    PeerGone(u64),
    /// A peer says this member was removed from the cluster.
    Removed,
    /// Hand leadership to this member (etcd's MoveLeader), if this member leads.
    TransferLeader(u64),
    /// Each member's matched log index as Raft's progress tracker knows it (this member
    /// included), while this member leads; empty otherwise. For promoting a learner only
    /// once it is in sync: asked per promotion, so no turn of the loop copies it.
    Progress(oneshot::Sender<Vec<(u64, u64)>>),
}

/// The result of a proposal, handed to the request that proposed it.
#[derive(Debug, Clone)]
pub struct Applied {
    /// What applying produced.
    pub outcome: Outcome,
    /// Raft index of the entry.
    pub index: u64,
    /// Raft term of the entry.
    pub term: u64,
    /// When the Ready loop applied it (for the request's timeline).
    pub at: crate::rt::Instant,
}

/// Raft's state as the API shows it (headers, stats, members/leader).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Current leader id (0 = none known).
    pub leader: u64,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Whether this member is the leader.
    pub is_leader: bool,
    /// Leader changes observed (for stats and reports).
    pub leader_changes: u64,
    /// Wall time (ms, this member's clock) when it became leader.
    pub leader_since_ms: u64,
    /// The term and vote as last written to the WAL (recovered from it at start): what this
    /// member has promised. An observer can check that a vote, once on disk, never changes
    /// within its term, across restarts too.
    pub durable_term: u64,
    /// See `durable_term` (0 = no vote in that term).
    pub durable_vote: u64,
    /// Whether this member is a learner of the configuration it has applied (etcd's
    /// `IsLearner`: such a member serves only `Status` and serializable `Range`).
    pub is_learner: bool,
}

/// Counters a report reads: what the member did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Raft messages sent to peers.
    pub msgs_sent: AtomicU64,
    /// Bytes of Raft messages sent.
    pub bytes_sent: AtomicU64,
    /// Raft messages received.
    pub msgs_recv: AtomicU64,
    /// fsyncs of the WAL.
    pub fsyncs: AtomicU64,
    /// Entries appended to the WAL.
    pub entries_persisted: AtomicU64,
    /// Proposals made by this member.
    pub proposals: AtomicU64,
    /// Snapshots taken.
    pub snapshots: AtomicU64,
    /// ReadIndex requests this member handed to raft (one per batch of reads).
    pub read_requests: AtomicU64,
    /// Heartbeats sent (a leader sends a round every tick, and one per ReadIndex request).
    pub heartbeats_sent: AtomicU64,
    /// Latency histograms (`/metrics`).
    pub timings: crate::metrics::Timings,
    /// Proposals waiting in [`Shared::propose`] (etcd's `proposals_pending`).
    pub proposals_pending: AtomicU64,
    /// Proposals that timed out or were cut off by the member stopping (etcd's
    /// `proposals_failed_total`).
    pub proposals_failed: AtomicU64,
    /// The gRPC server's counters (`/metrics`).
    pub grpc: crate::metrics::Grpc,
}

impl Counters {
    /// Add to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// State shared between the Raft task and request handlers.
pub struct Shared {
    /// This member's id.
    pub id: u64,
    /// The state machine (store + metadata).
    pub sm: Mutex<StateMachine>,
    /// The v3 keyspace, on its own durable backend. Lock order: `sm` before `mvcc`.
    pub mvcc: Mutex<crate::mvcc::Mvcc>,
    /// Raft status.
    pub status: Mutex<Status>,
    /// Waiters for proposals by request id.
    pub waiters: Mutex<HashMap<u64, oneshot::Sender<Applied>>>,
    /// The applied index, for read-index waiters.
    pub applied: watch::Sender<u64>,
    /// The leader id, for requests that wait for a leader.
    pub leader: watch::Sender<u64>,
    /// The Raft task's inbox.
    pub inbox: mpsc::UnboundedSender<Inbox>,
    /// This member's clock.
    pub clock: Clock,
    /// This member's rng.
    pub rng: NodeRng,
    /// Counters.
    pub counters: Counters,
    /// Set when the member was removed from the cluster or hit a fatal error.
    pub stopped: watch::Sender<Option<String>>,
    /// Failpoints and invariant reports.
    pub probe: crate::rt::Probe,
    /// v3 lease deadlines, kept while this member leads (expired by the Ready loop's lease
    /// tick, renewed by KeepAlive).
    pub lessor: Mutex<crate::lease::Lessor>,
    /// What this member's v3 watchers read their events from (published by the Ready loop).
    pub watch_hub: std::sync::Arc<crate::watch::Hub>,
}

impl Shared {
    /// A snapshot of the Raft status.
    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> u64 {
        self.sm.lock().expect("sm lock").meta.cluster_id
    }
}

/// One proposal in [`Counters::proposals_pending`] while it lives.
struct Pending<'a>(&'a AtomicU64);

impl<'a> Pending<'a> {
    fn new(c: &'a AtomicU64) -> Pending<'a> {
        c.fetch_add(1, Ordering::Relaxed);
        Pending(c)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a proposal or a linearizable read did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    /// No leader confirmed it before the deadline (etcd: "etcdserver: request timed out").
    Timeout,
    /// The member is stopping.
    Stopped,
}

/// The Ready loop's answer to one proposal, looked at (never awaited) by its proposer: it
/// is kept once read, as the channel gives it out only once.
struct RaftAnswer {
    rx: oneshot::Receiver<Option<crate::rt::Instant>>,
    got: Option<Option<crate::rt::Instant>>,
}

/// What [`RaftAnswer::peek`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peek {
    /// Raft took the proposal at this time.
    Taken(crate::rt::Instant),
    /// Raft refused it (no leader).
    Refused,
    /// The loop has not handled it yet.
    NotYet,
    /// The loop is gone without answering (the member stops).
    Gone,
}

impl RaftAnswer {
    fn new(rx: oneshot::Receiver<Option<crate::rt::Instant>>) -> RaftAnswer {
        RaftAnswer { rx, got: None }
    }

    fn peek(&mut self) -> Peek {
        if self.got.is_none() {
            match self.rx.try_recv() {
                Ok(v) => self.got = Some(v),
                Err(oneshot::error::TryRecvError::Empty) => return Peek::NotYet,
                Err(oneshot::error::TryRecvError::Closed) => return Peek::Gone,
            }
        }
        match self.got {
            Some(Some(at)) => Peek::Taken(at),
            _ => Peek::Refused,
        }
    }
}

/// raft-rs's `max_size_per_msg`: the entry bytes one append carries at most. The Ready loop
/// holds its own batches (proposals stepped together, appends joined) to the same bound.
pub const MAX_MSG_BYTES: u64 = 1 << 20;

/// How often a proposal's waiter looks whether raft refused it (see [`Shared::propose`]).
const REFUSAL_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

impl Shared {
    /// Propose `op` and wait until it is applied here. While there is no leader, or when the
    /// leader changes under it, the same request (same id) is proposed again: the state
    /// machine's dedup table makes sure it applies once.
    pub async fn propose(
        &self,
        op: crate::sm::Op,
        timeout: std::time::Duration,
    ) -> Result<Applied, WaitError> {
        let id = self.rng.next_u64() | 1;
        let started = self.clock.now();
        // Counted until the call ends or its future is dropped (a client that went away).
        let _pending = Pending::new(&self.counters.proposals_pending);
        let timings = &self.counters.timings;
        let (tx, mut rx) = oneshot::channel();
        self.waiters.lock().expect("waiters lock").insert(id, tx);
        let deadline = self.clock.now() + timeout;
        let result = async {
            loop {
                let is_leader = self.status().is_leader;
                let p = crate::sm::Proposal {
                    id,
                    time_ms: if is_leader { self.clock.wall_ms() } else { 0 },
                    op: op.clone(),
                };
                let data = serde_json::to_vec(&p).expect("proposal serialises");
                let mut leader = self.leader.subscribe();
                let (atx, arx) = oneshot::channel();
                let mut answer = RaftAnswer::new(arx);
                self.inbox
                    .send(Inbox::Propose {
                        data,
                        accepted: atx,
                    })
                    .map_err(|_| WaitError::Stopped)?;
                let sent = self.clock.now();
                // The loop's answer (taken, and when; or refused) is looked at, not awaited:
                // awaiting it would wake this task once more per request. A refusal (no
                // leader) is noticed at the next recheck or leader change.
                let mut recheck = (sent + REFUSAL_RECHECK).min(deadline);
                loop {
                    tokio::select! {
                        // `biased`: tokio's fair select draws from a process-wide counter, which no
                        // simulator seed controls; a fixed polling order keeps runs reproducible.
                        biased;
                        r = &mut rx => {
                            let r = r.map_err(|_| WaitError::Stopped)?;
                            let now = self.clock.now();
                            let taken = match answer.peek() {
                                Peek::Taken(at) => at,
                                _ => sent,
                            };
                            // Once per request, so that the stages add up to `total`: the
                            // wait ends when the loop took the attempt that was applied (an
                            // attempt refused for want of a leader is not a stage of its own).
                            timings.propose_wait.observe(taken.saturating_duration_since(started));
                            timings.commit_apply.observe(r.at.saturating_duration_since(taken));
                            timings.wake.observe(now.saturating_duration_since(r.at));
                            timings.propose_total.observe(now - started);
                            return Ok(r);
                        }
                        _ = leader.changed() => {
                            // Refused for want of a leader, or lost with the old one: propose
                            // it again.
                            if self.clock.now() >= deadline { return Err(WaitError::Timeout) }
                            crate::rt::sleep(std::time::Duration::from_millis(10)).await;
                            if let Ok(r) = rx.try_recv() { return Ok(r) }
                            break;
                        }
                        _ = crate::rt::sleep_until(recheck) => {
                            if self.clock.now() >= deadline { return Err(WaitError::Timeout) }
                            match answer.peek() {
                                // Refused: no leader (or one handing over). Again.
                                Peek::Refused => break,
                                Peek::Gone => return Err(WaitError::Stopped),
                                // Taken, or not looked at yet: wait on.
                                Peek::Taken(_) | Peek::NotYet => {
                                    recheck = (recheck + REFUSAL_RECHECK).min(deadline)
                                }
                            }
                        }
                    }
                }
            }
        }
        .await;
        self.waiters.lock().expect("waiters lock").remove(&id);
        if result.is_err() {
            Counters::add(&self.counters.proposals_failed, 1);
        }
        result
    }

    /// Wait until this member has applied everything the leader had committed when the call
    /// began (Raft's ReadIndex): a read served after this is linearizable.
    pub async fn read_barrier(
        &self,
        timeout: std::time::Duration,
        retry: std::time::Duration,
    ) -> Result<(), WaitError> {
        let deadline = self.clock.now() + timeout;
        loop {
            let (tx, rx) = oneshot::channel();
            self.inbox
                .send(Inbox::ReadIndex { done: tx })
                .map_err(|_| WaitError::Stopped)?;
            let attempt_end = (self.clock.now() + retry).min(deadline);
            match crate::rt::timeout_at(attempt_end, rx).await {
                Ok(Ok(index)) => {
                    let mut applied = self.applied.subscribe();
                    return crate::rt::timeout_at(deadline, applied.wait_for(|a| *a >= index))
                        .await
                        .map_err(|_| WaitError::Timeout)?
                        .map(|_| ())
                        .map_err(|_| WaitError::Stopped);
                }
                Ok(Err(_)) | Err(_) => {
                    if self.clock.now() >= deadline {
                        return Err(WaitError::Timeout);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    #[test]
    fn an_answer_read_once_is_the_same_answer_every_later_look() {
        let (tx, rx) = oneshot::channel();
        let mut a = RaftAnswer::new(rx);
        assert_eq!(a.peek(), Peek::NotYet);
        let at = crate::rt::Clock::new().now();
        tx.send(Some(at)).unwrap();
        // A proposal waiting longer than two rechecks looks more than once: it was taken
        // every time (the channel itself answers only once, then says it is closed).
        for _ in 0..3 {
            assert_eq!(a.peek(), Peek::Taken(at));
        }
    }

    #[test]
    fn a_refusal_and_a_vanished_loop_are_told_apart() {
        let (tx, rx) = oneshot::channel();
        let mut a = RaftAnswer::new(rx);
        tx.send(None).unwrap();
        assert_eq!(a.peek(), Peek::Refused);
        assert_eq!(a.peek(), Peek::Refused);
        let (tx, rx) = oneshot::channel::<Option<crate::rt::Instant>>();
        drop(tx);
        assert_eq!(RaftAnswer::new(rx).peek(), Peek::Gone);
    }
}
