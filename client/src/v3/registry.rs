//! Service registration and weighted discovery on etcd's v3 API: an instance of service `S`
//! lives at `/services/S/<instance>` with the value `{"addr":"10.0.0.5:8080","weight":3}`
//! (as in [`crate::registry`]), attached to a lease.
//!
//! - [`register`] grants a lease of the TTL, writes the key on it and keeps the lease alive
//!   from a task (a keep-alive stream, renewed every third of the TTL, moving to the next
//!   endpoint when its member fails); [`Registration::set_weight`] rewrites the value on the
//!   same lease (watchers see one event); if the lease is gone (it ran out while the instance
//!   could not reach the cluster, or someone revoked it) a new one is granted and the key
//!   written again. [`Registration::deregister`] revokes the lease, which deletes the key;
//!   [`Registration::abandon`] stops renewing, as a crashed instance would, and the key
//!   disappears when the lease expires.
//! - [`watch_service`] reads the service's prefix, then follows it with a [`super::Watch`]
//!   from the read's revision + 1 (so no change between the two is missed, and none is seen
//!   twice, across member failures too); if the watch is cancelled by a compaction it reads
//!   the prefix again. [`ServiceWatcher::pick`] chooses by weight with the same smooth
//!   weighted round-robin as the v2 registry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_rt::watch;
use futures::StreamExt;

use super::{Client, EventType, GetOptions, KeyValue, PutOptions, WatchOptions};
use crate::registry::{Sets, PREFIX};
use crate::{Error, Instance};

fn key_of(service: &str, instance: &str) -> String {
    format!("{PREFIX}/{service}/{instance}")
}

fn prefix_of(service: &str) -> String {
    format!("{PREFIX}/{service}/")
}

/// A registered instance, kept alive until deregistered, abandoned or dropped (dropping
/// stops renewing, like [`Registration::abandon`]).
pub struct Registration {
    key: String,
    lease: watch::Receiver<i64>,
    stop: watch::Sender<bool>,
    weight: watch::Sender<u32>,
    task: tokio::task::JoinHandle<()>,
}

/// Register `instance` of `service` at `addr` with `weight`, on a lease of `ttl` (whole
/// seconds, at least 1; etcd raises it to its minimum TTL) kept alive by a task.
pub async fn register(
    client: &Client,
    service: &str,
    instance: &str,
    addr: &str,
    weight: u32,
    ttl: Duration,
) -> Result<Registration, Error> {
    let key = key_of(service, instance);
    let ttl_s = ttl.as_secs().max(1) as i64;
    let addr = addr.to_string();
    let value = move |w: u32| {
        serde_json::to_string(&Instance {
            name: String::new(),
            addr: addr.clone(),
            weight: w,
        })
        .expect("instance serialises")
    };
    let grant = client.lease_grant(ttl_s, 0).await?;
    if let Err(e) = client
        .put(
            key.as_str(),
            value(weight),
            PutOptions::new().lease(grant.id),
        )
        .await
    {
        let _ = client.lease_revoke(grant.id).await;
        return Err(e);
    }
    let (stop, mut stop_rx) = watch::channel(false);
    let (weight_tx, mut weight_rx) = watch::channel(weight);
    let (lease_tx, lease) = watch::channel(grant.id);
    let (c, k) = (client.clone(), key.clone());
    let task = detcd_rt::spawn(async move {
        let mut id = grant.id;
        let mut ka = c.lease_keep_alive(id);
        loop {
            let lost = tokio::select! {
                // `biased`: a fixed polling order keeps simulated runs reproducible.
                biased;
                _ = stop_rx.changed() => {
                    drop(ka);
                    if let Err(e) = c.lease_revoke(id).await {
                        tracing::warn!(key = %k, lease = id, error = %e, "deregistering failed");
                    }
                    return;
                }
                r = weight_rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let w = *weight_rx.borrow_and_update();
                    if let Err(e) = c.put(k.as_str(), value(w), PutOptions::new().lease(id)).await {
                        tracing::warn!(key = %k, error = %e, "updating the weight failed");
                    }
                    false
                }
                _ = ka.gone() => true,
            };
            if !lost {
                continue;
            }
            tracing::info!(key = %k, lease = id, "registration lost (lease gone); registering again");
            loop {
                if *stop_rx.borrow() {
                    return;
                }
                let w = *weight_rx.borrow();
                match c.lease_grant(ttl_s, 0).await {
                    Ok(g) => match c
                        .put(k.as_str(), value(w), PutOptions::new().lease(g.id))
                        .await
                    {
                        Ok(_) => {
                            id = g.id;
                            let _ = lease_tx.send(id);
                            ka = c.lease_keep_alive(id);
                            break;
                        }
                        Err(e) => {
                            let _ = c.lease_revoke(g.id).await;
                            tracing::warn!(key = %k, error = %e, "registering again failed");
                        }
                    },
                    Err(e) => tracing::warn!(key = %k, error = %e, "granting a lease failed"),
                }
                detcd_rt::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Ok(Registration {
        key,
        lease,
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

    /// The lease the key is on now (a new one after the registration was lost and made again).
    pub fn lease(&self) -> i64 {
        *self.lease.borrow()
    }

    /// Change the weight (written at once, on the same lease; watchers see it in one event).
    pub fn set_weight(&self, w: u32) {
        let _ = self.weight.send(w);
    }

    /// Revoke the lease (which deletes the key) and stop.
    pub async fn deregister(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }

    /// Stop renewing without deleting, as a crashed instance would: the key disappears
    /// when the lease expires.
    pub fn abandon(self) {}
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The live instances of a service, kept up to date by a v3 watch.
pub struct ServiceWatcher {
    sets: Arc<Mutex<Sets>>,
    version: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

fn parse_instance(prefix: &str, kv: &KeyValue) -> Option<Instance> {
    let key = std::str::from_utf8(&kv.key).ok()?;
    let name = key.strip_prefix(prefix)?.to_string();
    let mut i: Instance = serde_json::from_slice(&kv.value).ok()?;
    i.name = name;
    Some(i)
}

/// Read every instance under the prefix: (instances, the read's revision).
async fn list(client: &Client, prefix: &str) -> Result<(Vec<Instance>, i64), Error> {
    let r = client.get(prefix, GetOptions::new().prefix()).await?;
    let instances = r
        .kvs
        .iter()
        .filter_map(|kv| parse_instance(prefix, kv))
        .collect();
    Ok((instances, r.header.revision))
}

/// Follow `service`'s instances.
pub async fn watch_service(client: &Client, service: &str) -> Result<ServiceWatcher, Error> {
    let prefix = prefix_of(service);
    let (found, mut rev) = list(client, &prefix).await?;
    let mut sets = Sets::default();
    sets.instances = found.into_iter().map(|i| (i.name.clone(), i)).collect();
    let sets = Arc::new(Mutex::new(sets));
    let (tx, version) = watch::channel(0u64);
    let (c, s2) = (client.clone(), Arc::clone(&sets));
    let task = detcd_rt::spawn(async move {
        let mut v = 0u64;
        loop {
            let mut w = c.watch(
                prefix.as_str(),
                WatchOptions::new().prefix().start_revision(rev + 1),
            );
            while let Some(batch) = w.next().await {
                match batch {
                    Ok(b) => {
                        {
                            let mut s = s2.lock().expect("sets lock");
                            for e in &b.events {
                                let name = String::from_utf8_lossy(&e.kv.key)
                                    .strip_prefix(prefix.as_str())
                                    .unwrap_or("")
                                    .to_string();
                                match e.kind {
                                    EventType::Put => {
                                        if let Some(i) = parse_instance(&prefix, &e.kv) {
                                            s.instances.insert(i.name.clone(), i);
                                        } else {
                                            // Not an instance any more: not pickable.
                                            s.instances.remove(&name);
                                        }
                                    }
                                    EventType::Delete => {
                                        s.instances.remove(&name);
                                    }
                                }
                            }
                            s.forget_gone();
                        }
                        v += 1;
                        let _ = tx.send(v);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "service watch ended; reading the instances again");
                        break;
                    }
                }
            }
            // The watch was cancelled (its revision compacted away): read the set again.
            loop {
                match list(&c, &prefix).await {
                    Ok((found, r)) => {
                        let mut s = s2.lock().expect("sets lock");
                        s.instances = found.into_iter().map(|i| (i.name.clone(), i)).collect();
                        s.forget_gone();
                        rev = r;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the instances failed");
                        detcd_rt::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            v += 1;
            let _ = tx.send(v);
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

    /// How many changes have been seen (one per batch of events, i.e. per revision or
    /// run of revisions delivered together).
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
