//! v2 auth under load: the setup before the load (root, roles, users, auth on, `guest`
//! stripped) and the `permissions` oracle.
//!
//! The oracle is computed from the scenario's role definitions alone, with etcd 3.4's rules
//! (`etcdserver/api/v2auth` and `v2http/client_auth.go`) written out here again rather than
//! taken from detcd: a request is allowed when one of its user's roles has a pattern for it in
//! the list of its kind (write for every method but GET/HEAD, read for GET); a pattern is a
//! key, or a prefix ending in `*`; a `recursive=true` request needs a prefix pattern (ending
//! in `*`) whose prefix the key starts with. A refused request is answered 401 with errorCode
//! 110 before anything happens; an allowed one is never answered 110.

use std::time::Duration;

use crate::output::{Check, RunOutput};
use crate::scenario::{AuthSpec, Scenario};
use crate::workload::{OpKind, Outcome};

/// etcd's errorCode for "The request requires user authentication" (v2error.EcodeUnauthorized).
pub const UNAUTHORIZED: u32 = 110;

/// Whether `pattern` grants `key`: non-recursively a key or a `*` prefix, recursively only a
/// `*` prefix (etcd's `simpleMatch` / `prefixMatch`).
fn matches(pattern: &str, key: &str, recursive: bool) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => !recursive && pattern == key,
    }
}

/// Whether the scenario's roles let `user` do a `kind` request on `key` (the path after
/// `/v2/keys`, as sent).
pub fn allowed(spec: &AuthSpec, user: &str, kind: OpKind, key: &str) -> bool {
    let Some(u) = spec.users.iter().find(|u| u.name == user) else {
        return false;
    };
    let recursive = kind.is_recursive();
    u.roles
        .iter()
        .filter_map(|r| spec.roles.iter().find(|x| x.name == *r))
        .any(|r| {
            let list = if kind.is_write() { &r.write } else { &r.read };
            list.iter().any(|p| matches(p, key, recursive))
        })
}

/// The `permissions` check (runs with auth on only): every answered operation was allowed
/// or refused (110) exactly as the roles say; indeterminate and unsent ones are left out. It
/// fails too when nothing was refused or nothing allowed (an oracle that checked one side
/// only).
pub fn check(s: &Scenario, out: &RunOutput) -> Option<Check> {
    if !s.auth.enabled || s.workload.api == crate::scenario::Api::V3 {
        return None;
    }
    let (mut allowed_n, mut refused_n, mut excluded) = (0u64, 0u64, 0u64);
    let mut wrong = Vec::new();
    let mut ops: Vec<_> = out.rec.ops.iter().collect();
    ops.sort_by_key(|o| (o.invoke_ns, o.client));
    for o in ops {
        let refused = match &o.outcome {
            Outcome::Indeterminate | Outcome::NotSent => {
                excluded += 1;
                continue;
            }
            Outcome::Err { code } => *code == UNAUTHORIZED,
            Outcome::Ok { .. } => false,
        };
        let user = o.user.as_deref().unwrap_or("(none)");
        let should = allowed(&s.auth, user, o.kind, &o.key);
        if should {
            allowed_n += 1;
        } else {
            refused_n += 1;
        }
        if should == refused {
            wrong.push(format!(
                "{} {} {} by {user} (client {}, member {}, at {:.3} s): {} but the roles {} it",
                crate::history::kind_name(o.kind),
                o.key,
                if o.kind.is_recursive() {
                    "recursively"
                } else {
                    ""
                },
                o.client,
                o.member,
                o.invoke_ns as f64 / 1e9,
                match &o.outcome {
                    Outcome::Ok { .. } => "answered with success".to_string(),
                    Outcome::Err { code } => format!("answered error {code}"),
                    _ => unreachable!(),
                },
                if should { "allow" } else { "refuse" },
            ));
        }
    }
    let counts = format!(
        "{allowed_n} answered operations the roles allow, {refused_n} they refuse ({excluded} indeterminate or unsent left out)"
    );
    let (passed, detail) = if !wrong.is_empty() {
        (
            false,
            format!(
                "{} operation(s) not as the roles say; first: {}; {counts}",
                wrong.len(),
                wrong[0].replace("  ", " ")
            ),
        )
    } else if allowed_n == 0 || refused_n == 0 {
        (false, format!("nothing to compare on one side: {counts}"))
    } else {
        (
            true,
            format!("every refusal (110) and only those as the roles say: {counts}"),
        )
    };
    Some(Check {
        name: "permissions".into(),
        passed: Some(passed),
        detail,
    })
}

/// Before the load: create `root`, the roles and the users, enable auth, revoke everything
/// from `guest` (README, "Auth", as an operator would with curl), then wait until every
/// member has applied the last of it (so no member serves the load with older rules). Each
/// step is retried until it succeeds or finds its work done (a retried create answers 409).
/// From here on the run's own clients act as root.
pub async fn setup(spec: &AuthSpec, addrs: &[String]) -> Result<(), String> {
    use detcd_client::Error;
    let root = ("root".to_string(), spec.root_password().to_string());
    let timeout = Duration::from_secs(2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    async fn retry<F, Fut>(
        what: &str,
        deadline: tokio::time::Instant,
        mut f: F,
    ) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), Error>>,
    {
        loop {
            let e = match f().await {
                Ok(()) => return Ok(()),
                Err(Error::Http { status: 409, .. }) => return Ok(()),
                Err(e) => e,
            };
            if tokio::time::Instant::now() > deadline {
                return Err(format!("auth setup: {what}: {e}"));
            }
            detcd_node::rt::sleep(Duration::from_millis(200)).await;
        }
    }
    let anon = crate::client::client_as(addrs, timeout, None);
    let c = &anon;
    retry("create root", deadline, || {
        c.create_user("root", &root.1, &[])
    })
    .await?;
    for r in &spec.roles {
        retry(&format!("create role {}", r.name), deadline, || {
            c.create_role(&r.name, &r.read, &r.write)
        })
        .await?;
    }
    for u in &spec.users {
        retry(&format!("create user {}", u.name), deadline, || {
            c.create_user(&u.name, &u.password, &u.roles)
        })
        .await?;
    }
    retry("enable auth", deadline, || c.enable_auth()).await?;
    let rc = &crate::client::client_as(addrs, timeout, Some(root.clone()));
    let all: &[String] = &["/*".to_string()];
    retry("revoke guest", deadline, move || async move {
        // 400 "Role not updated": revoked already by a try that got no answer.
        match rc.update_role("guest", (&[], &[]), (all, all)).await {
            Err(Error::Http { status: 400, body }) if body.contains("not updated") => Ok(()),
            r => r.map(|_| ()),
        }
    })
    .await?;
    for a in addrs {
        let m = &crate::client::client_as(std::slice::from_ref(a), timeout, Some(root.clone()));
        retry(
            &format!("member {a} applying the guest revoke"),
            deadline,
            move || async move {
                match m.role("guest").await? {
                    (r, w) if r.is_empty() && w.is_empty() => Ok(()),
                    (r, w) => Err(Error::Decode(format!("guest still has {r:?} {w:?}"))),
                }
            },
        )
        .await?;
    }
    crate::client::set_client_auth(Some(root));
    Ok(())
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
                role("a-rw", &["/k/a/*"], &["/k/a/*"]),
                role("k-ro", &["/k/*"], &[]),
                role("exact", &["/kx/3"], &["/kx/3"]),
            ],
            users: vec![
                user("alice", &["a-rw"]),
                user("bob", &["k-ro"]),
                user("carol", &[]),
                user("dave", &["exact", "k-ro"]),
            ],
            ..AuthSpec::default()
        }
    }

    #[test]
    fn the_oracle_follows_etcds_rules() {
        let s = spec();
        use OpKind::*;
        assert!(allowed(&s, "alice", Set, "/k/a/0"));
        assert!(allowed(&s, "alice", Get, "/k/a/0"));
        assert!(allowed(&s, "alice", Mkdir, "/k/a/d4"));
        // `/k/a/*` does not cover `/k/ab/2` nor the directory `/k/a` itself.
        assert!(!allowed(&s, "alice", Set, "/k/ab/2"));
        assert!(!allowed(&s, "alice", RGet, "/k/a"));
        assert!(allowed(&s, "alice", RDelete, "/k/a/d4"));
        assert!(allowed(&s, "bob", QGet, "/k/ab/2"));
        assert!(allowed(&s, "bob", RGet, "/k/a"));
        assert!(!allowed(&s, "bob", RGet, "/k"));
        assert!(!allowed(&s, "bob", Get, "/kx/3"));
        assert!(!allowed(&s, "bob", Delete, "/k/a/0"));
        assert!(!allowed(&s, "carol", Get, "/k/a/0"));
        // An exact key pattern: that key only, and never recursively.
        assert!(allowed(&s, "dave", Cad, "/kx/3"));
        assert!(!allowed(&s, "dave", Set, "/kx/7"));
        assert!(!allowed(&s, "dave", RGet, "/kx/3"));
        assert!(!allowed(&s, "nobody", Get, "/k/a/0"));
    }
}
