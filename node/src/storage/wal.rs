//! The write-ahead log: Raft entries and hard state, CRC-framed, fsynced once per Ready.
//!
//! Layout: `<wal-dir>/<seq>-<first-index>.wal` segments (16 hex digits each). Every record is
//! `[len u32 LE][crc32 u32 LE][kind u8][payload; len bytes]`, the CRC covering kind and payload.
//! Each segment opens with a [`WalMeta`] record, so a segment alone says whose log it is.
//!
//! Recovery reads every segment in order. A record cut short, or a bad CRC on the very last
//! record of the last segment, is a torn write from a crash: it is truncated with a warning
//! (nothing in it was ever acknowledged, since acknowledgement waits for the fsync). Damage
//! anywhere else is corruption and recovery refuses to start, naming the file and offset.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};
use serde::{Deserialize, Serialize};

use super::{Disk, DiskFile};
use crate::failpoints;
use crate::rt::Probe;

const KIND_META: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_HARD_STATE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;
const HEADER_BYTES: usize = 9;
/// A record larger than this is corruption, not data (the largest entry a client can send is
/// bounded far below it by the HTTP layer).
pub const RECORD_BYTES_MAX: usize = 256 << 20;
/// Segments are cut once they exceed this size (unless [`Wal::tuned`] says otherwise).
pub const SEGMENT_BYTES_MAX: u64 = 64 << 20;

/// Who the log belongs to; written at the start of every segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalMeta {
    /// This member's id.
    pub member_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// The members as a member that joined a running cluster (`state existing`) learned them
    /// from its peers: what it restarts from if it crashes before the leader's first snapshot
    /// reaches it. None for a member that bootstrapped the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<crate::cluster::Members>,
}

/// Errors from the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The disk failed.
    #[error("wal: {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A segment could not be read back (`EIO`: a latent sector error): what it held is
    /// lost to this member, as if damaged.
    #[error("wal: {}: unreadable: {source} (the log cannot be read back; refusing to start rather than lose acknowledged writes)", path.display())]
    Unreadable {
        /// The segment.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record before the tail is damaged: refusing to guess what was acknowledged.
    #[error("wal: {}: corrupt record at offset {offset}: {reason} (the log is damaged before its tail; refusing to start rather than lose acknowledged writes)", path.display())]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What recovery found in the log.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The owner, from the first segment.
    pub meta: Option<WalMeta>,
    /// The last hard state written.
    pub hard_state: HardState,
    /// The newest snapshot mark (index, term) written.
    pub snapshot: Option<(u64, u64)>,
    /// Entries after the newest snapshot mark, contiguous, conflicts already resolved.
    pub entries: Vec<Entry>,
    /// Bytes dropped from a torn tail (0 when the log ended cleanly).
    pub torn_bytes: u64,
    /// Where the last segment's records end when preallocated zeros follow them.
    pub end_of_last: Option<u64>,
}

/// An open write-ahead log.
pub struct Wal {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    meta: WalMeta,
    file: Box<dyn DiskFile>,
    path: PathBuf,
    seq: u64,
    last_index: u64,
    last_hard_state: HardState,
    buf: Vec<u8>,
    /// fsyncs issued, for the report's group-commit factor.
    pub syncs: u64,
    /// Segments are cut once they exceed this size.
    segment_bytes: u64,
    /// Failpoints and invariants.
    probe: Probe,
}

fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (a, b) = stem.split_once('-')?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// A record's checksum: CRC-32 of its kind byte and payload.
fn record_crc(kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

fn encode(buf: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&record_crc(kind, payload).to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(payload);
}

impl Wal {
    /// Whether a log exists in `dir`.
    pub fn exists(disk: &dyn Disk, dir: &Path) -> bool {
        disk.list(dir)
            .map(|names| names.iter().any(|n| parse_segment_name(n).is_some()))
            .unwrap_or(false)
    }

    /// Start a new, empty log in `dir`.
    pub fn create(disk: Arc<dyn Disk>, dir: &Path, meta: WalMeta) -> Result<Wal, WalError> {
        disk.create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(segment_name(0, 0));
        let file = disk.open_append(&path, Some(0)).map_err(io_err(&path))?;
        let mut wal = Wal {
            disk,
            dir: dir.to_path_buf(),
            meta,
            file,
            path,
            seq: 0,
            last_index: 0,
            last_hard_state: HardState::default(),
            buf: Vec::new(),
            syncs: 0,
            segment_bytes: SEGMENT_BYTES_MAX,
            probe: Probe::default(),
        };
        wal.write_meta();
        wal.flush_sync()?;
        Ok(wal)
    }

    /// Open the log in `dir`, replay it, and truncate a torn tail.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path) -> Result<(Wal, Recovered), WalError> {
        let mut segments: Vec<(u64, u64, String)> = disk
            .list(dir)
            .map_err(io_err(dir))?
            .into_iter()
            .filter_map(|n| parse_segment_name(&n).map(|(s, i)| (s, i, n)))
            .collect();
        segments.sort();
        let Some(last) = segments.last().cloned() else {
            return Err(WalError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no WAL segment"),
            });
        };
        let mut rec = Recovered::default();
        let mut truncate_last_to = None;
        for (i, (_, _, name)) in segments.iter().enumerate() {
            let path = dir.join(name);
            let data = disk.read(&path).map_err(|source| {
                if crate::storage::is_media_error(&source) {
                    WalError::Unreadable {
                        path: path.clone(),
                        source,
                    }
                } else {
                    io_err(&path)(source)
                }
            })?;
            let is_last = i + 1 == segments.len();
            if let Some(valid) = replay_segment(&path, &data, is_last, &mut rec)? {
                rec.torn_bytes = data.len() as u64 - valid;
                truncate_last_to = Some(valid);
                tracing::warn!(
                    file = %path.display(),
                    offset = valid,
                    bytes = rec.torn_bytes,
                    "wal: truncating a torn record at the tail (a write cut short by a crash)"
                );
            }
        }
        let meta = rec.meta.clone().ok_or_else(|| WalError::Corrupt {
            path: dir.join(&last.2),
            offset: 0,
            reason: "no metadata record".into(),
        })?;
        let path = dir.join(&last.2);
        let file = disk
            .open_append(&path, truncate_last_to.or(rec.end_of_last))
            .map_err(io_err(&path))?;
        let last_index = rec
            .entries
            .last()
            .map(|e| e.index)
            .or(rec.snapshot.map(|s| s.0))
            .unwrap_or(0);
        let wal = Wal {
            disk,
            dir: dir.to_path_buf(),
            meta,
            file,
            path,
            seq: last.0,
            last_index,
            last_hard_state: rec.hard_state.clone(),
            buf: Vec::new(),
            syncs: 0,
            segment_bytes: SEGMENT_BYTES_MAX,
            probe: Probe::default(),
        };
        Ok((wal, rec))
    }

    /// The same log reporting to `probe`, cutting segments past `segment_bytes` (None: the
    /// default [`SEGMENT_BYTES_MAX`]; the simulator cuts small segments to reach the cut).
    pub fn tuned(mut self, probe: Probe, segment_bytes: Option<u64>) -> Wal {
        self.probe = probe;
        self.segment_bytes = segment_bytes.unwrap_or(SEGMENT_BYTES_MAX).max(1);
        self
    }

    /// The log's owner.
    pub fn meta(&self) -> &WalMeta {
        &self.meta
    }

    fn write_meta(&mut self) {
        let payload = serde_json::to_vec(&self.meta).expect("WalMeta serialises");
        encode(&mut self.buf, KIND_META, &payload);
    }

    fn flush_sync(&mut self) -> Result<(), WalError> {
        let path = self.path.clone();
        if !self.buf.is_empty() {
            self.file.append(&self.buf).map_err(io_err(&path))?;
            self.buf.clear();
        }
        self.probe.failpoint(failpoints::WAL_BEFORE_FSYNC);
        self.file.sync().map_err(io_err(&path))?;
        self.syncs += 1;
        Ok(())
    }

    /// Append a snapshot mark, entries and a hard state, then fsync once: the group commit
    /// of one Raft Ready. Nothing written here may be acknowledged or sent as a persisted
    /// message before this returns. See [`Wal::save_unsynced`] for the one exception.
    pub fn save(
        &mut self,
        snapshot: Option<(u64, u64)>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), WalError> {
        self.save_with(snapshot, entries, hard_state, true)
    }

    /// Append a hard state whose only change is the commit index, without fsync (as etcd
    /// does): a lost commit index is re-learned from the leader, and nothing acknowledged
    /// depends on it being on disk.
    pub fn save_unsynced(&mut self, hard_state: &HardState) -> Result<(), WalError> {
        self.save_with(None, &[], Some(hard_state), false)
    }

    /// Append entries and a hard state without fsync: the leader's own copy of entries that
    /// followers forming a quorum without it make durable. [`Wal::sync`] makes them durable
    /// later; raft-rs counts the leader's copy only then.
    pub fn save_deferred(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), WalError> {
        self.save_with(None, entries, hard_state, false)
    }

    /// Make everything appended so far durable (one fsync).
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.flush_sync()?;
        if self.file.len() > self.segment_bytes {
            self.cut()?;
        }
        Ok(())
    }

    fn save_with(
        &mut self,
        snapshot: Option<(u64, u64)>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), WalError> {
        if let Some((index, term)) = snapshot {
            let mut p = Vec::with_capacity(16);
            p.extend_from_slice(&index.to_le_bytes());
            p.extend_from_slice(&term.to_le_bytes());
            encode(&mut self.buf, KIND_SNAPSHOT, &p);
            // A snapshot mark drops entries up to its index only: entries past it written
            // earlier stay in the log (recovery keeps them), so the log's end does not move
            // back. (It used to: a segment cut right after a mark was then named as if it
            // began at the mark, and releasing older segments could remove entries the
            // snapshot did not cover. The `wal-contiguous` invariant found it.)
            self.last_index = self.last_index.max(index);
        }
        if let Some(first) = entries.first() {
            // Raft may overwrite a conflicting suffix, never leave a hole.
            let last = self.last_index;
            self.probe
                .invariant(first.index <= last + 1, "wal-contiguous", || {
                    format!("entry {} appended after entry {last}", first.index)
                });
        }
        for e in entries {
            let prev = self.last_index;
            self.probe.invariant(
                e.index == prev + 1 || e.index == entries[0].index,
                "wal-contiguous",
                || format!("entry {} follows entry {prev} in one save", e.index),
            );
            let payload = e.write_to_bytes().expect("entry encodes");
            encode(&mut self.buf, KIND_ENTRY, &payload);
            self.last_index = e.index;
        }
        if let Some(hs) = hard_state {
            encode(
                &mut self.buf,
                KIND_HARD_STATE,
                &hs.write_to_bytes().expect("hard state encodes"),
            );
            self.last_hard_state = hs.clone();
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        if !sync {
            let path = self.path.clone();
            self.file.append(&self.buf).map_err(io_err(&path))?;
            self.buf.clear();
            return Ok(());
        }
        self.flush_sync()?;
        if self.file.len() > self.segment_bytes {
            self.cut()?;
        }
        Ok(())
    }

    /// Start a new segment; the new one repeats the metadata and the hard state so it can be
    /// read on its own after older segments are released.
    fn cut(&mut self) -> Result<(), WalError> {
        self.seq += 1;
        let path = self.dir.join(segment_name(self.seq, self.last_index + 1));
        self.file = self
            .disk
            .open_append(&path, Some(0))
            .map_err(io_err(&path))?;
        self.probe.failpoint(failpoints::WAL_CUT);
        self.path = path;
        self.write_meta();
        let hs = self.last_hard_state.clone();
        encode(
            &mut self.buf,
            KIND_HARD_STATE,
            &hs.write_to_bytes().expect("hard state encodes"),
        );
        self.flush_sync()
    }

    /// Remove segments whose every entry is at or below `index` (covered by a snapshot),
    /// keeping at least `keep` segment files. Only whole segments before the current one go.
    pub fn release_to(&mut self, index: u64, keep: usize) -> Result<usize, WalError> {
        let mut segments: Vec<(u64, u64, String)> = self
            .disk
            .list(&self.dir)
            .map_err(io_err(&self.dir))?
            .into_iter()
            .filter_map(|n| parse_segment_name(&n).map(|(s, i)| (s, i, n)))
            .collect();
        segments.sort();
        let mut removed = 0;
        let n = segments.len();
        for i in 0..n.saturating_sub(1) {
            if n - removed <= keep.max(1) {
                break;
            }
            // Segment i holds entries below segment i+1's first index.
            if segments[i + 1].1 <= index + 1 {
                let path = self.dir.join(&segments[i].2);
                self.disk.remove(&path).map_err(io_err(&path))?;
                removed += 1;
            } else {
                break;
            }
        }
        Ok(removed)
    }
}

/// Replay one segment into `rec`. Returns `Some(valid_len)` when the segment ends in a torn
/// record that must be truncated (only allowed for the last segment).
fn replay_segment(
    path: &Path,
    data: &[u8],
    is_last: bool,
    rec: &mut Recovered,
) -> Result<Option<u64>, WalError> {
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut off = 0usize;
    while off < data.len() {
        let rest = data.len() - off;
        // A real disk preallocates segments with zeros (cheaper fsyncs); the log ends where
        // only zeros follow a record. A record header is never all zeros (its kind is not 0).
        if data[off..off + rest.min(HEADER_BYTES)]
            .iter()
            .all(|b| *b == 0)
            && data[off..].iter().all(|b| *b == 0)
        {
            if is_last {
                rec.end_of_last = Some(off as u64);
            }
            return Ok(None);
        }
        if rest < HEADER_BYTES {
            return torn(is_last, off, || {
                corrupt(off, "record header cut short".into())
            });
        }
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap());
        // Only zeros from `at` on: nothing was written there (preallocated space).
        let zeros_from = |at: usize| data.get(at..).is_none_or(|r| r.iter().all(|b| *b == 0));
        // A torn write never leaves a record that is whole under a length one bit away from
        // its header's: that is a bit flipped in the length field of a record written in
        // full (the length has no checksum of its own), and truncating it would drop synced
        // data.
        let rotted_length = |what: String| {
            match whole_under_flipped_length(data, off, len, crc) {
            Some(bit) => Err(corrupt(
                off,
                format!("{what}, but the record is whole with bit {bit} of its length flipped: the length field is damaged"),
            )),
            None => Ok(()),
        }
        };
        // A length past the limit is never a torn write: no writer writes one, and a torn
        // write only ever leaves a length shorter than the one written (its missing bytes are
        // absent, or read as the zeros of preallocated space). It is damage wherever it is.
        if len > RECORD_BYTES_MAX {
            rotted_length(format!("record length {len} exceeds the limit"))?;
            return Err(corrupt(
                off,
                format!("record length {len} exceeds the limit"),
            ));
        }
        if HEADER_BYTES + len > rest {
            // A record cut short by a crash is the last thing written: only its own first
            // bytes follow its header. A whole record after it was written later, so this
            // one was damaged afterwards (a misdirected write landing on its header, say),
            // and truncating here would drop the synced records after it.
            let allowed = is_last && !whole_record_from(data, off + 1);
            if is_last {
                rotted_length("record cut short".into())?;
            }
            return torn(allowed, off, || {
                let why = if is_last {
                    "record cut short, but whole records follow it: its header is damaged"
                } else {
                    "record cut short"
                };
                corrupt(off, why.into())
            });
        }
        let kind = data[off + 8];
        let payload = &data[off + HEADER_BYTES..off + HEADER_BYTES + len];
        let end = off + HEADER_BYTES + len;
        if record_crc(kind, payload) != crc {
            // A bad CRC is a torn write only if it is the very last record of the log and a
            // sector of it never reached the disk: a disk writes a sector whole or not at
            // all, and an unwritten sector of preallocated space reads as zeros (etcd's
            // `isTornEntry`). A last record whose every sector holds data was written in
            // full and has rotted since: a bit flip in synced data, not a crash.
            let allowed = is_last
                && (end == data.len() || zeros_from(end))
                && has_unwritten_sector(data, off, end);
            // Refused or not, say so when it is the length that rotted.
            rotted_length("CRC mismatch".into())?;
            return torn(allowed, off, || corrupt(off, "CRC mismatch".into()));
        }
        match kind {
            KIND_META => {
                let meta: WalMeta = serde_json::from_slice(payload)
                    .map_err(|e| corrupt(off, format!("bad metadata: {e}")))?;
                if let Some(prev) = &rec.meta {
                    if *prev != meta {
                        return Err(corrupt(
                            off,
                            format!("segment belongs to {meta:?}, log to {prev:?}"),
                        ));
                    }
                }
                rec.meta = Some(meta);
            }
            KIND_ENTRY => {
                let e = Entry::parse_from_bytes(payload)
                    .map_err(|e| corrupt(off, format!("bad entry: {e}")))?;
                let base = rec.snapshot.map(|s| s.0).unwrap_or(0);
                if e.index <= base {
                    // Superseded by a later snapshot mark: only possible in older segments.
                } else {
                    if let Some(first) = rec.entries.first().map(|f| f.index) {
                        if e.index < first {
                            rec.entries.clear();
                        } else {
                            rec.entries.truncate((e.index - first) as usize);
                        }
                    }
                    match rec.entries.last() {
                        Some(prev) if prev.index + 1 != e.index => {
                            return Err(corrupt(
                                off,
                                format!("entry {} follows entry {}", e.index, prev.index),
                            ))
                        }
                        _ => rec.entries.push(e),
                    }
                }
            }
            KIND_HARD_STATE => {
                rec.hard_state = HardState::parse_from_bytes(payload)
                    .map_err(|e| corrupt(off, format!("bad hard state: {e}")))?;
            }
            KIND_SNAPSHOT => {
                if payload.len() != 16 {
                    return Err(corrupt(off, "bad snapshot mark".into()));
                }
                let index = u64::from_le_bytes(payload[..8].try_into().unwrap());
                let term = u64::from_le_bytes(payload[8..].try_into().unwrap());
                rec.snapshot = Some((index, term));
                rec.entries.retain(|e| e.index > index);
                if rec.entries.first().is_some_and(|e| e.index != index + 1) {
                    rec.entries.clear();
                }
            }
            other => return Err(corrupt(off, format!("unknown record kind {other}"))),
        }
        off = end;
    }
    Ok(None)
}

/// A disk's unit of atomic writes.
const SECTOR_BYTES: usize = 512;

/// Whether some sector's share of `data[from..to]` is all zeros (never written).
fn has_unwritten_sector(data: &[u8], from: usize, to: usize) -> bool {
    let mut at = from;
    while at < to {
        let next = ((at / SECTOR_BYTES) + 1) * SECTOR_BYTES;
        let chunk = &data[at..next.min(to)];
        if chunk.iter().all(|b| *b == 0) {
            return true;
        }
        at = next;
    }
    false
}

/// Whether a whole record (a known kind, a length within the limit and within `data`, a
/// matching checksum) starts anywhere in `data[from..]`. Past a budget of checksummed bytes
/// it stops and answers yes, the safe answer (damage, not a torn write), so that values
/// crafted to look like many long records cannot make recovery quadratic.
fn whole_record_from(data: &[u8], from: usize) -> bool {
    let mut budget = (64usize << 20).saturating_add(4 * data.len().saturating_sub(from));
    let mut at = from;
    while at + HEADER_BYTES <= data.len() {
        let kind = data[at + 8];
        if (KIND_META..=KIND_SNAPSHOT).contains(&kind) {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let end = at + HEADER_BYTES + len;
            if len <= RECORD_BYTES_MAX && end <= data.len() {
                if len > budget {
                    return true;
                }
                budget -= len;
                let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap());
                if record_crc(kind, &data[at + HEADER_BYTES..end]) == crc {
                    return true;
                }
            }
        }
        at += 1;
    }
    false
}

/// The bit of the length field whose flip makes the record at `off` (header length `len`,
/// checksum `crc`) whole: its payload under that length ends inside `data` and matches the
/// checksum. Only asked of a last record about to be taken for a torn write.
fn whole_under_flipped_length(data: &[u8], off: usize, len: usize, crc: u32) -> Option<u32> {
    let kind = *data.get(off + 8)?;
    (0..32u32).find(|bit| {
        let l = len ^ (1usize << bit);
        let end = off + HEADER_BYTES + l;
        l <= RECORD_BYTES_MAX
            && end <= data.len()
            && record_crc(kind, &data[off + HEADER_BYTES..end]) == crc
    })
}

fn torn(
    allowed: bool,
    off: usize,
    corrupt: impl FnOnce() -> WalError,
) -> Result<Option<u64>, WalError> {
    if allowed {
        Ok(Some(off as u64))
    } else {
        Err(corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FileDisk;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    fn meta() -> WalMeta {
        WalMeta {
            member_id: 1,
            cluster_id: 2,
            joined: None,
        }
    }

    #[test]
    fn replays_entries_hard_state_and_conflicting_suffixes() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk);
        let mut wal = Wal::create(disk.clone(), dir.path(), meta()).unwrap();
        wal.save(
            None,
            &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
            Some(&hs(1, 1, 2)),
        )
        .unwrap();
        // A new leader overwrites index 3 onwards.
        wal.save(
            None,
            &[entry(3, 2, b"x"), entry(4, 2, b"y")],
            Some(&hs(2, 3, 4)),
        )
        .unwrap();
        drop(wal);
        let (_, rec) = Wal::open(disk, dir.path()).unwrap();
        assert_eq!(rec.meta, Some(meta()));
        assert_eq!(rec.hard_state, hs(2, 3, 4));
        let got: Vec<(u64, u64)> = rec.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(got, vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
        assert_eq!(rec.torn_bytes, 0);
    }

    #[test]
    fn a_torn_tail_is_truncated_and_the_log_stays_writable() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk);
        let mut wal = Wal::create(disk.clone(), dir.path(), meta()).unwrap();
        wal.save(None, &[entry(1, 1, b"a")], Some(&hs(1, 1, 1)))
            .unwrap();
        // The last record spans more than one sector.
        wal.save(None, &[entry(2, 1, &[b'b'; 3 * SECTOR_BYTES])], None)
            .unwrap();
        drop(wal);
        let seg = dir.path().join(segment_name(0, 0));
        let data = std::fs::read(&seg).unwrap();
        // The records end at the last non-zero byte (the entry's payload); preallocated
        // zeros follow.
        let logical = data.iter().rposition(|b| *b != 0).unwrap() + 1;
        assert!(data.len() > logical, "the segment is preallocated");
        // A torn write inside the preallocated space: the sectors holding the last record's
        // end never landed (a sector is written whole or not at all).
        let mut in_place = data.clone();
        let sector = (logical - 3) / SECTOR_BYTES * SECTOR_BYTES;
        in_place[sector..logical].fill(0);
        std::fs::write(&seg, &in_place).unwrap();
        let (wal, rec) = Wal::open(disk.clone(), dir.path()).unwrap();
        assert!(rec.torn_bytes > 0);
        assert_eq!(rec.entries.len(), 1);
        drop(wal);
        // A torn write at the end of a file without preallocated space.
        std::fs::write(&seg, &data[..logical - 3]).unwrap();
        let (mut wal, rec) = Wal::open(disk.clone(), dir.path()).unwrap();
        assert!(rec.torn_bytes > 0);
        assert_eq!(rec.entries.len(), 1);
        wal.save(None, &[entry(2, 1, b"c")], Some(&hs(1, 1, 2)))
            .unwrap();
        drop(wal);
        let (_, rec) = Wal::open(disk, dir.path()).unwrap();
        assert_eq!(rec.torn_bytes, 0);
        assert_eq!(rec.entries.last().unwrap().index, 2);
        assert_eq!(rec.hard_state.commit, 2);
    }

    #[test]
    fn preallocated_zeros_end_the_log_and_appends_continue_after_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk);
        let mut wal = Wal::create(disk.clone(), dir.path(), meta()).unwrap();
        wal.save(None, &[entry(1, 1, b"a")], Some(&hs(1, 1, 1)))
            .unwrap();
        drop(wal);
        for i in 2..=4u64 {
            let (mut wal, rec) = Wal::open(disk.clone(), dir.path()).unwrap();
            assert_eq!(
                rec.torn_bytes, 0,
                "zeros after the records are not a torn tail"
            );
            assert_eq!(rec.entries.len() as u64, i - 1);
            wal.save(None, &[entry(i, 1, b"b")], Some(&hs(1, 1, i)))
                .unwrap();
        }
        let (_, rec) = Wal::open(disk, dir.path()).unwrap();
        let got: Vec<u64> = rec.entries.iter().map(|e| e.index).collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert_eq!(rec.hard_state.commit, 4);
    }

    #[test]
    fn corruption_before_the_tail_refuses_to_start_and_names_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk);
        let mut wal = Wal::create(disk.clone(), dir.path(), meta()).unwrap();
        wal.save(
            None,
            &[entry(1, 1, b"aaaa"), entry(2, 1, b"bbbb")],
            Some(&hs(1, 1, 2)),
        )
        .unwrap();
        drop(wal);
        let seg = dir.path().join(segment_name(0, 0));
        let mut data = std::fs::read(&seg).unwrap();
        // Flip a byte inside the first entry's payload (after the metadata record).
        let meta_len = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize + HEADER_BYTES;
        data[meta_len + HEADER_BYTES + 2] ^= 0xff;
        std::fs::write(&seg, &data).unwrap();
        let err = Wal::open(disk, dir.path()).err().expect("must refuse");
        let msg = err.to_string();
        assert!(msg.contains(&format!("offset {meta_len}")), "{msg}");
        assert!(msg.contains(".wal"), "{msg}");
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_is_corruption_not_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk);
        let mut wal = Wal::create(disk.clone(), dir.path(), meta()).unwrap();
        wal.save(None, &[entry(1, 1, b"a")], Some(&hs(1, 1, 1)))
            .unwrap();
        drop(wal);
        let seg = dir.path().join(segment_name(0, 0));
        let mut data = std::fs::read(&seg).unwrap();
        let logical = data.iter().rposition(|b| *b != 0).unwrap() + 1;
        // The last record (the hard state) was written in full: every sector of it holds
        // data. A bit flipped in it must not be truncated away as if a crash had torn it.
        data[logical - 2] ^= 0x10;
        std::fs::write(&seg, &data).unwrap();
        let msg = Wal::open(disk, dir.path())
            .err()
            .expect("must refuse")
            .to_string();
        assert!(msg.contains("CRC mismatch"), "{msg}");
        assert!(msg.contains(".wal"), "{msg}");
    }

    /// A bit flipped in the length field of the last record, which was written in full,
    /// is damage, not a torn write: whichever way the longer length reads (into the
    /// preallocated zeros, past the segment's end, past the record limit), the member
    /// refuses to start and names the file, the offset and the flipped bit.
    #[test]
    fn a_flipped_bit_in_the_last_records_length_is_corruption_not_a_torn_write() {
        for bit in [3u32, 12, 20, 27, 29] {
            let dir = tempfile::tempdir().unwrap();
            let disk: Arc<dyn Disk> = Arc::new(FileDisk);
            let mut wal = Wal::create(disk.clone(), dir.path(), meta()).unwrap();
            wal.save(None, &[entry(1, 1, b"a")], Some(&hs(1, 1, 1)))
                .unwrap();
            wal.save(None, &[entry(2, 1, b"a value")], None).unwrap();
            drop(wal);
            let seg = dir.path().join(segment_name(0, 0));
            let mut data = std::fs::read(&seg).unwrap();
            // Walk the records to the last one (the log ends where zeros begin).
            let (mut off, mut last) = (0usize, 0usize);
            while off + HEADER_BYTES <= data.len() && data[off + 8] != 0 {
                last = off;
                off += HEADER_BYTES
                    + u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            }
            assert!(last > 0, "two records at least");
            // Its length is the first 4 bytes of its header.
            let at = last + (bit / 8) as usize;
            data[at] ^= 1 << (bit % 8);
            std::fs::write(&seg, &data).unwrap();
            let msg = Wal::open(disk, dir.path())
                .err()
                .unwrap_or_else(|| panic!("bit {bit}: a damaged length was taken for a torn write"))
                .to_string();
            assert!(
                msg.contains(&format!("bit {bit} of its length flipped")),
                "bit {bit}: {msg}"
            );
            assert!(msg.contains(".wal"), "{msg}");
        }
    }

    /// A write landing on a record's header in the middle of the log (v3-swarm seed 122: a
    /// misdirected write) makes the record read as cut short, or as longer than the limit,
    /// with synced records after it. Neither is a torn tail: the member refuses to start
    /// and names the offset, where truncating would drop what it had acknowledged.
    #[test]
    fn a_damaged_header_with_records_after_it_is_corruption_not_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk);
        let mut wal = Wal::create(disk.clone(), dir.path(), meta()).unwrap();
        for i in 1..=6u64 {
            wal.save(None, &[entry(i, 1, b"some value")], Some(&hs(1, 1, i)))
                .unwrap();
        }
        drop(wal);
        let seg = dir.path().join(segment_name(0, 0));
        let data = std::fs::read(&seg).unwrap();
        // Without the preallocated zeros, as the simulator's disk leaves a segment.
        let logical = data.iter().rposition(|b| *b != 0).unwrap() + 1;
        let mut offs = Vec::new();
        let mut off = 0usize;
        while off < logical {
            offs.push(off);
            off +=
                HEADER_BYTES + u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        }
        let victim = offs[offs.len() / 2];
        for len in [
            (logical - victim) as u32 + 100,    // cut short
            (RECORD_BYTES_MAX as u32) + 12_345, // past the limit
            u32::MAX,
        ] {
            let mut bad = data[..logical].to_vec();
            bad[victim..victim + 4].copy_from_slice(&len.to_le_bytes());
            std::fs::write(&seg, &bad).unwrap();
            let msg = Wal::open(disk.clone(), dir.path())
                .err()
                .unwrap_or_else(|| {
                    panic!("length {len}: a damaged header was taken for a torn tail")
                })
                .to_string();
            assert!(msg.contains(&format!("offset {victim}")), "{msg}");
            assert!(msg.contains(".wal"), "{msg}");
        }
        // The same length on the last record, with nothing after it, is a torn write.
        let last = *offs.last().unwrap();
        let mut torn_tail = data[..logical - 3].to_vec();
        torn_tail[last..last + 4].copy_from_slice(&((logical - last) as u32 + 100).to_le_bytes());
        std::fs::write(&seg, &torn_tail).unwrap();
        let (_, rec) = Wal::open(disk, dir.path()).unwrap();
        assert_eq!(rec.torn_bytes, (logical - 3 - last) as u64);
    }

    #[test]
    fn snapshot_marks_drop_older_entries_and_release_removes_covered_segments() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk);
        let mut wal = Wal::create(disk.clone(), dir.path(), meta()).unwrap();
        wal.save(
            None,
            &[entry(1, 1, b"a"), entry(2, 1, b"b")],
            Some(&hs(1, 1, 2)),
        )
        .unwrap();
        wal.cut().unwrap();
        wal.save(Some((2, 1)), &[entry(3, 1, b"c")], Some(&hs(1, 1, 3)))
            .unwrap();
        assert_eq!(disk.list(dir.path()).unwrap().len(), 2);
        assert_eq!(wal.release_to(2, 1).unwrap(), 1);
        drop(wal);
        let (_, rec) = Wal::open(disk, dir.path()).unwrap();
        assert_eq!(rec.snapshot, Some((2, 1)));
        assert_eq!(
            rec.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(rec.hard_state.commit, 3);
    }

    #[test]
    fn a_snapshot_mark_behind_the_log_end_never_lets_release_drop_later_entries() {
        // A member snapshots at its applied index while later entries are already in the
        // log; a segment cut right after the mark must begin after those entries, or
        // releasing the older segment loses them.
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(FileDisk);
        let mut wal = Wal::create(disk.clone(), dir.path(), meta()).unwrap();
        let five: Vec<Entry> = (1..=5).map(|i| entry(i, 1, b"x")).collect();
        wal.save(None, &five, Some(&hs(1, 1, 2))).unwrap();
        wal.save(Some((2, 1)), &[], None).unwrap();
        wal.cut().unwrap();
        wal.save(None, &[entry(6, 1, b"y")], Some(&hs(1, 1, 6)))
            .unwrap();
        wal.release_to(2, 1).unwrap();
        drop(wal);
        let (_, rec) = Wal::open(disk, dir.path()).unwrap();
        assert_eq!(
            rec.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
    }
}
