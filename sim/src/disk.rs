//! The simulated disk: the node's storage seam, backed by memory that outlives a member's
//! process (a restart re-runs the node's real recovery over it).
//!
//! Semantics (what a crash does): every file keeps the prefix that was fsynced; bytes
//! appended since the last fsync are lost, except that, when torn writes are enabled, a
//! seeded prefix of them survives (a sector-torn tail, which recovery must truncate).
//! Random-access files (`open_random`, the v3 keyspace's B-tree) keep their durable image and
//! the list of writes and length changes since; a crash keeps none of the unsynced ones, or,
//! when torn writes are enabled, a seeded subset of them (a disk flushes pages in any order).
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

use detcd_node::storage::{Disk, DiskFile, RandomFile};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Default, Clone)]
struct FileState {
    data: Vec<u8>,
    durable: usize,
}

/// A change to a random-access file.
#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

impl Op {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            Op::Write(off, data) => {
                let (off, end) = (*off as usize, *off as usize + data.len());
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[off..end].copy_from_slice(data);
            }
            Op::SetLen(len) => image.resize(*len as usize, 0),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Op::Write(_, data) => data.len() as u64,
            Op::SetLen(_) => 0,
        }
    }
}

/// A random-access file: `base` with `ops` applied is what the member sees (`current`); the
/// first `synced` of the ops are durable too.
#[derive(Debug, Default, Clone)]
struct RandState {
    base: Vec<u8>,
    ops: Vec<Op>,
    synced: usize,
    current: Vec<u8>,
}

impl RandState {
    /// Fold the first `n` ops into the base image.
    fn fold(&mut self, n: usize) {
        for op in self.ops.drain(..n) {
            op.apply(&mut self.base);
        }
        self.synced -= n;
    }

    fn unsynced_bytes(&self) -> u64 {
        self.ops[self.synced..].iter().map(Op::bytes).sum()
    }
}

#[derive(Debug)]
struct State {
    files: BTreeMap<PathBuf, FileState>,
    rfiles: BTreeMap<PathBuf, RandState>,
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
    /// Incremented by every crash and wipe. A file handle remembers the epoch it was opened
    /// in, and its writes and fsyncs after a crash are dropped: a dead process writes
    /// nothing, even if an object of it lives on in the simulator and writes when it is
    /// dropped (redb's `Database` commits on drop; a stale handle writing into the file a
    /// restarted member opened again corrupted the member's v3 keyspace).
    epoch: u64,
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
                rfiles: BTreeMap::new(),
                dirs: Default::default(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                fsyncs: 0,
                bytes_lost: 0,
                owed: Duration::ZERO,
                last_sync: None,
                in_flight: None,
                frozen: false,
                epoch: 0,
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
        st.epoch += 1;
        // A crash while the member still waits for an fsync: that fsync never finished.
        if let Some((path, before, until)) = st.in_flight.take() {
            if tokio::time::Instant::now() < until {
                if let Some(f) = st.files.get_mut(&path) {
                    f.durable = f.durable.min(before);
                }
                if let Some(f) = st.rfiles.get_mut(&path) {
                    f.synced = f.synced.min(before);
                }
            }
        }
        // A random file's last fsync that nobody waited for yet: the crash below settles its
        // ops, so the index it holds would mean nothing after it.
        if st
            .last_sync
            .as_ref()
            .is_some_and(|(p, _)| st.rfiles.contains_key(p))
        {
            st.last_sync = None;
        }
        let torn = self.torn_writes;
        let mut lost = 0u64;
        // Random-access files: the durable image, plus (torn writes) a seeded subset of the
        // unsynced changes, applied in their order.
        let mut rfiles = std::mem::take(&mut st.rfiles);
        for f in rfiles.values_mut() {
            let synced = f.synced;
            f.fold(synced);
            for op in std::mem::take(&mut f.ops) {
                if torn && st.rng.gen_bool(0.5) {
                    op.apply(&mut f.base);
                } else {
                    lost += op.bytes();
                }
            }
            f.current = f.base.clone();
        }
        st.rfiles = rfiles;
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
        st.epoch += 1;
        st.files.clear();
        st.rfiles.clear();
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
        let st = self.state.lock().unwrap();
        st.files
            .values()
            .map(|f| (f.data.len() - f.durable) as u64)
            .sum::<u64>()
            + st.rfiles
                .values()
                .map(RandState::unsynced_bytes)
                .sum::<u64>()
    }
}

/// A random-access file on the simulated disk.
#[derive(Debug)]
struct SimRandomFile {
    disk: SimDisk,
    path: PathBuf,
    /// The disk's epoch when it was opened (see `State::epoch`).
    epoch: u64,
}

impl SimRandomFile {
    fn change(&self, op: Op) -> io::Result<()> {
        let mut st = self.disk.state.lock().unwrap();
        if st.frozen || st.epoch != self.epoch {
            return Ok(());
        }
        let f = st
            .rfiles
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file removed"))?;
        op.apply(&mut f.current);
        f.ops.push(op);
        Ok(())
    }
}

impl RandomFile for SimRandomFile {
    fn len(&self) -> io::Result<u64> {
        let st = self.disk.state.lock().unwrap();
        Ok(st
            .rfiles
            .get(&self.path)
            .map(|f| f.current.len() as u64)
            .unwrap_or(0))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = self.disk.state.lock().unwrap();
        let f = st
            .rfiles
            .get(&self.path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file removed"))?;
        let end = offset.checked_add(buf.len() as u64);
        match end {
            Some(end) if end <= f.current.len() as u64 => {
                buf.copy_from_slice(&f.current[offset as usize..end as usize]);
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            )),
        }
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.change(Op::Write(offset, data.to_vec()))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.change(Op::SetLen(len))
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.disk.state.lock().unwrap();
        if st.frozen || st.epoch != self.epoch {
            return Ok(());
        }
        st.fsyncs += 1;
        let in_flight_here = st.in_flight.as_ref().is_some_and(|(p, ..)| *p == self.path);
        let Some(f) = st.rfiles.get_mut(&self.path) else {
            return Ok(());
        };
        // The previous fsync of this file is done unless the member still waits for it.
        if !in_flight_here {
            let synced = f.synced;
            f.fold(synced);
        }
        let before = f.synced;
        f.synced = f.ops.len();
        st.last_sync = Some((self.path.clone(), before));
        Ok(())
    }
}

struct SimFile {
    disk: SimDisk,
    path: PathBuf,
    /// The disk's epoch when it was opened (see `State::epoch`).
    epoch: u64,
}

impl DiskFile for SimFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let mut st = self.disk.state.lock().unwrap();
        if st.frozen || st.epoch != self.epoch {
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
        if st.frozen || st.epoch != self.epoch {
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
            .chain(st.rfiles.keys())
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.state.lock().unwrap();
        if let Some(f) = st.rfiles.get(path) {
            return Ok(f.current.clone());
        }
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
        let epoch = st.epoch;
        drop(st);
        Ok(Box::new(SimFile {
            disk: self.clone(),
            path: path.to_path_buf(),
            epoch,
        }))
    }

    fn open_random(&self, path: &Path) -> io::Result<Box<dyn RandomFile>> {
        let mut st = self.state.lock().unwrap();
        if !st.frozen && !st.rfiles.contains_key(path) {
            if st.files.contains_key(path) {
                return Err(io::Error::other(format!(
                    "{}: opened for appending already",
                    path.display()
                )));
            }
            // Created durably (the file and its directory entry, empty).
            st.rfiles.insert(path.to_path_buf(), RandState::default());
        }
        let epoch = st.epoch;
        drop(st);
        Ok(Box::new(SimRandomFile {
            disk: self.clone(),
            path: path.to_path_buf(),
            epoch,
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
            st.rfiles.remove(path);
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.state.lock().unwrap();
        st.files.contains_key(path) || st.rfiles.contains_key(path) || st.dirs.contains(path)
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

    #[test]
    fn a_crash_loses_every_unsynced_random_write_without_torn_writes() {
        let disk = SimDisk::new(1, (Duration::ZERO, Duration::ZERO), false);
        let p = Path::new("/d/member/v3.db");
        let f = disk.open_random(p).unwrap();
        f.write_at(0, b"0123456789").unwrap();
        f.sync().unwrap();
        f.write_at(2, b"ab").unwrap();
        f.write_at(12, b"xy").unwrap(); // grows the file, zeros between
        f.set_len(20).unwrap();
        let mut buf = [0u8; 14];
        f.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"01ab456789\0\0xy");
        assert_eq!(f.len().unwrap(), 20);
        assert!(f.read_at(15, &mut [0u8; 6]).is_err(), "past the end");
        assert_eq!(disk.unsynced_bytes(), 4);
        assert_eq!(disk.crash(), 4);
        assert_eq!(disk.bytes_lost(), 4);
        assert_eq!(disk.read(p).unwrap(), b"0123456789");
        assert_eq!(f.len().unwrap(), 10);
        assert_eq!(disk.fsyncs(), 1);
        assert_eq!(disk.list(Path::new("/d/member")).unwrap(), vec!["v3.db"]);
        // A durable shrink, by the restarted process.
        let f = disk.open_random(p).unwrap();
        f.set_len(4).unwrap();
        f.sync().unwrap();
        assert_eq!(disk.crash(), 0);
        assert_eq!(disk.read(p).unwrap(), b"0123");
    }

    #[test]
    fn torn_writes_keep_a_seeded_subset_of_the_unsynced_random_writes() {
        let run = |seed| {
            let disk = SimDisk::new(seed, (Duration::ZERO, Duration::ZERO), true);
            let p = Path::new("/r");
            let f = disk.open_random(p).unwrap();
            f.write_at(0, &[0u8; 64]).unwrap();
            f.sync().unwrap();
            for i in 0..64u8 {
                f.write_at(u64::from(i), &[i + 1]).unwrap();
            }
            let lost = disk.crash();
            let data = disk.read(p).unwrap();
            let kept = data.iter().filter(|&&b| b != 0).count() as u64;
            assert_eq!(kept + lost, 64);
            // Each byte is its own write's or the durable zero.
            assert!(data
                .iter()
                .enumerate()
                .all(|(i, &b)| b == 0 || b == i as u8 + 1));
            (data, lost)
        };
        let (a, lost) = run(5);
        assert!(lost > 0 && lost < 64, "{lost}");
        assert_eq!(run(5).0, a, "the same seed keeps the same writes");
    }

    #[test]
    fn a_crash_while_waiting_for_a_random_files_fsync_loses_what_it_covered() {
        madsim::runtime::Runtime::new().block_on(async {
            let ms2 = Duration::from_millis(2);
            let disk = SimDisk::new(1, (ms2, ms2), false);
            let p = Path::new("/r");
            let f = disk.open_random(p).unwrap();
            f.write_at(0, b"a").unwrap();
            f.sync().unwrap();
            let wait = disk.sync_latency();
            detcd_node::rt::sleep(wait).await; // waited out: durable
            f.write_at(1, b"b").unwrap();
            f.sync().unwrap();
            assert_eq!(disk.sync_latency(), ms2);
            detcd_node::rt::sleep(Duration::from_millis(1)).await; // crash halfway
            assert_eq!(disk.crash(), 1);
            assert_eq!(disk.read(p).unwrap(), b"a");
        });
    }

    #[test]
    fn a_frozen_disk_takes_no_random_writes() {
        let disk = SimDisk::new(1, (Duration::ZERO, Duration::ZERO), false);
        let p = Path::new("/r");
        let f = disk.open_random(p).unwrap();
        f.write_at(0, b"kept").unwrap();
        f.sync().unwrap();
        disk.crash_frozen();
        f.write_at(0, b"gone").unwrap();
        f.sync().unwrap();
        assert_eq!(disk.read(p).unwrap(), b"kept");
        disk.thaw();
        // The member starts again: a handle of the crashed process still writes nothing,
        // one the new process opens does.
        f.write_at(0, b"dead").unwrap();
        assert_eq!(disk.read(p).unwrap(), b"kept");
        let g = disk.open_random(p).unwrap();
        g.write_at(0, b"back").unwrap();
        assert_eq!(disk.read(p).unwrap(), b"back");
        disk.remove(p).unwrap();
        assert!(!disk.exists(p));
        assert!(g.write_at(0, b"x").is_err());
    }

    /// An object of a crashed process that outlives it in the simulator (redb commits when
    /// its `Database` is dropped) must not write into the file the restarted member opened.
    #[test]
    fn handles_opened_before_a_crash_write_nothing_after_it() {
        let disk = SimDisk::new(1, (Duration::ZERO, Duration::ZERO), false);
        let (r, a) = (Path::new("/r"), Path::new("/a"));
        let old_r = disk.open_random(r).unwrap();
        let mut old_a = disk.open_append(a, None).unwrap();
        old_r.write_at(0, b"one").unwrap();
        old_a.append(b"one").unwrap();
        old_r.sync().unwrap();
        old_a.sync().unwrap();
        disk.crash();
        let new_r = disk.open_random(r).unwrap();
        new_r.write_at(0, b"two").unwrap();
        new_r.sync().unwrap();
        old_r.write_at(0, b"old").unwrap();
        old_r.sync().unwrap();
        old_a.append(b"old").unwrap();
        old_a.sync().unwrap();
        assert_eq!(disk.read(r).unwrap(), b"two");
        assert_eq!(disk.read(a).unwrap(), b"one");
    }

    /// The v3 keyspace on this disk: a crash (torn or not) takes it back to its last durable
    /// flush, whatever subset of the later writes survived.
    #[test]
    fn the_v3_keyspace_recovers_its_last_durable_flush_after_a_crash() {
        use detcd_node::mvcc::{Mvcc, MvccOptions, WriteReq};
        use detcd_proto::etcdserverpb as pb;
        let opts = || MvccOptions {
            max_txn_ops: 128,
            cache_bytes: 1 << 20,
        };
        let all = pb::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        for seed in 0..16u64 {
            let disk = SimDisk::new(seed, (Duration::ZERO, Duration::ZERO), seed % 2 == 0);
            let path = Path::new("/m/member/snap/db");
            let mut m = Mvcc::open(Arc::new(disk.clone()), path, opts()).unwrap();
            let mut index = 0;
            let mut put = |m: &mut Mvcc, n: u64| {
                for _ in 0..n {
                    index += 1;
                    let req = WriteReq::Put(pb::PutRequest {
                        key: format!("k{}", index % 13).into_bytes(),
                        value: vec![b'v'; (index * 37 % 500) as usize],
                        ..Default::default()
                    });
                    m.apply(index, &req, &|_| true).unwrap().0.unwrap();
                }
            };
            put(&mut m, 40);
            m.flush(true).unwrap();
            let want = (m.consistent_index(), m.revision(), m.range(&all).unwrap());
            put(&mut m, 30);
            m.flush(false).unwrap();
            put(&mut m, 5);
            disk.crash();
            std::mem::forget(m); // the process is gone: no orderly close
            let m = Mvcc::open(Arc::new(disk.clone()), path, opts()).unwrap();
            let got = (m.consistent_index(), m.revision(), m.range(&all).unwrap());
            assert_eq!(got, want, "seed {seed}");
        }
    }
}
