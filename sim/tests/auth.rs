//! v2 auth under faults: the shipped `auth` scenario's seed 1 passes every check, and its
//! `permissions` oracle compared both sides (operations the roles refuse and operations they
//! allow), over every kind of operation. Run with `cargo simtest --test auth`.
#![cfg(madsim)]

use std::collections::BTreeSet;

use detcd_sim::history::kind_name;
use detcd_sim::outcome::run_and_check;
use detcd_sim::permissions::{allowed, UNAUTHORIZED};
use detcd_sim::scenario::Scenario;
use detcd_sim::workload::Outcome;

#[test]
fn the_auth_scenario_refuses_and_allows_exactly_as_the_roles_say() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/auth.toml");
    let s = Scenario::load(std::path::Path::new(path)).unwrap();
    assert!(s.auth.enabled);
    let r = run_and_check(&s, 1);
    for c in &r.checks {
        println!("{:<18} {:?} {}", c.name, c.passed, c.detail);
    }
    assert!(r.passed(), "{:?}", r.first_failure());
    let perms = r.checks.iter().find(|c| c.name == "permissions");
    assert_eq!(perms.map(|c| c.passed), Some(Some(true)), "{perms:?}");

    // Both sides of the oracle, counted here again from the history.
    let (mut refused, mut allowed_ok) = (0, 0);
    let mut refused_kinds = BTreeSet::new();
    let mut allowed_kinds = BTreeSet::new();
    let mut users = BTreeSet::new();
    for o in &r.out.rec.ops {
        let user = o.user.as_deref().expect("every client acts as a user");
        users.insert(user.to_string());
        let should = allowed(&s.auth, user, o.kind, &o.key);
        match &o.outcome {
            Outcome::Err { code } if *code == UNAUTHORIZED => {
                assert!(!should, "{o:?}");
                refused += 1;
                refused_kinds.insert(kind_name(o.kind));
            }
            Outcome::Ok { .. } | Outcome::Err { .. } => {
                assert!(should, "{o:?}");
                allowed_ok += 1;
                allowed_kinds.insert(kind_name(o.kind));
            }
            Outcome::Indeterminate | Outcome::NotSent => {}
        }
    }
    println!("{refused} refused, {allowed_ok} allowed; users {users:?}");
    println!("refused: {refused_kinds:?}\nallowed: {allowed_kinds:?}");
    assert!(refused > 0 && allowed_ok > 0);
    assert_eq!(users.len(), s.auth.users.len(), "every user has clients");
    // Every kind of operation the workload has was both refused and allowed somewhere.
    let all: BTreeSet<&str> = [
        "get",
        "qget",
        "set",
        "create",
        "update",
        "cas_value",
        "cas_index",
        "delete",
        "cad",
        "rget",
        "mkdir",
        "rmdir",
        "rdelete",
    ]
    .into();
    assert_eq!(refused_kinds, all);
    assert_eq!(allowed_kinds, all);
}

/// v3 auth under faults: the shipped `v3-auth` scenario's seed 1 passes every check; its
/// `v3-permissions` oracle compared both sides for every kind of request and every user
/// that may do anything, and clients whose member forgot their token (a crash) were told
/// so and authenticated again.
#[test]
fn the_v3_auth_scenario_refuses_and_allows_exactly_as_the_roles_say() {
    use detcd_checker::v3 as h;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/v3-auth.toml");
    let s = Scenario::load(std::path::Path::new(path)).unwrap();
    assert!(s.auth.enabled);
    let r = run_and_check(&s, 1);
    for c in &r.checks {
        println!("{:<18} {:?} {}", c.name, c.passed, c.detail);
    }
    assert!(r.passed(), "{:?}", r.first_failure());
    let perms = r.checks.iter().find(|c| c.name == "v3-permissions");
    assert_eq!(perms.map(|c| c.passed), Some(Some(true)), "{perms:?}");

    let kind = |q: &h::Request| match q {
        h::Request::Range(g) if g.range_end.is_empty() => "range",
        h::Request::Range(_) => "range-all",
        h::Request::Put(_) => "put",
        h::Request::DeleteRange(_) => "delete",
        h::Request::Txn(_) => "txn",
        _ => "other",
    };
    let (mut refused, mut allowed_ok, mut stale_tokens, mut old_revision) =
        (BTreeSet::new(), BTreeSet::new(), 0, 0);
    for o in &r.out.rec.v3 {
        let Some(user) = r.out.rec.v3_users.get(&o.client) else {
            continue;
        };
        // Operations of a user whose `five` permission may be changing are left to the
        // check (they are allowed or refused by the time they ran); here only the others.
        let with = detcd_sim::v3auth::allowed_as(&s.auth, user, &o.request, true);
        let without = detcd_sim::v3auth::allowed_as(&s.auth, user, &o.request, false);
        if with != without {
            continue;
        }
        let should = with;
        match &o.outcome {
            h::Outcome::Error(e) if e.message == detcd_sim::v3auth::PERMISSION_DENIED => {
                assert!(!should, "{o:?}");
                refused.insert((user.clone(), kind(&o.request)));
            }
            h::Outcome::Error(e) if e.message == "etcdserver: invalid auth token" => {
                stale_tokens += 1
            }
            h::Outcome::Error(e) if e.message == "etcdserver: revision of auth store is old" => {
                old_revision += 1
            }
            h::Outcome::Ok(_) => {
                assert!(should, "{o:?}");
                allowed_ok.insert((user.clone(), kind(&o.request)));
            }
            _ => {}
        }
    }
    println!("refused {refused:?}\nallowed {allowed_ok:?}\n{stale_tokens} stale tokens");
    let kinds = ["range", "range-all", "put", "delete", "txn"];
    for k in kinds {
        assert!(refused.iter().any(|(_, x)| *x == k), "{k} never refused");
        assert!(allowed_ok.iter().any(|(_, x)| *x == k), "{k} never allowed");
    }
    // carol may do nothing but through `five`; bob only read; dave some of each.
    assert!(!allowed_ok.iter().any(|(u, _)| u == "carol"));
    assert!(allowed_ok.contains(&("bob".into(), "range-all")));
    assert!(refused.contains(&("bob".into(), "put")));
    assert!(allowed_ok.contains(&("dave".into(), "put")));
    assert!(refused.contains(&("dave".into(), "put")));
    assert!(stale_tokens > 0, "no client met a forgotten token");
    // The flipper changed `five` over and over; requests that raced a change were refused
    // as of an older auth revision, and carol's writes to v3/5 went through while it held.
    let changes = &r.out.rec.v3_auth_changes;
    println!(
        "{} permission changes, {old_revision} refused as of an older revision",
        changes.len()
    );
    assert!(changes.len() >= 10, "{changes:?}");
    assert!(changes.iter().all(|c| c.return_ns.is_some()), "{changes:?}");
    assert!(old_revision > 0, "no request raced a permission change");
    assert!(
        r.out
            .rec
            .v3
            .iter()
            .any(
                |o| r.out.rec.v3_users.get(&o.client).map(String::as_str) == Some("carol")
                    && matches!(o.outcome, h::Outcome::Ok(_))
                    && matches!(&o.request, h::Request::Put(p) if p.key == "v3/5")
            ),
        "carol never wrote v3/5 while `five` was granted"
    );
}
