//! Real-cluster runs (`detcd-real SCENARIO --seed N [--server detcd|etcd]`): the scenario's
//! cluster as containers on a private Docker network, the same seeded workload (built for
//! tokio), faults applied with Docker, and the same history, checks and report as a
//! simulated run — so what the simulator proves can be seen on real processes, beside etcd.
//!
//! Faults: `crash` (`docker kill`, then `docker start`: the member recovers from its data),
//! `pause` (`docker pause`), `isolate` (`docker network disconnect`), `flaky` (disconnect and
//! reconnect every `flap_ms`), `rolling-restart` (kill and start each member in turn), and the
//! per-link partitions `one-way`, `bridge`, `ring`, `minority-majority` with iptables run
//! (nsenter) inside each container's network namespace. Faults a real cluster cannot take —
//! per-member clock skew (containers share the host's clock), `replace` (simulator-only so far),
//! links that cannot be filtered on this host — are recorded as skipped, never faked.
//! Simulation-only counters (Raft messages, fsyncs) are not measured.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallInstant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::output::{Check, FaultEvent, MemberStats, RunOutput};
use crate::scenario::{kind_name, Fault, FaultKind, Scenario, Target};
use crate::workload::{self, Recorder};

/// Which server runs in the containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

struct Cluster {
    net: String,
    names: Vec<String>,
    ips: Vec<String>,
}

impl Cluster {
    fn addr(&self, i: usize) -> String {
        format!("{}:2379", self.ips[i])
    }
    fn addrs(&self) -> Vec<String> {
        (0..self.ips.len()).map(|i| self.addr(i)).collect()
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
    for i in 0..n {
        let env = [
            format!("ETCD_NAME=infra{i}"),
            format!("ETCD_ADVERTISE_CLIENT_URLS=http://{}:2379", ips[i]),
            "ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379".to_string(),
            format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{}:2380", ips[i]),
            "ETCD_LISTEN_PEER_URLS=http://0.0.0.0:2380".to_string(),
            format!("ETCD_INITIAL_CLUSTER={}", initial.join(",")),
            "ETCD_INITIAL_CLUSTER_STATE=new".to_string(),
            format!("ETCD_INITIAL_CLUSTER_TOKEN=real-{seed}"),
            format!("ETCD_HEARTBEAT_INTERVAL={}", s.cluster.heartbeat_ms),
            format!("ETCD_ELECTION_TIMEOUT={}", s.cluster.election_ms),
            format!("ETCD_SNAPSHOT_COUNT={}", s.cluster.snapshot_count),
            "ETCD_DATA_DIR=/data/member".to_string(),
            "ETCD_ENABLE_V2=true".to_string(),
        ];
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
        docker(&a)?;
    }
    Ok(Cluster { net, names, ips })
}

fn teardown(c: &Cluster) {
    for n in &c.names {
        let _ = docker(&["rm", "-f", n]);
    }
    let _ = docker(&["network", "rm", &c.net]);
}

async fn disconnect(c: &Cluster, t: usize) {
    let _ = docker_async(vec![
        "network".into(),
        "disconnect".into(),
        c.net.clone(),
        c.names[t].clone(),
    ])
    .await;
}

async fn connect(c: &Cluster, t: usize) {
    let _ = docker_async(vec![
        "network".into(),
        "connect".into(),
        "--ip".into(),
        c.ips[t].clone(),
        c.net.clone(),
        c.names[t].clone(),
    ])
    .await;
}

/// Run `iptables ARGS` inside member `i`'s network namespace (nsenter into the container's
/// process), so links between members can be cut one by one.
async fn iptables(c: &Cluster, i: usize, args: &[&str]) -> Result<(), String> {
    let pid = docker_async(vec![
        "inspect".into(),
        "-f".into(),
        "{{.State.Pid}}".into(),
        c.names[i].clone(),
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
    for i in 0..c.ips.len() {
        let _ = iptables(c, i, &["-F", "INPUT"]).await;
        let _ = iptables(c, i, &["-F", "OUTPUT"]).await;
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

/// What one fault did (or why it was skipped).
async fn apply(
    c: Arc<Cluster>,
    f: Fault,
    start: tokio::time::Instant,
    mut rng: ChaCha8Rng,
) -> FaultEvent {
    let at = start + Duration::from_secs_f64(f.at_s);
    tokio::time::sleep_until(at).await;
    let n = c.ips.len();
    let ns = |t: tokio::time::Instant| t.duration_since(start).as_nanos() as u64;
    let resolve = |t: &Target, l: Option<usize>, rng: &mut ChaCha8Rng| -> usize {
        match t {
            Target::Leader => l.unwrap_or(0),
            Target::Follower => (l.unwrap_or(0) + 1 + rng.gen_range(0..n.max(2) - 1)) % n,
            Target::Random => rng.gen_range(0..n),
            Target::Member(m) => (*m).min(n - 1),
        }
    };
    let l = leader(&c).await;
    let dur = Duration::from_secs_f64(f.duration_s.max(0.0));
    let kind = kind_name(&f.kind).to_string();
    // The fault's window starts once its command has taken effect (a `docker kill` takes tens
    // of ms; writes acknowledged meanwhile are not evidence of availability under the fault).
    let mut began = tokio::time::Instant::now();
    let (targets, detail) = match &f.kind {
        FaultKind::Crash { target } => {
            let t = resolve(target, l, &mut rng);
            let _ = docker_async(vec!["kill".into(), c.names[t].clone()]).await;
            began = tokio::time::Instant::now();
            tokio::time::sleep(dur).await;
            let _ = docker_async(vec!["start".into(), c.names[t].clone()]).await;
            (vec![t], "docker kill, then docker start".to_string())
        }
        FaultKind::Pause { target } => {
            let t = resolve(target, l, &mut rng);
            let _ = docker_async(vec!["pause".into(), c.names[t].clone()]).await;
            began = tokio::time::Instant::now();
            tokio::time::sleep(dur).await;
            let _ = docker_async(vec!["unpause".into(), c.names[t].clone()]).await;
            (vec![t], "docker pause/unpause".to_string())
        }
        FaultKind::Isolate { target } => {
            let t = resolve(target, l, &mut rng);
            disconnect(&c, t).await;
            began = tokio::time::Instant::now();
            tokio::time::sleep(dur).await;
            connect(&c, t).await;
            (vec![t], "docker network disconnect/connect".to_string())
        }
        FaultKind::Flaky { target, flap_ms } => {
            let t = resolve(target, l, &mut rng);
            let flap = Duration::from_millis((*flap_ms).max(50));
            let end = began + dur;
            while tokio::time::Instant::now() < end {
                disconnect(&c, t).await;
                tokio::time::sleep(flap).await;
                connect(&c, t).await;
                tokio::time::sleep(flap).await;
            }
            (
                vec![t],
                format!("disconnect/connect every {} ms", flap.as_millis()),
            )
        }
        FaultKind::RollingRestart => {
            let step = dur / (2 * n as u32).max(1);
            for t in 0..n {
                let _ = docker_async(vec!["kill".into(), c.names[t].clone()]).await;
                tokio::time::sleep(step).await;
                let _ = docker_async(vec!["start".into(), c.names[t].clone()]).await;
                tokio::time::sleep(step).await;
            }
            (
                (0..n).collect(),
                "each member killed and started in turn".to_string(),
            )
        }
        FaultKind::ClockSkew { .. } => (
            vec![],
            "skipped: containers share the host's clock".to_string(),
        ),
        FaultKind::Replace { .. } => (
            vec![],
            "skipped: replacing members is simulator-only so far".to_string(),
        ),
        FaultKind::OneWay { target } => {
            let t = resolve(target, l, &mut rng);
            let others: Vec<usize> = (0..n).filter(|o| *o != t).collect();
            let mut r = Ok(());
            for &o in &others {
                r = r.and(cut(&c, t, o).await);
            }
            began = tokio::time::Instant::now();
            links_fault(
                &c,
                r,
                dur,
                vec![t],
                format!("{t} hears the others; they do not hear it (iptables)"),
            )
            .await
        }
        FaultKind::MinorityMajority { leader_in_minority } => {
            let (minority, majority) =
                crate::scenario::minority_majority(n, l, *leader_in_minority, &mut rng);
            let r = cut_between(&c, &minority, &majority).await;
            began = tokio::time::Instant::now();
            links_fault(
                &c,
                r,
                dur,
                minority.to_vec(),
                format!("minority {minority:?} majority {majority:?} (iptables)"),
            )
            .await
        }
        FaultKind::Bridge => {
            let bridge = rng.gen_range(0..n);
            let rest: Vec<usize> = (0..n).filter(|i| *i != bridge).collect();
            let (a, b) = rest.split_at(rest.len() / 2);
            let r = cut_between(&c, a, b).await;
            began = tokio::time::Instant::now();
            links_fault(
                &c,
                r,
                dur,
                vec![bridge],
                format!("bridge {bridge} between {a:?} and {b:?} (iptables)"),
            )
            .await
        }
        FaultKind::Ring => {
            let mut r = Ok(());
            for i in 0..n {
                for j in 0..n {
                    let d = (i + n - j) % n;
                    if i != j && d != 1 && d != n - 1 {
                        r = r.and(cut(&c, i, j).await);
                    }
                }
            }
            began = tokio::time::Instant::now();
            links_fault(&c, r, dur, (0..n).collect(), "ring (iptables)".to_string()).await
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
        Err(e) => {
            heal_links(c).await;
            (vec![], format!("skipped: cannot filter links here: {e}"))
        }
    }
}

async fn liveness(c: &Cluster, limit: Duration) -> Check {
    let t0 = tokio::time::Instant::now();
    let mut last = String::from("no attempt");
    let mut i = 0usize;
    while t0.elapsed() < limit {
        let cl = crate::client::member_client(&c.addr(i % c.ips.len()), Duration::from_secs(2));
        i += 1;
        match cl.set("/liveness", "ok", Default::default()).await {
            Ok(_) => {
                let o = detcd_client::GetOptions {
                    quorum: true,
                    ..Default::default()
                };
                match cl.get("/liveness", o).await {
                    Ok(_) => {
                        return Check {
                            name: "liveness".into(),
                            passed: Some(true),
                            detail: format!(
                                "write and quorum read served {} ms after the heal",
                                t0.elapsed().as_millis()
                            ),
                        }
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Check {
        name: "liveness".into(),
        passed: Some(false),
        detail: format!("no write and quorum read within {limit:?}: {last}"),
    }
}

/// Every member ends with the same keys, values and index.
async fn convergence(c: &Cluster, limit: Duration) -> Check {
    let t0 = tokio::time::Instant::now();
    let mut last = Vec::new();
    while t0.elapsed() < limit {
        let mut views = Vec::new();
        for i in 0..c.ips.len() {
            let cl = crate::client::member_client(&c.addr(i), Duration::from_secs(2));
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
        if views.iter().all(|v| v.is_some() && *v == views[0]) {
            let idx = views[0].as_ref().map(|v| v.0).unwrap_or(0);
            return Check {
                name: "convergence".into(),
                passed: Some(true),
                detail: format!(
                    "all {} members at index {idx} with identical key spaces",
                    c.ips.len()
                ),
            };
        }
        last = views.iter().map(|v| v.as_ref().map(|x| x.0)).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Check {
        name: "convergence".into(),
        passed: Some(false),
        detail: format!("members did not converge within {limit:?}: indexes {last:?}"),
    }
}

async fn run_real(s: Arc<Scenario>, seed: u64, c: Arc<Cluster>) -> RunOutput {
    let t0 = tokio::time::Instant::now();
    while leader(&c).await.is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let addrs = c.addrs();
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs_f64(s.workload.duration_s);
    let rec: Arc<Mutex<Recorder>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..s.workload.watchers {
        tasks.push(tokio::spawn(workload::run_watcher(
            w as u32,
            addrs.clone(),
            rec.clone(),
            start,
            end,
        )));
    }
    tasks.push(tokio::spawn(workload::run_clients(
        s.clone(),
        addrs.clone(),
        seed,
        rec.clone(),
        start,
    )));
    let registry = (s.registry.instances > 0).then(|| {
        tokio::spawn(crate::registry::run(
            s.clone(),
            addrs.clone(),
            seed,
            start,
            end,
        ))
    });
    let leaders: Arc<Mutex<Vec<(u64, Option<usize>)>>> = Arc::default();
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
    let mut faults = s.faults.clone();
    if let Some(sw) = &s.swarm {
        faults.extend(crate::scenario::swarm_faults(sw, &s, seed));
    }
    let fault_tasks: Vec<_> = faults
        .into_iter()
        .enumerate()
        .map(|(k, f)| {
            let rng = ChaCha8Rng::seed_from_u64(crate::output::mix(seed, k as u64, 0x4ea1));
            tokio::spawn(apply(c.clone(), f, start, rng))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let _ = observer.await;
    let mut events = Vec::new();
    for t in fault_tasks {
        if let Ok(e) = t.await {
            events.push(e);
        }
    }
    // Heal whatever is still broken.
    heal_links(&c).await;
    for i in 0..c.ips.len() {
        let _ = docker_async(vec!["unpause".into(), c.names[i].clone()]).await;
        let _ = docker_async(vec!["start".into(), c.names[i].clone()]).await;
        let _ = docker_async(vec![
            "network".into(),
            "connect".into(),
            "--ip".into(),
            c.ips[i].clone(),
            c.net.clone(),
            c.names[i].clone(),
        ])
        .await;
    }
    let mut checks = vec![liveness(&c, Duration::from_secs_f64(s.checks.liveness_s)).await];
    if let Some(r) = registry {
        if let Ok(r) = r.await {
            checks.push(r);
        }
    }
    if s.checks.convergence {
        checks.push(convergence(&c, Duration::from_secs(15)).await);
    }
    let mut gone = Vec::new();
    for n in &c.names {
        let st = docker_async(vec![
            "inspect".into(),
            "-f".into(),
            "{{.State.Status}}".into(),
            n.clone(),
        ])
        .await
        .unwrap_or_else(|e| e);
        if st != "running" {
            gone.push(format!("{n}: {st}"));
        }
    }
    checks.push(Check {
        name: "no-panic".into(),
        passed: Some(gone.is_empty()),
        detail: if gone.is_empty() {
            "every member's container is running".into()
        } else {
            gone.join("; ")
        },
    });
    events.sort_by_key(|e| e.start_ns);
    let recorded = std::mem::take(&mut *rec.lock().unwrap());
    let leaders = leaders.lock().unwrap().clone();
    RunOutput {
        seed,
        rec: recorded,
        faults: events,
        leaders,
        sim_ns: start.elapsed().as_nanos() as u64,
        checks,
        members: vec![MemberStats::default(); c.ips.len()],
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: detcd-real SCENARIO [--seed N] [--server detcd|etcd] [--out DIR]");
    ExitCode::from(2)
}

/// Entry point of `detcd-real`.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut scenario = None;
    let mut seed = 1u64;
    let mut server = Server::Detcd;
    let mut out: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seed" => match it.next().and_then(|v| v.parse().ok()) {
                Some(v) => seed = v,
                None => return usage(),
            },
            "--server" => match it.next().map(String::as_str) {
                Some("detcd") => server = Server::Detcd,
                Some("etcd") => server = Server::Etcd,
                _ => return usage(),
            },
            "--out" => match it.next() {
                Some(v) => out = Some(PathBuf::from(v)),
                None => return usage(),
            },
            s if !s.starts_with('-') && scenario.is_none() => scenario = Some(s.to_string()),
            _ => return usage(),
        }
    }
    let Some(scenario) = scenario else {
        return usage();
    };
    let path = if Path::new(&scenario).exists() {
        PathBuf::from(&scenario)
    } else {
        Path::new("scenarios").join(format!("{scenario}.toml"))
    };
    let s = match Scenario::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("detcd-real: {e}");
            return ExitCode::from(2);
        }
    };
    if docker(&["info"]).is_err() {
        eprintln!("detcd-real: no Docker engine answers `docker info`");
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
    let c = match start_cluster(&s, server, seed) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("detcd-real: {e}");
            return ExitCode::from(2);
        }
    };
    let wall = WallInstant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let s = Arc::new(s);
    let output = rt.block_on(run_real(s.clone(), seed, c.clone()));
    teardown(&c);
    let res = crate::outcome::judge(&s, output, wall.elapsed());
    let dir = out.unwrap_or_else(|| {
        PathBuf::from(format!(
            "reports/real/{}/{}/seed-{seed}",
            server.name(),
            s.name
        ))
    });
    if let Err(e) = res.write(&dir) {
        eprintln!("detcd-real: writing {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    res.print_summary(wall.elapsed());
    for f in &res.out.faults {
        println!("  fault {} on {:?}: {}", f.kind, f.targets, f.detail);
    }
    println!("wrote {}", dir.display());
    ExitCode::from(if res.passed() { 0 } else { 1 })
}
