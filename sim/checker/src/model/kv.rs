//! Jepsen's string key-value map: get, put, append; every key initially "". Keys are
//! independent, so histories split per key.

use super::Model;

/// An operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvInput {
    /// Read the key.
    Get(String),
    /// Replace the value.
    Put(String, String),
    /// Append to the value.
    Append(String, String),
}

/// The answer (only gets carry one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// A get's value.
    Value(String),
    /// Put or append done.
    Ok,
}

/// The kv model (one key's state is its value).
#[derive(Debug, Clone, Copy, Default)]
pub struct Kv;

impl Model for Kv {
    type State = String;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> String {
        String::new()
    }

    fn step(&self, s: &String, i: &KvInput, o: Option<&KvOutput>) -> Vec<String> {
        match (i, o) {
            (KvInput::Get(_), Some(KvOutput::Value(v))) => {
                if v == s {
                    vec![s.clone()]
                } else {
                    vec![]
                }
            }
            (KvInput::Get(_), _) => vec![s.clone()],
            (KvInput::Put(_, v), _) => vec![v.clone()],
            (KvInput::Append(_, v), _) => vec![format!("{s}{v}")],
        }
    }

    fn partition_key(&self, i: &KvInput) -> Option<String> {
        Some(match i {
            KvInput::Get(k) | KvInput::Put(k, _) | KvInput::Append(k, _) => k.clone(),
        })
    }
}
