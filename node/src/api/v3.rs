//! etcd's v3 KV service over gRPC: the generated `Kv` server trait implemented on the node.
//!
//! Writes (Put, DeleteRange, a Txn that writes, Compact) are checked here as etcd's gRPC
//! layer checks them (`v3rpc/key.go`), proposed through Raft as [`crate::sm::Op::V3`], and
//! answered with what applying them produced on this member. Reads (Range, a read-only Txn)
//! pass the same ReadIndex barrier as v2 quorum reads unless they ask to be serializable,
//! then read this member's keyspace. Every error carries etcd's gRPC code and exact message.

use std::sync::Arc;

use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::kv_server::Kv;
use detcd_proto::etcdserverpb::lease_server::Lease;
use tonic::{Request, Response, Status};

use super::v3auth::{auth_status, on_behalf};
use super::Ctx;
use crate::mvcc::{self, AuthInfo, Caller, V3Error, WriteReq, WriteResp};
use crate::raft::WaitError;
use crate::sm::{LeaseOp, Op, Outcome, V3Write};
use crate::transport::{LeaseAnswer, LeaseFwd};

/// The v3 services of one member.
#[derive(Clone)]
pub struct V3 {
    pub(super) ctx: Arc<Ctx>,
    /// For the JSON gateway: its request's `Authorization` header (the gateway's metadata);
    /// `None` for a gRPC call, whose credentials are its own metadata and TLS certificate.
    pub(super) gateway: Option<Option<String>>,
}

/// etcd's message when a request did not complete in time.
pub const REQUEST_TIMED_OUT: &str = "etcdserver: request timed out";
/// etcd's message when the member is stopping.
pub const SERVER_STOPPED: &str = "etcdserver: server stopped";

pub(super) fn status(e: V3Error) -> Status {
    Status::new(e.code(), e.message())
}

pub(super) fn wait_status(e: WaitError) -> Status {
    match e {
        WaitError::Timeout => Status::unavailable(REQUEST_TIMED_OUT),
        WaitError::Stopped => Status::unavailable(SERVER_STOPPED),
    }
}

impl V3 {
    /// The services of the member behind `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> V3 {
        V3 { ctx, gateway: None }
    }

    /// The services as the JSON gateway calls them, with the request's `Authorization`
    /// header as its token (etcd's gateway forwards it as gRPC metadata and never a TLS
    /// certificate's name).
    pub fn for_gateway(ctx: Arc<Ctx>, authorization: Option<String>) -> V3 {
        V3 {
            ctx,
            gateway: Some(authorization),
        }
    }

    /// The header every response carries: cluster, member, the keyspace's revision, term.
    pub(super) fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        let shared = &self.ctx.shared;
        Some(pb::ResponseHeader {
            cluster_id: shared.cluster_id(),
            member_id: shared.id,
            revision,
            raft_term: shared.status().term,
        })
    }

    /// Wait until this member has applied everything committed when the read began.
    pub(super) async fn linearize(&self) -> Result<(), Status> {
        self.ctx
            .shared
            .read_barrier(self.ctx.request_timeout, self.ctx.read_retry)
            .await
            .map_err(wait_status)
    }

    /// Propose a checked write on behalf of `ai` and wait for what applying it produced.
    async fn write(&self, ai: Option<AuthInfo>, req: WriteReq) -> Result<WriteResp, Status> {
        let w = V3Write::encode(&req);
        if w.len() > self.ctx.max_request_bytes {
            return Err(status(V3Error::RequestTooLarge));
        }
        let applied = self
            .ctx
            .shared
            .propose(on_behalf(ai, Op::V3(w)), self.ctx.request_timeout)
            .await
            .map_err(wait_status)?;
        match applied.outcome {
            Outcome::V3(r) => r.map_err(status),
            other => Err(Status::internal(format!(
                "etcdserver: unexpected outcome of a v3 write: {other:?}"
            ))),
        }
    }

    fn fill_txn_headers(&self, t: &mut pb::TxnResponse) {
        t.header = self.header(t.header.as_ref().map_or(0, |h| h.revision));
    }
}

/// Whether every operation of a txn (both branches, nested txns too) only reads.
fn txn_is_read_only(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as R;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(R::RequestRange(_)) | None => true,
            Some(R::RequestTxn(t)) => txn_is_read_only(t),
            Some(R::RequestPut(_)) | Some(R::RequestDeleteRange(_)) => false,
        })
}

/// Whether every range of a read-only txn is serializable (etcd then reads locally).
fn txn_is_serializable(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as R;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(R::RequestRange(r)) => r.serializable,
            Some(R::RequestTxn(t)) => txn_is_serializable(t),
            _ => true,
        })
}

/// The interceptor checks of a Range on a learner (see `api::intercepted`), in etcd's order:
/// a learner serves serializable reads only (`isRPCSupportedForLearner`), then a client that
/// asked for a leader is refused while there is none.
pub(super) fn learner_and_leader_check(
    ctx: &Ctx,
    req: &Request<pb::RangeRequest>,
) -> Result<(), Status> {
    let st = ctx.shared.status();
    if !st.is_learner {
        return Ok(());
    }
    if !req.get_ref().serializable {
        return Err(Status::unavailable(super::NOT_FOR_LEARNER));
    }
    if st.leader == 0 && super::watch::requires_leader(req) {
        return Err(Status::unavailable(super::watch::NO_LEADER));
    }
    Ok(())
}

#[tonic::async_trait]
impl Kv for V3 {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        learner_and_leader_check(&self.ctx, &req)?;
        mvcc::check_range(req.get_ref()).map_err(status)?;
        if !req.get_ref().serializable {
            self.linearize().await?;
        }
        let ai = self.auth_info(&req).await?;
        let r = req.into_inner();
        let mut resp = {
            let m = self.ctx.shared.mvcc.lock().expect("mvcc lock");
            m.auth_check_range(ai.as_ref(), &r.key, &r.range_end)
                .map_err(auth_status)?;
            m.range(&r).map_err(status)?
        };
        resp.header = self.header(resp.header.as_ref().map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        // etcd's quota interceptor runs before the request's checks.
        super::v3maint::check_quota(&self.ctx, mvcc::Costed::Put(req.get_ref())).await?;
        mvcc::check_put(req.get_ref()).map_err(status)?;
        let ai = self.auth_info(&req).await?;
        match self.write(ai, WriteReq::Put(req.into_inner())).await? {
            WriteResp::Put(mut p) => {
                p.header = self.header(p.header.as_ref().map_or(0, |h| h.revision));
                Ok(Response::new(p))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        mvcc::check_delete(req.get_ref()).map_err(status)?;
        let ai = self.auth_info(&req).await?;
        match self
            .write(ai, WriteReq::DeleteRange(req.into_inner()))
            .await?
        {
            WriteResp::DeleteRange(mut d) => {
                d.header = self.header(d.header.as_ref().map_or(0, |h| h.revision));
                Ok(Response::new(d))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        // etcd's quota interceptor runs before the request's checks.
        super::v3maint::check_quota(&self.ctx, mvcc::Costed::Txn(req.get_ref())).await?;
        mvcc::check_txn(req.get_ref(), self.ctx.max_txn_ops).map_err(status)?;
        let read_only = txn_is_read_only(req.get_ref());
        if read_only && !txn_is_serializable(req.get_ref()) {
            self.linearize().await?;
        }
        let ai = self.auth_info(&req).await?;
        let r = req.into_inner();
        let mut t = if read_only {
            let m = self.ctx.shared.mvcc.lock().expect("mvcc lock");
            m.auth_check_txn(Caller::Client(ai.as_ref()), &r)
                .map_err(auth_status)?;
            m.txn_read(&r).map_err(status)?
        } else {
            match self.write(ai, WriteReq::Txn(r)).await? {
                WriteResp::Txn(t) => t,
                other => return Err(unexpected(&other)),
            }
        };
        self.fill_txn_headers(&mut t);
        Ok(Response::new(t))
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let ai = self.auth_info(&req).await?;
        match self
            .write(ai, WriteReq::Compaction(req.into_inner()))
            .await?
        {
            WriteResp::Compaction(mut c) => {
                c.header = self.header(c.header.as_ref().map_or(0, |h| h.revision));
                Ok(Response::new(c))
            }
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(r: &WriteResp) -> Status {
    Status::internal(format!(
        "etcdserver: unexpected response to a v3 write: {r:?}"
    ))
}

// ---------------------------------------------------------------------------------------------
// The Lease service (etcd 3.4 `v3rpc/lease.go`, `etcdserver/v3_server.go`).

/// The leader's answer to a lease question about deadlines: KeepAlive renews, TimeToLive
/// reads. `not_leader` when this member's lessor is not primary.
pub fn answer_lease(ctx: &Arc<Ctx>, req: &LeaseFwd) -> LeaseAnswer {
    let st = ctx.shared.status();
    if !st.is_leader {
        return LeaseAnswer {
            not_leader: true,
            ..Default::default()
        };
    }
    // The keyspace stays locked while the lessor is asked (the apply's order: keyspace, then
    // lessor), so a revocation cannot apply between reading the lease and renewing it, which
    // would renew a lease that is gone.
    let m = ctx.shared.mvcc.lock().expect("mvcc lock");
    let keys = if req.keys {
        m.lease_keys(req.id)
    } else {
        Vec::new()
    };
    let ttl = m.lease_ttl(req.id);
    let now = ctx.shared.clock.now();
    let mut l = ctx.shared.lessor.lock().expect("lessor lock");
    if !l.is_primary_in(st.term) {
        // Just elected, and this term's no-op has not applied yet: etcd's lessor is not
        // primary before it (`ErrNotPrimary`) and the request is asked again.
        return LeaseAnswer {
            not_leader: true,
            ..Default::default()
        };
    }
    match ttl {
        None if req.keep_alive => LeaseAnswer::default(),
        None => LeaseAnswer {
            ttl: -1,
            ..Default::default()
        },
        Some(ttl) if req.keep_alive => match l.renew(req.id, ttl, now) {
            Some(ttl) => LeaseAnswer {
                ttl,
                ..Default::default()
            },
            None => LeaseAnswer {
                revoking: true,
                ..Default::default()
            },
        },
        Some(ttl) => LeaseAnswer {
            ttl: l.remaining(req.id, ttl, now),
            granted_ttl: ttl,
            keys,
            ..Default::default()
        },
    }
}

/// How often a KeepAlive on an expired lease asks again whether its revocation applied.
const REVOKING_POLL: std::time::Duration = std::time::Duration::from_millis(50);

impl V3 {
    /// Ask the leader's lessor (this member's, or the leader's over the peer port), retrying
    /// while there is no leader, until the request timeout. A KeepAlive on a lease that
    /// expired is answered once its revocation has applied on the leader (TTL 0: by then its
    /// keys are deleted there), as etcd's `Renew` waits on the lease's `revokec`; should the
    /// leader change meanwhile, the new leader is asked (it renews the lease if the
    /// revocation was lost with the old one).
    async fn on_leader(&self, req: LeaseFwd) -> Result<LeaseAnswer, Status> {
        let mut deadline = self.ctx.shared.clock.now() + self.ctx.request_timeout;
        loop {
            let st = self.ctx.shared.status();
            let answer = if st.is_leader {
                Some(answer_lease(&self.ctx, &req))
            } else if st.leader != 0 {
                match self
                    .ctx
                    .transport
                    .forward_lease(st.leader, req.clone())
                    .await
                {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::debug!(error = %e, "forwarding a lease request to the leader failed");
                        None
                    }
                }
            } else {
                None
            };
            let mut pause = std::time::Duration::from_millis(100);
            match answer {
                Some(a) if a.revoking => {
                    pause = REVOKING_POLL;
                    if st.is_leader {
                        // etcd's `Renew` on the leader waits for the revocation with no
                        // limit, and after a demotion `LeaseRenew` forwards with a fresh
                        // request timeout: while this member's own lessor says
                        // "revoking", the deadline moves on.
                        deadline = self.ctx.shared.clock.now() + self.ctx.request_timeout;
                    }
                }
                Some(a) if !a.not_leader => return Ok(a),
                _ => {}
            }
            if self.ctx.shared.clock.now() >= deadline {
                // etcd's `waitLeader` gives up with "no leader" when none was known; a leader
                // known but not answering in time is a timeout (`LeaseRenew`,
                // `LeaseTimeToLive`).
                return Err(Status::unavailable(if st.leader == 0 {
                    super::watch::NO_LEADER
                } else {
                    REQUEST_TIMED_OUT
                }));
            }
            crate::rt::sleep(pause).await;
        }
    }

    async fn keep_alive_one(
        &self,
        r: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let a = self
            .on_leader(LeaseFwd {
                keep_alive: true,
                id: r.id,
                keys: false,
            })
            .await?;
        Ok(pb::LeaseKeepAliveResponse {
            header: self.header(self.revision()),
            id: r.id,
            ttl: a.ttl,
        })
    }

    pub(super) fn revision(&self) -> i64 {
        self.ctx.shared.mvcc.lock().expect("mvcc lock").revision()
    }

    /// The KeepAlive stream's answers, one per request, in order (used by the gateway too).
    pub fn keep_alive_stream<S>(
        &self,
        requests: S,
    ) -> impl futures::Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static
    where
        S: futures::Stream<Item = Result<pb::LeaseKeepAliveRequest, Status>>
            + Send
            + Unpin
            + 'static,
    {
        use futures::StreamExt;
        let me = self.clone();
        futures::stream::unfold(
            (requests, me, false),
            |(mut requests, me, done)| async move {
                if done {
                    return None;
                }
                match requests.next().await {
                    None => None,
                    Some(Err(e)) => Some((Err(e), (requests, me, true))),
                    Some(Ok(r)) => {
                        let out = me.keep_alive_one(r).await;
                        let done = out.is_err();
                        Some((out, (requests, me, done)))
                    }
                }
            },
        )
    }
}

type KeepAliveStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl Lease for V3 {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        // etcd's quota interceptor runs before the Lease service reads the token.
        super::v3maint::check_quota(&self.ctx, mvcc::Costed::LeaseGrant).await?;
        let ai = self.auth_info(&req).await?;
        let r = req.into_inner();
        // ID 0: the server picks a positive 63-bit ID (etcd: its request ID generator; here
        // the member's seeded rng).
        let mut id = r.id;
        while id == 0 {
            id = (self.ctx.shared.rng.next_u64() & (u64::MAX >> 1)) as i64;
        }
        let op = Op::Lease(LeaseOp::Grant {
            id,
            ttl: r.ttl,
            min_ttl: self.ctx.min_lease_ttl,
        });
        let applied = self
            .ctx
            .shared
            .propose(on_behalf(ai, op), self.ctx.request_timeout)
            .await
            .map_err(wait_status)?;
        match applied.outcome {
            // The lessor learnt of the grant when it applied (see `raft::ready`).
            Outcome::LeaseGrant(Ok(g)) => Ok(Response::new(pb::LeaseGrantResponse {
                header: self.header(self.revision()),
                id: g.id,
                ttl: g.ttl,
                error: String::new(),
            })),
            Outcome::LeaseGrant(Err(e)) => Err(status(e)),
            other => Err(Status::internal(format!(
                "etcdserver: unexpected outcome of a lease grant: {other:?}"
            ))),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let ai = self.auth_info(&req).await?;
        let r = req.into_inner();
        let op = on_behalf(ai, Op::Lease(LeaseOp::Revoke { id: r.id }));
        let applied = self
            .ctx
            .shared
            .propose(op, self.ctx.request_timeout)
            .await
            .map_err(wait_status)?;
        match applied.outcome {
            Outcome::LeaseRevoke(Ok(rev)) => Ok(Response::new(pb::LeaseRevokeResponse {
                header: self.header(rev),
            })),
            Outcome::LeaseRevoke(Err(e)) => Err(status(e)),
            other => Err(Status::internal(format!(
                "etcdserver: unexpected outcome of a lease revoke: {other:?}"
            ))),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<tonic::Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        // A stream asking for a leader on a member without one was refused before it got
        // here (`api::intercepted`, etcd's stream interceptor).
        let inbound = req.into_inner();
        Ok(Response::new(Box::pin(self.keep_alive_stream(inbound))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let a = self
            .on_leader(LeaseFwd {
                keep_alive: false,
                id: r.id,
                keys: r.keys,
            })
            .await?;
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: self.header(self.revision()),
            id: r.id,
            ttl: a.ttl,
            granted_ttl: a.granted_ttl,
            keys: a.keys,
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let (mut ids, rev) = {
            let m = self.ctx.shared.mvcc.lock().expect("mvcc lock");
            let ids: Vec<i64> = m.leases().into_iter().map(|(id, _)| id).collect();
            (ids, m.revision())
        };
        // The leader lists them soonest expiry first, as etcd's `Leases()` does.
        (self.ctx.shared.lessor.lock().expect("lessor lock")).by_expiry(&mut ids);
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.header(rev),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}
