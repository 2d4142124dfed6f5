//! The small endpoints: `/version`, `/health`, `/v2/machines`, `/v2/stats/*`, `/metrics`,
//! (the v2 auth API is in [`super::auth`]).

use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{json, respond, text_error, Body, Ctx};
use crate::cluster::id_hex;

/// The etcd version detcd answers as (clients such as etcdctl check it).
pub const ETCD_VERSION: &str = "3.4.23";
/// The cluster version.
pub const CLUSTER_VERSION: &str = "3.4.0";

/// Handle everything that is not keys or members.
pub async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    route(ctx, &req, &path)
}

/// The methods etcd 3.4 serves on each of these paths (None: any method, as `/metrics`).
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/v2/machines" => Some("GET,HEAD"),
        "/metrics" => None,
        _ => Some("GET"),
    }
}

fn route(ctx: &Ctx, req: &Request<Incoming>, path: &str) -> Response<Body> {
    let known = matches!(
        path,
        "/version"
            | "/health"
            | "/v2/machines"
            | "/v2/stats/self"
            | "/v2/stats/leader"
            | "/v2/stats/store"
            | "/metrics"
    );
    if let Some(methods) = allowed(path).filter(|_| known) {
        if !methods.split(',').any(|m| m == req.method().as_str()) {
            let mut r = text_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            let h = r.headers_mut();
            h.insert("Allow", hyper::header::HeaderValue::from_static(methods));
            h.insert(
                "X-Content-Type-Options",
                hyper::header::HeaderValue::from_static("nosniff"),
            );
            return r;
        }
    }
    match path {
        "/version" => json(
            StatusCode::OK,
            serde_json::json!({"etcdserver": ETCD_VERSION, "etcdcluster": CLUSTER_VERSION})
                .to_string(),
        ),
        "/health" => {
            let healthy = ctx.shared.status().leader != 0 && ctx.shared.stopped.borrow().is_none();
            let (status, body) = if healthy {
                (StatusCode::OK, r#"{"health":"true"}"#)
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
            };
            respond(status, "text/plain; charset=utf-8", body)
        }
        "/v2/machines" => {
            let sm = ctx.shared.sm.lock().expect("sm lock");
            let urls: Vec<String> = sm
                .meta
                .members
                .members
                .values()
                .flat_map(|m| m.client_urls.clone())
                .collect();
            respond(StatusCode::OK, "text/plain; charset=utf-8", urls.join(", "))
        }
        "/v2/stats/self" => stats_self(ctx),
        "/v2/stats/leader" => stats_leader(ctx),
        "/v2/stats/store" => {
            let body = ctx.shared.sm.lock().expect("sm lock").store.stats_json();
            json(StatusCode::OK, body)
        }
        "/metrics" => metrics(ctx),
        _ => not_found(),
    }
}

/// Go's `http.NotFound` (the mux's answer to a path nothing serves): `http.Error` sets
/// `X-Content-Type-Options: nosniff` too.
pub fn not_found() -> Response<Body> {
    let mut r = text_error(StatusCode::NOT_FOUND, "404 page not found");
    r.headers_mut().insert(
        "X-Content-Type-Options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    r
}

fn rfc3339(ms: u64) -> String {
    crate::store::rfc3339_nano(ms)
}

fn stats_self(ctx: &Ctx) -> Response<Body> {
    let st = ctx.shared.status();
    let now = ctx.shared.clock.wall_ms();
    let since = if st.is_leader {
        st.leader_since_ms
    } else {
        ctx.start_ms
    };
    let c = &ctx.shared.counters;
    let body = serde_json::json!({
        "name": ctx.name,
        "id": id_hex(ctx.shared.id),
        "state": if st.is_leader { "StateLeader" } else { "StateFollower" },
        "startTime": rfc3339(ctx.start_ms),
        "leaderInfo": {
            "leader": id_hex(st.leader),
            "uptime": format!("{}ms", now.saturating_sub(since)),
            "startTime": rfc3339(since),
        },
        "recvAppendRequestCnt": c.msgs_recv.load(Ordering::Relaxed),
        "sendAppendRequestCnt": c.msgs_sent.load(Ordering::Relaxed),
    });
    json(StatusCode::OK, body.to_string())
}

fn stats_leader(ctx: &Ctx) -> Response<Body> {
    let st = ctx.shared.status();
    if !st.is_leader {
        return json(StatusCode::FORBIDDEN, r#"{"message":"not current leader"}"#);
    }
    let sm = ctx.shared.sm.lock().expect("sm lock");
    let mut followers = serde_json::Map::new();
    for id in sm
        .meta
        .members
        .members
        .keys()
        .filter(|id| **id != ctx.shared.id)
    {
        followers.insert(
            id_hex(*id),
            serde_json::json!({
                "latency": {"current": 0.0, "average": 0.0, "standardDeviation": 0.0, "minimum": 0.0, "maximum": 0.0},
                "counts": {"fail": 0, "success": 0},
            }),
        );
    }
    json(
        StatusCode::OK,
        serde_json::json!({"leader": id_hex(ctx.shared.id), "followers": followers}).to_string(),
    )
}

fn metrics(ctx: &Ctx) -> Response<Body> {
    use crate::metrics::single;
    let st = ctx.shared.status();
    let c = &ctx.shared.counters;
    let store_index = ctx.shared.sm.lock().expect("sm lock").store.index();
    let (db_size, db_in_use, keys) = {
        let mvcc = ctx.shared.mvcc.lock().expect("mvcc lock");
        (mvcc.db_size(), mvcc.db_size_in_use(), mvcc.keys())
    };
    let quota = match ctx.quota_backend_bytes {
        0 => crate::mvcc::DEFAULT_QUOTA_BYTES,
        q => q,
    };
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::with_capacity(256 << 10);
    let o = &mut out;
    // etcd 3.4's names, types and help texts (the ones etcd's dashboards and alerts query).
    single(
        o,
        "etcd_debugging_mvcc_db_total_size_in_bytes",
        "gauge",
        "Total size of the underlying database physically allocated in bytes.",
        db_size,
    );
    single(
        o,
        "etcd_debugging_mvcc_keys_total",
        "gauge",
        "Total number of keys.",
        keys,
    );
    single(
        o,
        "etcd_debugging_store_index",
        "gauge",
        "The v2 store index.",
        store_index,
    );
    single(
        o,
        "etcd_mvcc_db_total_size_in_bytes",
        "gauge",
        "Total size of the underlying database physically allocated in bytes.",
        db_size,
    );
    single(
        o,
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "gauge",
        "Total size of the underlying database logically in use in bytes.",
        db_in_use,
    );
    single(
        o,
        "etcd_server_has_leader",
        "gauge",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        u64::from(st.leader != 0),
    );
    crate::metrics::header(
        o,
        "etcd_server_id",
        "gauge",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
    );
    o.push_str(&format!(
        "etcd_server_id{{server_id=\"{}\"}} 1\n",
        id_hex(ctx.shared.id)
    ));
    single(
        o,
        "etcd_server_is_leader",
        "gauge",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        u64::from(st.is_leader),
    );
    single(
        o,
        "etcd_server_leader_changes_seen_total",
        "counter",
        "The number of leader changes seen.",
        st.leader_changes,
    );
    single(
        o,
        "etcd_server_proposals_applied_total",
        "gauge",
        "The total number of consensus proposals applied.",
        st.applied,
    );
    single(
        o,
        "etcd_server_proposals_committed_total",
        "gauge",
        "The total number of consensus proposals committed.",
        st.commit,
    );
    single(
        o,
        "etcd_server_proposals_failed_total",
        "counter",
        "The total number of failed proposals seen.",
        load(&c.proposals_failed),
    );
    single(
        o,
        "etcd_server_proposals_pending",
        "gauge",
        "The current number of pending proposals to commit.",
        load(&c.proposals_pending),
    );
    single(
        o,
        "etcd_server_quota_backend_bytes",
        "gauge",
        "Current backend storage quota size in bytes.",
        quota,
    );
    crate::metrics::header(
        o,
        "etcd_server_version",
        "gauge",
        "Which version is running. 1 for 'server_version' label with current version.",
    );
    o.push_str(&format!(
        "etcd_server_version{{server_version=\"{ETCD_VERSION}\"}} 1\n"
    ));
    c.grpc.render(o);
    crate::metrics::render_peers(o, &ctx.transport.peer_stats());
    c.timings.render(o);
    // The process collector's metrics (none under the simulator: one process, many members).
    if let Some(p) = crate::rt::process::stats() {
        let mut g = |name: &str, kind: &str, help: &str, v: f64| single(o, name, kind, help, v);
        g(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        );
        g(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds as f64,
        );
        g(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds as f64,
        );
        g(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        );
        g(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        );
        g(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes as f64,
        );
        g(
            "process_virtual_memory_max_bytes",
            "gauge",
            "Maximum amount of virtual memory available in bytes.",
            p.virtual_max_bytes as f64,
        );
    }
    // detcd's own.
    single(o, "detcd_raft_term", "gauge", "Current Raft term.", st.term);
    single(
        o,
        "etcd_disk_wal_fsync_total",
        "gauge",
        "WAL fsyncs.",
        load(&c.fsyncs),
    );
    single(
        o,
        "detcd_wal_entries_total",
        "gauge",
        "Entries written to the WAL.",
        load(&c.entries_persisted),
    );
    single(
        o,
        "detcd_peer_sent_messages_total",
        "gauge",
        "Raft messages sent to peers.",
        load(&c.msgs_sent),
    );
    single(
        o,
        "detcd_peer_sent_bytes_total",
        "gauge",
        "Bytes of Raft messages sent to peers.",
        load(&c.bytes_sent),
    );
    single(
        o,
        "detcd_peer_received_messages_total",
        "gauge",
        "Raft messages received from peers.",
        load(&c.msgs_recv),
    );
    single(
        o,
        "detcd_snapshots_total",
        "gauge",
        "Snapshots taken.",
        load(&c.snapshots),
    );
    respond(StatusCode::OK, "text/plain; version=0.0.4", out)
}
