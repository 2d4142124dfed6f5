//! detcd-sim: the real detcd node inside madsim, one simulated machine per member, under a
//! seeded nemesis and client load, with the history checked at the end.
//!
//! This crate only builds with `--cfg madsim` (use `cargo sim ...`); the `check` subcommand's
//! checker lives in the `detcd-checker` crate, which needs no simulator.
#![warn(missing_docs)]
#![cfg(madsim)]

pub mod cli;
pub mod client;
pub mod cluster;
pub mod disk;
pub mod history;
pub mod html;
pub mod nemesis;
pub mod outcome;
pub mod pki;
pub mod registry;
pub mod report;
pub mod run;
pub mod scenario;
pub mod shrink;
pub mod sweep;
pub mod workload;
