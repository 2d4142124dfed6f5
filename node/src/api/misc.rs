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
    let st = ctx.shared.status();
    let c = &ctx.shared.counters;
    let store_index = ctx.shared.sm.lock().expect("sm lock").store.index();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
        ));
    };
    gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        u64::from(st.leader != 0),
    );
    gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader.",
        u64::from(st.is_leader),
    );
    gauge(
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
        st.leader_changes,
    );
    gauge(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        st.commit,
    );
    gauge(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        st.applied,
    );
    gauge(
        "etcd_debugging_store_index",
        "The v2 store index.",
        store_index,
    );
    gauge("detcd_raft_term", "Current Raft term.", st.term);
    gauge(
        "etcd_disk_wal_fsync_total",
        "WAL fsyncs.",
        c.fsyncs.load(Ordering::Relaxed),
    );
    gauge(
        "detcd_wal_entries_total",
        "Entries written to the WAL.",
        c.entries_persisted.load(Ordering::Relaxed),
    );
    gauge(
        "detcd_peer_sent_messages_total",
        "Raft messages sent to peers.",
        c.msgs_sent.load(Ordering::Relaxed),
    );
    gauge(
        "detcd_peer_sent_bytes_total",
        "Bytes of Raft messages sent to peers.",
        c.bytes_sent.load(Ordering::Relaxed),
    );
    gauge(
        "detcd_peer_received_messages_total",
        "Raft messages received from peers.",
        c.msgs_recv.load(Ordering::Relaxed),
    );
    gauge(
        "detcd_snapshots_total",
        "Snapshots taken.",
        c.snapshots.load(Ordering::Relaxed),
    );
    c.timings.render(&mut out);
    respond(StatusCode::OK, "text/plain; version=0.0.4", out)
}
