//! The v3 workload (`api = "v3"`): closed-loop clients speak etcd's v3 gRPC to the members
//! (tonic-generated clients over the runtime seam's HTTP/2 on simulated TCP: real framing,
//! real protobuf), and record every operation twice: as a v3 history operation for
//! `detcd-checker`'s v3 model (responses with their header revisions), and as an
//! [`OpRecord`] for the report's throughput and latency.
//!
//! Operations, drawn from the client's seeded rng over the workload's keys (`v3/<n>`):
//! linearizable and serializable single-key Range, a linearizable Range over all keys, Put
//! with a value unique in the run (so a timed-out write can be placed by what later reads
//! saw), DeleteRange, and a compare-and-swap Txn (mod_revision of the key equals what the
//! client last saw; put on success, get on failure). A request with no answer in time, or
//! whose connection broke, is indeterminate if it could have written; a read without an
//! answer is left out (it had no effect).
//!
//! Watchers (`workload.watchers`) follow the workload's keys over v3 watch streams, each in
//! a seeded variant (every key with prev_kv, every key from revision 1, one key, every key
//! without deletes), and record every response. A stream that breaks, or stays silent for
//! [`WATCH_SILENCE`], is given up and the watch is created again on the next member at the
//! last revision seen + 1: each such watch is a watch of its own in the history, so the
//! checker holds each to the guarantees from its own start (Resumable).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_checker::v3 as h;
use detcd_node::rt::h2::H2Channel;
use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::kv_client::KvClient;
use detcd_proto::etcdserverpb::watch_client::WatchClient;
use detcd_proto::mvccpb;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{Scenario, V3Op};
use crate::workload::{OpKind, OpRecord, Outcome, Recorder};

type Ch = crate::v3auth::Ch;
type Kv = KvClient<Ch>;

/// The workload's key number `k`.
pub fn key(k: usize) -> String {
    format!("v3/{k}")
}

/// The first key after every workload key (the end of "all keys").
const ALL_END: &str = "v30";
const ALL_START: &str = "v3/";

struct Client {
    id: u32,
    rng: ChaCha8Rng,
    addrs: Vec<SocketAddr>,
    member: usize,
    conn: Option<Ch>,
    seq: u64,
    /// The mod_revision last seen per key (for CAS).
    seen: Vec<i64>,
    timeout: Duration,
    /// Who it acts as when auth is on (see [`crate::v3auth`]), and the token it holds.
    creds: Option<crate::v3auth::Creds>,
    token: crate::v3auth::Token,
}

/// What one call ended with.
pub(crate) enum Ended<T> {
    Ok(T),
    /// A gRPC error that says the request had no effect.
    Refused(tonic::Status),
    /// No answer, or one that does not say whether it took effect.
    Unknown,
}

/// A refusal as the v3 history records it.
pub(crate) fn grpc_error(st: &tonic::Status) -> h::GrpcError {
    h::GrpcError {
        code: format!("{:?}", st.code()),
        message: st.message().to_string(),
    }
}

/// Whether a gRPC error leaves a write's effect unknown. Unavailable covers etcd's "request
/// timed out" (the proposal may still commit) and a broken connection; the others are
/// answers about a request that was refused before it was proposed or when it applied.
pub(crate) fn unknown_effect(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
    )
}

pub(crate) fn kv(k: &mvccpb::KeyValue) -> h::KeyValue {
    h::KeyValue {
        key: String::from_utf8_lossy(&k.key).into_owned(),
        value: String::from_utf8_lossy(&k.value).into_owned(),
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
        lease: k.lease,
    }
}

fn rev(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

pub(crate) fn range_resp(r: &pb::RangeResponse) -> h::RangeResponse {
    h::RangeResponse {
        header_revision: rev(&r.header),
        kvs: r.kvs.iter().map(kv).collect(),
        count: r.count,
        more: r.more,
    }
}

fn op_resp(r: &pb::ResponseOp) -> Option<h::Response> {
    use pb::response_op::Response as R;
    Some(match r.response.as_ref()? {
        R::ResponseRange(r) => h::Response::Range(range_resp(r)),
        R::ResponsePut(p) => h::Response::Put(h::PutResponse {
            header_revision: rev(&p.header),
            prev_kv: p.prev_kv.as_ref().map(kv),
        }),
        R::ResponseDeleteRange(d) => h::Response::DeleteRange(h::DeleteRangeResponse {
            header_revision: rev(&d.header),
            deleted: d.deleted,
            prev_kvs: d.prev_kvs.iter().map(kv).collect(),
        }),
        R::ResponseTxn(t) => h::Response::Txn(txn_resp(t)),
    })
}

pub(crate) fn txn_resp(t: &pb::TxnResponse) -> h::TxnResponse {
    h::TxnResponse {
        header_revision: rev(&t.header),
        succeeded: t.succeeded,
        responses: t.responses.iter().filter_map(op_resp).collect(),
    }
}

impl Client {
    async fn conn(&mut self) -> Option<&mut Ch> {
        if self.conn.is_some() && self.creds.is_some() && self.token.get().is_none() {
            // The token was refused: authenticate again, on a new connection.
            self.conn = None;
        }
        if self.conn.is_none() {
            let addr = self.addrs[self.member];
            match crate::v3auth::connect(addr, self.creds.as_ref(), &self.token, self.timeout).await
            {
                Some(ch) => self.conn = Some(ch),
                None => {
                    // Try the next member next time.
                    self.member = (self.member + 1) % self.addrs.len();
                    return None;
                }
            }
        }
        self.conn.as_mut()
    }

    /// Run one KV call with the request timeout (see [`Client::call_ch`]).
    async fn call<T, F, Fut>(&mut self, f: F) -> Option<Ended<T>>
    where
        F: FnOnce(Kv) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_ch(|ch| f(KvClient::new(ch))).await
    }

    /// Run one call with the request timeout; on a failure the connection is dropped and the
    /// next call goes to the next member.
    async fn call_ch<T, F, Fut>(&mut self, f: F) -> Option<Ended<T>>
    where
        F: FnOnce(Ch) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = self.timeout;
        let c = self.conn().await?.clone();
        let ended = match tokio::time::timeout(timeout, f(c)).await {
            Ok(Ok(r)) => return Some(Ended::Ok(r.into_inner())),
            Ok(Err(s)) if !unknown_effect(&s) => {
                if crate::v3auth::token_refused(&s) {
                    self.token.set(None);
                }
                Ended::Refused(s)
            }
            _ => Ended::Unknown,
        };
        self.conn = None;
        self.member = (self.member + 1) % self.addrs.len();
        Some(ended)
    }

    /// One operation, recorded.
    async fn one(&mut self, s: &Scenario, rec: &Mutex<Recorder>, start: tokio::time::Instant) {
        let k = self.rng.gen_range(0..s.workload.keys.max(1));
        let roll = self.rng.gen_range(0..100u32);
        self.seq += 1;
        let value = format!("c{}-{}", self.id, self.seq);
        let member = self.member;
        let invoke_ns = start.elapsed().as_nanos() as u64;
        let (request, ended): (h::Request, Option<Ended<h::Response>>) =
            match s.workload.v3_mix.pick(roll) {
                V3Op::Range { serializable } => {
                    let req = pb::RangeRequest {
                        key: key(k).into_bytes(),
                        serializable,
                        ..Default::default()
                    };
                    let r = self
                        .call(|mut c| async move { c.range(req).await })
                        .await
                        .map(|e| map(e, |r| h::Response::Range(range_resp(&r))));
                    (
                        h::Request::Range(h::RangeRequest {
                            key: key(k),
                            serializable,
                            ..Default::default()
                        }),
                        r,
                    )
                }
                V3Op::RangeAll => {
                    let req = pb::RangeRequest {
                        key: ALL_START.into(),
                        range_end: ALL_END.into(),
                        ..Default::default()
                    };
                    let r = self
                        .call(|mut c| async move { c.range(req).await })
                        .await
                        .map(|e| map(e, |r| h::Response::Range(range_resp(&r))));
                    (
                        h::Request::Range(h::RangeRequest {
                            key: ALL_START.into(),
                            range_end: ALL_END.into(),
                            ..Default::default()
                        }),
                        r,
                    )
                }
                V3Op::Put => {
                    let req = pb::PutRequest {
                        key: key(k).into_bytes(),
                        value: value.clone().into_bytes(),
                        ..Default::default()
                    };
                    let r = self
                        .call(|mut c| async move { c.put(req).await })
                        .await
                        .map(|e| {
                            map(e, |p| {
                                h::Response::Put(h::PutResponse {
                                    header_revision: rev(&p.header),
                                    prev_kv: p.prev_kv.as_ref().map(kv),
                                })
                            })
                        });
                    (
                        h::Request::Put(h::PutRequest {
                            key: key(k),
                            value: value.clone(),
                            ..Default::default()
                        }),
                        r,
                    )
                }
                V3Op::Delete => {
                    let req = pb::DeleteRangeRequest {
                        key: key(k).into_bytes(),
                        ..Default::default()
                    };
                    let r = self
                        .call(|mut c| async move { c.delete_range(req).await })
                        .await
                        .map(|e| {
                            map(e, |d| {
                                h::Response::DeleteRange(h::DeleteRangeResponse {
                                    header_revision: rev(&d.header),
                                    deleted: d.deleted,
                                    prev_kvs: d.prev_kvs.iter().map(kv).collect(),
                                })
                            })
                        });
                    (
                        h::Request::DeleteRange(h::DeleteRangeRequest {
                            key: key(k),
                            ..Default::default()
                        }),
                        r,
                    )
                }
                V3Op::Txn => {
                    let expect = self.seen[k];
                    let cmp = pb::Compare {
                        result: pb::compare::CompareResult::Equal as i32,
                        target: pb::compare::CompareTarget::Mod as i32,
                        key: key(k).into_bytes(),
                        target_union: Some(pb::compare::TargetUnion::ModRevision(expect)),
                        ..Default::default()
                    };
                    let put = pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                            key: key(k).into_bytes(),
                            value: value.clone().into_bytes(),
                            ..Default::default()
                        })),
                    };
                    let get = pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                            key: key(k).into_bytes(),
                            ..Default::default()
                        })),
                    };
                    let req = pb::TxnRequest {
                        compare: vec![cmp],
                        success: vec![put],
                        failure: vec![get],
                    };
                    let r = self
                        .call(|mut c| async move { c.txn(req).await })
                        .await
                        .map(|e| map(e, |t| h::Response::Txn(txn_resp(&t))));
                    (
                        h::Request::Txn(h::TxnRequest {
                            compares: vec![h::Compare {
                                target: h::CompareTarget::Mod,
                                result: h::CompareResult::Equal,
                                key: key(k),
                                range_end: String::new(),
                                operand: h::Operand::Int(expect),
                            }],
                            success: vec![h::Request::Put(h::PutRequest {
                                key: key(k),
                                value: value.clone(),
                                ..Default::default()
                            })],
                            failure: vec![h::Request::Range(h::RangeRequest {
                                key: key(k),
                                ..Default::default()
                            })],
                        }),
                        r,
                    )
                }
            };
        let Some(ended) = ended else {
            // Not connected: nothing was sent.
            detcd_node::rt::sleep(Duration::from_millis(10)).await;
            return;
        };
        // What the client learns of the key's mod_revision, for its next CAS.
        if let Ended::Ok(r) = &ended {
            self.learn(k, r);
        }
        self.record(
            rec,
            start,
            member,
            invoke_ns,
            request,
            ended,
            key(k),
            Some(value),
        );
    }

    /// Record one operation that was sent (in the v3 history and for the report).
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        rec: &Mutex<Recorder>,
        start: tokio::time::Instant,
        member: usize,
        invoke_ns: u64,
        request: h::Request,
        ended: Ended<h::Response>,
        key: String,
        value: Option<String>,
    ) {
        let return_ns = start.elapsed().as_nanos() as u64;
        let write = !matches!(request, h::Request::Range(_));
        let (outcome, record) = match ended {
            Ended::Ok(r) => (
                h::Outcome::Ok(r.clone()),
                Outcome::Ok {
                    value: None,
                    index: r.header_revision().max(0) as u64,
                    prev_value: None,
                    prev_index: None,
                },
            ),
            Ended::Refused(st) => (
                h::Outcome::Error(grpc_error(&st)),
                Outcome::Err {
                    code: st.code() as u32,
                },
            ),
            Ended::Unknown if write => (h::Outcome::Indeterminate, Outcome::Indeterminate),
            // A read without an answer had no effect: nothing to check.
            Ended::Unknown => return,
        };
        let kind = match &request {
            _ if write => OpKind::V3Write,
            h::Request::Range(r) if r.serializable => OpKind::V3LocalRead,
            _ => OpKind::V3Read,
        };
        let mut rec = rec.lock().unwrap();
        let id = rec.v3.len() as u64;
        rec.v3.push(h::Op {
            id,
            client: self.id as u64,
            member: Some(member as u64),
            call_ns: invoke_ns,
            return_ns: (!matches!(outcome, h::Outcome::Indeterminate)).then_some(return_ns),
            request,
            outcome,
        });
        rec.ops.push(OpRecord {
            client: self.id,
            kind,
            key,
            value: if write { value } else { None },
            prev_value: None,
            prev_index: None,
            invoke_ns,
            return_ns: (!matches!(record, Outcome::Indeterminate)).then_some(return_ns),
            outcome: record,
            member,
            etcd_index: None,
            user: None,
        });
    }

    fn learn(&mut self, k: usize, r: &h::Response) {
        let key = key(k);
        let mut note = |kvs: &[h::KeyValue], header: i64, put: bool| {
            if let Some(x) = kvs.iter().find(|x| x.key == key) {
                self.seen[k] = x.mod_revision;
            } else if put {
                self.seen[k] = header;
            } else if kvs.is_empty() {
                self.seen[k] = 0;
            }
        };
        match r {
            h::Response::Range(g) if g.kvs.len() <= 1 => note(&g.kvs, g.header_revision, false),
            h::Response::Put(p) => note(&[], p.header_revision, true),
            h::Response::DeleteRange(d) => note(&[], d.header_revision, false),
            h::Response::Txn(t) => {
                if t.succeeded {
                    note(&[], t.header_revision, true)
                } else if let Some(h::Response::Range(g)) = t.responses.first() {
                    note(&g.kvs, g.header_revision, false)
                }
            }
            _ => {}
        }
    }
}

fn map<T>(e: Ended<T>, f: impl FnOnce(T) -> h::Response) -> Ended<h::Response> {
    match e {
        Ended::Ok(t) => Ended::Ok(f(t)),
        Ended::Refused(s) => Ended::Refused(s),
        Ended::Unknown => Ended::Unknown,
    }
}

/// The member that leads when the load begins, by each member's v3 `Maintenance/Status` (the
/// one whose `leader` is its own `member_id`, as `etcdctl endpoint status` shows it): works
/// against etcd, whose v2 API is off by default. None if no member says it leads.
async fn leader_of(addrs: &[SocketAddr], timeout: Duration) -> Option<usize> {
    for (i, a) in addrs.iter().enumerate() {
        let Some(ch) = crate::v3auth::connect(*a, None, &Default::default(), timeout).await else {
            continue;
        };
        let mut m = detcd_proto::etcdserverpb::maintenance_client::MaintenanceClient::new(ch);
        if let Ok(Ok(r)) = tokio::time::timeout(timeout, m.status(pb::StatusRequest {})).await {
            let r = r.into_inner();
            if r.header.is_some_and(|h| h.member_id == r.leader) {
                return Some(i);
            }
        }
    }
    None
}

/// Run the v3 client load until `end` (simulated), then let in-flight requests finish.
pub async fn run_clients(
    s: Arc<Scenario>,
    addrs: Vec<String>,
    seed: u64,
    rec: Arc<Mutex<Recorder>>,
    start: tokio::time::Instant,
) {
    let end = start + Duration::from_secs_f64(s.workload.duration_s);
    let addrs: Vec<SocketAddr> = addrs
        .iter()
        .map(|a| a.parse().expect("member addresses are ip:port"))
        .collect();
    let leader = match s.workload.placement {
        crate::scenario::Placement::Leader => {
            leader_of(&addrs, Duration::from_millis(s.workload.request_timeout_ms)).await
        }
        _ => None,
    };
    let mut tasks = Vec::new();
    for c in 0..s.workload.clients {
        let (s, addrs, rec) = (s.clone(), addrs.clone(), rec.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, c as u64, 0x0003));
            // Drawn in every placement, so the rest of the client's stream is the same.
            let drawn = rng.gen_range(0..addrs.len());
            let member = match s.workload.placement {
                crate::scenario::Placement::Random => drawn,
                crate::scenario::Placement::Spread => c % addrs.len(),
                // No leader known when the load began: spread, as etcd's benchmark.
                crate::scenario::Placement::Leader => leader.unwrap_or(c % addrs.len()),
            };
            let mut client = Client {
                id: c as u32,
                rng,
                member,
                conn: None,
                seq: 0,
                seen: vec![0; s.workload.keys.max(1)],
                timeout: Duration::from_millis(s.workload.request_timeout_ms),
                creds: crate::v3auth::client_creds(&s, seed, c as u32),
                token: Default::default(),
                addrs,
            };
            if let Some(cr) = &client.creds {
                rec.lock()
                    .unwrap()
                    .v3_users
                    .insert(c as u64, cr.user.clone());
            }
            while tokio::time::Instant::now() < end {
                client.one(&s, &rec, start).await;
            }
        }));
    }
    for n in 0..s.workload.leases {
        let (s, addrs, rec) = (s.clone(), addrs.clone(), rec.clone());
        tasks.push(tokio::spawn(run_lease_client(
            n as u32, s, addrs, seed, rec, start, end,
        )));
    }
    if s.workload.compact_every_ms > 0 {
        let (s, addrs, rec) = (s.clone(), addrs.clone(), rec.clone());
        tasks.push(tokio::spawn(run_compactor(s, addrs, seed, rec, start, end)));
    }
    if !s.auth.flip_role.is_empty() {
        let (s, addrs, rec) = (s.clone(), addrs.clone(), rec.clone());
        tasks.push(tokio::spawn(run_flipper(s, addrs, rec, start, end)));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The compactor (`workload.compact_every_ms`): every interval it reads one key (learning
/// the newest revision from the header) and compacts a seeded 20-200 revisions behind it.
/// Both are history operations, so the checker's model compacts with it.
async fn run_compactor(
    s: Arc<Scenario>,
    addrs: Vec<SocketAddr>,
    seed: u64,
    rec: Arc<Mutex<Recorder>>,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
) {
    // The client id after the KV and lease clients'.
    let id = (s.workload.clients + s.workload.leases) as u32;
    let mut c = Client {
        id,
        rng: ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, 0, 0xc0c0)),
        member: id as usize % addrs.len(),
        conn: None,
        seq: 0,
        seen: Vec::new(),
        timeout: Duration::from_millis(s.workload.request_timeout_ms),
        creds: crate::v3auth::root(&s),
        token: Default::default(),
        addrs,
    };
    let every = Duration::from_millis(s.workload.compact_every_ms);
    let mut last_rev = 1i64;
    let mut compacted = 0i64;
    loop {
        detcd_node::rt::sleep(every).await;
        if tokio::time::Instant::now() >= end {
            return;
        }
        let range = h::RangeRequest {
            key: key(0),
            ..Default::default()
        };
        c.range_op(&rec, start, range, &mut last_rev).await;
        let at = last_rev - c.rng.gen_range(20..=200i64);
        if at <= compacted.max(1) {
            continue;
        }
        if c.compact_op(&rec, start, at).await {
            compacted = at;
        }
    }
}

/// The flipper (`auth.flip_role`): every `auth.flip_every_ms` it revokes the role's one
/// permission, or grants it again, as root, retrying until a member acknowledges the
/// change (both are idempotent: a revocation answered "permission is not granted" found
/// its work done). Each change is recorded from its first try to its acknowledgement
/// ([`crate::v3auth::AuthChange`]), for the `v3-permissions` check.
async fn run_flipper(
    s: Arc<Scenario>,
    addrs: Vec<SocketAddr>,
    rec: Arc<Mutex<Recorder>>,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
) {
    use detcd_proto::etcdserverpb::auth_client::AuthClient;
    let Some(role) = s.auth.roles.iter().find(|r| r.name == s.auth.flip_role) else {
        return;
    };
    let pattern = role
        .read
        .iter()
        .chain(&role.write)
        .next()
        .cloned()
        .unwrap_or_default();
    let kind = match (role.read.contains(&pattern), role.write.contains(&pattern)) {
        (true, true) => detcd_proto::authpb::permission::Type::Readwrite,
        (true, false) => detcd_proto::authpb::permission::Type::Read,
        _ => detcd_proto::authpb::permission::Type::Write,
    };
    let perm = crate::v3auth::permission(&pattern, kind);
    // The client id after the KV, lease and compactor clients'.
    let id = (s.workload.clients + s.workload.leases + 1) as u32;
    let mut c = Client {
        id,
        rng: ChaCha8Rng::seed_from_u64(0),
        member: id as usize % addrs.len(),
        conn: None,
        seq: 0,
        seen: Vec::new(),
        timeout: Duration::from_millis(s.workload.request_timeout_ms),
        creds: crate::v3auth::root(&s),
        token: Default::default(),
        addrs,
    };
    let every = Duration::from_millis(s.auth.flip_every_ms);
    let now_ns = || start.elapsed().as_nanos() as u64;
    let mut granted = true;
    loop {
        detcd_node::rt::sleep(every).await;
        if tokio::time::Instant::now() >= end {
            return;
        }
        granted = !granted;
        let call_ns = now_ns();
        let (mut acked, mut certain) = (None, true);
        while acked.is_none() && tokio::time::Instant::now() < end {
            let (name, perm) = (role.name.clone(), perm.clone());
            let ended = c
                .call_ch(|ch| async move {
                    let mut a = AuthClient::new(ch);
                    if granted {
                        a.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
                            name,
                            perm: Some(perm),
                        })
                        .await
                        .map(|r| r.map(|_| ()))
                    } else {
                        match a
                            .role_revoke_permission(pb::AuthRoleRevokePermissionRequest {
                                role: name,
                                key: perm.key,
                                range_end: perm.range_end,
                            })
                            .await
                        {
                            Err(e)
                                if e.message()
                                    == "etcdserver: permission is not granted to the role" =>
                            {
                                Ok(tonic::Response::new(()))
                            }
                            r => r.map(|r| r.map(|_| ())),
                        }
                    }
                })
                .await;
            match ended {
                Some(Ended::Ok(())) => acked = Some(now_ns()),
                Some(Ended::Unknown) => {
                    certain = false;
                    detcd_node::rt::sleep(Duration::from_millis(50)).await
                }
                _ => detcd_node::rt::sleep(Duration::from_millis(50)).await,
            }
        }
        rec.lock()
            .unwrap()
            .v3_auth_changes
            .push(crate::v3auth::AuthChange {
                call_ns,
                return_ns: acked,
                granted,
                certain,
            });
        if acked.is_none() {
            return;
        }
    }
}

/// A watch stream silent this long is given up and created again elsewhere.
pub const WATCH_SILENCE: Duration = Duration::from_secs(2);

fn event(e: &mvccpb::Event) -> Option<h::Event> {
    let kind = if e.r#type == mvccpb::event::EventType::Delete as i32 {
        h::EventType::Delete
    } else {
        h::EventType::Put
    };
    Some(h::Event {
        kind,
        kv: kv(e.kv.as_ref()?),
        prev_kv: e.prev_kv.as_ref().map(kv),
    })
}

/// What watcher `id` watches: (key, range end, prev_kv, start revision of its first watch,
/// filters), in turn from a seeded start.
fn watch_variant(seed: u64, id: u32) -> (String, String, bool, i64, Vec<h::WatchFilter>) {
    let first = crate::seed::mix(seed, 0x0077, 0) as u32;
    match (first.wrapping_add(id)) % 4 {
        0 => (ALL_START.into(), ALL_END.into(), true, 0, vec![]),
        1 => (ALL_START.into(), ALL_END.into(), false, 1, vec![]),
        2 => (key(0), String::new(), true, 0, vec![]),
        _ => (
            ALL_START.into(),
            ALL_END.into(),
            false,
            0,
            vec![h::WatchFilter::Nodelete],
        ),
    }
}

/// Run v3 watcher `id` until `end`, recording every watch it creates and every response.
#[allow(clippy::too_many_arguments)]
pub async fn run_watcher(
    id: u32,
    seed: u64,
    slow: bool,
    creds: Option<crate::v3auth::Creds>,
    addrs: Vec<String>,
    rec: Arc<Mutex<Recorder>>,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
) {
    // A slow consumer's pauses, from a stream of its own.
    let mut pauses = ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, id as u64, 0x510e));
    let addrs: Vec<SocketAddr> = addrs
        .iter()
        .map(|a| a.parse().expect("member addresses are ip:port"))
        .collect();
    let (wkey, wend, prev_kv, mut next, filters) = watch_variant(seed, id);
    let mut member = id as usize % addrs.len();
    let now_ns = || start.elapsed().as_nanos() as u64;
    while tokio::time::Instant::now() < end {
        let addr = addrs[member];
        member = (member + 1) % addrs.len();
        let ch = match detcd_node::rt::timeout(WATCH_SILENCE, H2Channel::connect(addr)).await {
            Ok(Ok(ch)) => ch,
            _ => {
                detcd_node::rt::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // With auth on, each connection authenticates afresh (a member that restarted
        // forgot every token).
        let token = crate::v3auth::Token::default();
        let Some(ch) = crate::v3auth::wrap(ch, creds.as_ref(), &token, WATCH_SILENCE).await else {
            detcd_node::rt::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let create = pb::WatchCreateRequest {
            key: wkey.clone().into_bytes(),
            range_end: wend.clone().into_bytes(),
            start_revision: next,
            prev_kv,
            filters: filters
                .iter()
                .map(|f| match f {
                    h::WatchFilter::Noput => pb::watch_create_request::FilterType::Noput as i32,
                    h::WatchFilter::Nodelete => {
                        pb::watch_create_request::FilterType::Nodelete as i32
                    }
                })
                .collect(),
            ..Default::default()
        };
        let req = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        };
        let watcher = {
            let mut r = rec.lock().unwrap();
            let watcher = r.v3_watches.len() as u64;
            r.v3_watches.push(h::Watch {
                watcher,
                client: 1000 + id as u64,
                member: Some(((member + addrs.len() - 1) % addrs.len()) as u64),
                call_ns: now_ns(),
                key: wkey.clone(),
                range_end: wend.clone(),
                start_revision: next,
                prev_kv,
                filters: filters.clone(),
            });
            watcher
        };
        // The request stream stays open: closing it is not how a watch ends.
        let requests =
            futures::StreamExt::chain(futures::stream::iter(vec![req]), futures::stream::pending());
        let mut w = WatchClient::new(ch);
        let mut answers = match detcd_node::rt::timeout(WATCH_SILENCE, w.watch(requests)).await {
            Ok(Ok(r)) => r.into_inner(),
            _ => continue,
        };
        loop {
            let deadline = end.min(tokio::time::Instant::now() + WATCH_SILENCE);
            let r = match detcd_node::rt::timeout_at(deadline, answers.message()).await {
                Ok(Ok(Some(r))) => r,
                _ => break,
            };
            let resp = h::WatchResponse {
                watcher,
                at_ns: now_ns(),
                header_revision: rev(&r.header),
                created: r.created,
                canceled: r.canceled,
                compact_revision: r.compact_revision,
                fragment: r.fragment,
                events: r.events.iter().filter_map(event).collect(),
            };
            if r.created && next == 0 {
                next = resp.header_revision + 1;
            }
            if let Some(last) = resp.events.last() {
                next = last.kv.mod_revision + 1;
            }
            let canceled = r.canceled;
            rec.lock().unwrap().v3_watch_responses.push(resp);
            if slow && !canceled {
                // A slow consumer: the member's answers queue up behind flow control.
                let pause = Duration::from_millis(pauses.gen_range(100..=2500));
                detcd_node::rt::sleep_until(end.min(tokio::time::Instant::now() + pause)).await;
            }
            if canceled {
                // Canceled for a compaction: its revisions are gone, so the next watch
                // starts at the compact revision (as etcd's clients do on ErrCompacted).
                if r.compact_revision > 0 {
                    next = r.compact_revision;
                }
                break;
            }
        }
    }
}

/// The first key after every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`):
/// None when there is none (an empty prefix, or one of 0xff bytes only: every key after it).
pub fn prefix_end_of(prefix: &str) -> Option<String> {
    let mut b = prefix.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0xff {
            b.push(last + 1);
            return String::from_utf8(b).ok();
        }
    }
    None
}

/// The first key after every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`
/// for a prefix ending in a byte below 0xff).
fn prefix_end(prefix: &str) -> String {
    prefix_end_of(prefix).expect("a prefix with an end")
}

/// A lease client (`workload.leases`): in rounds until the load ends, it grants a lease of
/// a seeded TTL (2-5 s) under an ID of its own, puts 2-3 keys of its own attached to it
/// (`v3/l<client>-<round>-<j>`, unique values), keeps it alive over a LeaseKeepAlive
/// stream every TTL/3 for one to three TTLs, then either revokes it or stops keeping it
/// alive so that it expires, and after a seeded pause of up to TTL + 2 s reads the round's
/// keys back (so a read lands before and one after the expiry is due). Every few rounds it
/// also compacts at a seeded distance (50-300 revisions) behind the newest revision it
/// saw, and reads a key at a revision up to 400 behind (below a compaction: etcd's
/// "required revision has been compacted"). Grants and answered KeepAlives are history
/// lines of their own (`lease_grant`, `lease_keepalive`); Puts, Revokes, Compacts and
/// Ranges are operations.
pub async fn run_lease_client(
    n: u32,
    s: Arc<Scenario>,
    addrs: Vec<SocketAddr>,
    seed: u64,
    rec: Arc<Mutex<Recorder>>,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
) {
    use detcd_proto::etcdserverpb::lease_client::LeaseClient;
    let rng = ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, n as u64, 0x1ea5));
    // Client ids after the KV clients' (the history's clients run one operation at a time).
    let id = (s.workload.clients + n as usize) as u32;
    let mut c = Client {
        id,
        rng,
        member: n as usize % addrs.len(),
        conn: None,
        seq: 0,
        seen: Vec::new(),
        timeout: Duration::from_millis(s.workload.request_timeout_ms),
        creds: crate::v3auth::root(&s),
        token: Default::default(),
        addrs,
    };
    let now_ns = || start.elapsed().as_nanos() as u64;
    let mut last_rev = 1i64;
    let mut round = 0u64;
    while tokio::time::Instant::now() < end {
        round += 1;
        let lease = ((id as i64 + 1) << 32) | round as i64;
        let ttl: i64 = c.rng.gen_range(2..=5);
        let nkeys = c.rng.gen_range(2..=3usize);
        let keep_ms = c.rng.gen_range(ttl as u64 * 1000..=ttl as u64 * 3000);
        let revoke = c.rng.gen_bool(0.5);
        let pause_ms = c.rng.gen_range(0..=(ttl as u64 + 2) * 1000);
        let compact = c.rng.gen_bool(0.5);
        let compact_back = c.rng.gen_range(50..=300i64);
        let read_back = c.rng.gen_range(1..=400i64);

        // Grant.
        let member = c.member;
        let call_ns = now_ns();
        let req = pb::LeaseGrantRequest { ttl, id: lease };
        let Some(ended) = c
            .call_ch(|ch| async move { LeaseClient::new(ch).lease_grant(req).await })
            .await
        else {
            detcd_node::rt::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (granted_ttl, error, ret) = match &ended {
            Ended::Ok(r) => {
                last_rev = last_rev.max(rev(&r.header));
                (Some(r.ttl), None, Some(now_ns()))
            }
            Ended::Refused(st) => (None, Some(grpc_error(st)), Some(now_ns())),
            Ended::Unknown => (None, None, None),
        };
        rec.lock().unwrap().v3_lease_grants.push(h::LeaseGrant {
            client: id as u64,
            member: Some(member as u64),
            lease,
            ttl,
            call_ns,
            return_ns: ret,
            granted_ttl,
            error,
        });
        if granted_ttl.is_none() {
            detcd_node::rt::sleep(Duration::from_millis(100)).await;
            continue;
        }

        // Keys attached to it.
        let prefix = format!("v3/l{id}-{round}-");
        for j in 0..nkeys {
            c.seq += 1;
            let k = format!("{prefix}{j}");
            let value = format!("c{id}-{}", c.seq);
            let req = pb::PutRequest {
                key: k.clone().into_bytes(),
                value: value.clone().into_bytes(),
                lease,
                ..Default::default()
            };
            let member = c.member;
            let invoke_ns = now_ns();
            if let Some(e) = c.call(|mut kv| async move { kv.put(req).await }).await {
                let e = map(e, |p| {
                    h::Response::Put(h::PutResponse {
                        header_revision: rev(&p.header),
                        prev_kv: p.prev_kv.as_ref().map(kv),
                    })
                });
                if let Ended::Ok(r) = &e {
                    last_rev = last_rev.max(r.header_revision());
                }
                let request = h::Request::Put(h::PutRequest {
                    key: k.clone(),
                    value: value.clone(),
                    lease,
                    ..Default::default()
                });
                c.record(&rec, start, member, invoke_ns, request, e, k, Some(value));
            }
        }

        // KeepAlive over one bidi stream, reopened on the next member when it breaks.
        let keep_until = tokio::time::Instant::now() + Duration::from_millis(keep_ms);
        let every = Duration::from_millis(ttl as u64 * 1000 / 3);
        let mut stream: Option<(
            futures::channel::mpsc::UnboundedSender<pb::LeaseKeepAliveRequest>,
            tonic::Streaming<pb::LeaseKeepAliveResponse>,
            usize,
        )> = None;
        let mut gone = false;
        while !gone && tokio::time::Instant::now() < keep_until.min(end) {
            // When this turn opens the stream, its first request is already queued: a gRPC
            // server may send the response headers only with its first answer (etcd's
            // grpc-go does), and the call returns only once they arrive.
            let mut queued = false;
            let mut call_ns = now_ns();
            if stream.is_none() {
                if let Some(ch) = c.conn().await.cloned() {
                    let (tx, rx) = futures::channel::mpsc::unbounded();
                    queued = tx
                        .unbounded_send(pb::LeaseKeepAliveRequest { id: lease })
                        .is_ok();
                    call_ns = now_ns();
                    let mut l = LeaseClient::new(ch);
                    match detcd_node::rt::timeout(c.timeout, l.lease_keep_alive(rx)).await {
                        Ok(Ok(r)) => stream = Some((tx, r.into_inner(), c.member)),
                        _ => {
                            c.conn = None;
                            c.member = (c.member + 1) % c.addrs.len();
                        }
                    }
                }
            }
            if let Some((tx, answers, member)) = stream.as_mut() {
                let sent = queued || {
                    call_ns = now_ns();
                    tx.unbounded_send(pb::LeaseKeepAliveRequest { id: lease })
                        .is_ok()
                };
                let answer = if sent {
                    detcd_node::rt::timeout(c.timeout, answers.message()).await
                } else {
                    Ok(Ok(None))
                };
                match answer {
                    Ok(Ok(Some(r))) => {
                        last_rev = last_rev.max(rev(&r.header));
                        rec.lock().unwrap().v3_keepalives.push(h::LeaseKeepAlive {
                            client: id as u64,
                            member: Some(*member as u64),
                            lease,
                            call_ns,
                            return_ns: now_ns(),
                            ttl: r.ttl,
                        });
                        gone = r.ttl <= 0;
                    }
                    _ => {
                        // Broken or silent: a new stream on the next member.
                        stream = None;
                        c.conn = None;
                        c.member = (c.member + 1) % c.addrs.len();
                        continue;
                    }
                }
            }
            detcd_node::rt::sleep(every).await;
        }
        drop(stream);

        // Revoke it, or let it expire.
        if revoke && !gone {
            let member = c.member;
            let invoke_ns = now_ns();
            let req = pb::LeaseRevokeRequest { id: lease };
            if let Some(e) = c
                .call_ch(|ch| async move { LeaseClient::new(ch).lease_revoke(req).await })
                .await
            {
                let e = map(e, |r| {
                    h::Response::LeaseRevoke(h::LeaseRevokeResponse {
                        header_revision: rev(&r.header),
                    })
                });
                if let Ended::Ok(r) = &e {
                    last_rev = last_rev.max(r.header_revision());
                }
                let request = h::Request::LeaseRevoke(h::LeaseRevokeRequest {
                    id: lease,
                    keys: Vec::new(),
                });
                c.record(
                    &rec,
                    start,
                    member,
                    invoke_ns,
                    request,
                    e,
                    prefix.clone(),
                    None,
                );
            }
        }

        // Read the round's keys back after a pause.
        detcd_node::rt::sleep(Duration::from_millis(pause_ms)).await;
        if tokio::time::Instant::now() >= end {
            break;
        }
        let range = h::RangeRequest {
            key: prefix.clone(),
            range_end: prefix_end(&prefix),
            ..Default::default()
        };
        c.range_op(&rec, start, range, &mut last_rev).await;

        // Now and then: a compaction behind the head, and a read further back.
        if compact && last_rev - compact_back > 1 {
            c.compact_op(&rec, start, last_rev - compact_back).await;
            if last_rev - read_back >= 1 {
                let range = h::RangeRequest {
                    key: ALL_START.into(),
                    range_end: ALL_END.into(),
                    revision: last_rev - read_back,
                    ..Default::default()
                };
                c.range_op(&rec, start, range, &mut last_rev).await;
            }
        }
    }
}

impl Client {
    /// One Compact at `at`, recorded (an unanswered one is left out). Whether it succeeded.
    async fn compact_op(
        &mut self,
        rec: &Mutex<Recorder>,
        start: tokio::time::Instant,
        at: i64,
    ) -> bool {
        let member = self.member;
        let invoke_ns = start.elapsed().as_nanos() as u64;
        let req = pb::CompactionRequest {
            revision: at,
            physical: false,
        };
        let Some(e) = self
            .call(|mut kv| async move { kv.compact(req).await })
            .await
        else {
            return false;
        };
        let e = map(e, |r| {
            h::Response::Compact(h::CompactResponse {
                header_revision: rev(&r.header),
            })
        });
        let ok = matches!(e, Ended::Ok(_));
        let request = h::Request::Compact(h::CompactRequest {
            revision: at,
            physical: false,
        });
        self.record(
            rec,
            start,
            member,
            invoke_ns,
            request,
            e,
            "compact".into(),
            None,
        );
        ok
    }

    /// One Range, recorded (an unanswered read is left out: it had no effect).
    async fn range_op(
        &mut self,
        rec: &Mutex<Recorder>,
        start: tokio::time::Instant,
        r: h::RangeRequest,
        last_rev: &mut i64,
    ) {
        let req = pb::RangeRequest {
            key: r.key.clone().into_bytes(),
            range_end: r.range_end.clone().into_bytes(),
            revision: r.revision,
            serializable: r.serializable,
            ..Default::default()
        };
        let member = self.member;
        let invoke_ns = start.elapsed().as_nanos() as u64;
        if let Some(e) = self.call(|mut kv| async move { kv.range(req).await }).await {
            let e = map(e, |x| h::Response::Range(range_resp(&x)));
            if let Ended::Ok(x) = &e {
                *last_rev = (*last_rev).max(x.header_revision());
            }
            let key = r.key.clone();
            self.record(
                rec,
                start,
                member,
                invoke_ns,
                h::Request::Range(r),
                e,
                key,
                None,
            );
        }
    }
}
