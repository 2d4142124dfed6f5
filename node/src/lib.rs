//! detcd: an etcd-v2-compatible, Raft-replicated key-value node.
//!
//! The same source builds for real tokio (the `detcd` binary) and, with `--cfg madsim`, for
//! the deterministic simulator (`detcd-sim`). See ARCHITECTURE.md for the code map and the
//! invariants; [`rt`] is the one runtime seam.
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod failpoints;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod mvcc;
pub mod raft;
pub mod rejoin;
pub mod server;
pub mod sm;
pub mod storage;
pub mod store;
pub mod tls;
pub mod transport;
pub mod watch;

pub use detcd_rt as rt;
pub use server::{run, Env, NodeError};
