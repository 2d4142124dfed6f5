//! The client HTTP API: etcd's v2 endpoints over hyper 1.
//!
//! Connections are accepted in our own loop (axum's `serve` and hyper-util's timer reach for
//! the real tokio runtime, which the simulator does not have), each served by hyper's http1
//! connection with our [`crate::rt::HyperTimer`] and a [`crate::rt::FlushFilter`]ed stream.

pub mod auth;
mod gojson;
mod grpcmetrics;
pub mod keys;
mod keys_http;
mod members;
pub mod misc;
pub mod v3;
pub mod v3auth;
mod v3election;
pub mod v3gateway;
mod v3lock;
pub mod v3maint;
pub mod watch;
pub use members::{answer_promote, answer_rejoin};
pub use misc::CLUSTER_VERSION;

use detcd_proto::etcdserverpb::auth_server::AuthServer;
use detcd_proto::etcdserverpb::cluster_server::ClusterServer;
use detcd_proto::etcdserverpb::kv_server::KvServer;
use detcd_proto::etcdserverpb::lease_server::LeaseServer;
use detcd_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use detcd_proto::etcdserverpb::watch_server::WatchServer;
use detcd_proto::v3electionpb::election_server::ElectionServer;
use detcd_proto::v3lockpb::lock_server::LockServer;
use tonic::codegen::Service;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::raft::Shared;
use crate::rt::{self, FlushFilter};

/// Response body: a whole buffer or a stream (watches).
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (etcd's v2 limit on a value is 1.5 MiB; leave headroom).
pub const REQUEST_BYTES_MAX: usize = 4 << 20;

/// What handlers need to know about this member.
pub struct Ctx {
    /// Raft and the state machine.
    pub shared: Arc<Shared>,
    /// Member name.
    pub name: String,
    /// Advertised client URLs.
    pub client_urls: Vec<String>,
    /// Advertised peer URLs.
    pub peer_urls: Vec<String>,
    /// When the member started (ms, its clock).
    pub start_ms: u64,
    /// How long a write or quorum read may wait for consensus (etcd: 5 s + 2 × election).
    pub request_timeout: Duration,
    /// How long one ReadIndex attempt waits before it is retried.
    pub read_retry: Duration,
    /// Whether runtime reconfiguration is checked for quorum (etcd's --strict-reconfig-check).
    pub strict_reconfig_check: bool,
    /// The cluster token (for member ids of runtime-added members).
    pub token: String,
    /// The peer transport (for the reconfiguration check's connectivity).
    pub transport: Arc<crate::transport::Transport>,
    /// Whether client certificates are required (their common name is then the auth user).
    pub client_cert_auth: bool,
    /// Passwords this member has verified.
    pub verified: auth::Verified,
    /// `--cors`: the origins allowed; empty or `*` allows every origin (etcd's default).
    pub cors: Vec<String>,
    /// `--max-request-bytes`: the largest v3 request accepted.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`: operations allowed in one v3 transaction.
    pub max_txn_ops: usize,
    /// `--election-timeout` in whole heartbeats (etcd's `electionTimeout()`): a new leader
    /// extends every lease by it.
    pub election_timeout: Duration,
    /// The least lease TTL, seconds ([`crate::lease::min_ttl`]).
    pub min_lease_ttl: i64,
    /// `--experimental-watch-progress-notify-interval`.
    pub watch_progress_interval: Duration,
    /// `--quota-backend-bytes` (0: etcd's default, 2 GiB).
    pub quota_backend_bytes: u64,
}

/// A whole-buffer body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A response with a body and a content type.
pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(full(body))
        .expect("valid response")
}

/// A JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, "application/json", body)
}

/// Go's `http.Error`: plain text with a newline.
pub fn text_error(status: StatusCode, msg: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", format!("{msg}\n"))
}

/// The common name of the client's TLS certificate, attached to each request of a
/// connection that presented one (with client-cert auth it is the v2 auth user).
#[derive(Debug, Clone)]
pub struct ClientCommonName(pub String);

/// How long a client's TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept client connections on `listener` for ever; with `tls`, each starts with a TLS
/// handshake (which, with client-cert auth, refuses clients without a trusted certificate).
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, tls: Option<Arc<rustls::ServerConfig>>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "client accept failed");
                crate::rt::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        rt::tune_stream(&stream);
        let ctx = Arc::clone(&ctx);
        let tls = tls.clone();
        rt::spawn(async move {
            let stream = match crate::rt::timeout(
                HANDSHAKE_TIMEOUT,
                crate::tls::accept(tls.as_ref(), FlushFilter::holding(stream)),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "client TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let cn = stream.client_common_name();
            let io = hyper_util::rt::TokioIo::new(stream);
            let kv = KvServer::new(v3::V3::new(Arc::clone(&ctx)))
                .max_decoding_message_size(ctx.max_request_bytes + GRPC_OVERHEAD_BYTES)
                .max_encoding_message_size(usize::MAX);
            let lease = LeaseServer::new(v3::V3::new(Arc::clone(&ctx)))
                .max_decoding_message_size(ctx.max_request_bytes + GRPC_OVERHEAD_BYTES)
                .max_encoding_message_size(usize::MAX);
            let watches = WatchServer::new(watch::Watches::new(Arc::clone(&ctx)))
                .max_decoding_message_size(ctx.max_request_bytes + GRPC_OVERHEAD_BYTES)
                .max_encoding_message_size(usize::MAX);
            let auth = AuthServer::new(v3::V3::new(Arc::clone(&ctx)));
            let cluster = ClusterServer::new(v3maint::Maint::new(Arc::clone(&ctx)));
            let maint = MaintenanceServer::new(v3maint::Maint::new(Arc::clone(&ctx)))
                .max_encoding_message_size(usize::MAX);
            let lock = LockServer::new(v3::V3::new(Arc::clone(&ctx)));
            let election = ElectionServer::new(v3::V3::new(Arc::clone(&ctx)));
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let ctx = Arc::clone(&ctx);
                let mut kv = kv.clone();
                let mut lease = lease.clone();
                let mut watches = watches.clone();
                let mut auth = auth.clone();
                let (mut cluster, mut maint) = (cluster.clone(), maint.clone());
                let (mut lock, mut election) = (lock.clone(), election.clone());
                if let Some(cn) = &cn {
                    req.extensions_mut().insert(ClientCommonName(cn.clone()));
                }
                async move {
                    if is_grpc(&req) {
                        // etcd's own interceptors run before go-grpc-prometheus's: a refused
                        // call is not counted.
                        if let Some(st) = intercepted(&ctx, req.uri().path(), req.headers()) {
                            return Ok(st.into_http());
                        }
                        // Counted as go-grpc-prometheus counts for etcd (see grpcmetrics).
                        let call = grpcmetrics::Call::start(&ctx.shared, req.uri().path());
                        let req = req.map(|b| grpcmetrics::Counted::request(b, call.as_ref()));
                        // The generated servers answer every failure as a gRPC status (an
                        // unknown method of a service: Unimplemented).
                        let path = req.uri().path();
                        let resp = if path.starts_with("/etcdserverpb.Lease/") {
                            lease.call(req).await
                        } else if path.starts_with("/etcdserverpb.Watch/") {
                            watches.call(req).await
                        } else if path.starts_with("/etcdserverpb.Auth/") {
                            auth.call(req).await
                        } else if path.starts_with("/etcdserverpb.Cluster/") {
                            cluster.call(req).await
                        } else if path.starts_with("/etcdserverpb.Maintenance/") {
                            maint.call(req).await
                        } else if path.starts_with("/v3lockpb.Lock/") {
                            lock.call(req).await
                        } else if path.starts_with("/v3electionpb.Election/") {
                            election.call(req).await
                        } else {
                            kv.call(req).await
                        };
                        return resp.map(|r| {
                            let (parts, body) = r.into_parts();
                            let body = grpcmetrics::Counted::response(body, &parts.headers, call);
                            Response::from_parts(parts, tonic::body::Body::new(body))
                        });
                    }
                    Ok::<_, Infallible>(route(ctx, req).await.map(tonic::body::Body::new))
                }
            });
            // One port for both, as etcd's: HTTP/1.1 (the v2 API, the v3 JSON gateway) and
            // HTTP/2 (gRPC), told apart by the HTTP/2 connection preface. Header names are
            // title-cased on HTTP/1.1, as Go writes them: clients and the conformance corpus
            // compare them as sent.
            let mut builder = rt::h2::server();
            builder.http1().title_case_headers(true).keep_alive(true);
            if let Err(e) = builder.serve_connection(io, svc).await {
                tracing::debug!(error = %e, "client connection ended");
            }
        });
    }
}

/// etcd's `ErrGPRCNotSupportedForLearner`.
pub const NOT_FOR_LEARNER: &str = "etcdserver: rpc not supported for learner";

/// What etcd's gRPC interceptors refuse before a call reaches its service
/// (`v3rpc/interceptor.go`), in their order: on a learner every call but `Maintenance/Status`
/// and `KV/Range`, streams included; then a call whose client asked for a leader
/// (`hasleader: true` metadata) while this member knows none. A learner's Range goes to its
/// handler, which alone sees whether it is serializable and makes both checks in this order
/// (`v3::learner_and_leader_check`).
fn intercepted(ctx: &Ctx, path: &str, headers: &hyper::HeaderMap) -> Option<tonic::Status> {
    let st = ctx.shared.status();
    if st.is_learner {
        match path {
            "/etcdserverpb.KV/Range" => return None,
            "/etcdserverpb.Maintenance/Status" => {}
            _ => return Some(tonic::Status::unavailable(NOT_FOR_LEARNER)),
        }
    }
    let (key, value) = watch::REQUIRE_LEADER;
    if st.leader == 0
        && headers
            .get(key)
            .is_some_and(|v| v.as_bytes() == value.as_bytes())
    {
        return Some(tonic::Status::unavailable(watch::NO_LEADER));
    }
    None
}

/// Room for gRPC's framing beside the largest request (etcd: `--max-request-bytes` + 512 KiB).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Whether a request is a gRPC call: HTTP/2 with a gRPC content type (etcd's test, in
/// `grpcHandlerFunc`, for its one client port).
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.version() == hyper::Version::HTTP_2
        && req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Read a request body, bounded: 413 when it is too large, 400 when it cannot be read (a
/// malformed chunked body; etcd stores an empty value then, detcd refuses the request).
pub async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    match Limited::new(body, REQUEST_BYTES_MAX).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => {
            let status = if e.is::<http_body_util::LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            Err(text_error(status, &format!("request body: {e}")))
        }
    }
}

async fn route(ctx: Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let origin = req
        .headers()
        .get(hyper::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let with_cors = |resp| with_cors(resp, &ctx.cors, origin.as_deref());
    // etcd's CORS handler answers every preflight itself, whatever the path.
    if req.method() == hyper::Method::OPTIONS {
        let empty = Response::builder()
            .status(StatusCode::OK)
            .body(full(Bytes::new()))
            .expect("valid response");
        return with_cors(empty);
    }
    let resp = if path == "/v2/keys" || path.starts_with("/v2/keys/") {
        keys_http::handle(&ctx, req).await
    } else if path == "/v2/members" || path.starts_with("/v2/members/") {
        // Changing membership needs root once auth is on (etcd's hasWriteRootAccess,
        // checked before the cluster id header is set).
        let write = [
            hyper::Method::POST,
            hyper::Method::PUT,
            hyper::Method::DELETE,
        ]
        .contains(req.method());
        if write && !auth::has_root_access(&ctx, &auth::Creds::of(&req)) {
            return with_cors(auth::no_auth());
        }
        let mut r = members::handle(&ctx, req).await;
        let cid = crate::cluster::id_hex(ctx.shared.cluster_id());
        r.headers_mut()
            .insert("X-Etcd-Cluster-Id", cid.parse().expect("hex header"));
        r
    } else if path.starts_with("/v2/auth/") || path == "/v2/auth" {
        auth::handle(&ctx, req).await
    } else if path == "/v3/watch" || path == "/v3beta/watch" {
        watch_gateway(&ctx, req).await
    } else if (path == "/v3/election/observe" || path == "/v3beta/election/observe")
        && req.method() != hyper::Method::OPTIONS
    {
        observe_gateway(&ctx, req).await
    } else if path.starts_with("/v3/") || path.starts_with("/v3beta/") {
        v3_gateway(&ctx, req).await
    } else {
        misc::handle(&ctx, req).await
    };
    with_cors(resp)
}

/// The v3 JSON gateway: the request's JSON decoded into the gRPC request, the service called
/// in-process, its response or error encoded as etcd's grpc-gateway does.
async fn v3_gateway(ctx: &Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let token = authorization(&req);
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if ctx.shared.status().is_learner
        && method == hyper::Method::POST
        && v3gateway::refused_on_learner(&path)
    {
        return gateway_response(v3gateway::error_reply(&tonic::Status::unavailable(
            NOT_FOR_LEARNER,
        )));
    }
    let maint = v3maint::Maint::for_gateway(Arc::clone(ctx), token.clone());
    let kv = v3::V3::for_gateway(Arc::clone(ctx), token);
    let keep_alive = |reqs: Vec<detcd_proto::etcdserverpb::LeaseKeepAliveRequest>| {
        use futures::StreamExt;
        let requests = futures::stream::iter(reqs.into_iter().map(Ok));
        kv.keep_alive_stream(requests).collect::<Vec<_>>()
    };
    let mut reply = v3gateway::handle_auth(&kv, &method, &path, &body).await;
    if reply.is_none() {
        reply = v3gateway::handle_lock(&kv, &method, &path, &body).await;
    }
    if reply.is_none() {
        reply = v3gateway::handle_election(&kv, &method, &path, &body).await;
    }
    let reply = match reply {
        Some(r) => Some(r),
        None => match v3gateway::handle_cluster_maintenance(&maint, &maint, &method, &path, &body)
            .await
        {
            Some(r) => Some(r),
            None => v3gateway::handle_services(&kv, &kv, keep_alive, &method, &path, &body).await,
        },
    };
    match reply {
        Some(r) => gateway_response(r),
        None => misc::not_found(),
    }
}

/// A gateway reply as the HTTP response.
fn gateway_response(r: v3gateway::Reply) -> Response<Body> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::builder().status(status);
    for (name, value) in r.headers {
        resp = resp.header(name, value);
    }
    resp.body(full(r.body)).expect("valid response")
}

/// The gateway's token: etcd's gateway forwards the `Authorization` header as the request's.
fn authorization<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The gateway's watch stream: `{"result":…}` lines for as long as the client stays.
async fn watch_gateway(ctx: &Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != hyper::Method::POST {
        return text_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let token = authorization(&req);
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match watch::gateway(ctx, token, &body).await {
        Err((status, body)) => json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        ),
        Ok(lines) => stream_response(lines),
    }
}

/// The gateway's Observe stream: a `{"result":…}` line for each answer, for as long as the
/// client stays.
async fn observe_gateway(ctx: &Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    use detcd_proto::v3electionpb::election_server::Election;
    if req.method() != hyper::Method::POST {
        return gateway_response(v3gateway::method_not_allowed());
    }
    let token = authorization(&req);
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if ctx.shared.status().is_learner {
        return gateway_response(v3gateway::error_reply(&tonic::Status::unavailable(
            NOT_FOR_LEARNER,
        )));
    }
    let request = match v3gateway::observe_request(&body) {
        Ok(r) => r,
        Err(reply) => return gateway_response(reply),
    };
    let v3 = v3::V3::for_gateway(Arc::clone(ctx), token);
    let answers = match v3.observe(tonic::Request::new(request)).await {
        Ok(s) => s.into_inner(),
        Err(st) => return gateway_response(v3gateway::error_reply(&st)),
    };
    let lines = futures::StreamExt::map(answers, |r| {
        Bytes::from(match r {
            Ok(resp) => v3gateway::result_line(&resp),
            Err(st) => v3gateway::stream_error_line(&st),
        })
    });
    stream_response(lines)
}

/// A 200 response whose body is `lines`, fed by a task until they end or the client goes.
fn stream_response<S>(lines: S) -> Response<Body>
where
    S: futures::Stream<Item = Bytes> + Send + 'static,
{
    // The lines reach the body through a channel: a response body must be Sync.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    rt::spawn(async move {
        use futures::StreamExt;
        let mut lines = std::pin::pin!(lines);
        // When the client goes away, dropping `lines` ends the stream.
        loop {
            tokio::select! {
                line = lines.next() => {
                    let Some(line) = line else { return };
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header("Grpc-Metadata-Content-Type", "application/grpc")
        .body(BodyExt::boxed(ChannelBody(rx)))
        .expect("valid response")
}

/// A response body fed through a channel, one data frame per message.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// etcd's CORS headers on a client response: with every origin allowed (no `--cors`, or
/// `*` in it) on every response, origin `*`; otherwise only when the request's `Origin` is
/// one of the allowed, echoing it.
fn with_cors(mut resp: Response<Body>, allowed: &[String], origin: Option<&str>) -> Response<Body> {
    let all = allowed.is_empty() || allowed.iter().any(|a| a == "*");
    let echo = match origin {
        _ if all => hyper::header::HeaderValue::from_static("*"),
        Some(o) if allowed.iter().any(|a| a == o) => match o.parse() {
            Ok(v) => v,
            Err(_) => return resp,
        },
        _ => return resp,
    };
    let h = resp.headers_mut();
    h.insert("Access-Control-Allow-Origin", echo);
    h.insert(
        "Access-Control-Allow-Methods",
        hyper::header::HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert(
        "Access-Control-Allow-Headers",
        hyper::header::HeaderValue::from_static("accept, content-type, authorization"),
    );
    resp
}

/// Set X-Etcd-Cluster-Id, X-Raft-Index and X-Raft-Term as etcd does on keys responses.
pub fn raft_headers(ctx: &Ctx, resp: &mut Response<Body>) {
    let st = ctx.shared.status();
    let cid = ctx.shared.cluster_id();
    let h = resp.headers_mut();
    h.insert(
        "X-Etcd-Cluster-Id",
        crate::cluster::id_hex(cid).parse().expect("hex header"),
    );
    h.insert(
        "X-Raft-Index",
        st.commit.to_string().parse().expect("number header"),
    );
    h.insert(
        "X-Raft-Term",
        st.term.to_string().parse().expect("number header"),
    );
}
