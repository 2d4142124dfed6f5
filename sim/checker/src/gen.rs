//! Seeded generators of histories that are linearizable by construction: clients run
//! operations with random overlaps against a sequential etcd store, each operation taking
//! effect at a random instant between its call and its return. Used by the benchmark and the
//! property tests.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::etcd::{EtcdInput, EtcdOutput};
use crate::search::Op;

/// A generated etcd history: `n` operations over `keys` keys by `clients` clients, a
/// fraction `indeterminate` of them without an answer.
pub fn etcd_history(
    seed: u64,
    n: usize,
    keys: usize,
    clients: usize,
    indeterminate: f64,
) -> Vec<Op<EtcdInput, EtcdOutput>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut clock = vec![0u64; clients];
    let mut next_client = clients as u64;
    // (linearization time, client, call, ret, input, indeterminate)
    let mut planned = Vec::with_capacity(n);
    for i in 0..n {
        let c = rng.gen_range(0..clients);
        let call = clock[c] + rng.gen_range(1..10);
        let lin = call + rng.gen_range(0..20);
        let ret = lin + rng.gen_range(0..20);
        clock[c] = ret;
        let key = format!("/k/{}", rng.gen_range(0..keys));
        let value = format!("v{i}");
        let input = match rng.gen_range(0..9) {
            0 | 1 => EtcdInput::Get { key },
            2 | 3 => EtcdInput::Set { key, value },
            4 => EtcdInput::Create { key, value },
            5 => EtcdInput::Update { key, value },
            6 => EtcdInput::CasValue {
                key,
                prev: String::new(),
                value,
            },
            7 => EtcdInput::CasIndex {
                key,
                prev: 0,
                value,
            },
            _ => {
                if rng.gen_bool(0.5) {
                    EtcdInput::Delete { key }
                } else {
                    EtcdInput::Cad {
                        key,
                        prev: String::new(),
                    }
                }
            }
        };
        let indet = rng.gen_bool(indeterminate);
        planned.push((lin, c as u64, call, ret, input, indet));
    }
    planned.sort_by_key(|p| (p.0, p.1));
    let mut store: std::collections::BTreeMap<String, (String, u64)> = Default::default();
    let mut index = 0u64;
    let mut ops = Vec::with_capacity(n);
    for (_, client, call, ret, mut input, indet) in planned {
        // Aim compare-and-swaps at the current state half of the time, so both outcomes occur.
        let cur = store.get(input.key()).cloned();
        match &mut input {
            EtcdInput::CasValue { prev, .. } | EtcdInput::Cad { prev, .. } => {
                *prev = match (&cur, rng.gen_bool(0.5)) {
                    (Some((v, _)), true) => v.clone(),
                    _ => "nope".into(),
                }
            }
            EtcdInput::CasIndex { prev, .. } => {
                *prev = match (&cur, rng.gen_bool(0.5)) {
                    (Some((_, i)), true) => *i,
                    _ => 1,
                }
            }
            _ => {}
        }
        let out = apply(&mut store, &mut index, &input);
        let (client, ret, output) = if indet {
            next_client += 1;
            (next_client, None, None)
        } else {
            (client, Some(ret), Some(out))
        };
        ops.push(Op {
            client,
            call,
            ret,
            input,
            output,
        });
    }
    ops.sort_by_key(|o| o.call);
    ops
}

/// Apply one operation to a sequential etcd store; etcd's answer.
pub fn apply(
    store: &mut std::collections::BTreeMap<String, (String, u64)>,
    index: &mut u64,
    i: &EtcdInput,
) -> EtcdOutput {
    let key = i.key().to_string();
    let cur = store.get(&key).cloned();
    let ok = |v: Option<String>, idx: u64, prev: &Option<(String, u64)>| EtcdOutput::Ok {
        value: v,
        index: idx,
        prev_value: prev.as_ref().map(|p| p.0.clone()),
        prev_index: prev.as_ref().map(|p| p.1),
    };
    let mut write = |store: &mut std::collections::BTreeMap<String, (String, u64)>, v: &str| {
        *index += 1;
        store.insert(key.clone(), (v.to_string(), *index));
        *index
    };
    match i {
        EtcdInput::Get { .. } => match &cur {
            Some((v, idx)) => EtcdOutput::Ok {
                value: Some(v.clone()),
                index: *idx,
                prev_value: None,
                prev_index: None,
            },
            None => EtcdOutput::Err(100),
        },
        EtcdInput::Set { value, .. } => {
            let idx = write(store, value);
            ok(Some(value.clone()), idx, &cur)
        }
        EtcdInput::Create { value, .. } => match cur {
            Some(_) => EtcdOutput::Err(105),
            None => {
                let idx = write(store, value);
                ok(Some(value.clone()), idx, &None)
            }
        },
        EtcdInput::Update { value, .. } => match cur {
            None => EtcdOutput::Err(100),
            Some(_) => {
                let idx = write(store, value);
                ok(Some(value.clone()), idx, &cur)
            }
        },
        EtcdInput::CasValue { prev, value, .. } => match &cur {
            None => EtcdOutput::Err(100),
            Some((v, _)) if v != prev => EtcdOutput::Err(101),
            Some(_) => {
                let idx = write(store, value);
                ok(Some(value.clone()), idx, &cur)
            }
        },
        EtcdInput::CasIndex { prev, value, .. } => match &cur {
            None => EtcdOutput::Err(100),
            Some((_, i)) if i != prev => EtcdOutput::Err(101),
            Some(_) => {
                let idx = write(store, value);
                ok(Some(value.clone()), idx, &cur)
            }
        },
        EtcdInput::Refresh { .. } => match &cur {
            None => EtcdOutput::Err(100),
            Some((v, _)) => {
                let v = v.clone();
                let idx = write(store, &v);
                ok(Some(v), idx, &cur)
            }
        },
        EtcdInput::Delete { .. } | EtcdInput::Cad { .. } => match &cur {
            None => EtcdOutput::Err(100),
            Some((v, _)) if matches!(i, EtcdInput::Cad { prev, .. } if prev != v) => {
                EtcdOutput::Err(101)
            }
            Some(_) => {
                *index += 1;
                store.remove(&key);
                ok(None, *index, &cur)
            }
        },
    }
}
