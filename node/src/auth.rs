//! etcd's v2 auth: users, roles, key-prefix permissions and the enabled flag.
//!
//! The state is replicated: it lives in the state machine's metadata (so it is in every
//! snapshot) and changes only through [`AuthOp`]s applied from Raft entries. Each applied
//! change takes one store index, as etcd's writes under its internal `/2/` namespace do (and
//! the very first change four more, for the directories etcd creates then), so the
//! `X-Etcd-Index` of later writes matches etcd's.
//!
//! The request handlers ([`crate::api`]) do etcd's read-modify-write (merging grants and
//! revokes, hashing passwords with bcrypt and a salt from the member's seeded rng) and
//! propose the result; applying re-checks the preconditions (create needs absence, update
//! presence), so two racing requests cannot both win.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The user with every right.
pub const ROOT: &str = "root";
/// The role of requests without credentials.
pub const GUEST: &str = "guest";

/// Read and write key patterns of a role. `None` is Go's nil slice (JSON `null`), kept apart
/// from an empty list because etcd answers them differently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Perms {
    /// Patterns readable: a key, or a prefix ending in `*`.
    pub read: Option<Vec<String>>,
    /// Patterns writable.
    pub write: Option<Vec<String>>,
}

/// A role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Its name.
    pub name: String,
    /// Its key permissions.
    pub perms: Perms,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its name.
    pub name: String,
    /// bcrypt hash of the password.
    pub hash: String,
    /// Role names (not checked to exist, as in etcd). `None` is Go's nil.
    pub roles: Option<Vec<String>>,
}

/// The replicated auth state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    /// Whether auth is enforced.
    pub enabled: bool,
    /// Whether etcd's auth directories exist yet (the first change creates them).
    pub dirs: bool,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name (the built-in root role is not stored).
    pub roles: BTreeMap<String, Role>,
}

/// A replicated change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AuthOp {
    /// Store a user; `create` requires it to be absent, otherwise it must exist.
    PutUser {
        /// The whole user.
        user: User,
        /// Create rather than update.
        create: bool,
    },
    /// Delete a user.
    DeleteUser(String),
    /// Store a role; `create` requires it to be absent, otherwise it must exist.
    PutRole {
        /// The whole role.
        role: Role,
        /// Create rather than update.
        create: bool,
    },
    /// Delete a role.
    DeleteRole(String),
    /// Turn auth on (creating the guest role with full access if there is none).
    Enable,
    /// Turn auth off.
    Disable,
}

/// An auth error: HTTP status and message, answered as `{"message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// HTTP status.
    pub status: u16,
    /// Message (etcd's wording).
    pub message: String,
}

impl AuthError {
    /// An error with etcd's `auth: ` prefix.
    pub fn auth(status: u16, msg: impl std::fmt::Display) -> AuthError {
        AuthError {
            status,
            message: format!("auth: {msg}"),
        }
    }
    /// An error without the prefix (request validation).
    pub fn plain(status: u16, msg: impl Into<String>) -> AuthError {
        AuthError {
            status,
            message: msg.into(),
        }
    }
    /// The JSON body.
    pub fn to_json(&self) -> String {
        format!("{}\n", serde_json::json!({ "message": self.message }))
    }
}

/// The built-in root role.
pub fn root_role() -> Role {
    Role {
        name: ROOT.into(),
        perms: Perms {
            read: Some(vec!["/*".into()]),
            write: Some(vec!["/*".into()]),
        },
    }
}

/// `pattern` matches `key`: exactly, or as a prefix when it ends in `*`.
fn simple_match(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => pattern == key,
    }
}

/// A recursive request needs a `*` pattern whose prefix covers the key.
fn prefix_match(pattern: &str, key: &str) -> bool {
    pattern
        .strip_suffix('*')
        .is_some_and(|prefix| key.starts_with(prefix))
}

impl Role {
    /// Whether the role may read (or write) `key`; recursively, everything under it.
    pub fn allows(&self, key: &str, write: bool, recursive: bool) -> bool {
        if self.name == ROOT {
            return true;
        }
        let list = if write {
            &self.perms.write
        } else {
            &self.perms.read
        };
        list.iter().flatten().any(|p| {
            if recursive {
                prefix_match(p, key)
            } else {
                simple_match(p, key)
            }
        })
    }

    /// etcd's JSON for a role.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({
            "role": self.name,
            "permissions": {"kv": {"read": self.perms.read, "write": self.perms.write}},
        })
    }
}

impl AuthState {
    /// A role by name (root is built in).
    pub fn role(&self, name: &str) -> Option<Role> {
        if name == ROOT {
            return Some(root_role());
        }
        self.roles.get(name).cloned()
    }

    /// A user by name, as etcd's `GetUser` answers it: the root user always has the root
    /// role.
    pub fn user(&self, name: &str) -> Option<User> {
        let mut u = self.users.get(name)?.clone();
        if u.name == ROOT {
            let roles = u.roles.get_or_insert_with(Vec::new);
            if !roles.iter().any(|r| r == ROOT) {
                roles.push(ROOT.into());
            }
        }
        Some(u)
    }

    /// Whether `user` (as [`AuthState::user`] returned it) has root access.
    pub fn is_root(user: &User) -> bool {
        user.roles.iter().flatten().any(|r| r == ROOT)
    }

    /// Whether `user` (or, with `None`, a request without credentials: the guest role,
    /// never recursively, as in etcd) may access `key`.
    pub fn key_access(&self, user: Option<&User>, key: &str, write: bool, recursive: bool) -> bool {
        if !self.enabled {
            return true;
        }
        match user {
            None => self
                .role(GUEST)
                .is_some_and(|r| r.allows(key, write, false)),
            Some(u) => u
                .roles
                .iter()
                .flatten()
                .filter_map(|r| self.role(r))
                .any(|r| r.allows(key, write, recursive)),
        }
    }

    /// Apply a committed change. `writes` is called once per store index the change takes.
    pub fn apply(&mut self, op: &AuthOp, mut writes: impl FnMut(&str)) -> Result<(), AuthError> {
        if !self.dirs {
            self.dirs = true;
            for p in ["/2/users", "/2/roles", "/2/enabled", "/2"] {
                writes(p);
            }
        }
        match op {
            AuthOp::PutUser { user, create } => {
                let exists = self.users.contains_key(&user.name);
                if *create && exists {
                    return Err(AuthError::auth(
                        409,
                        format!("User {} already exists.", user.name),
                    ));
                }
                if !*create && !exists {
                    return Err(AuthError::auth(
                        404,
                        format!("User {} doesn't exist.", user.name),
                    ));
                }
                self.users.insert(user.name.clone(), user.clone());
                writes(&format!("/2/users/{}", user.name));
            }
            AuthOp::DeleteUser(name) => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::auth(
                        403,
                        "Cannot delete root user while auth is enabled.",
                    ));
                }
                if self.users.remove(name).is_none() {
                    return Err(AuthError::auth(404, format!("User {name} does not exist")));
                }
                writes(&format!("/2/users/{name}"));
            }
            AuthOp::PutRole { role, create } => {
                if role.name == ROOT {
                    return Err(AuthError::auth(
                        403,
                        format!("Cannot modify role {ROOT}: is root role."),
                    ));
                }
                let exists = self.roles.contains_key(&role.name);
                if *create && exists {
                    return Err(AuthError::auth(
                        409,
                        format!("Role {} already exists.", role.name),
                    ));
                }
                if !*create && !exists {
                    return Err(AuthError::auth(
                        404,
                        format!("Role {} doesn't exist.", role.name),
                    ));
                }
                self.roles.insert(role.name.clone(), role.clone());
                writes(&format!("/2/roles/{}", role.name));
            }
            AuthOp::DeleteRole(name) => {
                if name == ROOT {
                    return Err(AuthError::auth(
                        403,
                        format!("Cannot modify role {ROOT}: is root role."),
                    ));
                }
                if self.roles.remove(name).is_none() {
                    return Err(AuthError::auth(404, format!("Role {name} doesn't exist.")));
                }
                writes(&format!("/2/roles/{name}"));
            }
            AuthOp::Enable => {
                if self.enabled {
                    return Err(AuthError::auth(409, "already enabled"));
                }
                if !self.users.contains_key(ROOT) {
                    return Err(AuthError::auth(
                        409,
                        "No root user available, please create one",
                    ));
                }
                if !self.roles.contains_key(GUEST) {
                    self.roles.insert(
                        GUEST.into(),
                        Role {
                            name: GUEST.into(),
                            perms: Perms {
                                read: Some(vec!["/*".into()]),
                                write: Some(vec!["/*".into()]),
                            },
                        },
                    );
                    writes("/2/roles/guest");
                }
                self.enabled = true;
                writes("/2/enabled");
            }
            AuthOp::Disable => {
                if !self.enabled {
                    return Err(AuthError::auth(409, "already disabled"));
                }
                self.enabled = false;
                writes("/2/enabled");
            }
        }
        Ok(())
    }
}

/// Merge grants and revokes into a user's roles (etcd's `User.merge`): granting a role the
/// user has, or revoking one it lacks, is a conflict. The result is sorted.
pub fn merge_roles(
    name: &str,
    old: Option<&Vec<String>>,
    grant: &[String],
    revoke: &[String],
) -> Result<Vec<String>, AuthError> {
    let mut set: Vec<String> = old.cloned().unwrap_or_default();
    for g in grant {
        if set.contains(g) {
            return Err(AuthError::auth(
                409,
                format!("Granting duplicate role {g} for user {name}"),
            ));
        }
        set.push(g.clone());
    }
    for r in revoke {
        let Some(i) = set.iter().position(|x| x == r) else {
            return Err(AuthError::auth(
                409,
                format!("Revoking ungranted role {r} for user {name}"),
            ));
        };
        set.remove(i);
    }
    set.sort();
    set.dedup();
    Ok(set)
}

/// Merge permission grants and revokes into a role's (etcd's `Role.merge`): granting a
/// pattern the role has is a conflict; revoking one it lacks is ignored. Lists come out
/// sorted and never null.
pub fn merge_perms(
    old: &Perms,
    grant: Option<&Perms>,
    revoke: Option<&Perms>,
) -> Result<Perms, AuthError> {
    let mut out = old.clone();
    if let Some(g) = grant {
        let mut read = old.read.clone().unwrap_or_default();
        for p in g.read.iter().flatten() {
            if read.contains(p) {
                return Err(AuthError::auth(
                    409,
                    format!("Granting duplicate read permission {p}"),
                ));
            }
            read.push(p.clone());
        }
        let mut write = old.write.clone().unwrap_or_default();
        for p in g.write.iter().flatten() {
            if write.contains(p) {
                return Err(AuthError::auth(
                    409,
                    format!("Granting duplicate write permission {p}"),
                ));
            }
            write.push(p.clone());
        }
        read.sort();
        write.sort();
        out = Perms {
            read: Some(read),
            write: Some(write),
        };
    }
    if let Some(r) = revoke {
        let mut read = out.read.clone().unwrap_or_default();
        read.retain(|p| !r.read.iter().flatten().any(|x| x == p));
        let mut write = out.write.clone().unwrap_or_default();
        write.retain(|p| !r.write.iter().flatten().any(|x| x == p));
        read.sort();
        write.sort();
        out = Perms {
            read: Some(read),
            write: Some(write),
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, read: &[&str], write: &[&str]) -> Role {
        Role {
            name: name.into(),
            perms: Perms {
                read: Some(read.iter().map(|s| s.to_string()).collect()),
                write: Some(write.iter().map(|s| s.to_string()).collect()),
            },
        }
    }

    #[test]
    fn patterns_match_as_in_etcd() {
        let r = role("r", &["/foo/*", "/exact"], &[]);
        assert!(r.allows("/foo/a", false, false));
        assert!(r.allows("/foo/a/b", false, false));
        assert!(!r.allows("/foo", false, false));
        assert!(r.allows("/exact", false, false));
        assert!(!r.allows("/exact/x", false, false));
        assert!(!r.allows("/foo/a", true, false));
        // recursive access needs a prefix pattern that covers the key
        assert!(r.allows("/foo/a", false, true));
        assert!(!r.allows("/exact", false, true));
        assert!(!r.allows("/foo", false, true));
        assert!(root_role().allows("/anything", true, true));
    }

    #[test]
    fn guest_and_users_when_enabled() {
        let mut s = AuthState::default();
        let mut n = 0;
        let user = User {
            name: ROOT.into(),
            hash: String::new(),
            roles: Some(vec![ROOT.into()]),
        };
        s.apply(&AuthOp::PutUser { user, create: true }, |_| n += 1)
            .unwrap();
        assert_eq!(n, 5, "the first change creates etcd's directories");
        assert!(
            s.key_access(None, "/x", true, false),
            "off: everything allowed"
        );
        s.apply(&AuthOp::Enable, |_| n += 1).unwrap();
        assert_eq!(n, 7, "guest role and the flag");
        assert!(
            s.key_access(None, "/x", true, false),
            "guest starts with /*"
        );
        let guest = role(GUEST, &[], &[]);
        s.apply(
            &AuthOp::PutRole {
                role: guest,
                create: false,
            },
            |_| n += 1,
        )
        .unwrap();
        assert!(!s.key_access(None, "/x", false, false));
        let root = s.user(ROOT).unwrap();
        assert!(AuthState::is_root(&root));
        assert!(s.key_access(Some(&root), "/x", true, true));
        assert_eq!(
            s.apply(&AuthOp::DeleteUser(ROOT.into()), |_| ()),
            Err(AuthError::auth(
                403,
                "Cannot delete root user while auth is enabled."
            ))
        );
        assert_eq!(s.apply(&AuthOp::Enable, |_| ()).unwrap_err().status, 409);
    }

    #[test]
    fn merges_follow_etcd() {
        let roles = merge_roles("a", Some(&vec!["x".into()]), &["b".into()], &[]).unwrap();
        assert_eq!(roles, vec!["b".to_string(), "x".into()]);
        assert_eq!(
            merge_roles("a", Some(&roles), &["b".into()], &[])
                .unwrap_err()
                .status,
            409
        );
        assert_eq!(
            merge_roles("a", Some(&roles), &[], &["zz".into()])
                .unwrap_err()
                .message,
            "auth: Revoking ungranted role zz for user a"
        );
        let old = role("r", &["/a*"], &[]).perms;
        let grant = Perms {
            read: Some(vec!["/0".into()]),
            write: None,
        };
        let p = merge_perms(&old, Some(&grant), None).unwrap();
        assert_eq!(p.read, Some(vec!["/0".to_string(), "/a*".into()]));
        let p2 = merge_perms(&p, None, Some(&grant)).unwrap();
        assert_eq!(p2, old);
        assert_eq!(merge_perms(&old, None, Some(&grant)).unwrap(), old);
    }
}
