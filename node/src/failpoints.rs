//! The node's failpoints: named points where the simulator may crash, pause or count a
//! member (through [`crate::rt::Probe`]; nothing happens outside the simulator). Each marks
//! a window a few instructions wide that a crash at a random time would almost never hit.

/// A record (entries, hard state, snapshot mark) is written to the WAL, not yet fsynced.
pub const WAL_BEFORE_FSYNC: &str = "wal-before-fsync";
/// A new WAL segment is created, its header not yet written.
pub const WAL_CUT: &str = "wal-cut";
/// A Ready's entries and hard state are fsynced; the votes and acks that promise them have
/// not left yet.
pub const BEFORE_SEND_PERSISTED: &str = "before-send-persisted";
/// Committed entries are applied to the state machine; their requests are not answered yet.
pub const APPLY_BEFORE_ANSWER: &str = "apply-before-answer";
/// A snapshot file is written; the WAL does not record it yet and the log is not compacted.
pub const SNAPSHOT_SAVE: &str = "snapshot-save";
/// A snapshot from the leader is written; the WAL does not record it yet and the state
/// machine is not replaced.
pub const SNAPSHOT_INSTALL: &str = "snapshot-install";
/// A membership change is committed and about to apply.
pub const CONF_BEFORE_APPLY: &str = "conf-before-apply";
/// A membership change is applied (raft's configuration and the member list); its request
/// is not answered yet.
pub const CONF_AFTER_APPLY: &str = "conf-after-apply";

/// Every failpoint, with what it marks.
pub const ALL: &[(&str, &str)] = &[
    (WAL_BEFORE_FSYNC, "WAL record written, not yet fsynced"),
    (WAL_CUT, "new WAL segment created, header not yet written"),
    (
        BEFORE_SEND_PERSISTED,
        "entries and hard state fsynced, votes and acks not yet sent",
    ),
    (
        APPLY_BEFORE_ANSWER,
        "entries applied, their requests not yet answered",
    ),
    (
        SNAPSHOT_SAVE,
        "snapshot file written, not yet in the WAL, log not compacted",
    ),
    (
        SNAPSHOT_INSTALL,
        "leader's snapshot written, not yet in the WAL or the state machine",
    ),
    (CONF_BEFORE_APPLY, "membership change about to apply"),
    (
        CONF_AFTER_APPLY,
        "membership change applied, request not yet answered",
    ),
];

/// Whether `name` is one of the node's failpoints.
pub fn exists(name: &str) -> bool {
    ALL.iter().any(|(n, _)| *n == name)
}
