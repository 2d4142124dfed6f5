//! The keyspace's side of etcd 3.4's Maintenance service: alarms (replicated, durable in the
//! keyspace's redb file, table `alarm`), the quota's cost of a request (`etcdserver/quota.go`)
//! and the capped applier that refuses writes while a NOSPACE alarm is raised
//! (`applierV3Capped`), HashKV and Hash, defragmentation (redb's compaction of the file) and
//! the snapshot file a client saves.
//!
//! Alarms are changed only by applied Raft entries ([`Mvcc::alarm`]), with the same consistent
//! index as the keys, so every member holds the same alarms and a restart keeps them; they
//! travel in the keyspace's dump (format `detcd-mvcc-dump3`).

use std::collections::BTreeSet;
use std::io;

use detcd_proto::etcdserverpb as pb;
use pb::alarm_request::AlarmAction;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{entry, io_err, storage_err, Mvcc, V3Error, KV, LEASES, REVS};

/// (member ID, alarm type) → 0: the raised alarms (etcd's `alarm` bucket).
pub(super) const ALARMS: TableDefinition<(u64, i32), u8> = TableDefinition::new("alarm");

/// etcd's estimate of a key's metadata in the backend (`kvOverhead`).
const KV_OVERHEAD: usize = 256;
/// etcd's estimate of a lease's cost (`leaseOverhead`).
const LEASE_OVERHEAD: usize = 64;

/// etcd's default `--quota-backend-bytes` (2 GiB), used when the flag is 0.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// A request the quota weighs (`backendQuota.Cost`).
pub enum Costed<'a> {
    /// A Put.
    Put(&'a pb::PutRequest),
    /// A Txn.
    Txn(&'a pb::TxnRequest),
    /// A lease grant.
    LeaseGrant,
}

fn cost_put(p: &pb::PutRequest) -> usize {
    KV_OVERHEAD + p.key.len() + p.value.len()
}

fn cost_ops(ops: &[pb::RequestOp]) -> usize {
    ops.iter()
        .map(|op| match &op.request {
            Some(pb::request_op::Request::RequestPut(p)) => cost_put(p),
            _ => 0,
        })
        .sum()
}

/// The bytes a request may add to the backend, as etcd estimates them: a put its key, value
/// and 256; a txn the larger of its branches' top-level puts (nested txns are not counted,
/// as in etcd); a lease grant 64. Zero: the request cannot grow the backend.
pub fn quota_cost(r: Costed<'_>) -> usize {
    match r {
        Costed::Put(p) => cost_put(p),
        Costed::Txn(t) => cost_ops(&t.success).max(cost_ops(&t.failure)),
        Costed::LeaseGrant => LEASE_OVERHEAD,
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as Go's
/// `crc32.MakeTable(crc32.Castagnoli)` computes it.
#[derive(Clone)]
pub struct Crc32c {
    crc: u32,
}

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32C: [u32; 256] = crc32c_table();

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c { crc: !0 }
    }
}

impl Crc32c {
    /// Add bytes.
    pub fn update(&mut self, data: &[u8]) {
        let mut c = self.crc;
        for &b in data {
            c = CRC32C[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
        }
        self.crc = c;
    }

    /// The checksum so far.
    pub fn sum(&self) -> u32 {
        !self.crc
    }
}

/// etcd's backend key of a revision: 8-byte big-endian main, `_`, 8-byte big-endian sub, and
/// `t` for a tombstone (`mvcc/revision.go`, `revToBytes`, `appendMarkTombstone`).
fn rev_bytes(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(18);
    b.extend_from_slice(&main.to_be_bytes());
    b.push(b'_');
    b.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        b.push(b't');
    }
    b
}

/// What [`Mvcc::hash_kv`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    /// The CRC-32C.
    pub hash: u32,
    /// The store's revision.
    pub revision: i64,
    /// The compacted revision (-1: none).
    pub compact_revision: i64,
}

/// The snapshot file's first 16 bytes (see [`snapshot_file`]).
const SNAP_MAGIC: &[u8; 16] = b"detcd-v3-snap-01";

/// The file `etcdctl snapshot save` writes from a dump (see [`super::MvccDump::encode`]):
/// `detcd-v3-snap-01`, the dump's length (u64 LE), the dump, zeros up to a multiple of 512
/// bytes, and the SHA-256 of all that (etcd's trailer: `etcdctl` accepts a snapshot only if
/// its size is 32 more than a multiple of 512).
pub fn snapshot_file(dump: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::with_capacity(dump.len() + 24 + 512 + 32);
    out.extend_from_slice(SNAP_MAGIC);
    out.extend_from_slice(&(dump.len() as u64).to_le_bytes());
    out.extend_from_slice(dump);
    out.resize(out.len().div_ceil(512) * 512, 0);
    let sha = sha2::Sha256::digest(&out);
    out.extend_from_slice(&sha);
    out
}

/// The dump inside a [`snapshot_file`], its checksum and framing checked.
pub fn dump_of_snapshot_file(file: &[u8]) -> io::Result<&[u8]> {
    use sha2::Digest;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot file: {m}"));
    if file.len() < 24 + 32 || file.len() % 512 != 32 || !file.starts_with(SNAP_MAGIC) {
        return Err(bad("not a detcd v3 snapshot"));
    }
    let (body, sha) = file.split_at(file.len() - 32);
    if sha2::Sha256::digest(body).as_slice() != sha {
        return Err(bad("sha256 mismatch"));
    }
    let n = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes")) as usize;
    body.get(24..24usize.saturating_add(n))
        .ok_or_else(|| bad("length past the end"))
}

impl Mvcc {
    /// Rebuild the alarm set from the committed table.
    pub(super) fn load_alarms(&mut self) -> io::Result<()> {
        let rtx = self.db().begin_read().map_err(io_err)?;
        let t = rtx.open_table(ALARMS).map_err(io_err)?;
        let mut alarms = BTreeSet::new();
        for e in t.iter().map_err(io_err)? {
            let (k, _) = e.map_err(io_err)?;
            alarms.insert(k.value());
        }
        self.alarms = alarms;
        Ok(())
    }

    /// The raised alarms of type `alarm` (NONE: all), by (member, type).
    pub fn alarms(&self, alarm: pb::AlarmType) -> Vec<pb::AlarmMember> {
        self.alarms
            .iter()
            .filter(|(_, a)| alarm == pb::AlarmType::None || *a == alarm as i32)
            .map(|&(member_id, alarm)| pb::AlarmMember { member_id, alarm })
            .collect()
    }

    /// Whether a CORRUPT alarm is raised: every write, grant and revocation is refused.
    pub fn corrupt(&self) -> bool {
        self.alarms
            .iter()
            .any(|(_, a)| *a == pb::AlarmType::Corrupt as i32)
    }

    /// Whether a NOSPACE alarm is raised: writes that add keys or leases are refused.
    pub fn no_space(&self) -> bool {
        self.alarms
            .iter()
            .any(|(_, a)| *a == pb::AlarmType::Nospace as i32)
    }

    /// etcd's `applyAlarm` committed at Raft `index`: GET lists the alarms of the request's
    /// type (NONE: all); ACTIVATE raises one (answering it, or the one already raised);
    /// DEACTIVATE clears one (answering it; nothing if it was not raised). `None` when `index`
    /// was applied before.
    pub fn alarm(
        &mut self,
        index: u64,
        req: &pb::AlarmRequest,
    ) -> Option<Result<Vec<pb::AlarmMember>, V3Error>> {
        if index <= self.consistent_index {
            return None;
        }
        if let Some(e) = &self.failed {
            return Some(Err(V3Error::Storage(e.clone())));
        }
        self.consistent_index = index;
        self.meta_dirty = true;
        let key = (req.member_id, req.alarm);
        let one = vec![pb::AlarmMember {
            member_id: req.member_id,
            alarm: req.alarm,
        }];
        Some(match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                Ok(self.alarms(pb::AlarmType::try_from(req.alarm).unwrap_or(pb::AlarmType::None)))
            }
            // etcd's applier answers an unknown action with an empty response.
            Err(_) => Ok(Vec::new()),
            Ok(AlarmAction::Activate) => {
                if self.alarms.contains(&key) {
                    return Some(Ok(one));
                }
                match self.write_alarm(key, true) {
                    Ok(()) => {
                        self.alarms.insert(key);
                        Ok(one)
                    }
                    Err(e) => Err(e),
                }
            }
            Ok(AlarmAction::Deactivate) => {
                if !self.alarms.contains(&key) {
                    return Some(Ok(Vec::new()));
                }
                match self.write_alarm(key, false) {
                    Ok(()) => {
                        self.alarms.remove(&key);
                        Ok(one)
                    }
                    Err(e) => Err(e),
                }
            }
        })
    }

    fn write_alarm(&mut self, key: (u64, i32), raise: bool) -> Result<(), V3Error> {
        let r = self.wtx().and_then(|w| {
            let mut t = w.open_table(ALARMS).map_err(storage_err)?;
            if raise {
                t.insert(key, 0).map_err(storage_err)?;
            } else {
                t.remove(key).map_err(storage_err)?;
            }
            Ok(())
        });
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
        }
        r
    }

    /// etcd's `HashByRev`: a CRC-32C of `key` then, for every revision kept in the backend up
    /// to `rev` (0: the current revision), in revision order, its backend key (see
    /// [`rev_bytes`]) and its marshalled `KeyValue`; a revision at or below the compacted one
    /// counts only if compacting at `rev` would keep it (each key's newest revision ≤ `rev`,
    /// unless a tombstone), or if no key would be kept at all. Equal on every member at the
    /// same revision, and equal to etcd's for the same history (the encodings are etcd's).
    pub fn hash_kv(&self, rev: i64) -> Result<HashKv, V3Error> {
        self.noting(self.hash_kv_inner(rev))
    }

    fn hash_kv_inner(&self, rev: i64) -> Result<HashKv, V3Error> {
        let (cur, compact) = (self.rev, self.compact_rev);
        if rev > 0 && rev <= compact {
            return Err(V3Error::Compacted);
        }
        if rev > 0 && rev > cur {
            return Err(V3Error::FutureRev);
        }
        let rev = if rev == 0 { cur } else { rev };
        fn run<R, K>(revs: &R, kv: &K, rev: i64, compact: i64) -> Result<u32, V3Error>
        where
            R: ReadableTable<(i64, i64), &'static [u8]>,
            K: ReadableTable<super::KvKey, &'static [u8]>,
        {
            // Every key's newest revision ≤ rev, unless a tombstone: what compacting at rev
            // would keep (`kvindex.Keep`).
            let mut keep: BTreeSet<(i64, i64)> = BTreeSet::new();
            if compact >= 0 {
                let mut newest: std::collections::BTreeMap<Vec<u8>, (i64, i64, bool)> =
                    std::collections::BTreeMap::new();
                for e in kv.iter().map_err(storage_err)? {
                    let (k, v) = e.map_err(storage_err)?;
                    let (key, main, sub) = k.value();
                    if main <= rev {
                        let tomb = !entry(v.value())?.0;
                        newest.insert(key.to_vec(), (main, sub, tomb));
                    }
                }
                keep.extend(
                    newest
                        .into_values()
                        .filter(|&(_, _, tomb)| !tomb)
                        .map(|(m, s, _)| (m, s)),
                );
            }
            let mut h = Crc32c::default();
            h.update(b"key");
            for e in revs
                .range::<(i64, i64)>(..=(rev, i64::MAX))
                .map_err(storage_err)?
            {
                let (k, key) = e.map_err(storage_err)?;
                let (main, sub) = k.value();
                if main <= compact && !keep.is_empty() && !keep.contains(&(main, sub)) {
                    continue;
                }
                let raw = kv
                    .get((key.value(), main, sub))
                    .map_err(storage_err)?
                    .ok_or_else(|| storage_err("rev table names a missing kv entry"))?;
                let (put, payload) = entry(raw.value())?;
                h.update(&rev_bytes(main, sub, !put));
                h.update(payload);
            }
            Ok(h.sum())
        }
        let hash = match &self.wtx {
            Some(w) => {
                let revs = w.open_table(REVS).map_err(storage_err)?;
                let kv = w.open_table(KV).map_err(storage_err)?;
                run(&revs, &kv, rev, compact)?
            }
            None => {
                let rtx = self.db().begin_read().map_err(storage_err)?;
                let revs = rtx.open_table(REVS).map_err(storage_err)?;
                let kv = rtx.open_table(KV).map_err(storage_err)?;
                run(&revs, &kv, rev, compact)?
            }
        };
        Ok(HashKv {
            hash,
            revision: cur,
            compact_revision: compact,
        })
    }

    /// etcd's Hash (of the whole backend) for detcd's backend: a CRC-32C of every entry of
    /// the `kv`, `rev`, `lease` and `alarm` tables, in table order, each table's name first.
    /// etcd hashes its bbolt file, which detcd does not have, so the two never compare; two
    /// detcd members with the same keyspace give the same hash.
    pub fn hash(&self) -> Result<(u32, i64), V3Error> {
        let rtx = self.db().begin_read().map_err(storage_err)?;
        let mut h = Crc32c::default();
        h.update(b"kv");
        for e in rtx
            .open_table(KV)
            .map_err(storage_err)?
            .iter()
            .map_err(storage_err)?
        {
            let (k, v) = e.map_err(storage_err)?;
            let (key, main, sub) = k.value();
            h.update(key);
            h.update(&rev_bytes(main, sub, false));
            h.update(v.value());
        }
        h.update(b"rev");
        for e in rtx
            .open_table(REVS)
            .map_err(storage_err)?
            .iter()
            .map_err(storage_err)?
        {
            let (k, v) = e.map_err(storage_err)?;
            let (main, sub) = k.value();
            h.update(&rev_bytes(main, sub, false));
            h.update(v.value());
        }
        h.update(b"lease");
        for e in rtx
            .open_table(LEASES)
            .map_err(storage_err)?
            .iter()
            .map_err(storage_err)?
        {
            let (id, ttl) = e.map_err(storage_err)?;
            h.update(&id.value().to_be_bytes());
            h.update(&ttl.value().to_be_bytes());
        }
        h.update(b"alarm");
        for e in rtx
            .open_table(ALARMS)
            .map_err(storage_err)?
            .iter()
            .map_err(storage_err)?
        {
            let (k, _) = e.map_err(storage_err)?;
            let (m, a) = k.value();
            h.update(&m.to_be_bytes());
            h.update(&a.to_be_bytes());
        }
        Ok((h.sum(), self.rev))
    }

    /// etcd's Defragment for redb: everything made durable, then redb's compaction moves the
    /// pages in use to the front of the file and shrinks it. `WouldBlock` while a dump (a
    /// snapshot being written) holds a read transaction: try again shortly.
    pub fn defrag(&mut self) -> io::Result<()> {
        self.flush(true)?;
        match self.db_mut().compact() {
            Ok(_) => Ok(()),
            Err(redb::CompactionError::TransactionInProgress) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "a read transaction is in progress",
            )),
            Err(e) => Err(io_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_known_values() {
        // RFC 3720's check value, and etcd 3.4.23's HashKV of an empty keyspace (probed:
        // `etcdctl endpoint hashkv` on a fresh member answers 1084519789).
        let mut h = Crc32c::default();
        h.update(b"123456789");
        assert_eq!(h.sum(), 0xE306_9283);
        let mut h = Crc32c::default();
        h.update(b"key");
        assert_eq!(h.sum(), 1_084_519_789);
    }

    #[test]
    fn snapshot_files_are_what_etcdctl_accepts_and_give_their_dump_back() {
        for n in [0usize, 1, 487, 488, 489, 5000] {
            let dump: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let f = snapshot_file(&dump);
            assert_eq!(f.len() % 512, 32, "size {}", f.len());
            assert_eq!(dump_of_snapshot_file(&f).unwrap(), dump.as_slice());
            let mut bad = f.clone();
            bad[20] ^= 1;
            assert!(dump_of_snapshot_file(&bad).is_err());
        }
    }

    #[test]
    fn quota_costs_are_etcds() {
        let put = pb::PutRequest {
            key: b"k".to_vec(),
            value: b"vv".to_vec(),
            ..Default::default()
        };
        assert_eq!(quota_cost(Costed::Put(&put)), 259);
        let op = |p: &pb::PutRequest| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(p.clone())),
        };
        let t = pb::TxnRequest {
            success: vec![op(&put)],
            failure: vec![op(&put), op(&put)],
            ..Default::default()
        };
        assert_eq!(quota_cost(Costed::Txn(&t)), 518);
        assert_eq!(quota_cost(Costed::Txn(&pb::TxnRequest::default())), 0);
        assert_eq!(quota_cost(Costed::LeaseGrant), 64);
    }
}
