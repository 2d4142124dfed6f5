//! The nemesis: faults applied to the simulated cluster at seeded or scheduled times, each
//! recorded with its simulated start and end.
//!
//! Partitions clog links between members only (clients keep reaching every member, as in
//! Jepsen); a crash kills the member's process and drops its disk's unsynced bytes; a pause
//! stops all of a member's tasks and timers; clock skew moves only that member's wall clock.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::Handle;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::cluster::MemberSim;
use crate::disk::DiskArea;
use crate::faultplan::{Chosen, PlanLine};
use crate::scenario::{kind_name, DiskFault, Fault, FaultKind, Scenario};

pub use crate::output::FaultEvent;

/// How long a replacement retries a removal the cluster refuses.
const REMOVE_RETRY_FOR: Duration = Duration::from_secs(60);

/// Applies faults to the cluster. Each fault of a timeline runs as its own task (faults
/// overlap), with its own seeded rng; overlapping partitions heal together.
#[derive(Clone)]
pub struct Nemesis {
    members: Arc<Vec<MemberSim>>,
    rng: ChaCha8Rng,
    start: tokio::time::Instant,
    /// Faults applied so far.
    pub events: Arc<Mutex<Vec<FaultEvent>>>,
    /// Storage faults per member: how many are in force, and whether one ever hit it.
    pub disks: Arc<Mutex<DiskFaults>>,
}

/// What the nemesis knows of the storage faults it caused (see [`Nemesis::supervise_disks`]).
#[derive(Debug, Default)]
pub struct DiskFaults {
    /// Storage faults in force, per member.
    active: std::collections::BTreeMap<usize, u32>,
    /// Members a storage fault ever hit: their stops are the expected outcome of the damage.
    pub damaged: BTreeSet<usize>,
    /// Members whose data a fault damaged (a bit flip, a misdirected write, a read error):
    /// they rejoin under a new id. One that only saw failed fsyncs or a full disk stopped
    /// with its disk intact (what it had not made durable it never acknowledged).
    pub corrupted: BTreeSet<usize>,
    /// Members the nemesis replaced (removed, wiped, added back): they run under new ids.
    pub replaced: BTreeSet<usize>,
    /// Refusals to start (none is expected: a damaged member rejoins, an intact one starts).
    pub unexpected: Vec<String>,
    /// When each storage fault on a member began (ns after the start), per member.
    begun: std::collections::BTreeMap<usize, Vec<u64>>,
    /// The member's start count, and the time, when the supervisor last restarted it: if it
    /// stops again without having started since, and no storage fault began on it between
    /// that restart and its stop (one may land during a slow start, such as a rejoin's wait
    /// to be added back), it refused to start.
    restarted_at: std::collections::BTreeMap<usize, (u64, u64)>,
}

/// Stream number `salt` forked from `rng`.
fn fork_rng(rng: &ChaCha8Rng, salt: u64) -> ChaCha8Rng {
    let base = crate::faultplan::base_of(rng);
    ChaCha8Rng::seed_from_u64(crate::faultplan::fault_seed(base, salt))
}

fn node_id(m: &MemberSim) -> madsim::task::NodeId {
    m.node.id()
}

/// Start a crashed member again, unless another fault started it meanwhile (its incarnation
/// moved past `inc`) or is replacing it (it is out of the cluster until the replacement adds
/// it back): then that fault owns it, and the returned note says so.
fn restart_after_crash(handle: &Handle, m: &MemberSim, inc: u64) -> Option<&'static str> {
    if m.replacing.load(std::sync::atomic::Ordering::SeqCst) {
        Some("left down: it is being replaced")
    } else if m.incarnations.load(std::sync::atomic::Ordering::SeqCst) == inc {
        handle.restart(node_id(m));
        None
    } else {
        Some("already restarted by another fault")
    }
}

impl Nemesis {
    /// A nemesis over `members`, seeded.
    pub fn new(members: Arc<Vec<MemberSim>>, seed: u64, start: tokio::time::Instant) -> Nemesis {
        Nemesis {
            members,
            rng: ChaCha8Rng::seed_from_u64(seed),
            start,
            events: Arc::default(),
            disks: Arc::default(),
        }
    }

    /// A copy for one fault, with its own rng stream (fault number `salt` of a run's plan).
    pub fn fork(&self, salt: u64) -> Nemesis {
        let mut n = self.clone();
        n.rng = fork_rng(&self.rng, salt);
        n
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Ask the members, as an operator would, who leads (`/v2/members/leader`).
    pub async fn find_leader(&self) -> Option<usize> {
        for m in self.members.iter() {
            let c = crate::client::member_client(&m.client_addr(), Duration::from_millis(500));
            if let Ok(l) = c.leader().await {
                if let Some(x) = self.members.iter().find(|x| x.name == l.name) {
                    return Some(x.index);
                }
            }
        }
        None
    }

    /// The members `kind` hits, chosen by the shared rule (the cluster is asked who leads
    /// only when the choice depends on it).
    async fn choose(&mut self, kind: &FaultKind) -> Chosen {
        let leader = if crate::faultplan::needs_leader(kind) {
            self.find_leader().await
        } else {
            None
        };
        crate::faultplan::choose(kind, self.members.len(), leader, &mut self.rng)
    }

    /// Replace member `t` as an operator would (see [`FaultKind::Replace`]); it stays out of
    /// the cluster for `absent`. Returns what happened.
    async fn replace(&self, t: usize, absent: Duration) -> String {
        let handle = Handle::current();
        let m = &self.members[t];
        let others: Vec<String> = self
            .members
            .iter()
            .filter(|x| x.index != t)
            .map(|x| x.client_addr())
            .collect();
        if others.is_empty() {
            // A one-member cluster (a shrunk scenario, say) has no one to remove it and add
            // it back: an operator restores it from a backup instead. Left as it is.
            return "not replaced: it is the cluster's only member".into();
        }
        let c = crate::client::client(&others, Duration::from_secs(2));
        let flag = |args: &[String], f: &str| {
            args.iter()
                .position(|a| a == f)
                .and_then(|i| args.get(i + 1).cloned())
                .unwrap_or_default()
        };
        let peer_url = flag(&m.args.lock().unwrap(), "-initial-advertise-peer-urls");
        if m.replacing.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // Overlapping replacements of one member: the first one does it.
            return "not replaced: a replacement of it is under way".into();
        }
        let first_time = self.disks.lock().unwrap().replaced.insert(t);
        // 1. remove it, retried as an operator retries: while the cluster has no leader,
        // and while the strict reconfiguration check refuses (a peer connected for less
        // than 5 s after a partition or a restart, say). A member still in the
        // configuration after a minute is left as it is, data and all.
        let mut removed = None;
        let give_up = tokio::time::Instant::now() + REMOVE_RETRY_FOR;
        let mut gone = false;
        while tokio::time::Instant::now() < give_up {
            if let Ok(ms) = c.members().await {
                match ms.iter().find(|x| x.peer_urls.contains(&peer_url)) {
                    Some(x) => {
                        if c.remove_member(&x.id).await.is_ok() {
                            removed = Some(x.id.clone());
                            gone = true;
                            break;
                        }
                    }
                    None => {
                        gone = true;
                        break;
                    }
                }
            }
            detcd_node::rt::sleep(Duration::from_millis(250)).await;
        }
        if !gone {
            // A try that timed out may still have been applied: look before giving up.
            for _ in 0..8 {
                if let Ok(ms) = c.members().await {
                    gone = !ms.iter().any(|x| x.peer_urls.contains(&peer_url));
                    break;
                }
                detcd_node::rt::sleep(Duration::from_millis(250)).await;
            }
        }
        if !gone {
            m.replacing
                .store(false, std::sync::atomic::Ordering::SeqCst);
            if first_time {
                self.disks.lock().unwrap().replaced.remove(&t);
            }
            return format!(
                "not replaced: its removal was refused for {} s",
                REMOVE_RETRY_FOR.as_secs()
            );
        }
        // 2. it stops on its own once it applies its removal; make sure, and wipe its data
        detcd_node::rt::sleep(Duration::from_millis(500)).await;
        handle.kill(node_id(m));
        m.disk.wipe();
        detcd_node::rt::sleep(absent).await;
        // 3. add it again (the strict reconfiguration check may refuse for a while)
        let mut added = None;
        for _ in 0..120 {
            match c.add_member(std::slice::from_ref(&peer_url)).await {
                Ok(x) => {
                    added = Some(x.id);
                    break;
                }
                Err(_) => detcd_node::rt::sleep(Duration::from_millis(250)).await,
            }
        }
        let Some(new_id) = added else {
            m.replacing
                .store(false, std::sync::atomic::Ordering::SeqCst);
            return format!(
                "removed {} but could not add it back within 30 s",
                removed.unwrap_or_default()
            );
        };
        // 4. start it with state `existing` and the cluster as it is now
        let mut initial = Vec::new();
        if let Ok(ms) = c.members().await {
            for x in ms {
                let name = if x.peer_urls.contains(&peer_url) {
                    m.name.clone()
                } else {
                    x.name.clone()
                };
                for u in x.peer_urls {
                    initial.push(format!("{name}={u}"));
                }
            }
        }
        {
            let mut args = m.args.lock().unwrap();
            let set = |args: &mut Vec<String>, f: &str, v: String| {
                if let Some(i) = args.iter().position(|a| a == f) {
                    args[i + 1] = v;
                }
            };
            set(&mut args, "-initial-cluster-state", "existing".into());
            if !initial.is_empty() {
                set(&mut args, "-initial-cluster", initial.join(","));
            }
        }
        // Its exit by removal was expected, not a failure.
        *m.exit.lock().unwrap() = None;
        m.replacing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        handle.restart(node_id(m));
        format!(
            "removed {}, data wiped, added back as {new_id}, restarted with state existing",
            removed.unwrap_or_else(|| "(not found)".into())
        )
    }

    /// Inflict a storage fault on member `t` for `dur` (see [`FaultKind::Disk`]). Returns
    /// what happened.
    async fn disk_fault(
        &self,
        t: usize,
        fault: DiskFault,
        area: DiskArea,
        dur: Duration,
    ) -> String {
        let handle = Handle::current();
        let m = &self.members[t];
        {
            let mut d = self.disks.lock().unwrap();
            *d.active.entry(t).or_default() += 1;
            let now = self.now_ns();
            d.begun.entry(t).or_default().push(now);
            d.damaged.insert(t);
        }
        let crash = || {
            handle.kill(node_id(m));
            m.disk.crash();
            m.incarnations.load(std::sync::atomic::Ordering::SeqCst)
        };
        let mut crashed = None;
        if fault.damages_data() {
            self.disks.lock().unwrap().corrupted.insert(t);
        }
        let mut detail = match fault {
            DiskFault::BitFlip => {
                let d = match m.disk.flip_synced_bit(area) {
                    Some((p, off, bit)) => {
                        format!("bit {bit} of byte {off} of {} flipped", p.display())
                    }
                    None => format!("no synced byte in area {}: nothing flipped", area.name()),
                };
                crashed = Some(crash());
                format!("{d}; crashed")
            }
            DiskFault::BitRot => match m.disk.flip_read_bit(area) {
                Some((p, off, bit, aimed)) => format!(
                    "bit {bit} of byte {off} of {} flipped under the running member{}",
                    p.display(),
                    if aimed {
                        ", in a range it read lately"
                    } else {
                        " (it read none of the area lately)"
                    }
                ),
                None => format!("no synced byte in area {}: nothing flipped", area.name()),
            },
            DiskFault::ReadError => {
                let d = match m.disk.read_error(area, 4096) {
                    Some((p, a, b)) => format!("reads of {}[{a}, {b}) fail with EIO", p.display()),
                    None => format!("no file of 4 KiB in area {}: no read error", area.name()),
                };
                crashed = Some(crash());
                format!("{d}; crashed")
            }
            DiskFault::MisdirectedWrite => {
                m.disk.misdirect_next_write(area);
                format!(
                    "the next write to area {} lands elsewhere in its file",
                    area.name()
                )
            }
            DiskFault::FsyncError => {
                m.disk.fail_syncs(1);
                "the next fsync fails with EIO and drops its pages".into()
            }
            DiskFault::DiskFull => {
                m.disk.set_free(Some(0));
                "the disk is full (ENOSPC)".into()
            }
        };
        detcd_node::rt::sleep(dur).await;
        m.disk.clear_faults();
        if fault == DiskFault::MisdirectedWrite && crashed.is_none() {
            // Restart through recovery, which reads wherever the write landed.
            crashed = Some(crash());
            detail.push_str("; crashed at the end");
        }
        if let Some(inc) = crashed {
            if let Some(why) = restart_after_crash(&handle, m, inc) {
                detail.push_str(&format!("; {why}"));
            }
        }
        if let Some(e) = m.exit.lock().unwrap().as_ref() {
            detail.push_str(&format!("; it stopped: {}", e.why));
        }
        let mut d = self.disks.lock().unwrap();
        *d.active.entry(t).or_default() -= 1;
        detail
    }

    /// The operator of a cluster whose disks fail, until `stop`: a member that a storage
    /// fault hit and that stopped on its own (as it must on a failed write or fsync, or a
    /// read that met damage) is started again once no storage fault is in force on it. A
    /// member whose data is damaged past repair rejoins under a new id by itself as it
    /// starts; if it stops again before it has started serving (it refused to start), that
    /// is noted as unexpected and it is replaced: removed, wiped, added back, as an operator
    /// would. Each action is a `repair` event.
    pub async fn supervise_disks(&self, stop: Arc<std::sync::atomic::AtomicBool>) {
        let handle = Handle::current();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            detcd_node::rt::sleep(Duration::from_millis(200)).await;
            let due: Vec<usize> = {
                let d = self.disks.lock().unwrap();
                d.damaged
                    .iter()
                    .copied()
                    .filter(|t| d.active.get(t).copied().unwrap_or(0) == 0)
                    .filter(|t| {
                        let m = &self.members[*t];
                        !m.replacing.load(std::sync::atomic::Ordering::SeqCst)
                            && m.exit.lock().unwrap().is_some()
                    })
                    .collect()
            };
            for t in due {
                let m = &self.members[t];
                let start_ns = self.now_ns();
                let Some(crate::cluster::Exit { why, at }) = m.exit.lock().unwrap().take() else {
                    continue;
                };
                let starts = m.starts.load(std::sync::atomic::Ordering::SeqCst);
                let exit_ns = (at - self.start).as_nanos() as u64;
                let refused = {
                    let d = self.disks.lock().unwrap();
                    d.restarted_at.get(&t).is_some_and(|&(s, restart_ns)| {
                        s == starts
                            && !d.begun.get(&t).is_some_and(|b| {
                                b.iter().any(|&at| at > restart_ns && at <= exit_ns)
                            })
                    })
                };
                // Stopped again without having started since the last restart, and no new
                // storage fault between that restart and the stop: it refuses to start (a
                // stop after it served again, or after a new fault hit it while it started,
                // is that fault's, and is restarted).
                let detail = if refused {
                    {
                        // A member whose data a fault damaged rejoins under a new id by
                        // itself (the node's `rejoin`); one that only saw failed fsyncs or
                        // a full disk has everything it acknowledged. Neither may refuse.
                        let mut d = self.disks.lock().unwrap();
                        let because = if d.corrupted.contains(&t) {
                            "though a member with damaged storage rejoins the cluster by itself"
                        } else {
                            "though no fault damaged its data (only failed fsyncs or a full disk)"
                        };
                        d.unexpected.push(format!(
                            "{} refused to start at {:.3} s {because}: {why}",
                            m.name,
                            start_ns as f64 / 1e9
                        ));
                    }
                    let r = self.replace(t, Duration::from_secs(1)).await;
                    format!("it stopped again ({why}); replaced: {r}")
                } else {
                    // Its process is gone (a real one exits): nothing of it may hold on.
                    handle.kill(node_id(m));
                    handle.restart(node_id(m));
                    let mut d = self.disks.lock().unwrap();
                    d.restarted_at.insert(t, (starts, self.now_ns()));
                    format!("it stopped ({why}); restarted")
                };
                self.events.lock().unwrap().push(FaultEvent {
                    kind: "repair".into(),
                    targets: vec![t],
                    start_ns,
                    end_ns: self.now_ns(),
                    detail,
                });
            }
        }
    }

    fn clog_between(&self, a: &[usize], b: &[usize]) {
        let net = NetSim::current();
        for &x in a {
            for &y in b {
                if x != y {
                    net.clog_link(node_id(&self.members[x]), node_id(&self.members[y]));
                    net.clog_link(node_id(&self.members[y]), node_id(&self.members[x]));
                }
            }
        }
    }

    /// Unclog every link between members.
    pub fn heal_network(&self) {
        let net = NetSim::current();
        for a in self.members.iter() {
            for b in self.members.iter() {
                if a.index != b.index {
                    net.unclog_link(node_id(a), node_id(b));
                }
            }
        }
    }

    /// Apply one fault and wait for its end, then undo it. `until_ns` is the end of the load
    /// (where a fault with duration 0 ends: [`crate::faultplan::hold`]).
    pub async fn apply(&mut self, f: &Fault, until_ns: u64) {
        let start_ns = self.now_ns();
        let dur = crate::faultplan::hold(f.duration_s, start_ns, until_ns);
        let n = self.members.len();
        let handle = Handle::current();
        let chosen = self.choose(&f.kind).await;
        let targets = chosen.targets(n);
        let mut detail = String::new();
        let one = match chosen {
            Chosen::One(t) => t,
            _ => 0,
        };
        match (&f.kind, chosen) {
            (FaultKind::Isolate { .. }, _) => {
                let t = one;
                let others: Vec<usize> = (0..n).filter(|i| *i != t).collect();
                self.clog_between(&[t], &others);
                detcd_node::rt::sleep(dur).await;
                self.heal_network();
            }
            (_, Chosen::Sides { minority, majority }) => {
                detail = format!("minority {minority:?} majority {majority:?}");
                self.clog_between(&minority, &majority);
                detcd_node::rt::sleep(dur).await;
                self.heal_network();
            }
            (_, Chosen::Bridge { bridge, a, b }) => {
                detail = format!("bridge {bridge} between {a:?} and {b:?}");
                self.clog_between(&a, &b);
                detcd_node::rt::sleep(dur).await;
                self.heal_network();
            }
            (_, Chosen::Ring) => {
                // Each member keeps links only to its two neighbours.
                let net = NetSim::current();
                for (i, j) in crate::faultplan::ring_cuts(n) {
                    net.clog_link(node_id(&self.members[i]), node_id(&self.members[j]));
                }
                detail = "ring".into();
                detcd_node::rt::sleep(dur).await;
                self.heal_network();
            }
            (FaultKind::OneWay { .. }, _) => {
                let t = one;
                let net = NetSim::current();
                for o in (0..n).filter(|i| *i != t) {
                    net.clog_link(node_id(&self.members[t]), node_id(&self.members[o]));
                }
                detail = format!("{t} hears the others; they do not hear it");
                detcd_node::rt::sleep(dur).await;
                self.heal_network();
            }
            (FaultKind::Crash { .. }, _) => {
                let m = &self.members[one];
                handle.kill(node_id(m));
                let lost = m.disk.crash();
                let inc = m.incarnations.load(std::sync::atomic::Ordering::SeqCst);
                detail = format!("{lost} unsynced bytes lost");
                detcd_node::rt::sleep(dur).await;
                if let Some(why) = restart_after_crash(&handle, m, inc) {
                    detail.push_str(&format!("; {why}"));
                }
            }
            (FaultKind::Replace { .. }, _) => {
                detail = self.replace(one, dur).await;
            }
            (FaultKind::Disk { fault, area, .. }, _) => {
                detail = self.disk_fault(one, *fault, *area, dur).await;
            }
            (FaultKind::RollingRestart, _) => {
                let step = dur / (n as u32).max(1);
                for t in 0..n {
                    let m = &self.members[t];
                    handle.kill(node_id(m));
                    m.disk.crash();
                    detcd_node::rt::sleep(step / 4).await;
                    handle.restart(node_id(m));
                    detcd_node::rt::sleep(step - step / 4).await;
                }
            }
            (FaultKind::PowerLoss, _) => {
                // All at one instant: no member gets to send or sync anything in between.
                let (mut lost, mut incs) = (Vec::new(), Vec::new());
                for m in self.members.iter() {
                    handle.kill(node_id(m));
                    lost.push(m.disk.crash());
                    incs.push(m.incarnations.load(std::sync::atomic::Ordering::SeqCst));
                }
                detail = format!("unsynced bytes lost per member {lost:?}");
                detcd_node::rt::sleep(dur).await;
                for (t, (m, inc)) in self.members.iter().zip(incs).enumerate() {
                    if let Some(why) = restart_after_crash(&handle, m, inc) {
                        detail.push_str(&format!("; member {t} {why}"));
                    }
                }
            }
            (FaultKind::Pause { .. }, _) => {
                handle.pause(node_id(&self.members[one]));
                detcd_node::rt::sleep(dur).await;
                handle.resume(node_id(&self.members[one]));
            }
            (
                FaultKind::ClockSkew {
                    offset_ms,
                    drift_ppm,
                    ..
                },
                _,
            ) => {
                let t = one;
                let now_wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64;
                {
                    let mut sk = self.members[t].clock.skew().lock().unwrap();
                    sk.offset_ms = *offset_ms;
                    sk.drift_ppm = *drift_ppm;
                    sk.drift_since_ms = now_wall;
                }
                detail = format!("offset {offset_ms} ms, drift {drift_ppm} ppm");
                detcd_node::rt::sleep(dur).await;
                *self.members[t].clock.skew().lock().unwrap() = Default::default();
            }
            (FaultKind::SlowDisk { fsync_ms, .. }, _) => {
                let disk = &self.members[one].disk;
                disk.set_stall(Duration::from_millis(*fsync_ms));
                detail = format!("every fsync {fsync_ms} ms slower");
                detcd_node::rt::sleep(dur).await;
                disk.set_stall(Duration::ZERO);
            }
            (FaultKind::Flaky { flap_ms, .. }, _) => {
                let t = one;
                let others: Vec<usize> = (0..n).filter(|i| *i != t).collect();
                let end = tokio::time::Instant::now() + dur;
                let flap = Duration::from_millis((*flap_ms).max(10));
                while tokio::time::Instant::now() < end {
                    self.clog_between(&[t], &others);
                    detcd_node::rt::sleep(flap / 2).await;
                    self.heal_network();
                    detcd_node::rt::sleep(flap / 2).await;
                }
            }
            (FaultKind::MinorityMajority { .. } | FaultKind::Bridge | FaultKind::Ring, _) => {
                unreachable!("a partition of the whole cluster chooses its sides")
            }
        }
        let end_ns = self.now_ns();
        self.events.lock().unwrap().push(FaultEvent {
            kind: kind_name(&f.kind).to_string(),
            targets,
            start_ns,
            end_ns,
            detail,
        });
    }
}

/// The faults of a run of `s` with `seed` as this driver carries them out, with the members
/// each hits in a cluster whose leader is `leader(start_ns)` when it starts: one fault's
/// stream, one choice of members, one window ([`crate::faultplan`]), as in [`Nemesis::apply`]
/// on a nemesis forked for each fault of the timeline (for the test that compares the two
/// drivers' plans).
pub fn planned(s: &Scenario, seed: u64, leader: impl Fn(u64) -> Option<usize>) -> Vec<PlanLine> {
    let plan = crate::faultplan::plan(s, seed);
    let root = ChaCha8Rng::seed_from_u64(crate::faultplan::nemesis_seed(seed));
    let n = s.cluster.members;
    plan.faults
        .iter()
        .map(|f| {
            let mut rng = fork_rng(&root, f.index as u64);
            let l = crate::faultplan::needs_leader(&f.fault.kind)
                .then(|| leader(f.start_ns))
                .flatten();
            let chosen = crate::faultplan::choose(&f.fault.kind, n, l, &mut rng);
            let end_ns = f.start_ns
                + crate::faultplan::hold(f.fault.duration_s, f.start_ns, plan.load_ns).as_nanos()
                    as u64;
            (f.start_ns, end_ns, f.kind_name(), chosen.targets(n))
        })
        .collect()
}

/// Members' indexes as a set, for reports.
pub fn set_of(v: &[usize]) -> BTreeSet<usize> {
    v.iter().copied().collect()
}
