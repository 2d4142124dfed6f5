//! The registry load: service instances registered with detcd-client's `register` (TTL keys
//! kept alive by refreshes), callers following them with `watch_service` and calling the
//! instance `pick()` chooses, instances that crash and weights that change at seeded times.
//!
//! Its check says how long each crashed instance kept receiving calls (the time from its
//! crash to the last call picked for it): it must stay within the TTL plus `grace_s`, and
//! every instance that never crashed must still be called at the end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::output::Check;
use crate::scenario::{FaultKind, Scenario};

/// A seeded plan: weights, crashes, weight changes (all times in ns after the start).
struct Plan {
    weights: Vec<u32>,
    crash_at: BTreeMap<usize, u64>,
    changes: Vec<(u64, usize, u32)>,
}

fn plan(s: &Scenario, seed: u64) -> Plan {
    let r = &s.registry;
    let mut rng = ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, 0, 0x5e41));
    let dur = (s.workload.duration_s * 1e9) as u64;
    let weights = (0..r.instances).map(|_| rng.gen_range(1..=10)).collect();
    // Crashes early enough that the check's bound ends inside the run (a second to spare):
    // a crashed instance still called at the end of the run is then caught, not excused.
    let bound = bound(s, seed) + Duration::from_secs(1);
    let latest = (dur * 3 / 5)
        .min(dur.saturating_sub(bound.as_nanos() as u64))
        .max(dur / 5);
    let mut crash_at = BTreeMap::new();
    while crash_at.len() < r.crashes {
        let i = rng.gen_range(0..r.instances);
        let at = rng.gen_range(dur / 5..=latest);
        crash_at.entry(i).or_insert(at);
    }
    let mut changes: Vec<(u64, usize, u32)> = (0..r.weight_changes)
        .map(|_| {
            (
                rng.gen_range(dur / 10..=dur * 4 / 5),
                rng.gen_range(0..r.instances),
                rng.gen_range(1..=10),
            )
        })
        .collect();
    changes.sort();
    Plan {
        weights,
        crash_at,
        changes,
    }
}

fn name(i: usize) -> String {
    format!("i{i}")
}

/// Run the registry load from `start` to `end` and judge it.
pub async fn run(
    s: Arc<Scenario>,
    addrs: Vec<String>,
    seed: u64,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
) -> Check {
    let r = s.registry.clone();
    let p = plan(&s, seed);
    let ttl = Duration::from_secs(r.ttl_s);
    let at = move |ns: u64| start + Duration::from_nanos(ns);
    let since = move || start.elapsed().as_nanos() as u64;

    // Instances: register, change weight, crash — each on its own schedule.
    let mut instances = Vec::new();
    for i in 0..r.instances {
        let c = crate::client::client(&rotate(&addrs, i), Duration::from_secs(2));
        let weight = p.weights[i];
        let crash = p.crash_at.get(&i).copied();
        let changes: Vec<(u64, u32)> = p
            .changes
            .iter()
            .filter(|(_, j, _)| *j == i)
            .map(|(t, _, w)| (*t, *w))
            .collect();
        instances.push(tokio::spawn(async move {
            let reg = loop {
                match detcd_client::register(
                    &c,
                    "svc",
                    &name(i),
                    &format!("10.0.9.{i}:80"),
                    weight,
                    ttl,
                )
                .await
                {
                    Ok(reg) => break reg,
                    Err(e) => {
                        tracing::debug!(instance = i, error = %e, "registering: retry");
                        detcd_node::rt::sleep(Duration::from_millis(200)).await;
                        if tokio::time::Instant::now() >= end {
                            return;
                        }
                    }
                }
            };
            for (t, w) in changes {
                if crash.is_some_and(|c| c <= t) {
                    break;
                }
                detcd_node::rt::sleep_until(at(t)).await;
                reg.set_weight(w);
            }
            match crash {
                Some(c) => {
                    detcd_node::rt::sleep_until(at(c)).await;
                    reg.abandon();
                }
                None => {
                    detcd_node::rt::sleep_until(end).await;
                    reg.abandon();
                }
            }
        }));
    }

    // Callers: follow the service, call by weight.
    let calls: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let mut callers = Vec::new();
    for k in 0..r.callers {
        let c = crate::client::client(&rotate(&addrs, k + 1), Duration::from_secs(2));
        let calls = calls.clone();
        let period = Duration::from_nanos(1_000_000_000 / r.call_rate);
        callers.push(tokio::spawn(async move {
            let w = loop {
                match detcd_client::watch_service(&c, "svc").await {
                    Ok(w) => break w,
                    Err(_) if tokio::time::Instant::now() < end => {
                        detcd_node::rt::sleep(Duration::from_millis(200)).await;
                    }
                    Err(_) => return,
                }
            };
            let mut tick = detcd_node::rt::interval(period);
            while tokio::time::Instant::now() < end {
                tick.tick().await;
                if let Some(inst) = w.pick() {
                    calls.lock().unwrap().push((since(), inst.name));
                }
            }
        }));
    }
    for t in instances.into_iter().chain(callers) {
        let _ = t.await;
    }

    let calls = std::mem::take(&mut *calls.lock().unwrap());
    let skew = skew_ahead(&s, seed);
    let bound = bound(&s, seed);
    let mut parts = Vec::new();
    let mut ok = !calls.is_empty();
    let mut last_crash = 0u64;
    for (i, c) in &p.crash_at {
        let last = calls
            .iter()
            .filter(|(t, n)| *n == name(*i) && *t >= *c)
            .map(|(t, _)| *t)
            .max();
        let lag = last.map_or(0, |l| l - c);
        let within = Duration::from_nanos(lag) <= bound;
        ok &= within;
        last_crash = last_crash.max(*c);
        parts.push(format!(
            "{} crashed at {:.2} s, called for {:.2} s after{}",
            name(*i),
            *c as f64 / 1e9,
            lag as f64 / 1e9,
            if within { "" } else { " (too long)" }
        ));
    }
    // Every instance that never crashed is still called once the crashes have settled.
    let settled = last_crash + bound.as_nanos() as u64;
    let live: Vec<usize> = (0..r.instances)
        .filter(|i| !p.crash_at.contains_key(i))
        .collect();
    let dur = (s.workload.duration_s * 1e9) as u64;
    if settled < dur {
        let missing: Vec<String> = live
            .iter()
            .filter(|i| !calls.iter().any(|(t, n)| *n == name(**i) && *t >= settled))
            .map(|i| name(*i))
            .collect();
        if missing.is_empty() {
            parts.push(format!(
                "all {} live instances called after {:.2} s",
                live.len(),
                settled as f64 / 1e9
            ));
        } else {
            ok = false;
            parts.push(format!(
                "live instances never called after {:.2} s: {}",
                settled as f64 / 1e9,
                missing.join(", ")
            ));
        }
    }
    Check {
        name: "registry".into(),
        passed: Some(ok),
        detail: format!(
            "{} calls by {} callers; {}; bound TTL {} s + {} s + clock skew {:.1} s",
            calls.len(),
            r.callers,
            if parts.is_empty() {
                "no crashes".to_string()
            } else {
                parts.join("; ")
            },
            r.ttl_s,
            r.grace_s,
            skew.as_secs_f64()
        ),
    }
}

/// `addrs` starting at `k` (spreads clients over members; failover goes round).
fn rotate(addrs: &[String], k: usize) -> Vec<String> {
    (0..addrs.len())
        .map(|i| addrs[(k + i) % addrs.len()].clone())
        .collect()
}

/// The furthest any member's clock runs ahead during the run (offsets, and drift over the
/// fault's length).
/// How long a crashed instance may still be called: its TTL, the grace, and the largest
/// clock skew ahead. TTLs are measured on the leader's clock (in etcd on the clock of the
/// member that took the write): a leader whose clock ran ahead gives keys that much longer to
/// live once a leader with a true clock takes over.
fn bound(s: &Scenario, seed: u64) -> Duration {
    Duration::from_secs(s.registry.ttl_s)
        + Duration::from_secs_f64(s.registry.grace_s)
        + skew_ahead(s, seed)
}

fn skew_ahead(s: &Scenario, seed: u64) -> Duration {
    let mut faults = s.faults.clone();
    if let Some(sw) = &s.swarm {
        faults.extend(crate::scenario::swarm_faults(sw, s, seed));
    }
    let ms = faults
        .iter()
        .filter_map(|f| match &f.kind {
            FaultKind::ClockSkew {
                offset_ms,
                drift_ppm,
                ..
            } => {
                let len = if f.duration_s > 0.0 {
                    f.duration_s
                } else {
                    s.workload.duration_s
                };
                let drift = (*drift_ppm as f64 * len * 1e3 / 1e6).max(0.0);
                Some((*offset_ms).max(0) as f64 + drift)
            }
            _ => None,
        })
        .fold(0.0f64, f64::max);
    Duration::from_secs_f64(ms / 1e3)
}
