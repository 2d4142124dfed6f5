//! Peer transport: Raft messages between members over TCP.
//!
//! Each member dials every other member once (one outgoing stream per peer, used only for
//! sending) and accepts the others' streams on its peer URL (used only for receiving). A
//! stream starts with a hello frame `{cluster_id, from, to}`; after it, each frame is
//! `[len u32 LE][protobuf raft Message]`.
//!
//! Defences (raft-rs pulls in protobuf 2.x, RUSTSEC-2024-0437: deeply nested input can
//! overflow the stack while parsing): a frame over [`FRAME_BYTES_MAX`] closes the stream
//! before anything is parsed; a hello from another cluster, or from a member removed from
//! this one, closes the stream, so no stranger's bytes ever reach the protobuf parser.
//!
//! Sending never blocks the Ready loop: messages go to a bounded per-peer queue; a full queue
//! or a dead stream drops messages (Raft retransmits) and reports the peer unreachable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::cluster::Members;
use crate::raft::{Counters, Inbox};
use crate::rt::{self, FlushFilter};

/// Largest frame accepted (a snapshot of a large store is the biggest message).
pub const FRAME_BYTES_MAX: usize = 512 << 20;
/// Largest hello frame.
const HELLO_BYTES_MAX: usize = 4096;
/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 8192;
/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a single frame write may take before the stream is declared dead: a peer behind
/// a partition does not fail writes, its connection's buffers fill and the writer waits (in
/// the simulator too: its streams hold at most `madsim::net::TCP_WINDOW_BYTES` unread).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The first frame of a stream. `to == 0` asks for the cluster's membership instead of
/// opening a message stream (a member joining with `--initial-cluster-state existing` does
/// that to learn its id and the cluster's).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Hello {
    cluster_id: u64,
    from: u64,
    to: u64,
    #[serde(default)]
    token: String,
    /// A lease request for the leader instead of a message stream (with `to` 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseFwd>,
    /// A round-trip probe instead of a message stream (with `to` 0): each frame the
    /// prober writes is written back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    probe: bool,
    /// A promotion of this learner for the leader instead of a message stream (with `to` 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    promote: Option<u64>,
    /// A step of a damaged member's rejoin instead of a message stream (with `to` 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejoin: Option<RejoinStep>,
}

/// A step of the rejoin of a member whose log or snapshot is damaged (detcd's own; etcd
/// leaves this to the operator): it asks a running member to make the cluster forget it,
/// then to add it back under a new id, and joins as a new member (see `crate::rejoin`).
/// Both steps are idempotent, so a member that crashes mid-way asks again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejoinStep {
    /// Remove the member with these peer URLs, if the cluster has one.
    Remove(Vec<String>),
    /// Add a member with these peer URLs, unless the cluster already has one (added by an
    /// earlier ask whose answer was lost).
    Add(Vec<String>),
}

/// The answer to a [`RejoinStep`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RejoinAnswer {
    /// No member has the URLs (any more); `Some(id)` when this ask removed member `id`.
    Removed(Option<u64>),
    /// The member with the URLs, as added, and the cluster once the addition applied on the
    /// member that answers.
    Added {
        /// The new member's id.
        id: u64,
        /// The cluster's id.
        cluster_id: u64,
        /// The members, the new one among them.
        members: Members,
    },
    /// Not done now (no leader, the strict reconfiguration check, a timeout, a refusal):
    /// why. The member asks again, this member or another.
    Failed(String),
}

/// How a member answers rejoin steps (set by the client API once it runs).
pub type RejoinHandler =
    Arc<dyn Fn(RejoinStep) -> futures::future::BoxFuture<'static, RejoinAnswer> + Send + Sync>;

/// A lease request a follower forwards to the leader, which alone keeps lease deadlines
/// (etcd's peer endpoints `/leases` for KeepAlive and `/leases/internal` for TimeToLive).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseFwd {
    /// KeepAlive (renew) rather than TimeToLive.
    pub keep_alive: bool,
    /// Lease ID.
    pub id: i64,
    /// TimeToLive: list the attached keys.
    pub keys: bool,
}

/// The leader's answer to a [`LeaseFwd`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseAnswer {
    /// The member asked is not (or not yet) the leader's lessor: ask again.
    pub not_leader: bool,
    /// KeepAlive: the lease expired and its revocation has not applied yet: ask again
    /// (etcd's `Renew` waits for the revocation, then answers TTL 0).
    #[serde(default)]
    pub revoking: bool,
    /// KeepAlive: the TTL (0: no such lease); TimeToLive: seconds left (-1: no such lease).
    pub ttl: i64,
    /// TimeToLive: the granted TTL.
    pub granted_ttl: i64,
    /// TimeToLive with keys: the attached keys.
    pub keys: Vec<Vec<u8>>,
}

/// How long the leader holds a forwarded KeepAlive on an expired lease waiting for its
/// revocation before it answers `revoking` (below [`Transport::forward_lease`]'s 2 s limit),
/// and how often it looks meanwhile.
const LEASE_WAIT_MAX: Duration = Duration::from_millis(1500);
const LEASE_WAIT_POLL: Duration = Duration::from_millis(20);

/// How the leader answers forwarded lease requests (set by the client API once it runs).
pub type LeaseHandler = Arc<dyn Fn(&LeaseFwd) -> LeaseAnswer + Send + Sync>;

/// The leader's answer to a promotion a follower forwarded (etcd's peer endpoint
/// `/members/promote/<id>`: only the leader knows whether the learner is in sync).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromoteAnswer {
    /// Promoted: the conf change applied on the leader.
    Promoted,
    /// The member asked does not lead (any more): ask the leader again.
    NotLeader,
    /// etcd's `ErrLearnerNotReady`.
    LearnerNotReady,
    /// The promotion does not fit the members (etcd's HTTP status and message: not found,
    /// not a learner).
    Refused(u16, String),
    /// Any other failure (not enough started members, a timeout on the leader): etcd's
    /// follower keeps asking until its own request timeout.
    Failed(String),
}

/// How the leader answers forwarded promotions (set by the client API once it runs).
pub type PromoteHandler =
    Arc<dyn Fn(u64) -> futures::future::BoxFuture<'static, PromoteAnswer> + Send + Sync>;

/// The answer to a membership request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Why the request was refused, if it was.
    pub error: Option<String>,
    /// The cluster id.
    pub cluster_id: u64,
    /// Its members.
    pub members: Members,
}

/// Members not in this member's membership whose addresses it looks up at once, at most
/// (see `Transport::learn_remote`): a stream from one more is refused.
const UNKNOWN_MAX: usize = 8;

/// How often an idle stream carries an empty keep-alive frame, so a dead peer is noticed.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// How often each peer's round trip is measured (etcd's prober: every 5 s, its first
/// status interval) for `etcd_network_peer_round_trip_time_seconds`.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// The largest probe frame echoed.
const PROBE_BYTES_MAX: usize = 64;

struct Peer {
    urls: Vec<String>,
    tx: mpsc::Sender<Message>,
    metrics: Arc<crate::metrics::Peer>,
    /// A member this one has not applied the addition of yet (see
    /// [`Transport::learn_remote`]): only sent to, until the membership names it.
    remote: bool,
}

/// The transport of one member.
pub struct Transport {
    id: u64,
    token: String,
    members: Mutex<Members>,
    /// Since when the stream to each peer is up, and which sender made it (a sender that
    /// ends forgets only its own stream: see `Transport::sender`).
    connected_since: Mutex<BTreeMap<u64, (tokio::time::Instant, u64)>>,
    /// The next sender's number.
    senders: std::sync::atomic::AtomicU64,
    cluster_id: Mutex<u64>,
    peers: Mutex<BTreeMap<u64, Peer>>,
    allowed: Mutex<Vec<u64>>,
    /// Unknown senders whose peer URLs are being asked for (see [`Transport::learn_remote`]).
    learning: Mutex<std::collections::BTreeSet<u64>>,
    inbox: mpsc::UnboundedSender<Inbox>,
    tls: PeerTls,
    lease_handler: Mutex<Option<LeaseHandler>>,
    promote_handler: Mutex<Option<PromoteHandler>>,
    rejoin_handler: Mutex<Option<RejoinHandler>>,
    /// Traffic per peer (`/metrics`), for the members of the cluster.
    metrics: Mutex<BTreeMap<u64, Arc<crate::metrics::Peer>>>,
}

/// TLS of the peer side: accepting (with `--peer-client-cert-auth`, only peers whose
/// certificate the trusted CA signed) and dialing `https://` peer URLs.
#[derive(Clone, Default)]
pub struct PeerTls {
    /// For accepted streams on `https://` peer listeners.
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// For dialing `https://` peer URLs.
    pub client: Option<Arc<rustls::ClientConfig>>,
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

impl Transport {
    /// A transport for member `id`.
    pub fn new(
        id: u64,
        cluster_id: u64,
        token: String,
        inbox: mpsc::UnboundedSender<Inbox>,
        tls: PeerTls,
    ) -> Arc<Transport> {
        Arc::new(Transport {
            id,
            token,
            members: Mutex::new(Members::default()),
            connected_since: Mutex::new(BTreeMap::new()),
            senders: std::sync::atomic::AtomicU64::new(0),
            cluster_id: Mutex::new(cluster_id),
            peers: Mutex::new(BTreeMap::new()),
            allowed: Mutex::new(Vec::new()),
            learning: Mutex::new(Default::default()),
            inbox,
            tls,
            lease_handler: Mutex::new(None),
            promote_handler: Mutex::new(None),
            rejoin_handler: Mutex::new(None),
            metrics: Mutex::new(BTreeMap::new()),
        })
    }

    /// The traffic counters of peer `id` (created on first use).
    fn peer_metrics(&self, id: u64) -> Arc<crate::metrics::Peer> {
        Arc::clone(self.metrics.lock().expect("lock").entry(id).or_default())
    }

    /// The traffic counters of every peer, in id order (`/metrics`).
    pub fn peer_stats(&self) -> Vec<(u64, Arc<crate::metrics::Peer>)> {
        let m = self.metrics.lock().expect("lock");
        m.iter().map(|(id, p)| (*id, Arc::clone(p))).collect()
    }

    /// Set the cluster id (a joining member learns it from the leader's snapshot).
    pub fn set_cluster_id(&self, cid: u64) {
        *self.cluster_id.lock().expect("lock") = cid;
    }

    /// Follow a membership change: start senders for new peers, stop removed ones.
    pub fn set_members(self: &Arc<Self>, members: &Members) {
        let mut peers = self.peers.lock().expect("peers lock");
        *self.members.lock().expect("members lock") = members.clone();
        *self.allowed.lock().expect("allowed lock") = members.members.keys().copied().collect();
        self.connected_since
            .lock()
            .expect("lock")
            .retain(|id, _| members.members.contains_key(id));
        self.metrics
            .lock()
            .expect("lock")
            .retain(|id, _| members.members.contains_key(id));
        // A remote stays until the membership names it (then it is a peer like the
        // others) or its removal.
        peers.retain(|id, p| match members.members.get(id) {
            Some(m) => !p.remote && m.peer_urls == p.urls,
            None => p.remote && !members.removed.contains(id),
        });
        for (id, m) in &members.members {
            if *id == self.id || peers.contains_key(id) || m.peer_urls.is_empty() {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
            let metrics = self.peer_metrics(*id);
            peers.insert(
                *id,
                Peer {
                    urls: m.peer_urls.clone(),
                    tx,
                    metrics: Arc::clone(&metrics),
                    remote: false,
                },
            );
            let me = Arc::clone(self);
            let urls = m.peer_urls.clone();
            let to = *id;
            let sent = Arc::clone(&metrics);
            rt::spawn(async move { me.sender(to, urls, rx, sent, true).await });
            let me = Arc::clone(self);
            let urls = m.peer_urls.clone();
            rt::spawn(async move { me.prober(to, urls, metrics).await });
        }
    }

    /// Find where to answer `id`, a member of this cluster that this member has not
    /// applied the addition of yet and that is sending to it (see `receive`): ask the
    /// members it knows for the membership, and send to `id` at the peer URLs the first
    /// answer that names it gives (etcd's transport "remotes"; the URLs come from members
    /// this one knows, never from the stranger). Asked again every second while `id`'s
    /// stream is `alive` and nothing names it (the members asked may lag too). Until the
    /// membership here names `id`, or removes it, messages to it go there; without it,
    /// Raft's answers to a leader elected among members added since would have nowhere to
    /// go and the member would never catch up (membership-under-faults seed 22). Returns
    /// false when [`UNKNOWN_MAX`] unknown members are being looked up already.
    fn learn_remote(self: &Arc<Self>, id: u64, alive: Arc<std::sync::atomic::AtomicBool>) -> bool {
        {
            let mut learning = self.learning.lock().expect("lock");
            if learning.contains(&id) {
                return true;
            }
            if learning.len() >= UNKNOWN_MAX {
                return false;
            }
            learning.insert(id);
        }
        let me = Arc::clone(self);
        rt::spawn(async move {
            // One lock at a time: `set_members` and `add_remote` take peers, then members.
            let settled = |me: &Transport| {
                let named = {
                    let members = me.members.lock().expect("members lock");
                    members.members.contains_key(&id) || members.removed.contains(&id)
                };
                named || me.peers.lock().expect("peers lock").contains_key(&id)
            };
            while alive.load(std::sync::atomic::Ordering::Acquire) && !settled(&me) {
                let cid = *me.cluster_id.lock().expect("lock");
                let known: Vec<Vec<String>> = (me.members.lock().expect("members lock"))
                    .members
                    .iter()
                    .filter(|(m, _)| **m != me.id)
                    .map(|(_, m)| m.peer_urls.clone())
                    .collect();
                let mut found = None;
                'ask: for urls in known {
                    for url in urls {
                        let Ok(info) =
                            fetch_cluster_info(&url, &me.token, me.tls.client.as_ref()).await
                        else {
                            continue;
                        };
                        if info.error.is_none() && info.cluster_id == cid {
                            if let Some(m) = info.members.members.get(&id) {
                                if !m.peer_urls.is_empty() {
                                    found = Some(m.peer_urls.clone());
                                    break 'ask;
                                }
                            }
                        }
                    }
                }
                match found {
                    Some(urls) => me.add_remote(id, urls),
                    None => crate::rt::sleep(Duration::from_secs(1)).await,
                }
            }
            me.learning.lock().expect("lock").remove(&id);
        });
        true
    }

    /// Send to `id` at `urls` until the membership names it (see [`Transport::learn_remote`]).
    fn add_remote(self: &Arc<Self>, id: u64, urls: Vec<String>) {
        let mut peers = self.peers.lock().expect("peers lock");
        let members = self.members.lock().expect("members lock");
        if id == self.id
            || peers.contains_key(&id)
            || members.members.contains_key(&id)
            || members.removed.contains(&id)
        {
            return;
        }
        tracing::info!(peer = %format!("{id:x}"), urls = ?urls, "peer: answering a member not applied here yet at the URLs the cluster gives");
        let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
        let metrics = Arc::new(crate::metrics::Peer::default());
        peers.insert(
            id,
            Peer {
                urls: urls.clone(),
                tx,
                metrics: Arc::clone(&metrics),
                remote: true,
            },
        );
        let me = Arc::clone(self);
        // A remote's stream is no member's: the strict reconfiguration check never counts it.
        rt::spawn(async move { me.sender(id, urls, rx, metrics, false).await });
    }

    /// Queue a message for its peer.
    pub fn send(&self, m: Message, counters: &Counters) {
        let to = m.to;
        let is_snap = m.get_msg_type() == MessageType::MsgSnapshot;
        let peers = self.peers.lock().expect("peers lock");
        let Some(p) = peers.get(&to) else { return };
        Counters::add(&counters.bytes_sent, m.compute_size() as u64);
        if p.tx.try_send(m).is_err() {
            crate::metrics::Peer::add(&p.metrics.sent_failures, 1);
            let _ = self.inbox.send(Inbox::Unreachable(to));
            if is_snap {
                let _ = self.inbox.send(Inbox::SnapshotSent(to, false));
            }
        }
    }

    async fn sender(
        self: Arc<Self>,
        to: u64,
        urls: Vec<String>,
        mut rx: mpsc::Receiver<Message>,
        metrics: Arc<crate::metrics::Peer>,
        track: bool,
    ) {
        let gen = self
            .senders
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let forget = |me: &Transport| {
            let mut c = me.connected_since.lock().expect("lock");
            if c.get(&to).is_some_and(|(_, g)| *g == gen) {
                c.remove(&to);
            }
        };
        let mut attempt = 0usize;
        loop {
            let url = &urls[attempt % urls.len()];
            attempt += 1;
            let stream = match dial(url, self.tls.client.as_ref()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(peer = %format!("{to:x}"), url = %url, error = %e, "peer: dial failed");
                    if !self.fail_queued(to, &mut rx, &metrics) {
                        return;
                    }
                    crate::rt::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let mut w = BufWriter::new(stream);
            let hello = Hello {
                to,
                ..self.question()
            };
            let hello = serde_json::to_vec(&hello).expect("hello serialises");
            let ok = crate::rt::timeout(WRITE_TIMEOUT, async {
                write_frame(&mut w, &hello).await?;
                w.flush().await
            })
            .await;
            if !matches!(ok, Ok(Ok(()))) {
                crate::rt::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if track {
                self.connected_since
                    .lock()
                    .expect("lock")
                    .insert(to, (tokio::time::Instant::now(), gen));
            }
            // Stream messages until the stream fails or the peer is removed.
            let closed_by_peer = loop {
                let first = tokio::select! {
                    // `biased`: tokio's fair select draws from a process-wide counter, which no
                    // simulator seed controls; a fixed polling order keeps runs reproducible.
                    biased;
                    m = rx.recv() => m,
                    _ = crate::rt::sleep(KEEPALIVE) => {
                        let alive = crate::rt::timeout(WRITE_TIMEOUT, async {
                            write_frame(&mut w, &[]).await?;
                            w.flush().await
                        }).await;
                        if matches!(alive, Ok(Ok(()))) { continue }
                        forget(&self);
                        break closed_by(&alive);
                    }
                };
                let Some(first) = first else {
                    // The peer left the membership or changed its URLs: this stream is over.
                    forget(&self);
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                let mut written = 0u64;
                let res = crate::rt::timeout(WRITE_TIMEOUT, async {
                    for m in &batch {
                        let bytes = m.write_to_bytes().map_err(std::io::Error::other)?;
                        write_frame(&mut w, &bytes).await?;
                        written += bytes.len() as u64;
                    }
                    w.flush().await
                })
                .await;
                let ok = matches!(res, Ok(Ok(())));
                if ok {
                    crate::metrics::Peer::add(&metrics.sent_bytes, written);
                } else {
                    crate::metrics::Peer::add(&metrics.sent_failures, batch.len() as u64);
                }
                for m in &batch {
                    if m.get_msg_type() == MessageType::MsgSnapshot {
                        let _ = self.inbox.send(Inbox::SnapshotSent(to, ok));
                    }
                }
                if !ok {
                    forget(&self);
                    let _ = self.inbox.send(Inbox::Unreachable(to));
                    break closed_by(&res);
                }
            };
            if closed_by_peer && self.removed_by(url).await {
                let _ = self.inbox.send(Inbox::Removed);
                return;
            }
        }
    }

    /// Whether the peer at `url` says this member was removed from the cluster. A peer
    /// closes streams from members no longer in it; a removed member that never learned the
    /// commit of its own removal (the leader stops sending to it once it applies it) learns
    /// it here, as etcd's peers answer a removed member's messages with 410.
    async fn removed_by(&self, url: &str) -> bool {
        fetch_cluster_info(url, &self.token, self.tls.client.as_ref())
            .await
            .is_ok_and(|info| info.members.removed.contains(&self.id))
    }

    /// Drop what is queued for an unreachable peer; false once the peer was removed.
    fn fail_queued(
        &self,
        to: u64,
        rx: &mut mpsc::Receiver<Message>,
        metrics: &crate::metrics::Peer,
    ) -> bool {
        let mut any = false;
        loop {
            match rx.try_recv() {
                Ok(m) => {
                    any = true;
                    crate::metrics::Peer::add(&metrics.sent_failures, 1);
                    if m.get_msg_type() == MessageType::MsgSnapshot {
                        let _ = self.inbox.send(Inbox::SnapshotSent(to, false));
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        if any {
            let _ = self.inbox.send(Inbox::Unreachable(to));
        }
        true
    }

    /// Accept peers on `listener` for ever; with `tls`, every stream starts with a TLS
    /// handshake (and, with peer client-cert auth, one that proves a trusted certificate).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: bool) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                crate::rt::sleep(Duration::from_millis(10)).await;
                continue;
            };
            rt::tune_stream(&stream);
            let me = Arc::clone(&self);
            rt::spawn(async move {
                let cfg = if tls { me.tls.server.as_ref() } else { None };
                let stream = match crate::rt::timeout(
                    HANDSHAKE_TIMEOUT,
                    crate::tls::accept(cfg, FlushFilter::new(stream)),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "peer: TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!("peer: TLS handshake timed out");
                        return;
                    }
                };
                if let Err(e) = me.receive(stream).await {
                    tracing::debug!(error = %e, "peer stream closed");
                }
            });
        }
    }

    async fn receive(self: &Arc<Self>, stream: PeerStream) -> std::io::Result<()> {
        let mut stream = tokio::io::BufReader::with_capacity(64 << 10, stream);
        let hello = read_frame(&mut stream, HELLO_BYTES_MAX).await?;
        let hello: Hello = serde_json::from_slice(&hello).map_err(std::io::Error::other)?;
        let cid = *self.cluster_id.lock().expect("lock");
        if hello.to == 0 {
            if hello.probe {
                return echo_probes(&mut stream).await;
            }
            if let Some(req) = &hello.lease {
                let handler = self.lease_handler.lock().expect("lock").clone();
                let ours = cid != 0 && hello.cluster_id == cid && hello.token == self.token;
                let answer = match handler {
                    Some(h) if ours => {
                        // A KeepAlive on an expired lease waits here for the revocation
                        // (a while: the asker's limit is 2 s), rather than the asker
                        // dialling again for every poll.
                        let mut answer = h(req);
                        let waited = tokio::time::Instant::now();
                        while answer.revoking && waited.elapsed() < LEASE_WAIT_MAX {
                            crate::rt::sleep(LEASE_WAIT_POLL).await;
                            answer = h(req);
                        }
                        answer
                    }
                    _ => LeaseAnswer {
                        not_leader: true,
                        ..Default::default()
                    },
                };
                let bytes = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
                write_frame(stream.get_mut(), &bytes).await?;
                return stream.get_mut().flush().await;
            }
            if let Some(id) = hello.promote {
                let handler = self.promote_handler.lock().expect("lock").clone();
                let ours = cid != 0 && hello.cluster_id == cid && hello.token == self.token;
                let answer = match handler {
                    Some(h) if ours => h(id).await,
                    _ => PromoteAnswer::NotLeader,
                };
                let bytes = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
                write_frame(stream.get_mut(), &bytes).await?;
                return stream.get_mut().flush().await;
            }
            if let Some(step) = hello.rejoin.clone() {
                // The member asking lost its log, so it may not know the cluster's id: the
                // token must match, and the id too when it sends one.
                let handler = self.rejoin_handler.lock().expect("lock").clone();
                let ours = cid != 0
                    && (hello.cluster_id == 0 || hello.cluster_id == cid)
                    && hello.token == self.token;
                let answer = match handler {
                    Some(h) if ours => h(step).await,
                    Some(_) => RejoinAnswer::Failed(format!(
                        "refused: the cluster's --initial-cluster-token is {:?}, the rejoining member's is {:?}",
                        self.token, hello.token
                    )),
                    None => RejoinAnswer::Failed("this member is not serving yet".into()),
                };
                let bytes = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
                write_frame(stream.get_mut(), &bytes).await?;
                return stream.get_mut().flush().await;
            }
            return self.answer_info(stream.get_mut(), &hello).await;
        }
        if hello.to != self.id || (cid != 0 && hello.cluster_id != 0 && hello.cluster_id != cid) {
            tracing::warn!(from = %format!("{:x}", hello.from), their_cluster = %format!("{:x}", hello.cluster_id),
                our_cluster = %format!("{cid:x}"), "peer: refusing a stream from another cluster or for another member");
            return Ok(());
        }
        // A member that does not know the cluster yet (joining) accepts its first leader.
        // One that does accepts a member it does not know yet if the hello names this
        // cluster's id and the member was never removed: it joined after the point this
        // member has applied to (a member cut off while another was added, which may now
        // lead). Its messages bring the entries (or the snapshot) that add it here, as
        // etcd's pipeline takes messages from any member of the cluster; until then
        // answers to it have nowhere to go and Raft sends again. A removed member, or one
        // of another cluster, is refused.
        let known = self.allowed.lock().expect("lock").contains(&hello.from);
        let removed = self
            .members
            .lock()
            .expect("members lock")
            .removed
            .contains(&hello.from);
        if !known && cid != 0 && (hello.cluster_id != cid || hello.token != self.token || removed) {
            tracing::warn!(from = %format!("{:x}", hello.from), removed, "peer: refusing a stream from a member not in the cluster");
            return Ok(());
        }
        let from = hello.from;
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        if !known && cid != 0 && !self.learn_remote(from, Arc::clone(&alive)) {
            tracing::warn!(from = %format!("{from:x}"), "peer: refusing a stream from a member not in the cluster (too many unknown members at once)");
            return Ok(());
        }
        let ended = self.stream_messages(&mut stream, from, known).await;
        alive.store(false, std::sync::atomic::Ordering::Release);
        let _ = self.inbox.send(Inbox::PeerGone(from));
        ended
    }

    /// Hand the messages of `from`'s stream to Raft until the stream ends.
    async fn stream_messages(
        &self,
        stream: &mut tokio::io::BufReader<PeerStream>,
        from: u64,
        known: bool,
    ) -> std::io::Result<()> {
        // A member not named here yet gets no `/metrics` entry until it is.
        let metrics = if known {
            self.peer_metrics(from)
        } else {
            Arc::default()
        };
        loop {
            let buf = read_frame(stream, FRAME_BYTES_MAX).await?;
            if buf.is_empty() {
                continue; // keep-alive
            }
            crate::metrics::Peer::add(&metrics.received_bytes, buf.len() as u64);
            let m = Message::parse_from_bytes(&buf).map_err(std::io::Error::other)?;
            if m.from != from || m.to != self.id {
                return Err(std::io::Error::other(
                    "message does not match the stream's hello",
                ));
            }
            if self.inbox.send(Inbox::Peer(Box::new(m))).is_err() {
                return Ok(());
            }
        }
    }
}

impl Transport {
    /// Measure the round trip to peer `to` every [`PROBE_EVERY`] over a probe stream of its
    /// own (a small frame written and read back; the time from writing it to reading the
    /// echo), until the peer leaves the cluster or changes its URLs. A probe that fails or
    /// takes over 2 s is not counted and the stream is dialled again.
    async fn prober(
        self: Arc<Self>,
        to: u64,
        urls: Vec<String>,
        metrics: Arc<crate::metrics::Peer>,
    ) {
        let mut stream: Option<PeerStream> = None;
        let mut attempt = 0usize;
        loop {
            crate::rt::sleep(PROBE_EVERY).await;
            let current = (self.peers.lock().expect("peers lock"))
                .get(&to)
                .is_some_and(|p| p.urls == urls);
            if !current {
                return;
            }
            if stream.is_none() {
                let url = &urls[attempt % urls.len()];
                attempt += 1;
                let Ok(mut s) = dial(url, self.tls.client.as_ref()).await else {
                    continue;
                };
                let hello = Hello {
                    probe: true,
                    ..self.question()
                };
                let hello = serde_json::to_vec(&hello).expect("hello serialises");
                let sent = crate::rt::timeout(WRITE_TIMEOUT, async {
                    write_frame(&mut s, &hello).await?;
                    s.flush().await
                })
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    continue;
                }
                stream = Some(s);
            }
            let Some(s) = stream.as_mut() else { continue };
            let started = tokio::time::Instant::now();
            let echoed = crate::rt::timeout(WRITE_TIMEOUT, async {
                write_frame(s, &self.id.to_le_bytes()).await?;
                s.flush().await?;
                read_frame(s, PROBE_BYTES_MAX).await
            })
            .await;
            match echoed {
                Ok(Ok(b)) if b == self.id.to_le_bytes() => metrics.rtt.observe(started.elapsed()),
                _ => stream = None,
            }
        }
    }

    /// Answer forwarded lease requests with `h` from now on.
    pub fn set_lease_handler(&self, h: LeaseHandler) {
        *self.lease_handler.lock().expect("lock") = Some(h);
    }

    /// Answer forwarded promotions with `h` from now on.
    pub fn set_promote_handler(&self, h: PromoteHandler) {
        *self.promote_handler.lock().expect("lock") = Some(h);
    }

    /// Answer rejoin steps with `h` from now on.
    pub fn set_rejoin_handler(&self, h: RejoinHandler) {
        *self.rejoin_handler.lock().expect("lock") = Some(h);
    }

    /// Ask member `to` (the leader) a lease question over its peer port.
    pub async fn forward_lease(&self, to: u64, req: LeaseFwd) -> std::io::Result<LeaseAnswer> {
        let hello = Hello {
            lease: Some(req),
            ..self.question()
        };
        self.ask(to, &hello, Duration::from_secs(2), "lease forward")
            .await
    }

    /// Ask member `to` (the leader) to promote the learner `id`, waiting at most `limit`
    /// for the answer (the leader waits for the promotion to apply).
    pub async fn forward_promote(
        &self,
        to: u64,
        id: u64,
        limit: Duration,
    ) -> std::io::Result<PromoteAnswer> {
        let hello = Hello {
            promote: Some(id),
            ..self.question()
        };
        self.ask(to, &hello, limit, "promotion forward").await
    }

    /// The hello of a question to another member (`to` 0: no message stream).
    fn question(&self) -> Hello {
        Hello {
            cluster_id: *self.cluster_id.lock().expect("lock"),
            from: self.id,
            token: self.token.clone(),
            ..Hello::default()
        }
    }

    /// Send `hello` to member `to`'s peer port and read its one answer, all within `limit`.
    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        to: u64,
        hello: &Hello,
        limit: Duration,
        what: &str,
    ) -> std::io::Result<T> {
        let asked = async {
            let url = self
                .members
                .lock()
                .expect("lock")
                .members
                .get(&to)
                .and_then(|m| m.peer_urls.first().cloned())
                .ok_or_else(|| std::io::Error::other(format!("no peer URL for member {to:x}")))?;
            let mut stream = dial(&url, self.tls.client.as_ref()).await?;
            let hello = serde_json::to_vec(hello).map_err(std::io::Error::other)?;
            write_frame(&mut stream, &hello).await?;
            stream.flush().await?;
            let buf = read_frame(&mut stream, FRAME_BYTES_MAX).await?;
            serde_json::from_slice(&buf).map_err(std::io::Error::other)
        };
        crate::rt::timeout(limit, asked)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string()))?
    }

    /// How long the stream to `id` has been up, if it is.
    pub fn connected_for(&self, id: u64) -> Option<Duration> {
        self.connected_since
            .lock()
            .expect("lock")
            .get(&id)
            .map(|(t, _)| t.elapsed())
    }

    async fn answer_info(&self, stream: &mut PeerStream, hello: &Hello) -> std::io::Result<()> {
        let cid = *self.cluster_id.lock().expect("lock");
        let error = (hello.token != self.token).then(|| {
            format!(
                "the cluster's --initial-cluster-token is {:?}, the joining member's is {:?}",
                self.token, hello.token
            )
        });
        let info = ClusterInfo {
            error,
            cluster_id: cid,
            members: self.members.lock().expect("lock").clone(),
        };
        let bytes = serde_json::to_vec(&info).map_err(std::io::Error::other)?;
        write_frame(stream, &bytes).await?;
        stream.flush().await
    }
}

/// Write back each frame a prober sends (see [`Transport::prober`]) until it goes away.
/// A prober silent for three rounds is gone (a partition leaves no FIN): the stream ends.
async fn echo_probes(stream: &mut tokio::io::BufReader<PeerStream>) -> std::io::Result<()> {
    loop {
        let ping = crate::rt::timeout(3 * PROBE_EVERY, read_frame(stream, PROBE_BYTES_MAX))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "probe"))??;
        write_frame(stream.get_mut(), &ping).await?;
        stream.get_mut().flush().await?;
    }
}

/// Whether a write failed because the peer closed the stream (not a timeout): what a peer
/// that refuses this member's stream does.
fn closed_by<T>(res: &Result<std::io::Result<()>, T>) -> bool {
    matches!(res, Ok(Err(e)) if matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::UnexpectedEof
    ))
}

/// Ask the member at `peer_url` for the cluster's membership (used by a joining member).
pub async fn fetch_cluster_info(
    peer_url: &str,
    token: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> std::io::Result<ClusterInfo> {
    let hello = Hello {
        token: token.to_string(),
        ..Hello::default()
    };
    ask_url(peer_url, &hello, tls, Duration::from_secs(2)).await
}

/// Ask the member at `peer_url` to take a step of this member's rejoin, waiting at most
/// `limit` (it answers once the change applied on it).
pub async fn ask_rejoin(
    peer_url: &str,
    token: &str,
    step: RejoinStep,
    tls: Option<&Arc<rustls::ClientConfig>>,
    limit: Duration,
) -> std::io::Result<RejoinAnswer> {
    let hello = Hello {
        token: token.to_string(),
        rejoin: Some(step),
        ..Hello::default()
    };
    ask_url(peer_url, &hello, tls, limit).await
}

/// Send `hello` to the member at `peer_url` and read its one answer, waiting at most
/// `limit` for it.
async fn ask_url<T: serde::de::DeserializeOwned>(
    peer_url: &str,
    hello: &Hello,
    tls: Option<&Arc<rustls::ClientConfig>>,
    limit: Duration,
) -> std::io::Result<T> {
    let addr = host_port(peer_url);
    let mut stream = dial(peer_url, tls).await?;
    let hello = serde_json::to_vec(hello).map_err(std::io::Error::other)?;
    write_frame(&mut stream, &hello).await?;
    stream.flush().await?;
    let buf = crate::rt::timeout(limit, read_frame(&mut stream, FRAME_BYTES_MAX))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, format!("waiting for {addr}"))
        })??;
    serde_json::from_slice(&buf).map_err(std::io::Error::other)
}

/// A peer stream: TCP, with TLS when the URL is `https://`.
type PeerStream = crate::tls::Stream<FlushFilter<TcpStream>>;

/// Dial a peer URL (TCP, then TLS for `https://`), bounded in time.
async fn dial(url: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> std::io::Result<PeerStream> {
    let addr = host_port(url);
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, format!("dialing {addr}"));
    let stream = crate::rt::timeout(DIAL_TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| timed_out())??;
    rt::tune_stream(&stream);
    crate::rt::timeout(
        HANDSHAKE_TIMEOUT,
        crate::tls::connect(tls, url, FlushFilter::new(stream)),
    )
    .await
    .map_err(|_| timed_out())?
}

async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> std::io::Result<()> {
    w.write_all(&(payload.len() as u32).to_le_bytes()).await?;
    w.write_all(payload).await
}

async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        )));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// `host:port` of an `http://host:port` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.trim_end_matches('/').to_string()
}
