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
use tonic::{Request, Response, Status};

use super::Ctx;
use crate::mvcc::{self, V3Error, WriteReq, WriteResp};
use crate::raft::WaitError;
use crate::sm::{Op, Outcome, V3Write};

/// The v3 services of one member.
#[derive(Clone)]
pub struct V3 {
    ctx: Arc<Ctx>,
}

/// etcd's message when a request did not complete in time.
pub const REQUEST_TIMED_OUT: &str = "etcdserver: request timed out";
/// etcd's message when the member is stopping.
pub const SERVER_STOPPED: &str = "etcdserver: server stopped";

fn status(e: V3Error) -> Status {
    Status::new(e.code(), e.message())
}

fn wait_status(e: WaitError) -> Status {
    match e {
        WaitError::Timeout => Status::unavailable(REQUEST_TIMED_OUT),
        WaitError::Stopped => Status::unavailable(SERVER_STOPPED),
    }
}

impl V3 {
    /// The services of the member behind `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> V3 {
        V3 { ctx }
    }

    /// The header every response carries: cluster, member, the keyspace's revision, term.
    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        let shared = &self.ctx.shared;
        Some(pb::ResponseHeader {
            cluster_id: shared.cluster_id(),
            member_id: shared.id,
            revision,
            raft_term: shared.status().term,
        })
    }

    /// Wait until this member has applied everything committed when the read began.
    async fn linearize(&self) -> Result<(), Status> {
        self.ctx
            .shared
            .read_barrier(self.ctx.request_timeout, self.ctx.read_retry)
            .await
            .map_err(wait_status)
    }

    /// Propose a checked write and wait for what applying it produced.
    async fn write(&self, req: WriteReq) -> Result<WriteResp, Status> {
        let w = V3Write::encode(&req);
        if w.len() > self.ctx.max_request_bytes {
            return Err(status(V3Error::RequestTooLarge));
        }
        let applied = self
            .ctx
            .shared
            .propose(Op::V3(w), self.ctx.request_timeout)
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

#[tonic::async_trait]
impl Kv for V3 {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let r = req.into_inner();
        mvcc::check_range(&r).map_err(status)?;
        if !r.serializable {
            self.linearize().await?;
        }
        let mut resp = self
            .ctx
            .shared
            .mvcc
            .lock()
            .expect("mvcc lock")
            .range(&r)
            .map_err(status)?;
        resp.header = self.header(resp.header.as_ref().map_or(0, |h| h.revision));
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let r = req.into_inner();
        mvcc::check_put(&r).map_err(status)?;
        match self.write(WriteReq::Put(r)).await? {
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
        let r = req.into_inner();
        mvcc::check_delete(&r).map_err(status)?;
        match self.write(WriteReq::DeleteRange(r)).await? {
            WriteResp::DeleteRange(mut d) => {
                d.header = self.header(d.header.as_ref().map_or(0, |h| h.revision));
                Ok(Response::new(d))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let r = req.into_inner();
        mvcc::check_txn(&r, self.ctx.max_txn_ops).map_err(status)?;
        let mut t = if txn_is_read_only(&r) {
            if !txn_is_serializable(&r) {
                self.linearize().await?;
            }
            self.ctx
                .shared
                .mvcc
                .lock()
                .expect("mvcc lock")
                .txn_read(&r)
                .map_err(status)?
        } else {
            match self.write(WriteReq::Txn(r)).await? {
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
        let r = req.into_inner();
        match self.write(WriteReq::Compaction(r)).await? {
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
