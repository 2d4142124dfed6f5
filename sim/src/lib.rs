//! detcd-sim: the real detcd node inside madsim, one simulated machine per member, under a
//! seeded nemesis and client load, with the history checked at the end — and the same
//! scenarios, workload, checks and reports against real containers (`detcd-real`).
//!
//! The simulator's modules only build with `--cfg madsim` (use `cargo sim ...`); the
//! scenario format, workload, history, checks and reports build for both runtimes, and the
//! container runner ([`real`]) only without the cfg.
#![warn(missing_docs)]

pub mod availability;
pub mod client;
pub mod failure;
pub mod faultplan;
pub mod final_checks;
pub mod history;
pub mod html;
pub mod locks;
pub mod outcome;
pub mod output;
pub mod permissions;
pub mod registry;
pub mod report;
pub mod scenario;
pub mod seed;
pub mod shards;
pub mod v3auth;
pub mod v3load;
pub mod workload;

#[cfg(madsim)]
pub mod cli;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod disk;
#[cfg(madsim)]
pub mod failpoints;
#[cfg(madsim)]
pub mod intruders;
#[cfg(madsim)]
pub mod nemesis;
#[cfg(madsim)]
pub mod pki;
#[cfg(madsim)]
pub mod run;
#[cfg(madsim)]
pub mod shrink;
#[cfg(madsim)]
pub mod sweep;

#[cfg(not(madsim))]
pub mod real;
#[cfg(not(madsim))]
pub mod v3bench;
