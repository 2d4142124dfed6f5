//! `detcd-client`: a Rust client for etcd's v2 HTTP API and v3 gRPC API — detcd or etcd 3.4 —
//! with service registration and weighted discovery.
//!
//! - [`Client`]: typed keys operations (get/set/create/update/delete, compare-and-swap and
//!   compare-and-delete, directories, in-order keys, TTL and refresh, `quorum` reads), etcd's
//!   errors as [`Error::Etcd`], a timeout on every call, and endpoint failover: a request that
//!   could not be sent to one endpoint is sent to the next (a request that was sent but got no
//!   answer is reported as [`Error::Indeterminate`], never silently repeated).
//! - v2 auth: basic-auth credentials on every request ([`Config::basic_auth`]), and the
//!   auth API's users, roles and enable flag ([`Client::create_user`], [`Client::create_role`],
//!   [`Client::update_role`], [`Client::enable_auth`]).
//! - [`Client::watch`]: a `Stream` of events that resumes from the last index, and re-lists
//!   (yielding the listing) when etcd answers 401 "event index cleared".
//! - [`registry`]: `register` keeps a service instance's key alive under a TTL;
//!   `watch_service` keeps the set of instances and their weights and picks by weight.
//! - [`v3`]: etcd's v3 gRPC API, typed: KV, a [`v3::Txn`] builder, a watch stream that
//!   resumes at the next revision on another member, leases with a keep-alive task, and
//!   registration on a lease with weighted discovery ([`v3::registry`]).
//!
//! Built on hyper over `detcd-rt`, the same runtime seam as the detcd node, so it works on
//! tokio and inside the madsim simulator alike.
#![warn(missing_docs)]

mod error;
mod http;
pub mod registry;
mod types;
pub mod v3;

pub use error::{Error, EtcdError};
pub use registry::{register, watch_service, Instance, Registration, ServiceWatcher};
pub use types::{Member, Node, Response};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;

/// Options of a read.
#[derive(Debug, Clone, Copy, Default)]
pub struct GetOptions {
    /// List a directory's whole subtree.
    pub recursive: bool,
    /// Sort listings by key.
    pub sorted: bool,
    /// Linearizable read (through Raft).
    pub quorum: bool,
}

/// Options of a write. `None` fields are not sent.
#[derive(Debug, Clone, Default)]
pub struct SetOptions {
    /// Time to live, in seconds.
    pub ttl: Option<u64>,
    /// Require the key to exist (`Some(true)`) or not (`Some(false)`).
    pub prev_exist: Option<bool>,
    /// Compare-and-swap on the current value.
    pub prev_value: Option<String>,
    /// Compare-and-swap on the current modified index.
    pub prev_index: Option<u64>,
    /// Create a directory instead of a key.
    pub dir: bool,
    /// Only reset the TTL (watchers are not woken); the value must not be given.
    pub refresh: bool,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Delete a directory and everything under it.
    pub recursive: bool,
    /// Delete an (empty) directory.
    pub dir: bool,
    /// Compare-and-delete on the current value.
    pub prev_value: Option<String>,
    /// Compare-and-delete on the current modified index.
    pub prev_index: Option<u64>,
}

/// Options of a watch.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchOptions {
    /// Watch the whole subtree.
    pub recursive: bool,
    /// First index to report (0: from the next change).
    pub after_index: u64,
}

/// How to reach the cluster.
#[derive(Clone)]
pub struct Config {
    /// Client URLs (`http://host:2379` or `https://...`), tried in order.
    pub endpoints: Vec<String>,
    /// How long one call may take (watches wait for up to [`Config::watch_timeout`]).
    pub timeout: Duration,
    /// How long one watch poll may wait for an event before it is renewed.
    pub watch_timeout: Duration,
    /// TLS for `https://` endpoints (CA roots, optionally a client certificate).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Basic-auth user and password (etcd's v2 auth).
    pub basic_auth: Option<(String, String)>,
}

impl Config {
    /// Endpoints with the defaults: 5 s per call, 60 s per watch poll, no TLS, no auth.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Config {
        Config {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(5),
            watch_timeout: Duration::from_secs(60),
            tls: None,
            basic_auth: None,
        }
    }
}

/// A client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    endpoints: Mutex<Vec<String>>,
    current: AtomicUsize,
    pool: http::Pool,
}

fn key_path(key: &str) -> String {
    let key = key.trim_start_matches('/');
    let enc: String = key
        .split('/')
        .map(|seg| percent_encoding::utf8_percent_encode(seg, http::SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/");
    format!("/v2/keys/{enc}")
}

/// A user or role name as one path segment.
fn seg(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, http::SEGMENT).to_string()
}

fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    format!("?{}", s.finish())
}

impl Client {
    /// A client for these endpoints.
    pub fn new(cfg: Config) -> Result<Client, Error> {
        if cfg.endpoints.is_empty() {
            return Err(Error::Config("no endpoints".into()));
        }
        for e in &cfg.endpoints {
            http::Endpoint::parse(e)?;
        }
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: Mutex::new(cfg.endpoints.clone()),
                current: AtomicUsize::new(0),
                pool: http::Pool::default(),
                cfg,
            }),
        })
    }

    /// The endpoints in use.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.lock().expect("endpoints lock").clone()
    }

    /// Send a request, failing over to the next endpoint while it could not be sent.
    async fn call(
        &self,
        method: &str,
        path: &str,
        form: Option<String>,
        timeout: Duration,
    ) -> Result<http::Raw, Error> {
        self.call_with(method, path, form.map(http::Body::Form), timeout)
            .await
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        form: Option<http::Body>,
        timeout: Duration,
    ) -> Result<http::Raw, Error> {
        let endpoints = self.endpoints();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..endpoints.len() {
            let at = (start + i) % endpoints.len();
            let ep = http::Endpoint::parse(&endpoints[at])?;
            match self
                .inner
                .pool
                .request(&ep, &self.inner.cfg, method, path, form.clone(), timeout)
                .await
            {
                Ok(raw) => {
                    self.inner.current.store(at, Ordering::Relaxed);
                    return Ok(raw);
                }
                Err(http::Failure::NotSent(e)) => {
                    tracing::debug!(endpoint = %endpoints[at], error = %e, "detcd-client: failing over");
                    last = format!("{}: {e}", endpoints[at]);
                }
                Err(http::Failure::Lost(e)) => {
                    // Try the next endpoint first next time.
                    self.inner
                        .current
                        .store((at + 1) % endpoints.len(), Ordering::Relaxed);
                    return Err(Error::Indeterminate(format!("{}: {e}", endpoints[at])));
                }
            }
        }
        Err(Error::Unavailable(last))
    }

    async fn call_json(
        &self,
        method: &str,
        path: &str,
        body: String,
        timeout: Duration,
    ) -> Result<http::Raw, Error> {
        // A membership change is not idempotent: no failover once sent (call() only fails
        // over requests that were never sent).
        self.call_with(method, path, Some(http::Body::Json(body)), timeout)
            .await
    }

    async fn keys(
        &self,
        method: &str,
        key: &str,
        q: &[(&str, String)],
        form: Option<String>,
    ) -> Result<Response, Error> {
        let path = format!("{}{}", key_path(key), query(q));
        let raw = self
            .call(method, &path, form, self.inner.cfg.timeout)
            .await?;
        raw.into_response()
    }

    /// Read a key or directory.
    pub async fn get(&self, key: &str, o: GetOptions) -> Result<Response, Error> {
        let mut q = Vec::new();
        if o.recursive {
            q.push(("recursive", "true".to_string()));
        }
        if o.sorted {
            q.push(("sorted", "true".to_string()));
        }
        if o.quorum {
            q.push(("quorum", "true".to_string()));
        }
        self.keys("GET", key, &q, None).await
    }

    /// Write a key (or create a directory) with the given conditions.
    pub async fn set(&self, key: &str, value: &str, o: SetOptions) -> Result<Response, Error> {
        let mut form: Vec<(&str, String)> = Vec::new();
        if !o.dir && !o.refresh {
            form.push(("value", value.to_string()));
        }
        if let Some(t) = o.ttl {
            form.push(("ttl", t.to_string()));
        }
        if let Some(e) = o.prev_exist {
            form.push(("prevExist", e.to_string()));
        }
        if let Some(v) = &o.prev_value {
            form.push(("prevValue", v.clone()));
        }
        if let Some(i) = o.prev_index {
            form.push(("prevIndex", i.to_string()));
        }
        if o.dir {
            form.push(("dir", "true".into()));
        }
        if o.refresh {
            form.push(("refresh", "true".into()));
        }
        let body = query(&form).trim_start_matches('?').to_string();
        self.keys("PUT", key, &[], Some(body)).await
    }

    /// Create a key that must not exist yet.
    pub async fn create(
        &self,
        key: &str,
        value: &str,
        ttl: Option<u64>,
    ) -> Result<Response, Error> {
        let o = SetOptions {
            ttl,
            prev_exist: Some(false),
            ..SetOptions::default()
        };
        self.set(key, value, o).await
    }

    /// Update a key that must exist.
    pub async fn update(
        &self,
        key: &str,
        value: &str,
        ttl: Option<u64>,
    ) -> Result<Response, Error> {
        let o = SetOptions {
            ttl,
            prev_exist: Some(true),
            ..SetOptions::default()
        };
        self.set(key, value, o).await
    }

    /// Compare-and-swap: write `value` only if the current value is `prev`.
    pub async fn compare_and_swap(
        &self,
        key: &str,
        value: &str,
        prev: &str,
    ) -> Result<Response, Error> {
        let o = SetOptions {
            prev_value: Some(prev.to_string()),
            ..SetOptions::default()
        };
        self.set(key, value, o).await
    }

    /// Reset a key's TTL without changing its value or waking watchers.
    pub async fn refresh(&self, key: &str, ttl: u64) -> Result<Response, Error> {
        let o = SetOptions {
            ttl: Some(ttl),
            prev_exist: Some(true),
            refresh: true,
            ..SetOptions::default()
        };
        self.set(key, "", o).await
    }

    /// Create a directory.
    pub async fn mkdir(&self, key: &str, ttl: Option<u64>) -> Result<Response, Error> {
        let o = SetOptions {
            ttl,
            dir: true,
            ..SetOptions::default()
        };
        self.set(key, "", o).await
    }

    /// Append an in-order key under `dir` (`POST`): its name is the new index.
    pub async fn create_in_order(
        &self,
        dir: &str,
        value: &str,
        ttl: Option<u64>,
    ) -> Result<Response, Error> {
        let mut form = vec![("value", value.to_string())];
        if let Some(t) = ttl {
            form.push(("ttl", t.to_string()));
        }
        let body = query(&form).trim_start_matches('?').to_string();
        self.keys("POST", dir, &[], Some(body)).await
    }

    /// Delete a key or directory with the given conditions.
    pub async fn delete(&self, key: &str, o: DeleteOptions) -> Result<Response, Error> {
        let mut q = Vec::new();
        if o.recursive {
            q.push(("recursive", "true".to_string()));
        }
        if o.dir {
            q.push(("dir", "true".to_string()));
        }
        if let Some(v) = &o.prev_value {
            q.push(("prevValue", v.clone()));
        }
        if let Some(i) = o.prev_index {
            q.push(("prevIndex", i.to_string()));
        }
        self.keys("DELETE", key, &q, None).await
    }

    /// Compare-and-delete: delete only if the current value is `prev`.
    pub async fn compare_and_delete(&self, key: &str, prev: &str) -> Result<Response, Error> {
        let o = DeleteOptions {
            prev_value: Some(prev.to_string()),
            ..DeleteOptions::default()
        };
        self.delete(key, o).await
    }

    /// The cluster's members.
    pub async fn members(&self) -> Result<Vec<Member>, Error> {
        let raw = self
            .call("GET", "/v2/members", None, self.inner.cfg.timeout)
            .await?;
        raw.into_members()
    }

    /// Add a member with these peer URLs (`POST /v2/members`); start it afterwards with
    /// `--initial-cluster-state existing`.
    pub async fn add_member(&self, peer_urls: &[String]) -> Result<Member, Error> {
        let body = serde_json::json!({ "peerURLs": peer_urls }).to_string();
        let raw = self
            .call_json("POST", "/v2/members", body, self.inner.cfg.timeout)
            .await?;
        raw.into_member_created()
    }

    /// Change a member's peer URLs (`PUT /v2/members/<id>`).
    pub async fn update_member(&self, id: &str, peer_urls: &[String]) -> Result<(), Error> {
        let body = serde_json::json!({ "peerURLs": peer_urls }).to_string();
        let raw = self
            .call_json(
                "PUT",
                &format!("/v2/members/{id}"),
                body,
                self.inner.cfg.timeout,
            )
            .await?;
        raw.into_no_content()
    }

    /// Remove a member by id (`DELETE /v2/members/<id>`).
    pub async fn remove_member(&self, id: &str) -> Result<(), Error> {
        let raw = self
            .call(
                "DELETE",
                &format!("/v2/members/{id}"),
                None,
                self.inner.cfg.timeout,
            )
            .await?;
        raw.into_no_content()
    }

    /// Create a user (`PUT /v2/auth/users/<name>`) with a password and roles. Once auth is
    /// on this needs root: set [`Config::basic_auth`].
    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        roles: &[String],
    ) -> Result<(), Error> {
        let body = serde_json::json!({ "user": name, "password": password, "roles": roles });
        self.auth_put(&format!("/v2/auth/users/{}", seg(name)), body)
            .await
    }

    /// Create a role (`PUT /v2/auth/roles/<name>`) that may read and write these key
    /// patterns (a key, or a prefix ending in `*`).
    pub async fn create_role(
        &self,
        name: &str,
        read: &[String],
        write: &[String],
    ) -> Result<(), Error> {
        let body = serde_json::json!({
            "role": name,
            "permissions": { "kv": { "read": read, "write": write } },
        });
        self.auth_put(&format!("/v2/auth/roles/{}", seg(name)), body)
            .await
    }

    /// Grant and revoke key patterns of an existing role (`PUT /v2/auth/roles/<name>` with
    /// `grant`/`revoke`), e.g. revoke `/*` from `guest`. Returns the role's read and write
    /// patterns afterwards.
    pub async fn update_role(
        &self,
        name: &str,
        grant: (&[String], &[String]),
        revoke: (&[String], &[String]),
    ) -> Result<(Vec<String>, Vec<String>), Error> {
        let body = serde_json::json!({
            "role": name,
            "grant": { "kv": { "read": grant.0, "write": grant.1 } },
            "revoke": { "kv": { "read": revoke.0, "write": revoke.1 } },
        });
        let raw = self
            .call_json(
                "PUT",
                &format!("/v2/auth/roles/{}", seg(name)),
                body.to_string(),
                self.inner.cfg.timeout,
            )
            .await?;
        raw.into_role()
    }

    /// A role's read and write patterns (`GET /v2/auth/roles/<name>`).
    pub async fn role(&self, name: &str) -> Result<(Vec<String>, Vec<String>), Error> {
        let raw = self
            .call(
                "GET",
                &format!("/v2/auth/roles/{}", seg(name)),
                None,
                self.inner.cfg.timeout,
            )
            .await?;
        raw.into_role()
    }

    /// Turn auth on (`PUT /v2/auth/enable`; needs a `root` user, and root once enabled).
    pub async fn enable_auth(&self) -> Result<(), Error> {
        let raw = self
            .call("PUT", "/v2/auth/enable", None, self.inner.cfg.timeout)
            .await?;
        raw.into_no_content()
    }

    /// Whether auth is on, as the asked member knows it (`GET /v2/auth/enable`).
    pub async fn auth_enabled(&self) -> Result<bool, Error> {
        let raw = self
            .call("GET", "/v2/auth/enable", None, self.inner.cfg.timeout)
            .await?;
        raw.into_enabled()
    }

    async fn auth_put(&self, path: &str, body: serde_json::Value) -> Result<(), Error> {
        let raw = self
            .call_json("PUT", path, body.to_string(), self.inner.cfg.timeout)
            .await?;
        raw.into_no_content()
    }

    /// The current leader, as the asked member knows it (`/v2/members/leader`).
    pub async fn leader(&self) -> Result<Member, Error> {
        let raw = self
            .call("GET", "/v2/members/leader", None, self.inner.cfg.timeout)
            .await?;
        raw.into_member()
    }

    /// Replace the endpoints with the members' advertised client URLs.
    pub async fn sync_endpoints(&self) -> Result<Vec<String>, Error> {
        let urls: Vec<String> = self
            .members()
            .await?
            .into_iter()
            .flat_map(|m| m.client_urls)
            .collect();
        if !urls.is_empty() {
            *self.inner.endpoints.lock().expect("endpoints lock") = urls.clone();
            self.inner.current.store(0, Ordering::Relaxed);
        }
        Ok(urls)
    }

    /// One watch poll: the first event at or after `index`.
    async fn watch_once(&self, key: &str, recursive: bool, index: u64) -> Result<Response, Error> {
        let mut q = vec![("wait", "true".to_string())];
        if recursive {
            q.push(("recursive", "true".to_string()));
        }
        if index > 0 {
            q.push(("waitIndex", index.to_string()));
        }
        let path = format!("{}{}", key_path(key), query(&q));
        let raw = self
            .call("GET", &path, None, self.inner.cfg.watch_timeout)
            .await?;
        raw.into_response()
    }

    /// Watch `key`: a stream of its events, in index order, without gaps. Each poll resumes
    /// from the index after the last event; when etcd has dropped that index from its history
    /// (401 "event index cleared"), the key is read again and that listing (action `get`) is
    /// yielded before the watch goes on from the listing's index. Transport failures are
    /// retried (other endpoints first) and do not end the stream; only dropping it does.
    pub fn watch(
        &self,
        key: &str,
        o: WatchOptions,
    ) -> impl Stream<Item = Result<Response, Error>> + Send + 'static {
        let state = (self.clone(), key.to_string(), o.recursive, o.after_index);
        futures::stream::unfold(state, |(c, key, recursive, mut next)| async move {
            loop {
                match c.watch_once(&key, recursive, next).await {
                    Ok(r) if r.action.is_empty() => continue, // poll ended without an event
                    Ok(r) => {
                        next = r.node.modified_index + 1;
                        return Some((Ok(r), (c, key, recursive, next)));
                    }
                    Err(Error::Etcd(e)) if e.error_code == 401 => {
                        let listing = c
                            .get(
                                &key,
                                GetOptions {
                                    recursive,
                                    sorted: true,
                                    quorum: false,
                                },
                            )
                            .await;
                        match listing {
                            Ok(l) => {
                                next = l.etcd_index + 1;
                                return Some((Ok(l), (c, key, recursive, next)));
                            }
                            Err(Error::Etcd(e)) if e.error_code == 100 => {
                                next = e.index + 1;
                                continue;
                            }
                            Err(e) => return Some((Err(e), (c, key, recursive, next))),
                        }
                    }
                    Err(Error::Etcd(e)) => {
                        return Some((Err(Error::Etcd(e)), (c, key, recursive, next)))
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "detcd-client: watch poll failed; retrying");
                        detcd_rt::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    }
}
