//! Service registration and weighted discovery — why the seed tutorial's microservices run
//! etcd at all. An instance of service `S` lives at `/services/S/<instance>` with the value
//! `{"addr":"10.0.0.5:8080","weight":3}` and a TTL:
//!
//! - [`register`] writes it and keeps it alive by refreshing the TTL (`refresh=true`, which
//!   does not wake watchers) every third of the TTL; [`Registration::set_weight`] rewrites it
//!   (watchers see the new weight in one event); if the key was lost (the TTL ran out while
//!   the instance could not reach the cluster) it is created again; [`Registration::deregister`]
//!   deletes it.
//! - [`watch_service`] reads the service's directory, then follows it with a watch, keeping the
//!   set of live instances and weights; [`ServiceWatcher::pick`] chooses an instance by weight
//!   with smooth weighted round-robin (deterministic: over any `W` = sum-of-weights picks,
//!   each instance is chosen exactly `weight` times).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_rt::watch;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{Client, DeleteOptions, Error, GetOptions, Node, Response, SetOptions, WatchOptions};

/// Where services live.
pub const PREFIX: &str = "/services";

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Its name (the last part of its key).
    #[serde(skip)]
    pub name: String,
    /// Where to call it.
    pub addr: String,
    /// Its share of the calls.
    pub weight: u32,
}

fn key_of(service: &str, instance: &str) -> String {
    format!("{PREFIX}/{service}/{instance}")
}

/// A registered instance, kept alive until deregistered or dropped.
pub struct Registration {
    key: String,
    stop: watch::Sender<bool>,
    weight: watch::Sender<u32>,
    task: tokio::task::JoinHandle<()>,
}

/// Register `instance` of `service` at `addr` with `weight`, alive while refreshed within
/// `ttl` (whole seconds, at least 1).
pub async fn register(
    client: &Client,
    service: &str,
    instance: &str,
    addr: &str,
    weight: u32,
    ttl: Duration,
) -> Result<Registration, Error> {
    let key = key_of(service, instance);
    let ttl_s = ttl.as_secs().max(1);
    let addr = addr.to_string();
    let value = move |w: u32| {
        serde_json::to_string(&Instance {
            name: String::new(),
            addr: addr.clone(),
            weight: w,
        })
        .expect("instance serialises")
    };
    let opts = move || SetOptions {
        ttl: Some(ttl_s),
        ..SetOptions::default()
    };
    client.set(&key, &value(weight), opts()).await?;
    let (stop, mut stop_rx) = watch::channel(false);
    let (weight_tx, mut weight_rx) = watch::channel(weight);
    let period = Duration::from_millis((ttl_s * 1000 / 3).max(100));
    let (c, k) = (client.clone(), key.clone());
    let task = detcd_rt::spawn(async move {
        // After a failed refresh (the member was down, an election was on) try again soon
        // rather than a whole period later, so a failover does not eat the TTL.
        let mut wait = period;
        loop {
            tokio::select! {
                // `biased`: a fixed polling order keeps simulated runs reproducible.
                biased;
                _ = stop_rx.changed() => {
                    if let Err(e) = c.delete(&k, DeleteOptions::default()).await {
                        tracing::warn!(key = %k, error = %e, "deregistering failed");
                    }
                    return;
                }
                r = weight_rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let w = *weight_rx.borrow_and_update();
                    if let Err(e) = c.set(&k, &value(w), opts()).await {
                        tracing::warn!(key = %k, error = %e, "updating the weight failed");
                    }
                }
                _ = detcd_rt::sleep(wait) => {
                    wait = period;
                    match c.refresh(&k, ttl_s).await {
                        Ok(_) => {}
                        Err(e) if e.is_key_not_found() => {
                            tracing::info!(key = %k, "registration lost (TTL ran out); registering again");
                            let w = *weight_rx.borrow();
                            if let Err(e) = c.set(&k, &value(w), opts()).await {
                                tracing::warn!(key = %k, error = %e, "registering again failed");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(key = %k, error = %e, "refreshing failed; retrying soon");
                            wait = Duration::from_millis(200);
                        }
                    }
                }
            }
        }
    });
    Ok(Registration {
        key,
        stop,
        weight: weight_tx,
        task,
    })
}

impl Registration {
    /// The instance's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Change the weight (written at once; watchers see it in one event).
    pub fn set_weight(&self, w: u32) {
        let _ = self.weight.send(w);
    }

    /// Delete the key and stop refreshing it.
    pub async fn deregister(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stop refreshing without deleting, as a crashed instance would: the key disappears
    /// when its TTL runs out.
    pub fn abandon(self) {
        self.task.abort();
    }
}

/// A service's live instances and the weighted round-robin's counters (shared with the v3
/// discovery).
#[derive(Default)]
pub(crate) struct Sets {
    pub(crate) instances: BTreeMap<String, Instance>,
    current: BTreeMap<String, i64>,
}

impl Sets {
    /// Drop the counters of instances that are gone.
    pub(crate) fn forget_gone(&mut self) {
        let instances = &self.instances;
        self.current.retain(|k, _| instances.contains_key(k));
    }

    /// Smooth weighted round-robin: over any `W` = sum-of-weights picks, each instance is
    /// chosen exactly `weight` times.
    pub(crate) fn pick(&mut self) -> Option<Instance> {
        let total: i64 = self.instances.values().map(|i| i64::from(i.weight)).sum();
        if total == 0 {
            return None;
        }
        let Sets { instances, current } = self;
        let mut best: Option<(&String, i64)> = None;
        for (name, i) in instances.iter() {
            let c = current.entry(name.clone()).or_insert(0);
            *c += i64::from(i.weight);
            if best.is_none_or(|(_, b)| *c > b) {
                best = Some((name, *c));
            }
        }
        let (name, _) = best?;
        let name = name.clone();
        *current.get_mut(&name).expect("chosen has a counter") -= total;
        instances.get(&name).cloned()
    }
}

/// The live instances of a service, kept up to date by a watch.
pub struct ServiceWatcher {
    sets: Arc<Mutex<Sets>>,
    version: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

fn parse_instance(dir: &str, n: &Node) -> Option<Instance> {
    if n.dir {
        return None;
    }
    let name = n.key.strip_prefix(dir)?.trim_start_matches('/').to_string();
    let mut i: Instance = serde_json::from_str(n.value.as_deref()?).ok()?;
    i.name = name;
    Some(i)
}

fn apply(sets: &mut Sets, dir: &str, r: &Response) {
    let name = r
        .node
        .key
        .strip_prefix(dir)
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    match r.action.as_str() {
        "get" => {
            sets.instances = r
                .node
                .nodes
                .iter()
                .filter_map(|n| parse_instance(dir, n))
                .map(|i| (i.name.clone(), i))
                .collect();
        }
        "set" | "create" | "update" | "compareAndSwap" => {
            if let Some(i) = parse_instance(dir, &r.node) {
                sets.instances.insert(i.name.clone(), i);
            }
        }
        "delete" | "expire" | "compareAndDelete" => {
            if name.is_empty() {
                sets.instances.clear();
            } else {
                sets.instances.remove(&name);
            }
        }
        _ => {}
    }
    sets.forget_gone();
}

/// Follow `service`'s instances.
pub async fn watch_service(client: &Client, service: &str) -> Result<ServiceWatcher, Error> {
    let dir = format!("{PREFIX}/{service}");
    let mut sets = Sets::default();
    let index = match client
        .get(
            &dir,
            GetOptions {
                recursive: true,
                ..GetOptions::default()
            },
        )
        .await
    {
        Ok(mut r) => {
            r.action = "get".into();
            apply(&mut sets, &dir, &r);
            r.etcd_index
        }
        Err(Error::Etcd(e)) if e.error_code == 100 => e.index,
        Err(e) => return Err(e),
    };
    let sets = Arc::new(Mutex::new(sets));
    let (tx, version) = watch::channel(0u64);
    let (c, s2) = (client.clone(), Arc::clone(&sets));
    let task = detcd_rt::spawn(async move {
        let events = c.watch(
            &dir,
            WatchOptions {
                recursive: true,
                after_index: index + 1,
            },
        );
        let mut events = Box::pin(events);
        let mut v = 0u64;
        while let Some(ev) = events.next().await {
            match ev {
                Ok(r) => {
                    apply(&mut s2.lock().expect("sets lock"), &dir, &r);
                    v += 1;
                    let _ = tx.send(v);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "service watch error");
                    detcd_rt::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    Ok(ServiceWatcher {
        sets,
        version,
        task,
    })
}

impl ServiceWatcher {
    /// The live instances, by name.
    pub fn instances(&self) -> Vec<Instance> {
        self.sets
            .lock()
            .expect("sets lock")
            .instances
            .values()
            .cloned()
            .collect()
    }

    /// How many changes have been seen.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Wait for a change not yet waited for with this method (false if the watcher ended).
    pub async fn changed(&mut self) -> bool {
        self.version.changed().await.is_ok()
    }

    /// Wait until the version is past `v` (false if the watcher ended first).
    pub async fn wait_past(&mut self, v: u64) -> bool {
        self.version.wait_for(|x| *x > v).await.is_ok()
    }

    /// Choose an instance by weight (smooth weighted round-robin); `None` if there is none
    /// with a positive weight.
    pub fn pick(&self) -> Option<Instance> {
        self.sets.lock().expect("sets lock").pick()
    }
}

impl Drop for ServiceWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
