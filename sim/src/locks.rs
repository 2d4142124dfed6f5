//! The lock load: clients take etcd's v3 locks (the `v3lockpb.Lock` service the members serve,
//! clientv3's mutex run on the server) on a few names, and while they hold one they add to a
//! counter kept beside it with a txn guarded by their lock key, as etcd's documentation tells
//! lock users to fence their writes. Each attempt has a lease of its own (granted first,
//! revoked last), so a client that gives up leaves nothing behind.
//!
//! Its check, after the load:
//! - **grants**: a Lock answered at revision R says the caller's key was the oldest under the
//!   lock's prefix at R, which is what makes it a lock. Each grant is read back from the
//!   keyspace at R (the whole prefix at that revision; the harness finds its oldest key, not the
//!   server's sort): the granted key must be that oldest key. Two grants whose holds overlap in revision order cannot both pass.
//! - **fenced writes**: a guarded increment that finds its lock key still there but the
//!   counter changed since it read it under the same lock means someone else wrote the
//!   counter while the lock was held; the final count must lie between the acknowledged
//!   increments and those plus the ones whose outcome is unknown.
//! - **release**: once the clients have stopped, no lock key is left, and every name was
//!   granted at least once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::kv_client::KvClient;
use detcd_proto::etcdserverpb::lease_client::LeaseClient;
use detcd_proto::v3lockpb as lpb;
use detcd_proto::v3lockpb::lock_client::LockClient;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use detcd_checker::v3 as h;

use crate::output::Check;
use crate::scenario::Scenario;
use crate::v3load::{grpc_error, unknown_effect, Ended};
use crate::workload::Recorder;

type Ch = crate::v3auth::Ch;

/// Lock client `i` is client `HISTORY_CLIENT_BASE + i` of the v3 history: clear of the KV,
/// lease, compactor and flipper clients numbered from 0, and of the checker's own.
const HISTORY_CLIENT_BASE: u64 = 1_000_000;

/// Lock name `n`.
fn lock_name(n: usize) -> String {
    format!("lock-{n}")
}

/// The counter that lock `n` guards (outside the lock's prefix `lock-n/`).
fn counter_key(n: usize) -> String {
    format!("lock-{n}.count")
}

/// The keys of lock `n`, `lock-n/` and everything under it: (key, range_end).
fn lock_range(n: usize) -> (Vec<u8>, Vec<u8>) {
    let prefix = format!("{}/", lock_name(n));
    let end = crate::v3load::prefix_end_of(&prefix).expect("a lock prefix has an end");
    (prefix.into_bytes(), end.into_bytes())
}

/// One Lock answered: `key` granted at header revision `revision`.
#[derive(Debug, Clone)]
struct Grant {
    client: usize,
    name: usize,
    key: Vec<u8>,
    revision: i64,
    at_ns: u64,
}

/// What the clients saw, for the check.
#[derive(Debug, Default)]
struct Seen {
    grants: Vec<Grant>,
    /// Increments acknowledged, and those whose outcome is unknown, per name.
    acked: Vec<u64>,
    unknown: Vec<u64>,
    /// What the clients saw that no lock may do: a grant of a key not named after the
    /// lease, a held key gone while its lease was young, a fenced write that found the
    /// counter moved under a held lock.
    violations: Vec<String>,
    /// Guarded increments refused because the lock key was gone (the session lost).
    lost: u64,
    /// Lock calls that failed or timed out (the attempt was abandoned).
    abandoned: u64,
    /// Leases that could not be revoked before the clients' deadline.
    unrevoked: u64,
}

struct Client {
    /// Its number among the lock clients.
    id: usize,
    /// Its client id in the v3 history.
    hid: u64,
    rng: ChaCha8Rng,
    addrs: Vec<SocketAddr>,
    member: usize,
    conn: Option<Ch>,
    timeout: Duration,
    seq: u64,
    start: tokio::time::Instant,
}

impl<T> Ended<T> {
    /// How this call goes into the v3 history: its answer as `f` renders it.
    fn to_history(&self, f: impl FnOnce(&T) -> h::Response) -> Ended<h::Response> {
        match self {
            Ended::Ok(t) => Ended::Ok(f(t)),
            Ended::Refused(s) => Ended::Refused(s.clone()),
            Ended::Unknown => Ended::Unknown,
        }
    }
}

impl Client {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Put one operation into the v3 history: answered or refused between the call and now,
    /// or of unknown outcome (then it may take effect any time after the call; a read
    /// without an answer had no effect and is left out).
    fn record(
        &self,
        rec: &Mutex<Recorder>,
        member: usize,
        call_ns: u64,
        request: h::Request,
        r: Ended<h::Response>,
    ) {
        let (outcome, return_ns) = match r {
            Ended::Ok(resp) => (h::Outcome::Ok(resp), Some(self.now_ns())),
            Ended::Refused(st) => (h::Outcome::Error(grpc_error(&st)), Some(self.now_ns())),
            Ended::Unknown if matches!(request, h::Request::Range(_)) => return,
            Ended::Unknown => (h::Outcome::Indeterminate, None),
        };
        self.push(rec, member, call_ns, return_ns, request, outcome);
    }

    /// Append one operation to the v3 history.
    fn push(
        &self,
        rec: &Mutex<Recorder>,
        member: usize,
        call_ns: u64,
        return_ns: Option<u64>,
        request: h::Request,
        outcome: h::Outcome,
    ) {
        let mut rec = rec.lock().unwrap();
        let id = rec.v3.len() as u64;
        rec.v3.push(h::Op {
            id,
            client: self.hid,
            member: Some(member as u64),
            call_ns,
            return_ns,
            request,
            outcome,
        });
    }

    /// Run one call on the current member's connection within `timeout`; on a failure the
    /// connection is dropped and the next call goes to the next member.
    async fn call<T, F, Fut>(&mut self, timeout: Duration, f: F) -> Ended<T>
    where
        F: FnOnce(Ch) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        if self.conn.is_none() {
            let token = crate::v3auth::Token::default();
            self.conn =
                crate::v3auth::connect(self.addrs[self.member], None, &token, self.timeout).await;
        }
        let ended = match self.conn.clone() {
            None => Ended::Unknown,
            Some(c) => match tokio::time::timeout(timeout, f(c)).await {
                Ok(Ok(r)) => return Ended::Ok(r.into_inner()),
                Ok(Err(s)) if !unknown_effect(&s) => Ended::Refused(s),
                _ => Ended::Unknown,
            },
        };
        self.conn = None;
        self.member = (self.member + 1) % self.addrs.len();
        ended
    }

    /// Revoke `lease` (deleting the keys attached to it), retrying until it is gone or
    /// `until`; each try goes into the history as of unknown outcome (whether it deleted the
    /// lock key depends on whether an unlock of unknown outcome did first). False if it
    /// could not be revoked by then.
    async fn revoke(
        &mut self,
        lease: i64,
        rec: &Mutex<Recorder>,
        until: tokio::time::Instant,
    ) -> bool {
        while tokio::time::Instant::now() < until {
            let (t, member, call_ns) = (self.timeout, self.member, self.now_ns());
            let ended = self
                .call(t, |ch| async move {
                    LeaseClient::new(ch)
                        .lease_revoke(pb::LeaseRevokeRequest { id: lease })
                        .await
                })
                .await;
            let request = h::Request::LeaseRevoke(h::LeaseRevokeRequest {
                id: lease,
                keys: Vec::new(),
            });
            match ended {
                Ended::Ok(_) => {
                    self.record(rec, member, call_ns, request, Ended::Unknown);
                    return true;
                }
                // "etcdserver: requested lease not found": revoked already, or expired.
                Ended::Refused(s) if s.code() == tonic::Code::NotFound => {
                    self.record(rec, member, call_ns, request, Ended::Refused(s));
                    return true;
                }
                _ => {
                    self.record(rec, member, call_ns, request, Ended::Unknown);
                    detcd_node::rt::sleep(Duration::from_millis(100)).await
                }
            }
        }
        false
    }

    /// One lock attempt on lock `n`: grant a lease, lock, add to the counter under the lock
    /// up to `increments` times, unlock (or, when the unlock's outcome is unknown or the
    /// lock was not granted, revoke the lease).
    ///
    /// In the v3 history the Lock call stands for the put of the lock key that it made
    /// (answered at the key's create revision, read back after the grant; of unknown outcome
    /// when that read fails or the Lock was not granted, then with the delete its server
    /// makes when the wait fails); the Unlock for the key's delete.
    async fn attempt(
        &mut self,
        s: &Scenario,
        n: usize,
        lease: i64,
        seen: &Mutex<Seen>,
        rec: &Mutex<Recorder>,
        stop_by: tokio::time::Instant,
    ) {
        let spec = &s.locks;
        let incs = self.rng.gen_range(1..=spec.increments);
        let hold = Duration::from_millis(self.rng.gen_range(0..=spec.hold_ms));
        let t = self.timeout;
        let grant = pb::LeaseGrantRequest {
            ttl: spec.lease_ttl_s,
            id: lease,
        };
        let (member, call_ns) = (self.member, self.now_ns());
        // Until when the lease is surely alive: its TTL from the grant's call, less a margin
        // for a leader whose clock runs ahead. A key gone before then was taken from its
        // holder; after it, the lease may have expired, and an unlock may delete nothing.
        let young_until =
            call_ns + (spec.lease_ttl_s as u64).saturating_sub(YOUNG_MARGIN_S) * 1_000_000_000;
        let ended = self
            .call(t, |ch| async move {
                LeaseClient::new(ch).lease_grant(grant).await
            })
            .await;
        let (granted_ttl, error) = match &ended {
            Ended::Ok(r) => (Some(r.ttl), None),
            Ended::Refused(st) => (None, Some(grpc_error(st))),
            Ended::Unknown => (None, None),
        };
        rec.lock().unwrap().v3_lease_grants.push(h::LeaseGrant {
            client: self.hid,
            member: Some(member as u64),
            lease,
            ttl: spec.lease_ttl_s,
            call_ns,
            return_ns: (!matches!(ended, Ended::Unknown)).then(|| self.now_ns()),
            granted_ttl,
            error,
        });
        if granted_ttl.is_none() {
            // Unknown: it may exist; it has no keys and expires. Refused: try another.
            detcd_node::rt::sleep(Duration::from_millis(100)).await;
            return;
        }
        let name = lock_name(n);
        let key = format!("{name}/{lease:x}");
        let put = h::Request::Put(h::PutRequest {
            key: key.clone(),
            value: String::new(),
            lease,
            prev_kv: false,
        });
        let req = lpb::LockRequest {
            name: name.clone().into_bytes(),
            lease,
        };
        let wait = Duration::from_millis(spec.lock_timeout_ms);
        let (member, call_ns) = (self.member, self.now_ns());
        let locked = self
            .call(
                wait,
                |ch| async move { LockClient::new(ch).lock(req).await },
            )
            .await;
        let returned_ns = self.now_ns();
        let r = match locked {
            Ended::Ok(r) => r,
            _ => {
                // The key may have been put, and deleted again when the wait failed.
                self.record(rec, member, call_ns, put, Ended::Unknown);
                let del = h::Request::DeleteRange(h::DeleteRangeRequest {
                    key: key.clone(),
                    range_end: String::new(),
                    prev_kv: false,
                });
                self.record(rec, member, call_ns, del, Ended::Unknown);
                seen.lock().unwrap().abandoned += 1;
                if !self.revoke(lease, rec, stop_by).await {
                    seen.lock().unwrap().unrevoked += 1;
                }
                return;
            }
        };
        let revision = r.header.as_ref().map_or(0, |h| h.revision);
        if r.key != key.as_bytes() {
            seen.lock().unwrap().violations.push(format!(
                "client {} was granted {name} with key {}, not {key} (the name, '/', the lease in hex)",
                self.id,
                String::from_utf8_lossy(&r.key)
            ));
        }
        seen.lock().unwrap().grants.push(Grant {
            client: self.id,
            name: n,
            key: r.key.clone(),
            revision,
            at_ns: returned_ns,
        });
        // The key's create revision: the revision the Lock's put made.
        let read = pb::RangeRequest {
            key: r.key.clone(),
            ..Default::default()
        };
        let (rmember, rcall_ns) = (self.member, self.now_ns());
        let got = self
            .call(t, |ch| async move { KvClient::new(ch).range(read).await })
            .await;
        let created = match &got {
            Ended::Ok(g) => g.kvs.first().map(|kv| kv.create_revision),
            _ => None,
        };
        // The put, answered when the Lock was, then the read of it (the history's ids follow
        // the calls' order).
        let (outcome, return_ns) = match created {
            Some(c) => (
                h::Outcome::Ok(h::Response::Put(h::PutResponse {
                    header_revision: c,
                    prev_kv: None,
                })),
                Some(returned_ns),
            ),
            None => (h::Outcome::Indeterminate, None),
        };
        self.push(rec, member, call_ns, return_ns, put, outcome);
        let range = h::Request::Range(h::RangeRequest {
            key: key.clone(),
            ..Default::default()
        });
        let got_rec = got.to_history(|g| h::Response::Range(crate::v3load::range_resp(g)));
        self.record(rec, rmember, rcall_ns, range, got_rec);
        let mut hold_state = if created.is_some() {
            Hold::Held
        } else if matches!(got, Ended::Ok(_)) {
            Hold::Lost
        } else {
            Hold::Over
        };
        let mut i = 0;
        while hold_state == Hold::Held && i < incs && self.now_ns() < young_until {
            if i > 0 {
                detcd_node::rt::sleep(hold / incs).await;
            }
            hold_state = self.increment(n, &key, seen, rec).await;
            i += 1;
        }
        if hold_state == Hold::Lost {
            self.lost(n, &key, young_until, seen);
        }
        // Unlock: in the history, the delete of the key.
        let req = lpb::UnlockRequest { key: r.key.clone() };
        let (member, call_ns) = (self.member, self.now_ns());
        let unlocked = self
            .call(t, |ch| async move { LockClient::new(ch).unlock(req).await })
            .await;
        let del = h::Request::DeleteRange(h::DeleteRangeRequest {
            key,
            range_end: String::new(),
            prev_kv: false,
        });
        // The key is surely there to delete: read back after the grant, not found gone since,
        // and its lease young when the unlock returned.
        let there = created.is_some() && hold_state != Hold::Lost && self.now_ns() < young_until;
        let done = match &unlocked {
            Ended::Ok(u) if there => {
                let resp = h::Response::DeleteRange(h::DeleteRangeResponse {
                    header_revision: u.header.as_ref().map_or(0, |h| h.revision),
                    deleted: 1,
                    prev_kvs: Vec::new(),
                });
                self.record(rec, member, call_ns, del, Ended::Ok(resp));
                true
            }
            _ => {
                self.record(rec, member, call_ns, del, Ended::Unknown);
                false
            }
        };
        // A lease whose key the unlock deleted is left to expire (a revocation would then
        // delete nothing, which the history could not tell from a delete).
        if !done && !self.revoke(lease, rec, stop_by).await {
            seen.lock().unwrap().unrevoked += 1;
        }
    }

    /// A held key found gone: a violation while its lease was surely alive (nothing else
    /// deletes it), else a lease that may have expired.
    fn lost(&self, n: usize, key: &str, young_until: u64, seen: &Mutex<Seen>) {
        let mut sn = seen.lock().unwrap();
        if self.now_ns() < young_until {
            sn.violations.push(format!(
                "client {} found its key {key} of {} gone while it held the lock and its lease was alive",
                self.id,
                lock_name(n)
            ));
        } else {
            sn.lost += 1;
        }
    }

    /// Add one to lock `n`'s counter, fenced by `key` (the lock key must still exist and the
    /// counter must not have moved since this client read it). `Held` when it was added;
    /// `Lost` when the key was gone; `Over` when the outcome is unknown or the call failed.
    async fn increment(
        &mut self,
        n: usize,
        key: &str,
        seen: &Mutex<Seen>,
        rec: &Mutex<Recorder>,
    ) -> Hold {
        let t = self.timeout;
        let ck = counter_key(n);
        let read = pb::RangeRequest {
            key: ck.clone().into_bytes(),
            ..Default::default()
        };
        let (member, call_ns) = (self.member, self.now_ns());
        let got = self
            .call(t, |ch| async move { KvClient::new(ch).range(read).await })
            .await;
        let got_rec = got.to_history(|g| h::Response::Range(crate::v3load::range_resp(g)));
        self.record(
            rec,
            member,
            call_ns,
            h::Request::Range(h::RangeRequest {
                key: ck.clone(),
                ..Default::default()
            }),
            got_rec,
        );
        let Ended::Ok(got) = got else {
            return Hold::Over;
        };
        let (value, modrev) = got
            .kvs
            .first()
            .map_or((0u64, 0i64), |kv| (count_of(&kv.value), kv.mod_revision));
        // Values are unique in the history (the checker's evidence): the count, then who.
        self.seq += 1;
        let new_value = format!("{} c{}-{}", value + 1, self.hid, self.seq);
        use pb::compare::{CompareResult, CompareTarget, TargetUnion};
        let txn = pb::TxnRequest {
            compare: vec![
                pb::Compare {
                    result: CompareResult::Greater as i32,
                    target: CompareTarget::Create as i32,
                    key: key.as_bytes().to_vec(),
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
                pb::Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: ck.clone().into_bytes(),
                    target_union: Some(TargetUnion::ModRevision(modrev)),
                    ..Default::default()
                },
            ],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: ck.clone().into_bytes(),
                    value: new_value.clone().into_bytes(),
                    ..Default::default()
                })),
            }],
            failure: vec![
                pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                        key: key.as_bytes().to_vec(),
                        ..Default::default()
                    })),
                },
                pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                        key: ck.clone().into_bytes(),
                        ..Default::default()
                    })),
                },
            ],
        };
        let hreq = h::Request::Txn(h::TxnRequest {
            compares: vec![
                h::Compare {
                    target: h::CompareTarget::Create,
                    result: h::CompareResult::Greater,
                    key: key.to_string(),
                    range_end: String::new(),
                    operand: h::Operand::Int(0),
                },
                h::Compare {
                    target: h::CompareTarget::Mod,
                    result: h::CompareResult::Equal,
                    key: ck.clone(),
                    range_end: String::new(),
                    operand: h::Operand::Int(modrev),
                },
            ],
            success: vec![h::Request::Put(h::PutRequest {
                key: ck.clone(),
                value: new_value,
                lease: 0,
                prev_kv: false,
            })],
            failure: vec![
                h::Request::Range(h::RangeRequest {
                    key: key.to_string(),
                    ..Default::default()
                }),
                h::Request::Range(h::RangeRequest {
                    key: ck.clone(),
                    ..Default::default()
                }),
            ],
        });
        let (member, call_ns) = (self.member, self.now_ns());
        let ended = self
            .call(t, |ch| async move { KvClient::new(ch).txn(txn).await })
            .await;
        let r = ended.to_history(|t| h::Response::Txn(crate::v3load::txn_resp(t)));
        self.record(rec, member, call_ns, hreq, r);
        match ended {
            Ended::Ok(r) if r.succeeded => {
                seen.lock().unwrap().acked[n] += 1;
                Hold::Held
            }
            Ended::Ok(r) => {
                let ranges: Vec<Option<&detcd_proto::mvccpb::KeyValue>> = r
                    .responses
                    .iter()
                    .map(|op| match &op.response {
                        Some(pb::response_op::Response::ResponseRange(rr)) => rr.kvs.first(),
                        _ => None,
                    })
                    .collect();
                let mut sn = seen.lock().unwrap();
                match ranges.as_slice() {
                    [Some(_), now] => {
                        sn.violations.push(format!(
                        "client {} holding {} (key {key}) read {ck} = {value} at mod revision {modrev}; \
                         at revision {} it was {} at mod revision {}",
                        self.id,
                        lock_name(n),
                        r.header.as_ref().map_or(0, |h| h.revision),
                        now.map_or("absent".into(), |kv| String::from_utf8_lossy(&kv.value)
                            .into_owned()),
                        now.map_or(0, |kv| kv.mod_revision),
                        ));
                        Hold::Over
                    }
                    _ => Hold::Lost,
                }
            }
            Ended::Refused(_) => Hold::Over,
            Ended::Unknown => {
                seen.lock().unwrap().unknown[n] += 1;
                Hold::Over
            }
        }
    }
}

/// Where a hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// The key is there (as of the last fenced write).
    Held,
    /// The key was found gone.
    Lost,
    /// Unknown (a call failed): the hold ends.
    Over,
}

/// Seconds of a lease's TTL not counted on: a leader whose clock runs ahead expires leases
/// early by its skew (v3-locks: 2 s).
const YOUNG_MARGIN_S: u64 = 10;

/// The count in a counter's value (`"<count> <writer>"`).
fn count_of(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Run the lock load from `start` to `end` on a machine of its own, then judge it.
pub async fn run(
    s: Arc<Scenario>,
    addrs: Vec<String>,
    seed: u64,
    rec: Arc<Mutex<Recorder>>,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
) -> Check {
    let spec = s.locks.clone();
    let addrs: Vec<SocketAddr> = addrs
        .iter()
        .map(|a| a.parse().expect("member addresses are ip:port"))
        .collect();
    let seen = Arc::new(Mutex::new(Seen {
        acked: vec![0; spec.names],
        unknown: vec![0; spec.names],
        ..Default::default()
    }));
    // A client that began an attempt before `end` finishes it: its Lock may wait behind every
    // other client's hold, and its revoke may wait for a leader.
    let stop_by = end
        + Duration::from_millis(spec.lock_timeout_ms)
        + Duration::from_secs(spec.lease_ttl_s as u64);
    let mut tasks = Vec::new();
    for i in 0..spec.clients {
        let (s, seen, addrs, rec) = (s.clone(), seen.clone(), addrs.clone(), rec.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Client {
                id: i,
                hid: HISTORY_CLIENT_BASE + i as u64,
                rng: ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, i as u64, 0x10c5)),
                member: i % addrs.len(),
                addrs,
                conn: None,
                timeout: Duration::from_millis(s.workload.request_timeout_ms),
                seq: 0,
                start,
            };
            let mut round = 0i64;
            while tokio::time::Instant::now() < end {
                round += 1;
                // A lease id of this client's own per attempt: distinct across clients.
                let lease = ((0x10c5 + i as i64) << 32) | round;
                let n = c.rng.gen_range(0..s.locks.names);
                c.attempt(&s, n, lease, &seen, &rec, stop_by).await;
                let pause = c.rng.gen_range(0..=s.locks.hold_ms);
                detcd_node::rt::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    judge(&spec, &addrs, seen).await
}

/// Read back every grant, the counters and what is left under each lock's prefix.
async fn judge(spec: &crate::scenario::LockSpec, addrs: &[SocketAddr], seen: Seen) -> Check {
    let mut reader = Client {
        id: usize::MAX,
        hid: u64::MAX - 1,
        rng: ChaCha8Rng::seed_from_u64(0),
        addrs: addrs.to_vec(),
        member: 0,
        conn: None,
        timeout: Duration::from_secs(2),
        seq: 0,
        start: tokio::time::Instant::now(),
    };
    // A linearizable Range, retried over the members for up to 20 s while it gets no answer;
    // an answer refusing it is returned.
    async fn range(
        c: &mut Client,
        req: pb::RangeRequest,
    ) -> Option<Result<pb::RangeResponse, tonic::Status>> {
        for _ in 0..40 {
            let r = req.clone();
            match c
                .call(Duration::from_secs(2), |ch| async move {
                    KvClient::new(ch).range(r).await
                })
                .await
            {
                Ended::Ok(r) => return Some(Ok(r)),
                Ended::Refused(st) => return Some(Err(st)),
                Ended::Unknown => detcd_node::rt::sleep(Duration::from_millis(500)).await,
            }
        }
        None
    }
    let mut bad: Vec<String> = seen.violations.clone();
    let mut unread = 0usize;
    for g in &seen.grants {
        let grant = format!(
            "client {} was granted {} (key {}) at revision {} ({:.3} s)",
            g.client,
            lock_name(g.name),
            String::from_utf8_lossy(&g.key),
            g.revision,
            g.at_ns as f64 / 1e9
        );
        if g.revision <= 0 {
            bad.push(format!("{grant}: no revision"));
            continue;
        }
        // The whole prefix at that revision, the oldest found here (not by the server's sort,
        // which the Lock's own owner read uses too).
        let (key, range_end) = lock_range(g.name);
        let req = pb::RangeRequest {
            key,
            range_end,
            revision: g.revision,
            ..Default::default()
        };
        match range(&mut reader, req).await {
            None => unread += 1,
            // Compacted: the revision can no longer be read (no compactor runs with locks).
            Some(Err(st)) if st.message().contains("compacted") => unread += 1,
            Some(Err(st)) => bad.push(format!("{grant}, which cannot be read: {}", st.message())),
            Some(Ok(r)) => match r.kvs.iter().min_by_key(|kv| kv.create_revision) {
                Some(kv) if kv.key == g.key => {}
                oldest => bad.push(format!(
                    "{grant}, when the oldest key was {}",
                    oldest.map_or("none".into(), |kv| format!(
                        "{} (created at {})",
                        String::from_utf8_lossy(&kv.key),
                        kv.create_revision
                    )),
                )),
            },
        }
    }
    let mut counts = Vec::new();
    for n in 0..spec.names {
        let (key, range_end) = lock_range(n);
        let left = range(
            &mut reader,
            pb::RangeRequest {
                key,
                range_end,
                count_only: true,
                ..Default::default()
            },
        )
        .await;
        let counter = range(
            &mut reader,
            pb::RangeRequest {
                key: counter_key(n).into_bytes(),
                ..Default::default()
            },
        )
        .await;
        let (Some(Ok(left)), Some(Ok(counter))) = (left, counter) else {
            unread += 1;
            continue;
        };
        // Keys of leases that could not be revoked stay until the leases expire.
        if left.count > 0 && seen.unrevoked == 0 {
            bad.push(format!(
                "{} keys left under {}/ after every client stopped",
                left.count,
                lock_name(n)
            ));
        }
        let value = counter.kvs.first().map_or(0, |kv| count_of(&kv.value));
        let (lo, hi) = (seen.acked[n], seen.acked[n] + seen.unknown[n]);
        if value < lo || value > hi {
            bad.push(format!(
                "{} = {value}, outside [{lo}, {hi}] (acknowledged increments, plus those of unknown outcome)",
                counter_key(n)
            ));
        }
        if !seen.grants.iter().any(|g| g.name == n) {
            bad.push(format!("{} was never granted", lock_name(n)));
        }
        counts.push(format!("{}={value}", counter_key(n)));
    }
    let passed = if !bad.is_empty() {
        Some(false)
    } else if unread > 0 || seen.unrevoked > 0 {
        None
    } else {
        Some(true)
    };
    let mut detail = format!(
        "{} grants by {} clients on {} names, each read back at its revision; {} abandoned attempts, {} holds lost; {}",
        seen.grants.len(),
        spec.clients,
        spec.names,
        seen.abandoned,
        seen.lost,
        counts.join(", ")
    );
    if unread > 0 {
        detail.push_str(&format!("; {unread} reads back failed"));
    }
    if seen.unrevoked > 0 {
        detail.push_str(&format!("; {} leases not revoked", seen.unrevoked));
    }
    if !bad.is_empty() {
        detail.push_str(&format!("; {}", bad.join("; ")));
    }
    Check {
        name: "locks".into(),
        passed,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_range_is_its_prefix_as_clientv3_computes_it() {
        assert_eq!(lock_range(0), (b"lock-0/".to_vec(), b"lock-00".to_vec()));
        assert_eq!(lock_range(12), (b"lock-12/".to_vec(), b"lock-120".to_vec()));
    }
}
