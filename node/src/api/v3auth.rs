//! etcd 3.4's v3 Auth service over gRPC (`v3rpc/auth.go`, `etcdserver/v3_server.go`), and the
//! credentials of every v3 request (`AuthInfoFromCtx`, `AuthInfoFromTLS`).
//!
//! Every Auth request goes through Raft as [`Op::AuthV3`] (reads too, as etcd's) and is
//! answered with what applying it produced; the admin checks happen when it applies, against
//! the auth state of its index. Passwords are bcrypt-hashed (etcd's cost 10) by the member
//! that takes the request, with a salt from its seeded rng, and the hash is what Raft
//! carries. Authenticate checks the password here, then proposes the token's random prefix
//! (from the seeded rng) so that every member assigns the same token.
//!
//! A request's credentials: a simple token in the `token` (or `authorization`) gRPC metadata,
//! or, with `--client-cert-auth` and no token, the TLS client certificate's common name. A
//! token names the Raft index of its Authenticate entry; a member that has not applied it yet
//! waits for it (up to the request timeout), so a token from one member works on any other.

use std::sync::Arc;

use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::auth_server::Auth;
use tonic::{Request, Response, Status};

use super::v3::{status, wait_status, V3};
use super::ClientCommonName;
use crate::mvcc::{AuthError, AuthInfo, AuthOp, AuthResp};
use crate::sm::{Op, Outcome};

/// etcd's status for an auth failure.
pub fn auth_status(e: AuthError) -> Status {
    Status::new(e.code(), e.message())
}

/// `op` on behalf of `ai`: wrapped with the user and auth revision the entry is checked
/// against when it applies.
pub fn on_behalf(ai: Option<AuthInfo>, op: Op) -> Op {
    match ai {
        Some(a) => Op::As {
            user: a.user,
            revision: a.revision,
            op: Box::new(op),
        },
        None => op,
    }
}

/// The 16 letters of a simple token's prefix (etcd's `genTokenPrefix`), from `next`.
fn token_prefix(mut next: impl FnMut() -> u64) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..16)
        .map(|_| LETTERS[(next() % LETTERS.len() as u64) as usize] as char)
        .collect()
}

impl V3 {
    /// The credentials of `req` (etcd's `AuthInfoFromCtx`, then `AuthInfoFromTLS` with
    /// client-cert auth): `None` when it has none. A token this member does not know (after
    /// waiting for the index it names) is etcd's "invalid auth token", whether auth is on or
    /// not. The Watch service calls this once per stream, and [`V3::refresh_auth`] for each
    /// watch it creates.
    pub async fn auth_info<T>(&self, req: &Request<T>) -> Result<Option<AuthInfo>, Status> {
        let token = self.auth_token(req)?;
        if let Some(t) = token {
            return self.token_info(&t).await.map(Some);
        }
        if self.ctx.client_cert_auth && self.gateway.is_none() {
            if let Some(cn) = req.extensions().get::<ClientCommonName>() {
                let revision = self
                    .ctx
                    .shared
                    .mvcc
                    .lock()
                    .expect("mvcc lock")
                    .auth_revision();
                return Ok(Some(AuthInfo {
                    user: cn.0.clone(),
                    revision,
                }));
            }
        }
        Ok(None)
    }

    /// The token a request carries (the gateway's, or the `token`/`authorization` metadata).
    pub fn auth_token<T>(&self, req: &Request<T>) -> Result<Option<String>, Status> {
        match &self.gateway {
            Some(t) => Ok(t.clone()),
            None => {
                let md = req.metadata();
                match md.get("token").or_else(|| md.get("authorization")) {
                    Some(v) => Ok(Some(
                        v.to_str()
                            .map_err(|_| auth_status(AuthError::InvalidAuthToken))?
                            .to_string(),
                    )),
                    None => Ok(None),
                }
            }
        }
    }

    /// `ai` as of now, for a stream that authenticated earlier (etcd's Watch service asks
    /// `AuthInfoFromCtx` again for every watch it creates): a token is looked up again (it
    /// may have been invalidated since), a certificate's user gets the current auth revision.
    pub async fn refresh_auth(
        &self,
        ai: &AuthInfo,
        token: Option<&str>,
    ) -> Result<AuthInfo, Status> {
        match token {
            Some(t) => self.token_info(t).await,
            None => Ok(AuthInfo {
                user: ai.user.clone(),
                revision: (self.ctx.shared.mvcc.lock().expect("mvcc lock")).auth_revision(),
            }),
        }
    }

    /// The user of a simple token `prefix.index` (etcd's `tokenSimple.info`).
    async fn token_info(&self, token: &str) -> Result<AuthInfo, Status> {
        let invalid = || auth_status(AuthError::InvalidAuthToken);
        let mut parts = token.split('.');
        let (Some(_), Some(index), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        let index: u64 = index.parse().map_err(|_| invalid())?;
        let shared = &self.ctx.shared;
        if *shared.applied.borrow() < index {
            let deadline = shared.clock.now() + self.ctx.request_timeout;
            let mut applied = shared.applied.subscribe();
            match crate::rt::timeout_at(deadline, applied.wait_for(|a| *a >= index)).await {
                Ok(Ok(())) => {}
                _ => return Err(invalid()),
            }
        }
        let now = shared.clock.now();
        let mut m = shared.mvcc.lock().expect("mvcc lock");
        let user = m.auth_token_user(token, now).ok_or_else(invalid)?;
        Ok(AuthInfo {
            user,
            revision: m.auth_revision(),
        })
    }

    /// May `ai` read `key`..`range_end` (etcd's `IsRangePermitted`, as the Watch service
    /// checks each watch it creates)?
    pub fn check_range(
        &self,
        ai: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), Status> {
        self.ctx
            .shared
            .mvcc
            .lock()
            .expect("mvcc lock")
            .auth_check_range(ai, key, range_end)
            .map_err(auth_status)
    }

    /// Propose an auth request on behalf of `ai` and wait for its answer.
    async fn auth_request(&self, ai: Option<AuthInfo>, op: AuthOp) -> Result<AuthResp, Status> {
        let applied = self
            .ctx
            .shared
            .propose(on_behalf(ai, Op::AuthV3(op)), self.ctx.request_timeout)
            .await
            .map_err(wait_status)?;
        match applied.outcome {
            Outcome::AuthV3(r) => r.map_err(status),
            other => Err(Status::internal(format!(
                "etcdserver: unexpected outcome of an auth request: {other:?}"
            ))),
        }
    }

    /// An auth request that answers only a header.
    async fn auth_done<T>(&self, req: &Request<T>, op: AuthOp) -> Result<(), Status> {
        let ai = self.auth_info(req).await?;
        self.auth_request(ai, op).await.map(|_| ())
    }

    fn hash(&self, password: &str) -> Result<Vec<u8>, Status> {
        super::auth::hash(&self.ctx, password)
            .map(String::into_bytes)
            .map_err(|e| Status::internal(format!("password hash: {e:?}")))
    }
}

fn names(r: AuthResp) -> Vec<String> {
    match r {
        AuthResp::Names(n) => n,
        _ => Vec::new(),
    }
}

#[tonic::async_trait]
impl Auth for V3 {
    async fn auth_enable(
        &self,
        req: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        self.auth_done(&req, AuthOp::Enable).await?;
        Ok(Response::new(pb::AuthEnableResponse {
            header: self.header(self.revision()),
        }))
    }

    async fn auth_disable(
        &self,
        req: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        self.auth_done(&req, AuthOp::Disable).await?;
        Ok(Response::new(pb::AuthDisableResponse {
            header: self.header(self.revision()),
        }))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        self.linearize().await?;
        // etcd checks the password (and that auth is on) first, and reads the request's own
        // token only as it proposes the authentication.
        let token_ai = self.auth_info(&req).await;
        let r = req.into_inner();
        let shared = Arc::clone(&self.ctx.shared);
        loop {
            let checked = shared
                .mvcc
                .lock()
                .expect("mvcc lock")
                .auth_password(&r.name);
            let (hash, revision) = checked.map_err(auth_status)?;
            let hash = String::from_utf8_lossy(&hash).into_owned();
            if !self.ctx.verified.check(&hash, &r.password) {
                return Err(auth_status(AuthError::AuthFailed));
            }
            let ai = token_ai.clone()?;
            let prefix = token_prefix(|| shared.rng.next_u64());
            let op = AuthOp::Authenticate {
                name: r.name.clone(),
                prefix,
            };
            let token = match self.auth_request(ai.clone(), op).await? {
                AuthResp::Token(t) => t,
                other => {
                    return Err(Status::internal(format!(
                        "etcdserver: unexpected answer to Authenticate: {other:?}"
                    )))
                }
            };
            // The password was checked at `revision`; if auth changed since (the password
            // perhaps), check again, as etcd does.
            if shared.mvcc.lock().expect("mvcc lock").auth_revision() == revision {
                return Ok(Response::new(pb::AuthenticateResponse {
                    header: self.header(self.revision()),
                    token,
                }));
            }
        }
    }

    async fn user_add(
        &self,
        req: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let ai = self.auth_info(&req).await?;
        let r = req.into_inner();
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        let hash = if no_password || r.name.is_empty() {
            Vec::new()
        } else {
            self.hash(&r.password)?
        };
        let op = AuthOp::UserAdd {
            name: r.name,
            hash,
            no_password,
        };
        self.auth_request(ai, op).await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: self.header(self.revision()),
        }))
    }

    async fn user_get(
        &self,
        req: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let ai = self.auth_info(&req).await?;
        let name = req.into_inner().name;
        let roles = names(self.auth_request(ai, AuthOp::UserGet { name }).await?);
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.header(self.revision()),
            roles,
        }))
    }

    async fn user_list(
        &self,
        req: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let ai = self.auth_info(&req).await?;
        let users = names(self.auth_request(ai, AuthOp::UserList).await?);
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.header(self.revision()),
            users,
        }))
    }

    async fn user_delete(
        &self,
        req: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let name = req.get_ref().name.clone();
        self.auth_done(&req, AuthOp::UserDelete { name }).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: self.header(self.revision()),
        }))
    }

    async fn user_change_password(
        &self,
        req: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let ai = self.auth_info(&req).await?;
        let r = req.into_inner();
        let hash = self.hash(&r.password)?;
        self.auth_request(ai, AuthOp::UserChangePassword { name: r.name, hash })
            .await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: self.header(self.revision()),
        }))
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = req.get_ref().clone();
        let op = AuthOp::UserGrantRole {
            user: r.user,
            role: r.role,
        };
        self.auth_done(&req, op).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: self.header(self.revision()),
        }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = req.get_ref().clone();
        let op = AuthOp::UserRevokeRole {
            name: r.name,
            role: r.role,
        };
        self.auth_done(&req, op).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: self.header(self.revision()),
        }))
    }

    async fn role_add(
        &self,
        req: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let name = req.get_ref().name.clone();
        self.auth_done(&req, AuthOp::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: self.header(self.revision()),
        }))
    }

    async fn role_get(
        &self,
        req: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let ai = self.auth_info(&req).await?;
        let role = req.into_inner().role;
        let perm = match self.auth_request(ai, AuthOp::RoleGet { role }).await? {
            AuthResp::Perms(p) => p,
            _ => Vec::new(),
        };
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.header(self.revision()),
            perm,
        }))
    }

    async fn role_list(
        &self,
        req: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let ai = self.auth_info(&req).await?;
        let roles = names(self.auth_request(ai, AuthOp::RoleList).await?);
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.header(self.revision()),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        req: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let role = req.get_ref().role.clone();
        self.auth_done(&req, AuthOp::RoleDelete { role }).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: self.header(self.revision()),
        }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = req.get_ref().clone();
        let p = r.perm.unwrap_or_default();
        let op = AuthOp::RoleGrantPermission {
            name: r.name,
            perm_type: p.perm_type,
            key: p.key,
            range_end: p.range_end,
        };
        self.auth_done(&req, op).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: self.header(self.revision()),
        }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = req.get_ref().clone();
        let op = AuthOp::RoleRevokePermission {
            role: r.role,
            key: r.key,
            range_end: r.range_end,
        };
        self.auth_done(&req, op).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: self.header(self.revision()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_prefixes_are_sixteen_letters_from_the_given_draws() {
        let mut n = 0u64;
        let p = token_prefix(|| {
            n += 27;
            n
        });
        assert_eq!(p.len(), 16);
        assert!(p.bytes().all(|b| b.is_ascii_alphabetic()));
        assert_eq!(&p[..3], "BcD", "draws 27, 54, 81 → letters 27, 2, 29");
    }
}
