//! What the loop publishes to the request handlers and to observers: the leader and role,
//! the term, commit and applied indexes, and the term and vote as last written.

use raft::StateRole;

use super::RaftLoop;

impl RaftLoop {
    pub(super) fn on_soft_state(&mut self, leader: u64, role: StateRole) {
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

    pub(super) fn publish_status(&mut self) {
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
        // A member raft-rs's configuration does not know yet (joining, before its first
        // snapshot) keeps what its member list said at start.
        let (id, prs) = (self.raw.raft.id, self.raw.raft.prs());
        if prs.get(id).is_some() {
            st.is_learner = !prs.conf().voters().contains(id);
        }
        self.shared
            .probe
            .invariant(st.applied <= st.commit, "applied-le-commit", || {
                format!("applied {} > committed {}", st.applied, st.commit)
            });
    }
}
