//! `detcd`: etcd's flags, ETCD_* environment variables and config file → a running member.

use std::process::ExitCode;
use std::sync::Arc;

use detcd_node::config::{self, Parsed};
use detcd_node::rt::{self, Clock};
use detcd_node::storage::FileDisk;
use detcd_node::{logging, Env};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("health") {
        return health(args.get(1).map(String::as_str));
    }
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
        probe: Default::default(),
        wal_segment_bytes: None,
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

/// `detcd health [URL]`: exit 0 if the member at URL (default: the first of
/// `ETCD_LISTEN_CLIENT_URLS`, with 0.0.0.0 read as 127.0.0.1, else http://127.0.0.1:2379)
/// answers `/health` with `{"health":"true"}`. For container health checks, where no curl
/// exists.
fn health(url: Option<&str>) -> ExitCode {
    use std::io::{Read, Write};
    let url = url.map(str::to_string).unwrap_or_else(|| {
        std::env::var("ETCD_LISTEN_CLIENT_URLS")
            .ok()
            .and_then(|v| v.split(',').next().map(str::to_string))
            .unwrap_or_else(|| "http://127.0.0.1:2379".into())
            .replace("0.0.0.0", "127.0.0.1")
    });
    let Some(hostport) = url.strip_prefix("http://").map(|r| r.trim_end_matches('/')) else {
        eprintln!("detcd health: {url}: only http:// URLs can be checked");
        return ExitCode::from(2);
    };
    let probe = || -> std::io::Result<String> {
        use std::net::ToSocketAddrs;
        let addr = hostport
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let t = std::time::Duration::from_secs(2);
        let mut s = std::net::TcpStream::connect_timeout(&addr, t)?;
        s.set_read_timeout(Some(t))?;
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    match probe() {
        Ok(r) if r.starts_with("HTTP/1.1 200") && r.contains("\"health\":\"true\"") => {
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("detcd health: {url}: {}", r.lines().next().unwrap_or(""));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("detcd health: {url}: {e}");
            ExitCode::from(1)
        }
    }
}
