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
use std::sync::{Arc, Mutex};

use crate::storage::RandomFile;

/// The size of the blocks [`DiskBackend`] checksums: redb's page size, so every page redb
/// reads or writes is whole blocks.
const BLOCK: u64 = 4096;

/// A [`RandomFile`] as redb's storage, every block redb reads checked against the CRC-32
/// (`crc32fast`) of what was last written or verified there.
///
/// redb verifies its pages' checksums only when the database opens (and the caller asks,
/// see `Mvcc::open`), and a value's own checksum covers only the value: a bit that flips
/// in a page's keys or branch offsets after the open would be read back as a different
/// key, a missing one or an older revision. So this backend remembers, in memory, a
/// checksum per 4 KiB block (8 bytes per block: 0.2 % of the file's size in memory):
/// - while the database opens and verifies its pages, every whole block it reads is
///   recorded as read ([`Verified::now`] ends that phase): redb's own checksums
///   vouched for them;
/// - every whole block written is recorded as written; a block written in part, or cut by
///   `set_len`, is forgotten until it is next written or read whole;
/// - after the open, every whole block read must match its record, or the read fails with
///   [`io::ErrorKind::InvalidData`] naming the offset: the keyspace then notes the damage
///   and the member stops ([`Mvcc::damage`](super::Mvcc::damage)). A block with no record
///   (written in part) is recorded on its first whole read.
///
/// A failed write forgets the blocks it was writing. The records live only as long as the
/// process: a restart verifies every page again.
#[derive(Debug)]
pub(crate) struct DiskBackend {
    file: Arc<dyn RandomFile>,
    /// The file's path, for errors.
    path: std::path::PathBuf,
    sums: Arc<Mutex<Sums>>,
}

/// Ends the open's phase of a [`DiskBackend`] (which redb owns once the database opens).
#[derive(Debug)]
pub(crate) struct Verified(Arc<Mutex<Sums>>);

impl Verified {
    /// The open's verification is over: from now on reads are checked.
    pub(crate) fn now(&self) {
        self.0.lock().expect("not poisoned").checking = true;
    }
}

#[derive(Debug, Default)]
struct Sums {
    /// Per block: 0 if unknown, else `1 << 32 | crc`.
    blocks: Vec<u64>,
    /// Whether the open's verification is over (reads are checked, not recorded).
    checking: bool,
}

impl Sums {
    fn set(&mut self, block: u64, v: u64) {
        let i = block as usize;
        if self.blocks.len() <= i {
            if v == 0 {
                return;
            }
            self.blocks.resize(i + 1, 0);
        }
        self.blocks[i] = v;
    }

    fn get(&self, block: u64) -> u64 {
        self.blocks.get(block as usize).copied().unwrap_or(0)
    }

    /// Forget the blocks that `[offset, offset + len)` touches.
    fn forget(&mut self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).div_ceil(BLOCK);
        for b in offset / BLOCK..end.min(self.blocks.len() as u64) {
            self.blocks[b as usize] = 0;
        }
    }
}

fn record(data: &[u8]) -> u64 {
    1 << 32 | u64::from(crc32fast::hash(data))
}

/// The whole blocks within `[offset, offset + len)`: (block number, position in the range).
fn whole_blocks(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize)> {
    let first = offset.div_ceil(BLOCK);
    let end = (offset + len as u64) / BLOCK;
    (first..end).map(move |b| (b, (b * BLOCK - offset) as usize))
}

impl DiskBackend {
    /// The backend, and what ends its open's phase.
    pub(crate) fn new(
        file: Arc<dyn RandomFile>,
        path: &std::path::Path,
    ) -> (DiskBackend, Verified) {
        let sums = Arc::new(Mutex::new(Sums::default()));
        (
            DiskBackend {
                file,
                path: path.to_path_buf(),
                sums: Arc::clone(&sums),
            },
            Verified(sums),
        )
    }
}

impl redb::StorageBackend for DiskBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read_at(offset, out)?;
        let mut sums = self.sums.lock().expect("not poisoned");
        for (b, at) in whole_blocks(offset, out.len()) {
            let got = record(&out[at..at + BLOCK as usize]);
            match sums.get(b) {
                want if want == got => {}
                want if want != 0 && sums.checking => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: block checksum mismatch at offset {} (the bytes read back are \
                             not the bytes written)",
                            self.path.display(),
                            b * BLOCK
                        ),
                    ));
                }
                _ => sums.set(b, got),
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut sums = self.sums.lock().expect("not poisoned");
        // The block the new end cuts, and every block after it.
        let from = len / BLOCK;
        if (from as usize) < sums.blocks.len() {
            sums.blocks.truncate(from as usize);
        }
        drop(sums);
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.file.sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut sums = self.sums.lock().expect("not poisoned");
        // Forgotten first: a write that fails may have written part of the range.
        sums.forget(offset, data.len() as u64);
        self.file.write_at(offset, data)?;
        for (b, at) in whole_blocks(offset, data.len()) {
            let v = record(&data[at..at + BLOCK as usize]);
            sums.set(b, v);
        }
        Ok(())
    }
}
