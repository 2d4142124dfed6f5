//! The etcd v2 model of detcd's workload, per key: the key is absent or holds a value with
//! its modifiedIndex. Outputs carry modifiedIndex, so the model checks indexes too: a read
//! must return exactly the current value and index, and a write's new index must exceed the
//! key's previous one. An indeterminate write leaves the index unknown (`None`) until a
//! later answer reveals it.

use serde::{Deserialize, Serialize};

use super::Model;

/// An etcd v2 operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "f")]
pub enum EtcdInput {
    /// `GET ?quorum=true`.
    Get {
        /// Key.
        key: String,
    },
    /// `PUT value`.
    Set {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// `PUT prevExist=false`.
    Create {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// `PUT prevExist=true`.
    Update {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// `PUT prevValue=`.
    CasValue {
        /// Key.
        key: String,
        /// Expected value.
        prev: String,
        /// New value.
        value: String,
    },
    /// `PUT prevIndex=`.
    CasIndex {
        /// Key.
        key: String,
        /// Expected modifiedIndex.
        prev: u64,
        /// New value.
        value: String,
    },
    /// `DELETE`.
    Delete {
        /// Key.
        key: String,
    },
    /// `DELETE prevValue=`.
    Cad {
        /// Key.
        key: String,
        /// Expected value.
        prev: String,
    },
    /// `PUT refresh=true&prevExist=true&ttl=` with no value: the key keeps its value and
    /// gets a new modifiedIndex (and TTL); error 100 when it does not exist.
    Refresh {
        /// Key.
        key: String,
    },
}

impl EtcdInput {
    /// The key.
    pub fn key(&self) -> &str {
        match self {
            EtcdInput::Get { key }
            | EtcdInput::Set { key, .. }
            | EtcdInput::Create { key, .. }
            | EtcdInput::Update { key, .. }
            | EtcdInput::CasValue { key, .. }
            | EtcdInput::CasIndex { key, .. }
            | EtcdInput::Delete { key }
            | EtcdInput::Cad { key, .. }
            | EtcdInput::Refresh { key } => key,
        }
    }

    /// Whether it writes.
    pub fn is_write(&self) -> bool {
        !matches!(self, EtcdInput::Get { .. })
    }
}

/// What an etcd operation answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EtcdOutput {
    /// Success: the node's value (None for deletes) and modifiedIndex, and the previous
    /// node's value and modifiedIndex when the answer had one.
    Ok {
        /// Value.
        value: Option<String>,
        /// modifiedIndex.
        index: u64,
        /// prevNode value.
        prev_value: Option<String>,
        /// prevNode modifiedIndex.
        prev_index: Option<u64>,
    },
    /// etcd error code (100 not found, 101 compare failed, 105 exists).
    Err(u32),
}

/// A key's state: absent, or a value and its modifiedIndex (None = not yet known).
pub type KeyState = Option<(String, Option<u64>)>;

/// The etcd v2 model.
#[derive(Debug, Clone, Copy, Default)]
pub struct Etcd;

fn index_ok(known: Option<u64>, seen: u64) -> bool {
    known.is_none_or(|k| k == seen)
}

/// Whether a success answer's prevNode agrees with the state it replaced.
fn prev_ok(s: &KeyState, pv: &Option<String>, pi: &Option<u64>) -> bool {
    match (s, pv, pi) {
        (None, None, None) => true,
        (Some((v, i)), Some(pv2), Some(pi2)) => v == pv2 && index_ok(*i, *pi2),
        // Answers without a prevNode where one existed (or the reverse) are impossible.
        _ => false,
    }
}

fn newer(s: &KeyState, index: u64) -> bool {
    match s {
        Some((_, Some(i))) => index > *i,
        _ => true,
    }
}

impl Model for Etcd {
    type State = KeyState;
    type Input = EtcdInput;
    type Output = EtcdOutput;

    fn init(&self) -> KeyState {
        None
    }

    fn step(&self, s: &KeyState, i: &EtcdInput, o: Option<&EtcdOutput>) -> Vec<KeyState> {
        use EtcdInput as I;
        use EtcdOutput as O;
        let exists = s.is_some();
        let cur_val = s.as_ref().map(|(v, _)| v.as_str());
        let written = |v: &str, idx: Option<u64>| Some((v.to_string(), idx));
        match o {
            // Indeterminate: it happened (with its natural effect) or it did not. "Did not"
            // is equivalent to linearizing it last, which the search always may.
            None => match i {
                I::Get { .. } => vec![s.clone()],
                I::Set { value, .. } => vec![written(value, None)],
                I::Create { value, .. } => vec![if exists {
                    s.clone()
                } else {
                    written(value, None)
                }],
                I::Update { value, .. } => vec![if exists { written(value, None) } else { None }],
                I::CasValue { prev, value, .. } => {
                    vec![if cur_val == Some(prev.as_str()) {
                        written(value, None)
                    } else {
                        s.clone()
                    }]
                }
                I::CasIndex { prev, value, .. } => match s {
                    Some((_, Some(idx))) if idx == prev => vec![written(value, None)],
                    Some((_, None)) => vec![s.clone(), written(value, None)],
                    _ => vec![s.clone()],
                },
                I::Delete { .. } => vec![None],
                // Same value, a new index nobody saw.
                I::Refresh { .. } => vec![match s {
                    Some((v, _)) => written(v, None),
                    None => None,
                }],
                I::Cad { prev, .. } => vec![if cur_val == Some(prev.as_str()) {
                    None
                } else {
                    s.clone()
                }],
            },
            Some(O::Err(code)) => {
                let ok = match (i, code) {
                    (_, 100) => !exists,
                    (I::Create { .. }, 105) => exists,
                    (I::CasValue { prev, .. } | I::Cad { prev, .. }, 101) => {
                        exists && cur_val != Some(prev.as_str())
                    }
                    (I::CasIndex { prev, .. }, 101) => match s {
                        Some((_, Some(idx))) => idx != prev,
                        Some((_, None)) => true,
                        None => false,
                    },
                    _ => false,
                };
                if ok {
                    vec![s.clone()]
                } else {
                    vec![]
                }
            }
            Some(O::Ok {
                value,
                index,
                prev_value,
                prev_index,
            }) => {
                let idx = *index;
                let ok = match i {
                    I::Get { .. } => {
                        return match s {
                            Some((v, known))
                                if Some(v) == value.as_ref() && index_ok(*known, idx) =>
                            {
                                vec![Some((v.clone(), Some(idx)))]
                            }
                            _ => vec![],
                        }
                    }
                    // The value it kept is the key's: a refresh never writes one.
                    I::Refresh { .. } => {
                        exists
                            && value.as_deref() == cur_val
                            && newer(s, idx)
                            && prev_ok(s, prev_value, prev_index)
                    }
                    I::Set { value: v, .. } => {
                        value.as_deref() == Some(v)
                            && newer(s, idx)
                            && prev_ok(s, prev_value, prev_index)
                    }
                    I::Create { value: v, .. } => !exists && value.as_deref() == Some(v),
                    I::Update { value: v, .. }
                    | I::CasValue { value: v, .. }
                    | I::CasIndex { value: v, .. } => {
                        exists
                            && value.as_deref() == Some(v)
                            && newer(s, idx)
                            && prev_ok(s, prev_value, prev_index)
                            && match i {
                                I::CasValue { prev, .. } => cur_val == Some(prev.as_str()),
                                I::CasIndex { prev, .. } => prev_index.as_ref() == Some(prev),
                                _ => true,
                            }
                    }
                    I::Delete { .. } => {
                        exists && newer(s, idx) && prev_ok(s, prev_value, prev_index)
                    }
                    I::Cad { prev, .. } => {
                        exists
                            && cur_val == Some(prev.as_str())
                            && newer(s, idx)
                            && prev_ok(s, prev_value, prev_index)
                    }
                };
                if !ok {
                    return vec![];
                }
                match i {
                    I::Delete { .. } | I::Cad { .. } => vec![None],
                    _ => vec![Some((value.clone().unwrap_or_default(), Some(idx)))],
                }
            }
        }
    }

    fn partition_key(&self, i: &EtcdInput) -> Option<String> {
        Some(i.key().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: &str, index: u64, prev: Option<(&str, u64)>) -> EtcdOutput {
        EtcdOutput::Ok {
            value: Some(value.into()),
            index,
            prev_value: prev.map(|p| p.0.into()),
            prev_index: prev.map(|p| p.1),
        }
    }

    #[test]
    fn a_refresh_keeps_the_value_and_moves_the_index() {
        let r = EtcdInput::Refresh { key: "/k".into() };
        let s: KeyState = Some(("v".into(), Some(3)));
        // Answered: the kept value at a newer index, prevNode the old state.
        assert_eq!(
            Etcd.step(&s, &r, Some(&ok("v", 5, Some(("v", 3))))),
            vec![Some(("v".into(), Some(5)))]
        );
        // Another value, an older index, or a missing prevNode: impossible.
        assert!(Etcd
            .step(&s, &r, Some(&ok("w", 5, Some(("v", 3)))))
            .is_empty());
        assert!(Etcd
            .step(&s, &r, Some(&ok("v", 3, Some(("v", 3)))))
            .is_empty());
        assert!(Etcd.step(&s, &r, Some(&ok("v", 5, None))).is_empty());
        // Not found only when absent; no answer: same value, index unknown.
        assert!(Etcd.step(&s, &r, Some(&EtcdOutput::Err(100))).is_empty());
        assert_eq!(
            Etcd.step(&None, &r, Some(&EtcdOutput::Err(100))),
            vec![None]
        );
        assert_eq!(Etcd.step(&s, &r, None), vec![Some(("v".into(), None))]);
        assert_eq!(Etcd.step(&None, &r, None), vec![None]);
    }
}
