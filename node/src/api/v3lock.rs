//! etcd 3.4's Lock service (`v3lockpb.Lock`, etcd's `v3lock`): clientv3's concurrency mutex run
//! on the member, through this member's own KV and Lease services with the caller's
//! credentials, as etcd runs it through its in-process client.
//!
//! - `Lock(name, lease)`: with lease 0 a lease of [`SESSION_TTL`] seconds is granted first (and
//!   never kept alive: etcd orphans that session at once). The lock's key is `name/<lease in
//!   hex>`, created with the lease if absent (one txn that also reads the prefix's oldest key).
//!   The caller holds the lock when its key is the prefix's oldest (lowest create revision);
//!   until then the call waits for every older key to be deleted, the newest of them first
//!   (etcd's `waitDeletes`, watching each for its delete event from the watch hub). The answer's header is that of the txn that found it the owner, or of the
//!   last read that found no older key. A call that fails or is abandoned while waiting deletes
//!   its key (etcd's `Mutex.Lock` unlocks on a failed wait).
//! - `Unlock(key)`: deletes the key.
//!
//! Errors reach the client as etcd's do through its in-process client: code Unknown with the
//! underlying message (`etcdserver: requested lease not found`, `etcdserver: key is not
//! provided`, ...), HTTP 500 through the gateway.

use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::kv_server::Kv;
use detcd_proto::etcdserverpb::lease_server::Lease;
use detcd_proto::mvccpb;
use detcd_proto::v3lockpb as lpb;
use detcd_proto::v3lockpb::lock_server::Lock;
use tonic::{Request, Response, Status};

use super::v3::{SERVER_STOPPED, V3};
use super::ClientCommonName;
use crate::mvcc::V3Error;
use crate::watch::Fetched;

/// The TTL of the lease a Lock without one gets (clientv3 concurrency's `defaultSessionTTL`).
pub const SESSION_TTL: i64 = 60;

/// A service error as etcd's Lock service answers it: its in-process client hands the
/// service a plain error, which gRPC sends as Unknown.
pub(super) fn unknown(st: Status) -> Status {
    Status::unknown(st.message().to_string())
}

/// A lease id as Go's `%x` prints an `int64` (a sign, then the magnitude's hex digits).
pub(super) fn go_hex(v: i64) -> String {
    if v < 0 {
        format!("-{:x}", v.unsigned_abs())
    } else {
        format!("{v:x}")
    }
}

/// The end of the range of every key starting with `prefix` (clientv3's `GetPrefixRangeEnd`).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The oldest (`Ascend`) or newest (`Descend`) key under `pfx` by create revision, at most
/// `max_create` (0: any): clientv3's `WithFirstCreate` / `WithLastCreate`.
pub(super) fn first_or_last_create(
    pfx: &[u8],
    order: pb::range_request::SortOrder,
    max_create: i64,
) -> pb::RangeRequest {
    pb::RangeRequest {
        key: pfx.to_vec(),
        range_end: prefix_end(pfx),
        limit: 1,
        sort_order: order as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        max_create_revision: max_create,
        ..Default::default()
    }
}

pub(super) fn range_op(r: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(r)),
    }
}

/// The caller's credentials, for the calls the service makes on its behalf: its gRPC metadata
/// (a token) and its TLS certificate's name (the gateway's token travels in [`V3`] itself).
#[derive(Clone, Default)]
pub(super) struct Caller {
    metadata: tonic::metadata::MetadataMap,
    cn: Option<String>,
}

impl Caller {
    pub(super) fn of<T>(req: &Request<T>) -> Caller {
        Caller {
            metadata: req.metadata().clone(),
            cn: req
                .extensions()
                .get::<ClientCommonName>()
                .map(|c| c.0.clone()),
        }
    }

    pub(super) fn req<M>(&self, msg: M) -> Request<M> {
        let mut r = Request::new(msg);
        *r.metadata_mut() = self.metadata.clone();
        if let Some(cn) = &self.cn {
            r.extensions_mut().insert(ClientCommonName(cn.clone()));
        }
        r
    }
}

/// Undoes a waiting call's key unless disarmed (`undo` is set to `None`): a Lock call that
/// fails or whose client goes away while it waits, and a Campaign whose client goes away, leave
/// no key behind to block the callers queued after them (etcd's `Mutex.Lock` unlocks,
/// `Election.Campaign` resigns). The undo is made with the caller's credentials; etcd makes it
/// with none, which auth refuses, leaving the key until its lease ends.
pub(super) struct Unqueue {
    pub(super) v3: V3,
    pub(super) caller: Caller,
    /// The txn that removes the key.
    pub(super) undo: Option<pb::TxnRequest>,
}

impl Drop for Unqueue {
    fn drop(&mut self) {
        let Some(txn) = self.undo.take() else {
            return;
        };
        let (v3, req) = (self.v3.clone(), self.caller.req(txn));
        crate::rt::spawn(async move {
            if let Err(e) = v3.txn(req).await {
                tracing::info!(error = %e.message(), "could not remove an abandoned waiter's key");
            }
        });
    }
}

/// A txn of one delete of `key`, if `compare` holds.
pub(super) fn delete_txn(key: Vec<u8>, compare: Vec<pb::Compare>) -> pb::TxnRequest {
    pb::TxnRequest {
        compare,
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(delete_req(key))),
        }],
        failure: vec![],
    }
}

/// `key`'s create revision is `rev` (0: the key does not exist).
pub(super) fn created_at(key: &[u8], rev: i64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(pb::compare::TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

fn delete_req(key: Vec<u8>) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest {
        key,
        ..Default::default()
    }
}

/// The prefix of a lock's or an election's keys: its name and `/` (clientv3's concurrency).
pub(super) fn prefix_of(name: &[u8]) -> Vec<u8> {
    [name, b"/"].concat()
}

pub(super) fn put_op(key: Vec<u8>, value: Vec<u8>, lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key,
            value,
            lease,
            ..Default::default()
        })),
    }
}

impl V3 {
    /// The lease of a Lock's or an election call's session: `lease`, or a new one of
    /// [`SESSION_TTL`] seconds when it is 0 (clientv3's `NewSession`).
    pub(super) async fn session(&self, caller: &Caller, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = pb::LeaseGrantRequest {
            ttl: SESSION_TTL,
            id: 0,
        };
        Ok(self.lease_grant(caller.req(grant)).await?.into_inner().id)
    }

    /// Wait until no key under `pfx` created at or before `max_create` is left (etcd's
    /// `waitDeletes`): find the newest such key (a linearizable read), wait for its deletion,
    /// again. Returns the header of the read that found none.
    pub(super) async fn wait_deletes(
        &self,
        caller: &Caller,
        pfx: &[u8],
        max_create: i64,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        let newest = first_or_last_create(pfx, pb::range_request::SortOrder::Descend, max_create);
        loop {
            let r = self.range(caller.req(newest.clone())).await?.into_inner();
            let rev = r.header.as_ref().map_or(0, |h| h.revision);
            let Some(kv) = r.kvs.into_iter().next() else {
                return Ok(r.header);
            };
            self.wait_delete(kv.key, rev).await?;
        }
    }

    /// Wait for the delete event of `key` from revision `from` on (etcd's `waitDelete`, a watch
    /// of the key from the revision of the read that found it).
    async fn wait_delete(&self, key: Vec<u8>, from: i64) -> Result<(), Status> {
        let hub = std::sync::Arc::clone(&self.ctx.shared.watch_hub);
        let _watching = hub.register();
        let keys = Keys::One(key);
        let mut from = from;
        loop {
            let Some((evs, next)) = self.events_from(from, &keys).await? else {
                // etcd's watch is canceled, and its waitDelete fails with the watch's error.
                return Err(Status::out_of_range(V3Error::Compacted.message()));
            };
            if evs
                .iter()
                .any(|ev| ev.r#type == mvccpb::event::EventType::Delete as i32)
            {
                return Ok(());
            }
            from = next;
        }
    }

    /// The events on `keys` of revisions from `from` on, waiting until there is at least one:
    /// (the events, the next revision to ask for); `None` when `from` was compacted. The
    /// caller holds a [`crate::watch::WatcherGuard`] meanwhile, so the hub keeps the applied
    /// events in memory instead of each wait reading them back from the keyspace.
    pub(super) async fn events_from(
        &self,
        mut from: i64,
        keys: &Keys,
    ) -> Result<Option<(Vec<mvccpb::Event>, i64)>, Status> {
        let shared = std::sync::Arc::clone(&self.ctx.shared);
        let hub = &shared.watch_hub;
        let mut published = hub.subscribe();
        loop {
            let rev = hub.revision();
            if rev >= from {
                match hub.fetch(from, rev, super::watch::BATCH_REVISIONS, |f, t| {
                    super::watch::history(&shared, f, t)
                }) {
                    Fetched::Compacted(_) => return Ok(None),
                    Fetched::Failed(e) => return Err(Status::internal(e)),
                    Fetched::Events { revs, upto } => {
                        from = upto + 1;
                        let mine: Vec<mvccpb::Event> = revs
                            .iter()
                            .flat_map(|(_, evs)| evs.iter())
                            .filter(|ev| ev.kv.as_ref().is_some_and(|kv| keys.contains(&kv.key)))
                            .cloned()
                            .collect();
                        if !mine.is_empty() {
                            return Ok(Some((mine, from)));
                        }
                        continue;
                    }
                }
            }
            if published.changed().await.is_err() {
                return Err(Status::unavailable(SERVER_STOPPED));
            }
        }
    }
}

/// The keys a wait follows.
pub(super) enum Keys {
    /// Every key under a prefix: `[start, end)`.
    Prefix(Vec<u8>, Vec<u8>),
    /// One key.
    One(Vec<u8>),
}

impl Keys {
    fn contains(&self, k: &[u8]) -> bool {
        match self {
            Keys::Prefix(start, end) => k >= start.as_slice() && k < end.as_slice(),
            Keys::One(key) => k == key.as_slice(),
        }
    }
}

#[tonic::async_trait]
impl Lock for V3 {
    async fn lock(
        &self,
        req: Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        let caller = Caller::of(&req);
        let lpb::LockRequest { name, lease } = req.into_inner();
        let lease = self.session(&caller, lease).await.map_err(unknown)?;
        let pfx = prefix_of(&name);
        let key = [pfx.as_slice(), go_hex(lease).as_bytes()].concat();
        let owner = first_or_last_create(&pfx, pb::range_request::SortOrder::Ascend, 0);
        let txn = pb::TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(key.clone(), vec![], lease), range_op(owner.clone())],
            failure: vec![
                range_op(pb::RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                }),
                range_op(owner),
            ],
        };
        let t = self
            .txn(caller.req(txn))
            .await
            .map_err(unknown)?
            .into_inner();
        let ranges: Vec<pb::RangeResponse> = t
            .responses
            .into_iter()
            .map(|op| match op.response {
                Some(pb::response_op::Response::ResponseRange(r)) => r,
                _ => pb::RangeResponse::default(),
            })
            .collect();
        let mine = if t.succeeded {
            t.header.as_ref().map_or(0, |h| h.revision)
        } else {
            // The key exists: this lease queued (or holds) it already.
            ranges
                .first()
                .and_then(|r| r.kvs.first())
                .map_or(0, |kv| kv.create_revision)
        };
        let oldest = ranges.get(1).and_then(|r| r.kvs.first());
        if oldest.is_none_or(|kv| kv.create_revision == mine) {
            return Ok(Response::new(lpb::LockResponse {
                header: t.header,
                key,
            }));
        }
        let mut unqueue = Unqueue {
            v3: self.clone(),
            caller: caller.clone(),
            undo: Some(delete_txn(key.clone(), vec![])),
        };
        let header = self
            .wait_deletes(&caller, &pfx, mine - 1)
            .await
            .map_err(unknown)?;
        unqueue.undo = None;
        Ok(Response::new(lpb::LockResponse { header, key }))
    }

    async fn unlock(
        &self,
        req: Request<lpb::UnlockRequest>,
    ) -> Result<Response<lpb::UnlockResponse>, Status> {
        let caller = Caller::of(&req);
        let key = req.into_inner().key;
        let d = self
            .delete_range(caller.req(delete_req(key)))
            .await
            .map_err(unknown)?
            .into_inner();
        Ok(Response::new(lpb::UnlockResponse { header: d.header }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_print_as_go_prints_them() {
        assert_eq!(go_hex(0x2040a252fd856705), "2040a252fd856705");
        assert_eq!(go_hex(4096), "1000");
        assert_eq!(go_hex(-1), "-1");
        assert_eq!(go_hex(i64::MIN), "-8000000000000000");
    }

    #[test]
    fn prefix_ends_as_clientv3_computes_them() {
        assert_eq!(prefix_end(b"lock/"), b"lock0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b"/"), b"0".to_vec());
    }
}
