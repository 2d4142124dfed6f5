//! The simulated cluster: each member a madsim node with its own IP, started through the
//! node's real entry point (`detcd_node::run`) with etcd's own flags, on a simulated disk that
//! outlives the process, with a clock the nemesis can skew.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle};

use detcd_node::config::{self, Parsed};
use detcd_node::raft::Shared;
use detcd_node::rt::Clock;
use detcd_node::Env;

use crate::disk::SimDisk;
use crate::failpoints::{Failpoints, MemberHandle};
use crate::scenario::Scenario;
use crate::seed::mix;

/// The client port every member listens on.
pub const CLIENT_PORT: u16 = 2379;
/// The peer port every member listens on.
pub const PEER_PORT: u16 = 2380;

/// One member.
pub struct MemberSim {
    /// Index in the cluster (0-based).
    pub index: usize,
    /// Its name (`infra<i>`).
    pub name: String,
    /// Its IP.
    pub ip: Ipv4Addr,
    /// madsim's node (stale after a restart: re-fetch by id).
    pub node: NodeHandle,
    /// Its disk.
    pub disk: SimDisk,
    /// Its clock (skewable).
    pub clock: Clock,
    /// Its running state, set each time it starts.
    pub shared: Arc<Mutex<Option<Arc<Shared>>>>,
    /// How many times it has started.
    pub incarnations: Arc<AtomicU64>,
    /// Why and when it last stopped, if it stopped on its own (error, removal).
    pub exit: Arc<Mutex<Option<Exit>>>,
    /// The flags its next start uses (a replaced member restarts with state `existing`).
    pub args: Arc<Mutex<Vec<String>>>,
    /// Set while a `replace` fault has it out of the cluster: no other fault may start it.
    pub replacing: Arc<std::sync::atomic::AtomicBool>,
    /// How many times the member has started serving (its storage recovered).
    pub starts: Arc<AtomicU64>,
}

/// Why and when a member stopped on its own.
#[derive(Debug, Clone)]
pub struct Exit {
    /// The error it stopped with.
    pub why: String,
    /// When (simulated time).
    pub at: tokio::time::Instant,
}

impl MemberSim {
    /// `ip:2379`.
    pub fn client_addr(&self) -> String {
        format!("{}:{CLIENT_PORT}", self.ip)
    }

    /// The member's state if it is running.
    pub fn shared(&self) -> Option<Arc<Shared>> {
        self.shared.lock().unwrap().clone()
    }
}

/// The member IPs of an `n`-member cluster.
pub fn member_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, (i + 1) as u8)
}

/// etcd flags for member `i`, exactly as the tutorial's static method writes them.
pub fn member_args(s: &Scenario, i: usize) -> Vec<String> {
    let n = s.cluster.members;
    let cluster: Vec<String> = (0..n)
        .map(|j| format!("infra{j}=http://{}:{PEER_PORT}", member_ip(j)))
        .collect();
    let ip = member_ip(i);
    let mut args: Vec<String> = [
        "--name".to_string(),
        format!("infra{i}"),
        "--data-dir".into(),
        format!("/data/infra{i}"),
        "-advertise-client-urls".into(),
        format!("http://{ip}:{CLIENT_PORT}"),
        "-listen-client-urls".into(),
        format!("http://0.0.0.0:{CLIENT_PORT}"),
        "-initial-advertise-peer-urls".into(),
        format!("http://{ip}:{PEER_PORT}"),
        "-listen-peer-urls".into(),
        format!("http://0.0.0.0:{PEER_PORT}"),
        "-initial-cluster-token".into(),
        "etcd-cluster".into(),
        "-initial-cluster".into(),
        cluster.join(","),
        "-initial-cluster-state".into(),
        "new".into(),
        "--heartbeat-interval".into(),
        s.cluster.heartbeat_ms.to_string(),
        "--election-timeout".into(),
        s.cluster.election_ms.to_string(),
        "--snapshot-count".into(),
        s.cluster.snapshot_count.to_string(),
        "--experimental-leader-sync-delay".into(),
        s.cluster.leader_sync_delay_ms.to_string(),
    ]
    .to_vec();
    if let Some(kib) = s.cluster.backend_cache_kib {
        args.push("--experimental-backend-cache-bytes".into());
        args.push((kib * 1024).to_string());
    }
    if s.cluster.tls {
        for a in args.iter_mut() {
            *a = a.replace("http://", "https://");
        }
        args.extend(crate::pki::Pki::member_flags(
            s.cluster.client_cert_auth,
            s.cluster.peer_client_cert_auth,
        ));
    }
    args
}

/// The certificates of a `tls = true` scenario's cluster (None without TLS); also sets how
/// this run's clients dial.
pub fn pki(s: &Scenario) -> Option<crate::pki::Pki> {
    let pki = s.cluster.tls.then(|| {
        let ips: Vec<String> = (0..s.cluster.members)
            .map(|i| member_ip(i).to_string())
            .collect();
        crate::pki::Pki::new(&ips)
    });
    crate::client::set_client_tls(pki.as_ref().map(|p| Arc::clone(&p.client)));
    pki
}

/// Start every member of the scenario's cluster, each with a probe into `fp`, with the
/// certificates of [`pki`]. A member that panics (a broken invariant, any assertion) is
/// restarted by madsim 1–10 s later, so the run goes on and its checks name what broke.
pub fn start(
    s: &Scenario,
    seed: u64,
    fp: &Failpoints,
    pki: Option<&crate::pki::Pki>,
) -> Vec<MemberSim> {
    let handle = Handle::current();
    (0..s.cluster.members)
        .map(|i| {
            let name = format!("infra{i}");
            let disk = SimDisk::new(
                mix(seed, i as u64, 0xd15c),
                (
                    Duration::from_micros(s.disk.fsync_us[0]),
                    Duration::from_micros(s.disk.fsync_us[1]),
                ),
                s.disk.torn_writes,
            )
            .with_exact_fsync(s.disk.exact_fsync);
            let clock = Clock::new();
            let shared: Arc<Mutex<Option<Arc<Shared>>>> = Arc::default();
            let incarnations = Arc::new(AtomicU64::new(0));
            let replacing: Arc<std::sync::atomic::AtomicBool> = Arc::default();
            let node_id = Arc::new(std::sync::OnceLock::new());
            let probe = fp.probe(MemberHandle {
                index: i,
                node: node_id.clone(),
                disk: disk.clone(),
                incarnations: incarnations.clone(),
                replacing: replacing.clone(),
                shared: shared.clone(),
            });
            let wal_segment_bytes =
                (s.disk.wal_segment_kib > 0).then_some(s.disk.wal_segment_kib << 10);
            let exit: Arc<Mutex<Option<Exit>>> = Arc::default();
            let starts: Arc<AtomicU64> = Arc::default();
            let args = Arc::new(Mutex::new(member_args(s, i)));
            // Members never boot in the same microsecond: each first start waits a seeded
            // part of a heartbeat, so the members' Raft tickers run out of phase as real
            // ones do. In phase, two followers that drew the same election timeout (1 in
            // 10 with etcd's 10..20 ticks) campaign within a network delay of each other
            // and split the vote, which no real cluster does that often.
            let boot_offset = Duration::from_micros(
                mix(seed, i as u64, 0xb007) % (s.cluster.heartbeat_ms.max(1) * 1000),
            );
            let pki = pki.cloned();
            let args2 = args.clone();
            let (d, c, sh, inc, ex, st) = (
                disk.clone(),
                clock.clone(),
                shared.clone(),
                incarnations.clone(),
                exit.clone(),
                starts.clone(),
            );
            let node = handle
                .create_node()
                .name(name.clone())
                .ip(IpAddr::V4(member_ip(i)))
                .restart_on_panic()
                .init(move || {
                    let incarnation = inc.fetch_add(1, Ordering::SeqCst);
                    let args = args2.lock().unwrap().clone();
                    let disk = d.clone();
                    let clock = c.clone();
                    let slot = sh.clone();
                    let exit = ex.clone();
                    let pki = pki.clone();
                    let probe = probe.clone();
                    let starts = st.clone();
                    *slot.lock().unwrap() = None;
                    disk.thaw();
                    async move {
                        if incarnation == 0 {
                            madsim::time::sleep(boot_offset).await;
                        }
                        let env_none = |_: &str| None;
                        let no_file = |p: &std::path::Path| -> std::io::Result<String> {
                            Err(std::io::Error::new(
                                std::io::ErrorKind::NotFound,
                                p.display().to_string(),
                            ))
                        };
                        let cfg = match config::parse(&args, &env_none, &no_file) {
                            Ok(Parsed::Run(cfg, _)) => *cfg,
                            other => panic!("simulated member flags must parse: {:?}", other.err()),
                        };
                        let tls = match &pki {
                            Some(p) => detcd_node::tls::load(&cfg, &|f| p.read(f))
                                .expect("simulated member certificates load"),
                            None => Default::default(),
                        };
                        let slot2 = slot.clone();
                        let env = Env {
                            disk: Arc::new(disk),
                            clock,
                            seed: mix(seed, i as u64, incarnation),
                            tls,
                            on_start: Some(Box::new(move |s| {
                                starts.fetch_add(1, Ordering::SeqCst);
                                *slot2.lock().unwrap() = Some(s);
                            })),
                            probe,
                            wal_segment_bytes,
                        };
                        if let Err(e) = detcd_node::run(cfg, env).await {
                            tracing::warn!(member = i, error = %e, "member stopped");
                            *exit.lock().unwrap() = Some(Exit {
                                why: e.to_string(),
                                at: tokio::time::Instant::now(),
                            });
                        }
                        *slot.lock().unwrap() = None;
                    }
                })
                .build();
            let _ = node_id.set(node.id());
            MemberSim {
                index: i,
                name,
                ip: member_ip(i),
                node,
                disk,
                clock,
                shared,
                incarnations,
                exit,
                args,
                replacing,
                starts,
            }
        })
        .collect()
}
