//! Store properties (proptest) and response JSON snapshots (insta).

use proptest::prelude::*;

use super::*;

fn cmd(method: WriteMethod, key: &str) -> Command {
    Command {
        method,
        key: key.to_string(),
        value: String::new(),
        dir: false,
        prev_value: String::new(),
        prev_index: 0,
        prev_exist: None,
        recursive: false,
        ttl: None,
        refresh: false,
    }
}

/// A random write over a small key space (files and dirs, TTLs, compares).
fn arb_command() -> impl Strategy<Value = Command> {
    let keys = prop::sample::select(vec!["/a", "/b", "/d", "/d/x", "/d/y", "/d/e/z", "/_h"]);
    (0u8..9, keys, 0u8..4, prop::option::of(0u64..5), 0u64..40).prop_map(
        |(kind, key, v, ttl, idx)| {
            let mut c = cmd(WriteMethod::Put, key);
            c.value = format!("v{v}");
            c.ttl = ttl;
            match kind {
                0 => c.prev_exist = Some(false),
                1 => c.prev_exist = Some(true),
                2 => c.prev_value = format!("v{}", (v + 1) % 4),
                3 => c.prev_index = idx,
                4 => {
                    c.method = WriteMethod::Delete;
                    c.recursive = v % 2 == 0;
                    c.dir = v % 3 == 0;
                    c.ttl = None;
                }
                5 => {
                    c.dir = true;
                    c.value.clear();
                }
                6 => {
                    c.method = WriteMethod::Post;
                    c.key = "/q".into();
                }
                7 => {
                    c.method = WriteMethod::Delete;
                    c.prev_value = format!("v{v}");
                    c.ttl = None;
                }
                _ => {}
            }
            c
        },
    )
}

fn check_tree(n: &Node, path: &str, max_index: u64) {
    assert!(
        n.created <= n.modified,
        "{path}: created {} after modified {}",
        n.created,
        n.modified
    );
    assert!(
        n.modified <= max_index,
        "{path}: modified {} beyond the store index {max_index}",
        n.modified
    );
    if let Kind::Dir(children) = &n.kind {
        for (name, c) in children {
            check_tree(c, &node::join(path, name), max_index);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Indexes strictly increase with every successful write and never otherwise; a directory
    /// never holds a value; the same commands at the same log-clock times give the same
    /// digest; a snapshot restores to the same digest.
    #[test]
    fn random_operation_sequences_keep_the_invariants(cmds in prop::collection::vec((arb_command(), 0u64..3000), 1..60)) {
        let mut a = Store::new();
        let mut b = Store::new();
        let mut now = 1_000_000u64;
        for (c, dt) in &cmds {
            now += dt;
            let before = a.index();
            let expired = a.expire(now);
            b.expire(now);
            prop_assert_eq!(a.index(), before + expired.len() as u64);
            let before = a.index();
            let r = a.apply(c, now);
            let r2 = b.apply(c, now);
            prop_assert_eq!(r.is_ok(), r2.is_ok());
            match r {
                Ok(e) => {
                    prop_assert_eq!(a.index(), before + 1, "a successful write takes exactly one index");
                    prop_assert_eq!(e.index(), a.index());
                    prop_assert!(!(e.node.dir && e.node.value.is_some()), "a dir never holds a value: {:?}", e);
                }
                Err(err) => {
                    prop_assert_eq!(a.index(), before, "a failed write takes no index");
                    prop_assert_eq!(err.index, before);
                }
            }
            check_tree(&a.root, "/", a.index());
        }
        prop_assert_eq!(a.digest(), b.digest());
        let restored = Store::restore(&a.snapshot()).unwrap();
        prop_assert_eq!(restored.digest(), a.digest());
        prop_assert_eq!(restored.index(), a.index());
    }

    /// TTL expiry depends only on the proposed times: keys expire exactly when the log clock
    /// passes their expiration, each in its own indexed event.
    #[test]
    fn ttl_expiry_is_deterministic_given_the_proposed_times(ttls in prop::collection::vec(0u64..10, 1..8), step in 1u64..4000) {
        let mut s = Store::new();
        let t0 = 5_000_000u64;
        for (i, t) in ttls.iter().enumerate() {
            let mut c = cmd(WriteMethod::Put, &format!("/t{i}"));
            c.value = "x".into();
            c.ttl = Some(*t);
            s.apply(&c, t0).unwrap();
        }
        let mut now = t0;
        let mut expired = 0usize;
        while now < t0 + 10_000 + step {
            for e in s.expire(now) {
                prop_assert_eq!(e.action.as_str(), "expire");
                let due = e.prev.as_ref().and_then(|p| p.expiration_ms).unwrap();
                prop_assert!(due <= now && due + step > now, "expired at {now}, due {due}");
                expired += 1;
            }
            now += step;
        }
        prop_assert_eq!(expired, ttls.len());
        prop_assert!(!s.has_ttl_keys());
    }
}

#[test]
fn response_json_matches_etcd() {
    let mut s = Store::new();
    let mut c = cmd(WriteMethod::Put, "/message");
    c.value = "Hello autumn".into();
    let set = s.apply(&c, 0).unwrap();
    let mut c2 = cmd(WriteMethod::Put, "/d/k");
    c2.value = "<v&>".into();
    c2.ttl = Some(30);
    let ttl = s.apply(&c2, 1_795_920_327_361).unwrap();
    let get = s.get("/d", true, true, 1_795_920_327_361).unwrap();
    let err = s
        .apply(
            &Command {
                prev_exist: Some(false),
                ..c.clone()
            },
            0,
        )
        .unwrap_err();
    insta::assert_snapshot!(format!("{}{}{}{}", set.to_json(false), ttl.to_json(false), get.to_json(false), err.to_json()), @r#"
    {"action":"set","node":{"key":"/message","value":"Hello autumn","modifiedIndex":1,"createdIndex":1}}
    {"action":"set","node":{"key":"/d/k","value":"\u003cv\u0026\u003e","expiration":"2026-11-29T02:45:57.361Z","ttl":30,"modifiedIndex":2,"createdIndex":2}}
    {"action":"get","node":{"key":"/d","dir":true,"nodes":[{"key":"/d/k","value":"\u003cv\u0026\u003e","expiration":"2026-11-29T02:45:57.361Z","ttl":30,"modifiedIndex":2,"createdIndex":2}],"modifiedIndex":2,"createdIndex":2}}
    {"errorCode":105,"message":"Key already exists","cause":"/message","index":2}
    "#);
}
