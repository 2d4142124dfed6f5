//! One seeded run: build the simulated cluster, drive the load under the nemesis, heal,
//! then check safety (linearizability, watches), liveness and convergence.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallInstant};

use crate::cluster::{self, MemberSim};
use crate::failpoints::Failpoints;
use crate::nemesis::Nemesis;
use crate::scenario::Scenario;
use crate::workload::{self, Recorder};

pub use crate::output::{Check, MemberStats, RunOutput};

/// Run `s` with `seed` inside a fresh madsim runtime, on a fresh thread: std's hash seeds are
/// per thread and drawn once, so only a thread that has never hashed before gets them from
/// madsim's seeded randomness (tokio's `select!` fairness draws from them too).
pub fn run(s: &Scenario, seed: u64) -> (RunOutput, Duration) {
    let s = s.clone();
    std::thread::Builder::new()
        .name(format!("sim-{seed}"))
        .stack_size(64 << 20)
        .spawn(move || run_here(&s, seed))
        .expect("spawning the simulation thread")
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// madsim's configuration for `s`: its network's latency range and whether delays are exact.
fn madsim_config(s: &Scenario) -> madsim::Config {
    let mut config = madsim::Config::default();
    config.net.send_latency = Duration::from_micros(s.network.latency_us[0])
        ..Duration::from_micros(s.network.latency_us[1].max(s.network.latency_us[0] + 1));
    config.net.exact_delays = s.network.exact_delays;
    config
}

fn run_here(s: &Scenario, seed: u64) -> (RunOutput, Duration) {
    let wall = WallInstant::now();
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim_config(s));
    let scenario = Arc::new(s.clone());
    crate::failpoints::capture_panics();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(orchestrate(scenario.clone(), seed))
    }));
    let out = match result {
        Ok(out) => out,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            RunOutput {
                seed,
                rec: Recorder::default(),
                faults: vec![],
                leaders: vec![],
                sim_ns: 0,
                checks: vec![Check {
                    name: "no-panic".into(),
                    passed: Some(false),
                    detail: msg,
                }],
                members: vec![],
                failpoint_hits: vec![],
                intruders: vec![],
            }
        }
    };
    (out, wall.elapsed())
}

/// Run `s` with `seed` in the madsim runtime this is awaited in (no fresh thread, no panic
/// capture): for madsim's own determinism check, which builds the runtime itself.
pub async fn run_in_this_runtime(s: Scenario, seed: u64) -> RunOutput {
    orchestrate(Arc::new(s), seed).await
}

/// The failpoints of a run of `s`: its own rules and those its swarm arms for `seed`.
fn failpoints(s: &Scenario, seed: u64) -> Failpoints {
    let mut rules = s.failpoints.clone();
    if let Some(sw) = &s.swarm {
        rules.extend(crate::scenario::swarm_failpoints(
            sw,
            s.workload.duration_s,
            seed,
        ));
    }
    Failpoints::new(rules, crate::seed::mix(seed, 0, 0xf417))
}

async fn orchestrate(s: Arc<Scenario>, seed: u64) -> RunOutput {
    let handle = madsim::runtime::Handle::current();
    let fp = failpoints(&s, seed);
    let pki = cluster::pki(&s);
    let members = Arc::new(cluster::start(&s, seed, &fp, pki.as_ref()));
    let addrs: Vec<String> = members.iter().map(|m| m.client_addr()).collect();
    // Let the cluster elect a leader before the load starts (etcd's own tests do the same).
    wait_for_leader(&members, Duration::from_secs(20)).await;
    crate::client::set_client_auth(None);
    if s.auth.enabled {
        // Users, roles and auth on before the load, from a machine with an address.
        let (spec, addrs) = (s.auth.clone(), addrs.clone());
        let admin = handle
            .create_node()
            .name("admin")
            .ip("10.0.1.4".parse().unwrap())
            .build();
        let v3 = s.workload.api == crate::scenario::Api::V3;
        let setup = admin.spawn(async move {
            if v3 {
                crate::v3auth::setup(&spec, &addrs).await
            } else {
                crate::permissions::setup(&spec, &addrs).await
            }
        });
        setup.await.expect("auth setup task").expect("auth setup");
    }
    let start = tokio::time::Instant::now();
    let _ = fp.start.set(start);
    let end = start + Duration::from_secs_f64(s.workload.duration_s);
    let rec: Arc<Mutex<Recorder>> = Arc::default();

    // Clients and watchers live on their own simulated machines.
    let client_node = handle
        .create_node()
        .name("clients")
        .ip("10.0.1.1".parse().unwrap())
        .build();
    let load = {
        let (s, addrs, rec) = (s.clone(), addrs.clone(), rec.clone());
        client_node.spawn(async move {
            let mut watchers = Vec::new();
            for w in 0..s.workload.watchers {
                let (w, addrs, rec) = (w as u32, addrs.clone(), rec.clone());
                watchers.push(match s.workload.api {
                    crate::scenario::Api::V2 => {
                        tokio::spawn(workload::run_watcher(w, seed, addrs, rec, start, end))
                    }
                    crate::scenario::Api::V3 => tokio::spawn(crate::v3load::run_watcher(
                        w,
                        seed,
                        (w as usize) < s.workload.slow_watchers,
                        crate::v3auth::root(&s),
                        addrs,
                        rec,
                        start,
                        end,
                    )),
                });
            }
            match s.workload.api {
                crate::scenario::Api::V2 => {
                    workload::run_clients(s.clone(), addrs, seed, rec, start).await
                }
                crate::scenario::Api::V3 => {
                    crate::v3load::run_clients(s.clone(), addrs, seed, rec, start).await
                }
            }
            for w in watchers {
                let _ = w.await;
            }
        })
    };

    // The registry load (service instances and their callers) on a machine of its own.
    let registry = (s.registry.instances > 0).then(|| {
        let (s, addrs) = (s.clone(), addrs.clone());
        handle
            .create_node()
            .name("services")
            .ip("10.0.2.1".parse().unwrap())
            .build()
            .spawn(crate::registry::run(s, addrs, seed, start, end))
    });

    // The lock load on a machine of its own.
    let locks = (s.locks.clients > 0).then(|| {
        let (s, addrs, rec) = (s.clone(), addrs.clone(), rec.clone());
        handle
            .create_node()
            .name("lockers")
            .ip("10.0.2.2".parse().unwrap())
            .build()
            .spawn(crate::locks::run(s, addrs, seed, rec, start, end))
    });

    // Intruders knock on the client and peer ports from a machine of their own.
    let intruders = match (&pki, s.intruders.every_ms) {
        (Some(pki), every_ms) if every_ms > 0 => Some(
            handle
                .create_node()
                .name("intruders")
                .ip("10.0.3.1".parse().unwrap())
                .build()
                .spawn(crate::intruders::run(
                    every_ms,
                    members.clone(),
                    pki.clone(),
                    seed,
                    start,
                    end,
                )),
        ),
        _ => None,
    };

    // Leader observer: polls /v2/members/leader like an operator's dashboard.
    let leaders: Arc<Mutex<Vec<crate::output::LeaderSample>>> = Arc::default();
    let observer = {
        let leaders = leaders.clone();
        let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        let addrs = addrs.clone();
        let obs_node = handle
            .create_node()
            .name("observer")
            .ip("10.0.1.2".parse().unwrap())
            .build();
        obs_node.spawn(async move {
            let mut last: Option<Option<usize>> = None;
            while tokio::time::Instant::now() < end {
                let mut found = None;
                for a in &addrs {
                    let c = crate::client::member_client(a, Duration::from_millis(200));
                    if let Ok(l) = c.leader().await {
                        found = names.iter().position(|n| *n == l.name);
                        break;
                    }
                }
                if last != Some(found) {
                    leaders
                        .lock()
                        .unwrap()
                        .push((start.elapsed().as_nanos() as u64, found));
                    last = Some(found);
                }
                detcd_node::rt::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Election safety (at most one leader per term) and vote durability (a vote on disk never
    // changes within its term, across restarts too), watched from each member's own status
    // every 2 ms of simulated time: a term two members lead is a split brain, a forgotten
    // vote is one waiting to happen.
    let claims: Arc<Mutex<ElectionClaims>> = Arc::default();
    let watcher = {
        let (members, claims) = (members.clone(), claims.clone());
        tokio::spawn(async move {
            // Bounded even if the end of the run never says stop.
            let deadline = end + Duration::from_secs(600);
            while tokio::time::Instant::now() < deadline && !claims.lock().unwrap().stop {
                {
                    let mut c = claims.lock().unwrap();
                    for (i, m) in members.iter().enumerate() {
                        if let Some(sh) = m.shared() {
                            let st = sh.status();
                            if st.is_leader {
                                c.saw(st.term, i, start.elapsed());
                            }
                            c.saw_id(i, sh.id, start.elapsed());
                            c.saw_vote(sh.id, st.durable_term, st.durable_vote, start.elapsed());
                        }
                    }
                }
                detcd_node::rt::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // The nemesis carries out the run's fault plan (shared with detcd-real).
    let plan = crate::faultplan::plan(&s, seed);
    let nemesis = Nemesis::new(members.clone(), crate::faultplan::nemesis_seed(seed), start);
    let until_ns = plan.load_ns;
    // The nemesis and the final checks run on a machine of their own: the supervisor has no
    // network address, and the nemesis asks the cluster who leads, as an operator would.
    let ops_node = handle
        .create_node()
        .name("nemesis")
        .ip("10.0.1.3".parse().unwrap())
        .build();
    // Storage faults need an operator: one watches the damaged members until the checks end.
    let supervisor_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let supervisor = plan
        .faults
        .iter()
        .any(|f| matches!(f.fault.kind, crate::scenario::FaultKind::Disk { .. }))
        .then(|| {
            let (nem, stop) = (nemesis.clone(), supervisor_stop.clone());
            ops_node.spawn(async move { nem.supervise_disks(stop).await })
        });
    let mut fault_tasks = Vec::new();
    for pf in plan.faults {
        let mut nem = nemesis.fork(pf.index as u64);
        let at = start + Duration::from_nanos(pf.start_ns);
        fault_tasks.push(ops_node.spawn(async move {
            detcd_node::rt::sleep_until(at).await;
            nem.apply(&pf.fault, until_ns).await;
        }));
    }
    for t in fault_tasks {
        let _ = t.await;
    }
    let _ = load.await;
    let _ = observer.await;
    let registry_check = match registry {
        Some(t) => Some(t.await.expect("registry task")),
        None => None,
    };
    let locks_check = match locks {
        Some(t) => Some(t.await.expect("locks task")),
        None => None,
    };
    let intruder_events = match intruders {
        Some(t) => Some(t.await.expect("intruders task")),
        None => None,
    };
    // Final heal: every fault undone (the nemesis undoes each at its end; this is the net).
    nemesis.heal_network();
    for m in members.iter() {
        *m.clock.skew().lock().unwrap() = Default::default();
        m.disk.clear_faults();
    }
    let mut checks = Vec::new();
    let live = {
        let reach: Vec<(String, String)> = members
            .iter()
            .map(|m| (m.name.clone(), m.client_addr()))
            .collect();
        let limit = Duration::from_secs_f64(s.checks.liveness_s);
        ops_node.spawn(async move { crate::final_checks::liveness(&reach, limit).await })
    };
    checks.push(live.await.expect("liveness task"));
    if let Some(events) = &intruder_events {
        // After the heal: did anything an intruder wrote reach the store?
        let addrs = addrs.clone();
        let written =
            ops_node
                .spawn(async move {
                    crate::intruders::keys_written(&addrs, Duration::from_secs(10)).await
                })
                .await
                .expect("intruders' keys task");
        checks.push(crate::intruders::check(events, &written));
    }
    claims.lock().unwrap().stop = true;
    let _ = watcher.await;
    checks.push(claims.lock().unwrap().check());
    checks.push(claims.lock().unwrap().check_votes());
    checks.extend(registry_check);
    checks.extend(locks_check);
    if s.checks.convergence {
        let stores = Stores(&members);
        let limit = Duration::from_secs(10);
        checks.push(
            crate::final_checks::convergence(&stores, limit, Duration::from_millis(100)).await,
        );
    }
    supervisor_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(t) = supervisor {
        let _ = t.await;
    }
    // A member that a storage fault hit may stop on the damage: that is what it must do.
    let (damaged, mut unexpected) = {
        let d = nemesis.disks.lock().unwrap();
        (d.damaged.clone(), d.unexpected.clone())
    };
    // A member rejoins under a new id only when it found damage: one that no fault damaged
    // (only failed fsyncs or a full disk) or that the nemesis did not replace must hold all
    // it acknowledged, and a rejoin there means it lost some (a failed fsync retried).
    {
        let d = nemesis.disks.lock().unwrap();
        let c = claims.lock().unwrap();
        for (i, ids) in &c.ids {
            if ids.len() > 1 && !d.corrupted.contains(i) && !d.replaced.contains(i) {
                let ids: Vec<String> = ids.iter().map(|x| format!("{x:x}")).collect();
                unexpected.push(format!(
                    "{} rejoined under a new id ({}) though no fault damaged its data: it found damage it should not have",
                    members[*i].name,
                    ids.join(" → ")
                ));
            }
        }
    }
    type Exits = Vec<(usize, String)>;
    let (exits, expected): (Exits, Exits) = members
        .iter()
        .filter_map(|m| {
            m.exit
                .lock()
                .unwrap()
                .clone()
                .map(|e| (m.index, format!("{}: {}", m.name, e.why)))
        })
        .partition(|(i, _)| !damaged.contains(i));
    let mut exits: Vec<String> = exits.into_iter().map(|(_, e)| e).collect();
    exits.extend(unexpected);
    let expected: Vec<String> = expected.into_iter().map(|(_, e)| e).collect();
    checks.push(assertions(&members, &fp, !damaged.is_empty()));
    checks.push(Check {
        name: "no-panic".into(),
        passed: Some(exits.is_empty()),
        detail: match (exits.is_empty(), expected.is_empty()) {
            (true, true) => "no member panicked or stopped on its own".into(),
            (true, false) => format!(
                "no member stopped on its own, except on injected storage damage: {}",
                expected.join("; ")
            ),
            _ => exits.join("; "),
        },
    });
    let member_stats = members
        .iter()
        .map(|m| {
            m.shared()
                .map(|sh| {
                    use std::sync::atomic::Ordering::Relaxed;
                    let c = &sh.counters;
                    MemberStats {
                        msgs_sent: Some(c.msgs_sent.load(Relaxed)),
                        bytes_sent: Some(c.bytes_sent.load(Relaxed)),
                        fsyncs: Some(c.fsyncs.load(Relaxed)),
                        entries: Some(c.entries_persisted.load(Relaxed)),
                    }
                })
                .unwrap_or_else(MemberStats::zero)
        })
        .collect();
    let sim_ns = start.elapsed().as_nanos() as u64;
    let rec = std::mem::take(&mut *rec.lock().unwrap());
    let leaders = leaders.lock().unwrap().clone();
    let mut faults = nemesis.events.lock().unwrap().clone();
    faults.extend(fp.events());
    faults.sort_by_key(|f| (f.start_ns, f.kind.clone()));
    RunOutput {
        seed,
        rec,
        faults,
        leaders,
        sim_ns,
        checks,
        members: member_stats,
        failpoint_hits: fp.hits(),
        intruders: intruder_events.unwrap_or_default(),
    }
}

/// The members' own oracle: every invariant a member reported broken (named, with the
/// member) and every other panic inside a member (an `assert!`, a `debug_assert!`, an
/// overflow: the simulator builds with both on), each of which madsim answered by
/// restarting that member.
/// `damaged`: a storage fault damaged some member's files. A library that reads a damaged
/// file may panic on it (redb does, on a page whose checksum it did not check); the node
/// catches that panic and refuses to start, so such a panic is the damage, not a bug.
fn assertions(members: &[MemberSim], fp: &Failpoints, damaged: bool) -> Check {
    let mut broken: Vec<String> = fp
        .violations()
        .iter()
        .map(|v| {
            format!(
                "{} broke invariant {} at {:.3} s: {}",
                members[v.member].name,
                v.name,
                v.at_ns as f64 / 1e9,
                v.detail
            )
        })
        .collect();
    let (expected, panics): (Vec<String>, Vec<String>) = crate::failpoints::take_panics()
        .into_iter()
        .partition(|p| damaged && p.contains("/redb-"));
    // A broken invariant panics too; its panic adds nothing to the line above.
    broken.extend(
        panics
            .into_iter()
            .filter(|p| !p.starts_with("invariant ") || !p.contains(" violated: ")),
    );
    let detail = match (broken.is_empty(), expected.is_empty()) {
        (true, true) => "no member broke an invariant or failed an assertion".into(),
        (true, false) => format!(
            "no member broke an invariant or failed an assertion; redb panicked reading damaged files {} time(s), caught: {}",
            expected.len(),
            expected.join("; ")
        ),
        _ => format!("{} broken: {}", broken.len(), broken.join("; ")),
    };
    Check {
        name: "assertions".into(),
        passed: Some(broken.is_empty()),
        detail,
    }
}

/// Which members led which term, as seen from their own status.
#[derive(Default)]
struct ElectionClaims {
    /// term → (member, first seen) of the first leader seen in it.
    by_term: std::collections::BTreeMap<u64, (usize, Duration)>,
    /// Terms with a second leader: (term, first, second, when the second was seen).
    split: Vec<(u64, usize, usize, Duration)>,
    /// member id → the (term, vote) it last had on disk (by id: a member removed, wiped and
    /// added back is a new member).
    votes: std::collections::BTreeMap<u64, (u64, u64)>,
    /// On-disk votes sampled, and the first broken promise.
    vote_samples: u64,
    vote_fault: Option<String>,
    /// member index → the ids it ran under, in order (a member whose storage was damaged
    /// rejoins under a new id; an id it left must never run again).
    ids: std::collections::BTreeMap<usize, Vec<u64>>,
    stop: bool,
}

impl ElectionClaims {
    fn saw(&mut self, term: u64, member: usize, at: Duration) {
        let first = *self.by_term.entry(term).or_insert((member, at));
        if first.0 != member && !self.split.iter().any(|x| x.0 == term && x.2 == member) {
            self.split.push((term, first.0, member, at));
        }
    }

    /// A member's term and vote as on its disk. The term never goes back, and within one term
    /// a vote once given never changes (nor is forgotten): Raft's safety rests on both.
    /// Member `i` runs under `id`. A new id is a rejoin (or an operator's replacement); an
    /// id it ran under before and left is a damaged member speaking again under the id
    /// whose log it lost.
    fn saw_id(&mut self, i: usize, id: u64, at: Duration) {
        let ids = self.ids.entry(i).or_default();
        if ids.last() == Some(&id) {
            return;
        }
        if ids.contains(&id) {
            self.vote_fault.get_or_insert_with(|| {
                format!(
                    "member {id:x} at {:.3} s: it runs again after its member left that id (ids {})",
                    at.as_secs_f64(),
                    ids.iter().map(|x| format!("{x:x}")).collect::<Vec<_>>().join(" → ")
                )
            });
        }
        ids.push(id);
    }

    fn saw_vote(&mut self, member: u64, term: u64, vote: u64, at: Duration) {
        self.vote_samples += 1;
        if let Some(&(t0, v0)) = self.votes.get(&member) {
            let broken = if term < t0 {
                Some(format!("its term went back from {t0} to {term}"))
            } else if term == t0 && v0 != 0 && vote == 0 {
                Some(format!("it forgot its vote for {v0:x} in term {term}"))
            } else if term == t0 && v0 != 0 && vote != v0 {
                Some(format!(
                    "its vote in term {term} changed from {v0:x} to {vote:x}"
                ))
            } else {
                None
            };
            if let Some(b) = broken {
                self.vote_fault.get_or_insert_with(|| {
                    format!("member {member:x} at {:.3} s: {b}", at.as_secs_f64())
                });
            }
        }
        self.votes.insert(member, (term, vote));
    }

    fn check_votes(&self) -> Check {
        Check {
            name: "vote-durability".into(),
            passed: Some(self.vote_fault.is_none()),
            detail: match &self.vote_fault {
                None => {
                    let new_ids: Vec<String> = self
                        .ids
                        .iter()
                        .filter(|(_, v)| v.len() > 1)
                        .map(|(i, v)| {
                            let v: Vec<String> = v.iter().map(|x| format!("{x:x}")).collect();
                            format!("member {i}: {}", v.join(" → "))
                        })
                        .collect();
                    let mut d = format!(
                        "no vote on disk changed within its term ({} samples)",
                        self.vote_samples
                    );
                    if !new_ids.is_empty() {
                        d.push_str(&format!(
                            "; members under new ids, none back under an old one ({})",
                            new_ids.join("; ")
                        ));
                    }
                    d
                }
                Some(f) => f.clone(),
            },
        }
    }

    fn check(&self) -> Check {
        match self.split.first() {
            None => Check {
                name: "election-safety".into(),
                passed: Some(true),
                detail: format!(
                    "one leader per term ({} terms with a leader)",
                    self.by_term.len()
                ),
            },
            Some(&(term, a, b, at)) => Check {
                name: "election-safety".into(),
                passed: Some(false),
                detail: format!(
                    "term {term} had two leaders: member {a}, and member {b} at {:.3} s",
                    at.as_secs_f64()
                ),
            },
        }
    }
}

async fn wait_for_leader(members: &[MemberSim], limit: Duration) {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if members
            .iter()
            .any(|m| m.shared().is_some_and(|s| s.status().is_leader))
        {
            return;
        }
        detcd_node::rt::sleep(Duration::from_millis(50)).await;
    }
}

/// The members' stores as the simulator sees them: each member's applied index, store
/// index and store digest, read from its `Shared` (a member that is down has none).
struct Stores<'a>(&'a [MemberSim]);

impl crate::final_checks::Stores for Stores<'_> {
    /// (applied index, v2 store index, v2 digest, v3 revision, v3 keyspace digest, the
    /// keyspace's HashKV at its revision: etcd's own check that members agree).
    type State = (u64, u64, u64, i64, u64, u32);

    async fn states(&self) -> Vec<Option<Self::State>> {
        self.0
            .iter()
            .map(|m| {
                m.shared().map(|s| {
                    let st = s.status();
                    let sm = s.sm.lock().unwrap();
                    let mut v3 = s.mvcc.lock().unwrap();
                    // The digest is of a dump, which holds what is committed: commit the
                    // open batch first, as the Snapshot and Hash calls do (a member that
                    // stopped on a storage failure refuses, and digests as it stands).
                    let _ = v3.flush(false);
                    (
                        st.applied,
                        sm.store.index(),
                        sm.store.digest(),
                        v3.revision(),
                        v3_digest(&v3),
                        v3.hash_kv(0).map_or(0, |h| h.hash),
                    )
                })
            })
            .collect()
    }

    fn same(a: &Self::State, b: &Self::State) -> bool {
        (a.1, a.2, a.3, a.4, a.5) == (b.1, b.2, b.3, b.4, b.5)
    }

    fn agreed(n: usize, s: &Self::State) -> String {
        format!(
            "all {n} members at store index {} with digest {:016x}, v3 revision {} with digest {:016x} and HashKV {}",
            s.1, s.2, s.3, s.4, s.5
        )
    }

    fn differ(states: &[Option<Self::State>]) -> String {
        format!("(applied, store index, digest, v3 revision, v3 digest, HashKV): {states:?}")
    }
}

/// FNV-1a of the v3 keyspace's contents: every kept revision of every key, the leases, the
/// revision and the compacted revision (its dump without the consistent index, which is the
/// member's own applied index, and without the dump's CRC, which covers that index). 0 if the
/// keyspace cannot be read.
fn v3_digest(v3: &detcd_node::mvcc::Mvcc) -> u64 {
    const HEADER: usize = 16 + 8; // magic, consistent index
    const CRC: usize = 4;
    match v3.dump().and_then(|d| d.encode()) {
        Ok(bytes) if bytes.len() > HEADER + CRC => bytes[HEADER..bytes.len() - CRC]
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
            }),
        _ => 0,
    }
}

/// Run `body` against a freshly started cluster of `s` inside a seeded madsim runtime (for
/// tests that drive the cluster themselves). The body runs on a client machine with an
/// address; it gets the members and can use the nemesis.
pub fn with_cluster<T, F, Fut>(s: &Scenario, seed: u64, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Arc<Vec<MemberSim>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let s = s.clone();
    std::thread::spawn(move || {
        let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim_config(&s));
        rt.block_on(async move {
            let handle = madsim::runtime::Handle::current();
            let fp = failpoints(&s, seed);
            let pki = cluster::pki(&s);
            let members = Arc::new(cluster::start(&s, seed, &fp, pki.as_ref()));
            wait_for_leader(&members, Duration::from_secs(20)).await;
            let node = handle
                .create_node()
                .name("test-client")
                .ip("10.0.1.9".parse().unwrap())
                .build();
            node.spawn(body(members)).await.expect("test body")
        })
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}
