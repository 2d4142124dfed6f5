//! The v3 watch stream that resumes across member failures, and the lease keep-alive task.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::lease_client::LeaseClient;
use detcd_proto::etcdserverpb::watch_client::WatchClient;
use detcd_rt::watch as signal;
use futures::Stream;
use tokio::sync::mpsc;

use super::error::{classify, Failed};
use super::types::{Event, Header, RangeEnd};
use super::{keep_alive_period, Client};
use crate::Error;

/// Options of a watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// The range's end.
    pub range_end: RangeEnd,
    /// The first revision to report (0: changes after the watch is created).
    pub start_revision: i64,
    /// Report each key's previous state with its change.
    pub prev_kv: bool,
    /// Leave out puts.
    pub no_put: bool,
    /// Leave out deletes.
    pub no_delete: bool,
    /// Ask the server for periodic progress notifications (they are not yielded; they keep
    /// a quiet watch from being mistaken for a dead one).
    pub progress_notify: bool,
}

#[allow(missing_docs)]
impl WatchOptions {
    pub fn new() -> WatchOptions {
        WatchOptions::default()
    }
    pub fn prefix(mut self) -> Self {
        self.range_end = RangeEnd::Prefix;
        self
    }
    pub fn from_key(mut self) -> Self {
        self.range_end = RangeEnd::FromKey;
        self
    }
    pub fn range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range_end = RangeEnd::End(end.into());
        self
    }
    pub fn start_revision(mut self, r: i64) -> Self {
        self.start_revision = r;
        self
    }
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
    pub fn no_put(mut self) -> Self {
        self.no_put = true;
        self
    }
    pub fn no_delete(mut self) -> Self {
        self.no_delete = true;
        self
    }
    pub fn progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }
}

/// A batch of events: everything one revision (or several) changed, in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchResponse {
    /// The header of the answer that carried the events.
    pub header: Header,
    /// The events, in revision order; a revision is never split across two batches.
    pub events: Vec<Event>,
}

#[derive(Debug, Default)]
struct WatchInfo {
    endpoint: Option<String>,
    next: i64,
    reconnects: u64,
}

/// A watch: a `Stream` of [`WatchResponse`]s (see [`Client::watch`]).
///
/// The stream is created again, on the next endpoint and from the last revision seen + 1,
/// whenever it breaks (the member died, the connection was cut) or stays silent past
/// [`crate::Config::watch_timeout`] and then leaves a progress request unanswered for
/// [`crate::Config::timeout`]. Events are yielded exactly once, in revision order: a batch
/// never repeats a revision already yielded. It ends after one error: the watch was
/// cancelled ([`Error::Compacted`] when its revision was compacted away, or
/// [`Error::WatchCanceled`]). It holds no task: it makes progress only while polled.
pub struct Watch {
    stream: Pin<Box<dyn Stream<Item = Result<WatchResponse, Error>> + Send>>,
    info: Arc<Mutex<WatchInfo>>,
}

impl Watch {
    /// The endpoint the watch stream is open on (None before the first connection and
    /// between two).
    pub fn endpoint(&self) -> Option<String> {
        self.info.lock().expect("watch info").endpoint.clone()
    }

    /// The revision the watch would resume from: the last one yielded + 1 (0 while it has
    /// not been created yet and started from "now").
    pub fn next_revision(&self) -> i64 {
        self.info.lock().expect("watch info").next
    }

    /// How many times the stream was created again after it broke.
    pub fn reconnects(&self) -> u64 {
        self.info.lock().expect("watch info").reconnects
    }
}

impl Stream for Watch {
    type Item = Result<WatchResponse, Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

/// A request stream fed from a channel (it stays open while the sender lives: closing the
/// request side is not how a watch or keep-alive ends).
fn requests<T: Send + 'static>(rx: mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

struct Open {
    at: usize,
    tx: mpsc::UnboundedSender<pb::WatchRequest>,
    answers: tonic::Streaming<pb::WatchResponse>,
    awaiting_progress: bool,
}

struct State {
    client: Client,
    key: Vec<u8>,
    o: WatchOptions,
    next: i64,
    open: Option<Open>,
    fragments: Vec<Event>,
    done: bool,
    backoff: Duration,
    connected_once: bool,
    info: Arc<Mutex<WatchInfo>>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl State {
    fn create(&self) -> pb::WatchRequest {
        use pb::watch_create_request::FilterType;
        let mut filters = Vec::new();
        if self.o.no_put {
            filters.push(FilterType::Noput as i32);
        }
        if self.o.no_delete {
            filters.push(FilterType::Nodelete as i32);
        }
        pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    range_end: self.o.range_end.bytes(&self.key),
                    key: self.key.clone(),
                    start_revision: self.next,
                    progress_notify: self.o.progress_notify,
                    filters,
                    prev_kv: self.o.prev_kv,
                    watch_id: 0,
                    fragment: false,
                },
            )),
        }
    }

    async fn connect(&mut self) -> Result<(), Error> {
        let (at, ch) = self.client.channel().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(self.create());
        let timeout = self.client.config().timeout;
        // etcd's `WithRequireLeader`: a member without a leader refuses the watch, and
        // etcd cancels a watch stream whose member lost its leader, so a watch does not sit
        // on a member cut off from the cluster.
        let mut req = tonic::Request::new(requests(rx));
        req.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let r = detcd_rt::timeout(timeout, WatchClient::new(ch).watch(req)).await;
        let answers = match r {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(st)) => {
                self.client.failed(at);
                return Err(match classify(&st) {
                    Failed::Answer(g) => Error::Grpc(g),
                    Failed::Transport(e) => Error::Unavailable(e),
                });
            }
            Err(_) => {
                self.client.failed(at);
                return Err(Error::Unavailable(format!(
                    "{}: watch not answered within {timeout:?}",
                    self.client.endpoint_url(at)
                )));
            }
        };
        self.fragments.clear();
        self.open = Some(Open {
            at,
            tx,
            answers,
            awaiting_progress: false,
        });
        let mut info = self.info.lock().expect("watch info");
        info.endpoint = Some(self.client.endpoint_url(at));
        if self.connected_once {
            info.reconnects += 1;
        }
        self.connected_once = true;
        Ok(())
    }

    fn drop_stream(&mut self, why: &str) {
        if let Some(o) = self.open.take() {
            tracing::debug!(endpoint = %self.client.endpoint_url(o.at), next = self.next, why,
                "detcd-client v3: watch stream lost; resuming on the next endpoint");
            self.client.failed(o.at);
        }
        self.info.lock().expect("watch info").endpoint = None;
    }

    /// What one answer means: an item to yield, or nothing (created, progress, a fragment).
    fn handle(&mut self, r: pb::WatchResponse) -> Option<Result<WatchResponse, Error>> {
        let header = Header::from_pb(r.header);
        if r.created && self.next == 0 {
            self.next = header.revision + 1;
            self.info.lock().expect("watch info").next = self.next;
        }
        if r.canceled {
            self.done = true;
            self.open = None;
            return Some(Err(if r.compact_revision > 0 {
                Error::Compacted {
                    compact_revision: r.compact_revision,
                }
            } else {
                Error::WatchCanceled(r.cancel_reason)
            }));
        }
        self.fragments
            .extend(r.events.into_iter().map(Event::from_pb));
        if r.fragment {
            return None;
        }
        let next = self.next;
        let mut events = std::mem::take(&mut self.fragments);
        // Never yield a revision twice (a resumed stream starts at `next`, so this only
        // guards against a server that would repeat one).
        events.retain(|e| e.kv.mod_revision >= next);
        let last = events.last()?.kv.mod_revision;
        self.next = last + 1;
        self.info.lock().expect("watch info").next = self.next;
        Some(Ok(WatchResponse { header, events }))
    }

    async fn next_item(&mut self) -> Option<Result<WatchResponse, Error>> {
        let cfg_timeout = self.client.config().timeout;
        let idle = self.client.config().watch_timeout;
        loop {
            if self.done {
                return None;
            }
            if self.open.is_none() {
                if let Err(e) = self.connect().await {
                    tracing::debug!(error = %e, "detcd-client v3: watch not created; retrying");
                    detcd_rt::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
            let open = self.open.as_mut().expect("open");
            let wait = if open.awaiting_progress {
                cfg_timeout
            } else {
                idle
            };
            match detcd_rt::timeout(wait, open.answers.message()).await {
                Ok(Ok(Some(r))) => {
                    open.awaiting_progress = false;
                    self.backoff = BACKOFF_MIN;
                    if let Some(item) = self.handle(r) {
                        return Some(item);
                    }
                }
                Ok(Ok(None)) => self.drop_stream("the stream ended"),
                Ok(Err(st)) => {
                    let why = match classify(&st) {
                        Failed::Answer(g) => g.to_string(),
                        Failed::Transport(e) => e,
                    };
                    self.drop_stream(&why);
                    detcd_rt::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
                Err(_) if !open.awaiting_progress => {
                    // Silent for a while: a quiet key, or a dead member? Ask.
                    let progress = pb::WatchRequest {
                        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                            pb::WatchProgressRequest {},
                        )),
                    };
                    if open.tx.send(progress).is_err() {
                        self.drop_stream("the request stream closed");
                    } else {
                        open.awaiting_progress = true;
                    }
                }
                Err(_) => self.drop_stream("no answer to a progress request"),
            }
        }
    }
}

pub(crate) fn watch(client: Client, key: Vec<u8>, o: WatchOptions) -> Watch {
    let info = Arc::new(Mutex::new(WatchInfo {
        next: o.start_revision,
        ..WatchInfo::default()
    }));
    let state = State {
        client,
        key,
        next: o.start_revision,
        o,
        open: None,
        fragments: Vec::new(),
        done: false,
        backoff: BACKOFF_MIN,
        connected_once: false,
        info: Arc::clone(&info),
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        let item = s.next_item().await?;
        Some((item, s))
    });
    Watch {
        stream: Box::pin(stream),
        info,
    }
}

/// Where a lease kept alive by [`KeepAlive`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveState {
    /// Not renewed yet.
    Pending,
    /// Renewed; the TTL the last renewal answered.
    Alive {
        /// Seconds.
        ttl: i64,
    },
    /// The lease no longer exists (it expired or was revoked); the task has ended.
    Gone,
}

/// A lease kept alive by a task (see [`Client::lease_keep_alive`]): renewed every third of
/// its TTL over a keep-alive stream, which moves to the next endpoint when it breaks or an
/// answer does not come within [`crate::Config::timeout`]. Dropping it (or [`Self::stop`])
/// stops renewing; the lease then expires by itself.
pub struct KeepAlive {
    id: i64,
    state: signal::Receiver<KeepAliveState>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAlive {
    /// The lease's id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Where it stands.
    pub fn state(&self) -> KeepAliveState {
        *self.state.borrow()
    }

    /// Wait until the lease is gone (expired or revoked).
    pub async fn gone(&mut self) {
        let _ = self
            .state
            .wait_for(|s| matches!(s, KeepAliveState::Gone))
            .await;
    }

    /// Wait for the state to change (false if the task ended without a change).
    pub async fn changed(&mut self) -> bool {
        self.state.changed().await.is_ok()
    }

    /// Stop renewing (as dropping does).
    pub fn stop(self) {}
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn keep_alive(client: Client, id: i64) -> KeepAlive {
    let (tx, state) = signal::channel(KeepAliveState::Pending);
    let task = detcd_rt::spawn(async move {
        let timeout = client.config().timeout;
        loop {
            let (at, ch) = match client.channel().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, lease = id, "keep-alive: no endpoint; retrying");
                    detcd_rt::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let (req_tx, req_rx) = mpsc::unbounded_channel();
            let _ = req_tx.send(pb::LeaseKeepAliveRequest { id });
            let mut answers = match detcd_rt::timeout(
                timeout,
                LeaseClient::new(ch).lease_keep_alive(requests(req_rx)),
            )
            .await
            {
                Ok(Ok(r)) => r.into_inner(),
                _ => {
                    client.failed(at);
                    detcd_rt::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            loop {
                match detcd_rt::timeout(timeout, answers.message()).await {
                    Ok(Ok(Some(r))) if r.ttl <= 0 => {
                        let _ = tx.send(KeepAliveState::Gone);
                        return;
                    }
                    Ok(Ok(Some(r))) => {
                        let _ = tx.send(KeepAliveState::Alive { ttl: r.ttl });
                        detcd_rt::sleep(keep_alive_period(r.ttl)).await;
                        if req_tx.send(pb::LeaseKeepAliveRequest { id }).is_err() {
                            break;
                        }
                    }
                    _ => {
                        tracing::debug!(lease = id, endpoint = %client.endpoint_url(at),
                            "keep-alive stream lost; next endpoint");
                        client.failed(at);
                        break;
                    }
                }
            }
        }
    });
    KeepAlive { id, state, task }
}
