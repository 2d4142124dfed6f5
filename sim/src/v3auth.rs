//! v3 auth under load (`[auth] enabled` with `api = "v3"`): the setup before the load
//! (root, roles with key-range permissions, users, auth on, through etcd's v3 Auth service),
//! the simple tokens every v3 client of the harness sends, and the `v3-permissions` oracle.
//!
//! A role's patterns are v3 key ranges: `k` is the key alone, `p*` every key starting with
//! `p` (etcd's `--prefix`, the range `[p, prefix_end(p))`). The oracle is computed from the
//! scenario's role definitions alone, with etcd 3.4's rules written out here again rather
//! than taken from detcd (`etcdserver/apply_auth.go`, `auth/range_perm_cache.go`): a Range
//! needs read on its range, a Put write on its key (and read with `prev_kv`), a DeleteRange
//! write on its range (and read with `prev_kv`), a Txn read on every compare's range and,
//! for every op of both branches, what that op needs (a Put's `prev_kv` is not checked
//! inside a Txn, as in etcd 3.4). A range is permitted when the union of the user's
//! intervals of that kind covers it; a single key when one interval holds it. A refused
//! request is answered PermissionDenied `etcdserver: permission denied` and never applies
//! (the v3 checker holds every error to "not applied").
//!
//! Tokens: each workload client authenticates as its user (the harness's own watchers,
//! compactor and lease clients as root) when it opens a connection, and again after an
//! answer that says its token is no good (`invalid auth token`, which a member that
//! restarted or has not applied the Authenticate yet gives, or `revision of auth store is
//! old`), as etcd's clientv3 does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_checker::v3 as h;
use detcd_node::rt::h2::H2Channel;
use detcd_proto::authpb;
use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::auth_client::AuthClient;

use crate::output::{Check, RunOutput};
use crate::scenario::{AuthSpec, Scenario};

/// etcd's message for a request its user may not make (`ErrGRPCPermissionDenied`).
pub const PERMISSION_DENIED: &str = "etcdserver: permission denied";

/// The token a connection's requests carry (shared by every clone of the connection).
#[derive(Clone, Default)]
pub struct Token(Arc<Mutex<Option<String>>>);

impl Token {
    /// The token, if one is held.
    pub fn get(&self) -> Option<String> {
        self.0.lock().expect("token lock").clone()
    }

    /// Hold `t` (None: send none until the next Authenticate).
    pub fn set(&self, t: Option<String>) {
        *self.0.lock().expect("token lock") = t;
    }
}

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = self.get() {
            let v = t
                .parse()
                .map_err(|_| tonic::Status::internal("a token that is no header value"))?;
            req.metadata_mut().insert("token", v);
        }
        Ok(req)
    }
}

/// A connection whose requests carry a [`Token`].
pub type Ch = tonic::service::interceptor::InterceptedService<H2Channel<tonic::body::Body>, Token>;

/// A user's name and password.
#[derive(Debug, Clone)]
pub struct Creds {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
}

/// The credentials the harness's own v3 clients use (root), when auth is on.
pub fn root(s: &Scenario) -> Option<Creds> {
    s.auth.enabled.then(|| Creds {
        user: "root".into(),
        password: s.auth.root_password().into(),
    })
}

/// The credentials workload client `id` acts with, when auth is on (the user
/// [`crate::workload::user_of`] gives it, as in the v2 auth scenario).
pub fn client_creds(s: &Scenario, seed: u64, id: u32) -> Option<Creds> {
    if !s.auth.enabled {
        return None;
    }
    crate::workload::user_of(s, seed, id).map(|u| Creds {
        user: u.name.clone(),
        password: u.password.clone(),
    })
}

/// Whether an answer says the token is no good (a new one is needed).
pub fn token_refused(st: &tonic::Status) -> bool {
    let m = st.message();
    m == "etcdserver: invalid auth token" || m == "etcdserver: revision of auth store is old"
}

/// Authenticate as `c` over `raw` (no token sent) and make `token` hold the answer.
pub async fn authenticate(
    raw: &H2Channel<tonic::body::Body>,
    c: &Creds,
    token: &Token,
    timeout: Duration,
) -> Result<(), tonic::Status> {
    let req = pb::AuthenticateRequest {
        name: c.user.clone(),
        password: c.password.clone(),
    };
    let mut a = AuthClient::new(raw.clone());
    match tokio::time::timeout(timeout, a.authenticate(req)).await {
        Ok(Ok(r)) => {
            token.set(Some(r.into_inner().token));
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(tonic::Status::deadline_exceeded("authenticate timed out")),
    }
}

/// A connection to `addr` whose requests carry `token`, authenticated as `creds` (when
/// given) if `token` holds none.
pub async fn connect(
    addr: std::net::SocketAddr,
    creds: Option<&Creds>,
    token: &Token,
    timeout: Duration,
) -> Option<Ch> {
    let raw = match tokio::time::timeout(timeout, H2Channel::connect(addr)).await {
        Ok(Ok(ch)) => ch,
        _ => return None,
    };
    wrap(raw, creds, token, timeout).await
}

/// `raw`, its requests carrying `token`, authenticated as `creds` (when given) if `token`
/// holds none.
pub async fn wrap(
    raw: H2Channel<tonic::body::Body>,
    creds: Option<&Creds>,
    token: &Token,
    timeout: Duration,
) -> Option<Ch> {
    if let Some(c) = creds {
        if token.get().is_none() && authenticate(&raw, c, token, timeout).await.is_err() {
            return None;
        }
    }
    Some(tonic::service::interceptor::InterceptedService::new(
        raw,
        token.clone(),
    ))
}

/// A key pattern's interval `[begin, end)` (`None`: no upper bound).
type Ivl = (String, Option<String>);

/// `k` → the key alone (`[k, k\0)`); `p*` → every key starting with `p`.
fn interval(pattern: &str) -> Ivl {
    match pattern.strip_suffix('*') {
        Some(p) => (p.to_string(), crate::v3load::prefix_end_of(p)),
        None => (pattern.to_string(), Some(format!("{pattern}\0"))),
    }
}

/// The permission a pattern list grants, as etcd's `authpb.Permission` (key, range_end).
pub fn permission(pattern: &str, kind: authpb::permission::Type) -> authpb::Permission {
    let (key, end) = match pattern.strip_suffix('*') {
        Some(p) => (
            p.to_string(),
            crate::v3load::prefix_end_of(p).unwrap_or_else(|| "\0".into()),
        ),
        None => (pattern.to_string(), String::new()),
    };
    authpb::Permission {
        perm_type: kind as i32,
        key: key.into_bytes(),
        range_end: end.into_bytes(),
    }
}

/// Whether the union of `perms` covers the request range `[key, end)` (etcd's
/// conventions: `end` empty is the key alone, `"\0"` no upper bound).
fn covers(perms: &[Ivl], key: &str, end: &str) -> bool {
    let below = |k: &str, e: &Option<String>| e.as_deref().is_none_or(|e| k < e);
    if end.is_empty() {
        return perms
            .iter()
            .any(|(b, e)| b.as_str() <= key && below(key, e));
    }
    let want: Option<&str> = (end != "\0").then_some(end);
    if want.is_some_and(|w| w <= key) {
        // An empty or reversed range: etcd's interval tree takes every interval holding
        // `key` as overlapping it, and those cover it (`adt.intervalTree.Contains`).
        return covers(perms, key, "");
    }
    let mut v = perms.to_vec();
    v.sort();
    let mut blocks: Vec<Ivl> = Vec::new();
    for (b, e) in v {
        if let Some(last) = blocks.last_mut() {
            if last.1.as_deref().is_none_or(|le| b.as_str() <= le) {
                last.1 = match (&last.1, &e) {
                    (Some(x), Some(y)) => Some(x.max(y).clone()),
                    _ => None,
                };
                continue;
            }
        }
        blocks.push((b, e));
    }
    blocks.iter().any(|(b, e)| {
        b.as_str() <= key
            && match (e, want) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(e), Some(w)) => w <= e.as_str(),
            }
    })
}

/// The read and write intervals `user` holds through its roles (`flip_role`'s only if
/// `flipped_in`).
fn grants(spec: &AuthSpec, user: &str, flipped_in: bool) -> Option<(Vec<Ivl>, Vec<Ivl>)> {
    let u = spec.users.iter().find(|u| u.name == user)?;
    let (mut read, mut write) = (Vec::new(), Vec::new());
    for r in u
        .roles
        .iter()
        .filter_map(|r| spec.roles.iter().find(|x| x.name == *r))
        .filter(|r| flipped_in || r.name != spec.flip_role)
    {
        read.extend(r.read.iter().map(|p| interval(p)));
        write.extend(r.write.iter().map(|p| interval(p)));
    }
    Some((read, write))
}

/// Whether the scenario's roles let `user` make `req` (see the module documentation),
/// with `flip_role`'s permission granted (as it is before the first change).
pub fn allowed(spec: &AuthSpec, user: &str, req: &h::Request) -> bool {
    allowed_as(spec, user, req, true)
}

/// [`allowed`], with `flip_role`'s permission granted or not.
pub fn allowed_as(spec: &AuthSpec, user: &str, req: &h::Request, flipped_in: bool) -> bool {
    let Some((read, write)) = grants(spec, user, flipped_in) else {
        return false;
    };
    let op = |r: &h::Request, in_txn: bool| -> bool {
        match r {
            h::Request::Range(q) => covers(&read, &q.key, &q.range_end),
            h::Request::Put(p) => {
                covers(&write, &p.key, "") && (in_txn || !p.prev_kv || covers(&read, &p.key, ""))
            }
            h::Request::DeleteRange(d) => {
                covers(&write, &d.key, &d.range_end)
                    && (!d.prev_kv || covers(&read, &d.key, &d.range_end))
            }
            // etcd 3.4 checks no op of a nested txn, nor compactions. (A revocation, and a
            // Put with a lease, need write on every key of the lease, `checkLeasePuts`: the
            // harness's lease clients act as root, so no user's request has either.)
            h::Request::Txn(_) | h::Request::Compact(_) | h::Request::LeaseRevoke(_) => true,
        }
    };
    match req {
        h::Request::Txn(t) => {
            t.compares
                .iter()
                .all(|c| covers(&read, &c.key, &c.range_end))
                && t.success.iter().chain(&t.failure).all(|r| op(r, true))
        }
        other => op(other, false),
    }
}

/// One change of `flip_role`'s permission, made by the flipper (as root): from the call
/// of its first try to the answer that acknowledged it (None: never acknowledged), after
/// which the permission is `granted` or not. Between the two it may or may not be in force.
/// A change with a try that got no definite answer (`certain` false) may still take effect
/// later, even after later changes (a proposal held somewhere): its window never closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthChange {
    /// The first try's call (ns since the start of the load).
    pub call_ns: u64,
    /// The acknowledgement (ns since the start of the load).
    pub return_ns: Option<u64>,
    /// Whether the permission is granted after it.
    pub granted: bool,
    /// Whether every try but the acknowledged one was answered as not applied.
    pub certain: bool,
}

/// The states `flip_role`'s permission may have had for an operation called at `call` and
/// answered at `ret`: (granted possible, revoked possible). A linearizable operation takes
/// effect within its call and answer (permissions are checked as it applies, or, for a
/// read, after its read index is reached), so a change whose window overlaps that span may
/// or may not have been in force; a serializable read is checked against its member's
/// auth state, which may be behind, so any state from before its answer is possible.
pub fn flip_states(
    changes: &[AuthChange],
    call: u64,
    ret: u64,
    serializable: bool,
) -> (bool, bool) {
    // Indexed by the state: [revoked, granted].
    let mut possible = [false; 2];
    if serializable {
        possible[1] = true; // granted before the first change
        for c in changes.iter().filter(|c| c.call_ns <= ret) {
            possible[usize::from(c.granted)] = true;
        }
        return (possible[1], possible[0]);
    }
    let (mut state, mut overlapped) = (true, false);
    for c in changes {
        if c.certain && c.return_ns.is_some_and(|end| end < call) {
            state = c.granted; // settled before the operation began
        } else if c.call_ns <= ret {
            // In flight during it: the state before, or after.
            possible[usize::from(state)] = true;
            possible[usize::from(c.granted)] = true;
            state = c.granted;
            overlapped = true;
        }
    }
    if !overlapped {
        possible[usize::from(state)] = true;
    }
    (possible[1], possible[0])
}

/// Before the load: root (with the root role), the roles and their permissions, the users
/// and their roles, auth on — through etcd's v3 Auth service, as `etcdctl role add`, `role
/// grant-permission`, `user add`, `user grant-role` and `auth enable` do — then wait until
/// every member has applied it (an anonymous request is refused there). Each step is
/// retried until it succeeds or finds its work done.
pub async fn setup(spec: &AuthSpec, addrs: &[String]) -> Result<(), String> {
    let addrs: Vec<std::net::SocketAddr> = addrs
        .iter()
        .map(|a| a.parse().map_err(|e| format!("member address {a}: {e}")))
        .collect::<Result<_, _>>()?;
    let timeout = Duration::from_secs(2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut member = 0usize;
    let mut step = |what: String, call: Call| {
        let addrs = addrs.clone();
        let start = member;
        member += 1;
        async move {
            let mut at = start;
            loop {
                let addr = addrs[at % addrs.len()];
                at += 1;
                let e = match tokio::time::timeout(timeout, H2Channel::connect(addr)).await {
                    Ok(Ok(ch)) => match tokio::time::timeout(timeout, call.clone().run(ch)).await {
                        Ok(Ok(())) => return Ok(()),
                        Ok(Err(s)) if done_already(&s) => return Ok(()),
                        Ok(Err(s)) => format!("{:?} {}", s.code(), s.message()),
                        Err(_) => "timed out".to_string(),
                    },
                    _ => "no connection".to_string(),
                };
                if tokio::time::Instant::now() > deadline {
                    return Err(format!("v3 auth setup: {what}: {e}"));
                }
                detcd_node::rt::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let root_pw = spec.root_password().to_string();
    step("role add root".into(), Call::RoleAdd("root".into())).await?;
    step(
        "user add root".into(),
        Call::UserAdd("root".into(), root_pw.clone()),
    )
    .await?;
    step(
        "user grant-role root root".into(),
        Call::Grant("root".into(), "root".into()),
    )
    .await?;
    for r in &spec.roles {
        step(
            format!("role add {}", r.name),
            Call::RoleAdd(r.name.clone()),
        )
        .await?;
        // A pattern both readable and writable is one READWRITE permission, as etcdctl
        // grants it; etcd keeps one permission per (key, range_end) and the last grant wins.
        let mut kinds: BTreeMap<&str, authpb::permission::Type> = BTreeMap::new();
        for p in &r.read {
            kinds.insert(p, authpb::permission::Type::Read);
        }
        for p in &r.write {
            let k = match kinds.get(p.as_str()) {
                Some(authpb::permission::Type::Read) => authpb::permission::Type::Readwrite,
                _ => authpb::permission::Type::Write,
            };
            kinds.insert(p, k);
        }
        for (p, k) in kinds {
            step(
                format!("role grant-permission {} {p}", r.name),
                Call::Permit(r.name.clone(), permission(p, k)),
            )
            .await?;
        }
    }
    for u in &spec.users {
        step(
            format!("user add {}", u.name),
            Call::UserAdd(u.name.clone(), u.password.clone()),
        )
        .await?;
        for r in &u.roles {
            step(
                format!("user grant-role {} {r}", u.name),
                Call::Grant(u.name.clone(), r.clone()),
            )
            .await?;
        }
    }
    step("auth enable".into(), Call::Enable).await?;
    // Every member refuses an anonymous read once it has applied the enable.
    for addr in addrs {
        loop {
            let refused = match tokio::time::timeout(timeout, H2Channel::connect(addr)).await {
                Ok(Ok(ch)) => {
                    let mut kv = detcd_proto::etcdserverpb::kv_client::KvClient::new(ch);
                    let req = pb::RangeRequest {
                        key: b"v3/0".to_vec(),
                        serializable: true,
                        ..Default::default()
                    };
                    matches!(
                        tokio::time::timeout(timeout, kv.range(req)).await,
                        Ok(Err(s)) if s.message() == "etcdserver: user name is empty"
                    )
                }
                _ => false,
            };
            if refused {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "v3 auth setup: member {addr} never applied auth enable"
                ));
            }
            detcd_node::rt::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// One setup call (before auth is on, so without a token).
#[derive(Clone)]
enum Call {
    RoleAdd(String),
    UserAdd(String, String),
    Grant(String, String),
    Permit(String, authpb::Permission),
    Enable,
}

impl Call {
    async fn run(self, ch: H2Channel<tonic::body::Body>) -> Result<(), tonic::Status> {
        let mut a = AuthClient::new(ch);
        match self {
            Call::RoleAdd(name) => a
                .role_add(pb::AuthRoleAddRequest { name })
                .await
                .map(|_| ()),
            Call::UserAdd(name, password) => a
                .user_add(pb::AuthUserAddRequest {
                    name,
                    password,
                    options: None,
                })
                .await
                .map(|_| ()),
            Call::Grant(user, role) => a
                .user_grant_role(pb::AuthUserGrantRoleRequest { user, role })
                .await
                .map(|_| ()),
            Call::Permit(name, perm) => a
                .role_grant_permission(pb::AuthRoleGrantPermissionRequest {
                    name,
                    perm: Some(perm),
                })
                .await
                .map(|_| ()),
            Call::Enable => a.auth_enable(pb::AuthEnableRequest {}).await.map(|_| ()),
        }
    }
}

/// An answer that says a retried step was done by an earlier try that got no answer.
fn done_already(s: &tonic::Status) -> bool {
    matches!(
        s.message(),
        "etcdserver: role name already exists" | "etcdserver: user name already exists"
    )
}

/// The `v3-permissions` check (auth on, v3 workload): every answered operation of the
/// workload's clients was allowed, or refused with PermissionDenied, exactly as the roles
/// say; answers about the token (invalid, or of an older auth revision), indeterminate and
/// other errors are left out. It fails too when nothing was refused or nothing allowed.
pub fn check(s: &Scenario, out: &RunOutput) -> Option<Check> {
    if !s.auth.enabled || s.workload.api != crate::scenario::Api::V3 {
        return None;
    }
    let (mut allowed_n, mut refused_n, mut excluded, mut changing) = (0u64, 0u64, 0u64, 0u64);
    let mut wrong = Vec::new();
    for o in &out.rec.v3 {
        let Some(user) = out.rec.v3_users.get(&o.client) else {
            continue;
        };
        let refused = match &o.outcome {
            h::Outcome::Ok(_) => false,
            h::Outcome::Error(e) if e.message == PERMISSION_DENIED => true,
            _ => {
                excluded += 1;
                continue;
            }
        };
        let ret = o.return_ns.unwrap_or(u64::MAX);
        let serializable = matches!(&o.request, h::Request::Range(q) if q.serializable);
        let (g, r) = flip_states(&out.rec.v3_auth_changes, o.call_ns, ret, serializable);
        let (with, without) = (
            allowed_as(&s.auth, user, &o.request, true),
            allowed_as(&s.auth, user, &o.request, false),
        );
        let may_allow = (g && with) || (r && without);
        let may_refuse = (g && !with) || (r && !without);
        // Counted by what the roles say; an operation they may allow or refuse (a change
        // in flight) counts as neither.
        match (may_allow, may_refuse) {
            (true, true) => changing += 1,
            (true, false) => allowed_n += 1,
            _ => refused_n += 1,
        }
        if (refused && !may_refuse) || (!refused && !may_allow) {
            wrong.push(format!(
                "op {} by {user} (client {}, member {:?}, at {:.3} s): {} but the roles {} it: {}",
                o.id,
                o.client,
                o.member,
                o.call_ns as f64 / 1e9,
                if refused {
                    "refused"
                } else {
                    "answered with success"
                },
                if refused { "allow" } else { "refuse" },
                serde_json::to_string(&o.request).unwrap_or_default(),
            ));
        }
    }
    let changes = out.rec.v3_auth_changes.len();
    let uncertain = out
        .rec
        .v3_auth_changes
        .iter()
        .filter(|c| !c.certain)
        .count();
    let counts = format!(
        "{allowed_n} answered operations the roles allow, {refused_n} they refuse, {changing} either way (a permission change in flight; {changes} changes, {uncertain} with a try of unknown outcome) ({excluded} indeterminate or otherwise failed left out)"
    );
    let (passed, detail) = if !wrong.is_empty() {
        (
            false,
            format!(
                "{} operation(s) not as the roles say; first: {}; {counts}",
                wrong.len(),
                wrong[0]
            ),
        )
    } else if allowed_n == 0 || refused_n == 0 {
        (false, format!("nothing to compare on one side: {counts}"))
    } else {
        (
            true,
            format!("every PermissionDenied and only those as the roles say: {counts}"),
        )
    };
    Some(Check {
        name: "v3-permissions".into(),
        passed: Some(passed),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{RoleSpec, UserSpec};

    fn spec() -> AuthSpec {
        let role = |n: &str, r: &[&str], w: &[&str]| RoleSpec {
            name: n.into(),
            read: r.iter().map(|s| s.to_string()).collect(),
            write: w.iter().map(|s| s.to_string()).collect(),
        };
        let user = |n: &str, roles: &[&str]| UserSpec {
            name: n.into(),
            password: "pw".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
        };
        AuthSpec {
            enabled: true,
            root_password: String::new(),
            roles: vec![
                role("all-rw", &["v3/*"], &["v3/*"]),
                role("all-ro", &["v3/*"], &[]),
                role("low", &["v3/1*", "v3/2*"], &["v3/1*"]),
                role("three", &["v3/3"], &["v3/3"]),
            ],
            users: vec![
                user("alice", &["all-rw"]),
                user("bob", &["all-ro"]),
                user("carol", &[]),
                user("dave", &["low", "three"]),
            ],
            ..AuthSpec::default()
        }
    }

    fn range(k: &str, e: &str) -> h::Request {
        h::Request::Range(h::RangeRequest {
            key: k.into(),
            range_end: e.into(),
            ..Default::default()
        })
    }

    fn put(k: &str, prev_kv: bool) -> h::Request {
        h::Request::Put(h::PutRequest {
            key: k.into(),
            value: "v".into(),
            lease: 0,
            prev_kv,
        })
    }

    fn del(k: &str, e: &str, prev_kv: bool) -> h::Request {
        h::Request::DeleteRange(h::DeleteRangeRequest {
            key: k.into(),
            range_end: e.into(),
            prev_kv,
        })
    }

    fn cas(k: &str, prev_kv_in_put: bool) -> h::Request {
        h::Request::Txn(h::TxnRequest {
            compares: vec![h::Compare {
                target: h::CompareTarget::Mod,
                result: h::CompareResult::Equal,
                key: k.into(),
                range_end: String::new(),
                operand: h::Operand::Int(0),
            }],
            success: vec![put(k, prev_kv_in_put)],
            failure: vec![range(k, "")],
        })
    }

    #[test]
    fn the_oracle_follows_etcds_rules() {
        let s = spec();
        assert!(allowed(&s, "alice", &range("v3/", "v30")));
        assert!(allowed(&s, "alice", &cas("v3/7", false)));
        assert!(allowed(&s, "bob", &range("v3/", "v30")));
        assert!(!allowed(&s, "bob", &put("v3/1", false)));
        assert!(!allowed(&s, "bob", &cas("v3/1", false)));
        assert!(!allowed(&s, "carol", &range("v3/1", "")));
        // dave: read v3/1*, v3/2* and v3/3; write v3/1* and v3/3.
        assert!(allowed(&s, "dave", &range("v3/10", "")));
        assert!(allowed(&s, "dave", &put("v3/3", true)));
        assert!(!allowed(&s, "dave", &put("v3/2", false)));
        assert!(allowed(&s, "dave", &del("v3/1", "", true)));
        assert!(!allowed(&s, "dave", &del("v3/2", "", false)));
        // Adjacent and overlapping intervals cover a range together: v3/1* ∪ v3/2* ∪
        // v3/3 is [v3/1, v3/3\0); a range past it is not covered.
        assert!(allowed(&s, "dave", &range("v3/1", "v3/3\0")));
        assert!(!allowed(&s, "dave", &range("v3/1", "v3/4")));
        assert!(!allowed(&s, "dave", &range("v3/", "v30")));
        // An empty or reversed range is covered as its key is (etcd's interval tree); a
        // range to the end only by an open interval.
        assert!(allowed(&s, "alice", &range("v3/5", "v3/5")));
        assert!(allowed(&s, "alice", &range("v3/5", "v3/4")));
        assert!(!allowed(&s, "carol", &range("v3/5", "v3/4")));
        assert!(!allowed(&s, "alice", &range("v3/5", "\0")));
        // A Txn's compares need read, each op what it needs; a Put's prev_kv inside a Txn
        // is not checked (etcd 3.4).
        assert!(allowed(&s, "dave", &cas("v3/3", true)));
        assert!(!allowed(&s, "dave", &cas("v3/2", false)));
        assert!(!allowed(&s, "nobody", &range("v3/1", "")));
    }

    #[test]
    fn a_permission_change_in_flight_makes_both_answers_possible() {
        let ch = |call, ret: Option<u64>, granted| AuthChange {
            call_ns: call,
            return_ns: ret,
            granted,
            certain: true,
        };
        // Revoked over [100, 200], granted again over [300, 400], revoked from 500 on
        // (never acknowledged).
        let c = [
            ch(100, Some(200), false),
            ch(300, Some(400), true),
            ch(500, None, false),
        ];
        // Linearizable: before any change, between them, and overlapping one.
        assert_eq!(flip_states(&c, 10, 90, false), (true, false));
        assert_eq!(flip_states(&c, 210, 290, false), (false, true));
        assert_eq!(flip_states(&c, 150, 160, false), (true, true));
        assert_eq!(flip_states(&c, 410, 490, false), (true, false));
        assert_eq!(flip_states(&c, 600, 700, false), (true, true));
        // Serializable: any state its member may still be at, from before its answer.
        assert_eq!(flip_states(&c, 10, 90, true), (true, false));
        assert_eq!(flip_states(&c, 210, 290, true), (true, true));
        assert_eq!(flip_states(&[], 210, 290, true), (true, false));
        // A change one of whose tries got no answer may still land after later ones.
        let mut u = c;
        u[0].certain = false;
        assert_eq!(flip_states(&u, 410, 490, false), (true, true));
        assert_eq!(flip_states(&u, 10, 90, false), (true, false));
        // An operation the roles allow only with the permission: refused while it is
        // revoked, either while a change is in flight.
        let mut s = spec();
        s.roles.push(RoleSpec {
            name: "five".into(),
            read: vec!["v3/5".into()],
            write: vec!["v3/5".into()],
        });
        s.users[2].roles.push("five".into());
        s.flip_role = "five".into();
        assert!(allowed_as(&s, "carol", &put("v3/5", false), true));
        assert!(!allowed_as(&s, "carol", &put("v3/5", false), false));
        assert!(!allowed_as(&s, "carol", &put("v3/6", false), true));
    }

    #[test]
    fn permissions_are_granted_as_etcdctl_grants_them() {
        let p = permission("v3/1*", authpb::permission::Type::Read);
        assert_eq!((p.key, p.range_end), (b"v3/1".to_vec(), b"v3/2".to_vec()));
        let p = permission("v3/3", authpb::permission::Type::Readwrite);
        assert_eq!((p.key, p.range_end), (b"v3/3".to_vec(), Vec::new()));
    }
}
