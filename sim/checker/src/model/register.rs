//! Jepsen's single register: read, write, compare-and-set; initially absent.

use super::Model;

/// An operation on the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegInput {
    /// Read it.
    Read,
    /// Write a value.
    Write(i64),
    /// Set `to` if it holds `from`.
    Cas(i64, i64),
}

/// What an operation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegOutput {
    /// A read's value (None: absent).
    Read(Option<i64>),
    /// A write or a successful compare-and-set.
    Ok,
    /// A compare-and-set whose compare did not match.
    CasFailed,
}

/// The register model.
#[derive(Debug, Clone, Copy, Default)]
pub struct Register;

impl Model for Register {
    type State = Option<i64>;
    type Input = RegInput;
    type Output = RegOutput;

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(&self, s: &Option<i64>, i: &RegInput, o: Option<&RegOutput>) -> Vec<Option<i64>> {
        match (i, o) {
            (RegInput::Read, Some(RegOutput::Read(v))) => {
                if v == s {
                    vec![*s]
                } else {
                    vec![]
                }
            }
            (RegInput::Read, None) => vec![*s],
            (RegInput::Write(v), Some(RegOutput::Ok) | None) => vec![Some(*v)],
            (RegInput::Cas(from, to), Some(RegOutput::Ok)) => {
                if *s == Some(*from) {
                    vec![Some(*to)]
                } else {
                    vec![]
                }
            }
            (RegInput::Cas(from, _), Some(RegOutput::CasFailed)) => {
                if *s != Some(*from) {
                    vec![*s]
                } else {
                    vec![]
                }
            }
            (RegInput::Cas(from, to), None) => {
                if *s == Some(*from) {
                    vec![Some(*to)]
                } else {
                    vec![*s]
                }
            }
            _ => vec![],
        }
    }
}
