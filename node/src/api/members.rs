//! `/v2/members`: list, add, update peer URLs, remove — as etcd 3.4 answers them. Changes go
//! through Raft conf changes; the answer is sent once the change is applied here.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::{json, read_body, Body, Ctx};
use crate::cluster::{id_hex, member_id, Member};
use crate::raft::Inbox;
use crate::sm::ConfContext;
use crate::transport::{PromoteAnswer, RejoinAnswer, RejoinStep};

/// A member as etcd's JSON shows it (fields in etcd's order).
#[derive(serde::Serialize)]
pub struct MemberJson<'a> {
    id: String,
    name: &'a str,
    #[serde(rename = "peerURLs")]
    peer_urls: &'a [String],
    #[serde(rename = "clientURLs")]
    client_urls: &'a [String],
}

/// A member as etcd's JSON shows it.
pub fn member_json(m: &Member) -> String {
    let j = MemberJson {
        id: id_hex(m.id),
        name: &m.name,
        peer_urls: &m.peer_urls,
        client_urls: &m.client_urls,
    };
    serde_json::to_string(&j).expect("member serialises")
}

fn message(status: StatusCode, msg: &str) -> Response<Body> {
    json(status, serde_json::json!({ "message": msg }).to_string())
}

/// A membership change that does not fit the members, as etcd answers it.
fn refusal((status, msg): crate::cluster::Refusal) -> Response<Body> {
    message(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &msg,
    )
}

#[derive(Deserialize)]
struct MemberBody {
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
}

/// Handle `/v2/members[/...]`.
pub async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let rest = path
        .strip_prefix("/v2/members")
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    let method = req.method().clone();
    match (method, rest.as_str()) {
        (Method::GET, "") => {
            let sm = ctx.shared.sm.lock().expect("sm lock");
            let list: Vec<String> = sm.meta.members.members.values().map(member_json).collect();
            json(
                StatusCode::OK,
                format!("{{\"members\":[{}]}}\n", list.join(",")),
            )
        }
        (Method::GET, "leader") => {
            let leader = ctx.shared.status().leader;
            let sm = ctx.shared.sm.lock().expect("sm lock");
            match sm.meta.members.members.get(&leader) {
                Some(m) if leader != 0 => json(StatusCode::OK, format!("{}\n", member_json(m))),
                _ => message(StatusCode::SERVICE_UNAVAILABLE, "During election"),
            }
        }
        (Method::POST, _) => {
            let urls = match parse_body(req).await {
                Ok(u) => u,
                Err(r) => return r,
            };
            add(ctx, urls).await
        }
        (Method::PUT, id) => {
            let id_text = id.to_string();
            let Some(id) = parse_id(&id_text).filter(|id| {
                ctx.shared
                    .sm
                    .lock()
                    .expect("sm")
                    .meta
                    .members
                    .members
                    .contains_key(id)
            }) else {
                // Body errors come first in etcd only for known ids; unknown ids are 404.
                return message(StatusCode::NOT_FOUND, &format!("No such member: {id_text}"));
            };
            let urls = match parse_body(req).await {
                Ok(u) => u,
                Err(r) => return r,
            };
            update(ctx, id, urls).await
        }
        (Method::DELETE, id) if !id.is_empty() => remove(ctx, id).await,
        _ => {
            let mut r = super::text_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            r.headers_mut()
                .insert("Allow", "GET,POST,DELETE,PUT".parse().expect("header"));
            r
        }
    }
}

fn parse_id(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

async fn parse_body(req: Request<Incoming>) -> Result<Vec<String>, Response<Body>> {
    let ct = req
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if ct != "application/json" {
        return Err(message(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Bad Content-Type {ct}, accept application/json"),
        ));
    }
    let body = read_body(req.into_body()).await?;
    if let Some(e) = super::gojson::syntax_error(&body) {
        return Err(message(StatusCode::BAD_REQUEST, &e));
    }
    let parsed: MemberBody = serde_json::from_slice(&body)
        .map_err(|_| message(StatusCode::BAD_REQUEST, &super::gojson::type_error(&body)))?;
    if parsed.peer_urls.is_empty() {
        return Err(message(StatusCode::BAD_REQUEST, "no valid URLs given"));
    }
    let mut out = Vec::new();
    for u in &parsed.peer_urls {
        match url::Url::parse(u) {
            Ok(p) if ["http", "https", "unix", "unixs"].contains(&p.scheme()) => {
                out.push(crate::cluster::url_string(&p))
            }
            _ => {
                return Err(message(
                    StatusCode::BAD_REQUEST,
                    &format!("URL scheme must be http, https, unix, or unixs: {u}"),
                ))
            }
        }
    }
    Ok(out)
}

/// `check` against the members as this member knows them now.
fn check_members<T>(
    ctx: &Ctx,
    check: impl FnOnce(&crate::cluster::Members) -> Result<T, crate::cluster::Refusal>,
) -> Result<T, crate::cluster::Refusal> {
    check(&ctx.shared.sm.lock().expect("sm lock").meta.members)
}

/// etcd's strict reconfiguration check (`mayAddMember`): adding a voter must not leave the
/// cluster without a quorum of started members, and every current voter must have been
/// reachable for a while.
fn ready_to_add(ctx: &Ctx, learner: bool) -> Result<(), ConfFailure> {
    if !ctx.strict_reconfig_check {
        return Ok(());
    }
    let sm = ctx.shared.sm.lock().expect("sm lock");
    let voters: Vec<&Member> = sm.meta.members.voters().collect();
    // A member is started once it has published its client URLs.
    let started = voters.iter().filter(|m| !m.client_urls.is_empty()).count();
    let after = voters.len() + 1;
    // Growing a 1-member cluster to 2 is allowed (the tutorial's one-by-one method).
    // A learner changes no quorum, but etcd's `mayAddMember` still wants every voter
    // connected.
    let quorum_ok = learner || (started == 1 && after == 2) || started > after / 2;
    // Every other voter must have been reachable for a while (etcd: 5 s).
    let connected = voters
        .iter()
        .map(|m| m.id)
        .filter(|id| *id != ctx.shared.id)
        .all(|id| {
            ctx.transport
                .connected_for(id)
                .is_some_and(|d| d >= RECONFIG_CONNECTED_MIN)
        });
    if !quorum_ok {
        return Err(ConfFailure::NotEnoughStarted);
    }
    if !connected {
        return Err(ConfFailure::Unhealthy);
    }
    Ok(())
}

/// How long every voter must have been connected before a member may be added.
const RECONFIG_CONNECTED_MIN: Duration = Duration::from_secs(5);

/// Why a membership change (v2 members API or v3 Cluster service) did not happen.
#[derive(Debug)]
pub(super) enum ConfFailure {
    /// etcd's strict reconfiguration check: the change would leave the cluster without a
    /// quorum of started members.
    NotEnoughStarted,
    /// etcd's strict reconfiguration check: too few voters have been connected for 5 s.
    Unhealthy,
    /// The change does not fit the members (etcd's HTTP status and message).
    Refused(crate::cluster::Refusal),
    /// A promotion asked of a member that does not lead.
    NotLeader,
    /// A promotion of a learner whose log is behind the leader's.
    LearnerNotReady,
    /// It was not applied before the request timeout.
    Timeout,
}

impl ConfFailure {
    /// The v2 API's answer.
    fn v2(self) -> Response<Body> {
        match self {
            ConfFailure::NotEnoughStarted
            | ConfFailure::Unhealthy
            | ConfFailure::NotLeader
            | ConfFailure::LearnerNotReady => {
                message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
            ConfFailure::Refused(r) => refusal(r),
            ConfFailure::Timeout => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"message": "etcdserver: request timed out"}).to_string(),
            ),
        }
    }
}

/// What a membership change does to an existing member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Adds or removes a member.
    AddRemove,
    /// Changes its peer URLs.
    Update,
    /// Makes a learner a voter.
    Promote,
}

async fn conf_change(
    ctx: &Ctx,
    kind: ConfChangeType,
    member: Member,
    change: Change,
) -> Result<(), ConfFailure> {
    let id = ctx.shared.rng.next_u64() | 1;
    let context = serde_json::to_vec(&ConfContext {
        id,
        member: member.clone(),
        update: change == Change::Update,
        promote: change == Change::Promote,
    })
    .expect("context serialises");
    let mut single = ConfChangeSingle::default();
    single.set_change_type(kind);
    single.node_id = member.id;
    let mut cc = ConfChangeV2::default();
    cc.mut_changes().push(single);
    cc.context = context.clone().into();
    let (tx, rx) = oneshot::channel();
    ctx.shared.waiters.lock().expect("waiters").insert(id, tx);
    let deadline = ctx.shared.clock.now() + ctx.request_timeout;
    let result = async {
        let mut rx = rx;
        loop {
            let (atx, arx) = oneshot::channel();
            if ctx
                .shared
                .inbox
                .send(Inbox::ConfChange {
                    cc: cc.clone(),
                    context: context.clone(),
                    accepted: atx,
                })
                .is_err()
            {
                return Err(());
            }
            if arx.await.unwrap_or(false) {
                return match crate::rt::timeout_at(deadline, &mut rx).await {
                    Ok(Ok(applied)) => Ok(applied.outcome),
                    _ => Err(()),
                };
            }
            if ctx.shared.clock.now() >= deadline {
                return Err(());
            }
            crate::rt::sleep(Duration::from_millis(50)).await;
        }
    }
    .await;
    ctx.shared.waiters.lock().expect("waiters").remove(&id);
    match result {
        Ok(crate::sm::Outcome::ConfRefused(status, msg)) => {
            Err(ConfFailure::Refused((status, msg)))
        }
        Ok(_) => Ok(()),
        Err(()) => Err(ConfFailure::Timeout),
    }
}

/// Add a member with peer URLs `urls` (checked as URLs by the caller): etcd's checks, a new
/// id, the conf change applied here. The member as added. A learner (`learner`) skips the
/// strict reconfiguration check's quorum half (it changes no quorum; every voter must still
/// be connected, as etcd's `mayAddMember` wants) and there may be only
/// [`crate::cluster::MAX_LEARNERS`] of them.
pub(super) async fn add_member(
    ctx: &Ctx,
    urls: Vec<String>,
    learner: bool,
) -> Result<Member, ConfFailure> {
    ready_to_add(ctx, learner)?;
    // In etcd's order (`ValidateConfigurationChange`): the peer URLs, then the learners.
    check_members(ctx, |m| m.check_urls(&urls, None)).map_err(ConfFailure::Refused)?;
    if learner {
        check_members(ctx, |m| m.check_learner_room()).map_err(ConfFailure::Refused)?;
    }
    let salt = ctx.shared.rng.next_u64();
    let id = member_id(&urls, &ctx.token, Some(salt));
    let member = Member {
        id,
        name: String::new(),
        peer_urls: urls,
        client_urls: vec![],
        is_learner: learner,
    };
    conf_change(ctx, add_kind(learner), member.clone(), Change::AddRemove).await?;
    Ok(member)
}

/// The conf change that adds (or updates) a member as a learner or a voter.
fn add_kind(learner: bool) -> ConfChangeType {
    if learner {
        ConfChangeType::AddLearnerNode
    } else {
        ConfChangeType::AddNode
    }
}

/// How far a learner's log must have caught up with the leader's before it may be promoted
/// (etcd's `readyPercent`).
const LEARNER_READY: f64 = 0.9;

/// Promote the learner `id` to a voter, as etcd's `PromoteMember` does: only the leader
/// knows how far a learner is, so a follower forwards the promotion to the leader over the
/// peer port (etcd's `/members/promote/<id>`), asking again while there is no leader or the
/// leader changed, until the request timeout; once promoted it waits until it has applied
/// the promotion itself, so its answer's member list shows it.
pub(super) async fn promote_member(ctx: &Ctx, id: u64) -> Result<(), ConfFailure> {
    let deadline = ctx.shared.clock.now() + ctx.request_timeout;
    loop {
        let now = ctx.shared.clock.now();
        if now >= deadline {
            return Err(ConfFailure::Timeout);
        }
        let leader = ctx.shared.status().leader;
        let answer = if leader == ctx.shared.id {
            match promote_on_leader(ctx, id).await {
                Err(ConfFailure::NotLeader) => None,
                done => return done,
            }
        } else if leader != 0 {
            match ctx
                .transport
                .forward_promote(leader, id, deadline - now)
                .await
            {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::debug!(error = %e, "forwarding a promotion to the leader failed");
                    None
                }
            }
        } else {
            None
        };
        match answer {
            Some(PromoteAnswer::Promoted) => {
                // Promoted; the barrier only makes this member's member list show it (the
                // answer is Ok either way, as etcd's is once the leader said so).
                let left = deadline.saturating_duration_since(ctx.shared.clock.now());
                let _ = ctx.shared.read_barrier(left, ctx.read_retry).await;
                return Ok(());
            }
            Some(PromoteAnswer::LearnerNotReady) => return Err(ConfFailure::LearnerNotReady),
            Some(PromoteAnswer::Refused(code, msg)) => {
                return Err(ConfFailure::Refused((code, msg)))
            }
            Some(PromoteAnswer::Failed(why)) => {
                tracing::debug!(%why, "the leader did not promote; asking again");
            }
            Some(PromoteAnswer::NotLeader) | None => {}
        }
        crate::rt::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader's answer to a promotion a follower forwarded.
pub async fn answer_promote(ctx: &Ctx, id: u64) -> PromoteAnswer {
    match promote_on_leader(ctx, id).await {
        Ok(()) => PromoteAnswer::Promoted,
        Err(ConfFailure::NotLeader) => PromoteAnswer::NotLeader,
        Err(ConfFailure::LearnerNotReady) => PromoteAnswer::LearnerNotReady,
        Err(ConfFailure::Refused((code, msg))) => PromoteAnswer::Refused(code, msg),
        Err(other) => PromoteAnswer::Failed(format!("{other:?}")),
    }
}

/// A damaged member's rejoin step (see `crate::rejoin`), taken by this member: the same
/// membership changes an operator makes with `DELETE` and `POST /v2/members`, with the
/// same checks (the strict reconfiguration check among them). The member is found by its
/// peer URLs, as it may no longer know its id; an ask whose answer was lost finds the
/// change already made and answers as if it made it.
pub async fn answer_rejoin(ctx: &Ctx, step: RejoinStep) -> RejoinAnswer {
    let with_urls = |urls: &[String]| {
        let sm = ctx.shared.sm.lock().expect("sm lock");
        sm.meta.members.by_peer_urls(urls).map(|m| m.id)
    };
    let failed = |f: ConfFailure| match f {
        ConfFailure::Refused((_, msg)) => RejoinAnswer::Failed(msg),
        other => RejoinAnswer::Failed(format!("{other:?}")),
    };
    // What this member knows of the membership must be at least what the cluster had
    // committed when the ask came (Raft's ReadIndex): a member behind in applying would
    // still show the old id after another member removed it (the Add step would then hand
    // the old id back as "added": `swarm` seed 17, a follower paused in its apply loop), or
    // not show yet a member another one has added.
    if let Err(e) = ctx
        .shared
        .read_barrier(ctx.request_timeout, ctx.read_retry)
        .await
    {
        return RejoinAnswer::Failed(format!(
            "this member could not catch up with the cluster's commits: {e:?}"
        ));
    }
    match step {
        RejoinStep::Remove(urls) => match with_urls(&urls) {
            None => RejoinAnswer::Removed(None),
            Some(id) if id == ctx.shared.id => RejoinAnswer::Failed(format!(
                "peer URLs {} are this running member's own",
                urls.join(",")
            )),
            Some(id) => match remove_member(ctx, id).await {
                Ok(()) => {
                    tracing::warn!(member = %id_hex(id), peer_urls = %urls.join(","),
                        "removed a member whose storage is damaged, at its own request; it rejoins under a new id");
                    RejoinAnswer::Removed(Some(id))
                }
                Err(f) => failed(f),
            },
        },
        RejoinStep::Add(urls) => {
            let id = match with_urls(&urls) {
                Some(id) => id,
                None => match add_member(ctx, urls.clone(), false).await {
                    Ok(m) => {
                        tracing::info!(member = %id_hex(m.id), peer_urls = %urls.join(","),
                            "added back a member whose storage was damaged, under a new id");
                        m.id
                    }
                    Err(f) => return failed(f),
                },
            };
            let sm = ctx.shared.sm.lock().expect("sm lock");
            RejoinAnswer::Added {
                id,
                cluster_id: sm.meta.cluster_id,
                members: sm.meta.members.clone(),
            }
        }
    }
}

/// [`promote_member`] on the leader: the learner must be in sync with the leader's log
/// (matched ≥ 90 % of the leader's), the promotion must leave a quorum of started voters,
/// then the conf change (checked again when it applies: a member, and a learner).
/// `NotLeader` when this member does not lead.
async fn promote_on_leader(ctx: &Ctx, id: u64) -> Result<(), ConfFailure> {
    {
        let (tx, rx) = oneshot::channel();
        if ctx.shared.inbox.send(Inbox::Progress(tx)).is_err() {
            return Err(ConfFailure::NotLeader);
        }
        // The loop answers between two turns; a loop that stopped drops the question.
        let progress = rx.await.unwrap_or_default();
        if progress.is_empty() {
            return Err(ConfFailure::NotLeader);
        }
        let matched = |who: u64| progress.iter().find(|(i, _)| *i == who).map(|(_, m)| *m);
        if let Some(learner) = matched(id) {
            let leader = matched(ctx.shared.id).unwrap_or(0);
            if (learner as f64) < (leader as f64) * LEARNER_READY {
                return Err(ConfFailure::LearnerNotReady);
            }
        }
    }
    if ctx.strict_reconfig_check {
        // etcd's IsReadyToPromoteMember: the started voters must be a quorum of the voters
        // the cluster will have, the learner counted as one of them and as started.
        let sm = ctx.shared.sm.lock().expect("sm lock");
        let (n, started) = sm.meta.members.voters().fold((1, 1), |(n, s), m| {
            (n + 1, s + usize::from(!m.client_urls.is_empty()))
        });
        if started < n / 2 + 1 {
            return Err(ConfFailure::NotEnoughStarted);
        }
    }
    let member =
        check_members(ctx, |m| m.check_promote(id).cloned()).map_err(ConfFailure::Refused)?;
    let member = Member {
        is_learner: false,
        ..member
    };
    conf_change(ctx, ConfChangeType::AddNode, member, Change::Promote).await
}

/// Change member `id`'s peer URLs to `urls`.
pub(super) async fn update_member(
    ctx: &Ctx,
    id: u64,
    urls: Vec<String>,
) -> Result<(), ConfFailure> {
    check_members(ctx, |m| m.check_add(id, &urls, true)).map_err(ConfFailure::Refused)?;
    // A learner's update must not make it a voter: its conf change is AddLearnerNode (raft
    // leaves an existing learner as it is, as it leaves an existing voter on AddNode).
    let is_learner = check_members(ctx, |m| {
        Ok(m.members.get(&id).is_some_and(|m| m.is_learner))
    })
    .map_err(ConfFailure::Refused)?;
    let member = Member {
        id,
        name: String::new(),
        peer_urls: urls,
        client_urls: vec![],
        is_learner,
    };
    conf_change(ctx, add_kind(is_learner), member, Change::Update).await
}

/// Remove member `id`.
pub(super) async fn remove_member(ctx: &Ctx, id: u64) -> Result<(), ConfFailure> {
    let member =
        check_members(ctx, |m| m.check_remove(id).cloned()).map_err(ConfFailure::Refused)?;
    ready_to_remove(ctx, id)?;
    conf_change(ctx, ConfChangeType::RemoveNode, member, Change::AddRemove).await
}

/// etcd's strict reconfiguration check for a removal (`mayRemoveMember`): a learner may always
/// go; a voter only if the started voters left form a quorum of the voters left
/// (`IsReadyToRemoveVotingMember`), and, unless it is down (not connected now, and not this
/// member), only if the voters connected for 5 s, this member counted, stay a quorum without
/// it. (Removing the last voter, or one of two while the other is down, is refused here
/// rather than proposed and dropped by Raft.)
fn ready_to_remove(ctx: &Ctx, id: u64) -> Result<(), ConfFailure> {
    if !ctx.strict_reconfig_check {
        return Ok(());
    }
    let sm = ctx.shared.sm.lock().expect("sm lock");
    let members = &sm.meta.members;
    if members.members.get(&id).is_some_and(|m| m.is_learner) {
        return Ok(());
    }
    let voters: Vec<&Member> = members.voters().collect();
    let others = voters.iter().filter(|m| m.id != id);
    let (left, started) = others.fold((0, 0), |(n, s), m| {
        (n + 1, s + usize::from(!m.client_urls.is_empty()))
    });
    if started < left / 2 + 1 {
        return Err(ConfFailure::NotEnoughStarted);
    }
    if id != ctx.shared.id && ctx.transport.connected_for(id).is_none() {
        return Ok(());
    }
    let active = voters
        .iter()
        .filter(|m| {
            m.id == ctx.shared.id
                || ctx
                    .transport
                    .connected_for(m.id)
                    .is_some_and(|d| d >= RECONFIG_CONNECTED_MIN)
        })
        .count();
    if active.saturating_sub(1) < 1 + voters.len().saturating_sub(1) / 2 {
        return Err(ConfFailure::Unhealthy);
    }
    Ok(())
}

async fn add(ctx: &Ctx, urls: Vec<String>) -> Response<Body> {
    match add_member(ctx, urls, false).await {
        Ok(member) => json(StatusCode::CREATED, format!("{}\n", member_json(&member))),
        Err(f) => f.v2(),
    }
}

async fn update(ctx: &Ctx, id: u64, urls: Vec<String>) -> Response<Body> {
    match update_member(ctx, id, urls).await {
        Ok(()) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(super::full(""))
            .expect("response"),
        Err(f) => f.v2(),
    }
}

async fn remove(ctx: &Ctx, id_text: &str) -> Response<Body> {
    let Some(id) = parse_id(id_text) else {
        return message(StatusCode::NOT_FOUND, &format!("No such member: {id_text}"));
    };
    match remove_member(ctx, id).await {
        Ok(()) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(super::full(""))
            .expect("response"),
        Err(f) => f.v2(),
    }
}
