//! redb's storage backend over the node's [`Disk`](crate::storage::Disk) seam.
//!
//! redb 3.1 was read for determinism before it was chosen (its `src/`, 3.1.3): it starts no
//! thread (the only `thread::spawn`s are in its unit tests; `thread::panicking` is read in two
//! `Drop`s), reads no clock (no `Instant`/`SystemTime` anywhere), and uses no randomness (the
//! `rand` crate is a dev-dependency). Its hash maps keyed by page numbers use its own fixed
//! hasher; the std `RandomState` maps (table names pending a root update, page relocation
//! maps, the pages a transaction holds open) are only looked up, except one: the table roots
//! updated by a commit are written back in that map's order, which can change which page a
//! table-tree leaf is copied to, never what any table holds. Here the three tables' roots fit
//! in one leaf, copied once per commit whatever the order, and under madsim the hash seeds
//! come from the simulator's seeded `getrandom` anyway. (A commit also stores the pages it
//! allocated in a `HashSet`'s order, but only while a savepoint exists, and this module
//! makes none.) The test `same_writes_same_bytes` checks that two runs of the same writes in
//! one process (different hash seeds) leave byte-identical files. Every byte goes through
//! this file.

use std::io;
use std::sync::Arc;

use crate::storage::RandomFile;

/// A [`RandomFile`] as redb's storage.
#[derive(Debug)]
pub(crate) struct DiskBackend {
    file: Arc<dyn RandomFile>,
}

impl DiskBackend {
    pub(crate) fn new(file: Arc<dyn RandomFile>) -> DiskBackend {
        DiskBackend { file }
    }
}

impl redb::StorageBackend for DiskBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read_at(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.file.sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write_at(offset, data)
    }
}
