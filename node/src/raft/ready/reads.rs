//! Read-index batching: every read that arrives in one inbox turn shares one ReadIndex
//! request, and on the leader the followers' forwarded read-index requests join it, so one
//! heartbeat round confirms them all (raft-rs would spend a round on each).

use raft::eraftpb::{Entry, Message, MessageType};
use raft::StateRole;
use tokio::sync::oneshot;

use super::RaftLoop;
use crate::raft::Counters;

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
    pub(super) fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }
}

impl RaftLoop {
    /// Hand the reads that arrived in this turn to raft as one ReadIndex request: the read
    /// index raft returns is the leader's commit index when the request was made, valid for
    /// every read that arrived before it. On the leader that includes the followers' requests
    /// that arrived in this turn: raft-rs would confirm each with a heartbeat round of its
    /// own (a third of all peer messages under a read-write load), here one round confirms
    /// them all.
    pub(super) fn flush_read_batch(&mut self) {
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
    pub(super) fn batch_remote_read(&mut self, mut m: Box<Message>) -> Option<Box<Message>> {
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
    pub(super) fn read_index_known(&mut self, ctx: &[u8], index: u64) {
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
}
