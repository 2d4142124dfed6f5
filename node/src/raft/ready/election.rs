//! Elections: the randomized election timeout drawn from the member's seeded rng (raft-rs
//! would draw it from the OS), and the shortcut when the leader's stream closes.

use raft::StateRole;

use super::RaftLoop;

impl RaftLoop {
    /// raft-rs draws its randomized election timeout from the OS rng, which no simulator can
    /// seed. Whenever the election timer restarted, draw it again from the member's rng.
    /// While the leader is known to be gone and no new one is known, the timer restarts
    /// short instead (see [`RaftLoop::on_peer_gone`]).
    pub(super) fn fix_election_timeout(&mut self) {
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
    pub(super) fn on_peer_gone(&mut self, id: u64) {
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
    pub(super) fn campaign_again(&mut self) -> bool {
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
    pub(super) fn campaign_soon(&mut self, gone: u64) -> usize {
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
}
