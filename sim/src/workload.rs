//! Seeded clients and watchers that use the cluster through the same HTTP API curl uses,
//! recording every invocation and completion.
//!
//! A request that gets no answer (timeout, lost connection) is *indeterminate*: it may or may
//! not have taken effect, and is recorded so — never as failed. A request whose connection
//! could not even be made is recorded as not sent (it cannot have taken effect).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use detcd_client::{DeleteOptions, Error, GetOptions, Response, SetOptions, WatchOptions};
use futures::StreamExt;

use crate::scenario::{LoadMode, OpMix, Placement, Scenario};

/// Operation kinds of the etcd v2 workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// GET served from the member's local store.
    Get,
    /// GET with `quorum=true` (linearizable).
    QGet,
    /// PUT value.
    Set,
    /// PUT with `prevExist=false`.
    Create,
    /// PUT with `prevExist=true`.
    Update,
    /// PUT with `prevValue`.
    CasValue,
    /// PUT with `prevIndex`.
    CasIndex,
    /// DELETE.
    Delete,
    /// DELETE with `prevValue`.
    Cad,
    /// GET with `recursive=true` of a directory (not checked for linearizability).
    RGet,
    /// PUT with `dir=true`: create a directory.
    Mkdir,
    /// DELETE with `dir=true`: delete an empty directory.
    Rmdir,
    /// DELETE with `recursive=true`: delete a directory and what it holds.
    RDelete,
    /// PUT with `refresh=true&prevExist=true&ttl=`[`REFRESH_TTL_S`] and no value: a new TTL
    /// and modifiedIndex, the value kept, and (as in etcd 3.4) no event for any watcher.
    Refresh,
    /// A v3 linearizable read (Range), recorded for the report; checked in the v3 history.
    V3Read,
    /// A v3 serializable read (Range), recorded for the report; checked in the v3 history.
    V3LocalRead,
    /// A v3 write (Put, DeleteRange, Txn), recorded for the report; checked in the v3 history.
    V3Write,
}

/// The TTL refreshes set, in seconds: a day, so no refreshed key expires within a run
/// (runs last at most an hour; a later set without a TTL makes the key permanent again).
pub const REFRESH_TTL_S: u64 = 86_400;

impl OpKind {
    /// Whether it writes.
    pub fn is_write(self) -> bool {
        !matches!(
            self,
            OpKind::Get | OpKind::QGet | OpKind::RGet | OpKind::V3Read | OpKind::V3LocalRead
        )
    }

    /// Whether the request says `recursive=true` (etcd then checks permissions on the whole
    /// prefix).
    pub fn is_recursive(self) -> bool {
        matches!(self, OpKind::RGet | OpKind::RDelete)
    }

    /// Whether it acts on one of the workload's keys (the rest act on directories).
    pub fn on_key(self) -> bool {
        !matches!(
            self,
            OpKind::RGet | OpKind::Mkdir | OpKind::Rmdir | OpKind::RDelete
        )
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with success: the node's value (None for deletes / dirs) and modifiedIndex,
    /// and the previous node's value and modifiedIndex where the answer had one.
    Ok {
        /// Value after the operation (reads: the value read).
        value: Option<String>,
        /// modifiedIndex of the node.
        index: u64,
        /// prevNode's value.
        prev_value: Option<String>,
        /// prevNode's modifiedIndex.
        prev_index: Option<u64>,
    },
    /// Answered with an etcd error code (it definitely happened without effect, or it is a
    /// read of a missing key: 100).
    Err {
        /// etcd errorCode.
        code: u32,
    },
    /// No answer: may or may not have happened.
    Indeterminate,
    /// The connection could not be made: it did not happen.
    NotSent,
}

/// One operation of the history.
#[derive(Debug, Clone)]
pub struct OpRecord {
    /// Client (process) id.
    pub client: u32,
    /// Kind.
    pub kind: OpKind,
    /// Key (without the `/v2/keys` prefix).
    pub key: String,
    /// Value written (writes) or compared against (CAS/CAD by value).
    pub value: Option<String>,
    /// Compared-against value.
    pub prev_value: Option<String>,
    /// Compared-against index.
    pub prev_index: Option<u64>,
    /// Simulated invoke time (ns since the start of the load).
    pub invoke_ns: u64,
    /// Simulated return time (None = indeterminate).
    pub return_ns: Option<u64>,
    /// The outcome.
    pub outcome: Outcome,
    /// The member it was sent to.
    pub member: usize,
    /// Reads: the `X-Etcd-Index` the member answered with (an answer, or error 100 with the
    /// index of its body, which etcd also sends as the header); None for writes and for
    /// reads without such an answer.
    pub etcd_index: Option<u64>,
    /// The user it acted as (basic auth; None: no credentials, in scenarios without auth).
    pub user: Option<String>,
}

/// A watch event as a watcher received it.
#[derive(Debug, Clone)]
pub struct WatchRecord {
    /// Watcher id.
    pub watcher: u32,
    /// Simulated receive time.
    pub at_ns: u64,
    /// action ("set", "delete", "expire", ...), or "cleared" when the history was cleared
    /// (error 401) and the watcher resumed from the current index.
    pub action: String,
    /// Key.
    pub key: String,
    /// modifiedIndex.
    pub index: u64,
    /// The value, if any.
    pub value: Option<String>,
    /// The waitIndex the request asked for.
    pub wait_index: u64,
    /// The key the watcher watches (recursively).
    pub prefix: String,
}

/// Everything the clients recorded.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Operations in completion order (sorted later).
    pub ops: Vec<OpRecord>,
    /// Watch events in arrival order.
    pub watches: Vec<WatchRecord>,
    /// Open-loop requests not started because too many were in flight.
    pub dropped: u64,
    /// The v3 workload's operations, as the v3 checker reads them (`api = "v3"`).
    pub v3: Vec<detcd_checker::v3::Op>,
    /// The v3 watches created (`api = "v3"`), ids in creation order.
    pub v3_watches: Vec<detcd_checker::v3::Watch>,
    /// The responses v3 watchers received, in the order each received them.
    pub v3_watch_responses: Vec<detcd_checker::v3::WatchResponse>,
    /// The v3 lease clients' grants.
    pub v3_lease_grants: Vec<detcd_checker::v3::LeaseGrant>,
    /// The v3 lease clients' answered KeepAlives.
    pub v3_keepalives: Vec<detcd_checker::v3::LeaseKeepAlive>,
    /// The user each v3 workload client acted as (history client id), when auth is on.
    pub v3_users: std::collections::BTreeMap<u64, String>,
    /// The changes of `auth.flip_role`'s permission, in order (see `crate::v3auth`).
    pub v3_auth_changes: Vec<crate::v3auth::AuthChange>,
}

/// The main directory of the checked keys: the whole space a watcher may watch, and the
/// prefix the checker assumes for watch lines that do not name theirs.
pub const KEY_PREFIX: &str = "/k";

/// The directories the workload's keys live in, key `k` in `KEY_DIRS[k % 4]`: two
/// subdirectories of `/k`, one (`/k/ab`) sharing the string prefix of `/k/a` without being
/// under it, and `/kx`, sharing the string prefix of `/k` without being under it; so a
/// watcher given an event outside the key it watched is caught.
pub const KEY_DIRS: [&str; 4] = ["/k/a", "/k/b", "/k/ab", "/kx"];

/// What watchers watch (recursively), in turn from a seeded start: the whole `/k` every other
/// watcher, one subdirectory of it the others (so any two consecutive watchers watch the whole
/// space and a directory).
pub const WATCH_PREFIXES: [&str; 4] = [KEY_PREFIX, "/k/a", KEY_PREFIX, "/k/b"];

/// The workload's key number `k`.
pub fn key_name(k: usize) -> String {
    format!("{}/{k}", KEY_DIRS[k % KEY_DIRS.len()])
}

/// The directory number `k` that directory operations create and delete: beside key `k`, in
/// the same key directory (`/k/a/d0`).
pub fn dir_name(k: usize) -> String {
    format!("{}/d{k}", KEY_DIRS[k % KEY_DIRS.len()])
}

/// What recursive gets read, the `k`th in turn: the whole `/k` or one key directory.
pub const RGET_DIRS: [&str; 5] = [KEY_PREFIX, "/k/a", "/k/b", "/k/ab", "/kx"];

/// The user client `id` acts as in a run of `seed`: in turn from a seeded first one, so every
/// user has clients when there are at least as many clients as users. None without auth.
pub fn user_of(s: &Scenario, seed: u64, id: u32) -> Option<&crate::scenario::UserSpec> {
    let users = &s.auth.users;
    if !s.auth.enabled || users.is_empty() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, 0, 0xa117));
    let first = rng.gen_range(0..users.len());
    Some(&users[(first + id as usize) % users.len()])
}

/// The key watcher `id` watches in a run of `seed`.
pub fn watch_prefix(seed: u64, id: u32) -> &'static str {
    let mut rng = ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, 0, 0x3a7c));
    let first = rng.gen_range(0..WATCH_PREFIXES.len());
    WATCH_PREFIXES[(first + id as usize) % WATCH_PREFIXES.len()]
}

fn pick_kind(mix: &OpMix, rng: &mut ChaCha8Rng) -> OpKind {
    let table = [
        (mix.get, OpKind::Get),
        (mix.qget, OpKind::QGet),
        (mix.set, OpKind::Set),
        (mix.create, OpKind::Create),
        (mix.update, OpKind::Update),
        (mix.cas_value, OpKind::CasValue),
        (mix.cas_index, OpKind::CasIndex),
        (mix.delete, OpKind::Delete),
        (mix.cad, OpKind::Cad),
        // Appended with weight 0 by default: scenarios without them draw as before.
        (mix.rget, OpKind::RGet),
        (mix.mkdir, OpKind::Mkdir),
        (mix.rmdir, OpKind::Rmdir),
        (mix.rdelete, OpKind::RDelete),
        (mix.refresh, OpKind::Refresh),
    ];
    let total: u32 = table.iter().map(|t| t.0).sum::<u32>().max(1);
    let mut x = rng.gen_range(0..total);
    for (w, k) in table {
        if x < w {
            return k;
        }
        x -= w;
    }
    OpKind::QGet
}

/// What a client remembers of a key, to aim its compare-and-swaps.
#[derive(Debug, Clone, Default)]
struct Seen {
    value: Option<String>,
    index: u64,
}

/// The history's outcome of a client call.
fn outcome_of(kind: OpKind, r: &Result<Response, Error>) -> Outcome {
    match r {
        Ok(r) => Outcome::Ok {
            value: if matches!(
                kind,
                OpKind::Delete | OpKind::Cad | OpKind::Rmdir | OpKind::RDelete
            ) {
                None
            } else {
                r.node.value.clone()
            },
            index: r.node.modified_index,
            prev_value: r.prev_node.as_ref().and_then(|n| n.value.clone()),
            prev_index: r.prev_node.as_ref().map(|n| n.modified_index),
        },
        // etcd's 300 (raft internal: the request timed out) may still take effect.
        Err(Error::Etcd(e)) if e.error_code == 300 => Outcome::Indeterminate,
        Err(Error::Etcd(e)) => Outcome::Err { code: e.error_code },
        Err(Error::Unavailable(_)) => Outcome::NotSent,
        // No answer, an HTTP error without etcd's code (5xx), or garbage: it may have happened.
        Err(_) => Outcome::Indeterminate,
    }
}

/// One client's closed loop (or one open-loop slot's request).
struct Client {
    id: u32,
    rng: ChaCha8Rng,
    conns: Vec<detcd_client::Client>,
    member: usize,
    seq: u64,
    seen: Vec<Seen>,
    user: Option<String>,
}

impl Client {
    async fn one(&mut self, s: &Scenario, rec: &Arc<Mutex<Recorder>>, start: tokio::time::Instant) {
        let kind = pick_kind(&s.workload.mix, &mut self.rng);
        let k = self.rng.gen_range(0..s.workload.keys);
        let key = match kind {
            OpKind::RGet => RGET_DIRS[k % RGET_DIRS.len()].to_string(),
            OpKind::Mkdir | OpKind::Rmdir | OpKind::RDelete => dir_name(k),
            _ => key_name(k),
        };
        self.seq += 1;
        let value = format!("c{}-{}", self.id, self.seq);
        let seen = self.seen[k].clone();
        let (rv, pv, pi): (Option<String>, Option<String>, Option<u64>) = match kind {
            OpKind::Get
            | OpKind::QGet
            | OpKind::Delete
            | OpKind::RGet
            | OpKind::Mkdir
            | OpKind::Rmdir
            | OpKind::RDelete
            | OpKind::V3Read
            | OpKind::V3LocalRead
            | OpKind::V3Write => (None, None, None),
            OpKind::Set | OpKind::Create | OpKind::Update => (Some(value.clone()), None, None),
            // A refresh writes no value; its answer carries the value it kept.
            OpKind::Refresh => (None, None, None),
            OpKind::CasValue => (
                Some(value.clone()),
                Some(seen.value.clone().unwrap_or_else(|| "c0-0".into())),
                None,
            ),
            OpKind::CasIndex => (Some(value.clone()), None, Some(seen.index.max(1))),
            OpKind::Cad => (
                None,
                Some(seen.value.clone().unwrap_or_else(|| "c0-0".into())),
                None,
            ),
        };
        let invoke_ns = start.elapsed().as_nanos() as u64;
        let member = self.member;
        let c = &self.conns[member];
        let res = match kind {
            // Never drawn here (`pick_kind` draws v2 kinds): the v3 workload is v3load.rs.
            OpKind::V3Read | OpKind::V3LocalRead | OpKind::V3Write => return,
            OpKind::Get => c.get(&key, GetOptions::default()).await,
            OpKind::QGet => {
                let o = GetOptions {
                    quorum: true,
                    ..GetOptions::default()
                };
                c.get(&key, o).await
            }
            OpKind::Set => c.set(&key, &value, SetOptions::default()).await,
            OpKind::Create => c.create(&key, &value, None).await,
            OpKind::Update => c.update(&key, &value, None).await,
            OpKind::CasValue => {
                let prev = pv.clone().unwrap_or_default();
                c.compare_and_swap(&key, &value, &prev).await
            }
            OpKind::CasIndex => {
                let o = SetOptions {
                    prev_index: pi,
                    ..SetOptions::default()
                };
                c.set(&key, &value, o).await
            }
            OpKind::Delete => c.delete(&key, DeleteOptions::default()).await,
            OpKind::Cad => {
                let prev = pv.clone().unwrap_or_default();
                c.compare_and_delete(&key, &prev).await
            }
            OpKind::RGet => {
                let o = GetOptions {
                    recursive: true,
                    sorted: true,
                    ..GetOptions::default()
                };
                c.get(&key, o).await
            }
            OpKind::Mkdir => c.mkdir(&key, None).await,
            OpKind::Rmdir => {
                let o = DeleteOptions {
                    dir: true,
                    ..DeleteOptions::default()
                };
                c.delete(&key, o).await
            }
            OpKind::RDelete => {
                let o = DeleteOptions {
                    recursive: true,
                    ..DeleteOptions::default()
                };
                c.delete(&key, o).await
            }
            OpKind::Refresh => c.refresh(&key, REFRESH_TTL_S).await,
        };
        let now_ns = start.elapsed().as_nanos() as u64;
        let outcome = outcome_of(kind, &res);
        let read = matches!(kind, OpKind::Get | OpKind::QGet);
        let etcd_index = match &res {
            Ok(r) if read => Some(r.etcd_index),
            Err(Error::Etcd(e)) if read && e.error_code == 100 => Some(e.index),
            _ => None,
        };
        let return_ns = (outcome != Outcome::Indeterminate).then_some(now_ns);
        // Learn what the key holds, and move to another member after a failure (as a client
        // library with several endpoints would).
        match &outcome {
            Outcome::Ok { value, index, .. } if kind.on_key() => {
                self.seen[k] = Seen {
                    value: value.clone(),
                    index: *index,
                };
            }
            Outcome::Err { code: 100 } if kind.on_key() => self.seen[k] = Seen::default(),
            Outcome::Indeterminate | Outcome::NotSent => {
                self.member = (self.member + 1) % self.conns.len();
            }
            _ => {}
        }
        rec.lock().unwrap().ops.push(OpRecord {
            client: self.id,
            kind,
            key,
            value: rv,
            prev_value: pv,
            prev_index: pi,
            invoke_ns,
            return_ns,
            outcome,
            member,
            etcd_index,
            user: self.user.clone(),
        });
    }
}

/// Run the client load until `end` (simulated), then let in-flight requests finish.
pub async fn run_clients(
    s: Arc<Scenario>,
    addrs: Vec<String>,
    seed: u64,
    rec: Arc<Mutex<Recorder>>,
    start: tokio::time::Instant,
) {
    let end = start + Duration::from_secs_f64(s.workload.duration_s);
    let n = s.workload.clients;
    let leader = match s.workload.placement {
        Placement::Leader => leader_of(&addrs).await,
        _ => None,
    };
    let mut tasks = Vec::new();
    match s.workload.mode {
        LoadMode::Closed => {
            for c in 0..n {
                let (s, addrs, rec) = (s.clone(), addrs.clone(), rec.clone());
                tasks.push(tokio::spawn(async move {
                    let mut client = new_client(c as u32, &s, &addrs, leader, seed, seed);
                    while tokio::time::Instant::now() < end {
                        client.one(&s, &rec, start).await;
                    }
                }));
            }
        }
        LoadMode::Open => {
            // Each of the n clients sends at rate/n on its own schedule; a client whose
            // previous request is still out starts the next one on another process id, so
            // the load does not slow down with the cluster (no coordinated omission).
            let per = Duration::from_secs_f64(n as f64 / s.workload.rate.max(1) as f64);
            for c in 0..n {
                let (s, addrs, rec) = (s.clone(), addrs.clone(), rec.clone());
                tasks.push(tokio::spawn(async move {
                    let mut rng =
                        ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, c as u64, 0x09e7));
                    let offset = Duration::from_nanos(rng.gen_range(0..per.as_nanos() as u64 + 1));
                    detcd_node::rt::sleep(offset).await;
                    let free: Arc<Mutex<Vec<Client>>> = Arc::default();
                    let mut next_id = 0u32;
                    let mut inflight = Vec::new();
                    let mut tick = detcd_node::rt::interval(per);
                    while tokio::time::Instant::now() < end {
                        tick.tick().await;
                        let client = free.lock().unwrap().pop();
                        let mut client = match client {
                            Some(c) => c,
                            None if next_id < 64 => {
                                next_id += 1;
                                new_client(
                                    (c * 64) as u32 + next_id,
                                    &s,
                                    &addrs,
                                    leader,
                                    crate::seed::mix(seed, c as u64, next_id as u64),
                                    seed,
                                )
                            }
                            None => {
                                rec.lock().unwrap().dropped += 1;
                                continue;
                            }
                        };
                        let (s, rec, free) = (s.clone(), rec.clone(), free.clone());
                        inflight.push(tokio::spawn(async move {
                            client.one(&s, &rec, start).await;
                            free.lock().unwrap().push(client);
                        }));
                    }
                    for t in inflight {
                        let _ = t.await;
                    }
                }));
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The index in `addrs` of the member that leads, asked of each member in turn
/// (`/v2/members/leader`, matched by client URL); None if no member names one.
async fn leader_of(addrs: &[String]) -> Option<usize> {
    for a in addrs {
        let c = crate::client::member_client(a, Duration::from_millis(500));
        if let Ok(l) = c.leader().await {
            return addrs
                .iter()
                .position(|x| l.client_urls.iter().any(|u| u.ends_with(x.as_str())));
        }
    }
    None
}

fn new_client(
    id: u32,
    s: &Scenario,
    addrs: &[String],
    leader: Option<usize>,
    seed: u64,
    run_seed: u64,
) -> Client {
    let mut rng = ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, id as u64, 0xc11e));
    // Drawn in either placement, so that the rest of the client's seeded stream (its
    // operations) is the same.
    let drawn = rng.gen_range(0..addrs.len());
    let member = match s.workload.placement {
        Placement::Random => drawn,
        Placement::Spread => id as usize % addrs.len(),
        // No leader known when the load began: spread, as the benchmark would otherwise.
        Placement::Leader => leader.unwrap_or(id as usize % addrs.len()),
    };
    // With auth on, the client acts as its user (basic auth); otherwise it sends no
    // credentials (not even the run's own root ones).
    let user = user_of(s, run_seed, id);
    let creds = user.map(|u| (u.name.clone(), u.password.clone()));
    Client {
        id,
        rng,
        conns: addrs
            .iter()
            .map(|a| {
                crate::client::client_as(
                    std::slice::from_ref(a),
                    Duration::from_millis(s.workload.request_timeout_ms),
                    creds.clone(),
                )
            })
            .collect(),
        member,
        seq: 0,
        seen: vec![Seen::default(); s.workload.keys],
        user: user.map(|u| u.name.clone()),
    }
}

/// A watcher: follows every change under its key (`watch_prefix`: the checked key space or
/// one directory of it) with detcd-client's watch stream (which resumes from the last
/// index + 1, fails over to the next member, and re-lists when the member no longer has that
/// index), until `end`.
pub async fn run_watcher(
    id: u32,
    seed: u64,
    addrs: Vec<String>,
    rec: Arc<Mutex<Recorder>>,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
) {
    let first = id as usize % addrs.len();
    let order: Vec<String> = (0..addrs.len())
        .map(|i| addrs[(first + i) % addrs.len()].clone())
        .collect();
    let c = crate::client::client(&order, Duration::from_secs(3));
    let o = WatchOptions {
        recursive: true,
        after_index: 1,
    };
    let prefix = watch_prefix(seed, id);
    let mut events = Box::pin(c.watch(prefix, o));
    let mut wait_index = 1u64;
    while tokio::time::Instant::now() < end {
        let ev = match detcd_node::rt::timeout_at(end, events.next()).await {
            Ok(Some(Ok(ev))) => ev,
            Ok(Some(Err(_))) => {
                detcd_node::rt::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Ok(None) | Err(_) => break,
        };
        let (action, index) = if ev.action == "get" {
            // History cleared: the stream re-listed and goes on from the listing's index.
            ("cleared".to_string(), ev.etcd_index)
        } else {
            (ev.action.clone(), ev.node.modified_index)
        };
        rec.lock().unwrap().watches.push(WatchRecord {
            watcher: id,
            at_ns: start.elapsed().as_nanos() as u64,
            action: action.clone(),
            key: if action == "cleared" {
                String::new()
            } else {
                ev.node.key.clone()
            },
            index,
            value: if action == "cleared" {
                None
            } else {
                ev.node.value.clone()
            },
            wait_index,
            prefix: prefix.to_string(),
        });
        wait_index = index + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(placement: &str) -> Scenario {
        let toml = format!("name = \"x\"\n[workload]\nclients = 16\nplacement = \"{placement}\"\n");
        Scenario::parse(&toml, "s.toml").unwrap()
    }

    #[test]
    fn keys_are_nested_and_some_share_a_watched_prefix_without_being_under_it() {
        let keys: Vec<String> = (0..8).map(key_name).collect();
        assert_eq!(
            keys[..4],
            ["/k/a/0", "/k/b/1", "/k/ab/2", "/kx/3"].map(String::from)
        );
        // Every key in a directory: /k/a/0 two deep, /kx/3 one.
        assert!(keys.iter().all(|k| k.matches('/').count() >= 2));
        // Distinct keys; none is a directory of another (the checker splits by key).
        for a in &keys {
            for b in &keys {
                assert!(a == b || !b.starts_with(&format!("{a}/")), "{a} {b}");
            }
        }
    }

    #[test]
    fn watchers_watch_seeded_prefixes_some_the_whole_space_some_a_directory() {
        let mut seen = std::collections::BTreeMap::new();
        for seed in 0..20u64 {
            println!("seed {seed}");
            let p: Vec<&str> = (0..2).map(|id| watch_prefix(seed, id)).collect();
            assert_eq!(
                p[0],
                watch_prefix(seed, 0),
                "the same seed draws the same prefix"
            );
            // Two watchers: one watches the whole space, the other a directory.
            assert_eq!(p.iter().filter(|p| **p == KEY_PREFIX).count(), 1, "{p:?}");
            for p in p {
                *seen.entry(p).or_insert(0) += 1;
            }
        }
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            ["/k", "/k/a", "/k/b"],
            "{seen:?}"
        );
    }

    #[test]
    fn spread_clients_take_the_members_in_turn_and_keep_their_seeded_operations() {
        let addrs: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", 2379 + i)).collect();
        let (spread, random) = (scenario("spread"), scenario("random"));
        let seed = 1;
        println!("seed {seed}");
        let mut per_member = [0; 3];
        let mut drawn = [0; 3];
        for id in 0..16 {
            let mut s = new_client(id, &spread, &addrs, None, seed, seed);
            let mut r = new_client(id, &random, &addrs, None, seed, seed);
            assert_eq!(s.member, id as usize % 3);
            per_member[s.member] += 1;
            drawn[r.member] += 1;
            // Only the starting member differs: the operations that follow are the same.
            assert_eq!(s.rng.gen::<u64>(), r.rng.gen::<u64>());
        }
        assert_eq!(per_member, [6, 5, 5]);
        // The seeded draw this replaces: seed 1 puts most of its 16 clients on one member.
        assert_eq!(drawn.iter().sum::<i32>(), 16);
        assert!(drawn.iter().max() > Some(&8), "{drawn:?}");
    }

    #[test]
    fn leader_placement_puts_every_client_on_the_leader_and_keeps_their_operations() {
        let addrs: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", 2379 + i)).collect();
        let (on_leader, random) = (scenario("leader"), scenario("random"));
        let seed = 2;
        println!("seed {seed}");
        for id in 0..16 {
            let mut l = new_client(id, &on_leader, &addrs, Some(1), seed, seed);
            let mut r = new_client(id, &random, &addrs, Some(1), seed, seed);
            assert_eq!(l.member, 1);
            assert_eq!(l.rng.gen::<u64>(), r.rng.gen::<u64>());
            // Without a known leader the clients spread.
            let u = new_client(id, &on_leader, &addrs, None, seed, seed);
            assert_eq!(u.member, id as usize % 3);
        }
    }
}
