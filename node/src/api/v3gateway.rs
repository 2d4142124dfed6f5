//! etcd 3.4.23's JSON gateway for the KV service: `POST /v3/kv/{range,put,deleterange,txn,
//! compaction}` (and the same under `/v3beta/`), answered through any implementation of the
//! tonic-generated [`Kv`] trait, byte for byte as etcd's grpc-gateway answers.
//!
//! What etcd does, as probed on a live 3.4.23 (cases in `conformance/etcd-3.4.23-v3.jsonl`):
//! - success: 200, `Content-Type: application/json`, `Grpc-Metadata-Content-Type:
//!   application/grpc`, the response in jsonpb's JSON (see [`detcd_proto::gateway`]);
//! - a body the gateway cannot read: 400 `{"error":m,"message":m,"code":3}` with Go's message;
//!   an empty body is an empty request; only the first JSON value of a body is read;
//! - an error from the service: that body with the status's code and message, a `Trailer:
//!   Grpc-Trailer-Content-Type` header (etcd then sends that trailer after a chunked body; this
//!   module leaves the trailer itself out), HTTP status from
//!   [`detcd_proto::gateway::http_status`] (400 InvalidArgument and OutOfRange, 404 NotFound,
//!   412 FailedPrecondition, 401 Unauthenticated, 403 PermissionDenied, 503 Unavailable...);
//! - any method but POST on a KV path: 405 `Method Not Allowed\n` (text/plain); OPTIONS is
//!   answered 200 with no body on every path by etcd's CORS wrapper (this module does so for
//!   every path under `/v3/` and `/v3beta/`);
//! - any other path under `/v3/` that no gateway route has (`/v3/kv/range/`, `/v3/kv/Range`,
//!   `/v3/`): 404 `Not Found\n` (text/plain); the query string is ignored.
//!
//! Paths of the other services' gateway routes (`/v3/watch`, `/v3/cluster/...`, ...) and paths
//! outside `/v3/` and `/v3beta/` give `None`: the caller routes them elsewhere.
//!
//! Hook: `pub mod v3gateway;` in `api/mod.rs`; in the request router, before the v2 routes,
//! `if let Some(r) = v3gateway::handle_full(&kv, req.method(), req.uri().path(), &body).await`
//! and answer `r.status`, `r.headers` and `r.body` (plus etcd's CORS headers, as for v2).

use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::auth_server::Auth;
use detcd_proto::etcdserverpb::kv_server::Kv;
use detcd_proto::etcdserverpb::lease_server::Lease;
use detcd_proto::gateway::{decode, decode_stream, encode, error_body, http_status};
use detcd_proto::v3electionpb::election_server::Election;
use detcd_proto::v3lockpb::lock_server::Lock;
use http::Method;

/// A gateway answer: status, the headers etcd sets besides its CORS ones, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers in etcd's order (`Content-Type` first).
    pub headers: Vec<(&'static str, &'static str)>,
    /// The body.
    pub body: Vec<u8>,
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const GRPC_META: (&str, &str) = ("Grpc-Metadata-Content-Type", "application/grpc");
const TEXT: (&str, &str) = ("Content-Type", "text/plain; charset=utf-8");
const NOSNIFF: (&str, &str) = ("X-Content-Type-Options", "nosniff");
/// etcd announces a trailer on service errors (and sends it, `Grpc-Trailer-Content-Type:
/// application/grpc`, after a chunked body); the header alone is what clients can see.
const TRAILER: (&str, &str) = ("Trailer", "Grpc-Trailer-Content-Type");

/// The KV gateway: `None` when `path` is not one of its paths, else `(status, body)`; the body
/// is JSON unless the status is 404 or 405 (then text/plain), or empty (OPTIONS).
pub async fn handle<K: Kv>(
    kv: &K,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    handle_full(kv, method, path, body)
        .await
        .map(|r| (r.status, r.body))
}

/// [`handle`] with the headers etcd sends.
pub async fn handle_full<K: Kv>(kv: &K, method: &Method, path: &str, body: &[u8]) -> Option<Reply> {
    let rest = route_of(path)?;
    if method == Method::OPTIONS {
        // etcd's CORS wrapper answers every OPTIONS, whatever the path.
        return Some(preflight());
    }
    let op = match rest {
        "kv/range" => Op::Range,
        "kv/put" => Op::Put,
        "kv/deleterange" => Op::DeleteRange,
        "kv/txn" => Op::Txn,
        "kv/compaction" => Op::Compaction,
        r if OTHER_ROUTES.contains(&r) => return None,
        _ => return Some(text(404, "Not Found\n")),
    };
    if method != Method::POST {
        return Some(method_not_allowed());
    }
    Some(match op {
        Op::Range => call("etcdserverpb.RangeRequest", body, |r| kv.range(r)).await,
        Op::Put => call("etcdserverpb.PutRequest", body, |r| kv.put(r)).await,
        Op::DeleteRange => {
            call("etcdserverpb.DeleteRangeRequest", body, |r| {
                kv.delete_range(r)
            })
            .await
        }
        Op::Txn => call("etcdserverpb.TxnRequest", body, |r| kv.txn(r)).await,
        Op::Compaction => call("etcdserverpb.CompactionRequest", body, |r| kv.compact(r)).await,
    })
}

/// The gateway of the KV and Lease services: the Lease routes etcd 3.4 has (`/v3/lease/grant`,
/// `/v3/lease/revoke` and `/v3/kv/lease/revoke`, `/v3/lease/timetolive` and
/// `/v3/kv/lease/timetolive`, `/v3/lease/leases` and `/v3/kv/lease/leases`,
/// `/v3/lease/keepalive`), else [`handle_full`]'s KV routes. `keep_alive` answers the
/// KeepAlive stream's requests (a bidi stream: the body's JSON values one after another, each
/// answered by a `{"result":...}` line).
pub async fn handle_services<K, L, KA, Fut>(
    kv: &K,
    lease: &L,
    keep_alive: KA,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Option<Reply>
where
    K: Kv,
    L: Lease,
    KA: FnOnce(Vec<pb::LeaseKeepAliveRequest>) -> Fut,
    Fut: std::future::Future<Output = Vec<Result<pb::LeaseKeepAliveResponse, tonic::Status>>>,
{
    let rest = route_of(path)?;
    let route = match rest {
        "lease/grant" => 0,
        "lease/revoke" | "kv/lease/revoke" => 1,
        "lease/timetolive" | "kv/lease/timetolive" => 2,
        "lease/leases" | "kv/lease/leases" => 3,
        "lease/keepalive" => 4,
        _ => return handle_full(kv, method, path, body).await,
    };
    if let Some(r) = refused_method(method) {
        return Some(r);
    }
    Some(match route {
        0 => {
            call("etcdserverpb.LeaseGrantRequest", body, |r| {
                lease.lease_grant(r)
            })
            .await
        }
        1 => {
            call("etcdserverpb.LeaseRevokeRequest", body, |r| {
                lease.lease_revoke(r)
            })
            .await
        }
        2 => {
            call("etcdserverpb.LeaseTimeToLiveRequest", body, |r| {
                lease.lease_time_to_live(r)
            })
            .await
        }
        3 => {
            call("etcdserverpb.LeaseLeasesRequest", body, |r| {
                lease.lease_leases(r)
            })
            .await
        }
        _ => keep_alive_stream(body, keep_alive).await,
    })
}

/// The gateway of the Lock service (`/v3/lock/lock`, `/v3/lock/unlock`, POST only, as etcd
/// 3.4's v3lock.proto routes them); `None` for any other path.
pub async fn handle_lock<L: Lock>(
    lock: &L,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Option<Reply> {
    let rest = route_of(path)?;
    let unlock = match rest {
        "lock/lock" => false,
        "lock/unlock" => true,
        _ => return None,
    };
    if let Some(r) = refused_method(method) {
        return Some(r);
    }
    Some(if unlock {
        call("v3lockpb.UnlockRequest", body, |r| lock.unlock(r)).await
    } else {
        call("v3lockpb.LockRequest", body, |r| lock.lock(r)).await
    })
}

/// The gateway of the Election service's unary calls (`/v3/election/{campaign,proclaim,leader,
/// resign}`, POST only, as etcd 3.4's v3election.proto routes them); `None` for any other path
/// (Observe, a stream, is answered by the caller).
pub async fn handle_election<E: Election>(
    election: &E,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Option<Reply> {
    let rest = route_of(path)?.strip_prefix("election/")?;
    if !["campaign", "proclaim", "leader", "resign"].contains(&rest) {
        return None;
    }
    if let Some(r) = refused_method(method) {
        return Some(r);
    }
    Some(match rest {
        "campaign" => {
            call("v3electionpb.CampaignRequest", body, |r| {
                election.campaign(r)
            })
            .await
        }
        "proclaim" => {
            call("v3electionpb.ProclaimRequest", body, |r| {
                election.proclaim(r)
            })
            .await
        }
        "leader" => call("v3electionpb.LeaderRequest", body, |r| election.leader(r)).await,
        _ => call("v3electionpb.ResignRequest", body, |r| election.resign(r)).await,
    })
}

/// The gateway's Observe: the request's body decoded (a 400 reply, as etcd's, when it cannot
/// be), for the caller to stream the answers as `{"result":...}` lines.
pub fn observe_request(body: &[u8]) -> Result<detcd_proto::v3electionpb::LeaderRequest, Reply> {
    decode("v3electionpb.LeaderRequest", body).map_err(|msg| Reply {
        status: 400,
        headers: vec![JSON],
        body: error_body(3, &msg),
    })
}

/// The gateway of the Auth service (`/v3/auth/...`, POST only, as etcd 3.4's rpc.proto
/// routes it); `None` for any other path.
pub async fn handle_auth<A: Auth>(
    auth: &A,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Option<Reply> {
    let rest = route_of(path)?.strip_prefix("auth/")?;
    const ROUTES: &[&str] = &[
        "enable",
        "disable",
        "authenticate",
        "user/add",
        "user/get",
        "user/list",
        "user/delete",
        "user/changepw",
        "user/grant",
        "user/revoke",
        "role/add",
        "role/get",
        "role/list",
        "role/delete",
        "role/grant",
        "role/revoke",
    ];
    if !ROUTES.contains(&rest) {
        return None;
    }
    if let Some(r) = refused_method(method) {
        return Some(r);
    }
    let m = "etcdserverpb.";
    Some(match rest {
        "enable" => {
            call(&format!("{m}AuthEnableRequest"), body, |r| {
                auth.auth_enable(r)
            })
            .await
        }
        "disable" => {
            call(&format!("{m}AuthDisableRequest"), body, |r| {
                auth.auth_disable(r)
            })
            .await
        }
        "authenticate" => {
            call(&format!("{m}AuthenticateRequest"), body, |r| {
                auth.authenticate(r)
            })
            .await
        }
        "user/add" => {
            call(&format!("{m}AuthUserAddRequest"), body, |r| {
                auth.user_add(r)
            })
            .await
        }
        "user/get" => {
            call(&format!("{m}AuthUserGetRequest"), body, |r| {
                auth.user_get(r)
            })
            .await
        }
        "user/list" => {
            call(&format!("{m}AuthUserListRequest"), body, |r| {
                auth.user_list(r)
            })
            .await
        }
        "user/delete" => {
            call(&format!("{m}AuthUserDeleteRequest"), body, |r| {
                auth.user_delete(r)
            })
            .await
        }
        "user/changepw" => {
            call(&format!("{m}AuthUserChangePasswordRequest"), body, |r| {
                auth.user_change_password(r)
            })
            .await
        }
        "user/grant" => {
            call(&format!("{m}AuthUserGrantRoleRequest"), body, |r| {
                auth.user_grant_role(r)
            })
            .await
        }
        "user/revoke" => {
            call(&format!("{m}AuthUserRevokeRoleRequest"), body, |r| {
                auth.user_revoke_role(r)
            })
            .await
        }
        "role/add" => {
            call(&format!("{m}AuthRoleAddRequest"), body, |r| {
                auth.role_add(r)
            })
            .await
        }
        "role/get" => {
            call(&format!("{m}AuthRoleGetRequest"), body, |r| {
                auth.role_get(r)
            })
            .await
        }
        "role/list" => {
            call(&format!("{m}AuthRoleListRequest"), body, |r| {
                auth.role_list(r)
            })
            .await
        }
        "role/delete" => {
            call(&format!("{m}AuthRoleDeleteRequest"), body, |r| {
                auth.role_delete(r)
            })
            .await
        }
        "role/grant" => {
            call(&format!("{m}AuthRoleGrantPermissionRequest"), body, |r| {
                auth.role_grant_permission(r)
            })
            .await
        }
        _ => {
            call(&format!("{m}AuthRoleRevokePermissionRequest"), body, |r| {
                auth.role_revoke_permission(r)
            })
            .await
        }
    })
}

/// grpc-gateway's answer to a bidi stream given as one body: a first request that cannot be
/// read is a 500 with code 2 (as etcd answers); a later one ends the stream; each answer is
/// a `{"result":...}` line, an error an `{"error":{...}}` line that ends it.
async fn keep_alive_stream<KA, Fut>(body: &[u8], keep_alive: KA) -> Reply
where
    KA: FnOnce(Vec<pb::LeaseKeepAliveRequest>) -> Fut,
    Fut: std::future::Future<Output = Vec<Result<pb::LeaseKeepAliveResponse, tonic::Status>>>,
{
    let reqs = match stream_requests::<pb::LeaseKeepAliveRequest>(
        "etcdserverpb.LeaseKeepAliveRequest",
        body,
    ) {
        Ok(reqs) => reqs,
        Err(body) => {
            return Reply {
                status: 500,
                headers: vec![JSON],
                body,
            }
        }
    };
    if reqs.is_empty() {
        return Reply {
            status: 200,
            headers: vec![JSON],
            body: Vec::new(),
        };
    }
    let mut out = Vec::new();
    for r in keep_alive(reqs).await {
        match r {
            Ok(resp) => out.extend_from_slice(&result_line(&resp)),
            Err(st) => {
                out.extend_from_slice(&stream_error_line(&st));
                break;
            }
        }
    }
    Reply {
        status: 200,
        headers: vec![JSON, GRPC_META],
        body: out,
    }
}

/// The gateway of the Cluster and Maintenance services: `/v3/cluster/member/{add,remove,
/// update,list,promote}` and `/v3/maintenance/{alarm,status,defragment,hash,snapshot,
/// transfer-leadership}` (and under `/v3beta/`), `None` for any other path. 3.4's quirk: Hash
/// and HashKV share `/v3/maintenance/hash` in its `rpc.proto`; etcd 3.4.23 answers that path
/// with a Hash response (no `compact_revision`, and no future-revision error for a
/// `revision` past the store), so HashKV has no gateway route. Snapshot is a server stream:
/// one `{"result":...}` line per message.
pub async fn handle_cluster_maintenance<C, M>(
    cluster: &C,
    maint: &M,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Option<Reply>
where
    C: detcd_proto::etcdserverpb::cluster_server::Cluster,
    M: detcd_proto::etcdserverpb::maintenance_server::Maintenance,
{
    let rest = route_of(path)?;
    const ROUTES: &[&str] = &[
        "cluster/member/add",
        "cluster/member/remove",
        "cluster/member/update",
        "cluster/member/list",
        "cluster/member/promote",
        "maintenance/alarm",
        "maintenance/status",
        "maintenance/defragment",
        "maintenance/hash",
        "maintenance/snapshot",
        "maintenance/transfer-leadership",
    ];
    let route = ROUTES.iter().position(|r| *r == rest)?;
    if let Some(r) = refused_method(method) {
        return Some(r);
    }
    Some(match route {
        0 => {
            call("etcdserverpb.MemberAddRequest", body, |r| {
                cluster.member_add(r)
            })
            .await
        }
        1 => {
            call("etcdserverpb.MemberRemoveRequest", body, |r| {
                cluster.member_remove(r)
            })
            .await
        }
        2 => {
            call("etcdserverpb.MemberUpdateRequest", body, |r| {
                cluster.member_update(r)
            })
            .await
        }
        3 => {
            call("etcdserverpb.MemberListRequest", body, |r| {
                cluster.member_list(r)
            })
            .await
        }
        4 => {
            call("etcdserverpb.MemberPromoteRequest", body, |r| {
                cluster.member_promote(r)
            })
            .await
        }
        5 => call("etcdserverpb.AlarmRequest", body, |r| maint.alarm(r)).await,
        6 => call("etcdserverpb.StatusRequest", body, |r| maint.status(r)).await,
        7 => {
            call("etcdserverpb.DefragmentRequest", body, |r| {
                maint.defragment(r)
            })
            .await
        }
        8 => call("etcdserverpb.HashRequest", body, |r| maint.hash(r)).await,
        9 => snapshot_stream(maint, body).await,
        _ => {
            call("etcdserverpb.MoveLeaderRequest", body, |r| {
                maint.move_leader(r)
            })
            .await
        }
    })
}

/// The Snapshot stream through the gateway: each message a `{"result":...}` line.
async fn snapshot_stream<M>(maint: &M, body: &[u8]) -> Reply
where
    M: detcd_proto::etcdserverpb::maintenance_server::Maintenance,
{
    use futures::StreamExt;
    let req = match decode::<pb::SnapshotRequest>("etcdserverpb.SnapshotRequest", body) {
        Ok(r) => r,
        Err(msg) => {
            return Reply {
                status: 400,
                headers: vec![JSON],
                body: error_body(3, &msg),
            }
        }
    };
    let mut stream = match maint.snapshot(tonic::Request::new(req)).await {
        Ok(s) => Box::pin(s.into_inner()),
        Err(st) => {
            let code = st.code() as i32;
            return Reply {
                status: http_status(code),
                headers: vec![JSON, TRAILER],
                body: error_body(code, st.message()),
            };
        }
    };
    let mut out = Vec::new();
    while let Some(m) = stream.next().await {
        match m {
            Ok(resp) => out.extend_from_slice(&result_line(&resp)),
            Err(st) => {
                out.extend_from_slice(&stream_error_line(&st));
                break;
            }
        }
    }
    Reply {
        status: 200,
        headers: vec![JSON, GRPC_META],
        body: out,
    }
}

/// A streaming call's requests as grpc-gateway reads them from one body: every JSON value
/// up to the first that cannot be read (which ends the list), or, when that is the first,
/// the body of its answer (HTTP 500, code 2, as etcd answers).
pub fn stream_requests<M: prost::Message + Default>(
    full_name: &str,
    body: &[u8],
) -> Result<Vec<M>, Vec<u8>> {
    let mut reqs = Vec::new();
    for r in decode_stream::<M>(full_name, body) {
        match r {
            Ok(r) => reqs.push(r),
            Err(msg) if reqs.is_empty() => return Err(error_body(2, &msg)),
            Err(_) => break,
        }
    }
    Ok(reqs)
}

/// grpc-gateway's line for one message of a stream: `{"result":…}`.
pub fn result_line<M: serde::Serialize>(msg: &M) -> Vec<u8> {
    let mut out = b"{\"result\":".to_vec();
    out.extend_from_slice(&encode(msg));
    out.extend_from_slice(b"}\n");
    out
}

/// grpc-gateway's line for an error that ends a stream.
pub fn stream_error_line(st: &tonic::Status) -> Vec<u8> {
    let code = st.code() as i32;
    let http = http_status(code);
    let reason = http::StatusCode::from_u16(http)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!(
        "{{\"error\":{{\"grpc_code\":{code},\"http_code\":{http},\"message\":{},\"http_status\":{}}}}}\n",
        detcd_proto::gateway::go_quote(st.message()),
        detcd_proto::gateway::go_quote(reason)
    )
    .into_bytes()
}

enum Op {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compaction,
}

/// The gateway routes of etcd 3.4's other services (rpc.proto's HTTP annotations): not ours.
const OTHER_ROUTES: &[&str] = &[
    "watch",
    "cluster/member/add",
    "cluster/member/remove",
    "cluster/member/update",
    "cluster/member/list",
    "cluster/member/promote",
    "maintenance/alarm",
    "maintenance/status",
    "maintenance/defragment",
    "maintenance/hash",
    "maintenance/snapshot",
    "maintenance/transfer-leadership",
    "auth/enable",
    "auth/disable",
    "auth/authenticate",
    "auth/user/add",
    "auth/user/get",
    "auth/user/list",
    "auth/user/delete",
    "auth/user/changepw",
    "auth/user/grant",
    "auth/user/revoke",
    "auth/role/add",
    "auth/role/get",
    "auth/role/list",
    "auth/role/delete",
    "auth/role/grant",
    "auth/role/revoke",
    "lock/lock",
    "lock/unlock",
    "election/campaign",
    "election/proclaim",
    "election/leader",
    "election/observe",
    "election/resign",
];

/// The gateway's answer to a method it does not route (405, text, as grpc-gateway's).
pub fn method_not_allowed() -> Reply {
    text(405, "Method Not Allowed\n")
}

/// etcd's CORS wrapper's answer to an OPTIONS request: 200, no body.
fn preflight() -> Reply {
    Reply {
        status: 200,
        headers: vec![],
        body: vec![],
    }
}

/// What a gateway route answers before decoding a request of any method but POST: OPTIONS
/// [`preflight`], anything else [`method_not_allowed`].
fn refused_method(method: &Method) -> Option<Reply> {
    if method == Method::OPTIONS {
        Some(preflight())
    } else if method != Method::POST {
        Some(method_not_allowed())
    } else {
        None
    }
}

/// A gateway path's route: what follows `/v3/` or `/v3beta/` (etcd serves both alike), the
/// query string left out; `None` for any other path.
fn route_of(path: &str) -> Option<&str> {
    let p = path.split('?').next().unwrap_or(path);
    p.strip_prefix("/v3/")
        .or_else(|| p.strip_prefix("/v3beta/"))
}

fn text(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: vec![TEXT, NOSNIFF],
        body: body.as_bytes().to_vec(),
    }
}

/// The gateway's routes of every service (after `/v3/` or `/v3beta/`, query stripped).
fn is_route(rest: &str) -> bool {
    const KV_AND_LEASE: &[&str] = &[
        "kv/range",
        "kv/put",
        "kv/deleterange",
        "kv/txn",
        "kv/compaction",
        "lease/grant",
        "lease/revoke",
        "kv/lease/revoke",
        "lease/timetolive",
        "kv/lease/timetolive",
        "lease/leases",
        "kv/lease/leases",
        "lease/keepalive",
    ];
    KV_AND_LEASE.contains(&rest) || OTHER_ROUTES.contains(&rest)
}

/// Whether a learner refuses a POST to `path` before decoding it, as etcd's interceptors
/// refuse the gateway's gRPC call (every route but `kv/range`, whose handler refuses a
/// linearizable read, and `maintenance/status`).
pub fn refused_on_learner(path: &str) -> bool {
    route_of(path)
        .is_some_and(|rest| is_route(rest) && rest != "kv/range" && rest != "maintenance/status")
}

/// A call's error as the gateway encodes it.
pub fn error_reply(st: &tonic::Status) -> Reply {
    let code = st.code() as i32;
    Reply {
        status: http_status(code),
        headers: vec![JSON, TRAILER],
        body: error_body(code, st.message()),
    }
}

/// Decode `body` as `name`, make the call, encode its answer or its error.
async fn call<Req, Resp, F, Fut>(name: &str, body: &[u8], f: F) -> Reply
where
    Req: prost::Message + Default,
    Resp: serde::Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let req = match decode::<Req>(name, body) {
        Ok(r) => r,
        Err(msg) => {
            return Reply {
                status: 400,
                headers: vec![JSON],
                body: error_body(3, &msg),
            };
        }
    };
    match f(tonic::Request::new(req)).await {
        Ok(resp) => Reply {
            status: 200,
            headers: vec![JSON, GRPC_META],
            body: encode(resp.get_ref()),
        },
        Err(st) => error_reply(&st),
    }
}

#[cfg(test)]
mod tests {
    //! A small but real in-memory KV (one revision counter, single keys and ranges, prev_kv,
    //! compaction bounds) behind the gateway; the expected bodies are what etcd 3.4.23 answered
    //! to the same requests from a fresh member (ids as in the recording).

    use super::*;
    use detcd_proto::etcdserverpb as pb;
    use detcd_proto::mvccpb::KeyValue;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use tonic::{Request, Response, Status};

    #[derive(Default)]
    struct MemKv {
        st: Mutex<St>,
    }

    #[derive(Default)]
    struct St {
        rev: i64,
        compacted: i64,
        kvs: BTreeMap<Vec<u8>, KeyValue>,
    }

    impl St {
        fn header(&self) -> Option<pb::ResponseHeader> {
            Some(pb::ResponseHeader {
                cluster_id: 15875391935852295136,
                member_id: 7383792418829112008,
                revision: self.rev,
                raft_term: 2,
            })
        }
        fn in_range<'a>(
            &'a self,
            key: &'a [u8],
            end: &'a [u8],
        ) -> impl Iterator<Item = &'a KeyValue> {
            self.kvs.values().filter(move |kv| {
                if end.is_empty() {
                    kv.key == key
                } else {
                    kv.key.as_slice() >= key && (end == b"\0" || kv.key.as_slice() < end)
                }
            })
        }
    }

    fn key_missing() -> Status {
        Status::invalid_argument("etcdserver: key is not provided")
    }

    #[tonic::async_trait]
    impl Kv for MemKv {
        async fn range(
            &self,
            r: Request<pb::RangeRequest>,
        ) -> Result<Response<pb::RangeResponse>, Status> {
            let r = r.into_inner();
            if r.key.is_empty() {
                return Err(key_missing());
            }
            let st = self.st.lock().unwrap();
            if r.revision > st.rev {
                return Err(Status::out_of_range(
                    "etcdserver: mvcc: required revision is a future revision",
                ));
            }
            if r.revision > 0 && r.revision < st.compacted {
                return Err(Status::out_of_range(
                    "etcdserver: mvcc: required revision has been compacted",
                ));
            }
            let all: Vec<KeyValue> = st.in_range(&r.key, &r.range_end).cloned().collect();
            let count = all.len() as i64;
            let mut kvs = all;
            let more = r.limit > 0 && kvs.len() as i64 > r.limit;
            if r.limit > 0 {
                kvs.truncate(r.limit as usize);
            }
            if r.count_only {
                kvs.clear();
            }
            Ok(Response::new(pb::RangeResponse {
                header: st.header(),
                kvs,
                more,
                count,
            }))
        }

        async fn put(
            &self,
            r: Request<pb::PutRequest>,
        ) -> Result<Response<pb::PutResponse>, Status> {
            let r = r.into_inner();
            if r.key.is_empty() {
                return Err(key_missing());
            }
            if r.lease != 0 {
                return Err(Status::not_found("etcdserver: requested lease not found"));
            }
            let mut st = self.st.lock().unwrap();
            st.rev += 1;
            let rev = st.rev;
            let prev = st.kvs.get(&r.key).cloned();
            let kv = KeyValue {
                key: r.key.clone(),
                create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                mod_revision: rev,
                version: prev.as_ref().map_or(1, |p| p.version + 1),
                value: r.value,
                lease: 0,
            };
            st.kvs.insert(r.key, kv);
            let prev_kv = if r.prev_kv { prev } else { None };
            Ok(Response::new(pb::PutResponse {
                header: st.header(),
                prev_kv,
            }))
        }

        async fn delete_range(
            &self,
            r: Request<pb::DeleteRangeRequest>,
        ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
            let r = r.into_inner();
            if r.key.is_empty() {
                return Err(key_missing());
            }
            let mut st = self.st.lock().unwrap();
            let gone: Vec<KeyValue> = st.in_range(&r.key, &r.range_end).cloned().collect();
            if !gone.is_empty() {
                st.rev += 1;
            }
            for kv in &gone {
                st.kvs.remove(&kv.key);
            }
            let deleted = gone.len() as i64;
            let prev_kvs = if r.prev_kv { gone } else { vec![] };
            Ok(Response::new(pb::DeleteRangeResponse {
                header: st.header(),
                deleted,
                prev_kvs,
            }))
        }

        async fn txn(
            &self,
            _r: Request<pb::TxnRequest>,
        ) -> Result<Response<pb::TxnResponse>, Status> {
            Err(Status::invalid_argument(
                "etcdserver: too many operations in txn request",
            ))
        }

        async fn compact(
            &self,
            r: Request<pb::CompactionRequest>,
        ) -> Result<Response<pb::CompactionResponse>, Status> {
            let r = r.into_inner();
            let mut st = self.st.lock().unwrap();
            if r.revision <= st.compacted {
                return Err(Status::out_of_range(
                    "etcdserver: mvcc: required revision has been compacted",
                ));
            }
            if r.revision > st.rev {
                return Err(Status::out_of_range(
                    "etcdserver: mvcc: required revision is a future revision",
                ));
            }
            st.compacted = r.revision;
            Ok(Response::new(pb::CompactionResponse {
                header: st.header(),
            }))
        }
    }

    fn fresh() -> MemKv {
        let kv = MemKv::default();
        kv.st.lock().unwrap().rev = 1;
        kv
    }

    async fn post(kv: &MemKv, path: &str, body: &str) -> (u16, String) {
        let (st, b) = handle(kv, &Method::POST, path, body.as_bytes())
            .await
            .expect("a gateway path");
        (st, String::from_utf8(b).unwrap())
    }

    const HDR: &str = r#"{"cluster_id":"15875391935852295136","member_id":"7383792418829112008","#;

    #[tokio::test]
    async fn put_then_range_as_etcd_answers() {
        let kv = fresh();
        let (st, b) = post(&kv, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#).await;
        assert_eq!(
            (st, b.as_str()),
            (
                200,
                &*format!(r#"{{"header":{HDR}"revision":"2","raft_term":"2"}}}}"#)
            )
        );
        let (st, b) = post(&kv, "/v3/kv/range", r#"{"key":"Zm9v"}"#).await;
        assert_eq!(st, 200);
        assert_eq!(
            b,
            format!(
                r#"{{"header":{HDR}"revision":"2","raft_term":"2"}},"kvs":[{{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}}],"count":"1"}}"#
            )
        );
        // /v3beta/ is the same gateway; unknown fields and query strings are ignored.
        let (st, b2) = post(&kv, "/v3beta/kv/range?x=1", r#"{"key":"Zm9v","unknown":1}"#).await;
        assert_eq!((st, b2), (200, b));
        let (st, b) = post(
            &kv,
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"Mg==","prev_kv":true}"#,
        )
        .await;
        assert_eq!(st, 200);
        assert!(b.ends_with(r#""prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}}"#), "{b}");
    }

    #[tokio::test]
    async fn service_errors_map_to_etcd_bodies_and_statuses() {
        let kv = fresh();
        let cases = [
            (
                "/v3/kv/range",
                "",
                400,
                r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#,
            ),
            (
                "/v3/kv/range",
                r#"{"key":"YQ==","revision":99}"#,
                400,
                r#"{"error":"etcdserver: mvcc: required revision is a future revision","message":"etcdserver: mvcc: required revision is a future revision","code":11}"#,
            ),
            (
                "/v3/kv/put",
                r#"{"key":"YQ==","value":"Mg==","lease":12345}"#,
                404,
                r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
            ),
            ("/v3/kv/compaction", r#"{"revision":1}"#, 200, ""),
            (
                "/v3/kv/compaction",
                r#"{"revision":1}"#,
                400,
                r#"{"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required revision has been compacted","code":11}"#,
            ),
            (
                "/v3/kv/txn",
                "{}",
                400,
                r#"{"error":"etcdserver: too many operations in txn request","message":"etcdserver: too many operations in txn request","code":3}"#,
            ),
        ];
        for (path, body, status, want) in cases {
            let (st, b) = post(&kv, path, body).await;
            assert_eq!(st, status, "{path} {body}: {b}");
            if !want.is_empty() {
                assert_eq!(b, want, "{path} {body}");
            }
        }
    }

    #[tokio::test]
    async fn bad_bodies_are_go_errors() {
        let kv = fresh();
        let cases = [
            ("xx", "invalid character 'x' looking for beginning of value"),
            (r#"{"key":"YQ==""#, "unexpected EOF"),
            (r#"{"key":"YQ"}"#, "illegal base64 data at input byte 0"),
            (
                r#"{"key":"YQ==","sort_order":"2"}"#,
                r#"unknown value \"2\" for enum etcdserverpb.RangeRequest_SortOrder"#,
            ),
            (
                r#"{"key":"YQ==","limit":1.5}"#,
                "json: cannot unmarshal number 1.5 into Go value of type int64",
            ),
        ];
        for (body, msg) in cases {
            let (st, b) = post(&kv, "/v3/kv/range", body).await;
            assert_eq!(st, 400, "{body}");
            assert_eq!(
                b,
                format!(r#"{{"error":"{msg}","message":"{msg}","code":3}}"#),
                "{body}"
            );
        }
    }

    /// A `Kv` that answers each call with the response etcd gave (read back through the
    /// generated serde impls), so the gateway's own bytes can be compared with etcd's.
    #[derive(Default)]
    struct Replay {
        next: Mutex<Option<Result<String, (i32, String)>>>,
        calls: Mutex<u32>,
    }

    impl Replay {
        fn answer<T: serde::de::DeserializeOwned>(&self) -> Result<Response<T>, Status> {
            *self.calls.lock().unwrap() += 1;
            match self.next.lock().unwrap().take().expect("an answer was set") {
                Ok(json) => Ok(Response::new(
                    serde_json::from_str(&json).expect("etcd's JSON reads back"),
                )),
                Err((code, msg)) => Err(Status::new(tonic::Code::from_i32(code), msg)),
            }
        }
    }

    type KeepAliveStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>,
    >;

    #[tonic::async_trait]
    impl Lease for Replay {
        async fn lease_grant(
            &self,
            _: Request<pb::LeaseGrantRequest>,
        ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
            self.answer()
        }
        async fn lease_revoke(
            &self,
            _: Request<pb::LeaseRevokeRequest>,
        ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
            self.answer()
        }
        type LeaseKeepAliveStream = KeepAliveStream;
        async fn lease_keep_alive(
            &self,
            _: Request<tonic::Streaming<pb::LeaseKeepAliveRequest>>,
        ) -> Result<Response<KeepAliveStream>, Status> {
            Err(Status::unimplemented("not replayed"))
        }
        async fn lease_time_to_live(
            &self,
            _: Request<pb::LeaseTimeToLiveRequest>,
        ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
            self.answer()
        }
        async fn lease_leases(
            &self,
            _: Request<pb::LeaseLeasesRequest>,
        ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
            self.answer()
        }
    }

    #[tonic::async_trait]
    impl Kv for Replay {
        async fn range(
            &self,
            _: Request<pb::RangeRequest>,
        ) -> Result<Response<pb::RangeResponse>, Status> {
            self.answer()
        }
        async fn put(
            &self,
            _: Request<pb::PutRequest>,
        ) -> Result<Response<pb::PutResponse>, Status> {
            self.answer()
        }
        async fn delete_range(
            &self,
            _: Request<pb::DeleteRangeRequest>,
        ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
            self.answer()
        }
        async fn txn(
            &self,
            _: Request<pb::TxnRequest>,
        ) -> Result<Response<pb::TxnResponse>, Status> {
            self.answer()
        }
        async fn compact(
            &self,
            _: Request<pb::CompactionRequest>,
        ) -> Result<Response<pb::CompactionResponse>, Status> {
            self.answer()
        }
    }

    /// Every gateway case of the recorded corpus under `/v3/kv/` or `/v3beta/`: the gateway
    /// reads etcd's request exactly when etcd did (else answers etcd's exact error bytes), and
    /// turns etcd's response, or its error, into etcd's status, headers and bytes.
    #[tokio::test]
    async fn replays_the_recorded_etcd_corpus_byte_for_byte() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../conformance/etcd-3.4.23-v3.jsonl"
        );
        let corpus = std::fs::read_to_string(path).expect("the v3 corpus");
        let kv = Replay::default();
        let mut checked = 0;
        for line in corpus.lines() {
            let rec: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = rec["id"].as_str().unwrap();
            let req = &rec["request"];
            let path = req["path"].as_str().unwrap_or("");
            if rec["kind"] != "gw" || !(path.starts_with("/v3/") || path.starts_with("/v3beta/")) {
                continue;
            }
            if req["body_truncated"] == true || req["headers"].get("Authorization").is_some() {
                continue; // too large to store; auth is not the gateway's business
            }
            if rec["response"].get("lines").is_some() {
                continue; // a stream read for a bounded time (watch, keepalive): end to end only
            }
            let method: Method = req["method"].as_str().unwrap().parse().unwrap();
            let body = req["body"].as_str().unwrap_or("");
            let resp = &rec["response"];
            let status = resp["status"].as_u64().unwrap() as u16;
            let want_body = resp["body_text"].as_str().unwrap();
            let reached_service = resp["headers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h[0] == "Grpc-Metadata-Content-Type" || h[0] == "Trailer");
            *kv.next.lock().unwrap() = Some(if status == 200 {
                Ok(want_body.to_string())
            } else {
                let j = &resp["body_json"];
                Err((
                    j["code"].as_i64().unwrap_or(0) as i32,
                    j["message"].as_str().unwrap_or("").to_string(),
                ))
            });
            let calls = *kv.calls.lock().unwrap();
            let keep_alive = |reqs: Vec<pb::LeaseKeepAliveRequest>| {
                // Each keep-alive answered with the recorded answer's `result`.
                let v: serde_json::Value =
                    serde_json::from_str(want_body.lines().next().unwrap_or("{}"))
                        .unwrap_or_default();
                let one: pb::LeaseKeepAliveResponse =
                    serde_json::from_value(v["result"].clone()).unwrap_or_default();
                *kv.calls.lock().unwrap() += 1;
                kv.next.lock().unwrap().take();
                std::future::ready(reqs.iter().map(|_| Ok(one)).collect::<Vec<_>>())
            };
            let Some(got) =
                handle_services(&kv, &kv, keep_alive, &method, path, body.as_bytes()).await
            else {
                // Another service's route (auth, watch), or not a gateway path at all.
                assert!(!path.contains("/kv/"), "{id}: not ours?");
                continue;
            };
            let called = *kv.calls.lock().unwrap() > calls;
            assert_eq!(called, reached_service, "{id}: service reached?");
            assert_eq!(got.status, status, "{id}");
            if method != Method::HEAD {
                // (a HEAD answer's body is dropped by the HTTP layer)
                assert_eq!(String::from_utf8_lossy(&got.body), want_body, "{id}");
            }
            let want_headers: Vec<(String, String)> = resp["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap().to_string(),
                        h[1].as_str().unwrap().to_string(),
                    )
                })
                .filter(|(k, _)| {
                    !k.starts_with("Access-Control-")
                        && !["Date", "Content-Length", "Transfer-Encoding"].contains(&k.as_str())
                })
                .collect();
            let got_headers: Vec<(String, String)> = got
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got_headers, want_headers, "{id}");
            checked += 1;
        }
        assert!(checked > 150, "only {checked} cases replayed");
    }

    #[tokio::test]
    async fn methods_and_paths() {
        let kv = fresh();
        let get = handle_full(&kv, &Method::GET, "/v3/kv/range", b"")
            .await
            .unwrap();
        assert_eq!(
            (get.status, get.body.as_slice()),
            (405, &b"Method Not Allowed\n"[..])
        );
        assert_eq!(
            get.headers[0],
            ("Content-Type", "text/plain; charset=utf-8")
        );
        for p in ["/v3/kv/range", "/v3/kv/rangex", "/v3/lease/grant"] {
            let opt = handle_full(&kv, &Method::OPTIONS, p, b"").await.unwrap();
            assert_eq!((opt.status, opt.body.len()), (200, 0), "{p}");
        }
        for p in ["/v3/kv/range/", "/v3/kv/Range", "/v3/", "/v3beta/kv/rangex"] {
            let r = handle_full(&kv, &Method::POST, p, b"{}").await.unwrap();
            assert_eq!(
                (r.status, r.body.as_slice()),
                (404, &b"Not Found\n"[..]),
                "{p}"
            );
        }
        for p in [
            "/v2/keys/a",
            "/v3",
            "/v3alpha/kv/range",
            "/version",
            "/v3/watch",
        ] {
            assert!(handle(&kv, &Method::POST, p, b"{}").await.is_none(), "{p}");
        }
        let ok = handle_full(&kv, &Method::POST, "/v3/kv/put", br#"{"key":"YQ=="}"#)
            .await
            .unwrap();
        assert_eq!(ok.headers, vec![JSON, GRPC_META]);
    }

    /// `/v3/lease/keepalive` as etcd 3.4.23 answered it (probed live): each JSON value of the
    /// body one request, each answer a `{"result":...}` line; an empty body is 200 with no
    /// lines; a first value that cannot be read is 500 with code 2; a later one ends the
    /// stream; GET is 405; `/v3/kv/lease/keepalive` does not exist.
    #[tokio::test]
    async fn lease_keepalive_is_a_stream_of_result_lines() {
        let kv = Replay::default();
        let ka = |reqs: Vec<pb::LeaseKeepAliveRequest>| {
            std::future::ready(
                reqs.into_iter()
                    .map(|r| {
                        if r.id == 13 {
                            Err(Status::unavailable("etcdserver: not leader"))
                        } else {
                            Ok(pb::LeaseKeepAliveResponse {
                                header: None,
                                id: r.id,
                                ttl: if r.id == 5 { 0 } else { 60 },
                            })
                        }
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let post = |body: &'static str| {
            let kv = &kv;
            async move {
                handle_services(
                    kv,
                    kv,
                    ka,
                    &Method::POST,
                    "/v3/lease/keepalive",
                    body.as_bytes(),
                )
                .await
                .unwrap()
            }
        };
        let r = post("{\"ID\":5}\n{\"ID\":\"7\"} xx").await;
        assert_eq!((r.status, r.headers.clone()), (200, vec![JSON, GRPC_META]));
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "{\"result\":{\"ID\":\"5\"}}\n{\"result\":{\"ID\":\"7\",\"TTL\":\"60\"}}\n"
        );
        let r = post("").await;
        assert_eq!((r.status, r.headers, r.body.len()), (200, vec![JSON], 0));
        let r = post("xx").await;
        assert_eq!(r.status, 500);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "{\"error\":\"invalid character 'x' looking for beginning of value\",\"message\":\"invalid character 'x' looking for beginning of value\",\"code\":2}"
        );
        let r = post("{\"ID\":13}{\"ID\":1}").await;
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: not leader\",\"http_status\":\"Service Unavailable\"}}\n"
        );
        let get = handle_services(&kv, &kv, ka, &Method::GET, "/v3/lease/leases", b"")
            .await
            .unwrap();
        assert_eq!(get.status, 405);
        let nf = handle_services(&kv, &kv, ka, &Method::POST, "/v3/kv/lease/keepalive", b"{}")
            .await
            .unwrap();
        assert_eq!((nf.status, nf.body.as_slice()), (404, &b"Not Found\n"[..]));
    }
}
