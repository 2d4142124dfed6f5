//! etcd's v3 Watch service: one task per stream, many watchers per stream.
//!
//! A stream's task answers the client's requests (create, cancel, progress) in the order
//! they come, and brings every watcher up to the revision the Ready loop last published
//! ([`crate::watch::Hub`]) before it waits again, so a response for a watcher always
//! follows its `created` response, a revision's events are never split (unless the client
//! asked for `fragment` and they are larger than `--max-request-bytes`), and each watcher's
//! cursor only moves forward. A watcher that has caught up (etcd's synced group) gets each new
//! revision's events in a response of their own, headed with that revision, as etcd's
//! `notify` sends them, while the stream's queue has room for them; one still catching up, or
//! whose stream is backed up (etcd's victims), gets up to [`BATCH_REVISIONS`] revisions per
//! response, headed with the revision published last, as etcd's `syncWatchers` sends them.
//! Responses go through a small bounded channel: a slow client
//! holds its own task back (its watchers fall behind and later catch up from the ring or
//! the keyspace's history), never the Ready loop or other clients.
//!
//! What etcd 3.4 does and detcd does too (`v3rpc/watch.go`, `mvcc/watcher.go`): an empty key
//! means `\0`; a range end of `\0` means every key from the key; a range whose end is not
//! after its key is refused at creation ("mvcc: watcher range is empty", watch id -1); a
//! client-chosen id already in use is refused ("mvcc: duplicate watch ID provided on the
//! WatchStream"); id 0 asks the server to choose (the lowest free id from a counter); a
//! start revision of 0 means the revision after the current one; a watcher whose start
//! revision was compacted gets its `created` response, then one with `compact_revision`
//! and `canceled`; `prev_kv` is the key's value at the revision before the event (absent for
//! a creation or when compacted away); canceling an unknown id answers nothing; when the
//! client closes its side, events keep flowing until it goes away. Where 3.4 answers a
//! progress request at once even while some watcher is still catching up (its revision is
//! then not a bookmark), detcd answers it once every watcher of the stream has caught up to
//! the revision it reports (as etcd 3.5 does).

use std::collections::BTreeMap;
use std::sync::Arc;

use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::watch_server::Watch;
use detcd_proto::mvccpb;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::v3::V3;
use super::Ctx;
use crate::mvcc::{AuthInfo, V3Error};
use crate::watch::{Fetched, HistoryError, Hub, WatcherGuard};

/// etcd's watch id meaning "none" (`clientv3.InvalidWatchID`).
pub const INVALID_WATCH_ID: i64 = -1;
/// etcd's reason for a range that holds no key.
pub const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// etcd's reason for a client-chosen id already in use on the stream.
pub const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// Revisions one watcher is sent at most per response while catching up (etcd's
/// `watchBatchMaxRevs`).
pub const BATCH_REVISIONS: usize = 1000;
/// Events read from the keyspace's history per step while catching up (whole revisions).
const HISTORY_EVENTS: usize = 1000;
/// Responses queued for a client before its task waits for it (etcd's `chanBufLen`).
const QUEUE: usize = 128;
/// etcd's `grpcOverheadBytes`: what a gRPC message may carry beyond `--max-request-bytes`.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// etcd's `ErrGRPCNoLeader`.
pub const NO_LEADER: &str = "etcdserver: no leader";
/// etcd's `rpctypes.MetadataRequireLeaderKey` and the value that asks for a leader: a stream
/// opened with it is refused on a member without a leader, and ended once the member has had
/// none for [`NO_LEADER_CHECKS`] election timeouts in a row (etcd's `monitorLeader`).
pub const REQUIRE_LEADER: (&str, &str) = ("hasleader", "true");
/// etcd's `maxNoLeaderCnt`.
pub(super) const NO_LEADER_CHECKS: u32 = 3;

/// The Watch service of one member.
#[derive(Clone)]
pub struct Watches {
    ctx: Arc<Ctx>,
}

impl Watches {
    /// The service of the member behind `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Watches {
        Watches { ctx }
    }

    /// Serve one watch stream: `requests` are the client's, `v3` the services it is checked
    /// with, `auth` its credentials as [`V3::auth_info`] found them when the stream opened and
    /// `token` the token it carried (each watch created is checked with them as of then,
    /// [`V3::refresh_auth`]), the returned stream its answers. The work runs in its own task
    /// until the answers are dropped.
    /// With `require_leader` (the client's `hasleader` metadata), the stream ends with etcd's
    /// "no leader" error once the member has had no leader for three election timeouts.
    pub fn stream<S>(
        &self,
        requests: S,
        v3: V3,
        auth: Result<Option<AuthInfo>, Status>,
        token: Option<String>,
        require_leader: bool,
    ) -> ResponseStream
    where
        S: Stream<Item = Result<pb::WatchRequest, Status>> + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut session = Session::new(Arc::clone(&self.ctx), tx, v3, auth, token);
        session.require_leader = require_leader;
        crate::rt::spawn(session.run(requests));
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }
}

/// The answers of one watch stream.
pub type ResponseStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Watch for Watches {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        // A member without a leader has refused the stream already (`api::intercepted`);
        // the session ends it if the leader goes.
        let require_leader = requires_leader(&req);
        let v3 = V3::new(Arc::clone(&self.ctx));
        let auth = v3.auth_info(&req).await;
        let token = v3.auth_token(&req).ok().flatten();
        Ok(Response::new(self.stream(
            req.into_inner(),
            v3,
            auth,
            token,
            require_leader,
        )))
    }
}

/// Whether a stream's client asked for a leader (etcd's `hasleader: true` metadata).
pub fn requires_leader<T>(req: &Request<T>) -> bool {
    req.metadata()
        .get(REQUIRE_LEADER.0)
        .is_some_and(|v| v.as_bytes() == REQUIRE_LEADER.1.as_bytes())
}

/// Which keys a watcher follows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keys {
    One(Vec<u8>),
    From(Vec<u8>),
    Range(Vec<u8>, Vec<u8>),
}

impl Keys {
    fn contains(&self, k: &[u8]) -> bool {
        match self {
            Keys::One(key) => k == key.as_slice(),
            Keys::From(key) => k >= key.as_slice(),
            Keys::Range(key, end) => k >= key.as_slice() && k < end.as_slice(),
        }
    }
}

struct Watcher {
    keys: Keys,
    /// The next revision this watcher owes its client.
    next: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    fragment: bool,
    /// Asked for progress notifications.
    progress_notify: bool,
    /// No event was sent since the last progress tick.
    progress_due: bool,
    /// Canceled by a compaction: it sends nothing more, but its ID stays taken until the
    /// client cancels it (etcd keeps a compacted watcher in its stream's set, out of every
    /// group: a cancel is answered, a create with the same ID is a duplicate).
    compacted: bool,
    /// Caught up with the revisions published so far (etcd's synced group): each new
    /// revision's events then go in a response of their own, headed with that revision, as
    /// etcd's `notify` sends them, while the stream's queue has room. A watcher created at a
    /// revision already written is not synced until it has caught up; until then a response
    /// carries up to [`BATCH_REVISIONS`] revisions, headed with the revision published last
    /// (etcd's `syncWatchers`).
    synced: bool,
    _counted: WatcherGuard,
}

struct Session {
    ctx: Arc<Ctx>,
    hub: Arc<Hub>,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    progress_requested: bool,
    cluster_id: u64,
    v3: V3,
    auth: Result<Option<AuthInfo>, Status>,
    /// End the stream when the member has no leader (see [`REQUIRE_LEADER`]).
    require_leader: bool,
    /// The token the stream opened with, if any.
    token: Option<String>,
}

/// Why a session ends early.
enum End {
    /// The client went away.
    Gone,
    /// The member cannot go on (the stream ends with this status).
    Fail(Status),
}

impl Session {
    fn new(
        ctx: Arc<Ctx>,
        tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
        v3: V3,
        auth: Result<Option<AuthInfo>, Status>,
        token: Option<String>,
    ) -> Session {
        let hub = Arc::clone(&ctx.shared.watch_hub);
        let cluster_id = ctx.shared.cluster_id();
        Session {
            ctx,
            hub,
            tx,
            watchers: BTreeMap::new(),
            next_id: 0,
            progress_requested: false,
            cluster_id,
            v3,
            auth,
            require_leader: false,
            token,
        }
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.ctx.shared.id,
            revision,
            raft_term: self.ctx.shared.status().term,
        })
    }

    async fn send(&self, resp: pb::WatchResponse) -> Result<(), End> {
        self.tx.send(Ok(resp)).await.map_err(|_| End::Gone)
    }

    async fn run<S>(mut self, mut requests: S)
    where
        S: Stream<Item = Result<pb::WatchRequest, Status>> + Send + Unpin + 'static,
    {
        let mut published = self.hub.subscribe();
        let mut stopped = self.ctx.shared.stopped.subscribe();
        let mut requests_open = true;
        let interval = self.ctx.watch_progress_interval;
        let clock = self.ctx.shared.clock.clone();
        let mut tick = Box::pin(clock.sleep(interval));
        let election = self.ctx.election_timeout;
        let mut leader_check = Box::pin(clock.sleep(election));
        let mut leaderless = 0u32;
        let end = loop {
            let rev = *published.borrow_and_update();
            if let Err(e) = self.catch_up(rev).await {
                break e;
            }
            tokio::select! {
                r = requests.next(), if requests_open => match r {
                    Some(Ok(req)) => {
                        if let Err(e) = self.handle(req).await {
                            break e;
                        }
                    }
                    // etcd ends the stream on a receive error; on the client's end of
                    // sending it keeps sending events until the client goes away.
                    Some(Err(_)) => break End::Gone,
                    None => requests_open = false,
                },
                r = published.changed() => {
                    if r.is_err() {
                        break End::Fail(Status::unavailable(super::v3::SERVER_STOPPED));
                    }
                }
                _ = &mut tick, if !interval.is_zero() => {
                    if let Err(e) = self.progress_tick().await {
                        break e;
                    }
                    tick = Box::pin(clock.sleep(interval));
                }
                _ = &mut leader_check, if self.require_leader => {
                    if *self.ctx.shared.leader.borrow() == 0 {
                        leaderless += 1;
                        if leaderless >= NO_LEADER_CHECKS {
                            break End::Fail(Status::unavailable(NO_LEADER));
                        }
                    } else {
                        leaderless = 0;
                    }
                    leader_check = Box::pin(clock.sleep(election));
                }
                _ = stopped.changed() => {
                    break End::Fail(Status::unavailable(super::v3::SERVER_STOPPED));
                }
                _ = self.tx.closed() => break End::Gone,
            }
        };
        if let End::Fail(status) = end {
            let _ = self.tx.send(Err(status)).await;
        }
    }

    /// One request of the client.
    async fn handle(&mut self, req: pb::WatchRequest) -> Result<(), End> {
        use pb::watch_request::RequestUnion;
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if self.watchers.remove(&c.watch_id).is_some() {
                    let resp = pb::WatchResponse {
                        header: self.header(self.hub.revision()),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    self.send(resp).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> Result<(), End> {
        let key = if c.key.is_empty() { vec![0] } else { c.key };
        let keys = match c.range_end.as_slice() {
            [] => Keys::One(key),
            [0] => Keys::From(key),
            end => Keys::Range(key, end.to_vec()),
        };
        let rev = self.hub.revision();
        let header = self.header(rev);
        let refuse = |reason: &str| pb::WatchResponse {
            header,
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        // With auth on, the user must be allowed to read the keys (etcd checks the key and
        // range end as it normalised them: an end of `\0` becomes empty, so a watch from a
        // key is checked as that one key).
        let (key, end): (&[u8], &[u8]) = match &keys {
            Keys::One(k) | Keys::From(k) => (k, &[]),
            Keys::Range(k, e) => (k, e),
        };
        let allowed = match &self.auth {
            Ok(Some(ai)) => match self.v3.refresh_auth(ai, self.token.as_deref()).await {
                Ok(ai) => self.v3.check_range(Some(&ai), key, end),
                Err(st) => Err(st),
            },
            Ok(None) => self.v3.check_range(None, key, end),
            Err(st) => Err(st.clone()),
        };
        if let Err(st) = allowed {
            // etcd gives the gRPC error's Go text as the reason.
            let reason = format!("rpc error: code = {:?} desc = {}", st.code(), st.message());
            return self.send(refuse(&reason)).await;
        }
        if let Keys::Range(k, e) = &keys {
            if k >= e {
                return self.send(refuse(EMPTY_RANGE)).await;
            }
        }
        let id = if c.watch_id == 0 {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.watchers.contains_key(&c.watch_id) {
            return self.send(refuse(DUPLICATE_ID)).await;
        } else {
            c.watch_id
        };
        let filters = |f| c.filters.contains(&(f as i32));
        // 0 is "from the next revision". So, in effect, is -1 while nothing was ever
        // compacted (the compacted revision is then -1): etcd reads its history from
        // revision `uint64(-1)`, finds nothing and syncs the watcher at the current
        // revision. Below the compacted revision it is a compaction.
        let next = match c.start_revision {
            0 => rev + 1,
            s if s < 0 && s >= self.hub.compacted() => rev + 1,
            s => s,
        };
        let watcher = Watcher {
            keys,
            next,
            prev_kv: c.prev_kv,
            no_put: filters(pb::watch_create_request::FilterType::Noput),
            no_delete: filters(pb::watch_create_request::FilterType::Nodelete),
            fragment: c.fragment,
            progress_notify: c.progress_notify,
            progress_due: true,
            compacted: false,
            // etcd puts a watcher in its synced group when it starts after the current
            // revision (`startRev > currentRev || startRev == 0`).
            synced: next > rev,
            _counted: self.hub.register(),
        };
        self.watchers.insert(id, watcher);
        let resp = pb::WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..Default::default()
        };
        self.send(resp).await
    }

    /// Bring every watcher up to revision `rev`, a step of at most [`BATCH_REVISIONS`]
    /// revisions per watcher in turn; then answer a pending progress request.
    async fn catch_up(&mut self, rev: i64) -> Result<(), End> {
        loop {
            let behind: Vec<i64> = self
                .watchers
                .iter()
                .filter(|(_, w)| w.next <= rev && !w.compacted)
                .map(|(id, _)| *id)
                .collect();
            if behind.is_empty() {
                break;
            }
            for id in behind {
                self.step(id, rev).await?;
            }
        }
        if self.progress_requested {
            self.progress_requested = false;
            let resp = pb::WatchResponse {
                header: self.header(rev),
                watch_id: INVALID_WATCH_ID,
                ..Default::default()
            };
            self.send(resp).await?;
        }
        Ok(())
    }

    /// Send watcher `id` its events from its cursor on (up to `rev`), or its compaction.
    async fn step(&mut self, id: i64, rev: i64) -> Result<(), End> {
        let Some(w) = self.watchers.get(&id) else {
            return Ok(());
        };
        let shared = Arc::clone(&self.ctx.shared);
        let fetched = self.hub.fetch(w.next, rev, BATCH_REVISIONS, |from, to| {
            history(&shared, from, to)
        });
        match fetched {
            Fetched::Compacted(compacted) => {
                if let Some(w) = self.watchers.get_mut(&id) {
                    w.compacted = true;
                }
                // etcd's answer carries no revision in its header (its syncWatchers sends
                // the compaction without one).
                let resp = pb::WatchResponse {
                    header: self.header(0),
                    watch_id: id,
                    compact_revision: compacted,
                    canceled: true,
                    ..Default::default()
                };
                self.send(resp).await
            }
            Fetched::Failed(e) => {
                tracing::error!(error = %e, "watch: the keyspace's history could not be read");
                Err(End::Fail(Status::internal(e)))
            }
            Fetched::Events { revs, upto } => {
                // The watcher's events, by revision.
                let mut groups: Vec<(i64, Vec<mvccpb::Event>)> = Vec::new();
                for (r, evs) in &revs {
                    let mut mine = Vec::new();
                    for ev in evs.iter() {
                        let Some(kv) = ev.kv.as_ref() else { continue };
                        let put = ev.r#type == mvccpb::event::EventType::Put as i32;
                        if (put && w.no_put) || (!put && w.no_delete) || !w.keys.contains(&kv.key) {
                            continue;
                        }
                        mine.push(ev.clone());
                    }
                    if !mine.is_empty() {
                        groups.push((*r, mine));
                    }
                }
                let (prev_kv, fragment, synced) = (w.prev_kv, w.fragment, w.synced);
                if let Some(w) = self.watchers.get_mut(&id) {
                    w.next = upto + 1;
                    w.synced |= upto >= rev;
                    if !groups.is_empty() {
                        w.progress_due = false;
                    }
                }
                if groups.is_empty() {
                    return Ok(());
                }
                if prev_kv {
                    for (_, events) in groups.iter_mut() {
                        if let Err(e) = self.fill_prev_kv(events) {
                            tracing::error!(error = %e, "watch: a previous value could not be read");
                            return Err(End::Fail(Status::internal(e)));
                        }
                    }
                }
                // etcd's `notify` sends a synced watcher's revision on its own only while the
                // stream's queue has room; when it is full the watcher becomes a victim and its
                // events go later in one response (`moveVictims`). Here: per revision when the
                // queue has room for them all, else in one response, as a victim's.
                let per_revision = synced && self.tx.capacity() >= groups.len();
                let responses: Vec<pb::WatchResponse> = if per_revision {
                    groups
                        .into_iter()
                        .map(|(r, events)| pb::WatchResponse {
                            header: self.header(r),
                            watch_id: id,
                            events,
                            ..Default::default()
                        })
                        .collect()
                } else {
                    vec![pb::WatchResponse {
                        header: self.header(rev),
                        watch_id: id,
                        events: groups.into_iter().flat_map(|(_, evs)| evs).collect(),
                        ..Default::default()
                    }]
                };
                for resp in responses {
                    if fragment {
                        // etcd's limit is the request limit plus gRPC's overhead allowance
                        // (`maxRequestBytes + grpcOverheadBytes`, 512 KiB).
                        for part in
                            fragments(resp, self.ctx.max_request_bytes + GRPC_OVERHEAD_BYTES)
                        {
                            self.send(part).await?;
                        }
                    } else {
                        self.send(resp).await?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Each event's previous value: the key at the revision before it (etcd reads it the
    /// same way; none for a creation, or when that revision was compacted away). A read
    /// that meets damage fails the whole batch: an event without the previous value it has
    /// would be a wrong answer (the `disk-rot` scenario's watchers saw them: seeds 36 and 43
    /// of 100). The member stops on the damage at its next tick; the client resumes the
    /// watch elsewhere.
    fn fill_prev_kv(&self, events: &mut [mvccpb::Event]) -> Result<(), String> {
        let mvcc = self.ctx.shared.mvcc.lock().expect("mvcc lock");
        for ev in events {
            let Some(kv) = ev.kv.as_ref() else { continue };
            let put = ev.r#type == mvccpb::event::EventType::Put as i32;
            if put && kv.create_revision == kv.mod_revision {
                continue;
            }
            let req = pb::RangeRequest {
                key: kv.key.clone(),
                revision: kv.mod_revision - 1,
                ..Default::default()
            };
            match mvcc.range(&req) {
                Ok(r) => ev.prev_kv = r.kvs.into_iter().next(),
                Err(V3Error::Storage(e)) => return Err(e),
                Err(_) => {} // compacted away: no previous value, as etcd
            }
        }
        Ok(())
    }

    /// The periodic progress notification: a watcher that asked for them, saw no event
    /// since the last tick and has caught up gets an empty response at the current
    /// revision.
    async fn progress_tick(&mut self) -> Result<(), End> {
        let rev = self.hub.revision();
        let due: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify && w.progress_due && w.next > rev && !w.compacted)
            .map(|(id, _)| *id)
            .collect();
        for w in self.watchers.values_mut() {
            w.progress_due = true;
        }
        for id in due {
            let resp = pb::WatchResponse {
                header: self.header(rev),
                watch_id: id,
                ..Default::default()
            };
            self.send(resp).await?;
        }
        Ok(())
    }
}

/// A response split, as etcd's `sendFragments`, into parts under `max_bytes` each (at least
/// one event per part), every part but the last marked `fragment`. A response under the
/// limit, or of one event, is sent whole.
fn fragments(resp: pb::WatchResponse, max_bytes: usize) -> Vec<pb::WatchResponse> {
    if resp.encoded_len() < max_bytes || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut shell = resp.clone();
    shell.events.clear();
    shell.fragment = true;
    let mut out = Vec::new();
    let mut cur = shell.clone();
    for ev in resp.events {
        cur.events.push(ev);
        if cur.events.len() > 1 && cur.encoded_len() >= max_bytes {
            let last = cur.events.pop().expect("just pushed");
            out.push(std::mem::replace(&mut cur, shell.clone()));
            cur.events.push(last);
        }
    }
    cur.fragment = false;
    out.push(cur);
    out
}

/// The keyspace's events of revisions `from..=upto`, for some `upto <= to` (whole revisions,
/// at most about [`HISTORY_EVENTS`] events): what the hub reads when its ring no longer holds
/// a watcher's revisions (etcd's `syncWatchers`).
pub(super) fn history(
    shared: &crate::raft::Shared,
    from: i64,
    to: i64,
) -> Result<(Vec<mvccpb::Event>, i64), HistoryError> {
    let mvcc = shared.mvcc.lock().expect("mvcc lock");
    match mvcc.events(from, to, HISTORY_EVENTS) {
        Ok(evs) => {
            let full = evs.len() >= HISTORY_EVENTS;
            let upto = match evs.last().and_then(|e| e.kv.as_ref()) {
                Some(kv) if full => kv.mod_revision,
                _ => to,
            };
            Ok((evs, upto))
        }
        Err(V3Error::Compacted) => Err(HistoryError::Compacted(mvcc.compact_revision())),
        Err(e) => Err(HistoryError::Failed(e.message().to_string())),
    }
}

/// The gateway's `/v3/watch`: the body's requests (one JSON value after another), then a
/// stream of `{"result":…}` lines for as long as the client stays (an error ends it with an
/// `{"error":…}` line). `Err` is the answer when the first request cannot be read.
pub async fn gateway(
    ctx: &Arc<Ctx>,
    authorization: Option<String>,
    body: &[u8],
) -> Result<impl Stream<Item = bytes::Bytes> + Send + 'static, (u16, Vec<u8>)> {
    let reqs =
        super::v3gateway::stream_requests::<pb::WatchRequest>("etcdserverpb.WatchRequest", body)
            .map_err(|body| (500, body))?;
    if ctx.shared.status().is_learner {
        // etcd's stream interceptor refuses a learner's streams before their first message:
        // grpc-gateway then answers with the error's HTTP status and its line, unterminated.
        let st = Status::unavailable(super::NOT_FOR_LEARNER);
        let mut line = super::v3gateway::stream_error_line(&st);
        line.pop();
        return Err((503, line));
    }
    let v3 = V3::for_gateway(Arc::clone(ctx), authorization);
    let auth = v3.auth_info(&Request::new(())).await;
    let token = v3.auth_token(&Request::new(())).ok().flatten();
    let requests = futures::stream::iter(reqs.into_iter().map(Ok));
    let answers = Watches::new(Arc::clone(ctx)).stream(requests, v3, auth, token, false);
    Ok(answers
        .scan(false, |ended, r| {
            if *ended {
                return futures::future::ready(None);
            }
            let line = match r {
                Ok(resp) => super::v3gateway::result_line(&resp),
                Err(st) => {
                    *ended = true;
                    super::v3gateway::stream_error_line(&st)
                }
            };
            futures::future::ready(Some(bytes::Bytes::from(line)))
        })
        .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            kv: Some(mvccpb::KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; value_len],
                mod_revision: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn keys_follow_etcds_ranges() {
        assert!(Keys::One(b"a".to_vec()).contains(b"a"));
        assert!(!Keys::One(b"a".to_vec()).contains(b"ab"));
        assert!(Keys::From(b"b".to_vec()).contains(b"zz"));
        assert!(!Keys::From(b"b".to_vec()).contains(b"a"));
        let r = Keys::Range(b"a/".to_vec(), b"a0".to_vec());
        assert!(r.contains(b"a/x") && !r.contains(b"a0") && !r.contains(b"a"));
    }

    #[test]
    fn fragments_keep_every_event_once_in_order_and_mark_all_but_the_last() {
        let resp = pb::WatchResponse {
            watch_id: 7,
            events: (0..10).map(|i| ev(&format!("k{i}"), 100)).collect(),
            ..Default::default()
        };
        let parts = fragments(resp.clone(), 350);
        assert!(parts.len() > 1, "{} parts", parts.len());
        let keys: Vec<_> = parts
            .iter()
            .flat_map(|p| p.events.iter().map(|e| e.kv.clone().unwrap().key))
            .collect();
        let want: Vec<_> = resp
            .events
            .iter()
            .map(|e| e.kv.clone().unwrap().key)
            .collect();
        assert_eq!(keys, want);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.fragment, i + 1 < parts.len());
            assert_eq!(p.watch_id, 7);
            assert!(p.events.len() == 1 || p.encoded_len() < 350);
        }
        // Under the limit, or a single event: whole.
        assert_eq!(fragments(resp.clone(), 1 << 20).len(), 1);
        let one = pb::WatchResponse {
            events: vec![ev("big", 1000)],
            ..Default::default()
        };
        assert_eq!(fragments(one, 10).len(), 1);
    }
}
