//! Two simulated hosts joined by one link, for the tests of the vendored madsim's TCP model
//! (`partition_heal.rs`, `tcp_window.rs`, `exact_delays.rs`).

use std::future::Future;
use std::time::Duration;

use madsim::runtime::NodeHandle;

/// Where the receiving host listens.
pub const RECEIVER: &str = "10.0.0.2:2380";

/// The receiving host (10.0.0.2) and the sending host (10.0.0.1), made in that order.
pub fn two_hosts() -> (NodeHandle, NodeHandle) {
    let handle = madsim::runtime::Handle::current();
    let receiver = handle
        .create_node()
        .name("receiver")
        .ip("10.0.0.2".parse().unwrap())
        .build();
    let sender = handle
        .create_node()
        .name("sender")
        .ip("10.0.0.1".parse().unwrap())
        .build();
    (receiver, sender)
}

/// Run `body` in a simulation of `seed` whose network delays each message 100-500 µs, on a
/// thread of its own (madsim's runtime is per thread); a panic in it fails the caller.
#[allow(dead_code)] // not every test file uses every helper
pub fn simulate<T, Fut>(seed: u64, body: impl FnOnce() -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    simulate_with(seed, false, body)
}

/// [`simulate`], with the network's delays exact (`madsim::net::Config::exact_delays`) or
/// not.
pub fn simulate_with<T, Fut>(
    seed: u64,
    exact_delays: bool,
    body: impl FnOnce() -> Fut + Send + 'static,
) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    std::thread::spawn(move || {
        let mut config = madsim::Config::default();
        config.net.send_latency = Duration::from_micros(100)..Duration::from_micros(500);
        config.net.exact_delays = exact_delays;
        madsim::runtime::Runtime::with_seed_and_config(seed, config).block_on(body())
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}
