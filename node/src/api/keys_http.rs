//! `/v2/keys`: etcd's keys handler over the pure parser ([`super::keys`]), the store and Raft.
//!
//! Reads without `quorum=true` are served from this member's store (etcd's v2 semantics);
//! `quorum=true` reads first pass a ReadIndex barrier, so they are linearizable. Writes are
//! proposed through Raft and answered once applied here.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};

use super::keys::{self, KeysRequest, Reject, WaitSpec};
use super::{full, raft_headers, read_body, text_error, Body, Ctx};
use crate::raft::WaitError;
use crate::sm::{Op, Outcome};
use crate::store::{EtcdError, Event, RAFT_INTERNAL};

/// How long a watch may stay open (etcd: 5 minutes).
const WATCH_TIMEOUT: Duration = Duration::from_secs(300);

fn timeout_error() -> EtcdError {
    EtcdError::new(RAFT_INTERNAL, "etcdserver: request timed out", 0)
}

/// etcd's error answer.
pub fn error_response(ctx: &Ctx, e: &EtcdError) -> Response<Body> {
    let mut r = Response::builder()
        .status(e.http_status())
        .header("Content-Type", "application/json")
        .header("X-Etcd-Index", e.index.to_string())
        .body(full(e.to_json()))
        .expect("valid response");
    cluster_header(ctx, &mut r);
    r
}

fn cluster_header(ctx: &Ctx, r: &mut Response<Body>) {
    let cid = crate::cluster::id_hex(ctx.shared.cluster_id());
    r.headers_mut()
        .insert("X-Etcd-Cluster-Id", cid.parse().expect("hex header"));
}

fn event_response(ctx: &Ctx, e: &Event, no_value: bool, head: bool) -> Response<Body> {
    let status = if e.is_created() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let no_value = no_value
        && matches!(
            e.action.as_str(),
            "set" | "compareAndSwap" | "create" | "update"
        );
    let body = if head {
        String::new()
    } else {
        e.to_json(no_value)
    };
    let mut r = Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .header("X-Etcd-Index", e.etcd_index.to_string())
        .body(full(body))
        .expect("valid response");
    raft_headers(ctx, &mut r);
    r
}

/// Handle a keys request.
pub async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let ct = req
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let creds = super::auth::Creds::of(&req);
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed = keys::parse(&method, &path, query.as_deref(), ct.as_deref(), &body);
    // With auth on, the request's user (or the guest role) needs access to the key, checked
    // after parsing as etcd does, on the path as the client wrote it.
    if let Ok(r) = &parsed {
        let recursive = match r {
            KeysRequest::Get { wait: Some(w), .. } => w.recursive,
            KeysRequest::Get { recursive, .. } => *recursive,
            KeysRequest::Write { cmd, .. } => cmd.recursive,
        };
        let key = percent_encoding::percent_decode_str(path.strip_prefix("/v2/keys").unwrap_or(""))
            .decode_utf8_lossy()
            .into_owned();
        let write = method != "GET" && method != "HEAD";
        if !super::auth::has_key_access(ctx, &creds, &key, write, recursive) {
            return error_response(
                ctx,
                &EtcdError::new(crate::store::UNAUTHORIZED, "Insufficient credentials", 0),
            );
        }
    }
    match parsed {
        Err(Reject::Redirect(loc)) => {
            let mut b = Response::builder()
                .status(StatusCode::MOVED_PERMANENTLY)
                .header("Location", loc.as_str());
            let body = if method == "GET" || method == "HEAD" {
                b = b.header("Content-Type", "text/html; charset=utf-8");
                format!(
                    "<a href=\"{}\">Moved Permanently</a>.\n\n",
                    loc.replace('&', "&amp;").replace('"', "&#34;")
                )
            } else {
                String::new()
            };
            b.body(full(body)).expect("valid response")
        }
        Err(Reject::MethodNotAllowed) => {
            let mut r = text_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            r.headers_mut()
                .insert("Allow", keys::ALLOWED.parse().expect("header"));
            r
        }
        Err(Reject::Etcd(e)) => error_response(ctx, &e),
        Ok(KeysRequest::Get {
            key, wait: Some(w), ..
        }) => watch(ctx, &key, w),
        Ok(KeysRequest::Get {
            key,
            recursive,
            sorted,
            quorum,
            head,
            ..
        }) => {
            if quorum {
                if let Err(e) = ctx
                    .shared
                    .read_barrier(ctx.request_timeout, ctx.read_retry)
                    .await
                {
                    return wait_error(ctx, e);
                }
            }
            let now = ctx.shared.clock.wall_ms();
            let r = ctx
                .shared
                .sm
                .lock()
                .expect("sm lock")
                .store
                .get(&key, recursive, sorted, now);
            match r {
                Ok(e) => event_response(ctx, &e, false, head),
                Err(e) => error_response(ctx, &e),
            }
        }
        Ok(KeysRequest::Write { cmd, no_value }) => {
            match ctx.shared.propose(Op::Keys(cmd), ctx.request_timeout).await {
                Ok(applied) => match applied.outcome {
                    Outcome::Keys(Ok(e)) => event_response(ctx, &e, no_value, false),
                    Outcome::Keys(Err(e)) => error_response(ctx, &e),
                    Outcome::Done
                    | Outcome::Auth(_)
                    | Outcome::ConfRefused(..)
                    | Outcome::V3(_)
                    | Outcome::LeaseGrant(_)
                    | Outcome::LeaseRevoke(_)
                    | Outcome::Alarm(_) => error_response(ctx, &timeout_error()),
                },
                Err(e) => wait_error(ctx, e),
            }
        }
    }
}

fn wait_error(ctx: &Ctx, e: WaitError) -> Response<Body> {
    match e {
        WaitError::Timeout => error_response(ctx, &timeout_error()),
        WaitError::Stopped => error_response(
            ctx,
            &EtcdError::new(RAFT_INTERNAL, "etcdserver: server stopped", 0),
        ),
    }
}

fn watch(ctx: &Ctx, key: &str, w: WaitSpec) -> Response<Body> {
    let started =
        ctx.shared
            .sm
            .lock()
            .expect("sm lock")
            .store
            .watch(key, w.recursive, w.stream, w.index);
    let watch = match started {
        Ok(watch) => watch,
        Err(e) => return error_response(ctx, &e),
    };
    let stream = w.stream;
    let deadline = ctx.shared.clock.now() + WATCH_TIMEOUT;
    // One event (or, streaming, one per line) until the watch ends or times out. The headers
    // go out at once, so a long-polling client sees 200 immediately, as with etcd.
    let events = futures::stream::unfold((watch.rx, false), move |(mut rx, done)| async move {
        if done {
            return None;
        }
        let ev = crate::rt::timeout_at(deadline, rx.recv())
            .await
            .ok()
            .flatten()?;
        let bytes = Bytes::from(ev.to_json(false));
        Some((Ok::<_, Infallible>(Frame::data(bytes)), (rx, !stream)))
    });
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header("X-Etcd-Index", watch.start_index.to_string())
        .body(StreamBody::new(events).boxed())
        .expect("valid response");
    raft_headers(ctx, &mut r);
    r
}
