//! The simulated disk: the node's storage seam, backed by memory that outlives a member's
//! process (a restart re-runs the node's real recovery over it).
//!
//! Semantics (what a crash does): every file keeps the prefix that was fsynced; bytes
//! appended since the last fsync are lost, except that, when torn writes are enabled, a
//! seeded prefix of them survives (a sector-torn tail, which recovery must truncate).
//! `write_atomic` is durable when it returns, like temp-file + fsync + rename + fsync(dir).
//! Every fsync costs a seeded simulated latency, paid by the node's Ready loop (once it adds
//! up to madsim's shortest sleep, 1 ms). An fsync the member is still waiting for when it
//! crashes never finished: what it was making durable is lost too, so a member that sends a
//! vote or an ack before its fsync returns is caught by crash scenarios.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_node::storage::{Disk, DiskFile};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Default, Clone)]
struct FileState {
    data: Vec<u8>,
    durable: usize,
}

#[derive(Debug)]
struct State {
    files: BTreeMap<PathBuf, FileState>,
    dirs: std::collections::BTreeSet<PathBuf>,
    rng: ChaCha8Rng,
    fsyncs: u64,
    bytes_lost: u64,
    /// fsync time not yet slept (see `sync_latency`).
    owed: Duration,
    /// The last fsync: its file and the durable length before it.
    last_sync: Option<(PathBuf, usize)>,
    /// An fsync still in progress: the member waits for it until `.2`; a crash before then
    /// loses what it was making durable (the file falls back to `.1`).
    in_flight: Option<(PathBuf, usize, tokio::time::Instant)>,
    /// The member crashed in the middle of a step (at a failpoint): what the rest of that
    /// step writes never reaches the disk. Cleared when the member starts again.
    frozen: bool,
}

/// madsim's shortest sleep.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// One member's simulated disk. Clones share the same contents.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
    /// Range of simulated fsync latency.
    pub fsync_latency: (Duration, Duration),
    /// Whether a crash may leave a torn prefix of unsynced bytes.
    pub torn_writes: bool,
    /// Extra latency of every fsync while a `slow-disk` fault lasts (ns; shared by clones).
    stall_ns: Arc<std::sync::atomic::AtomicU64>,
}

impl SimDisk {
    /// An empty disk whose randomness (latency, torn tails) comes from `seed`.
    pub fn new(seed: u64, fsync_latency: (Duration, Duration), torn_writes: bool) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(State {
                files: BTreeMap::new(),
                dirs: Default::default(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                fsyncs: 0,
                bytes_lost: 0,
                owed: Duration::ZERO,
                last_sync: None,
                in_flight: None,
                frozen: false,
            })),
            fsync_latency,
            torn_writes,
            stall_ns: Arc::default(),
        }
    }

    /// From now on every fsync takes `extra` longer (zero ends the stall).
    pub fn set_stall(&self, extra: Duration) {
        self.stall_ns
            .store(extra.as_nanos() as u64, std::sync::atomic::Ordering::SeqCst);
    }

    /// A crash: every file falls back to its durable prefix (plus, maybe, a torn part of
    /// the unsynced bytes). Returns the number of unsynced bytes lost.
    pub fn crash(&self) -> u64 {
        let mut st = self.state.lock().unwrap();
        // A crash while the member still waits for an fsync: that fsync never finished.
        if let Some((path, before, until)) = st.in_flight.take() {
            if tokio::time::Instant::now() < until {
                if let Some(f) = st.files.get_mut(&path) {
                    f.durable = f.durable.min(before);
                }
            }
        }
        let torn = self.torn_writes;
        let mut lost = 0u64;
        let mut keep_extra = Vec::new();
        for (path, f) in st.files.iter() {
            let unsynced = f.data.len() - f.durable;
            keep_extra.push((path.clone(), unsynced));
        }
        for (path, unsynced) in keep_extra {
            let extra = if torn && unsynced > 0 {
                st.rng.gen_range(0..unsynced)
            } else {
                0
            };
            let f = st.files.get_mut(&path).expect("file listed");
            let keep = f.durable + extra;
            lost += (f.data.len() - keep) as u64;
            f.data.truncate(keep);
            f.durable = keep;
        }
        st.bytes_lost += lost;
        lost
    }

    /// A crash in the middle of the member's current step (at a failpoint): as [`SimDisk::crash`],
    /// and every write and fsync after it is dropped until [`SimDisk::thaw`], since the
    /// process is gone even though the step's code runs on to its next await.
    pub fn crash_frozen(&self) -> u64 {
        let lost = self.crash();
        self.state.lock().unwrap().frozen = true;
        lost
    }

    /// The member starts again: its disk takes writes again.
    pub fn thaw(&self) {
        self.state.lock().unwrap().frozen = false;
    }

    /// Wipe the disk (an operator replacing a member removes its data directory).
    pub fn wipe(&self) {
        let mut st = self.state.lock().unwrap();
        st.files.clear();
        st.dirs.clear();
    }

    /// fsyncs so far.
    pub fn fsyncs(&self) -> u64 {
        self.state.lock().unwrap().fsyncs
    }

    /// Bytes written but lost to crashes so far.
    pub fn bytes_lost(&self) -> u64 {
        self.state.lock().unwrap().bytes_lost
    }

    /// Unsynced bytes currently at risk.
    pub fn unsynced_bytes(&self) -> u64 {
        self.state
            .lock()
            .unwrap()
            .files
            .values()
            .map(|f| (f.data.len() - f.durable) as u64)
            .sum()
    }
}

struct SimFile {
    disk: SimDisk,
    path: PathBuf,
}

impl DiskFile for SimFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let mut st = self.disk.state.lock().unwrap();
        if st.frozen {
            return Ok(());
        }
        let f = st
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file removed"))?;
        f.data.extend_from_slice(data);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut st = self.disk.state.lock().unwrap();
        if st.frozen {
            return Ok(());
        }
        st.fsyncs += 1;
        let mut before = None;
        if let Some(f) = st.files.get_mut(&self.path) {
            before = Some(f.durable);
            f.durable = f.data.len();
        }
        st.last_sync = before.map(|b| (self.path.clone(), b));
        Ok(())
    }

    fn len(&self) -> u64 {
        let st = self.disk.state.lock().unwrap();
        st.files
            .get(&self.path)
            .map(|f| f.data.len() as u64)
            .unwrap_or(0)
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        let mut p = Some(dir);
        while let Some(d) = p {
            if d.as_os_str().is_empty() {
                break;
            }
            st.dirs.insert(d.to_path_buf());
            p = d.parent();
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock().unwrap();
        let mut names: Vec<String> = st
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.state.lock().unwrap();
        st.files.get(path).map(|f| f.data.clone()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such file", path.display()),
            )
        })
    }

    fn open_append(&self, path: &Path, truncate_to: Option<u64>) -> io::Result<Box<dyn DiskFile>> {
        let mut st = self.state.lock().unwrap();
        if !st.frozen {
            let f = st.files.entry(path.to_path_buf()).or_default();
            if let Some(len) = truncate_to {
                f.data.truncate(len as usize);
                f.durable = f.data.len();
            }
        }
        drop(st);
        Ok(Box::new(SimFile {
            disk: self.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        if st.frozen {
            return Ok(());
        }
        st.fsyncs += 1;
        st.files.insert(
            path.to_path_buf(),
            FileState {
                data: data.to_vec(),
                durable: data.len(),
            },
        );
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        if !st.frozen {
            st.files.remove(path);
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.state.lock().unwrap();
        st.files.contains_key(path) || st.dirs.contains(path)
    }

    fn sync_latency(&self) -> Duration {
        let stall = Duration::from_nanos(self.stall_ns.load(std::sync::atomic::Ordering::SeqCst));
        let (lo, hi) = self.fsync_latency;
        let mut st = self.state.lock().unwrap();
        let one = if hi <= lo {
            lo
        } else {
            Duration::from_nanos(st.rng.gen_range(lo.as_nanos() as u64..hi.as_nanos() as u64))
        } + stall;
        // madsim sleeps at least 1 ms, so a 100 µs fsync slept one by one would cost 1 ms:
        // the time is owed and paid once it adds up to a sleep madsim can honour.
        st.owed += one;
        if st.owed >= MIN_SLEEP {
            // The member now waits for this fsync; until it has, the fsync is not done.
            let wait = std::mem::take(&mut st.owed);
            st.in_flight = st
                .last_sync
                .take()
                .map(|(path, before)| (path, before, tokio::time::Instant::now() + wait));
            wait
        } else {
            // Not waited for: done as far as the member can tell.
            st.last_sync = None;
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loses_exactly_the_unsynced_bytes() {
        let disk = SimDisk::new(1, (Duration::ZERO, Duration::ZERO), false);
        let p = Path::new("/d/wal/0.wal");
        let mut f = disk.open_append(p, None).unwrap();
        f.append(b"durable").unwrap();
        f.sync().unwrap();
        f.append(b"-volatile").unwrap();
        assert_eq!(disk.unsynced_bytes(), 9);
        assert_eq!(disk.crash(), 9);
        assert_eq!(disk.read(p).unwrap(), b"durable");
        disk.write_atomic(Path::new("/d/snap/1.snap"), b"snap")
            .unwrap();
        assert_eq!(disk.crash(), 0);
        assert_eq!(disk.read(Path::new("/d/snap/1.snap")).unwrap(), b"snap");
    }

    #[test]
    fn a_crash_while_the_member_waits_for_its_fsync_loses_what_that_fsync_covered() {
        madsim::runtime::Runtime::new().block_on(async {
            let ms2 = Duration::from_millis(2);
            let disk = SimDisk::new(1, (ms2, ms2), false);
            let p = Path::new("/w");
            let mut f = disk.open_append(p, None).unwrap();
            f.append(b"a").unwrap();
            f.sync().unwrap();
            let wait = disk.sync_latency();
            assert_eq!(wait, ms2);
            detcd_node::rt::sleep(wait).await; // waited out: durable
            f.append(b"b").unwrap();
            f.sync().unwrap();
            assert_eq!(disk.sync_latency(), ms2);
            detcd_node::rt::sleep(Duration::from_millis(1)).await; // crash halfway
            assert_eq!(disk.crash(), 1);
            assert_eq!(disk.read(p).unwrap(), b"a");
        });
    }

    #[test]
    fn torn_writes_keep_a_prefix_of_the_unsynced_bytes() {
        let disk = SimDisk::new(3, (Duration::ZERO, Duration::ZERO), true);
        let p = Path::new("/w");
        let mut f = disk.open_append(p, None).unwrap();
        f.append(b"ok").unwrap();
        f.sync().unwrap();
        f.append(&[7u8; 100]).unwrap();
        disk.crash();
        let data = disk.read(p).unwrap();
        assert!(
            data.starts_with(b"ok") && data.len() < 102,
            "{}",
            data.len()
        );
    }
}
