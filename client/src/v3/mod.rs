//! etcd's v3 API over gRPC — detcd or etcd 3.4 — typed.
//!
//! - [`Client`]: KV ([`Client::get`], [`Client::put`], [`Client::delete`] with their options,
//!   `prev_kv`, ranges and prefixes), transactions built with [`Txn`] (compares on value,
//!   version, create and mod revision, lease; success and failure branches, nested txns),
//!   [`Client::compact`], leases ([`Client::lease_grant`], [`Client::lease_revoke`],
//!   [`Client::lease_time_to_live`], [`Client::leases`], [`Client::lease_keep_alive_once`] and a
//!   keep-alive task, [`Client::lease_keep_alive`]).
//! - [`Client::watch`]: a `Stream` of event batches that survives its member: when the stream
//!   breaks, or stays silent past [`crate::Config::watch_timeout`] and then does not answer a
//!   progress request, it is created again on the next endpoint from the last revision seen + 1,
//!   so every event arrives exactly once, in revision order. A watch cancelled because its
//!   revision was compacted ends with [`crate::Error::Compacted`].
//! - [`registry`]: service registration on a lease kept alive and weighted discovery that
//!   follows the service's prefix with a watch (the v3 twin of [`crate::registry`]).
//! - Errors: etcd's gRPC code and exact message in [`crate::Error::Grpc`], with [`ErrorKind`]
//!   naming which of etcd's errors it is.
//!
//! Connections: one HTTP/2 connection to one endpoint at a time (calls are streams on it),
//! over `detcd-rt`'s channel, so the client runs on tokio and in the madsim simulator alike
//! (its time is the seam's, it starts no thread). A call that cannot connect goes to the next
//! endpoint. A call that was sent but got no answer (the connection broke, or nothing came
//! within [`crate::Config::timeout`]) moves the client to the next endpoint, and is sent again
//! there if it only reads; a write is reported as [`crate::Error::Indeterminate`], never
//! silently repeated. Answers that say the request was never proposed (etcd's "no leader",
//! "not capable") are retried on the next endpoint for writes too.

mod error;
pub mod registry;
mod types;
mod watch;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::kv_client::KvClient;
use detcd_proto::etcdserverpb::lease_client::LeaseClient;
use detcd_rt::h2::H2Channel;
use detcd_rt::FlushFilter;
use hyper::http::uri::Authority;
use tokio::net::TcpStream;

pub use error::{ErrorKind, GrpcCode, GrpcError};
pub use registry::{register, watch_service, Registration, ServiceWatcher};
pub use types::{
    prefix_end, Compare, CompareOp, DeleteOptions, DeleteResponse, Event, EventType, GetOptions,
    GetResponse, Header, KeyValue, LeaseGrant, LeaseTimeToLive, PutOptions, PutResponse, RangeEnd,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
pub use watch::{KeepAlive, KeepAliveState, Watch, WatchOptions, WatchResponse};

use crate::http::Endpoint;
use crate::{Config, Error};
use error::{classify, Failed};

pub(crate) type Chan = H2Channel<tonic::body::Body>;

/// A v3 client. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    endpoints: Vec<Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    state: Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    /// The endpoint to try first.
    current: usize,
    /// The open connection and its endpoint.
    chan: Option<(usize, Chan)>,
}

/// Whether a call may be sent again after it was sent without an answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// It only reads: send it to the next endpoint.
    Read,
    /// It may write: report [`Error::Indeterminate`].
    Write,
}

impl Client {
    /// A client for these endpoints (`http://host:port`, or `https://` with [`Config::tls`]).
    pub fn new(cfg: Config) -> Result<Client, Error> {
        if cfg.endpoints.is_empty() {
            return Err(Error::Config("no endpoints".into()));
        }
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        // gRPC over TLS needs HTTP/2 chosen by ALPN.
        let tls = cfg.tls.as_ref().map(|c| {
            let mut c = (**c).clone();
            c.alpn_protocols = vec![b"h2".to_vec()];
            Arc::new(c)
        });
        Ok(Client {
            inner: Arc::new(Inner {
                cfg,
                endpoints,
                tls,
                state: Mutex::new(ConnState::default()),
            }),
        })
    }

    /// The endpoints, as configured.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// The endpoint the client's connection is to (or will be tried first).
    pub fn current_endpoint(&self) -> String {
        let s = self.inner.state.lock().expect("conn lock");
        let at = s.chan.as_ref().map_or(s.current, |(at, _)| *at);
        self.inner.endpoints[at].url.clone()
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.cfg
    }

    pub(crate) fn endpoint_url(&self, at: usize) -> String {
        self.inner.endpoints[at % self.inner.endpoints.len()]
            .url
            .clone()
    }

    async fn dial(&self, at: usize) -> Result<Chan, String> {
        let ep = &self.inner.endpoints[at];
        let fut = async {
            let tcp = TcpStream::connect(&ep.addr)
                .await
                .map_err(|e| e.to_string())?;
            detcd_rt::tune_stream(&tcp);
            let authority = Authority::try_from(ep.addr.as_str()).map_err(|e| e.to_string())?;
            let stream = detcd_rt::tls::connect(
                self.inner.tls.as_ref(),
                &ep.url,
                FlushFilter::coalescing(tcp),
            )
            .await
            .map_err(|e| e.to_string())?;
            Chan::handshake(stream, authority)
                .await
                .map_err(|e| e.to_string())
        };
        match detcd_rt::timeout(self.inner.cfg.timeout, fut).await {
            Ok(r) => r.map_err(|e| format!("{}: {e}", ep.url)),
            Err(_) => Err(format!("{}: connecting timed out", ep.url)),
        }
    }

    /// The open connection, or a new one to the first endpoint that accepts, starting with
    /// the current one.
    pub(crate) async fn channel(&self) -> Result<(usize, Chan), Error> {
        let start = {
            let s = self.inner.state.lock().expect("conn lock");
            if let Some((at, ch)) = &s.chan {
                if !ch.is_closed() {
                    return Ok((*at, ch.clone()));
                }
            }
            s.current
        };
        let n = self.inner.endpoints.len();
        let mut errors = Vec::new();
        for i in 0..n {
            let at = (start + i) % n;
            match self.dial(at).await {
                Ok(ch) => {
                    let mut s = self.inner.state.lock().expect("conn lock");
                    s.current = at;
                    s.chan = Some((at, ch.clone()));
                    return Ok((at, ch));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "detcd-client v3: cannot connect; next endpoint");
                    errors.push(e);
                }
            }
        }
        Err(Error::Unavailable(errors.join("; ")))
    }

    /// The connection to endpoint `at` failed: drop it and use the next endpoint next time.
    pub(crate) fn failed(&self, at: usize) {
        let mut s = self.inner.state.lock().expect("conn lock");
        if s.chan.as_ref().is_none_or(|(a, _)| *a == at) {
            s.chan = None;
            s.current = (at + 1) % self.inner.endpoints.len();
        }
    }

    /// One unary call with failover (see the module docs).
    pub(crate) async fn unary<T, F, Fut>(&self, retry: Retry, f: F) -> Result<T, Error>
    where
        F: Fn(Chan) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.inner.endpoints.len();
        let timeout = self.inner.cfg.timeout;
        let mut last = Error::Unavailable("no endpoint tried".into());
        for _ in 0..n {
            let (at, ch) = self.channel().await?;
            let url = &self.inner.endpoints[at].url;
            match detcd_rt::timeout(timeout, f(ch)).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(st)) => match classify(&st) {
                    Failed::Answer(g) if g.kind.refused_before_proposal() => {
                        self.failed(at);
                        last = Error::Grpc(g);
                    }
                    Failed::Answer(g) => {
                        if retry == Retry::Read && g.code == GrpcCode::Unavailable {
                            self.failed(at);
                            last = Error::Grpc(g);
                            continue;
                        }
                        return Err(Error::Grpc(g));
                    }
                    Failed::Transport(e) => {
                        self.failed(at);
                        if retry == Retry::Write {
                            return Err(Error::Indeterminate(format!("{url}: {e}")));
                        }
                        last = Error::Unavailable(format!("{url}: {e}"));
                    }
                },
                Err(_) => {
                    self.failed(at);
                    let e = format!("{url}: no answer within {timeout:?}");
                    if retry == Retry::Write {
                        return Err(Error::Indeterminate(e));
                    }
                    last = Error::Unavailable(e);
                }
            }
        }
        Err(last)
    }

    /// Read a key, or a range of keys (see [`GetOptions`]).
    pub async fn get(&self, key: impl Into<Vec<u8>>, o: GetOptions) -> Result<GetResponse, Error> {
        let req = o.request(key.into());
        let r = self
            .unary(Retry::Read, |ch| {
                let req = req.clone();
                async move { KvClient::new(ch).range(req).await }
            })
            .await?;
        Ok(GetResponse::from_pb(r))
    }

    /// Write a key.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        o: PutOptions,
    ) -> Result<PutResponse, Error> {
        let req = o.request(key.into(), value.into());
        let r = self
            .unary(Retry::Write, |ch| {
                let req = req.clone();
                async move { KvClient::new(ch).put(req).await }
            })
            .await?;
        Ok(PutResponse::from_pb(r))
    }

    /// Delete a key, or a range of keys (see [`DeleteOptions`]).
    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        o: DeleteOptions,
    ) -> Result<DeleteResponse, Error> {
        let req = o.request(key.into());
        let r = self
            .unary(Retry::Write, |ch| {
                let req = req.clone();
                async move { KvClient::new(ch).delete_range(req).await }
            })
            .await?;
        Ok(DeleteResponse::from_pb(r))
    }

    /// Run a transaction.
    pub async fn txn(&self, t: Txn) -> Result<TxnResponse, Error> {
        let retry = if t.read_only() {
            Retry::Read
        } else {
            Retry::Write
        };
        let req = t.request();
        let r = self
            .unary(retry, |ch| {
                let req = req.clone();
                async move { KvClient::new(ch).txn(req).await }
            })
            .await?;
        Ok(TxnResponse::from_pb(r))
    }

    /// Compact the store's history up to `revision` (waiting for the compaction to be
    /// applied on disk when `physical`).
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<Header, Error> {
        let req = pb::CompactionRequest { revision, physical };
        let r = self
            .unary(Retry::Write, |ch| async move {
                KvClient::new(ch).compact(req).await
            })
            .await?;
        Ok(Header::from_pb(r.header))
    }

    /// Grant a lease of `ttl` seconds, with the id `id` (0: the server chooses).
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrant, Error> {
        let req = pb::LeaseGrantRequest { ttl, id };
        let r = self
            .unary(Retry::Write, |ch| async move {
                LeaseClient::new(ch).lease_grant(req).await
            })
            .await?;
        if !r.error.is_empty() {
            return Err(Error::Grpc(GrpcError::new(GrpcCode::Unknown, &r.error)));
        }
        Ok(LeaseGrant {
            header: Header::from_pb(r.header),
            id: r.id,
            ttl: r.ttl,
        })
    }

    /// Revoke a lease: every key attached to it is deleted, in one revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<Header, Error> {
        let req = pb::LeaseRevokeRequest { id };
        let r = self
            .unary(Retry::Write, |ch| async move {
                LeaseClient::new(ch).lease_revoke(req).await
            })
            .await?;
        Ok(Header::from_pb(r.header))
    }

    /// A lease's remaining time (and its keys when `keys`).
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLive, Error> {
        let req = pb::LeaseTimeToLiveRequest { id, keys };
        let r = self
            .unary(Retry::Read, |ch| async move {
                LeaseClient::new(ch).lease_time_to_live(req).await
            })
            .await?;
        Ok(LeaseTimeToLive {
            header: Header::from_pb(r.header),
            id: r.id,
            ttl: r.ttl,
            granted_ttl: r.granted_ttl,
            keys: r.keys,
        })
    }

    /// The ids of every live lease.
    pub async fn leases(&self) -> Result<Vec<i64>, Error> {
        let r = self
            .unary(Retry::Read, |ch| async move {
                LeaseClient::new(ch)
                    .lease_leases(pb::LeaseLeasesRequest {})
                    .await
            })
            .await?;
        Ok(r.leases.into_iter().map(|l| l.id).collect())
    }

    /// Renew a lease once; its new TTL. A lease that no longer exists is etcd's
    /// [`ErrorKind::LeaseNotFound`] (etcd answers a keep-alive for it with TTL 0).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64, Error> {
        let r = self
            .unary(Retry::Read, |ch| async move {
                let req = futures::stream::iter([pb::LeaseKeepAliveRequest { id }])
                    .chain(futures::stream::pending());
                let mut answers = LeaseClient::new(ch)
                    .lease_keep_alive(req)
                    .await?
                    .into_inner();
                match answers.message().await? {
                    Some(r) => Ok(tonic::Response::new(r)),
                    None => Err(tonic::Status::unavailable("keep-alive stream ended")),
                }
            })
            .await?;
        if r.ttl <= 0 {
            return Err(lease_not_found());
        }
        Ok(r.ttl)
    }

    /// Keep a lease alive from a task of its own until the handle is dropped or the lease is
    /// gone (see [`KeepAlive`]).
    pub fn lease_keep_alive(&self, id: i64) -> KeepAlive {
        watch::keep_alive(self.clone(), id)
    }

    /// Follow changes to a key or range from a revision (see [`Watch`]).
    pub fn watch(&self, key: impl Into<Vec<u8>>, o: WatchOptions) -> Watch {
        watch::watch(self.clone(), key.into(), o)
    }
}

use futures::StreamExt as _;

pub(crate) fn lease_not_found() -> Error {
    Error::Grpc(GrpcError::new(
        GrpcCode::NotFound,
        "etcdserver: requested lease not found",
    ))
}

/// The default period of a keep-alive task: a third of the TTL, at least 100 ms.
pub(crate) fn keep_alive_period(ttl: i64) -> Duration {
    Duration::from_millis((ttl.max(1) as u64 * 1000 / 3).max(100))
}
