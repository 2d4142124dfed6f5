//! How the harness talks to members: through `detcd-client`, the client users run, over
//! madsim's TCP (and TLS in `tls = true` scenarios).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use detcd_client::{Client, Config};

thread_local! {
    /// The TLS configuration of this run's clients (`tls = true` scenarios). Each run has
    /// its own thread (madsim runs a simulation on the thread that starts it), so this is
    /// per run, not shared between runs.
    static CLIENT_TLS: RefCell<Option<Arc<rustls::ClientConfig>>> = const { RefCell::new(None) };
}

/// Set how this run's clients dial: over TLS with this configuration, or plain.
pub fn set_client_tls(cfg: Option<Arc<rustls::ClientConfig>>) {
    CLIENT_TLS.with(|c| *c.borrow_mut() = cfg);
}

/// A client for `addrs` (`ip:port`), tried in that order, with `timeout` per call.
pub fn client(addrs: &[String], timeout: Duration) -> Client {
    let tls = CLIENT_TLS.with(|c| c.borrow().clone());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut cfg = Config::new(addrs.iter().map(|a| format!("{scheme}://{a}")));
    cfg.timeout = timeout;
    cfg.watch_timeout = Duration::from_secs(3);
    cfg.tls = tls;
    Client::new(cfg).expect("simulated endpoints are valid")
}

/// A client for one member (no failover: the workload chooses members itself).
pub fn member_client(addr: &str, timeout: Duration) -> Client {
    client(&[addr.to_string()], timeout)
}
