//! The checks both drivers make of the cluster after the final heal: liveness (a write and a
//! quorum read are served again) and convergence (every member holds the same store). One
//! routine each, for both runtimes; a driver says only how to reach its members.

use std::future::Future;
use std::time::Duration;

use crate::output::Check;

/// After the final heal a leader must serve a quorum read and a write within `limit`:
/// `members` are each member's name and client address, tried in turn.
pub async fn liveness(members: &[(String, String)], limit: Duration) -> Check {
    let start = tokio::time::Instant::now();
    let end = start + limit;
    let mut i = 0usize;
    let mut last_err = String::from("no attempt");
    while tokio::time::Instant::now() < end {
        let (name, addr) = &members[i % members.len()];
        i += 1;
        let c = crate::client::member_client(addr, Duration::from_secs(2));
        let w = c
            .set("/liveness", "ok", detcd_client::SetOptions::default())
            .await;
        match w {
            Ok(_) => {
                let o = detcd_client::GetOptions {
                    quorum: true,
                    ..Default::default()
                };
                let q = c.get("/liveness", o).await;
                if q.is_ok() {
                    return Check {
                        name: "liveness".into(),
                        passed: Some(true),
                        detail: format!(
                            "write and quorum read served {} ms after the heal",
                            start.elapsed().as_millis()
                        ),
                    };
                }
                last_err = format!("quorum read on {name}: {}", q.unwrap_err());
            }
            Err(e) => last_err = format!("write on {name}: {e}"),
        }
        detcd_node::rt::sleep(Duration::from_millis(100)).await;
    }
    Check {
        name: "liveness".into(),
        passed: Some(false),
        detail: format!(
            "no write + quorum read within {} s of the heal (last: {last_err})",
            limit.as_secs_f64()
        ),
    }
}

/// How a driver sees its members' stores, for [`convergence`].
pub trait Stores {
    /// What one member's store looks like.
    type State;
    /// Every member's state now (None: it could not be had).
    fn states(&self) -> impl Future<Output = Vec<Option<Self::State>>>;
    /// Whether two members hold the same store.
    fn same(a: &Self::State, b: &Self::State) -> bool;
    /// The detail when all `n` members agree on `s`.
    fn agreed(n: usize, s: &Self::State) -> String;
    /// The members' states when they differ (what is compared, then the states).
    fn differ(states: &[Option<Self::State>]) -> String;
}

/// All members reach the same store within `limit`, asked every `every`.
pub async fn convergence<S: Stores>(stores: &S, limit: Duration, every: Duration) -> Check {
    let end = tokio::time::Instant::now() + limit;
    let mut last = String::new();
    while tokio::time::Instant::now() < end {
        let states = stores.states().await;
        if let Some(Some(first)) = states.first() {
            if states
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| S::same(s, first)))
            {
                return Check {
                    name: "convergence".into(),
                    passed: Some(true),
                    detail: S::agreed(states.len(), first),
                };
            }
        }
        last = S::differ(&states);
        detcd_node::rt::sleep(every).await;
    }
    Check {
        name: "convergence".into(),
        passed: Some(false),
        detail: format!("members differ {last}"),
    }
}
