//! etcd 3.4's Election service (`v3electionpb.Election`, etcd's `v3election`): clientv3's
//! concurrency election run on the member, through this member's own KV and Lease services
//! with the caller's credentials, as etcd runs it through its in-process client.
//!
//! A candidate's key is `name/<lease in hex>`; the leader is the key under `name/` with the
//! lowest create revision, its value the leader's proclamation.
//! - `Campaign(name, lease, value)`: with lease 0 a lease of [`super::v3lock::SESSION_TTL`] seconds is granted
//!   first. One txn creates the key with the value (or, when this lease campaigned before, reads
//!   it and proclaims the new value if it differs); the call then waits until every older key
//!   under `name/` is deleted and answers the txn's header and the leader key (name, key, create
//!   revision, lease). A call abandoned while waiting resigns (deletes its key if it still has
//!   that create revision).
//! - `Proclaim(leader, value)`: puts the value if the leader key still has its create revision,
//!   else `election: not leader`. `Resign(leader)`: deletes the key on the same condition (no
//!   error otherwise). Both, like etcd, first grant a lease when the leader key names lease 0,
//!   and Proclaim puts the value with that lease.
//! - `Leader(name)`: the oldest key under `name/`, else `election: no leader`.
//! - `Observe(name)`: a stream of the leader's key-value: the current leader (or the first key
//!   put under `name/` when there is none), then each new value of that key, then after its
//!   deletion the next leader, for as long as the client stays; the stream ends without error
//!   when a read fails or the history it needs was compacted, as etcd's.
//!
//! Errors reach the client as etcd's do through its in-process client: code Unknown with the
//! message (`election: no leader`, `"leader" field must be provided`, ...), HTTP 500 through
//! the gateway.

use std::collections::VecDeque;

use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::kv_server::Kv;
use detcd_proto::mvccpb;
use detcd_proto::v3electionpb as epb;
use detcd_proto::v3electionpb::election_server::Election;
use tonic::{Request, Response, Status};

use super::v3::V3;
use super::v3lock::{
    created_at, delete_txn, first_or_last_create, go_hex, prefix_end, prefix_of, put_op, range_op,
    unknown, Caller, Keys, Unqueue,
};
use crate::watch::WatcherGuard;

/// etcd's `ErrElectionNoLeader`.
pub const NO_LEADER: &str = "election: no leader";
/// etcd's `ErrElectionNotLeader`.
pub const NOT_LEADER: &str = "election: not leader";
/// etcd's `ErrMissingLeaderKey`.
pub const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

/// The answers of an Observe stream.
pub type ObserveStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<epb::LeaderResponse, Status>> + Send + 'static>,
>;

impl V3 {
    /// Put `value` on `key` with `lease` if the key still has create revision `rev`: the txn's
    /// header, or `election: not leader`.
    async fn proclaim_as(
        &self,
        caller: &Caller,
        key: &[u8],
        rev: i64,
        lease: i64,
        value: Vec<u8>,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        let txn = pb::TxnRequest {
            compare: vec![created_at(key, rev)],
            success: vec![put_op(key.to_vec(), value, lease)],
            failure: vec![],
        };
        let t = self.txn(caller.req(txn)).await?.into_inner();
        if !t.succeeded {
            return Err(Status::unknown(NOT_LEADER));
        }
        Ok(t.header)
    }
}

/// Where an Observe stream is.
enum Phase {
    /// Find the leader (or wait for the first key under the prefix).
    Find,
    /// Follow the leader's key from a revision on.
    Follow(Vec<u8>, i64),
    /// The stream has ended.
    Done,
}

/// An Observe stream's state (see the module documentation).
struct Observer {
    v3: V3,
    /// Keeps the hub holding applied events in memory while the stream lives.
    _watching: WatcherGuard,
    caller: Caller,
    pfx: Vec<u8>,
    phase: Phase,
    ready: VecDeque<epb::LeaderResponse>,
}

impl Observer {
    /// The next answer, or `None` when the stream ends.
    async fn next(&mut self) -> Option<epb::LeaderResponse> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::Find => {
                    let oldest =
                        first_or_last_create(&self.pfx, pb::range_request::SortOrder::Ascend, 0);
                    let r = self
                        .v3
                        .range(self.caller.req(oldest))
                        .await
                        .ok()?
                        .into_inner();
                    let header_rev = r.header.as_ref().map_or(0, |h| h.revision);
                    let (header, kv) = match r.kvs.into_iter().next() {
                        Some(kv) => (r.header, kv),
                        None => self.first_put(header_rev).await?,
                    };
                    let rev = header.as_ref().map_or(0, |h| h.revision);
                    self.phase = Phase::Follow(kv.key.clone(), rev + 1);
                    self.ready.push_back(epb::LeaderResponse {
                        header,
                        kv: Some(kv),
                    });
                }
                Phase::Follow(key, from) => {
                    let (evs, next) = self
                        .v3
                        .events_from(from, &Keys::One(key.clone()))
                        .await
                        .ok()??;
                    self.phase = Phase::Follow(key, next);
                    for ev in evs {
                        if ev.r#type == mvccpb::event::EventType::Delete as i32 {
                            // The leader resigned or its lease ended: find the next.
                            self.phase = Phase::Find;
                            break;
                        }
                        let kv = ev.kv.expect("an event has its key-value");
                        self.ready.push_back(epb::LeaderResponse {
                            header: self.v3.header(kv.mod_revision),
                            kv: Some(kv),
                        });
                    }
                }
            }
        }
    }

    /// The first key put under the prefix from revision `from` on (there was none at `from`):
    /// its header names the put's revision, as etcd's Observe does.
    async fn first_put(
        &self,
        mut from: i64,
    ) -> Option<(Option<pb::ResponseHeader>, mvccpb::KeyValue)> {
        let keys = Keys::Prefix(self.pfx.clone(), prefix_end(&self.pfx));
        loop {
            let (evs, next) = self.v3.events_from(from, &keys).await.ok()??;
            let put = evs
                .into_iter()
                .find(|ev| ev.r#type == mvccpb::event::EventType::Put as i32)
                .and_then(|ev| ev.kv);
            if let Some(kv) = put {
                return Some((self.v3.header(kv.mod_revision), kv));
            }
            from = next;
        }
    }
}

/// Resolves once this member has seen no leader at [`super::watch::NO_LEADER_CHECKS`] checks
/// in a row, one per election timeout (etcd's `monitorLeader`), with what etcd then answers
/// (Unavailable, "etcdserver: no leader", as a Watch stream's).
async fn leaderless(shared: &crate::raft::Shared, election: std::time::Duration) -> Status {
    let mut checks = 0;
    loop {
        shared.clock.sleep(election).await;
        if *shared.leader.borrow() == 0 {
            checks += 1;
            if checks >= super::watch::NO_LEADER_CHECKS {
                return Status::unavailable(super::watch::NO_LEADER);
            }
        } else {
            checks = 0;
        }
    }
}

#[tonic::async_trait]
impl Election for V3 {
    async fn campaign(
        &self,
        req: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let caller = Caller::of(&req);
        let epb::CampaignRequest { name, lease, value } = req.into_inner();
        let lease = self.session(&caller, lease).await.map_err(unknown)?;
        let pfx = prefix_of(&name);
        let key = [pfx.as_slice(), go_hex(lease).as_bytes()].concat();
        let txn = pb::TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(key.clone(), value.clone(), lease)],
            failure: vec![range_op(pb::RangeRequest {
                key: key.clone(),
                ..Default::default()
            })],
        };
        let t = self
            .txn(caller.req(txn))
            .await
            .map_err(unknown)?
            .into_inner();
        let mut rev = t.header.as_ref().map_or(0, |h| h.revision);
        if !t.succeeded {
            // This lease campaigned before: its key stands; a new value is proclaimed.
            let kv = t.responses.into_iter().find_map(|op| match op.response {
                Some(pb::response_op::Response::ResponseRange(r)) => r.kvs.into_iter().next(),
                _ => None,
            });
            let Some(kv) = kv else {
                // Deleted between the compare and the read: no txn does that.
                return Err(Status::unknown(NOT_LEADER));
            };
            rev = kv.create_revision;
            if kv.value != value {
                if let Err(e) = self.proclaim_as(&caller, &key, rev, lease, value).await {
                    let resign = delete_txn(key.clone(), vec![created_at(&key, rev)]);
                    let _ = self.txn(caller.req(resign)).await;
                    return Err(unknown(e));
                }
            }
        }
        let mut unqueue = Unqueue {
            v3: self.clone(),
            caller: caller.clone(),
            undo: Some(delete_txn(key.clone(), vec![created_at(&key, rev)])),
        };
        let waited = self.wait_deletes(&caller, &pfx, rev - 1).await;
        // etcd resigns only when the caller went away (then this future is dropped and the
        // guard resigns); a failed wait leaves the key.
        unqueue.undo = None;
        waited.map_err(unknown)?;
        Ok(Response::new(epb::CampaignResponse {
            header: t.header,
            leader: Some(epb::LeaderKey {
                name,
                key,
                rev,
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let caller = Caller::of(&req);
        let epb::ProclaimRequest { leader, value } = req.into_inner();
        let leader = leader.ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let lease = self.session(&caller, leader.lease).await.map_err(unknown)?;
        let header = self
            .proclaim_as(&caller, &leader.key, leader.rev, lease, value)
            .await
            .map_err(unknown)?;
        Ok(Response::new(epb::ProclaimResponse { header }))
    }

    async fn leader(
        &self,
        req: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let caller = Caller::of(&req);
        let pfx = prefix_of(&req.into_inner().name);
        let oldest = first_or_last_create(&pfx, pb::range_request::SortOrder::Ascend, 0);
        let r = self
            .range(caller.req(oldest))
            .await
            .map_err(unknown)?
            .into_inner();
        let kv = r
            .kvs
            .into_iter()
            .next()
            .ok_or_else(|| Status::unknown(NO_LEADER))?;
        Ok(Response::new(epb::LeaderResponse {
            header: r.header,
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<epb::LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let caller = Caller::of(&req);
        let require_leader = super::watch::requires_leader(&req);
        let pfx = prefix_of(&req.into_inner().name);
        let observer = Observer {
            v3: self.clone(),
            _watching: self.ctx.shared.watch_hub.register(),
            caller,
            pfx,
            phase: Phase::Find,
            ready: VecDeque::new(),
        };
        let (shared, election) = (
            std::sync::Arc::clone(&self.ctx.shared),
            self.ctx.election_timeout,
        );
        let stream = futures::stream::unfold(Some(observer), move |o| {
            let shared = std::sync::Arc::clone(&shared);
            async move {
                let mut o = o?;
                if !require_leader {
                    return o.next().await.map(|r| (Ok(r), Some(o)));
                }
                // Asked with `hasleader`: ended once the member has had no leader for a few
                // election timeouts, as etcd's stream interceptor ends every such stream.
                tokio::select! {
                    r = o.next() => r.map(|r| (Ok(r), Some(o))),
                    st = leaderless(&shared, election) => Some((Err(st), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resign(
        &self,
        req: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let caller = Caller::of(&req);
        let leader = req
            .into_inner()
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        self.session(&caller, leader.lease).await.map_err(unknown)?;
        let txn = delete_txn(
            leader.key.clone(),
            vec![created_at(&leader.key, leader.rev)],
        );
        let t = self
            .txn(caller.req(txn))
            .await
            .map_err(unknown)?
            .into_inner();
        Ok(Response::new(epb::ResignResponse { header: t.header }))
    }
}
