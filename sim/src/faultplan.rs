//! One fault model for both drivers: what a scenario's faults mean, whichever runtime applies
//! them (the simulator's nemesis, `nemesis.rs`, or `detcd-real` against processes and
//! containers, `real.rs`).
//!
//! [`plan`] turns a scenario and a seed into the run's timeline: the scenario's own faults and
//! its swarm's, in order of start time, each with its window and the seeded stream its
//! choices draw from. [`PlannedFault::choose`] picks the members a fault hits, given who leads
//! when it starts; [`hold`] is how long a fault lasts once it has begun (`duration_s = 0`: to
//! the end of the load). A driver only carries out what these decide, so one scenario file
//! means the same faults on both.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{kind_name, Fault, FaultKind, Scenario, Target};

/// The salt of the nemesis' streams (each fault's stream is drawn from it and the fault's
/// place in the timeline).
const NEMESIS_SALT: u64 = 0x4e4e;

/// A run's faults in the order they start.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// The faults, by start time (faults that start together keep the scenario's order,
    /// the swarm's after the scenario's own).
    pub faults: Vec<PlannedFault>,
    /// The end of the load, ns after its start: where a fault with `duration_s = 0` ends.
    pub load_ns: u64,
}

/// One fault of a run.
#[derive(Debug, Clone)]
pub struct PlannedFault {
    /// Its place in the timeline.
    pub index: usize,
    /// The fault as the scenario (or its swarm) wrote it.
    pub fault: Fault,
    /// When it starts, ns after the start of the load.
    pub start_ns: u64,
    /// When it ends if it starts on time (see [`hold`]).
    pub end_ns: u64,
    /// The seed of its own stream (targets, partition sides).
    seed: u64,
}

/// The timeline of a run of `s` with `seed`.
pub fn plan(s: &Scenario, seed: u64) -> FaultPlan {
    let mut faults = s.faults.clone();
    if let Some(sw) = &s.swarm {
        faults.extend(crate::scenario::swarm_faults(sw, s, seed));
    }
    faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let load_ns = (s.workload.duration_s * 1e9) as u64;
    let base = nemesis_base(seed);
    let faults = faults
        .into_iter()
        .enumerate()
        .map(|(index, fault)| {
            let start_ns = Duration::from_secs_f64(fault.at_s).as_nanos() as u64;
            PlannedFault {
                index,
                start_ns,
                end_ns: start_ns + hold(fault.duration_s, start_ns, load_ns).as_nanos() as u64,
                seed: fault_seed(base, index as u64),
                fault,
            }
        })
        .collect();
    FaultPlan { faults, load_ns }
}

/// The seed of the nemesis' base stream for a run seed.
pub fn nemesis_seed(seed: u64) -> u64 {
    crate::seed::mix(seed, 0, NEMESIS_SALT)
}

/// The base every fault's stream is drawn from: the first word of the ChaCha key that
/// `nemesis_seed` expands to (how the simulator's nemesis has always forked its streams).
fn nemesis_base(seed: u64) -> u64 {
    base_of(&ChaCha8Rng::seed_from_u64(nemesis_seed(seed)))
}

/// The first word of `rng`'s key.
pub fn base_of(rng: &ChaCha8Rng) -> u64 {
    u64::from_le_bytes(rng.get_seed()[..8].try_into().expect("8 bytes"))
}

/// The seed of stream number `salt` forked from a nemesis stream whose base is `base`.
pub fn fault_seed(base: u64, salt: u64) -> u64 {
    crate::seed::mix(base, salt, 2)
}

/// How long a fault holds once it has begun at `started_ns` (ns after the start of the load):
/// its `duration_s`, or for `duration_s = 0` until the end of the load at `load_ns` (nothing
/// if it began later).
pub fn hold(duration_s: f64, started_ns: u64, load_ns: u64) -> Duration {
    if duration_s > 0.0 {
        Duration::from_secs_f64(duration_s)
    } else {
        Duration::from_nanos(load_ns.saturating_sub(started_ns))
    }
}

/// The members a fault hits, as chosen when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chosen {
    /// One member (isolate, one-way, crash, replace, pause, clock-skew, flaky, slow-disk).
    One(usize),
    /// A minority cut off from a majority (`minority-majority`).
    Sides {
        /// The minority (`n / 2` members).
        minority: Vec<usize>,
        /// The rest.
        majority: Vec<usize>,
    },
    /// Two halves that only `bridge` sees both of.
    Bridge {
        /// The member in both halves.
        bridge: usize,
        /// One half.
        a: Vec<usize>,
        /// The other.
        b: Vec<usize>,
    },
    /// Each member keeps links only to its two ring neighbours.
    Ring,
    /// Every member (rolling restart, power loss).
    All,
}

impl Chosen {
    /// The members a fault's record names (a ring names none: it hits links, not members).
    pub fn targets(&self, n: usize) -> Vec<usize> {
        match self {
            Chosen::One(t) | Chosen::Bridge { bridge: t, .. } => vec![*t],
            Chosen::Sides { minority, .. } => minority.clone(),
            Chosen::Ring => vec![],
            Chosen::All => (0..n).collect(),
        }
    }
}

/// The links a ring of `n` members cuts: (from, to) for every pair that are not neighbours.
pub fn ring_cuts(n: usize) -> Vec<(usize, usize)> {
    let mut cuts = Vec::new();
    for i in 0..n {
        for j in 0..n {
            let d = (i + n - j) % n;
            if i != j && d != 1 && d != n - 1 {
                cuts.push((i, j));
            }
        }
    }
    cuts
}

/// Who `t` is in a cluster of `n` led by `leader`: a leader that cannot be found is a seeded
/// random member; a follower is a seeded choice among the members that do not lead.
pub fn resolve(t: &Target, n: usize, leader: Option<usize>, rng: &mut ChaCha8Rng) -> usize {
    match t {
        Target::Member(i) => *i,
        Target::Random => rng.gen_range(0..n),
        Target::Leader => match leader {
            Some(l) => l,
            None => rng.gen_range(0..n),
        },
        Target::Follower => {
            let others: Vec<usize> = (0..n).filter(|i| Some(*i) != leader).collect();
            others[rng.gen_range(0..others.len())]
        }
    }
}

/// Whether choosing the members of `kind` depends on who leads (a driver asks the cluster
/// only then).
pub fn needs_leader(kind: &FaultKind) -> bool {
    match kind {
        FaultKind::MinorityMajority { .. } => true,
        k => matches!(k.target(), Some(Target::Leader | Target::Follower)),
    }
}

/// The members `kind` hits in a cluster of `n` led by `leader`, drawn from `rng`.
pub fn choose(kind: &FaultKind, n: usize, leader: Option<usize>, rng: &mut ChaCha8Rng) -> Chosen {
    match kind {
        FaultKind::MinorityMajority { leader_in_minority } => {
            let (minority, majority) =
                crate::scenario::minority_majority(n, leader, *leader_in_minority, rng);
            Chosen::Sides { minority, majority }
        }
        FaultKind::Bridge => {
            let bridge = rng.gen_range(0..n);
            let rest: Vec<usize> = (0..n).filter(|i| *i != bridge).collect();
            let (a, b) = rest.split_at(rest.len() / 2);
            Chosen::Bridge {
                bridge,
                a: a.to_vec(),
                b: b.to_vec(),
            }
        }
        FaultKind::Ring => Chosen::Ring,
        FaultKind::RollingRestart | FaultKind::PowerLoss => Chosen::All,
        k => Chosen::One(resolve(
            k.target().expect("a single-member fault has a target"),
            n,
            leader,
            rng,
        )),
    }
}

impl PlannedFault {
    /// Its kind's name.
    pub fn kind_name(&self) -> &'static str {
        kind_name(&self.fault.kind)
    }

    /// Its own seeded stream, fresh.
    pub fn rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed)
    }

    /// Whether choosing its members depends on who leads.
    pub fn needs_leader(&self) -> bool {
        needs_leader(&self.fault.kind)
    }

    /// The members it hits in a cluster of `n` led by `leader` (its stream's first draws).
    pub fn choose(&self, n: usize, leader: Option<usize>) -> Chosen {
        choose(&self.fault.kind, n, leader, &mut self.rng())
    }
}

/// One line of a plan as a driver would carry it out: (start ns, end ns, kind, members hit).
pub type PlanLine = (u64, u64, &'static str, Vec<usize>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_of_duration_zero_lasts_to_the_end_of_the_load() {
        let s = Scenario::parse(
            "name = \"x\"\n[workload]\nduration_s = 10.0\n[[faults]]\nat_s = 4.0\nkind = \"crash\"\ntarget = \"leader\"\n[[faults]]\nat_s = 2.0\nduration_s = 1.5\nkind = \"pause\"\ntarget = \"follower\"\n",
            "x.toml",
        )
        .unwrap();
        let p = plan(&s, 1);
        let w: Vec<(u64, u64, &str)> = p
            .faults
            .iter()
            .map(|f| (f.start_ns, f.end_ns, f.kind_name()))
            .collect();
        assert_eq!(
            w,
            vec![
                (2_000_000_000, 3_500_000_000, "pause"),
                (4_000_000_000, 10_000_000_000, "crash")
            ]
        );
        assert_eq!(hold(0.0, 11_000_000_000, p.load_ns), Duration::ZERO);
    }

    #[test]
    fn a_follower_is_never_the_leader_and_a_lost_leader_is_anyone() {
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            assert_ne!(resolve(&Target::Follower, 3, Some(1), &mut rng), 1);
            assert!(resolve(&Target::Leader, 3, None, &mut rng) < 3);
            assert_eq!(resolve(&Target::Leader, 3, Some(2), &mut rng), 2);
        }
    }
}
