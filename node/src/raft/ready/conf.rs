//! Membership changes: held while raft-rs counts an earlier one unapplied (so none becomes
//! raft-rs's empty entry), checked again when they apply, and applied to raft-rs's
//! configuration and, through the state machine, to the member list.

use protobuf::Message as _;
use raft::eraftpb::{ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType};
use raft::StateRole;

use super::{LoopError, RaftLoop};
use crate::failpoints;
use crate::raft::Applied;
use crate::sm::{ConfContext, Outcome, StateMachine};

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
            _ if c.promote => members.check_promote(id).err(),
            raft::eraftpb::ConfChangeType::AddNode => {
                members.check_add(id, &c.member.peer_urls, c.update).err()
            }
            raft::eraftpb::ConfChangeType::AddLearnerNode => members
                .check_add(id, &c.member.peer_urls, c.update)
                .and_then(|()| {
                    if c.update {
                        Ok(())
                    } else {
                        members.check_learner_room()
                    }
                })
                .err(),
            raft::eraftpb::ConfChangeType::RemoveNode => members.check_remove(id).err(),
        }
    })
}

impl RaftLoop {
    /// This member was removed from the cluster (it applied its removal, or a peer said so):
    /// it stops.
    pub(super) fn stop_removed(&self) {
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
    pub(super) fn conf_change_pending(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
            && (self.raw.raft.has_pending_conf() || !self.held_conf_props.is_empty())
    }

    /// A follower's forwarded proposal carrying a membership change while one is pending:
    /// kept and stepped once raft-rs has applied the earlier one (instead of being dropped).
    /// Returns the message when it is not held.
    pub(super) fn hold_conf_change(&mut self, m: Box<Message>) -> Option<Box<Message>> {
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
    pub(super) fn release_held_conf_changes(&mut self) -> bool {
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

    pub(super) fn apply_conf_change(
        &mut self,
        sm: &mut StateMachine,
        e: &Entry,
    ) -> Result<Option<(u64, Applied)>, LoopError> {
        let cc: ConfChangeV2 = if e.get_entry_type() == EntryType::EntryConfChange {
            // detcd proposes only V2 changes; a V1 one is converted field by field.
            let v1 = raft::eraftpb::ConfChange::parse_from_bytes(&e.data).map_err(|x| {
                LoopError::BadEntry {
                    index: e.index,
                    reason: x.to_string(),
                }
            })?;
            let mut single = raft::eraftpb::ConfChangeSingle::default();
            single.set_change_type(v1.get_change_type());
            single.node_id = v1.node_id;
            let mut v2 = ConfChangeV2::default();
            v2.mut_changes().push(single);
            v2.context = v1.context;
            v2
        } else {
            ConfChangeV2::parse_from_bytes(&e.data).map_err(|x| LoopError::BadEntry {
                index: e.index,
                reason: x.to_string(),
            })?
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
                        at: self.shared.clock.now(),
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
                            at: self.shared.clock.now(),
                        },
                    )
                }));
            }
        };
        self.storage.mem.wl().set_conf_state(cs.clone());
        self.snapshot_due = true;
        let removed_self = sm.apply_membership(&cc, ctx.as_ref(), &cs, self.shared.id);
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
                    at: self.shared.clock.now(),
                },
            )
        }))
    }
}

/// Invariant: the member list is raft's configuration (voters and learners), no more, no
/// fewer.
pub(super) fn check_members_match_conf(
    probe: &crate::rt::Probe,
    sm: &StateMachine,
    cs: &ConfState,
) {
    let conf = crate::sm::conf_members(cs);
    let listed: Vec<u64> = sm.meta.members.members.keys().copied().collect();
    probe.invariant(listed == conf, "members-match-conf", || {
        format!("member list {listed:x?}, raft configuration {conf:x?}")
    });
}
