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

thread_local! {
    /// The basic-auth user and password of this run's own clients (watchers, the leader
    /// observer, the nemesis, the final checks): `root` in scenarios with auth on, none
    /// otherwise. Per run, as `CLIENT_TLS`.
    static CLIENT_AUTH: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Set how this run's clients dial: over TLS with this configuration, or plain.
pub fn set_client_tls(cfg: Option<Arc<rustls::ClientConfig>>) {
    CLIENT_TLS.with(|c| *c.borrow_mut() = cfg);
}

/// Set the credentials this run's own clients send (None: no `Authorization` header).
pub fn set_client_auth(creds: Option<(String, String)>) {
    CLIENT_AUTH.with(|c| *c.borrow_mut() = creds);
}

/// A client for `addrs` (`ip:port`), tried in that order, with `timeout` per call, with
/// the run's own credentials (if any).
pub fn client(addrs: &[String], timeout: Duration) -> Client {
    let creds = CLIENT_AUTH.with(|c| c.borrow().clone());
    client_as(addrs, timeout, creds)
}

/// A client for `addrs` acting as `creds` (basic auth; None: no credentials, the guest).
pub fn client_as(addrs: &[String], timeout: Duration, creds: Option<(String, String)>) -> Client {
    let tls = CLIENT_TLS.with(|c| c.borrow().clone());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut cfg = Config::new(addrs.iter().map(|a| format!("{scheme}://{a}")));
    cfg.timeout = timeout;
    cfg.watch_timeout = Duration::from_secs(3);
    cfg.tls = tls;
    cfg.basic_auth = creds;
    Client::new(cfg).expect("simulated endpoints are valid")
}

/// A client for one member (no failover: the workload chooses members itself).
pub fn member_client(addr: &str, timeout: Duration) -> Client {
    client(&[addr.to_string()], timeout)
}
