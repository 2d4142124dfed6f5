//! Real-cluster runs (`detcd-real SCENARIO --seed N [--server detcd|etcd]`): the scenario's
//! cluster as containers on a private Docker network, the same seeded workload (built for
//! tokio), faults applied with Docker, and the same history, checks and report as a
//! simulated run — so what the simulator proves can be seen on real processes, beside etcd.
//!
//! Faults: `crash` (SIGKILL of the member's process, then `docker start`: the member recovers
//! from its data), `pause` (`docker pause`), `isolate` (`docker network disconnect`), `flaky`
//! (disconnect and reconnect every `flap_ms`), `rolling-restart` (kill and start each member in
//! turn), and the per-link partitions `one-way`, `bridge`, `ring`, `minority-majority` with
//! iptables run (nsenter) inside each container's network namespace. Faults a real cluster
//! cannot take — per-member clock skew (containers share the host's clock), `replace`
//! (simulator-only so far), links that cannot be filtered on this host — are recorded as
//! skipped, never faked.
//! Simulation-only counters (Raft messages, fsyncs) are not measured.
//!
//! With `--processes` the members are processes on 127.0.0.1 instead (`target/release/detcd`,
//! or `etcd` from the PATH, or `--bin PATH`), each with its own ports and data dir under the
//! temp dir: `crash` is SIGKILL and a restart with the same flags and data, `pause` is
//! SIGSTOP/SIGCONT; link faults are skipped (loopback is one network namespace).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallInstant};

use crate::faultplan::{hold, Chosen, PlanLine, PlannedFault};
use crate::output::{Check, FaultEvent, LeaderSample, MemberStats, RunOutput};
use crate::scenario::{FaultKind, Scenario};
use crate::workload::{self, Recorder};

/// Which server runs in the containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    /// detcd (`detcd:latest`, deploy/build-image).
    Detcd,
    /// etcd 3.4 from Debian's etcd-server (`etcd-debian:latest`, deploy/build-etcd-image).
    Etcd,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Detcd => "detcd",
            Server::Etcd => "etcd",
        }
    }
}

/// Where the members run.
enum Backend {
    /// Containers on a private Docker network, named `names`.
    Docker { net: String, names: Vec<String> },
    /// Processes on 127.0.0.1 (`--processes`): each member's command line, and its child
    /// while it runs; logs and data live under `work`.
    Local {
        work: PathBuf,
        bin: PathBuf,
        args: Vec<Vec<String>>,
        children: Mutex<Vec<Option<Child>>>,
        /// CPU ticks (`/proc`'s user + system) of member processes already killed.
        retired_ticks: Mutex<u64>,
    },
}

struct Cluster {
    backend: Backend,
    /// Members killed so far (their counters start again when they restart).
    kills: std::sync::atomic::AtomicU64,
    /// Each member's client address (`host:port`).
    addrs: Vec<String>,
    /// Each member's host (a container's IP, or 127.0.0.1).
    ips: Vec<String>,
}

impl Cluster {
    fn addr(&self, i: usize) -> String {
        self.addrs[i].clone()
    }
    fn addrs(&self) -> Vec<String> {
        self.addrs.clone()
    }

    /// Kill member `t` with SIGKILL; returns the instant the signal was sent, when the member
    /// stopped answering. (A whole `docker kill` returned ~100 ms after that here: the
    /// surviving members had elected a new leader before it did, and an unavailability window
    /// measured from its return missed the outage.)
    async fn kill(&self, t: usize) -> tokio::time::Instant {
        self.kills
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.backend {
            Backend::Docker { names, .. } => {
                // The container's process, killed from the host like a local one; docker
                // sees it exit. `docker kill` only if the pid cannot be had.
                let pid = docker_async(vec![
                    "inspect".into(),
                    "-f".into(),
                    "{{.State.Pid}}".into(),
                    names[t].clone(),
                ])
                .await
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .filter(|p| *p > 0);
                let killed = pid.is_some_and(|p| signal(p, "-9"));
                if !killed {
                    let _ = docker_async(vec!["kill".into(), names[t].clone()]).await;
                    return tokio::time::Instant::now();
                }
                let at = tokio::time::Instant::now();
                let _ = docker_async(vec!["wait".into(), names[t].clone()]).await;
                at
            }
            Backend::Local {
                children,
                retired_ticks,
                ..
            } => {
                let child = children.lock().unwrap()[t].take();
                let Some(mut ch) = child else {
                    return tokio::time::Instant::now();
                };
                *retired_ticks.lock().unwrap() += proc_ticks(ch.id()).unwrap_or(0);
                let _ = ch.kill();
                let at = tokio::time::Instant::now();
                let _ = tokio::task::spawn_blocking(move || ch.wait()).await;
                at
            }
        }
    }

    /// Start member `t` again with its data (a no-op if it runs).
    async fn start(&self, t: usize) {
        match &self.backend {
            Backend::Docker { names, .. } => {
                let _ = docker_async(vec!["start".into(), names[t].clone()]).await;
            }
            Backend::Local {
                children,
                work,
                bin,
                args,
                ..
            } => {
                let mut ch = children.lock().unwrap();
                let gone = match ch[t].as_mut() {
                    None => true,
                    Some(c) => c.try_wait().map(|s| s.is_some()).unwrap_or(true),
                };
                if gone {
                    match spawn_local(work, bin, t, &args[t]) {
                        Ok(c) => ch[t] = Some(c),
                        Err(e) => tracing::warn!("restarting member {t}: {e}"),
                    }
                }
            }
        }
    }

    /// Stop (`true`) or continue (`false`) every thread of member `t`.
    async fn pause(&self, t: usize, stop: bool) {
        match &self.backend {
            Backend::Docker { names, .. } => {
                let verb = if stop { "pause" } else { "unpause" };
                let _ = docker_async(vec![verb.into(), names[t].clone()]).await;
            }
            Backend::Local { children, .. } => {
                if let Some(ch) = children.lock().unwrap()[t].as_ref() {
                    signal(ch.id(), if stop { "-STOP" } else { "-CONT" });
                }
            }
        }
    }

    /// CPU ticks the member processes used so far, the killed ones included (processes
    /// only: a container's CPU is not measured).
    fn cpu_ticks(&self) -> Option<u64> {
        match &self.backend {
            Backend::Docker { .. } => None,
            Backend::Local {
                children,
                retired_ticks,
                ..
            } => {
                let live: u64 = children
                    .lock()
                    .unwrap()
                    .iter()
                    .flatten()
                    .filter_map(|c| proc_ticks(c.id()))
                    .sum();
                Some(live + *retired_ticks.lock().unwrap())
            }
        }
    }

    /// Why this backend cannot cut links, if it cannot.
    fn no_links(&self) -> Option<&'static str> {
        match &self.backend {
            Backend::Docker { .. } => None,
            Backend::Local { .. } => {
                Some("skipped: processes on loopback share one network namespace")
            }
        }
    }

    /// What is wrong with member `i`'s process or container, if anything.
    async fn not_running(&self, i: usize) -> Option<String> {
        match &self.backend {
            Backend::Docker { names, .. } => {
                let st = docker_async(vec![
                    "inspect".into(),
                    "-f".into(),
                    "{{.State.Status}}".into(),
                    names[i].clone(),
                ])
                .await
                .unwrap_or_else(|e| e);
                (st != "running").then(|| format!("{}: {st}", names[i]))
            }
            Backend::Local { children, .. } => {
                let mut ch = children.lock().unwrap();
                match ch[i].as_mut().map(|c| c.try_wait()) {
                    Some(Ok(None)) => None,
                    Some(Ok(Some(st))) => Some(format!("member {i}: exited ({st})")),
                    Some(Err(e)) => Some(format!("member {i}: {e}")),
                    None => Some(format!("member {i}: not running")),
                }
            }
        }
    }

    /// Where a member's output went (for the summary).
    fn logs(&self) -> String {
        match &self.backend {
            Backend::Docker { names, .. } => format!("docker logs {}", names.join(" | ")),
            Backend::Local { work, .. } => format!("{}/infra*.log", work.display()),
        }
    }
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run a docker command off the async threads.
async fn docker_async(args: Vec<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&a)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The etcd-style settings of member `i` of `n`, as `(flag, value)` pairs: both servers take
/// them as flags and as `ETCD_*` variables.
fn member_settings(
    s: &Scenario,
    server: Server,
    seed: u64,
    i: usize,
    client: &str,
    peer: &str,
    initial: &str,
) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("name", format!("infra{i}")),
        ("advertise-client-urls", format!("http://{client}")),
        ("initial-advertise-peer-urls", format!("http://{peer}")),
        ("initial-cluster", initial.to_string()),
        ("initial-cluster-state", "new".to_string()),
        ("initial-cluster-token", format!("real-{seed}")),
        ("heartbeat-interval", s.cluster.heartbeat_ms.to_string()),
        ("election-timeout", s.cluster.election_ms.to_string()),
        ("snapshot-count", s.cluster.snapshot_count.to_string()),
        ("enable-v2", "true".to_string()),
    ];
    // detcd's own flag, only when the scenario changes it (etcd refuses unknown flags, and
    // the benchmarks give both servers the same flags).
    let default_delay = crate::scenario::ClusterSpec::default().leader_sync_delay_ms;
    if server == Server::Detcd && s.cluster.leader_sync_delay_ms != default_delay {
        settings.push((
            "experimental-leader-sync-delay",
            s.cluster.leader_sync_delay_ms.to_string(),
        ));
    }
    settings
}

fn start_cluster(s: &Scenario, server: Server, seed: u64) -> Result<Cluster, String> {
    let id = std::process::id();
    let net = format!("detcd-real-{id}");
    let subnet = format!("172.31.{}.0/24", id % 250);
    docker(&["network", "create", "--subnet", &subnet, &net])?;
    let n = s.cluster.members;
    let ips: Vec<String> = (0..n)
        .map(|i| format!("172.31.{}.{}", id % 250, 10 + i))
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("{net}-{i}")).collect();
    let initial: Vec<String> = (0..n)
        .map(|i| format!("infra{i}=http://{}:2380", ips[i]))
        .collect();
    let image = match server {
        Server::Detcd => "detcd:latest",
        Server::Etcd => "etcd-debian:latest",
    };
    let cluster = Cluster {
        kills: Default::default(),
        backend: Backend::Docker {
            net: net.clone(),
            names: names.clone(),
        },
        addrs: ips.iter().map(|ip| format!("{ip}:2379")).collect(),
        ips: ips.clone(),
    };
    for i in 0..n {
        let client = format!("{}:2379", ips[i]);
        let peer = format!("{}:2380", ips[i]);
        let mut env: Vec<String> =
            member_settings(s, server, seed, i, &client, &peer, &initial.join(","))
                .into_iter()
                .map(|(k, v)| format!("ETCD_{}={v}", k.to_uppercase().replace('-', "_")))
                .collect();
        env.push("ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379".to_string());
        env.push("ETCD_LISTEN_PEER_URLS=http://0.0.0.0:2380".to_string());
        env.push("ETCD_DATA_DIR=/data/member".to_string());
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            names[i].clone(),
            "--network".into(),
            net.clone(),
            "--ip".into(),
            ips[i].clone(),
        ];
        for e in &env {
            args.push("-e".into());
            args.push(e.clone());
        }
        args.push(image.into());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = docker(&a) {
            teardown(&cluster);
            return Err(e);
        }
    }
    Ok(cluster)
}

/// A free port pair on 127.0.0.1 for each member, below the ephemeral range (an outgoing
/// connection can hold a port in it), starting from a place that depends on this process.
/// `DETCD_REAL_PORTS=LOW-HIGH` searches that range instead of 21000-29100 (a machine whose
/// users keep to ranges of their own).
fn local_ports(n: usize) -> Result<Vec<(u16, u16)>, String> {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let (low, high) = std::env::var("DETCD_REAL_PORTS")
        .ok()
        .and_then(|v| {
            let (l, h) = v.split_once('-')?;
            Some((l.trim().parse::<u16>().ok()?, h.trim().parse::<u16>().ok()?))
        })
        .filter(|&(l, h)| l >= 1024 && h > l + 100)
        .unwrap_or((21000, 29100));
    // The last base whose ports all fit below `high`.
    let top = high - 2 * n as u16;
    let bases = ((top - low) / 20).max(1);
    let mut base = low + (std::process::id() as u16 % bases) * 20;
    for _ in 0..bases {
        let ports: Vec<(u16, u16)> = (0..n as u16)
            .map(|i| (base + 2 * i, base + 2 * i + 1))
            .collect();
        if ports.iter().all(|&(c, p)| free(c) && free(p)) {
            return Ok(ports);
        }
        base = if base + 20 > top { low } else { base + 20 };
    }
    Err(format!(
        "no free ports on 127.0.0.1 between {low} and {high}"
    ))
}

/// `/proc`'s clock ticks per second (USER_HZ, fixed at 100 in Linux's procfs ABI).
const PROC_TICKS_PER_S: f64 = 100.0;

/// User + system CPU ticks of process `pid` (Linux `/proc/PID/stat`, fields 14 and 15).
fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are counted from ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU used over the load phase: by the members, and by this load generator.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct CpuUse {
    members_s: f64,
    generator_s: f64,
}

/// Send `sig` (`-9`, `-STOP`, `-CONT`) to process `pid`; whether `kill` succeeded.
fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

fn spawn_local(work: &Path, bin: &Path, i: usize, args: &[String]) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work.join(format!("infra{i}.log")))
        .map_err(|e| format!("{}: {e}", work.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))
}

/// The scenario's cluster as processes of `bin` on 127.0.0.1 (`--processes`).
fn start_local(s: &Scenario, server: Server, bin: &Path, seed: u64) -> Result<Cluster, String> {
    let n = s.cluster.members;
    let ports = local_ports(n)?;
    let work = std::env::temp_dir().join(format!("detcd-real-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let initial: Vec<String> = (0..n)
        .map(|i| format!("infra{i}=http://127.0.0.1:{}", ports[i].1))
        .collect();
    let args: Vec<Vec<String>> = (0..n)
        .map(|i| {
            let client = format!("127.0.0.1:{}", ports[i].0);
            let peer = format!("127.0.0.1:{}", ports[i].1);
            let mut a: Vec<String> =
                member_settings(s, server, seed, i, &client, &peer, &initial.join(","))
                    .into_iter()
                    .map(|(k, v)| format!("--{k}={v}"))
                    .collect();
            a.push(format!("--listen-client-urls=http://{client}"));
            a.push(format!("--listen-peer-urls=http://{peer}"));
            a.push(format!(
                "--data-dir={}",
                work.join(format!("infra{i}")).display()
            ));
            a
        })
        .collect();
    let cluster = Cluster {
        kills: Default::default(),
        backend: Backend::Local {
            work: work.clone(),
            bin: bin.to_path_buf(),
            args: args.clone(),
            children: Mutex::new((0..n).map(|_| None).collect()),
            retired_ticks: Mutex::new(0),
        },
        addrs: ports
            .iter()
            .map(|(c, _)| format!("127.0.0.1:{c}"))
            .collect(),
        ips: vec!["127.0.0.1".to_string(); n],
    };
    for (i, a) in args.iter().enumerate() {
        match spawn_local(&work, bin, i, a) {
            Ok(c) => {
                if let Backend::Local { children, .. } = &cluster.backend {
                    children.lock().unwrap()[i] = Some(c);
                }
            }
            Err(e) => {
                teardown(&cluster);
                return Err(e);
            }
        }
    }
    Ok(cluster)
}

fn teardown(c: &Cluster) {
    match &c.backend {
        Backend::Docker { net, names } => {
            for n in names {
                let _ = docker(&["rm", "-f", n]);
            }
            let _ = docker(&["network", "rm", net]);
        }
        Backend::Local { work, children, .. } => {
            for ch in children.lock().unwrap().iter_mut().flatten() {
                signal(ch.id(), "-CONT"); // a stopped process would not die until continued
                let _ = ch.kill();
                let _ = ch.wait();
            }
            // The data dirs go; the members' logs stay for a look after the run.
            for i in 0..c.addrs.len() {
                let _ = std::fs::remove_dir_all(work.join(format!("infra{i}")));
            }
        }
    }
}

async fn disconnect(c: &Cluster, t: usize) {
    if let Backend::Docker { net, names } = &c.backend {
        let _ = docker_async(vec![
            "network".into(),
            "disconnect".into(),
            net.clone(),
            names[t].clone(),
        ])
        .await;
    }
}

async fn connect(c: &Cluster, t: usize) {
    if let Backend::Docker { net, names } = &c.backend {
        let _ = docker_async(vec![
            "network".into(),
            "connect".into(),
            "--ip".into(),
            c.ips[t].clone(),
            net.clone(),
            names[t].clone(),
        ])
        .await;
    }
}

/// Run `iptables ARGS` inside member `i`'s network namespace (nsenter into the container's
/// process), so links between members can be cut one by one.
async fn iptables(c: &Cluster, i: usize, args: &[&str]) -> Result<(), String> {
    let Backend::Docker { names, .. } = &c.backend else {
        return Err(c.no_links().unwrap_or_default().to_string());
    };
    let pid = docker_async(vec![
        "inspect".into(),
        "-f".into(),
        "{{.State.Pid}}".into(),
        names[i].clone(),
    ])
    .await?;
    let mut cmd: Vec<String> = vec!["-t".into(), pid, "-n".into(), "iptables".into()];
    cmd.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let out = Command::new("nsenter")
            .args(&cmd)
            .output()
            .map_err(|e| format!("nsenter: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nsenter {}: {}",
                cmd.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Drop what member `from` sends to member `to` (one direction).
async fn cut(c: &Cluster, from: usize, to: usize) -> Result<(), String> {
    iptables(c, from, &["-A", "OUTPUT", "-d", &c.ips[to], "-j", "DROP"]).await?;
    iptables(c, to, &["-A", "INPUT", "-s", &c.ips[from], "-j", "DROP"]).await
}

/// Cut every link between the two sides, both ways.
async fn cut_between(c: &Cluster, a: &[usize], b: &[usize]) -> Result<(), String> {
    for &x in a {
        for &y in b {
            if x != y {
                cut(c, x, y).await?;
                cut(c, y, x).await?;
            }
        }
    }
    Ok(())
}

/// Remove every cut.
async fn heal_links(c: &Cluster) {
    if c.no_links().is_some() {
        return;
    }
    for i in 0..c.ips.len() {
        let _ = iptables(c, i, &["-F", "INPUT"]).await;
        let _ = iptables(c, i, &["-F", "OUTPUT"]).await;
    }
}

/// Each member's `/metrics` counters (an empty map for a member that did not answer).
async fn scrape_all(c: &Cluster) -> Vec<HashMap<String, f64>> {
    let mut all = Vec::new();
    for i in 0..c.ips.len() {
        all.push(scrape(&c.addr(i)).await.unwrap_or_default());
    }
    all
}

/// `GET /metrics` over plain HTTP/1.0, parsed as Prometheus text: each metric's value, summed
/// over its labels.
async fn scrape(addr: &str) -> Option<HashMap<String, f64>> {
    Some(parse_metrics(&metrics_page(addr).await?))
}

/// The body of `GET /metrics` over plain HTTP/1.0 (None if the member did not answer 200).
async fn metrics_page(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = tokio::time::timeout(Duration::from_secs(2), async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    })
    .await
    .ok()??;
    let (head, body) = body.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.") || head.split(' ').nth(1) != Some("200") {
        return None;
    }
    Some(body.to_string())
}

/// Prometheus text format: `name{labels} value` lines, values of one name summed.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series).trim();
        *m.entry(name.to_string()).or_insert(0.0) += v;
    }
    m
}

/// What a member did between two scrapes, by the counters its server exposes: detcd's own,
/// or etcd 3.4's (fsyncs from the WAL fsync histogram's count, bytes from the peer byte
/// counters, entries from the committed-proposal count; etcd counts no Raft messages).
fn counter_delta(a: &HashMap<String, f64>, b: &HashMap<String, f64>) -> MemberStats {
    let d = |names: &[&str]| {
        names.iter().find_map(|n| {
            let (x, y) = (a.get(*n)?, b.get(*n)?);
            (y >= x).then(|| (y - x) as u64)
        })
    };
    MemberStats {
        msgs_sent: d(&["detcd_peer_sent_messages_total"]),
        bytes_sent: d(&[
            "detcd_peer_sent_bytes_total",
            "etcd_network_peer_sent_bytes_total",
        ]),
        fsyncs: d(&[
            "etcd_disk_wal_fsync_total",
            "etcd_disk_wal_fsync_duration_seconds_count",
        ]),
        entries: d(&[
            "detcd_wal_entries_total",
            "etcd_server_proposals_committed_total",
        ]),
    }
}

async fn leader(c: &Cluster) -> Option<usize> {
    for i in 0..c.ips.len() {
        let cl = crate::client::member_client(&c.addr(i), Duration::from_millis(500));
        if let Ok(l) = cl.leader().await {
            return l.name.strip_prefix("infra").and_then(|x| x.parse().ok());
        }
    }
    None
}

/// What one fault of the plan did (or why it was skipped). Its members are chosen by the
/// shared rule ([`crate::faultplan`]), the cluster asked who leads only when the choice
/// depends on it; it holds from when its command took effect for [`crate::faultplan::hold`].
async fn apply(
    c: Arc<Cluster>,
    f: PlannedFault,
    start: tokio::time::Instant,
    load_ns: u64,
) -> FaultEvent {
    tokio::time::sleep_until(start + Duration::from_nanos(f.start_ns)).await;
    let n = c.ips.len();
    let ns = |t: tokio::time::Instant| t.duration_since(start).as_nanos() as u64;
    let l = if f.needs_leader() {
        leader(&c).await
    } else {
        None
    };
    let chosen = f.choose(n, l);
    let planned_targets = chosen.targets(n);
    let one = match chosen {
        Chosen::One(t) => t,
        _ => 0,
    };
    let dur = |began: tokio::time::Instant| hold(f.fault.duration_s, ns(began), load_ns);
    let kind = f.kind_name().to_string();
    // The fault's window starts once its command has taken effect (a kill when its signal is
    // sent; a link cut once iptables has it): writes acknowledged before are not evidence of
    // availability under the fault.
    let mut began = tokio::time::Instant::now();
    let (targets, detail) = match (&f.fault.kind, chosen) {
        (FaultKind::Crash { .. }, _) => {
            began = c.kill(one).await;
            tokio::time::sleep(dur(began)).await;
            c.start(one).await;
            let how = match c.backend {
                Backend::Docker { .. } => "kill -9 of the container's process, then docker start",
                Backend::Local { .. } => "kill -9, then started again with its data dir",
            };
            (planned_targets, how.to_string())
        }
        (FaultKind::PowerLoss, _) => {
            // All at once, as far as processes go; the OS keeps what they wrote but did not
            // sync (a process kill, not a power cut: only the simulator loses those bytes).
            let at = futures::future::join_all((0..n).map(|t| c.kill(t))).await;
            began = at.into_iter().max().unwrap_or(began);
            tokio::time::sleep(dur(began)).await;
            for t in 0..n {
                c.start(t).await;
            }
            let how = match c.backend {
                Backend::Docker { .. } => "every member's process killed at once, then all started (unsynced writes survive in the host's page cache)",
                Backend::Local { .. } => "every member kill -9 at once, then all started with their data dirs (unsynced writes survive in the OS page cache)",
            };
            (planned_targets, how.to_string())
        }
        (FaultKind::Pause { .. }, _) => {
            c.pause(one, true).await;
            began = tokio::time::Instant::now();
            tokio::time::sleep(dur(began)).await;
            c.pause(one, false).await;
            let how = match c.backend {
                Backend::Docker { .. } => "docker pause/unpause",
                Backend::Local { .. } => "SIGSTOP, then SIGCONT",
            };
            (planned_targets, how.to_string())
        }
        (FaultKind::Isolate { .. } | FaultKind::Flaky { .. }, _) if c.no_links().is_some() => {
            (vec![], c.no_links().unwrap_or_default().to_string())
        }
        (FaultKind::Isolate { .. }, _) => {
            disconnect(&c, one).await;
            began = tokio::time::Instant::now();
            tokio::time::sleep(dur(began)).await;
            connect(&c, one).await;
            (
                planned_targets,
                "docker network disconnect/connect".to_string(),
            )
        }
        (FaultKind::Flaky { flap_ms, .. }, _) => {
            // One flap is `flap_ms`: links down for its first half, up for its second, as in
            // the simulator (here at least 100 ms: a docker network command takes tens of ms).
            let flap = Duration::from_millis((*flap_ms).max(100));
            let end = began + dur(began);
            while tokio::time::Instant::now() < end {
                disconnect(&c, one).await;
                tokio::time::sleep(flap / 2).await;
                connect(&c, one).await;
                tokio::time::sleep(flap / 2).await;
            }
            (
                planned_targets,
                format!("disconnect/connect every {} ms", flap.as_millis()),
            )
        }
        (FaultKind::RollingRestart, _) => {
            // As in the simulator: each member in turn gets an equal share of the window,
            // down for its first quarter.
            let step = dur(began) / (n as u32).max(1);
            for t in 0..n {
                c.kill(t).await;
                tokio::time::sleep(step / 4).await;
                c.start(t).await;
                tokio::time::sleep(step - step / 4).await;
            }
            (
                planned_targets,
                "each member killed and started in turn".to_string(),
            )
        }
        (FaultKind::ClockSkew { .. }, _) => (
            vec![],
            "skipped: containers share the host's clock".to_string(),
        ),
        (FaultKind::Replace { .. }, _) => (
            vec![],
            "skipped: replacing members is simulator-only so far".to_string(),
        ),
        (FaultKind::SlowDisk { .. }, _) => (
            vec![],
            "skipped: disk stalls are simulator-only".to_string(),
        ),
        (FaultKind::Disk { .. }, _) => (
            vec![],
            "skipped: storage faults on a running member are simulator-only (a stopped member's WAL is damaged in node/tests/storage_faults.rs)".to_string(),
        ),
        (FaultKind::OneWay { .. }, _) => {
            let t = one;
            let others: Vec<usize> = (0..n).filter(|o| *o != t).collect();
            let mut r = Ok(());
            for &o in &others {
                r = r.and(cut(&c, t, o).await);
            }
            began = tokio::time::Instant::now();
            links_fault(
                &c,
                r,
                dur(began),
                planned_targets,
                format!("{t} hears the others; they do not hear it (iptables)"),
            )
            .await
        }
        (_, Chosen::Sides { minority, majority }) => {
            let r = cut_between(&c, &minority, &majority).await;
            began = tokio::time::Instant::now();
            links_fault(
                &c,
                r,
                dur(began),
                planned_targets,
                format!("minority {minority:?} majority {majority:?} (iptables)"),
            )
            .await
        }
        (_, Chosen::Bridge { bridge, a, b }) => {
            let r = cut_between(&c, &a, &b).await;
            began = tokio::time::Instant::now();
            links_fault(
                &c,
                r,
                dur(began),
                planned_targets,
                format!("bridge {bridge} between {a:?} and {b:?} (iptables)"),
            )
            .await
        }
        (_, Chosen::Ring) => {
            let mut r = Ok(());
            for (i, j) in crate::faultplan::ring_cuts(n) {
                r = r.and(cut(&c, i, j).await);
            }
            began = tokio::time::Instant::now();
            links_fault(
                &c,
                r,
                dur(began),
                planned_targets,
                "ring (iptables)".to_string(),
            )
            .await
        }
        (FaultKind::MinorityMajority { .. } | FaultKind::Bridge | FaultKind::Ring, _) => {
            unreachable!("a partition of the whole cluster chooses its sides")
        }
    };
    // A skipped fault has an empty window: nothing happened to the cluster.
    let end_ns = if detail.starts_with("skipped") {
        ns(began)
    } else {
        ns(tokio::time::Instant::now())
    };
    FaultEvent {
        kind,
        targets,
        start_ns: ns(began),
        end_ns,
        detail,
    }
}

/// The faults of a run of `s` with `seed` as this driver carries them out, with the members
/// each hits in a cluster whose leader is `leader(start_ns)` when it starts, as in `apply`
/// (for the test that compares the two drivers' plans).
pub fn planned(s: &Scenario, seed: u64, leader: impl Fn(u64) -> Option<usize>) -> Vec<PlanLine> {
    let plan = crate::faultplan::plan(s, seed);
    let n = s.cluster.members;
    plan.faults
        .iter()
        .map(|f| {
            let l = f.needs_leader().then(|| leader(f.start_ns)).flatten();
            let end_ns =
                f.start_ns + hold(f.fault.duration_s, f.start_ns, plan.load_ns).as_nanos() as u64;
            (f.start_ns, end_ns, f.kind_name(), f.choose(n, l).targets(n))
        })
        .collect()
}

/// Hold link cuts for `dur`, then heal; a cut that could not be made is reported as skipped.
async fn links_fault(
    c: &Cluster,
    made: Result<(), String>,
    dur: Duration,
    targets: Vec<usize>,
    detail: String,
) -> (Vec<usize>, String) {
    match made {
        Ok(()) => {
            tokio::time::sleep(dur).await;
            heal_links(c).await;
            (targets, detail)
        }
        Err(e) if e.starts_with("skipped") => (vec![], e),
        Err(e) => {
            heal_links(c).await;
            (vec![], format!("skipped: cannot filter links here: {e}"))
        }
    }
}

/// A real cluster's stores as its members answer a recursive, sorted, local read of `/`:
/// the `X-Etcd-Index` and the whole key space.
struct Stores<'a>(&'a Cluster);

impl crate::final_checks::Stores for Stores<'_> {
    type State = (u64, String);

    async fn states(&self) -> Vec<Option<(u64, String)>> {
        let mut views = Vec::new();
        for i in 0..self.0.ips.len() {
            let cl = crate::client::member_client(&self.0.addr(i), Duration::from_secs(2));
            let o = detcd_client::GetOptions {
                recursive: true,
                sorted: true,
                quorum: false,
            };
            views.push(
                cl.get("/", o)
                    .await
                    .map(|r| (r.etcd_index, format!("{:?}", r.node)))
                    .ok(),
            );
        }
        views
    }

    fn same(a: &Self::State, b: &Self::State) -> bool {
        a == b
    }

    fn agreed(n: usize, s: &Self::State) -> String {
        format!("all {n} members at index {} with identical key spaces", s.0)
    }

    fn differ(states: &[Option<Self::State>]) -> String {
        let indexes: Vec<Option<u64>> = states.iter().map(|v| v.as_ref().map(|x| x.0)).collect();
        format!("(index; key spaces not shown): {indexes:?}")
    }
}

async fn run_real(s: Arc<Scenario>, seed: u64, c: Arc<Cluster>) -> (RunOutput, Option<CpuUse>) {
    let t0 = tokio::time::Instant::now();
    while leader(&c).await.is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let addrs = c.addrs();
    let me = std::process::id();
    let cpu0 = c.cpu_ticks().zip(proc_ticks(me));
    let counters0 = scrape_all(&c).await;
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs_f64(s.workload.duration_s);
    let rec: Arc<Mutex<Recorder>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..s.workload.watchers {
        let (w, addrs, rec) = (w as u32, addrs.clone(), rec.clone());
        tasks.push(match s.workload.api {
            crate::scenario::Api::V2 => {
                tokio::spawn(workload::run_watcher(w, seed, addrs, rec, start, end))
            }
            crate::scenario::Api::V3 => tokio::spawn(crate::v3load::run_watcher(
                w,
                seed,
                (w as usize) < s.workload.slow_watchers,
                None,
                addrs,
                rec,
                start,
                end,
            )),
        });
    }
    tasks.push(match s.workload.api {
        crate::scenario::Api::V2 => tokio::spawn(workload::run_clients(
            s.clone(),
            addrs.clone(),
            seed,
            rec.clone(),
            start,
        )),
        crate::scenario::Api::V3 => tokio::spawn(crate::v3load::run_clients(
            s.clone(),
            addrs.clone(),
            seed,
            rec.clone(),
            start,
        )),
    });
    let registry = (s.registry.instances > 0).then(|| {
        tokio::spawn(crate::registry::run(
            s.clone(),
            addrs.clone(),
            seed,
            start,
            end,
        ))
    });
    let locks = (s.locks.clients > 0).then(|| {
        tokio::spawn(crate::locks::run(
            s.clone(),
            addrs.clone(),
            seed,
            rec.clone(),
            start,
            end,
        ))
    });
    let leaders: Arc<Mutex<Vec<LeaderSample>>> = Arc::default();
    let observer = {
        let (c, leaders) = (c.clone(), leaders.clone());
        tokio::spawn(async move {
            let mut last = None;
            while tokio::time::Instant::now() < end {
                let l = leader(&c).await;
                if last != Some(l) {
                    leaders
                        .lock()
                        .unwrap()
                        .push((start.elapsed().as_nanos() as u64, l));
                    last = Some(l);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let plan = crate::faultplan::plan(&s, seed);
    let fault_tasks: Vec<_> = plan
        .faults
        .into_iter()
        .map(|f| tokio::spawn(apply(c.clone(), f, start, plan.load_ns)))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let _ = observer.await;
    let cpu = cpu0
        .zip(c.cpu_ticks().zip(proc_ticks(me)))
        .map(|((m0, g0), (m1, g1))| CpuUse {
            members_s: m1.saturating_sub(m0) as f64 / PROC_TICKS_PER_S,
            generator_s: g1.saturating_sub(g0) as f64 / PROC_TICKS_PER_S,
        });
    let counters1 = scrape_all(&c).await;
    let restarted = c.kills.load(std::sync::atomic::Ordering::Relaxed) > 0;
    let mut events = Vec::new();
    for t in fault_tasks {
        if let Ok(e) = t.await {
            events.push(e);
        }
    }
    // Heal whatever is still broken.
    heal_links(&c).await;
    for i in 0..c.ips.len() {
        c.pause(i, false).await;
        c.start(i).await;
        connect(&c, i).await;
    }
    let reach: Vec<(String, String)> = (0..c.ips.len())
        .map(|i| (format!("infra{i}"), c.addr(i)))
        .collect();
    let liveness_limit = Duration::from_secs_f64(s.checks.liveness_s);
    let mut checks = vec![crate::final_checks::liveness(&reach, liveness_limit).await];
    for r in registry.into_iter().chain(locks) {
        if let Ok(r) = r.await {
            checks.push(r);
        }
    }
    if s.checks.convergence {
        let (limit, every) = (Duration::from_secs(15), Duration::from_millis(200));
        checks.push(crate::final_checks::convergence(&Stores(&c), limit, every).await);
    }
    let mut gone = Vec::new();
    for i in 0..c.ips.len() {
        if let Some(what) = c.not_running(i).await {
            gone.push(what);
        }
    }
    checks.push(Check {
        name: "no-panic".into(),
        passed: Some(gone.is_empty()),
        detail: if gone.is_empty() {
            "every member is still running".into()
        } else {
            gone.join("; ")
        },
    });
    events.sort_by_key(|e| e.start_ns);
    let recorded = std::mem::take(&mut *rec.lock().unwrap());
    let leaders = leaders.lock().unwrap().clone();
    let out = RunOutput {
        seed,
        rec: recorded,
        faults: events,
        leaders,
        sim_ns: start.elapsed().as_nanos() as u64,
        checks,
        members: counters0
            .iter()
            .zip(&counters1)
            .map(|(a, b)| {
                if restarted {
                    MemberStats::default()
                } else {
                    counter_delta(a, b)
                }
            })
            .collect(),
        failpoint_hits: vec![],
        intruders: vec![],
    };
    (out, cpu)
}

/// Run benchmark `b` on the cluster once it has a leader; its figures with the CPU the
/// members and this process used while it ran.
async fn run_bench(
    b: crate::v3bench::Bench,
    o: &crate::v3bench::BenchOpts,
    c: &Cluster,
) -> Result<crate::v3bench::Outcome, String> {
    let t0 = tokio::time::Instant::now();
    let lead = loop {
        if let Some(l) = leader(c).await {
            break l;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err("no leader after 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let addrs: Vec<std::net::SocketAddr> = c
        .addrs()
        .iter()
        .map(|a| a.parse().map_err(|e| format!("{a}: {e}")))
        .collect::<Result<_, String>>()?;
    let me = std::process::id();
    let cpu0 = c.cpu_ticks().zip(proc_ticks(me));
    let wall0 = tokio::time::Instant::now();
    let mut r = match b {
        crate::v3bench::Bench::WatchFanout => crate::v3bench::watch_fanout(&addrs, o).await?,
        crate::v3bench::Bench::LeaseKeepalive => crate::v3bench::lease_keepalive(&addrs, o).await?,
    };
    let cpu1 = c.cpu_ticks().zip(proc_ticks(me));
    // The member that led when the benchmark started (member i listens on addrs[i]).
    r.figures["leader_at_start"] = lead.into();
    if let (Some((m0, g0)), Some((m1, g1))) = (cpu0, cpu1) {
        r.figures["members_cpu_s"] = ((m1 - m0) as f64 / PROC_TICKS_PER_S).into();
        r.figures["generator_cpu_s"] = ((g1 - g0) as f64 / PROC_TICKS_PER_S).into();
        r.figures["wall_s"] = wall0.elapsed().as_secs_f64().into();
    }
    Ok(r)
}

fn finish_bench(
    r: Result<crate::v3bench::Outcome, String>,
    server: Server,
    dir: &Path,
    logs: &str,
) -> ExitCode {
    let mut r = match r {
        Ok(r) => r,
        Err(e) => {
            eprintln!("detcd-real: FAIL: {e}; member logs: {logs}");
            return ExitCode::from(1);
        }
    };
    r.figures["server"] = server.name().into();
    r.figures["passed"] = r.failures.is_empty().into();
    r.figures["failures"] = r.failures.clone().into();
    println!("{:#}", r.figures);
    for f in &r.failures {
        println!("FAIL: {f}");
    }
    let file = dir.join("bench.json");
    if let Err(e) = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&file, format!("{:#}\n", r.figures)))
    {
        eprintln!("detcd-real: writing {}: {e}", file.display());
        return ExitCode::from(2);
    }
    println!("wrote {}; member logs: {logs}", file.display());
    ExitCode::from(if r.failures.is_empty() { 0 } else { 1 })
}

/// `detcd-real`'s command line.
#[derive(clap::Parser)]
#[command(
    name = "detcd-real",
    about = "Run a scenario against a real cluster: containers, or processes on 127.0.0.1"
)]
struct Args {
    /// Scenario file (scenarios/NAME.toml) or name; with --bench, only its cluster settings
    /// are used (default: the scenario defaults, 3 members).
    #[arg(required_unless_present = "bench")]
    scenario: Option<String>,
    /// Run a benchmark instead of the scenario's workload (with --processes): `watch-fanout`
    /// (events/s delivered to --watchers watchers on one prefix, delivery latency from each
    /// Put's acknowledgement, every event exactly once and in order) or `lease-keepalive`
    /// (--leases leases kept alive over LeaseKeepAlive streams for --keep-s seconds:
    /// answers/s, latency, none expired). See sim/src/v3bench.rs. Figures go to
    /// OUT/bench.json (default reports/loopback/<server>/bench-<mode>/).
    #[arg(long, value_enum, value_name = "MODE", requires = "processes")]
    bench: Option<crate::v3bench::Bench>,
    #[command(flatten)]
    bench_opts: crate::v3bench::BenchOpts,
    /// Seed of the workload and the faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Which server the members run.
    #[arg(long, value_enum, default_value_t = Server::Detcd)]
    server: Server,
    /// Members as processes on 127.0.0.1 instead of containers.
    #[arg(long)]
    processes: bool,
    /// The server's binary, with --processes (default target/release/detcd, or etcd from the
    /// PATH).
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Output directory (default reports/{real,loopback}/<server>/<scenario>/seed-<N>/).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Entry point of `detcd-real`.
pub fn main() -> ExitCode {
    let args = match <Args as clap::Parser>::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let Args {
        scenario,
        bench,
        bench_opts,
        seed,
        server,
        processes,
        bin,
        out,
    } = args;
    let found = match (&scenario, bench) {
        (Some(sc), _) => Scenario::find(sc),
        (None, Some(b)) => Scenario::parse(&format!("name = \"{}\"\n", b.name()), "--bench"),
        (None, None) => unreachable!("clap requires a scenario without --bench"),
    };
    let s = match found {
        Ok(s) => s,
        Err(e) => {
            eprintln!("detcd-real: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(e) = bench.and_then(|b| bench_opts.invalid(b)) {
        eprintln!("detcd-real: {e}");
        return ExitCode::from(2);
    }
    if s.auth.enabled {
        eprintln!(
            "detcd-real: scenario {}: auth scenarios run in the simulator only (`cargo sim run {}`)",
            s.name, s.name
        );
        return ExitCode::from(2);
    }
    let started = if processes {
        let bin = bin.unwrap_or_else(|| match server {
            Server::Detcd => PathBuf::from("target/release/detcd"),
            Server::Etcd => PathBuf::from("etcd"),
        });
        start_local(&s, server, &bin, seed)
    } else {
        if docker(&["info"]).is_err() {
            eprintln!("detcd-real: no Docker engine answers `docker info` (--processes runs the members on loopback instead)");
            return ExitCode::from(2);
        }
        let build = match server {
            Server::Detcd => "deploy/build-image",
            Server::Etcd => "deploy/build-etcd-image",
        };
        match Command::new(build).status() {
            Ok(st) if st.success() => {}
            other => {
                eprintln!("detcd-real: {build} failed: {other:?}");
                return ExitCode::from(2);
            }
        }
        start_cluster(&s, server, seed)
    };
    let c = match started {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("detcd-real: {e}");
            return ExitCode::from(2);
        }
    };
    let wall = WallInstant::now();
    // One thread: the load generator's clients, checks and fault schedule need well under a
    // core, and on the 2-core benchmark machine a second worker only adds cross-thread
    // wake-ups (an eventfd write and futex calls per request) on the cores the members
    // share. 64-client v3 row, 2 rounds each: 53-57 us of generator CPU per write against
    // 57-76 with two workers.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(b) = bench {
        let r = rt.block_on(run_bench(b, &bench_opts, &c));
        let logs = c.logs();
        teardown(&c);
        let dir = out.unwrap_or_else(|| {
            PathBuf::from(format!("reports/loopback/{}/{}", server.name(), b.name()))
        });
        return finish_bench(r, server, &dir, &logs);
    }
    let s = Arc::new(s);
    let (output, cpu) = rt.block_on(run_real(s.clone(), seed, c.clone()));
    // Each member's whole `/metrics` page after the run (its stage and fsync histograms say
    // where a request's time went), kept beside the report.
    let pages: Vec<Option<String>> = (0..c.ips.len())
        .map(|i| rt.block_on(metrics_page(&c.addr(i))))
        .collect();
    let logs = c.logs();
    teardown(&c);
    let res = crate::outcome::judge(&s, output, wall.elapsed());
    let dir = out.unwrap_or_else(|| {
        PathBuf::from(format!(
            "reports/{}/{}/{}/seed-{seed}",
            if processes { "loopback" } else { "real" },
            server.name(),
            s.name
        ))
    });
    if let Err(e) = res.write(&dir) {
        eprintln!("detcd-real: writing {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    res.print_summary(wall.elapsed(), false);
    for (i, page) in pages.iter().enumerate() {
        let Some(page) = page else { continue };
        let f = dir.join(format!("metrics-{i}.prom"));
        if let Err(e) = std::fs::write(&f, page) {
            eprintln!("detcd-real: writing {}: {e}", f.display());
        }
    }
    if let Some(cpu) = cpu {
        // CPU per acknowledged write: what a write costs the cluster, whatever else the
        // machine was doing (throughput on a shared machine moves with its neighbours).
        let acked = res
            .out
            .rec
            .ops
            .iter()
            .filter(|o| o.kind.is_write() && matches!(o.outcome, workload::Outcome::Ok { .. }))
            .count();
        let per_write_us = cpu.members_s * 1e6 / acked.max(1) as f64;
        println!(
            "  CPU over the load: members {:.2} s ({per_write_us:.0} us per acknowledged write), load generator {:.2} s",
            cpu.members_s, cpu.generator_s
        );
        let j = serde_json::json!({
            "members_cpu_s": cpu.members_s,
            "generator_cpu_s": cpu.generator_s,
            "acknowledged_writes": acked,
            "members_cpu_us_per_write": per_write_us,
        });
        if let Err(e) = std::fs::write(dir.join("cpu.json"), format!("{j:#}\n")) {
            eprintln!(
                "detcd-real: writing {}: {e}",
                dir.join("cpu.json").display()
            );
        }
    }
    for f in &res.out.faults {
        println!("  fault {} on {:?}: {}", f.kind, f.targets, f.detail);
    }
    println!("wrote {}; member logs: {logs}", dir.display());
    ExitCode::from(if res.passed() { 0 } else { 1 })
}
