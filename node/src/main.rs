//! `detcd`: etcd's flags, ETCD_* environment variables and config file → a running member.

use std::process::ExitCode;
use std::sync::Arc;

use detcd_node::config::{self, Parsed};
use detcd_node::rt::{self, Clock};
use detcd_node::storage::FileDisk;
use detcd_node::{logging, Env};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = |k: &str| std::env::var(k).ok();
    let read = |p: &std::path::Path| std::fs::read_to_string(p);
    let parsed = match config::parse(&args, &env, &read) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("detcd: {e}");
            return ExitCode::from(2);
        }
    };
    let (cfg, warnings) = match parsed {
        Parsed::Version => {
            println!(
                "detcd Version: {}\netcd API Version: 3.4.23\nAPI Version: 2",
                env!("CARGO_PKG_VERSION")
            );
            return ExitCode::SUCCESS;
        }
        Parsed::Help(text) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Parsed::Run(cfg, warnings) => (*cfg, warnings),
    };
    let mut cfg = cfg;
    if cfg.discovery_srv.is_some() && cfg.discovery_dns.is_none() {
        // The system's resolver, read here at start (the node itself reads no files).
        cfg.discovery_dns = std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|t| {
                t.lines()
                    .filter_map(|l| l.trim().strip_prefix("nameserver"))
                    .map(|s| s.trim().to_string())
                    .next()
            });
    }
    if let Err(e) = logging::init(&cfg) {
        eprintln!("detcd: {e}");
        return ExitCode::from(2);
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
    // The seed drives election timeouts and request ids. Request ids must differ between
    // incarnations of a member (the state machine deduplicates by id), so production mixes
    // the start time into it; this binary is never run by the simulator, which seeds members
    // itself, so reading the wall clock here is safe.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = cfg
        .rng_seed
        .unwrap_or_else(|| seed_from_name(&cfg.name) ^ started);
    // Certificates are read here, before anything starts: a missing, unreadable or
    // mismatched file stops the member with one line that names it.
    let tls = match detcd_node::tls::load(&cfg, &|p| std::fs::read(p)) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("detcd: {e}");
            return ExitCode::from(1);
        }
    };
    let env = Env {
        disk: Arc::new(FileDisk),
        tls,
        clock: Clock::new(),
        seed,
        on_start: None,
    };
    match rt::block_on(detcd_node::run(cfg, env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("detcd: {e}");
            ExitCode::from(1)
        }
    }
}

fn seed_from_name(name: &str) -> u64 {
    // FNV-1a: stable across builds and platforms.
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
