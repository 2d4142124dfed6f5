//! etcd 3.4's Cluster and Maintenance services over gRPC (`v3rpc/member.go`,
//! `v3rpc/maintenance.go`, `v3rpc/quota.go`).
//!
//! Cluster is another view of the one membership the v2 members API shows and changes: the
//! same member list (`sm.meta.members`), the same checks and conf changes
//! (`members::add_member`, `update_member`, `remove_member`), answered with etcd's gRPC codes
//! and messages. Learners as in etcd 3.4: at most one, added without the strict
//! reconfiguration check, promoted by the leader once their log is in sync
//! (`members::promote_member`).
//!
//! Maintenance: Status, Alarm (proposed through Raft, all three actions, as etcd does),
//! the quota check made before a put, a txn with a put or a lease grant ([`check_quota`]:
//! over the quota, a NOSPACE alarm is raised through Raft and the request fails), Defragment
//! (redb's compaction), Hash and HashKV, Snapshot (a stream that `etcdctl snapshot save`
//! accepts) and MoveLeader (raft-rs's leader transfer).

use std::sync::Arc;
use std::time::Duration;

use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::cluster_server::Cluster;
use detcd_proto::etcdserverpb::maintenance_server::Maintenance;
use tonic::{Request, Response, Status};

use super::members::{self, ConfFailure};
use super::Ctx;
use crate::mvcc::{Costed, V3Error};
use crate::raft::{Inbox, WaitError};
use crate::sm::{AlarmOp, Op, Outcome};

/// etcd's version, as Status reports it.
pub const SERVER_VERSION: &str = "3.4.23";

/// The Cluster and Maintenance services of one member.
#[derive(Clone)]
pub struct Maint {
    ctx: Arc<Ctx>,
    /// The request credentials are read as the KV service reads them (gRPC metadata, or the
    /// gateway's `Authorization` header).
    creds: super::v3::V3,
}

fn wait_status(e: WaitError) -> Status {
    match e {
        WaitError::Timeout => Status::unavailable(super::v3::REQUEST_TIMED_OUT),
        WaitError::Stopped => Status::unavailable(super::v3::SERVER_STOPPED),
    }
}

fn v3_status(e: V3Error) -> Status {
    Status::new(e.code(), e.message())
}

/// An auth error as the auth package words it, unconverted (code Unknown): what etcd 3.4's
/// Maintenance service answers where it returns the auth store's error as it is.
fn raw_auth_error(st: &Status) -> Status {
    let msg = match st.message() {
        // The auth package's own `ErrUserNotFound` is "auth: user not found"; the converted
        // gRPC error is "etcdserver: user name not found".
        "etcdserver: user name not found" => "auth: user not found".to_string(),
        m => m.replacen("etcdserver: ", "auth: ", 1),
    };
    Status::unknown(msg)
}

/// etcd's gRPC error for a membership change that did not happen (`togRPCError`).
fn conf_status(f: ConfFailure) -> Status {
    match f {
        // etcd maps it to the client-side `rpctypes.ErrMemberNotEnoughStarted`, which has no
        // gRPC status of its own: grpc-go sends it as Unknown.
        ConfFailure::NotEnoughStarted => {
            Status::unknown("etcdserver: re-configuration failed due to not enough started members")
        }
        ConfFailure::Unhealthy => Status::unavailable("etcdserver: unhealthy cluster"),
        ConfFailure::Refused((409, msg)) if msg.contains("peerURL") => {
            Status::failed_precondition("etcdserver: Peer URLs already exists")
        }
        ConfFailure::Refused((409, _)) => {
            Status::failed_precondition("etcdserver: member ID already exist")
        }
        // Too many learners; promotion of a voter.
        ConfFailure::Refused((412, msg)) => Status::failed_precondition(msg),
        ConfFailure::NotLeader => Status::failed_precondition("etcdserver: not leader"),
        ConfFailure::LearnerNotReady => Status::failed_precondition(
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        ConfFailure::Refused(_) => member_not_found(),
        ConfFailure::Timeout => Status::unavailable(super::v3::REQUEST_TIMED_OUT),
    }
}

fn member_not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}

/// `types.NewURLs` as etcd's MemberAdd checks peer URLs: each parses, has scheme http,
/// https, unix or unixs, a host:port and no path; sorted as etcd keeps them.
fn parse_peer_urls(urls: &[String]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for u in urls {
        let p = url::Url::parse(u).ok()?;
        if !["http", "https", "unix", "unixs"].contains(&p.scheme()) {
            return None;
        }
        // Go's `net.SplitHostPort` on the URL's host, and no path at all (the url crate
        // would read `http://h:1/` as path `/` and drop a default port: look at the text).
        let authority = u.split_once("://")?.1;
        if authority.contains('/') || p.host_str().is_none() {
            return None;
        }
        let (_, port) = authority.rsplit_once(':')?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // As given (url's serialisation would drop a default port).
        out.push(u.clone());
    }
    out.sort();
    Some(out)
}

/// The quota check etcd makes before a put, a txn or a lease grant (`quotaAlarmer.check`):
/// a request that may grow the backend (cost > 0) when the backend's file plus its cost
/// reaches `--quota-backend-bytes` raises a NOSPACE alarm for this member through Raft and
/// fails with etcd's "database space exceeded".
pub async fn check_quota(ctx: &Ctx, r: Costed<'_>) -> Result<(), Status> {
    let cost = crate::mvcc::quota_cost(r) as u64;
    if cost == 0 {
        return Ok(());
    }
    let quota = match ctx.quota_backend_bytes {
        0 => crate::mvcc::DEFAULT_QUOTA_BYTES,
        q => q,
    };
    let size = ctx.shared.mvcc.lock().expect("mvcc lock").db_size();
    if size + cost < quota {
        return Ok(());
    }
    let op = Op::Alarm(AlarmOp {
        action: pb::alarm_request::AlarmAction::Activate as i32,
        member_id: ctx.shared.id,
        alarm: pb::AlarmType::Nospace as i32,
    });
    // etcd waits for the alarm and ignores how it went.
    let _ = ctx.shared.propose(op, ctx.request_timeout).await;
    Err(v3_status(V3Error::NoSpace))
}

impl Maint {
    /// The services of the member behind `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Maint {
        let creds = super::v3::V3::new(Arc::clone(&ctx));
        Maint { ctx, creds }
    }

    /// The services as the JSON gateway calls them, with the request's `Authorization`
    /// header as its token.
    pub fn for_gateway(ctx: Arc<Ctx>, authorization: Option<String>) -> Maint {
        let creds = super::v3::V3::for_gateway(Arc::clone(&ctx), authorization);
        Maint { ctx, creds }
    }

    /// etcd's `checkMembershipOperationPermission`: with auth on, only an admin (a user with
    /// the root role) may add, remove, update or promote members; the errors as the
    /// Cluster service converts them ("etcdserver: permission denied", "etcdserver: user
    /// name is empty").
    async fn check_admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let ai = self.creds.auth_info(req).await?;
        self.ctx
            .shared
            .mvcc
            .lock()
            .expect("mvcc lock")
            .auth_check_admin(ai.as_ref())
            .map_err(super::v3auth::auth_status)
    }

    /// etcd 3.4's `authMaintenanceServer.isAuthenticated` (Defragment, Snapshot, Hash,
    /// HashKV): the same admin check, but its error goes out unconverted, as the auth
    /// package's own error (code Unknown, "auth: permission denied", "auth: user name is
    /// empty", "auth: invalid auth token").
    async fn check_admin_raw<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.check_admin(req)
            .await
            .map_err(|st| raw_auth_error(&st))
    }

    /// A header with the cluster, this member, the term and (for Maintenance) the revision.
    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        let shared = &self.ctx.shared;
        Some(pb::ResponseHeader {
            cluster_id: shared.cluster_id(),
            member_id: shared.id,
            revision,
            raft_term: shared.status().term,
        })
    }

    /// The members as etcd lists them: by ID.
    fn members(&self) -> Vec<pb::Member> {
        let sm = self.ctx.shared.sm.lock().expect("sm lock");
        sm.meta
            .members
            .members
            .values()
            .map(|m| pb::Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: m.client_urls.clone(),
                is_learner: m.is_learner,
            })
            .collect()
    }

    /// Propose an alarm request and wait for the alarms applying it answered.
    async fn alarm_op(&self, r: &pb::AlarmRequest) -> Result<Vec<pb::AlarmMember>, Status> {
        let op = Op::Alarm(AlarmOp {
            action: r.action,
            member_id: r.member_id,
            alarm: r.alarm,
        });
        let applied = self
            .ctx
            .shared
            .propose(op, self.ctx.request_timeout)
            .await
            .map_err(wait_status)?;
        match applied.outcome {
            Outcome::Alarm(r) => r.map_err(v3_status),
            other => Err(Status::internal(format!(
                "etcdserver: unexpected outcome of an alarm request: {other:?}"
            ))),
        }
    }
}

#[tonic::async_trait]
impl Cluster for Maint {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let urls = parse_peer_urls(&req.get_ref().peer_ur_ls)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Status::invalid_argument("etcdserver: given member URLs are invalid"))?;
        self.check_admin(&req).await?;
        let r = req.into_inner();
        let m = members::add_member(&self.ctx, urls, r.is_learner)
            .await
            .map_err(conf_status)?;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(0),
            member: Some(pb::Member {
                id: m.id,
                name: String::new(),
                peer_ur_ls: m.peer_urls,
                client_ur_ls: Vec::new(),
                is_learner: m.is_learner,
            }),
            members: self.members(),
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.check_admin(&req).await?;
        let r = req.into_inner();
        members::remove_member(&self.ctx, r.id)
            .await
            .map_err(conf_status)?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(0),
            members: self.members(),
        }))
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.check_admin(&req).await?;
        let r = req.into_inner();
        members::update_member(&self.ctx, r.id, r.peer_ur_ls)
            .await
            .map_err(conf_status)?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header(0),
            members: self.members(),
        }))
    }

    async fn member_list(
        &self,
        _req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(0),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.check_admin(&req).await?;
        let id = req.into_inner().id;
        members::promote_member(&self.ctx, id)
            .await
            .map_err(conf_status)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(0),
            members: self.members(),
        }))
    }
}

type SnapshotStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static>,
>;

/// etcd sends a snapshot in pieces of 32 KiB.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// How long Defragment waits for a snapshot being written (it holds the backend open for
/// reading) before it gives up.
const DEFRAG_WAIT: Duration = Duration::from_secs(10);

#[tonic::async_trait]
impl Maintenance for Maint {
    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        // No permission is needed, but a token the request carries must be valid: etcd reads
        // it as it proposes the alarm (`processInternalRaftRequestOnce`), and the
        // Maintenance service returns that error unconverted.
        self.creds
            .auth_info(&req)
            .await
            .map_err(|st| raw_auth_error(&st))?;
        let r = req.into_inner();
        let alarms = self.alarm_op(&r).await?;
        // etcd answers with the applier's response, which has no header.
        Ok(Response::new(pb::AlarmResponse {
            header: None,
            alarms,
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let st = self.ctx.shared.status();
        let (rev, db_size, in_use, alarms) = {
            let m = self.ctx.shared.mvcc.lock().expect("mvcc lock");
            (
                m.revision(),
                m.db_size(),
                m.db_size_in_use(),
                m.alarms(pb::AlarmType::None),
            )
        };
        let mut errors = Vec::new();
        if st.leader == 0 {
            errors.push("etcdserver: no leader".to_string());
        }
        for a in alarms {
            // Go's `proto.CompactTextString` of the AlarmMember.
            let name = pb::AlarmType::try_from(a.alarm)
                .map(|t| t.as_str_name().to_string())
                .unwrap_or_else(|_| a.alarm.to_string());
            errors.push(format!("memberID:{} alarm:{} ", a.member_id, name));
        }
        Ok(Response::new(pb::StatusResponse {
            header: self.header(rev),
            version: SERVER_VERSION.to_string(),
            db_size: db_size as i64,
            leader: st.leader,
            raft_index: st.commit,
            raft_term: st.term,
            raft_applied_index: st.applied,
            errors,
            db_size_in_use: in_use as i64,
            is_learner: st.is_learner,
        }))
    }

    async fn defragment(
        &self,
        req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.check_admin_raw(&req).await?;
        let deadline = self.ctx.shared.clock.now() + DEFRAG_WAIT;
        loop {
            let r = self.ctx.shared.mvcc.lock().expect("mvcc lock").defrag();
            match r {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.ctx.shared.clock.now() >= deadline {
                        return Err(Status::unavailable(format!(
                            "detcd: defragment: {e} (a snapshot is being written)"
                        )));
                    }
                    crate::rt::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(Status::internal(format!("detcd: defragment: {e}"))),
            }
        }
        tracing::info!("finished defragmenting the v3 backend");
        // etcd's answer has no header.
        Ok(Response::new(pb::DefragmentResponse { header: None }))
    }

    async fn hash(
        &self,
        req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.check_admin_raw(&req).await?;
        let (hash, rev) = {
            let mut m = self.ctx.shared.mvcc.lock().expect("mvcc lock");
            // The hash covers committed tables: commit the open batch first (etcd's Hash
            // forces a backend commit the same way).
            m.flush(false)
                .map_err(|e| Status::internal(format!("detcd: hash: {e}")))?;
            m.hash().map_err(v3_status)?
        };
        Ok(Response::new(pb::HashResponse {
            header: self.header(rev),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.check_admin_raw(&req).await?;
        let r = req.into_inner();
        let h = self
            .ctx
            .shared
            .mvcc
            .lock()
            .expect("mvcc lock")
            .hash_kv(r.revision)
            .map_err(v3_status)?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.header(h.revision),
            hash: h.hash,
            compact_revision: h.compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.check_admin_raw(&req).await?;
        let dump = {
            let mut m = self.ctx.shared.mvcc.lock().expect("mvcc lock");
            m.flush(false)
                .and_then(|()| m.dump())
                .map_err(|e| Status::internal(format!("detcd: snapshot: {e}")))?
        };
        let file = crate::rt::spawn_blocking(move || dump.encode())
            .await
            .map_err(|e| Status::internal(format!("detcd: snapshot: {e}")))?
            .map_err(|e| Status::internal(format!("detcd: snapshot: {e}")))?;
        let file = crate::mvcc::snapshot_file(&file);
        // The data in pieces, each with the bytes still to come; then the SHA-256 trailer
        // (the file's last 32 bytes) alone, as etcd sends its checksum.
        let (data, sha) = file.split_at(file.len() - 32);
        let total = data.len();
        let mut out = Vec::new();
        let mut sent = 0;
        for chunk in data.chunks(SNAPSHOT_CHUNK) {
            sent += chunk.len();
            out.push(Ok(pb::SnapshotResponse {
                header: None,
                remaining_bytes: (total - sent) as u64,
                blob: chunk.to_vec(),
            }));
        }
        out.push(Ok(pb::SnapshotResponse {
            header: None,
            remaining_bytes: 0,
            blob: sha.to_vec(),
        }));
        Ok(Response::new(Box::pin(futures::stream::iter(out))))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        let shared = &self.ctx.shared;
        let st = shared.status();
        if !st.is_leader {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        // etcd: `!IsMemberExist(transferee) || Member(transferee).IsLearner` (Raft would
        // ignore a transfer to a learner).
        let voter = shared
            .sm
            .lock()
            .expect("sm lock")
            .meta
            .members
            .members
            .get(&target)
            .is_some_and(|m| !m.is_learner);
        if !voter {
            return Err(Status::failed_precondition(
                "etcdserver: bad leader transferee",
            ));
        }
        let _ = shared.inbox.send(Inbox::TransferLeader(target));
        let mut leader = shared.leader.subscribe();
        let moved =
            crate::rt::timeout(self.ctx.request_timeout, leader.wait_for(|l| *l == target)).await;
        match moved {
            // etcd's answer has no header.
            Ok(Ok(_)) => Ok(Response::new(pb::MoveLeaderResponse { header: None })),
            Ok(Err(_)) => Err(Status::unavailable(super::v3::SERVER_STOPPED)),
            Err(_) => Err(Status::unknown(
                "etcdserver: request timed out, leader transfer took too long",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_peer_urls;

    #[test]
    fn peer_urls_are_checked_as_etcds_types_new_urls() {
        let ok = |u: &str| parse_peer_urls(&[u.to_string()]);
        assert_eq!(
            ok("http://127.0.0.1:80"),
            Some(vec!["http://127.0.0.1:80".into()])
        );
        assert_eq!(ok("https://h:2380"), Some(vec!["https://h:2380".into()]));
        for bad in [
            "bad",
            "ftp://h:1",
            "http://h",
            "http://h:1/",
            "http://h:1/p",
            "http://h:x",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
        let two = ["http://b:2".to_string(), "http://a:1".to_string()];
        assert_eq!(
            parse_peer_urls(&two),
            Some(vec!["http://a:1".into(), "http://b:2".into()])
        );
    }
}
