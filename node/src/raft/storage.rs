//! raft-rs's view of the log: its `MemStorage` for entries and hard state (the WAL below it is
//! the durable copy), plus the newest state-machine snapshot, which `MemStorage` cannot serve
//! (it only knows snapshot metadata, never the data a lagging follower must be sent).

use std::sync::{Arc, Mutex};

use raft::eraftpb::{Entry, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, StorageError};

/// The Raft storage of one member.
#[derive(Clone)]
pub struct NodeStorage {
    /// Entries and hard state.
    pub mem: MemStorage,
    /// The newest snapshot with its data (index 0 = none yet).
    pub snapshot: Arc<Mutex<Snapshot>>,
}

impl NodeStorage {
    /// Empty storage.
    pub fn new() -> NodeStorage {
        NodeStorage {
            mem: MemStorage::new(),
            snapshot: Arc::new(Mutex::new(Snapshot::default())),
        }
    }

    /// Record `snap` as the newest snapshot to serve to followers.
    pub fn set_snapshot(&self, snap: Snapshot) {
        *self.snapshot.lock().expect("snapshot lock") = snap;
    }
}

impl Default for NodeStorage {
    fn default() -> Self {
        NodeStorage::new()
    }
}

impl raft::Storage for NodeStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snap = self.snapshot.lock().expect("snapshot lock").clone();
        if snap.get_metadata().index == 0 || snap.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(snap)
    }
}
