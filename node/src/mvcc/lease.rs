//! The replicated half of etcd 3.4's lessor (`lease/lessor.go`): which leases exist, their
//! granted TTLs, and the keys attached to each. It lives in the keyspace's redb file (table
//! `lease`: ID → TTL), so a grant or a revoke is durable with the same consistent index as the
//! keys it touches, travels in the same dump, and a restart never sees a key attached to a
//! lease that is gone (or the reverse). Attached keys are not stored twice: they are rebuilt
//! from the keys' `lease` field when the keyspace is opened or restored, and kept up to date
//! by every write.
//!
//! Deadlines are not here: they are the leader's, in memory (see `crate::lease`).

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use detcd_proto::mvccpb;
use redb::ReadableDatabase;

use super::{
    decode_put, io_err, scan, storage_err, Attach, End, Mvcc, V3Error, Write, WriteReq, WriteResp,
    KV, LEASES,
};

/// etcd's `MaxLeaseTTL`: a grant asking for more is refused.
pub const LEASE_MAX_TTL: i64 = 9_000_000_000;

/// A lease of the replicated set.
#[derive(Debug, Clone, Default)]
pub(super) struct Lease {
    /// Granted TTL in seconds.
    pub ttl: i64,
    /// Keys attached to it now.
    pub keys: BTreeSet<Vec<u8>>,
}

/// What a grant produced: the lease's ID and its TTL (raised to the minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Lease ID.
    pub id: i64,
    /// Granted TTL in seconds.
    pub ttl: i64,
}

impl Mvcc {
    /// Rebuild the lease set from the committed tables, each TTL raised to this member's
    /// minimum in memory (etcd's `initAndRecover`; the table keeps the granted TTL).
    pub(super) fn load_leases(&mut self) -> io::Result<()> {
        let min = self.opts.min_lease_ttl;
        let rtx = self.db().begin_read().map_err(io_err)?;
        let mut leases: BTreeMap<i64, Lease> = BTreeMap::new();
        let lt = rtx.open_table(LEASES).map_err(io_err)?;
        for e in redb::ReadableTable::iter(&lt).map_err(io_err)? {
            let (id, ttl) = e.map_err(io_err)?;
            leases.insert(
                id.value(),
                Lease {
                    ttl: ttl.value().max(min),
                    keys: BTreeSet::new(),
                },
            );
        }
        if !leases.is_empty() {
            let kv = rtx.open_table(KV).map_err(io_err)?;
            scan(
                &kv,
                self.latest.as_ref(),
                b"",
                End::FromKey,
                self.rev,
                |k, payload| {
                    if let Some(l) = leases.get_mut(&decode_put(payload)?.lease) {
                        l.keys.insert(k.to_vec());
                    }
                    Ok(true)
                },
            )
            .map_err(io_err)?;
        }
        self.leases = leases;
        Ok(())
    }

    /// Move keys between leases as a write did.
    pub(super) fn attach(&mut self, moved: Vec<Attach>) {
        for a in moved {
            if let Some(l) = self.leases.get_mut(&a.before) {
                l.keys.remove(&a.key);
            }
            if let Some(l) = self.leases.get_mut(&a.after) {
                l.keys.insert(a.key);
            }
        }
    }

    /// [`Mvcc::apply`] with the lease check made against this keyspace's lease set (what the
    /// apply loop uses: a put naming a lease that is not granted fails with NotFound).
    #[allow(clippy::type_complexity)]
    pub fn apply_with_leases(
        &mut self,
        index: u64,
        req: &WriteReq,
    ) -> Option<(Result<WriteResp, V3Error>, Vec<mvccpb::Event>)> {
        let leases = std::mem::take(&mut self.leases);
        let out = self.apply_write(index, Write::Req(req, &|id| leases.contains_key(&id)));
        self.leases = leases;
        let (out, moved) = out?;
        self.attach(moved);
        Some(out)
    }

    /// Whether lease `id` exists.
    pub fn lease_exists(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Lease `id`'s granted TTL, if it exists.
    pub fn lease_ttl(&self, id: i64) -> Option<i64> {
        self.leases.get(&id).map(|l| l.ttl)
    }

    /// The keys attached to lease `id`, sorted.
    pub fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every lease as (ID, TTL), by ID.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.leases.iter().map(|(id, l)| (*id, l.ttl)).collect()
    }

    /// `lessor.Grant` committed at Raft `index`: refuses a TTL over [`LEASE_MAX_TTL`] and an
    /// ID in use, raises the TTL to `min_ttl`. `None` when `index` was applied before.
    pub fn lease_grant(
        &mut self,
        index: u64,
        id: i64,
        ttl: i64,
        min_ttl: i64,
    ) -> Option<Result<LeaseGrant, V3Error>> {
        if index <= self.consistent_index {
            return None;
        }
        if let Some(e) = &self.failed {
            return Some(Err(V3Error::Storage(e.clone())));
        }
        self.consistent_index = index;
        self.meta_dirty = true;
        if self.corrupt() {
            return Some(Err(V3Error::Corrupt));
        }
        // etcd's capped applier refuses every grant while a NOSPACE alarm is raised.
        if self.no_space() {
            return Some(Err(V3Error::NoSpace));
        }
        if ttl > LEASE_MAX_TTL {
            return Some(Err(V3Error::LeaseTtlTooLarge));
        }
        if self.leases.contains_key(&id) {
            return Some(Err(V3Error::LeaseExists));
        }
        let ttl = ttl.max(min_ttl);
        let stored = self.wtx().and_then(|w| {
            let mut t = w.open_table(LEASES).map_err(storage_err)?;
            t.insert(id, ttl).map_err(storage_err)?;
            Ok(())
        });
        if let Err(e) = stored {
            self.failed = Some(e.to_string());
            return Some(Err(e));
        }
        self.leases.insert(
            id,
            Lease {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        Some(Ok(LeaseGrant { id, ttl }))
    }

    /// `lessor.Revoke` committed at Raft `index`: the attached keys deleted in one revision
    /// (none: no new revision), the lease removed. Answers the store's revision after it and
    /// the delete events. `None` when `index` was applied before.
    #[allow(clippy::type_complexity)]
    pub fn lease_revoke(
        &mut self,
        index: u64,
        id: i64,
    ) -> Option<(Result<i64, V3Error>, Vec<mvccpb::Event>)> {
        if index <= self.consistent_index {
            return None;
        }
        let Some(l) = self.leases.get(&id) else {
            if let Some(e) = &self.failed {
                return Some((Err(V3Error::Storage(e.clone())), Vec::new()));
            }
            self.consistent_index = index;
            self.meta_dirty = true;
            return Some((Err(V3Error::LeaseNotFound), Vec::new()));
        };
        let keys: Vec<Vec<u8>> = l.keys.iter().cloned().collect();
        let ((resp, events), moved) = self.apply_write(index, Write::Revoke(&keys))?;
        self.attach(moved);
        if let Err(e) = resp {
            return Some((Err(e), events));
        }
        let removed = self.wtx().and_then(|w| {
            let mut t = w.open_table(LEASES).map_err(storage_err)?;
            t.remove(id).map_err(storage_err)?;
            Ok(())
        });
        if let Err(e) = removed {
            self.failed = Some(e.to_string());
            return Some((Err(e), Vec::new()));
        }
        self.leases.remove(&id);
        Some((Ok(self.rev), events))
    }
}
