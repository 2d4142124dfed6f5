//! `/v2/auth/*` as etcd 3.4 answers it, and the credential checks that gate `/v2/keys` and
//! membership changes once auth is enabled.
//!
//! Who a request is: its basic-auth user (wrong password or unknown user: nobody at all);
//! without an `Authorization` header and with client-cert auth on, the user named by its TLS
//! certificate's common name; otherwise the guest role. The user `root`, or anyone granted
//! the `root` role, may use the auth API and change membership.
//!
//! Passwords are bcrypt-hashed (etcd's cost 10) by the member that takes the request, with a
//! salt from its seeded rng, and the hash is what Raft replicates. Checking a password is
//! expensive by design, so a member remembers (in memory, as SHA-256 digests) the passwords
//! it has verified against a hash.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{json, read_body, text_error, Body, ClientCommonName, Ctx};
use crate::auth::{
    merge_perms, merge_roles, AuthError, AuthOp, AuthState, Perms, Role, User, ROOT,
};
use crate::raft::WaitError;
use crate::sm::{Op, Outcome};

/// bcrypt's cost, as etcd uses it (Go's `bcrypt.DefaultCost`).
pub const BCRYPT_COST: u32 = 10;
/// Verified passwords remembered per member.
const VERIFIED_MAX: usize = 1024;

/// Passwords this member has verified: bcrypt hash → SHA-256 of the password.
#[derive(Default)]
pub struct Verified(Mutex<HashMap<String, [u8; 32]>>);

impl Verified {
    pub(crate) fn check(&self, hash: &str, password: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        if self.0.lock().expect("verified lock").get(hash) == Some(&digest) {
            return true;
        }
        if !bcrypt::verify(password, hash).unwrap_or(false) {
            return false;
        }
        let mut m = self.0.lock().expect("verified lock");
        if m.len() >= VERIFIED_MAX {
            m.clear();
        }
        m.insert(hash.to_string(), digest);
        true
    }
}

/// The credentials a request carries.
#[derive(Debug, Clone, Default)]
pub struct Creds {
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The TLS client certificate's common name.
    pub common_name: Option<String>,
}

impl Creds {
    /// Take them from a request.
    pub fn of(req: &Request<Incoming>) -> Creds {
        Creds {
            authorization: req
                .headers()
                .get("Authorization")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            common_name: req
                .extensions()
                .get::<ClientCommonName>()
                .map(|c| c.0.clone()),
        }
    }
}

/// Go's `Request.BasicAuth`.
fn basic_auth(header: &str) -> Option<(String, String)> {
    let prefix = header.get(..6)?;
    if !prefix.eq_ignore_ascii_case("basic ") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&header[6..])
        .ok()?;
    let s = String::from_utf8_lossy(&raw);
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Who the request is. `Ok(None)`: no credentials (the guest). `Err(())`: credentials that
/// do not check out.
fn identify(ctx: &Ctx, state: &AuthState, creds: &Creds) -> Result<Option<User>, ()> {
    match &creds.authorization {
        None => {
            if ctx.client_cert_auth {
                if let Some(u) = creds.common_name.as_deref().and_then(|cn| state.user(cn)) {
                    return Ok(Some(u));
                }
            }
            Ok(None)
        }
        Some(h) => {
            let (name, password) = basic_auth(h).ok_or(())?;
            let user = state.user(&name).ok_or(())?;
            if ctx.verified.check(&user.hash, &password) {
                Ok(Some(user))
            } else {
                Err(())
            }
        }
    }
}

fn auth_state(ctx: &Ctx) -> AuthState {
    ctx.shared.sm.lock().expect("sm lock").meta.auth.clone()
}

fn enabled(ctx: &Ctx) -> bool {
    ctx.shared.sm.lock().expect("sm lock").meta.auth.enabled
}

/// etcd's `hasRootAccess`: auth off, or the request is a user with the root role.
pub fn has_root_access(ctx: &Ctx, creds: &Creds) -> bool {
    if !enabled(ctx) {
        return true;
    }
    let state = auth_state(ctx);
    matches!(identify(ctx, &state, creds), Ok(Some(u)) if AuthState::is_root(&u))
}

/// etcd's `hasKeyPrefixAccess` for a keys request on `key` (the path after `/v2/keys`).
pub fn has_key_access(ctx: &Ctx, creds: &Creds, key: &str, write: bool, recursive: bool) -> bool {
    if !enabled(ctx) {
        return true;
    }
    let state = auth_state(ctx);
    match identify(ctx, &state, creds) {
        Ok(user) => state.key_access(user.as_ref(), key, write, recursive),
        Err(()) => false,
    }
}

/// 401 `{"message":"Insufficient credentials"}` (etcd's `writeNoAuth`).
pub fn no_auth() -> Response<Body> {
    error(&AuthError::plain(401, "Insufficient credentials"))
}

fn error(e: &AuthError) -> Response<Body> {
    json(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.to_json(),
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut()
        .insert("Allow", hyper::header::HeaderValue::from_static(allow));
    r
}

fn ok_json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    json(status, format!("{v}\n"))
}

fn invalid_json() -> AuthError {
    AuthError::plain(400, "Invalid JSON in request body.")
}

/// Read a user or role body; its name must be the one in the URL (etcd's checks, in order).
async fn decode_body<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    name: &str,
    what: &str,
    name_of: impl Fn(&T) -> &String,
) -> Result<T, AuthError> {
    let body = read_body(req.into_body())
        .await
        .map_err(|_| invalid_json())?;
    let v: T = serde_json::from_slice(&body).map_err(|_| invalid_json())?;
    if name_of(&v) != name {
        return Err(AuthError::plain(
            400,
            format!("{what} JSON name does not match the name in the URL"),
        ));
    }
    Ok(v)
}

/// Handle `/v2/auth/*`.
pub async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let creds = Creds::of(&req);
    let method = req.method().clone();
    let mut r = if path == "/v2/auth/enable" {
        if ![Method::GET, Method::PUT, Method::DELETE].contains(&method) {
            return method_not_allowed("GET,PUT,DELETE");
        }
        if method != Method::GET && !has_root_access(ctx, &creds) {
            return no_auth();
        }
        enable(ctx, &method).await
    } else if path == "/v2/auth/users" {
        if let Some(refused) = gate(ctx, &creds, &method, "GET") {
            return refused;
        }
        list_users(ctx)
    } else if path == "/v2/auth/roles" {
        if let Some(refused) = gate(ctx, &creds, &method, "GET") {
            return refused;
        }
        list_roles(ctx)
    } else if let Some(name) = path.strip_prefix("/v2/auth/users/") {
        if let Some(refused) = gate(ctx, &creds, &method, "GET,PUT,DELETE") {
            return refused;
        }
        user(ctx, &decode(name), &method, req)
            .await
            .unwrap_or_else(|e| error(&e))
    } else if let Some(name) = path.strip_prefix("/v2/auth/roles/") {
        if let Some(refused) = gate(ctx, &creds, &method, "GET,PUT,DELETE") {
            return refused;
        }
        role(ctx, &decode(name), &method, req)
            .await
            .unwrap_or_else(|e| error(&e))
    } else {
        return text_error(StatusCode::NOT_FOUND, "404 page not found");
    };
    let cid = crate::cluster::id_hex(ctx.shared.cluster_id());
    r.headers_mut()
        .insert("X-Etcd-Cluster-Id", cid.parse().expect("hex header"));
    r
}

/// etcd's checks before a users or roles handler, in its order: the method (`allow` is the
/// `Allow` header, e.g. "GET,PUT,DELETE"), then root access.
fn gate(ctx: &Ctx, creds: &Creds, method: &Method, allow: &'static str) -> Option<Response<Body>> {
    if !allow.split(',').any(|m| m == method.as_str()) {
        return Some(method_not_allowed(allow));
    }
    if !has_root_access(ctx, creds) {
        return Some(no_auth());
    }
    None
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

async fn propose(ctx: &Ctx, op: AuthOp) -> Result<(), AuthError> {
    match ctx.shared.propose(Op::Auth(op), ctx.request_timeout).await {
        Ok(applied) => match applied.outcome {
            Outcome::Auth(r) => r,
            _ => Err(AuthError::plain(500, "Internal Server Error")),
        },
        Err(WaitError::Timeout) => Err(AuthError::plain(500, "etcdserver: request timed out")),
        Err(WaitError::Stopped) => Err(AuthError::plain(500, "etcdserver: server stopped")),
    }
}

async fn enable(ctx: &Ctx, method: &Method) -> Response<Body> {
    let op = match *method {
        Method::GET => {
            return ok_json(
                StatusCode::OK,
                &serde_json::json!({"enabled": enabled(ctx)}),
            );
        }
        Method::PUT => AuthOp::Enable,
        _ => AuthOp::Disable,
    };
    match propose(ctx, op).await {
        Ok(()) => json(StatusCode::OK, ""),
        Err(e) => error(&e),
    }
}

/// A user with its roles spelled out; roles that do not exist are left out (etcd's list).
fn user_with_roles(state: &AuthState, u: &User) -> serde_json::Value {
    let roles: Vec<serde_json::Value> = u
        .roles
        .iter()
        .flatten()
        .filter_map(|r| state.role(r))
        .map(|r| r.to_value())
        .collect();
    let mut v = serde_json::json!({ "user": u.name });
    if !roles.is_empty() {
        v["roles"] = serde_json::Value::Array(roles);
    }
    v
}

fn list_users(ctx: &Ctx) -> Response<Body> {
    let state = auth_state(ctx);
    let users: Vec<serde_json::Value> = state
        .users
        .keys()
        .filter_map(|n| state.user(n))
        .map(|u| user_with_roles(&state, &u))
        .collect();
    let users = if users.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Array(users)
    };
    ok_json(StatusCode::OK, &serde_json::json!({ "users": users }))
}

fn list_roles(ctx: &Ctx) -> Response<Body> {
    let state = auth_state(ctx);
    let mut roles: Vec<Role> = state.roles.values().cloned().collect();
    roles.push(crate::auth::root_role());
    roles.sort_by(|a, b| a.name.cmp(&b.name));
    let roles: Vec<serde_json::Value> = roles.iter().map(Role::to_value).collect();
    ok_json(StatusCode::OK, &serde_json::json!({ "roles": roles }))
}

#[derive(Deserialize)]
struct UserIn {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    grant: Option<Vec<String>>,
    #[serde(default)]
    revoke: Option<Vec<String>>,
}

fn len(v: &Option<Vec<String>>) -> usize {
    v.as_ref().map_or(0, Vec::len)
}

fn user_out(name: &str, roles: &Option<Vec<String>>) -> serde_json::Value {
    serde_json::json!({ "user": name, "roles": roles })
}

pub(crate) fn hash(ctx: &Ctx, password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    salt[..8].copy_from_slice(&ctx.shared.rng.next_u64().to_le_bytes());
    salt[8..].copy_from_slice(&ctx.shared.rng.next_u64().to_le_bytes());
    bcrypt::hash_with_salt(password, BCRYPT_COST, salt)
        .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        .map_err(|e| AuthError::plain(500, format!("password hash: {e}")))
}

async fn user(
    ctx: &Ctx,
    name: &str,
    method: &Method,
    req: Request<Incoming>,
) -> Result<Response<Body>, AuthError> {
    match *method {
        Method::GET => {
            let state = auth_state(ctx);
            let u = state
                .user(name)
                .ok_or_else(|| AuthError::auth(404, format!("User {name} does not exist.")))?;
            let mut roles = Vec::new();
            for r in u.roles.iter().flatten() {
                let role = state
                    .role(r)
                    .ok_or_else(|| AuthError::auth(404, format!("Role {r} does not exist.")))?;
                roles.push(role.to_value());
            }
            let mut v = serde_json::json!({ "user": u.name });
            if !roles.is_empty() {
                v["roles"] = serde_json::Value::Array(roles);
            }
            Ok(ok_json(StatusCode::OK, &v))
        }
        Method::DELETE => {
            propose(ctx, AuthOp::DeleteUser(name.to_string())).await?;
            Ok(json(StatusCode::OK, ""))
        }
        _ => {
            let u: UserIn = decode_body(req, name, "User", |u: &UserIn| &u.user).await?;
            let exists = auth_state(ctx).users.contains_key(name);
            let (out, status) = if len(&u.grant) == 0 && len(&u.revoke) == 0 {
                // With roles: create. Without: create or update (etcd's CreateOrUpdateUser).
                if len(&u.roles) != 0 || !exists {
                    create_user(ctx, u).await?
                } else {
                    update_user(ctx, u).await?
                }
            } else {
                if len(&u.roles) != 0 {
                    return Err(AuthError::plain(
                        400,
                        "User JSON contains both roles and grant/revoke",
                    ));
                }
                update_user(ctx, u).await?
            };
            Ok(ok_json(status, &out))
        }
    }
}

/// etcd's `CreateUser`: the root user gets the root role; a password is required.
async fn create_user(ctx: &Ctx, u: UserIn) -> Result<(serde_json::Value, StatusCode), AuthError> {
    // Created with roles: etcd answers 200; created by "create or update": 201.
    let status = if len(&u.roles) != 0 {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut roles = u.roles;
    if u.user == ROOT {
        let r = roles.get_or_insert_with(Vec::new);
        if !r.iter().any(|x| x == ROOT) {
            r.push(ROOT.into());
        }
    }
    if u.password.is_empty() {
        return Err(AuthError::auth(
            400,
            format!("Cannot create user {} with an empty password", u.user),
        ));
    }
    let user = User {
        name: u.user.clone(),
        hash: hash(ctx, &u.password)?,
        roles: roles.clone(),
    };
    propose(ctx, AuthOp::PutUser { user, create: true }).await?;
    Ok((user_out(&u.user, &roles), status))
}

/// etcd's `UpdateUser`: a new password and/or role grants and revokes.
async fn update_user(ctx: &Ctx, u: UserIn) -> Result<(serde_json::Value, StatusCode), AuthError> {
    let old = auth_state(ctx)
        .users
        .get(&u.user)
        .cloned()
        .ok_or_else(|| AuthError::auth(404, format!("User {} does not exist.", u.user)))?;
    let roles = merge_roles(
        &u.user,
        old.roles.as_ref(),
        u.grant.as_deref().unwrap_or(&[]),
        u.revoke.as_deref().unwrap_or(&[]),
    )?;
    let hash = if u.password.is_empty() {
        old.hash.clone()
    } else {
        hash(ctx, &u.password)?
    };
    let new = User {
        name: u.user.clone(),
        hash,
        roles: Some(roles),
    };
    if new == old {
        return Err(AuthError::auth(
            400,
            "User not updated. Use grant/revoke/password to update the user.",
        ));
    }
    let out = user_out(&new.name, &new.roles);
    propose(
        ctx,
        AuthOp::PutUser {
            user: new,
            create: false,
        },
    )
    .await?;
    Ok((out, StatusCode::OK))
}

#[derive(Deserialize, Default)]
struct KvIn {
    #[serde(default)]
    read: Option<Vec<String>>,
    #[serde(default)]
    write: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct PermsIn {
    #[serde(default)]
    kv: KvIn,
}

impl PermsIn {
    fn is_empty(p: &Option<PermsIn>) -> bool {
        p.as_ref()
            .is_none_or(|p| len(&p.kv.read) == 0 && len(&p.kv.write) == 0)
    }
    fn perms(&self) -> Perms {
        Perms {
            read: self.kv.read.clone(),
            write: self.kv.write.clone(),
        }
    }
}

#[derive(Deserialize)]
struct RoleIn {
    #[serde(default)]
    role: String,
    #[serde(default)]
    permissions: Option<PermsIn>,
    #[serde(default)]
    grant: Option<PermsIn>,
    #[serde(default)]
    revoke: Option<PermsIn>,
}

fn root_is_fixed() -> AuthError {
    AuthError::auth(403, format!("Cannot modify role {ROOT}: is root role."))
}

async fn role(
    ctx: &Ctx,
    name: &str,
    method: &Method,
    req: Request<Incoming>,
) -> Result<Response<Body>, AuthError> {
    match *method {
        Method::GET => {
            let r = auth_state(ctx)
                .role(name)
                .ok_or_else(|| AuthError::auth(404, format!("Role {name} does not exist.")))?;
            Ok(ok_json(StatusCode::OK, &r.to_value()))
        }
        Method::DELETE => {
            if name == ROOT {
                return Err(root_is_fixed());
            }
            propose(ctx, AuthOp::DeleteRole(name.to_string())).await?;
            Ok(json(StatusCode::OK, ""))
        }
        _ => {
            let r: RoleIn = decode_body(req, name, "Role", |r: &RoleIn| &r.role).await?;
            if name == ROOT {
                return Err(root_is_fixed());
            }
            if PermsIn::is_empty(&r.grant) && PermsIn::is_empty(&r.revoke) {
                // create
                let role = Role {
                    name: r.role.clone(),
                    perms: r
                        .permissions
                        .as_ref()
                        .map(PermsIn::perms)
                        .unwrap_or_default(),
                };
                let out = role.to_value();
                propose(ctx, AuthOp::PutRole { role, create: true }).await?;
                return Ok(ok_json(StatusCode::CREATED, &out));
            }
            if !PermsIn::is_empty(&r.permissions) {
                return Err(AuthError::plain(
                    400,
                    "Role JSON contains both permissions and grant/revoke",
                ));
            }
            let old = auth_state(ctx)
                .roles
                .get(name)
                .cloned()
                .ok_or_else(|| AuthError::auth(404, format!("Role {name} does not exist.")))?;
            let grant = r.grant.as_ref().map(PermsIn::perms);
            let revoke = r.revoke.as_ref().map(PermsIn::perms);
            let perms = merge_perms(&old.perms, grant.as_ref(), revoke.as_ref())?;
            let new = Role {
                name: name.to_string(),
                perms,
            };
            if new == old {
                return Err(AuthError::auth(
                    400,
                    "Role not updated. Use grant/revoke to update the role.",
                ));
            }
            let out = new.to_value();
            propose(
                ctx,
                AuthOp::PutRole {
                    role: new,
                    create: false,
                },
            )
            .await?;
            Ok(ok_json(StatusCode::OK, &out))
        }
    }
}
