//! Models: pure functions from (state, input, output) to the possible next states.
//!
//! A model is *nondeterministic* when an operation's effect depends on something the history
//! does not say (an indeterminate write whose index nobody saw); `step` then returns every
//! possible next state and the search follows them all, as Porcupine's power-set
//! construction does.

use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification.
pub trait Model: Sync {
    /// A state of the object.
    type State: Clone + Eq + Hash + Ord + Debug + Send;
    /// An operation's input.
    type Input: Clone + Debug + Sync;
    /// An operation's output (None: the operation is indeterminate — it may have taken
    /// effect with any result, or not at all).
    type Output: Clone + Debug + Sync;

    /// The initial state.
    fn init(&self) -> Self::State;

    /// The states the object may be in after `input` answered `output` in `state`; empty
    /// when that answer is impossible.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Vec<Self::State>;

    /// The partition key of an operation (operations on different keys are independent);
    /// None for a model that cannot be split.
    fn partition_key(&self, _input: &Self::Input) -> Option<String> {
        None
    }

    /// A one-line description of an operation, for reports.
    fn describe(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        format!(
            "{input:?} -> {}",
            output
                .map(|o| format!("{o:?}"))
                .unwrap_or_else(|| "?".into())
        )
    }
}

pub mod etcd;
pub mod kv;
pub mod register;
