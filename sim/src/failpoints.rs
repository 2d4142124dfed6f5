//! The simulator's side of the node's [`Probe`]: failpoints that crash or pause a member at a
//! named point of its code (the scenario's `[[failpoints]]` and swarm's), hit counts for the
//! report, the invariants members report as broken, and every other panic inside a member.
//!
//! A crash at a failpoint happens in the middle of the member's step: its disk drops what
//! was not synced and takes no more writes ([`SimDisk::crash_frozen`]), madsim kills its
//! tasks (so nothing the rest of the step sends gets out), observers stop seeing it (what
//! the rest of the step publishes never happened), and it restarts `duration_s` later. A pause takes effect at the member's next await.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle};
use madsim::task::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use detcd_node::raft::Shared;
use detcd_node::rt::{Probe, ProbeHandler};

use crate::disk::SimDisk;
use crate::output::FaultEvent;
use crate::scenario::{FailpointAction, FailpointRule, Target};

/// An invariant a member reported broken.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The member's index.
    pub member: usize,
    /// The invariant.
    pub name: &'static str,
    /// What was seen.
    pub detail: String,
    /// When (ns since the load started; 0 before it).
    pub at_ns: u64,
}

#[derive(Default)]
struct Armed {
    rules: Vec<FailpointRule>,
    /// Per rule: hits it counted, times it fired.
    counted: Vec<u64>,
    fired: Vec<u64>,
    rng: Option<ChaCha8Rng>,
    hits: BTreeMap<&'static str, u64>,
    events: Vec<FaultEvent>,
    violations: Vec<Violation>,
    /// Per Raft index, the entry the first member to apply it applied: (term, hash of its
    /// bytes, member).
    applied: std::collections::BTreeMap<u64, (u64, u64, usize)>,
}

/// The failpoints of one run, shared by its members' probes.
#[derive(Clone)]
pub struct Failpoints {
    armed: Arc<Mutex<Armed>>,
    /// When the load started (set by the run; no failpoint fires before).
    pub start: Arc<OnceLock<tokio::time::Instant>>,
    /// A machine of the harness's own that restarts and resumes members.
    timers: Option<Arc<NodeHandle>>,
}

/// What a member's probe needs to act on it.
pub struct MemberHandle {
    /// Index.
    pub index: usize,
    /// madsim's node, once built.
    pub node: Arc<OnceLock<NodeId>>,
    /// Its disk.
    pub disk: SimDisk,
    /// Its incarnations (a restart is skipped if another fault restarted it meanwhile).
    pub incarnations: Arc<AtomicU64>,
    /// Set while a `replace` fault owns it.
    pub replacing: Arc<AtomicBool>,
    /// Its running state (for its role).
    pub shared: Arc<Mutex<Option<Arc<Shared>>>>,
}

struct MemberProbe {
    fp: Failpoints,
    m: MemberHandle,
}

impl Failpoints {
    /// Failpoints armed with `rules` (seeded), hosting their timers on a machine of their
    /// own when there are any.
    pub fn new(rules: Vec<FailpointRule>, seed: u64) -> Failpoints {
        let timers = (!rules.is_empty()).then(|| {
            Arc::new(
                Handle::current()
                    .create_node()
                    .name("failpoints")
                    .ip("10.0.1.4".parse().unwrap())
                    .build(),
            )
        });
        let n = rules.len();
        Failpoints {
            armed: Arc::new(Mutex::new(Armed {
                rules,
                counted: vec![0; n],
                fired: vec![0; n],
                rng: Some(ChaCha8Rng::seed_from_u64(seed)),
                ..Default::default()
            })),
            start: Arc::default(),
            timers,
        }
    }

    /// The probe member `m` runs with.
    pub fn probe(&self, m: MemberHandle) -> Probe {
        Probe::with_handler(Arc::new(MemberProbe {
            fp: self.clone(),
            m,
        }))
    }

    fn now_ns(&self) -> Option<u64> {
        self.start.get().map(|s| s.elapsed().as_nanos() as u64)
    }

    /// Crashes and pauses done at failpoints so far, as fault events.
    pub fn events(&self) -> Vec<FaultEvent> {
        self.armed.lock().unwrap().events.clone()
    }

    /// Hits per failpoint (every member, whole run, fired or not).
    pub fn hits(&self) -> Vec<(String, u64)> {
        let hits = &self.armed.lock().unwrap().hits;
        detcd_node::failpoints::ALL
            .iter()
            .map(|(n, _)| (n.to_string(), hits.get(n).copied().unwrap_or(0)))
            .collect()
    }

    /// Invariants members reported broken.
    pub fn violations(&self) -> Vec<Violation> {
        self.armed.lock().unwrap().violations.clone()
    }
}

impl MemberProbe {
    /// The rule that fires at this hit, if one does.
    fn fires(&self, name: &'static str) -> Option<FailpointRule> {
        let at_ns = self.fp.now_ns()?;
        let is_leader = || {
            self.m
                .shared
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|s| s.status().is_leader)
        };
        let mut armed = self.fp.armed.lock().unwrap();
        let armed = &mut *armed;
        for (i, r) in armed.rules.iter().enumerate() {
            let targeted = match r.target {
                Target::Random => true,
                Target::Member(m) => m == self.m.index,
                Target::Leader => is_leader(),
                Target::Follower => !is_leader(),
            };
            if r.name != name
                || !targeted
                || (at_ns as f64) < r.after_s * 1e9
                || armed.fired[i] >= r.times
            {
                continue;
            }
            armed.counted[i] += 1;
            let rng = armed.rng.as_mut().expect("seeded");
            let fire = if r.nth > 0 {
                armed.counted[i].is_multiple_of(r.nth)
            } else {
                rng.gen_bool(r.probability)
            };
            if fire {
                armed.fired[i] += 1;
                return Some(r.clone());
            }
        }
        None
    }
}

impl ProbeHandler for MemberProbe {
    fn hit(&self, name: &'static str) {
        *self.fp.armed.lock().unwrap().hits.entry(name).or_default() += 1;
        if self.m.replacing.load(Ordering::SeqCst) {
            return;
        }
        let Some(rule) = self.fires(name) else {
            return;
        };
        let (Some(&node), Some(timers), Some(start_ns)) =
            (self.m.node.get(), &self.fp.timers, self.fp.now_ns())
        else {
            return;
        };
        let dur = Duration::from_secs_f64(rule.duration_s);
        let handle = Handle::current();
        let detail = match rule.action {
            FailpointAction::Crash => {
                let lost = self.m.disk.crash_frozen();
                handle.kill(node);
                // The rest of the member's step still runs (to its next await) and may
                // publish state that never reached the disk (a term written, not fsynced):
                // observers must not see the dead member, as they would not see a process.
                *self.m.shared.lock().unwrap() = None;
                let inc = self.m.incarnations.load(Ordering::SeqCst);
                let (replacing, incarnations) =
                    (self.m.replacing.clone(), self.m.incarnations.clone());
                timers.spawn(async move {
                    detcd_node::rt::sleep(dur).await;
                    if !replacing.load(Ordering::SeqCst)
                        && incarnations.load(Ordering::SeqCst) == inc
                    {
                        Handle::current().restart(node);
                    }
                });
                format!("crashed at {name}: {lost} unsynced bytes lost")
            }
            FailpointAction::Pause => {
                handle.pause(node);
                timers.spawn(async move {
                    detcd_node::rt::sleep(dur).await;
                    Handle::current().resume(node);
                });
                format!("paused at {name}")
            }
        };
        let kind = match rule.action {
            FailpointAction::Crash => "failpoint-crash",
            FailpointAction::Pause => "failpoint-pause",
        };
        self.fp.armed.lock().unwrap().events.push(FaultEvent {
            kind: kind.into(),
            targets: vec![self.m.index],
            start_ns,
            end_ns: start_ns + dur.as_nanos() as u64,
            detail,
        });
    }

    fn applied(&self, index: u64, term: u64, data: &[u8]) {
        use std::hash::Hasher;
        // SipHash with fixed keys: the same bytes give the same hash in every run.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(data);
        let hash = h.finish();
        let me = self.m.index;
        let mut armed = self.fp.armed.lock().unwrap();
        let first = *armed.applied.entry(index).or_insert((term, hash, me));
        if first.0 != term || first.1 != hash {
            let at_ns = self.fp.now_ns().unwrap_or(0);
            armed.violations.push(Violation {
                member: me,
                name: "applied-entries-agree",
                detail: format!(
                    "applied entry {index} of term {term} (hash {hash:016x}); member {} applied entry {index} of term {} (hash {:016x})",
                    first.2, first.0, first.1
                ),
                at_ns,
            });
        }
    }

    fn violated(&self, name: &'static str, detail: &str) {
        let at_ns = self.fp.now_ns().unwrap_or(0);
        self.fp.armed.lock().unwrap().violations.push(Violation {
            member: self.m.index,
            name,
            detail: detail.to_string(),
            at_ns,
        });
    }
}

thread_local! {
    /// Panics seen on this thread while [`capture_panics`] is on: one simulation per thread.
    static PANICS: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// From now on, panics on this thread (a simulation runs every member on its own thread)
/// are kept for [`take_panics`], besides being printed as usual.
pub fn capture_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let _ = PANICS.try_with(|p| {
                if let Some(v) = p.borrow_mut().as_mut() {
                    v.push(format!("{msg}{at}"));
                }
            });
            previous(info);
        }));
    });
    PANICS.with(|p| *p.borrow_mut() = Some(Vec::new()));
}

/// The panics kept since [`capture_panics`] (and stop keeping them).
pub fn take_panics() -> Vec<String> {
    PANICS.with(|p| p.borrow_mut().take().unwrap_or_default())
}
