//! The checks etcd 3.4 makes on a request before proposing it (`etcdserver/api/v3rpc/key.go`),
//! and the put/delete overlap check (`checkIntervals`) that apply repeats so that it is total.

use std::collections::BTreeSet;

use detcd_proto::etcdserverpb as pb;
use pb::request_op::Request;

use super::V3Error;

/// `checkRangeRequest`: only an empty key is refused.
pub fn check_range(r: &pb::RangeRequest) -> Result<(), V3Error> {
    if r.key.is_empty() {
        return Err(V3Error::EmptyKey);
    }
    Ok(())
}

/// `checkPutRequest`: empty key; a value with `ignore_value`; a lease with `ignore_lease`.
pub fn check_put(r: &pb::PutRequest) -> Result<(), V3Error> {
    if r.key.is_empty() {
        return Err(V3Error::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(V3Error::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(V3Error::LeaseProvided);
    }
    Ok(())
}

/// `checkDeleteRequest`: only an empty key is refused.
pub fn check_delete(r: &pb::DeleteRangeRequest) -> Result<(), V3Error> {
    if r.key.is_empty() {
        return Err(V3Error::EmptyKey);
    }
    Ok(())
}

/// `checkTxnRequest` then `checkIntervals` on both branches, as the KV service's `Txn` does.
pub fn check_txn(r: &pb::TxnRequest, max_ops: usize) -> Result<(), V3Error> {
    check_txn_ops(r, max_ops as i64)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// `checkTxnRequest`: the largest of compares, success and failure counts against the limit,
/// and a nested txn gets the limit less its parent's count (which may go negative: etcd
/// computes it as an int).
fn check_txn_ops(r: &pb::TxnRequest, max_ops: i64) -> Result<(), V3Error> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len()) as i64;
    if opc > max_ops {
        return Err(V3Error::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(V3Error::EmptyKey);
    }
    for op in r.success.iter().chain(r.failure.iter()) {
        match &op.request {
            Some(Request::RequestRange(x)) => check_range(x)?,
            Some(Request::RequestPut(x)) => check_put(x)?,
            Some(Request::RequestDeleteRange(x)) => check_delete(x)?,
            Some(Request::RequestTxn(x)) => check_txn_ops(x, max_ops - opc)?,
            // "empty op / nil entry"
            None => return Err(V3Error::KeyNotFound),
        }
    }
    Ok(())
}

/// etcd's "affine" string order (`adt.StringAffineComparable`): the empty string is +infinity.
fn affine_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// A half-open interval as `adt.NewStringAffineInterval` makes it (`end` may be below `begin`:
/// a delete with range end `"\0"` gives `[key, "\0")`, which overlaps nothing — etcd 3.4 does
/// not see a put inside a from-key delete).
#[derive(Debug, Clone)]
pub(crate) struct Ivl {
    begin: Vec<u8>,
    end: Vec<u8>,
}

impl Ivl {
    fn point(k: &[u8]) -> Ivl {
        let mut end = k.to_vec();
        end.push(0);
        Ivl {
            begin: k.to_vec(),
            end,
        }
    }

    /// `adt.Interval.Compare == 0`: neither left of nor right of the other.
    fn overlaps(&self, other: &Ivl) -> bool {
        use std::cmp::Ordering::*;
        let left = affine_cmp(&self.begin, &other.begin) == Less
            && affine_cmp(&self.end, &other.begin) != Greater;
        let right = affine_cmp(&self.begin, &other.end) != Less;
        !left && !right
    }
}

/// A branch's puts and deletes.
pub(crate) type Intervals = (BTreeSet<Vec<u8>>, Vec<Ivl>);

/// `checkIntervals`: in one branch (with its nested txns), no key is put twice (except once in
/// each branch of one nested txn) and no put falls inside a delete. Returns the branch's puts
/// and deletes for the parent's check.
pub(crate) fn check_intervals(reqs: &[pb::RequestOp]) -> Result<Intervals, V3Error> {
    let mut dels: Vec<Ivl> = Vec::new();
    for req in reqs {
        if let Some(Request::RequestDeleteRange(d)) = &req.request {
            dels.push(if d.range_end.is_empty() {
                Ivl::point(&d.key)
            } else {
                Ivl {
                    begin: d.key.clone(),
                    end: d.range_end.clone(),
                }
            });
        }
    }
    let hits = |dels: &[Ivl], k: &[u8]| {
        let p = Ivl::point(k);
        dels.iter().any(|d| p.overlaps(d))
    };
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for req in reqs {
        let Some(Request::RequestTxn(t)) = &req.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || hits(&dels, k) {
                return Err(V3Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // A key put in both branches of one nested txn is fine: only one branch runs.
            if (puts.contains(k) && !puts_then.contains(k)) || hits(&dels, k) {
                return Err(V3Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        // `dels.Union(delsThen, ["\0", +inf))`: the children's deletes that overlap it.
        let all = Ivl {
            begin: vec![0],
            end: Vec::new(),
        };
        dels.extend(dels_then.into_iter().filter(|d| all.overlaps(d)));
        dels.extend(dels_else.into_iter().filter(|d| all.overlaps(d)));
    }
    for req in reqs {
        if let Some(Request::RequestPut(p)) = &req.request {
            if puts.contains(&p.key) || hits(&dels, &p.key) {
                return Err(V3Error::DuplicateKey);
            }
            puts.insert(p.key.clone());
        }
    }
    Ok((puts, dels))
}
