//! Failpoints and invariants: the node's named points where a harness may act, and the
//! node's own assertions, reported to the harness with the member that broke them.
//!
//! A [`Probe`] travels with a member (through its `Env`). In production it is an empty
//! value and [`Probe::failpoint`] compiles to nothing; under the simulator the harness
//! installs a [`ProbeHandler`] that counts every hit and may crash or pause the member right
//! there (the window between a write and its fsync, between an apply and its answer), as
//! etcd's robustness tests do with gofail and FoundationDB with BUGGIFY.
//!
//! [`Probe::invariant`] is an assertion that is always on: when it fails it tells the
//! harness (which names the member and the invariant in a check of its own) and then panics,
//! as `assert!` would.
//!
//! [`Probe::effect`] narrates what the Ready loop does to the outside world (persist, send,
//! apply, answer), for the golden-trace test of the loop's order of effects.
//!
//! A handler can be installed only under the simulator, or with this crate's
//! `probe-handler` feature, which the node's tests turn on (a dev-dependency feature: the
//! `detcd` binary is built without it, and every call here compiles to nothing).

#[cfg(any(madsim, feature = "probe-handler"))]
use std::sync::Arc;

/// What a harness does at failpoints and when an invariant breaks.
#[cfg(any(madsim, feature = "probe-handler"))]
pub trait ProbeHandler: Send + Sync {
    /// The member reached the failpoint `name`. The handler may crash or pause the member
    /// before this returns (the rest of the member's current step then has no effect
    /// outside it).
    fn hit(&self, name: &'static str);
    /// The invariant `name` broke on this member; the member panics right after.
    fn violated(&self, name: &'static str, detail: &str);
    /// Whether this handler listens to [`Probe::effect`] (the description is only built
    /// then: the simulator's handler does not, and pays nothing for it).
    fn wants_effects(&self) -> bool {
        false
    }
    /// The member did something the outside world sees (see [`Probe::effect`]).
    fn effect(&self, _what: &str) {}
    /// The member applied the Raft entry at `index` (see [`Probe::applied`]).
    fn applied(&self, _index: u64, _term: u64, _data: &[u8]) {}
}

/// A member's failpoints and invariant reports. Cloning shares the handler.
#[derive(Clone, Default)]
pub struct Probe {
    #[cfg(any(madsim, feature = "probe-handler"))]
    handler: Option<Arc<dyn ProbeHandler>>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl Probe {
    /// A probe that reports to `handler`.
    #[cfg(any(madsim, feature = "probe-handler"))]
    pub fn with_handler(handler: Arc<dyn ProbeHandler>) -> Probe {
        Probe {
            handler: Some(handler),
        }
    }

    /// The member reached the failpoint `name` (one of the node's named points). Nothing
    /// outside the simulator.
    #[inline(always)]
    pub fn failpoint(&self, name: &'static str) {
        #[cfg(any(madsim, feature = "probe-handler"))]
        if let Some(h) = &self.handler {
            h.hit(name);
        }
        #[cfg(not(any(madsim, feature = "probe-handler")))]
        let _ = name;
    }

    /// The member did something the outside world sees: `what()` describes it (only
    /// evaluated when a handler listens).
    #[inline(always)]
    pub fn effect(&self, what: impl FnOnce() -> String) {
        #[cfg(any(madsim, feature = "probe-handler"))]
        if let Some(h) = self.handler.as_ref().filter(|h| h.wants_effects()) {
            h.effect(&what());
        }
        #[cfg(not(any(madsim, feature = "probe-handler")))]
        let _ = what;
    }

    /// The member applied the Raft entry at `index` (its term and bytes), for the harness to
    /// check that every member applies the same entry at each index (Raft's state machine
    /// safety; a member that applied a damaged copy breaks it). Nothing outside the simulator.
    #[inline(always)]
    pub fn applied(&self, index: u64, term: u64, data: &[u8]) {
        #[cfg(any(madsim, feature = "probe-handler"))]
        if let Some(h) = &self.handler {
            h.applied(index, term, data);
        }
        #[cfg(not(any(madsim, feature = "probe-handler")))]
        let _ = (index, term, data);
    }

    /// An invariant that must hold: if `holds` is false, the harness is told (with
    /// `detail()`) and the member panics with "invariant <name> violated: <detail>".
    #[inline]
    #[track_caller]
    pub fn invariant(&self, holds: bool, name: &'static str, detail: impl FnOnce() -> String) {
        if !holds {
            self.violated(name, detail())
        }
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn violated(&self, name: &'static str, detail: String) -> ! {
        #[cfg(any(madsim, feature = "probe-handler"))]
        if let Some(h) = &self.handler {
            h.violated(name, &detail);
        }
        panic!("invariant {name} violated: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_invariant_panics_with_its_name() {
        let p = Probe::default();
        p.invariant(true, "fine", || unreachable!());
        p.failpoint("anything");
        let broken =
            std::panic::AssertUnwindSafe(|| p.invariant(false, "order", || "3 after 5".into()));
        let e = std::panic::catch_unwind(broken).unwrap_err();
        let msg = e.downcast_ref::<String>().unwrap();
        assert_eq!(msg, "invariant order violated: 3 after 5");
    }
}
