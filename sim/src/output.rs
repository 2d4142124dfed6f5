//! What a run produced, whichever runtime ran it (the simulator, or real containers):
//! checks, counters, faults as they happened.

use crate::workload::Recorder;

/// A leader observation: nanoseconds since the load began, and the member that led then.
pub type LeaderSample = (u64, Option<usize>);

/// The verdict of one check.
#[derive(Debug, Clone)]
pub struct Check {
    /// Name (linearizable, watches, liveness, convergence, no-panic).
    pub name: String,
    /// Passed, failed, or could not be decided (`None`).
    pub passed: Option<bool>,
    /// One line of detail.
    pub detail: String,
}

/// What a member did, for reports. `None`: not measured (a real cluster's server does not
/// expose it, or a member restarted during the load and its counters started again).
#[derive(Debug, Clone, Default)]
pub struct MemberStats {
    /// Raft messages sent.
    pub msgs_sent: Option<u64>,
    /// Bytes of Raft messages sent.
    pub bytes_sent: Option<u64>,
    /// WAL fsyncs.
    pub fsyncs: Option<u64>,
    /// Entries persisted.
    pub entries: Option<u64>,
}

impl MemberStats {
    /// A member that did nothing (or whose counters are gone with it).
    pub fn zero() -> MemberStats {
        MemberStats {
            msgs_sent: Some(0),
            bytes_sent: Some(0),
            fsyncs: Some(0),
            entries: Some(0),
        }
    }
}

/// Everything a run produced.
pub struct RunOutput {
    /// The seed.
    pub seed: u64,
    /// What the clients and watchers recorded.
    pub rec: Recorder,
    /// Faults applied.
    pub faults: Vec<FaultEvent>,
    /// Leader observations (simulated ns, member index or None).
    pub leaders: Vec<LeaderSample>,
    /// Simulated duration of the whole run (ns).
    pub sim_ns: u64,
    /// Checks that ran inside the simulation (liveness, convergence, no-panic).
    pub checks: Vec<Check>,
    /// Per-member counters at the end.
    pub members: Vec<MemberStats>,
    /// Hits of each of the node's failpoints over the run, every member (simulator only).
    pub failpoint_hits: Vec<(String, u64)>,
    /// Every request an intruder made (simulator only, `[intruders]` scenarios).
    pub intruders: Vec<IntruderEvent>,
}

/// One request by an intruder (see `intruders.rs`): who, to which member, what, and what
/// came back.
#[derive(Debug, Clone)]
pub struct IntruderEvent {
    /// The intruder (`client-no-cert`, `peer-client-cert`, ...).
    pub intruder: String,
    /// The member dialled (index).
    pub member: usize,
    /// What it tried (`PUT /v2/keys/intruders/...`, `membership request`, `MsgPropose ...`).
    pub request: String,
    /// Simulated start (ns since the start of the load).
    pub start_ns: u64,
    /// Simulated end.
    pub end_ns: u64,
    /// `answered`, `refused`, `no-answer` or `unreachable`.
    pub outcome: String,
    /// What came back (the TLS alert, the status line, ...).
    pub detail: String,
}

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct FaultEvent {
    /// The fault's kind name.
    pub kind: String,
    /// Members it hit (indexes).
    pub targets: Vec<usize>,
    /// Simulated start (ns since the start of the run).
    pub start_ns: u64,
    /// Simulated end.
    pub end_ns: u64,
    /// Extra detail (sides of a partition, offsets).
    pub detail: String,
}
