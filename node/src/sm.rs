//! The replicated state machine: what a committed Raft entry does.
//!
//! Every member applies the same entries in the same order to the same initial state and so
//! ends in the same state; nothing here may read a clock, a random number or a hash seed.
//! Time enters only through the entries: the leader stamps the proposals it makes with its
//! wall clock, and the *log clock* (the largest stamp applied so far) is the "now" of every
//! TTL computation, so every member expires the same keys at the same index.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use serde::{Deserialize, Serialize};

use crate::cluster::{Member, Members};
use crate::mvcc::{AuthInfo, AuthOp, AuthResp, Caller, Mvcc, V3Error, WriteReq, WriteResp};
use crate::store::{Command, EtcdError, Event, Store};

/// One proposal, as it is stored in a Raft entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    /// Request id: unique per client request, the same for every retry of it, so an entry
    /// proposed twice (after a leader change) applies once.
    pub id: u64,
    /// The proposer's wall clock in ms if the proposer was the leader, else 0.
    pub time_ms: u64,
    /// What to do.
    pub op: Op,
}

/// Operations carried by normal entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    /// A v2 keys write.
    Keys(Command),
    /// Expire TTL keys as of the entry's time (the leader proposes these periodically).
    Sync,
    /// The leader records the cluster version once.
    ClusterVersion(String),
    /// A v2 auth change.
    Auth(crate::auth::AuthOp),
    /// A v3 write (Put, DeleteRange, Txn or Compaction), checked by the member that took it.
    V3(V3Write),
    /// A v3 lease grant or revoke.
    Lease(LeaseOp),
    /// A v3 auth request (etcd's `InternalRaftRequest` Auth* fields).
    AuthV3(AuthOp),
    /// `op` made by a client whose v3 credentials the proposing member checked: the user and
    /// the auth revision (etcd's `RequestHeader.Username`/`AuthRevision`), against which the
    /// entry's permissions are checked when it applies.
    As {
        /// The user.
        user: String,
        /// The auth revision its credentials were checked at.
        revision: u64,
        /// What it asked.
        op: Box<Op>,
    },
    /// A v3 alarm request (GET, ACTIVATE, DEACTIVATE: etcd proposes all three).
    Alarm(AlarmOp),
    /// A member publishes its name and client URLs after it starts.
    Attributes {
        /// Member id.
        member_id: u64,
        /// Its name.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
    },
}

/// A change of the replicated lease set (etcd's LeaseGrant and LeaseRevoke entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOp {
    /// Grant lease `id` (chosen by the proposer when the client asked for 0) for `ttl` s,
    /// raised to `min_ttl` (the proposer's ceil(1.5 × election timeout), in the entry so that
    /// every member grants the same TTL).
    Grant {
        /// Lease ID.
        id: i64,
        /// Requested TTL in seconds.
        ttl: i64,
        /// The minimum TTL in seconds.
        min_ttl: i64,
    },
    /// Revoke lease `id`: its keys are deleted in one revision. The leader proposes these when
    /// leases expire.
    Revoke {
        /// Lease ID.
        id: i64,
    },
}

/// etcd's `AlarmRequest`: action, member ID and alarm type (protobuf enum values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmOp {
    /// `AlarmRequest.AlarmAction`.
    pub action: i32,
    /// The member the alarm is about.
    pub member_id: u64,
    /// `AlarmType`.
    pub alarm: i32,
}

/// A v3 write as its request's protobuf bytes (the entry keeps what the client sent; the
/// JSON proposal carries them as base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum V3Write {
    /// `etcdserverpb.PutRequest`.
    Put(#[serde(with = "b64")] Vec<u8>),
    /// `etcdserverpb.DeleteRangeRequest`.
    DeleteRange(#[serde(with = "b64")] Vec<u8>),
    /// `etcdserverpb.TxnRequest`.
    Txn(#[serde(with = "b64")] Vec<u8>),
    /// `etcdserverpb.CompactionRequest`.
    Compaction(#[serde(with = "b64")] Vec<u8>),
}

impl V3Write {
    /// Encode a request for a proposal.
    pub fn encode(req: &WriteReq) -> V3Write {
        use prost::Message;
        match req {
            WriteReq::Put(r) => V3Write::Put(r.encode_to_vec()),
            WriteReq::DeleteRange(r) => V3Write::DeleteRange(r.encode_to_vec()),
            WriteReq::Txn(r) => V3Write::Txn(r.encode_to_vec()),
            WriteReq::Compaction(r) => V3Write::Compaction(r.encode_to_vec()),
        }
    }

    /// The request again.
    pub fn decode(&self) -> Result<WriteReq, prost::DecodeError> {
        use prost::Message;
        Ok(match self {
            V3Write::Put(b) => WriteReq::Put(Message::decode(b.as_slice())?),
            V3Write::DeleteRange(b) => WriteReq::DeleteRange(Message::decode(b.as_slice())?),
            V3Write::Txn(b) => WriteReq::Txn(Message::decode(b.as_slice())?),
            V3Write::Compaction(b) => WriteReq::Compaction(Message::decode(b.as_slice())?),
        })
    }

    /// Bytes of the request (for etcd's request size limit).
    pub fn len(&self) -> usize {
        match self {
            V3Write::Put(b)
            | V3Write::DeleteRange(b)
            | V3Write::Txn(b)
            | V3Write::Compaction(b) => b.len(),
        }
    }

    /// Whether the request is empty (an all-defaults message).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes as base64 in a JSON proposal.
pub(crate) mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// Context of a conf-change entry: the member being added, updated or removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfContext {
    /// Request id (see [`Proposal::id`]).
    pub id: u64,
    /// The member (for removal only `id` matters).
    pub member: Member,
    /// For an update of peer URLs rather than an add.
    #[serde(default)]
    pub update: bool,
    /// For the promotion of a learner to a voter (an AddNode of an existing learner).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote: bool,
}

/// What applying an entry produced for the request that proposed it.
// One per applied write, moved once into its waiter: boxing the large variant would add an
// allocation per write to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A keys write: the event or etcd's error.
    Keys(Result<Event, EtcdError>),
    /// An auth change: done, or etcd's auth error.
    Auth(Result<(), crate::auth::AuthError>),
    /// A v3 write: its response, or etcd's error.
    V3(Result<WriteResp, V3Error>),
    /// A lease grant: the lease, or etcd's error.
    LeaseGrant(Result<crate::mvcc::LeaseGrant, V3Error>),
    /// A lease revoke: the store's revision after it, or etcd's error.
    LeaseRevoke(Result<i64, V3Error>),
    /// A v3 auth request: its answer, or etcd's error.
    AuthV3(Result<AuthResp, V3Error>),
    /// An alarm request: the alarms it answers with.
    Alarm(Result<Vec<detcd_proto::etcdserverpb::AlarmMember>, V3Error>),
    /// A membership change refused when it came to be applied (the cluster changed since the
    /// request was checked): the HTTP status and etcd's message.
    ConfRefused(u16, String),
    /// Anything else that completed.
    Done,
}

/// Request ids already applied, so that a retried proposal applies once.
///
/// A hash set with a fixed hasher (nothing here may depend on a per-process hash seed) beside
/// the ids in application order; a snapshot holds only the latter, so every member's snapshot
/// of it has the same bytes. (A B-tree of 65,536 random ids, each with its index, cost ~2% of
/// a loaded member's CPU in cache misses and doubled the table's share of every snapshot.)
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "DedupWire")]
pub struct Dedup {
    #[serde(skip_serializing)]
    seen: HashSet<u64, FixedHasher>,
    order: VecDeque<u64>,
}

type FixedHasher = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// How [`Dedup`] is read from a snapshot: `{"order": [id, ...]}`, oldest first. (Snapshots
/// written before also carry `"seen": {id: index}`, which is redundant and ignored.)
#[derive(Deserialize)]
struct DedupWire {
    order: VecDeque<u64>,
}

impl TryFrom<DedupWire> for Dedup {
    type Error = String;

    fn try_from(w: DedupWire) -> Result<Dedup, String> {
        let mut seen = HashSet::with_capacity_and_hasher(w.order.len(), FixedHasher::default());
        for id in &w.order {
            if !seen.insert(*id) {
                return Err(format!("dedup table: request id {id} appears twice"));
            }
        }
        Ok(Dedup {
            seen,
            order: w.order,
        })
    }
}

/// How many request ids are remembered. A client retry arrives within seconds, during which
/// far fewer writes than this are applied.
pub const DEDUP_IDS_MAX: usize = 65_536;

impl Dedup {
    /// Record `id` as applied; false if it already was.
    pub fn insert(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        while self.order.len() > DEDUP_IDS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// The state that is replicated, besides the v2 store itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Largest leader time stamp applied (ms since the UNIX epoch).
    pub log_clock_ms: u64,
    /// Members of the cluster.
    pub members: Members,
    /// Applied request ids.
    pub dedup: Dedup,
    /// Cluster id.
    pub cluster_id: u64,
    /// The cluster version, once the leader has set it.
    #[serde(default)]
    pub cluster_version: Option<String>,
    /// v2 auth: users, roles, whether it is on.
    #[serde(default)]
    pub auth: crate::auth::AuthState,
    /// The Raft index of the last entry applied to this state (0 in snapshots written
    /// before detcd recorded it): a snapshot must hold the state of its own index.
    #[serde(default)]
    pub applied_index: u64,
}

/// The state machine: the v2 store and the replicated metadata.
pub struct StateMachine {
    /// The v2 store.
    pub store: Store,
    /// Members, log clock, dedup table.
    pub meta: Meta,
}

impl StateMachine {
    /// Apply a membership change that raft-rs has applied (its configuration now `cs`) to
    /// the member list and the v2 store's internal member keys, as etcd does. Members absent
    /// from raft's configuration are dropped: raft's configuration is the truth, and the
    /// members API must not list more. Returns whether `me` was removed.
    pub fn apply_membership(
        &mut self,
        cc: &raft::eraftpb::ConfChangeV2,
        ctx: Option<&ConfContext>,
        cs: &raft::eraftpb::ConfState,
        me: u64,
    ) -> bool {
        use raft::eraftpb::ConfChangeType;
        let mut removed_self = false;
        if let Some(c) = ctx {
            for change in cc.get_changes() {
                let id = change.node_id;
                match change.get_change_type() {
                    ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                        if c.promote {
                            if let Some(m) = self.meta.members.members.get_mut(&id) {
                                m.is_learner = false;
                            }
                        } else if c.update {
                            if let Some(m) = self.meta.members.members.get_mut(&id) {
                                m.peer_urls = c.member.peer_urls.clone();
                            }
                        } else {
                            self.meta.members.members.entry(id).or_insert_with(|| {
                                crate::cluster::Member {
                                    id,
                                    ..c.member.clone()
                                }
                            });
                        }
                        self.store
                            .internal_write(&format!("/0/members/{id:x}/raftAttributes"));
                    }
                    ConfChangeType::RemoveNode => {
                        self.meta.members.members.remove(&id);
                        self.store.internal_write(&format!("/0/members/{id:x}"));
                        self.store
                            .internal_write(&format!("/0/removed_members/{id:x}"));
                        if !self.meta.members.removed.contains(&id) {
                            self.meta.members.removed.push(id);
                        }
                        removed_self |= id == me;
                    }
                }
            }
        }
        let ids = conf_members(cs);
        self.meta.members.members.retain(|id, _| ids.contains(id));
        removed_self
    }

    /// A fresh state machine.
    pub fn new(members: Members, cluster_id: u64) -> StateMachine {
        let mut store = Store::new();
        // etcd writes each bootstrap member into its internal store namespace.
        for id in members.members.keys() {
            store.internal_write(&format!("/0/members/{id:x}/raftAttributes"));
        }
        StateMachine {
            store,
            meta: Meta {
                members,
                cluster_id,
                ..Meta::default()
            },
        }
    }

    fn advance_clock(&mut self, time_ms: u64) {
        if time_ms > self.meta.log_clock_ms {
            self.meta.log_clock_ms = time_ms;
        }
    }

    /// Apply one normal entry's proposal at raft `index`; v3 writes go to `v3`, the member's
    /// v3 keyspace (which skips entries it already holds: etcd's consistent index).
    pub fn apply(&mut self, p: &Proposal, index: u64, v3: &mut Mvcc) -> Option<Outcome> {
        self.advance_clock(p.time_ms);
        if p.id != 0 && !self.meta.dedup.insert(p.id) {
            tracing::debug!(id = p.id, index, "apply: duplicate proposal skipped");
            return None;
        }
        // Entries the leader proposes itself (no request id: lease expiry) are not checked
        // against v3 auth, as etcd's run as root.
        let caller = if p.id == 0 {
            Caller::Internal
        } else {
            Caller::Client(None)
        };
        Some(self.apply_op(&p.op, caller, index, v3))
    }

    fn apply_op(&mut self, op: &Op, caller: Caller<'_>, index: u64, v3: &mut Mvcc) -> Outcome {
        let now = self.meta.log_clock_ms;
        match op {
            Op::As { user, revision, op } => {
                let ai = AuthInfo {
                    user: user.clone(),
                    revision: *revision,
                };
                self.apply_op(op, Caller::Client(Some(&ai)), index, v3)
            }
            Op::AuthV3(op) => match v3.auth_apply(index, caller, op) {
                Some(r) => Outcome::AuthV3(r),
                None => Outcome::Done,
            },
            Op::Keys(cmd) => Outcome::Keys(self.store.apply(cmd, now)),
            Op::Auth(op) => {
                let store = &mut self.store;
                Outcome::Auth(self.meta.auth.apply(op, |p| {
                    store.internal_write(p);
                }))
            }
            Op::Sync => {
                self.store.expire(now);
                Outcome::Done
            }
            Op::Lease(LeaseOp::Grant { id, ttl, min_ttl }) => {
                match v3.lease_grant(index, *id, *ttl, *min_ttl) {
                    Some(r) => Outcome::LeaseGrant(r),
                    None => Outcome::Done,
                }
            }
            Op::Lease(LeaseOp::Revoke { id }) => match v3.lease_revoke_as(index, *id, caller) {
                Some((r, _events)) => Outcome::LeaseRevoke(r),
                None => Outcome::Done,
            },
            Op::Alarm(a) => {
                let req = detcd_proto::etcdserverpb::AlarmRequest {
                    action: a.action,
                    member_id: a.member_id,
                    alarm: a.alarm,
                };
                match v3.alarm(index, &req) {
                    Some(r) => Outcome::Alarm(r),
                    None => Outcome::Done,
                }
            }
            Op::V3(w) => match w.decode() {
                Ok(req) => match v3.apply_as(index, &req, caller) {
                    Some((result, _events)) => Outcome::V3(result),
                    None => Outcome::Done,
                },
                Err(e) => {
                    tracing::error!(index, error = %e, "apply: undecodable v3 request skipped");
                    Outcome::Done
                }
            },
            Op::Attributes {
                member_id,
                name,
                client_urls,
            } => {
                if let Some(m) = self.meta.members.members.get_mut(member_id) {
                    m.name = name.clone();
                    m.client_urls = client_urls.clone();
                    self.store
                        .internal_write(&format!("/0/members/{member_id:x}/attributes"));
                }
                Outcome::Done
            }
            Op::ClusterVersion(v) => {
                if self.meta.cluster_version.as_deref() != Some(v.as_str()) {
                    self.meta.cluster_version = Some(v.clone());
                    self.store.internal_write("/0/version");
                }
                Outcome::Done
            }
        }
    }

    /// Serialise for a Raft snapshot of the v2 side only (see [`SmCopy::encode`]): a new
    /// cluster's first snapshot, taken before any v3 write.
    pub fn snapshot(&self) -> Vec<u8> {
        self.copy(None)
            .encode()
            .expect("a snapshot without v3 state encodes")
    }

    /// A cheap copy of what a snapshot holds (see [`crate::store::Store::copy`]), with the
    /// v3 keyspace's consistent copy, to be serialised off the Ready loop.
    pub fn copy(&self, v3: Option<crate::mvcc::MvccDump>) -> SmCopy {
        SmCopy {
            meta: self.meta.clone(),
            store: self.store.copy(),
            v3,
        }
    }

    /// Rebuild from [`SmCopy::encode`]'s bytes; also returns the v3 keyspace's part, if the
    /// snapshot has one.
    pub fn restore(data: &[u8]) -> Result<(StateMachine, Option<&[u8]>), String> {
        let (data, v3) = split_v3(data)?;
        if data.len() < 4 {
            return Err("snapshot data too short".into());
        }
        let n = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        let meta_bytes = data.get(4..4 + n).ok_or("snapshot metadata cut short")?;
        let meta: Meta =
            serde_json::from_slice(meta_bytes).map_err(|e| format!("snapshot metadata: {e}"))?;
        let store = Store::restore(&data[4 + n..])?;
        Ok((StateMachine { store, meta }, v3))
    }
}

/// The end of a snapshot that carries the v3 keyspace: `[v3 bytes][their length, u64 LE]`
/// then this mark. Snapshots written before v3 existed end in the v2 store's JSON.
const V3_MARK: &[u8; 8] = b"detcdv3\0";

/// A snapshot's bytes (`v2`, as [`StateMachine::snapshot`] makes them) with a v3 keyspace's
/// dump attached, as [`SmCopy::encode`] attaches it.
pub fn with_v3(mut v2: Vec<u8>, v3: &[u8]) -> Vec<u8> {
    v2.extend_from_slice(v3);
    v2.extend_from_slice(&(v3.len() as u64).to_le_bytes());
    v2.extend_from_slice(V3_MARK);
    v2
}

/// Split a snapshot's bytes into the v2 part and the v3 part (if any).
fn split_v3(data: &[u8]) -> Result<(&[u8], Option<&[u8]>), String> {
    if data.len() < 16 || !data.ends_with(V3_MARK) {
        return Ok((data, None));
    }
    let len_at = data.len() - 16;
    let n = u64::from_le_bytes(data[len_at..len_at + 8].try_into().expect("8 bytes")) as usize;
    let start = len_at
        .checked_sub(n)
        .ok_or("snapshot: the v3 keyspace's length exceeds the snapshot")?;
    Ok((&data[..start], Some(&data[start..len_at])))
}

/// A copy of the state machine as a snapshot saves it ([`StateMachine::copy`]).
pub struct SmCopy {
    meta: Meta,
    store: crate::store::StoreCopy,
    v3: Option<crate::mvcc::MvccDump>,
}

impl SmCopy {
    /// The index whose state it holds.
    pub fn applied_index(&self) -> u64 {
        self.meta.applied_index
    }

    /// The snapshot bytes: `[meta length u32 LE][meta JSON][store snapshot]`, then, when the
    /// copy has the v3 keyspace, `[v3 dump][its length u64 LE]["detcdv3\0"]`.
    pub fn encode(self) -> std::io::Result<Vec<u8>> {
        let meta = serde_json::to_vec(&self.meta).expect("meta serialises");
        let store = self.store.encode();
        let v3 = match self.v3 {
            Some(d) => Some(d.encode()?),
            None => None,
        };
        let v3_len = v3.as_ref().map_or(0, |v| v.len() + 16);
        let mut out = Vec::with_capacity(4 + meta.len() + store.len() + v3_len);
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&store);
        if let Some(v3) = v3 {
            out.extend_from_slice(&v3);
            out.extend_from_slice(&(v3.len() as u64).to_le_bytes());
            out.extend_from_slice(V3_MARK);
        }
        Ok(out)
    }
}

/// The members of raft's configuration (voters and learners), sorted.
pub fn conf_members(cs: &raft::eraftpb::ConfState) -> Vec<u64> {
    let mut ids: Vec<u64> = cs
        .get_voters()
        .iter()
        .chain(cs.get_learners())
        .copied()
        .collect();
    ids.sort_unstable();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_applies_an_id_once_and_forgets_the_oldest() {
        let mut d = Dedup::default();
        assert!(d.insert(7));
        assert!(!d.insert(7), "a retried id must be refused");
        for i in 0..DEDUP_IDS_MAX as u64 {
            assert!(d.insert(1000 + i));
        }
        assert_eq!(d.order.len(), DEDUP_IDS_MAX);
        assert_eq!(d.seen.len(), DEDUP_IDS_MAX);
        assert!(d.insert(7), "the oldest id was forgotten");
        assert!(!d.insert(1000 + DEDUP_IDS_MAX as u64 - 1));
    }

    #[test]
    fn dedup_snapshot_bytes_follow_application_order_and_round_trip() {
        let mut a = Dedup::default();
        for id in [u64::MAX - 3, 5, 1 << 40, 17, 3] {
            a.insert(id);
        }
        let bytes = serde_json::to_string(&a).unwrap();
        assert_eq!(
            bytes,
            r#"{"order":[18446744073709551612,5,1099511627776,17,3]}"#
        );
        let b: Dedup = serde_json::from_str(&bytes).unwrap();
        assert_eq!(serde_json::to_string(&b).unwrap(), bytes);
        let mut b = b;
        assert!(!b.insert(17));
        assert!(b.insert(18));
        // The earlier form, with each id's index as well, still reads.
        let old: Dedup = serde_json::from_str(r#"{"seen":{"5":11,"3":14},"order":[5,3]}"#).unwrap();
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"order":[5,3]}"#);
    }

    #[test]
    fn dedup_refuses_a_snapshot_with_a_repeated_id() {
        let e = serde_json::from_str::<Dedup>(r#"{"order":[6,7,6]}"#).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
    }
}
