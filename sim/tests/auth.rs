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
