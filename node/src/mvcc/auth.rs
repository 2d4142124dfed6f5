//! etcd 3.4's v3 auth store (`auth/store.go`, `auth/range_perm_cache.go`,
//! `etcdserver/apply_auth.go`): users, roles, key-range permissions, whether auth is on and
//! the auth revision, in the keyspace's redb file (tables `auth_users` and `auth_roles`, name →
//! marshalled `authpb.User`/`authpb.Role`; `auth_enabled` and `auth_revision` in `meta`), so
//! an auth change is durable with the consistent index of its entry, travels in the same dump
//! and survives restarts. The v2 auth API keeps its own users and roles (`crate::auth`): etcd
//! 3.4.23 keeps the two apart (checked against its binary: a v2 user is not a v3 user, and
//! enabling one does not enable the other).
//!
//! Simple tokens are member-local and in memory, as etcd's: an Authenticate request goes
//! through Raft with a random prefix chosen by the member that took it, and every member that
//! applies it assigns `prefix.index` to the user, so the token is valid on every member that
//! has applied that index (etcd 3.4 likewise). A token lives [`TOKEN_TTL`] from its
//! assignment or its last use on this member; disabling auth, deleting the user or changing
//! its password drops it.
//!
//! Permission checks mirror etcd's: reads are checked by the member that serves them, writes
//! when their entry is applied, with the user and auth revision the entry carries (a request
//! whose auth revision is older than the store's fails with etcd's "revision of auth store is
//! old"); internal entries (lease expiry) are not checked, as etcd's run as root.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use detcd_proto::authpb;
use prost::Message;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{io_err, storage_err, Mvcc, V3Error, META};
use crate::rt::Instant;

/// user name → marshalled `authpb.User`.
pub(super) const AUTH_USERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("auth_users");
/// role name → marshalled `authpb.Role`.
pub(super) const AUTH_ROLES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("auth_roles");
/// `meta` key: 1 when auth is on.
pub(super) const META_AUTH_ENABLED: &str = "auth_enabled";
/// `meta` key: the auth revision (1 in a fresh store, as etcd's `NewAuthStore` commits it).
pub(super) const META_AUTH_REV: &str = "auth_revision";

/// The root user and the root role.
pub const ROOT: &str = "root";
/// etcd's `--auth-token-ttl` default: a simple token unused this long is forgotten.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);

/// An auth failure, with etcd's gRPC code and message (`rpctypes/error.go`, `v3rpc/util.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// ErrGRPCRootUserNotExist.
    RootUserNotExist,
    /// ErrGRPCRootRoleNotExist.
    RootRoleNotExist,
    /// ErrGRPCUserAlreadyExist.
    UserAlreadyExist,
    /// ErrGRPCUserEmpty (also: a request without credentials while auth is on).
    UserEmpty,
    /// ErrGRPCUserNotFound.
    UserNotFound,
    /// ErrGRPCRoleAlreadyExist.
    RoleAlreadyExist,
    /// ErrGRPCRoleNotFound.
    RoleNotFound,
    /// ErrGRPCRoleEmpty.
    RoleEmpty,
    /// ErrGRPCAuthFailed.
    AuthFailed,
    /// `auth.ErrNoPasswordUser`: not in etcd's gRPC error map, so it goes out as Unknown with
    /// the store's own text.
    NoPasswordUser,
    /// ErrGRPCPermissionDenied.
    PermissionDenied,
    /// ErrGRPCRoleNotGranted.
    RoleNotGranted,
    /// ErrGRPCPermissionNotGranted.
    PermissionNotGranted,
    /// ErrGRPCAuthNotEnabled.
    AuthNotEnabled,
    /// ErrGRPCInvalidAuthToken.
    InvalidAuthToken,
    /// ErrGRPCInvalidAuthMgmt.
    InvalidAuthMgmt,
    /// ErrGRPCAuthOldRevision.
    AuthOldRevision,
}

impl AuthError {
    /// The gRPC status code etcd answers with.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            AuthError::RootUserNotExist
            | AuthError::RootRoleNotExist
            | AuthError::UserAlreadyExist
            | AuthError::UserNotFound
            | AuthError::RoleAlreadyExist
            | AuthError::RoleNotFound
            | AuthError::RoleNotGranted
            | AuthError::PermissionNotGranted
            | AuthError::AuthNotEnabled => Code::FailedPrecondition,
            AuthError::UserEmpty
            | AuthError::RoleEmpty
            | AuthError::AuthFailed
            | AuthError::InvalidAuthMgmt
            | AuthError::AuthOldRevision => Code::InvalidArgument,
            AuthError::NoPasswordUser => Code::Unknown,
            AuthError::PermissionDenied => Code::PermissionDenied,
            AuthError::InvalidAuthToken => Code::Unauthenticated,
        }
    }

    /// etcd's exact message.
    pub fn message(&self) -> &'static str {
        match self {
            AuthError::RootUserNotExist => "etcdserver: root user does not exist",
            AuthError::RootRoleNotExist => "etcdserver: root user does not have root role",
            AuthError::UserAlreadyExist => "etcdserver: user name already exists",
            AuthError::UserEmpty => "etcdserver: user name is empty",
            AuthError::UserNotFound => "etcdserver: user name not found",
            AuthError::RoleAlreadyExist => "etcdserver: role name already exists",
            AuthError::RoleNotFound => "etcdserver: role name not found",
            AuthError::RoleEmpty => "etcdserver: role name is empty",
            AuthError::AuthFailed => {
                "etcdserver: authentication failed, invalid user ID or password"
            }
            AuthError::NoPasswordUser => {
                "auth: authentication failed, password was given for no password user"
            }
            AuthError::PermissionDenied => "etcdserver: permission denied",
            AuthError::RoleNotGranted => "etcdserver: role is not granted to the user",
            AuthError::PermissionNotGranted => "etcdserver: permission is not granted to the role",
            AuthError::AuthNotEnabled => "etcdserver: authentication is not enabled",
            AuthError::InvalidAuthToken => "etcdserver: invalid auth token",
            AuthError::InvalidAuthMgmt => "etcdserver: invalid auth management",
            AuthError::AuthOldRevision => "etcdserver: revision of auth store is old",
        }
    }
}

/// Who made a request, as etcd's `AuthInfo`: the user and the auth revision when its
/// credentials were checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthInfo {
    /// User name.
    pub user: String,
    /// The auth revision its credentials were checked at.
    pub revision: u64,
}

/// On whose behalf an entry applies.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// The member itself (lease expiry): never checked (etcd's `WithRoot`).
    Internal,
    /// A client request, with its credentials if it had any.
    Client(Option<&'a AuthInfo>),
}

/// A v3 auth change or query, as its Raft entry carries it (etcd's `InternalRaftRequest`
/// auth fields). Passwords travel hashed: the member that took the request hashed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOp {
    /// AuthEnable.
    Enable,
    /// AuthDisable.
    Disable,
    /// Authenticate (the password was checked by the member that took it): assign the token
    /// `prefix.index`.
    Authenticate {
        /// User name.
        name: String,
        /// The token's random prefix.
        prefix: String,
    },
    /// UserAdd.
    UserAdd {
        /// User name.
        name: String,
        /// bcrypt hash of the password (empty with `no_password`).
        #[serde(with = "crate::sm::b64")]
        hash: Vec<u8>,
        /// `options.no_password`.
        no_password: bool,
    },
    /// UserDelete.
    UserDelete {
        /// User name.
        name: String,
    },
    /// UserChangePassword.
    UserChangePassword {
        /// User name.
        name: String,
        /// bcrypt hash of the new password.
        #[serde(with = "crate::sm::b64")]
        hash: Vec<u8>,
    },
    /// UserGrantRole.
    UserGrantRole {
        /// User name.
        user: String,
        /// Role name.
        role: String,
    },
    /// UserRevokeRole.
    UserRevokeRole {
        /// User name.
        name: String,
        /// Role name.
        role: String,
    },
    /// UserGet.
    UserGet {
        /// User name.
        name: String,
    },
    /// UserList.
    UserList,
    /// RoleAdd.
    RoleAdd {
        /// Role name.
        name: String,
    },
    /// RoleGet.
    RoleGet {
        /// Role name.
        role: String,
    },
    /// RoleList.
    RoleList,
    /// RoleDelete.
    RoleDelete {
        /// Role name.
        role: String,
    },
    /// RoleGrantPermission.
    RoleGrantPermission {
        /// Role name.
        name: String,
        /// `authpb.Permission.Type` (0 READ, 1 WRITE, 2 READWRITE).
        perm_type: i32,
        /// Key.
        #[serde(with = "crate::sm::b64")]
        key: Vec<u8>,
        /// Range end.
        #[serde(with = "crate::sm::b64")]
        range_end: Vec<u8>,
    },
    /// RoleRevokePermission.
    RoleRevokePermission {
        /// Role name.
        role: String,
        /// Key.
        #[serde(with = "crate::sm::b64")]
        key: Vec<u8>,
        /// Range end.
        #[serde(with = "crate::sm::b64")]
        range_end: Vec<u8>,
    },
}

impl AuthOp {
    /// etcd's `needAdminPermission`: the caller must have the root role (once auth is on).
    fn needs_admin(&self) -> bool {
        !matches!(
            self,
            AuthOp::Authenticate { .. } | AuthOp::UserGet { .. } | AuthOp::RoleGet { .. }
        )
    }
}

/// What an applied [`AuthOp`] answers.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthResp {
    /// A change that has no more to say.
    Done,
    /// Authenticate: the token.
    Token(String),
    /// UserGet: the user's roles; RoleList: every role; UserList: every user (names, sorted).
    Names(Vec<String>),
    /// RoleGet: the role's permissions, sorted by key.
    Perms(Vec<authpb::Permission>),
}

/// A simple token: its user and when it expires here (`None`: never, for a keyspace given no
/// clock).
#[derive(Debug, Clone)]
struct Token {
    user: String,
    deadline: Option<Instant>,
}

/// The auth state of a keyspace: a mirror of its tables, and this member's tokens.
#[derive(Debug, Default)]
pub(super) struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<Vec<u8>, authpb::User>,
    roles: BTreeMap<Vec<u8>, authpb::Role>,
    tokens: BTreeMap<String, Token>,
    /// Tokens assigned since the last sweep of expired ones.
    assigned: usize,
}

/// Comparison of etcd's `BytesAffineComparable`: an empty bound is +infinity.
fn cmp_affine(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// A half-open interval of keys, `end` empty for +infinity (etcd's `adt.Interval`).
#[derive(Debug, Clone)]
struct Ivl<'a> {
    begin: &'a [u8],
    end: std::borrow::Cow<'a, [u8]>,
}

impl<'a> Ivl<'a> {
    fn point(key: &'a [u8]) -> Ivl<'a> {
        let mut end = key.to_vec();
        end.push(0);
        Ivl {
            begin: key,
            end: end.into(),
        }
    }

    /// `Interval.Compare(other) == 0`.
    fn overlaps(&self, x: &Ivl<'_>) -> bool {
        let begin_begin = cmp_affine(self.begin, x.begin);
        let begin_end = cmp_affine(self.begin, &x.end);
        let end_begin = cmp_affine(&self.end, x.begin);
        if begin_begin == Ordering::Less && end_begin != Ordering::Greater {
            return false;
        }
        begin_end == Ordering::Less
    }
}

/// The interval a permission covers (`getMergedPerms`).
fn perm_ivl(p: &authpb::Permission) -> Ivl<'_> {
    if p.range_end.is_empty() {
        return Ivl::point(&p.key);
    }
    let end: &[u8] = if p.range_end == [0] {
        &[]
    } else {
        &p.range_end
    };
    Ivl {
        begin: &p.key,
        end: end.into(),
    }
}

/// etcd's `intervalTree.Contains`: the intervals meeting `ivl`, in order of their begin,
/// are contiguous and cover it.
fn covers(tree: &[Ivl<'_>], ivl: &Ivl<'_>) -> bool {
    let mut hit: Vec<&Ivl<'_>> = tree.iter().filter(|x| ivl.overlaps(x)).collect();
    hit.sort_by(|a, b| cmp_affine(a.begin, b.begin));
    let mut it = hit.into_iter();
    let Some(first) = it.next() else {
        return false;
    };
    let mut max_end: &[u8] = &first.end;
    for n in it {
        if cmp_affine(max_end, n.begin) == Ordering::Less {
            return false;
        }
        if cmp_affine(&n.end, max_end) == Ordering::Greater {
            max_end = &n.end;
        }
    }
    cmp_affine(max_end, &ivl.end) != Ordering::Less
        && cmp_affine(first.begin, ivl.begin) != Ordering::Greater
}

fn has_root_role(u: &authpb::User) -> bool {
    u.roles.iter().any(|r| r == ROOT)
}

impl AuthStore {
    /// The merged read or write permissions of `user` (`getMergedPerms`).
    fn perms(&self, user: &authpb::User, write: bool) -> Vec<Ivl<'_>> {
        let mut out = Vec::new();
        for role in &user.roles {
            let Some(r) = self.roles.get(role.as_bytes()) else {
                continue;
            };
            for p in &r.key_permission {
                let t = p.perm_type;
                let grants = t == authpb::permission::Type::Readwrite as i32
                    || (write && t == authpb::permission::Type::Write as i32)
                    || (!write && t == authpb::permission::Type::Read as i32);
                if grants {
                    out.push(perm_ivl(p));
                }
            }
        }
        out
    }

    /// etcd's `isOpPermitted`: may `caller` read (or write) `key`..`range_end`?
    pub(super) fn check(
        &self,
        caller: Caller<'_>,
        key: &[u8],
        range_end: &[u8],
        write: bool,
    ) -> Result<(), AuthError> {
        let ai = match caller {
            Caller::Internal => return Ok(()),
            Caller::Client(ai) => ai,
        };
        if !self.enabled {
            return Ok(());
        }
        let (name, revision) = ai.map_or(("", 0), |a| (a.user.as_str(), a.revision));
        if revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let Some(user) = self.users.get(name.as_bytes()) else {
            return Err(AuthError::PermissionDenied);
        };
        if has_root_role(user) {
            return Ok(());
        }
        let perms = self.perms(user, write);
        let ok = if range_end.is_empty() {
            let p = Ivl::point(key);
            perms.iter().any(|x| p.overlaps(x))
        } else {
            let end: &[u8] = if range_end == [0] { &[] } else { range_end };
            covers(
                &perms,
                &Ivl {
                    begin: key,
                    end: end.into(),
                },
            )
        };
        if ok {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// etcd's `IsAdminPermitted`.
    fn check_admin(&self, caller: Caller<'_>) -> Result<(), AuthError> {
        let ai = match caller {
            Caller::Internal => return Ok(()),
            Caller::Client(ai) => ai,
        };
        if !self.enabled {
            return Ok(());
        }
        let name = ai.map_or("", |a| a.user.as_str());
        if name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        match self.users.get(name.as_bytes()) {
            None => Err(AuthError::UserNotFound),
            Some(u) if !has_root_role(u) => Err(AuthError::PermissionDenied),
            Some(_) => Ok(()),
        }
    }

    fn drop_tokens_of(&mut self, user: &str) {
        self.tokens.retain(|_, t| t.user != user);
    }
}

fn decode_user(raw: &[u8]) -> io::Result<authpb::User> {
    authpb::User::decode(raw).map_err(|e| io_err(format!("auth: bad user record: {e}")))
}

fn decode_role(raw: &[u8]) -> io::Result<authpb::Role> {
    authpb::Role::decode(raw).map_err(|e| io_err(format!("auth: bad role record: {e}")))
}

/// Read the auth state from committed tables (or an open transaction's).
pub(super) fn read_auth<U, R, M>(users: &U, roles: &R, meta: &M) -> io::Result<AuthStore>
where
    U: ReadableTable<&'static [u8], &'static [u8]>,
    R: ReadableTable<&'static [u8], &'static [u8]>,
    M: ReadableTable<&'static str, u64>,
{
    let mut a = AuthStore {
        enabled: meta
            .get(META_AUTH_ENABLED)
            .map_err(io_err)?
            .map(|v| v.value())
            == Some(1),
        revision: meta
            .get(META_AUTH_REV)
            .map_err(io_err)?
            .map_or(1, |v| v.value()),
        ..AuthStore::default()
    };
    for e in users.iter().map_err(io_err)? {
        let (k, v) = e.map_err(io_err)?;
        a.users.insert(k.value().to_vec(), decode_user(v.value())?);
    }
    for e in roles.iter().map_err(io_err)? {
        let (k, v) = e.map_err(io_err)?;
        a.roles.insert(k.value().to_vec(), decode_role(v.value())?);
    }
    Ok(a)
}

/// The auth part of a dump: enabled (u64), revision (u64), the users and the roles, each
/// as a count (u64) then (name length u32, name, record length u32, record).
pub(super) fn dump_auth(rtx: &redb::ReadTransaction, out: &mut Vec<u8>) -> io::Result<()> {
    let meta = rtx.open_table(META).map_err(io_err)?;
    let enabled = meta
        .get(META_AUTH_ENABLED)
        .map_err(io_err)?
        .map_or(0, |v| v.value());
    let revision = meta
        .get(META_AUTH_REV)
        .map_err(io_err)?
        .map_or(1, |v| v.value());
    out.extend_from_slice(&enabled.to_le_bytes());
    out.extend_from_slice(&revision.to_le_bytes());
    for def in [AUTH_USERS, AUTH_ROLES] {
        let t = rtx.open_table(def).map_err(io_err)?;
        out.extend_from_slice(
            &redb::ReadableTableMetadata::len(&t)
                .map_err(io_err)?
                .to_le_bytes(),
        );
        for e in t.iter().map_err(io_err)? {
            let (k, v) = e.map_err(io_err)?;
            let (k, v) = (k.value(), v.value());
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
    }
    Ok(())
}

/// The auth part of an empty dump: off, revision 1, nobody.
pub(super) fn empty_auth_dump(out: &mut Vec<u8>) {
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
}

/// Write a dump's auth part (see [`dump_auth`]) into a restore's transaction; `None`: a dump
/// from before auth (a fresh auth state).
pub(super) fn restore_auth(
    wtx: &redb::WriteTransaction,
    r: Option<&mut super::DumpReader<'_>>,
) -> io::Result<()> {
    wtx.delete_table(AUTH_USERS).map_err(io_err)?;
    wtx.delete_table(AUTH_ROLES).map_err(io_err)?;
    let mut users = wtx.open_table(AUTH_USERS).map_err(io_err)?;
    let mut roles = wtx.open_table(AUTH_ROLES).map_err(io_err)?;
    let mut meta = wtx.open_table(META).map_err(io_err)?;
    let Some(r) = r else {
        meta.insert(META_AUTH_ENABLED, 0).map_err(io_err)?;
        meta.insert(META_AUTH_REV, 1).map_err(io_err)?;
        return Ok(());
    };
    let enabled = r.u64()?;
    let revision = r.u64()?;
    meta.insert(META_AUTH_ENABLED, u64::from(enabled == 1))
        .map_err(io_err)?;
    meta.insert(META_AUTH_REV, revision).map_err(io_err)?;
    for (i, t) in [&mut users, &mut roles].into_iter().enumerate() {
        let n = r.u64()?;
        for _ in 0..n {
            let klen = r.u32()? as usize;
            let k = r.take(klen)?;
            let vlen = r.u32()? as usize;
            let v = r.take(vlen)?;
            if i == 0 {
                decode_user(v)?;
            } else {
                decode_role(v)?;
            }
            t.insert(k, v).map_err(io_err)?;
        }
    }
    Ok(())
}

impl Mvcc {
    /// Rebuild the auth state from the committed tables, keeping this member's tokens.
    pub(super) fn load_auth(&mut self) -> io::Result<()> {
        let rtx = self.db().begin_read().map_err(io_err)?;
        let users = rtx.open_table(AUTH_USERS).map_err(io_err)?;
        let roles = rtx.open_table(AUTH_ROLES).map_err(io_err)?;
        let meta = rtx.open_table(META).map_err(io_err)?;
        let mut a = read_auth(&users, &roles, &meta)?;
        a.tokens = std::mem::take(&mut self.auth.tokens);
        if !a.enabled {
            a.tokens.clear();
        }
        self.auth = a;
        Ok(())
    }

    /// The member's clock for token lifetimes (the apply loop sets it before each batch).
    pub fn set_now(&mut self, now: Instant) {
        self.now = Some(now);
    }

    /// Whether v3 auth is on.
    pub fn auth_enabled(&self) -> bool {
        self.auth.enabled
    }

    /// The auth revision.
    pub fn auth_revision(&self) -> u64 {
        self.auth.revision
    }

    /// Is `caller` an admin, or auth off (etcd's `IsAdminPermitted`)?
    pub fn auth_check_admin(&self, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        self.auth.check_admin(Caller::Client(caller))
    }

    /// May `caller` read `key`..`range_end` (etcd's `IsRangePermitted`)?
    pub fn auth_check_range(
        &self,
        caller: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        self.auth
            .check(Caller::Client(caller), key, range_end, false)
    }

    /// etcd's `checkTxnAuth` for a txn (nested txns too: etcd 3.4 does not look into them,
    /// which would let a nested txn write anywhere).
    pub fn auth_check_txn(
        &self,
        caller: Caller<'_>,
        t: &detcd_proto::etcdserverpb::TxnRequest,
    ) -> Result<(), AuthError> {
        use detcd_proto::etcdserverpb::request_op::Request as R;
        let a = &self.auth;
        for c in &t.compare {
            a.check(caller, &c.key, &c.range_end, false)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(R::RequestRange(r)) => a.check(caller, &r.key, &r.range_end, false)?,
                Some(R::RequestPut(p)) => a.check(caller, &p.key, &[], true)?,
                Some(R::RequestDeleteRange(d)) => {
                    if d.prev_kv {
                        a.check(caller, &d.key, &d.range_end, false)?;
                    }
                    a.check(caller, &d.key, &d.range_end, true)?;
                }
                Some(R::RequestTxn(t)) => self.auth_check_txn(caller, t)?,
                None => {}
            }
        }
        Ok(())
    }

    /// etcd's `checkLeasePuts`: may `caller` write every key attached to lease `id`?
    fn auth_check_lease(&self, caller: Caller<'_>, id: i64) -> Result<(), AuthError> {
        if let Some(l) = self.leases.get(&id) {
            for k in &l.keys {
                self.auth.check(caller, k, &[], true)?;
            }
        }
        Ok(())
    }

    /// The permission checks etcd's auth applier makes before a write applies.
    pub(super) fn auth_check_write(
        &self,
        caller: Caller<'_>,
        req: &super::WriteReq,
    ) -> Result<(), AuthError> {
        use super::WriteReq;
        let a = &self.auth;
        if !a.enabled {
            return Ok(());
        }
        match req {
            WriteReq::Put(p) => {
                a.check(caller, &p.key, &[], true)?;
                self.auth_check_lease(caller, p.lease)?;
                if p.prev_kv {
                    a.check(caller, &p.key, &[], false)?;
                }
                Ok(())
            }
            WriteReq::DeleteRange(d) => {
                a.check(caller, &d.key, &d.range_end, true)?;
                if d.prev_kv {
                    a.check(caller, &d.key, &d.range_end, false)?;
                }
                Ok(())
            }
            WriteReq::Txn(t) => self.auth_check_txn(caller, t),
            WriteReq::Compaction(_) => Ok(()),
        }
    }

    /// A write committed at `index` on behalf of `caller`: the permission checks, then
    /// [`Mvcc::apply_with_leases`]. `None` when `index` was applied before.
    #[allow(clippy::type_complexity)]
    pub fn apply_as(
        &mut self,
        index: u64,
        req: &super::WriteReq,
        caller: Caller<'_>,
    ) -> Option<(
        Result<super::WriteResp, V3Error>,
        Vec<detcd_proto::mvccpb::Event>,
    )> {
        if index <= self.consistent_index {
            return None;
        }
        if let Err(e) = self.auth_check_write(caller, req) {
            return Some((self.refuse(index, V3Error::Auth(e)), Vec::new()));
        }
        self.apply_with_leases(index, req)
    }

    /// A lease revoke committed at `index` on behalf of `caller`: etcd's `checkLeasePuts`,
    /// then [`Mvcc::lease_revoke`].
    #[allow(clippy::type_complexity)]
    pub fn lease_revoke_as(
        &mut self,
        index: u64,
        id: i64,
        caller: Caller<'_>,
    ) -> Option<(Result<i64, V3Error>, Vec<detcd_proto::mvccpb::Event>)> {
        if index <= self.consistent_index {
            return None;
        }
        if self.corrupt() {
            return Some((self.refuse(index, V3Error::Corrupt), Vec::new()));
        }
        if self.auth.enabled {
            if let Err(e) = self.auth_check_lease(caller, id) {
                return Some((self.refuse(index, V3Error::Auth(e)), Vec::new()));
            }
        }
        self.lease_revoke(index, id)
    }

    /// An entry at `index` refused with `e`: it is applied (the index is taken), with no
    /// effect.
    fn refuse<T>(&mut self, index: u64, e: V3Error) -> Result<T, V3Error> {
        if let Some(f) = &self.failed {
            return Err(V3Error::Storage(f.clone()));
        }
        self.consistent_index = index;
        self.meta_dirty = true;
        Err(e)
    }

    /// The password hash of `name` for Authenticate, with the auth revision it was read at
    /// (etcd's `CheckPassword`).
    pub fn auth_password(&self, name: &str) -> Result<(Vec<u8>, u64), AuthError> {
        if !self.auth.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let u = self
            .auth
            .users
            .get(name.as_bytes())
            .ok_or(AuthError::AuthFailed)?;
        if u.options.as_ref().is_some_and(|o| o.no_password) {
            return Err(AuthError::NoPasswordUser);
        }
        Ok((u.password.clone(), self.auth.revision))
    }

    /// The user of a simple token as of `now` (the member's clock), renewing its lifetime;
    /// `None` if this member does not know it (never assigned here, expired, or dropped).
    pub fn auth_token_user(&mut self, token: &str, now: Instant) -> Option<String> {
        let t = self.auth.tokens.get_mut(token)?;
        if let Some(d) = t.deadline {
            if now >= d {
                self.auth.tokens.remove(token);
                return None;
            }
            t.deadline = Some(now + TOKEN_TTL);
        }
        Some(t.user.clone())
    }

    fn put_user(&mut self, u: authpb::User) -> Result<(), V3Error> {
        let raw = u.encode_to_vec();
        let w = self.wtx()?;
        w.open_table(AUTH_USERS)
            .map_err(storage_err)?
            .insert(u.name.as_slice(), raw.as_slice())
            .map_err(storage_err)?;
        self.auth.users.insert(u.name.clone(), u);
        Ok(())
    }

    fn del_user(&mut self, name: &[u8]) -> Result<(), V3Error> {
        let w = self.wtx()?;
        w.open_table(AUTH_USERS)
            .map_err(storage_err)?
            .remove(name)
            .map_err(storage_err)?;
        self.auth.users.remove(name);
        Ok(())
    }

    fn put_role(&mut self, r: authpb::Role) -> Result<(), V3Error> {
        let raw = r.encode_to_vec();
        let w = self.wtx()?;
        w.open_table(AUTH_ROLES)
            .map_err(storage_err)?
            .insert(r.name.as_slice(), raw.as_slice())
            .map_err(storage_err)?;
        self.auth.roles.insert(r.name.clone(), r);
        Ok(())
    }

    fn del_role(&mut self, name: &[u8]) -> Result<(), V3Error> {
        let w = self.wtx()?;
        w.open_table(AUTH_ROLES)
            .map_err(storage_err)?
            .remove(name)
            .map_err(storage_err)?;
        self.auth.roles.remove(name);
        Ok(())
    }

    fn put_auth_meta(&mut self, key: &str, value: u64) -> Result<(), V3Error> {
        let w = self.wtx()?;
        w.open_table(META)
            .map_err(storage_err)?
            .insert(key, value)
            .map_err(storage_err)?;
        Ok(())
    }

    /// etcd's `commitRevision`.
    fn commit_auth_revision(&mut self) -> Result<(), V3Error> {
        self.put_auth_meta(META_AUTH_REV, self.auth.revision + 1)?;
        self.auth.revision += 1;
        Ok(())
    }

    /// Apply an auth request committed at Raft `index` on behalf of `caller`. `None` when
    /// `index` was applied before.
    pub fn auth_apply(
        &mut self,
        index: u64,
        caller: Caller<'_>,
        op: &AuthOp,
    ) -> Option<Result<AuthResp, V3Error>> {
        if index <= self.consistent_index {
            return None;
        }
        if let Some(e) = &self.failed {
            return Some(Err(V3Error::Storage(e.clone())));
        }
        self.consistent_index = index;
        self.meta_dirty = true;
        let out = self.auth_apply_inner(index, caller, op);
        if let Err(V3Error::Storage(e)) = &out {
            self.failed = Some(e.clone());
        }
        Some(out)
    }

    fn auth_apply_inner(
        &mut self,
        index: u64,
        caller: Caller<'_>,
        op: &AuthOp,
    ) -> Result<AuthResp, V3Error> {
        let auth_err = V3Error::Auth;
        if op.needs_admin() {
            self.auth.check_admin(caller).map_err(auth_err)?;
        }
        let user_of = |s: &Self, name: &str| s.auth.users.get(name.as_bytes()).cloned();
        match op {
            AuthOp::Enable => {
                if self.auth.enabled {
                    return Ok(AuthResp::Done);
                }
                let root = user_of(self, ROOT).ok_or(V3Error::Auth(AuthError::RootUserNotExist))?;
                if !has_root_role(&root) {
                    return Err(V3Error::Auth(AuthError::RootRoleNotExist));
                }
                self.put_auth_meta(META_AUTH_ENABLED, 1)?;
                self.auth.enabled = true;
                Ok(AuthResp::Done)
            }
            AuthOp::Disable => {
                if !self.auth.enabled {
                    return Ok(AuthResp::Done);
                }
                self.put_auth_meta(META_AUTH_ENABLED, 0)?;
                self.commit_auth_revision()?;
                self.auth.enabled = false;
                self.auth.tokens.clear();
                Ok(AuthResp::Done)
            }
            AuthOp::Authenticate { name, prefix } => {
                if !self.auth.enabled {
                    return Err(V3Error::Auth(AuthError::AuthNotEnabled));
                }
                let u = user_of(self, name).ok_or(V3Error::Auth(AuthError::AuthFailed))?;
                if u.options.as_ref().is_some_and(|o| o.no_password) {
                    return Err(V3Error::Auth(AuthError::AuthFailed));
                }
                let token = format!("{prefix}.{index}");
                let now = self.now;
                let a = &mut self.auth;
                a.assigned += 1;
                if a.assigned >= 1024 {
                    a.assigned = 0;
                    if let Some(now) = now {
                        a.tokens.retain(|_, t| t.deadline.is_none_or(|d| d > now));
                    }
                }
                a.tokens.insert(
                    token.clone(),
                    Token {
                        user: name.clone(),
                        deadline: now.map(|n| n + TOKEN_TTL),
                    },
                );
                Ok(AuthResp::Token(token))
            }
            AuthOp::UserAdd {
                name,
                hash,
                no_password,
            } => {
                if name.is_empty() {
                    return Err(V3Error::Auth(AuthError::UserEmpty));
                }
                if user_of(self, name).is_some() {
                    return Err(V3Error::Auth(AuthError::UserAlreadyExist));
                }
                self.put_user(authpb::User {
                    name: name.as_bytes().to_vec(),
                    password: if *no_password {
                        Vec::new()
                    } else {
                        hash.clone()
                    },
                    roles: Vec::new(),
                    options: Some(authpb::UserAddOptions {
                        no_password: *no_password,
                    }),
                })?;
                self.commit_auth_revision()?;
                Ok(AuthResp::Done)
            }
            AuthOp::UserDelete { name } => {
                if self.auth.enabled && name == ROOT {
                    return Err(V3Error::Auth(AuthError::InvalidAuthMgmt));
                }
                if user_of(self, name).is_none() {
                    return Err(V3Error::Auth(AuthError::UserNotFound));
                }
                self.del_user(name.as_bytes())?;
                self.commit_auth_revision()?;
                self.auth.drop_tokens_of(name);
                Ok(AuthResp::Done)
            }
            AuthOp::UserChangePassword { name, hash } => {
                let mut u = user_of(self, name).ok_or(V3Error::Auth(AuthError::UserNotFound))?;
                u.password = hash.clone();
                self.put_user(u)?;
                self.commit_auth_revision()?;
                self.auth.drop_tokens_of(name);
                Ok(AuthResp::Done)
            }
            AuthOp::UserGrantRole { user, role } => {
                let mut u = user_of(self, user).ok_or(V3Error::Auth(AuthError::UserNotFound))?;
                if role != ROOT && !self.auth.roles.contains_key(role.as_bytes()) {
                    return Err(V3Error::Auth(AuthError::RoleNotFound));
                }
                match u.roles.binary_search(role) {
                    Ok(_) => return Ok(AuthResp::Done),
                    Err(at) => u.roles.insert(at, role.clone()),
                }
                self.put_user(u)?;
                self.commit_auth_revision()?;
                Ok(AuthResp::Done)
            }
            AuthOp::UserRevokeRole { name, role } => {
                if self.auth.enabled && name == ROOT && role == ROOT {
                    return Err(V3Error::Auth(AuthError::InvalidAuthMgmt));
                }
                let mut u = user_of(self, name).ok_or(V3Error::Auth(AuthError::UserNotFound))?;
                let before = u.roles.len();
                u.roles.retain(|r| r != role);
                if u.roles.len() == before {
                    return Err(V3Error::Auth(AuthError::RoleNotGranted));
                }
                self.put_user(u)?;
                self.commit_auth_revision()?;
                Ok(AuthResp::Done)
            }
            AuthOp::UserGet { name } => {
                if let Err(e) = self.auth.check_admin(caller) {
                    let me = match caller {
                        Caller::Client(Some(a)) => a.user.as_str(),
                        _ => "",
                    };
                    if name != me {
                        return Err(V3Error::Auth(e));
                    }
                }
                let u = user_of(self, name).ok_or(V3Error::Auth(AuthError::UserNotFound))?;
                Ok(AuthResp::Names(u.roles))
            }
            AuthOp::UserList => Ok(AuthResp::Names(
                self.auth
                    .users
                    .values()
                    .map(|u| String::from_utf8_lossy(&u.name).into_owned())
                    .collect(),
            )),
            AuthOp::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(V3Error::Auth(AuthError::RoleEmpty));
                }
                if self.auth.roles.contains_key(name.as_bytes()) {
                    return Err(V3Error::Auth(AuthError::RoleAlreadyExist));
                }
                self.put_role(authpb::Role {
                    name: name.as_bytes().to_vec(),
                    key_permission: Vec::new(),
                })?;
                self.commit_auth_revision()?;
                Ok(AuthResp::Done)
            }
            AuthOp::RoleGet { role } => {
                if let Err(e) = self.auth.check_admin(caller) {
                    let has = match caller {
                        Caller::Client(Some(a)) => self
                            .auth
                            .users
                            .get(a.user.as_bytes())
                            .is_some_and(|u| u.roles.iter().any(|r| r == role)),
                        _ => false,
                    };
                    if !has {
                        return Err(V3Error::Auth(e));
                    }
                }
                let r = self
                    .auth
                    .roles
                    .get(role.as_bytes())
                    .ok_or(V3Error::Auth(AuthError::RoleNotFound))?;
                Ok(AuthResp::Perms(r.key_permission.clone()))
            }
            AuthOp::RoleList => Ok(AuthResp::Names(
                self.auth
                    .roles
                    .values()
                    .map(|r| String::from_utf8_lossy(&r.name).into_owned())
                    .collect(),
            )),
            AuthOp::RoleDelete { role } => {
                if self.auth.enabled && role == ROOT {
                    return Err(V3Error::Auth(AuthError::InvalidAuthMgmt));
                }
                if !self.auth.roles.contains_key(role.as_bytes()) {
                    return Err(V3Error::Auth(AuthError::RoleNotFound));
                }
                self.del_role(role.as_bytes())?;
                let holders: Vec<authpb::User> = self
                    .auth
                    .users
                    .values()
                    .filter(|u| u.roles.iter().any(|r| r == role))
                    .cloned()
                    .collect();
                for mut u in holders {
                    u.roles.retain(|r| r != role);
                    self.put_user(u)?;
                }
                self.commit_auth_revision()?;
                Ok(AuthResp::Done)
            }
            AuthOp::RoleGrantPermission {
                name,
                perm_type,
                key,
                range_end,
            } => {
                let mut r = self
                    .auth
                    .roles
                    .get(name.as_bytes())
                    .cloned()
                    .ok_or(V3Error::Auth(AuthError::RoleNotFound))?;
                let at = r
                    .key_permission
                    .partition_point(|p| p.key.as_slice() < key.as_slice());
                match r.key_permission.get_mut(at) {
                    Some(p) if p.key == *key && p.range_end == *range_end => {
                        p.perm_type = *perm_type;
                    }
                    _ => {
                        r.key_permission.push(authpb::Permission {
                            perm_type: *perm_type,
                            key: key.clone(),
                            range_end: range_end.clone(),
                        });
                        r.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                self.put_role(r)?;
                self.commit_auth_revision()?;
                Ok(AuthResp::Done)
            }
            AuthOp::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let mut r = self
                    .auth
                    .roles
                    .get(role.as_bytes())
                    .cloned()
                    .ok_or(V3Error::Auth(AuthError::RoleNotFound))?;
                let before = r.key_permission.len();
                r.key_permission
                    .retain(|p| !(p.key == *key && p.range_end == *range_end));
                if r.key_permission.len() == before {
                    return Err(V3Error::Auth(AuthError::PermissionNotGranted));
                }
                self.put_role(r)?;
                self.commit_auth_revision()?;
                Ok(AuthResp::Done)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: authpb::permission::Type, key: &str, end: &str) -> authpb::Permission {
        authpb::Permission {
            perm_type: t as i32,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }
    }

    fn store(perms: Vec<authpb::Permission>) -> (AuthStore, AuthInfo) {
        let mut a = AuthStore {
            enabled: true,
            revision: 5,
            ..AuthStore::default()
        };
        a.roles.insert(
            b"r".to_vec(),
            authpb::Role {
                name: b"r".to_vec(),
                key_permission: perms,
            },
        );
        a.users.insert(
            b"u".to_vec(),
            authpb::User {
                name: b"u".to_vec(),
                roles: vec!["r".into()],
                ..Default::default()
            },
        );
        (
            a,
            AuthInfo {
                user: "u".into(),
                revision: 5,
            },
        )
    }

    #[test]
    fn ranges_must_be_covered_by_contiguous_permissions() {
        use authpb::permission::Type::*;
        let (a, u) = store(vec![
            perm(Read, "a", "c"),
            perm(Readwrite, "c", "e"),
            perm(Write, "x", ""),
        ]);
        let c = Caller::Client(Some(&u));
        assert!(a.check(c, b"a", b"", false).is_ok());
        assert!(
            a.check(c, b"a", b"e", false).is_ok(),
            "[a,c) and [c,e) touch"
        );
        assert!(a.check(c, b"b", b"d", false).is_ok());
        assert_eq!(
            a.check(c, b"a", b"f", false),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check(c, b"b", b"", true),
            Err(AuthError::PermissionDenied)
        );
        assert!(a.check(c, b"d", b"", true).is_ok());
        assert!(a.check(c, b"x", b"", true).is_ok(), "a single key");
        assert_eq!(
            a.check(c, b"x", b"y", true),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check(c, b"a", b"\0", false),
            Err(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn from_key_permissions_reach_the_end_of_the_keyspace() {
        use authpb::permission::Type::*;
        let (a, u) = store(vec![perm(Read, "k", "\0")]);
        let c = Caller::Client(Some(&u));
        assert!(a.check(c, b"k", b"\0", false).is_ok());
        assert!(a.check(c, b"zzz", b"", false).is_ok());
        assert_eq!(
            a.check(c, b"j", b"", false),
            Err(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn credentials_are_checked_before_permissions() {
        let (mut a, u) = store(vec![]);
        assert_eq!(
            a.check(Caller::Client(None), b"a", b"", false),
            Err(AuthError::UserEmpty)
        );
        let old = AuthInfo {
            revision: 4,
            ..u.clone()
        };
        assert_eq!(
            a.check(Caller::Client(Some(&old)), b"a", b"", false),
            Err(AuthError::AuthOldRevision)
        );
        assert!(a.check(Caller::Internal, b"a", b"", true).is_ok());
        a.users
            .get_mut(b"u".as_slice())
            .unwrap()
            .roles
            .push(ROOT.into());
        assert!(
            a.check(Caller::Client(Some(&u)), b"a", b"", true).is_ok(),
            "root bypasses"
        );
        a.enabled = false;
        assert!(a.check(Caller::Client(None), b"a", b"", true).is_ok());
    }
}
