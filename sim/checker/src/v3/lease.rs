//! Leases in the v3 model.
//!
//! A lease's end — a client's LeaseRevoke, or its expiry, which the leader proposes as a
//! revocation through Raft — is a write no client's KV request made: every key attached
//! to the lease is deleted at one new revision (see [`super::store`]), the lease is over
//! (a later Put naming it, or another revocation, fails), and since every workload value
//! is unique, a deleted lease key never comes back unless someone puts it again.
//!
//! So the checker puts each lease's expiry into the history as one more indeterminate
//! write, a server's LeaseRevoke (client [`EXPIRY_CLIENT`]), "invoked" at the earliest
//! instant the lease could have expired: the latest of its grant's invocation + the TTL
//! granted (the TTL asked for when the grant had no answer) and, for every answered
//! KeepAlive that found the lease, the KeepAlive's send time + the TTL it answered. The
//! leader renews no earlier than a request is sent, and a new leader only ever extends a
//! deadline (by the election timeout), so no legitimate expiry comes earlier. The search
//! then places each expiry like any indeterminate write — at a revision no operation that
//! returned before that instant had reached, or never — and every check of the model
//! applies to it: the keys go at one revision, reads and watch events at every revision
//! must agree, and the keys stay gone. Times are the history's (the simulator's true
//! time), never a member's clock.
//!
//! A client's acknowledged LeaseRevoke answers the revision after it: it made that
//! revision when no acknowledged KV write claims it and one of the lease's puts was
//! acknowledged (its keys were there to delete: nobody else writes a lease key in the
//! workload); it ran at that revision, changing nothing, when an acknowledged write made
//! it; otherwise (no acknowledged put) it is placed like an indeterminate write.

use std::collections::BTreeMap;

use super::lin::Class;
use super::types::*;

/// The client of the expiry operations the checker adds.
pub const EXPIRY_CLIENT: u64 = u64::MAX;

/// Whether an operation is a lease expiry the checker added.
pub fn is_expiry(op: &Op) -> bool {
    op.client == EXPIRY_CLIENT && matches!(op.request, Request::LeaseRevoke(_))
}

fn lease_puts(req: &Request, out: &mut Vec<(i64, String)>) {
    match req {
        Request::Put(p) if p.lease != 0 => out.push((p.lease, p.key.clone())),
        Request::Txn(t) => {
            for r in t.success.iter().chain(&t.failure) {
                lease_puts(r, out);
            }
        }
        _ => {}
    }
}

/// The earliest instant (ns) each granted lease could have expired.
pub fn earliest_expiry(h: &History) -> BTreeMap<i64, u64> {
    let mut at: BTreeMap<i64, u64> = BTreeMap::new();
    for g in &h.lease_grants {
        if g.error.is_some() {
            continue;
        }
        let ttl = g.granted_ttl.unwrap_or(g.ttl).max(0) as u64;
        let e = g.call_ns.saturating_add(ttl * 1_000_000_000);
        let x = at.entry(g.lease).or_insert(0);
        *x = (*x).max(e);
    }
    for k in &h.keepalives {
        if k.ttl <= 0 {
            continue;
        }
        if let Some(x) = at.get_mut(&k.lease) {
            *x = (*x).max(k.call_ns.saturating_add(k.ttl as u64 * 1_000_000_000));
        }
    }
    at
}

/// The history the search runs on: every LeaseRevoke given the keys its lease ever had,
/// and one expiry operation per granted lease appended (ids after the history's).
pub fn prepare(h: &History) -> History {
    let mut keys: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for op in &h.ops {
        let mut p = Vec::new();
        lease_puts(&op.request, &mut p);
        for (l, k) in p {
            let v = keys.entry(l).or_default();
            if !v.contains(&k) {
                v.push(k);
            }
        }
    }
    for v in keys.values_mut() {
        v.sort();
    }
    let mut out = h.clone();
    for op in &mut out.ops {
        if let Request::LeaseRevoke(l) = &mut op.request {
            l.keys = keys.get(&l.id).cloned().unwrap_or_default();
        }
    }
    let first = h.ops.iter().map(|o| o.id + 1).max().unwrap_or(0);
    for (id, (lease, at)) in (first..).zip(earliest_expiry(h)) {
        out.ops.push(Op {
            id,
            client: EXPIRY_CLIENT,
            member: None,
            call_ns: at,
            return_ns: None,
            request: Request::LeaseRevoke(LeaseRevokeRequest {
                id: lease,
                keys: keys.get(&lease).cloned().unwrap_or_default(),
            }),
            outcome: Outcome::Indeterminate,
        });
    }
    out
}

/// Settle how each acknowledged LeaseRevoke sits (see the module docs).
pub(crate) fn classify_revokes(h: &History, classes: &mut [Class]) {
    let mut claimed = std::collections::HashSet::new();
    let mut acked_put = std::collections::HashSet::new();
    for (i, op) in h.ops.iter().enumerate() {
        if matches!(op.request, Request::LeaseRevoke(_)) {
            continue;
        }
        if let Class::Write(r) = classes[i] {
            claimed.insert(r);
            let mut p = Vec::new();
            lease_puts(&op.request, &mut p);
            acked_put.extend(p.into_iter().map(|x| x.0));
        }
    }
    for (i, op) in h.ops.iter().enumerate() {
        let Request::LeaseRevoke(l) = &op.request else {
            continue;
        };
        if let Class::Write(r) = classes[i] {
            classes[i] = if claimed.contains(&r) {
                Class::Read(r)
            } else if acked_put.contains(&l.id) {
                Class::Write(r)
            } else {
                Class::IndetWrite
            };
        }
    }
}

/// What the linearization says about leases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// Leases granted (grants not refused).
    pub granted: usize,
    /// Leases whose end deleted keys, by expiry.
    pub expired: usize,
    /// Leases whose end deleted keys, by a client's revocation.
    pub revoked: usize,
    /// Keys those ends deleted.
    pub keys_deleted: usize,
    /// Answered KeepAlives.
    pub keepalives: usize,
}
