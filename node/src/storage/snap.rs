//! Snapshot files: `<data-dir>/member/snap/<term>-<index>.snap`, each `[crc32 u32 LE][payload]`
//! where the payload is a protobuf-encoded Raft snapshot whose data is the state machine.
//!
//! A snapshot is written atomically (temp file, fsync, rename) *before* the WAL records its
//! mark, so recovery can always trust the newest readable snapshot. A damaged snapshot file is
//! skipped with a warning and the next older one is used, as etcd does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::Snapshot;

use super::Disk;

/// The snapshot directory of a member.
#[derive(Clone)]
pub struct SnapDir {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".snap")?;
    let (t, i) = stem.split_once('-')?;
    Some((
        u64::from_str_radix(t, 16).ok()?,
        u64::from_str_radix(i, 16).ok()?,
    ))
}

impl SnapDir {
    /// Open (and create) the directory.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path) -> std::io::Result<SnapDir> {
        disk.create_dir_all(dir)?;
        Ok(SnapDir {
            disk,
            dir: dir.to_path_buf(),
        })
    }

    fn files(&self) -> std::io::Result<Vec<(u64, u64, String)>> {
        let mut v: Vec<(u64, u64, String)> = self
            .disk
            .list(&self.dir)?
            .into_iter()
            .filter_map(|n| parse_name(&n).map(|(t, i)| (i, t, n)))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Write `snap` durably; returns its path.
    pub fn save(&self, snap: &Snapshot) -> std::io::Result<PathBuf> {
        let md = snap.get_metadata();
        let path = self
            .dir
            .join(format!("{:016x}-{:016x}.snap", md.term, md.index));
        let payload = snap.write_to_bytes().map_err(std::io::Error::other)?;
        let mut data = Vec::with_capacity(payload.len() + 4);
        data.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        data.extend_from_slice(&payload);
        self.disk.write_atomic(&path, &data)?;
        Ok(path)
    }

    /// The newest readable snapshot, if any.
    pub fn load_newest(&self) -> std::io::Result<Option<Snapshot>> {
        for (_, _, name) in self.files()?.into_iter().rev() {
            let path = self.dir.join(&name);
            let data = match self.disk.read(&path) {
                Ok(d) => d,
                Err(e) if crate::storage::is_media_error(&e) => {
                    tracing::warn!(file = %path.display(), error = %e, "snapshot: unreadable, trying an older snapshot");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if data.len() < 4 || crc32fast::hash(&data[4..]).to_le_bytes() != data[..4] {
                tracing::warn!(file = %path.display(), "snapshot: CRC mismatch, trying an older snapshot");
                continue;
            }
            match Snapshot::parse_from_bytes(&data[4..]) {
                Ok(s) => return Ok(Some(s)),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "snapshot: unreadable, trying an older one")
                }
            }
        }
        Ok(None)
    }

    /// Keep the newest `keep` snapshots (at least one), remove the rest.
    pub fn purge(&self, keep: usize) -> std::io::Result<usize> {
        let files = self.files()?;
        let n = files.len().saturating_sub(keep.max(1));
        for (_, _, name) in &files[..n] {
            self.disk.remove(&self.dir.join(name))?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FileDisk;

    fn snap(index: u64, term: u64, data: &[u8]) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.data = data.to_vec().into();
        s
    }

    #[test]
    fn newest_readable_snapshot_wins_and_purge_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let sd = SnapDir::open(Arc::new(FileDisk), dir.path()).unwrap();
        sd.save(&snap(10, 1, b"ten")).unwrap();
        sd.save(&snap(20, 2, b"twenty")).unwrap();
        let p30 = sd.save(&snap(30, 2, b"thirty")).unwrap();
        assert_eq!(&sd.load_newest().unwrap().unwrap().data[..], b"thirty");
        // Damage the newest: the loader falls back to the one before.
        let mut d = std::fs::read(&p30).unwrap();
        let last = d.len() - 1;
        d[last] ^= 1;
        std::fs::write(&p30, d).unwrap();
        assert_eq!(&sd.load_newest().unwrap().unwrap().data[..], b"twenty");
        assert_eq!(sd.purge(2).unwrap(), 1);
        assert_eq!(sd.files().unwrap().len(), 2);
    }
}
