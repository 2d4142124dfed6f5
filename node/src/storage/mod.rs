//! The storage seam: everything the node keeps on disk goes through [`Disk`].
//!
//! The real implementation, [`FileDisk`], is `std::fs`; the simulator supplies its own disk
//! that keeps written-but-unsynced bytes apart and loses them when a member crashes. Nothing
//! else in the node opens a file, so a simulated crash is exactly as destructive as a real one.
//!
//! On top of the seam: the write-ahead log ([`wal`]) and snapshot files ([`snap`]).

pub mod snap;
pub mod wal;

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file opened for appending. Bytes written are durable only after [`DiskFile::sync`].
pub trait DiskFile: Send {
    /// Append `data` at the end of the file. Not durable until `sync`.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Make every byte appended so far durable (fsync).
    fn sync(&mut self) -> io::Result<()>;
    /// The file's length in bytes, including unsynced appends.
    fn len(&self) -> u64;
    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A file read and written at arbitrary offsets (the v3 keyspace's B-tree file). Writes are
/// durable only after [`RandomFile::sync`]; a crash may lose any of the writes made since the
/// last sync, in any combination (a real disk flushes pages in no particular order).
pub trait RandomFile: Send + Sync + fmt::Debug {
    /// The file's length in bytes, including unsynced writes and `set_len`s.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fill `buf` from `offset`; reading past the end is an `UnexpectedEof` error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Write `data` at `offset`, growing the file (with zeros) if needed. Not durable until
    /// `sync`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Cut or extend (with zeros) the file to `len`. Not durable until `sync`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Make every write and length change so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
}

/// A directory tree the node owns. Paths are absolute or relative to the process's working
/// directory (real disk) or to the member's simulated disk.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Create `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries in `dir`, sorted. A missing directory is an empty list.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Read a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Open `path` for appending, creating it empty if absent. With `truncate_to`, cut the
    /// file to that length first (durably) — used to drop a torn WAL tail.
    fn open_append(&self, path: &Path, truncate_to: Option<u64>) -> io::Result<Box<dyn DiskFile>>;
    /// Open `path` for reading and writing at any offset, creating it empty (durably, with
    /// its directory entry) if absent.
    fn open_random(&self, path: &Path) -> io::Result<Box<dyn RandomFile>>;
    /// Replace `path` with `data` atomically and durably (temp file, fsync, rename, fsync dir).
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Remove a file; a missing file is not an error.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Move the file `from` to `to` (replacing what `to` held), durably (the directory is
    /// synced). Nothing else may have `from` open.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Extra time an fsync takes that the caller must wait out (the simulated disk's seeded
    /// latency; a real disk's fsync already took its time, so zero).
    fn sync_latency(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// The real disk.
#[derive(Debug, Default, Clone)]
pub struct FileDisk;

/// Zeros written ahead of a file's end at a time (see [`RealFile`]).
const PREALLOCATE_BYTES: u64 = 4 << 20;

/// A file appended to by positioned writes at its logical end. Its space is filled with zeros
/// ahead of the data, 4 MiB at a time, and made durable once: an fdatasync of data written
/// inside the file then flushes data blocks only, not the file's size as well (measured here:
/// ~200 µs instead of ~350 µs). Readers stop at a record boundary followed by zeros.
///
/// The zeros are written ahead of need on a helper thread, once half of the space already
/// made is used, so an append never waits for 4 MiB to reach the disk (it did: an inline
/// write and fsync of 4 MiB stalled the Ready loop, and every request behind it, for
/// 10–40 ms about once a second under load). The helper writes only past the space the
/// appends use, so the two never touch the same bytes. This thread is the real disk's own
/// business: the simulator's disk preallocates nothing, and nothing else in the node starts
/// a thread.
struct RealFile {
    file: Arc<std::fs::File>,
    len: u64,
    allocated: u64,
    /// The helper extending the space, if one runs: it yields the new allocated length.
    ahead: Option<std::thread::JoinHandle<io::Result<u64>>>,
}

impl RealFile {
    /// Zeros from `from` up to the next multiple of [`PREALLOCATE_BYTES`] past `need`,
    /// durable; returns the new allocated length.
    fn fill(file: &std::fs::File, from: u64, need: u64) -> io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let target = need.div_ceil(PREALLOCATE_BYTES).max(1) * PREALLOCATE_BYTES;
        if target > from {
            file.write_all_at(&vec![0u8; (target - from) as usize], from)?;
            file.sync_all()?;
        }
        Ok(target.max(from))
    }

    /// Collect the helper's result, waiting for it if it has not finished.
    fn join_ahead(&mut self) -> io::Result<()> {
        if let Some(h) = self.ahead.take() {
            let allocated = h
                .join()
                .map_err(|_| io::Error::other("the preallocation thread panicked"))??;
            self.allocated = self.allocated.max(allocated);
        }
        Ok(())
    }
}

impl DiskFile for RealFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = self.len + data.len() as u64;
        if end > self.allocated {
            self.join_ahead()?;
        }
        if end > self.allocated {
            // More than the helper made ready (a write larger than the headroom, or the
            // first write to a file): make the space here.
            self.allocated = RealFile::fill(&self.file, self.allocated.max(self.len), end)?;
        }
        self.file.write_all_at(data, self.len)?;
        self.len = end;
        if self.ahead.is_none() && self.allocated - end < PREALLOCATE_BYTES / 2 {
            let (file, from) = (Arc::clone(&self.file), self.allocated);
            self.ahead = Some(
                std::thread::Builder::new()
                    .name("detcd-prealloc".into())
                    .spawn(move || RealFile::fill(&file, from, from + 1))?,
            );
        }
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        // On the caller's thread: see `rt::run_woken_first` for why not `block_in_place`.
        self.file.sync_data()
    }
    fn len(&self) -> u64 {
        self.len
    }
}

impl Drop for RealFile {
    fn drop(&mut self) {
        // A file is dropped when its segment is cut or the member stops: let the helper
        // finish rather than leave it writing to a file nobody appends to.
        let _ = self.join_ahead();
    }
}

/// A real file opened for positioned reads and writes (see [`RandomFile`]). It keeps its own
/// length: redb asks for it on every transaction, and a `statx` each time was most of a
/// syscall per write on the v3 benchmark. Only this process changes the file (the node owns
/// its data directory), so the length it tracks is the file's.
#[derive(Debug)]
struct RealRandomFile {
    file: std::fs::File,
    len: std::sync::atomic::AtomicU64,
}

impl RealRandomFile {
    fn new(file: std::fs::File) -> io::Result<RealRandomFile> {
        let len = file.metadata()?.len();
        Ok(RealRandomFile {
            file,
            len: len.into(),
        })
    }

    /// After a failed write or resize the length is whatever the file says.
    fn relearn_len(&self) {
        if let Ok(m) = self.file.metadata() {
            self.len
                .store(m.len(), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl RandomFile for RealRandomFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.len.load(std::sync::atomic::Ordering::Relaxed))
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let written = std::os::unix::fs::FileExt::write_all_at(&self.file, data, offset);
        match written {
            Ok(()) => {
                let end = offset + data.len() as u64;
                (self.len).fetch_max(end, std::sync::atomic::Ordering::Relaxed);
            }
            Err(_) => self.relearn_len(),
        }
        written
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let set = self.file.set_len(len);
        match set {
            Ok(()) => self.len.store(len, std::sync::atomic::Ordering::Relaxed),
            Err(_) => self.relearn_len(),
        }
        set
    }
    fn sync(&self) -> io::Result<()> {
        // The file's size changes with the data (set_len), so fdatasync covers it too.
        self.file.sync_data()
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })?
    .sync_all()
}

impl Disk for FileDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in rd {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn open_append(&self, path: &Path, truncate_to: Option<u64>) -> io::Result<Box<dyn DiskFile>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .read(true)
            .truncate(false)
            .open(path)?;
        if let Some(len) = truncate_to {
            file.set_len(len)?;
            file.sync_all()?;
        }
        let len = file.metadata()?.len();
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        Ok(Box::new(RealFile {
            file: Arc::new(file),
            len,
            allocated: len,
            ahead: None,
        }))
    }

    fn open_random(&self, path: &Path) -> io::Result<Box<dyn RandomFile>> {
        let existed = path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .read(true)
            .truncate(false)
            .open(path)?;
        if !existed {
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(Box::new(RealRandomFile::new(file)?))
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let tmp = tmp_path(path);
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)?;
        if let Some(parent) = to.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Whether a read failed because the medium could not return the bytes (`EIO`: a latent
/// sector error), rather than for a reason that passes (permissions, a missing file).
pub fn is_media_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(5)
}

/// The temporary name used while writing `path` atomically.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends crossing several preallocation chunks (the later ones made by the helper
    /// thread) leave exactly the data, then zeros up to a whole number of chunks, and a
    /// reopened file continues after the data.
    #[test]
    fn preallocation_ahead_keeps_data_then_zeros() {
        let dir = std::env::temp_dir().join(format!("detcd-prealloc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let disk = FileDisk;
        let mut want = Vec::new();
        {
            let mut f = disk.open_append(&path, Some(0)).unwrap();
            // 10,000 records of 1,000 bytes: ~9.5 MiB, three chunks.
            for i in 0..10_000u32 {
                let rec: Vec<u8> = (0..1000u32).map(|j| ((i + j) % 251 + 1) as u8).collect();
                f.append(&rec).unwrap();
                want.extend_from_slice(&rec);
                if i % 100 == 0 {
                    f.sync().unwrap();
                }
            }
            f.sync().unwrap();
            assert_eq!(f.len(), want.len() as u64);
        }
        let got = std::fs::read(&path).unwrap();
        assert!(
            (got.len() as u64).is_multiple_of(PREALLOCATE_BYTES),
            "{}",
            got.len()
        );
        assert!(got.len() >= want.len());
        assert_eq!(&got[..want.len()], &want[..]);
        assert!(got[want.len()..].iter().all(|&b| b == 0));
        // Reopened at the data's end, appends continue there.
        {
            let mut f = disk.open_append(&path, Some(want.len() as u64)).unwrap();
            f.append(b"tail").unwrap();
            f.sync().unwrap();
        }
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[want.len()..want.len() + 4], b"tail");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The length a random-access file keeps for itself follows writes past its end,
    /// writes inside it, cuts and extensions, and agrees with the file system's after each,
    /// and after reopening.
    #[test]
    fn random_file_length_follows_writes_and_cuts() {
        let dir = std::env::temp_dir().join(format!("detcd-randlen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db");
        let disk = FileDisk;
        let on_disk = || std::fs::metadata(&path).unwrap().len();
        {
            let f = disk.open_random(&path).unwrap();
            assert_eq!(f.len().unwrap(), 0);
            let steps: [(&str, u64); 6] = [
                ("write past the end", 8192),
                ("write inside", 100),
                ("write across the end", 8000),
                ("cut", 3000),
                ("extend", 20_000),
                ("write far past the end", 40_000),
            ];
            for (what, at) in steps {
                match what {
                    "cut" | "extend" => f.set_len(at).unwrap(),
                    _ => f.write_at(at, &[7u8; 500]).unwrap(),
                }
                assert_eq!(f.len().unwrap(), on_disk(), "after {what} at {at}");
            }
            assert_eq!(f.len().unwrap(), 40_500);
            f.sync().unwrap();
        }
        let f = disk.open_random(&path).unwrap();
        assert_eq!(f.len().unwrap(), 40_500);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
