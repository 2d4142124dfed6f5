//! Helpers for tests that run real `detcd` processes on 127.0.0.1.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Whether this is a CI run: the `CI` environment variable is set (`.ci/run` runs with
/// `CI=true`), and is not empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Whether `bin` is installed: `bin --version` starts.
pub fn installed(bin: &str) -> bool {
    Command::new(bin).arg("--version").output().is_ok()
}

/// The gate for a test (or a part of one) that needs a tool: true when it is `present`. When it
/// is missing, a CI run fails the test, naming the tool and how to get it (`hint`), because a
/// test that skips there passes without testing anything; elsewhere it prints that the test is
/// skipped and returns false, and the caller returns.
pub fn require(tool: &str, hint: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(
        !in_ci(),
        "{tool} is missing ({hint}); CI is set, so this test fails instead of skipping"
    );
    println!("{tool} is missing ({hint}): skipped");
    false
}

/// [`require`] for a command-line tool: `bin --version` must start.
pub fn require_bin(bin: &str, hint: &str) -> bool {
    require(&format!("`{bin}`"), hint, installed(bin))
}

/// A free-ish port range per test process (tests in one binary run in parallel threads).
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Two ports (client, peer) not used by other tests of this process. They are below Linux's
/// ephemeral range (32768+), so outgoing connections cannot take them, and each is checked
/// to be free when handed out.
pub fn ports() -> (u16, u16) {
    let base = 20000 + (std::process::id() % 1100) as u16 * 10;
    let free = || loop {
        let p = base + NEXT_PORT.fetch_add(1, Ordering::SeqCst) % 800;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    };
    (free(), free())
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One HTTP/1.1 request with `Connection: close`, bounded by `timeout`.
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<(&str, &str)>,
    timeout: Duration,
) -> std::io::Result<Resp> {
    http_with(method, addr, path, &[], body, timeout)
}

/// [`http`] with extra request headers.
pub fn http_with(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
    timeout: Duration,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let (ct, b) = body.unwrap_or(("", ""));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        b.len()
    );
    if !ct.is_empty() {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(b);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn form_put(addr: &str, path: &str, form: &str) -> std::io::Result<Resp> {
    http(
        "PUT",
        addr,
        path,
        Some(("application/x-www-form-urlencoded", form)),
        Duration::from_secs(10),
    )
}

pub fn get(addr: &str, path: &str) -> std::io::Result<Resp> {
    http("GET", addr, path, None, Duration::from_secs(10))
}

/// A running `detcd` process.
pub struct Member {
    pub name: String,
    pub client: u16,
    pub peer: u16,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Member {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client)
    }

    pub fn start(&mut self) {
        self.start_binary(env!("CARGO_BIN_EXE_detcd"));
    }

    /// Start `binary` (detcd, or etcd for side-by-side tests) with this member's flags.
    pub fn start_binary(&mut self, binary: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(binary)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn detcd");
        self.child = Some(child);
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// etcd's flags for one member on 127.0.0.1, in the tutorial's spelling.
pub fn member_args(
    name: &str,
    data_dir: &std::path::Path,
    client: u16,
    peer: u16,
    cluster: &str,
    state: &str,
) -> Vec<String> {
    [
        "--name",
        name,
        "--data-dir",
        &data_dir.display().to_string(),
        "-advertise-client-urls",
        &format!("http://127.0.0.1:{client}"),
        "-listen-client-urls",
        &format!("http://127.0.0.1:{client}"),
        "-initial-advertise-peer-urls",
        &format!("http://127.0.0.1:{peer}"),
        "-listen-peer-urls",
        &format!("http://127.0.0.1:{peer}"),
        "-initial-cluster-token",
        "etcd-cluster",
        "-initial-cluster",
        cluster,
        "-initial-cluster-state",
        state,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A member (not started) named `name` with its data under `dir`.
pub fn member(
    dir: &std::path::Path,
    name: &str,
    client: u16,
    peer: u16,
    cluster: &str,
    state: &str,
) -> Member {
    let data_dir = dir.join(name);
    let args = member_args(name, &data_dir, client, peer, cluster, state);
    Member {
        name: name.into(),
        client,
        peer,
        data_dir,
        args,
        child: None,
        log: dir.join(format!("{name}.log")),
    }
}

/// The tutorial's static method: every member knows all three, state `new`.
pub fn static_cluster(dir: &std::path::Path, n: usize) -> Vec<Member> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| ports()).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("infra{i}=http://127.0.0.1:{p}"))
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, (c, p))| member(dir, &format!("infra{i}"), *c, *p, &initial.join(","), "new"))
        .collect()
}

/// Poll `f` until it returns Some, or panic after `limit` with `what`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Index of the member that `/v2/members/leader` names, asked of any live member.
pub fn leader_of(members: &[Member]) -> Option<usize> {
    for m in members.iter().filter(|m| m.child.is_some()) {
        if let Ok(r) = get(&m.addr(), "/v2/members/leader") {
            if r.status == 200 {
                let name = r.json()["name"].as_str().unwrap_or("").to_string();
                return members.iter().position(|x| x.name == name);
            }
        }
    }
    None
}

/// `etcdctl` with API v3 against `endpoints` (a 10 s command timeout), `stdin` fed to it (a
/// txn script) or an empty stdin; (exit status, stdout + stderr).
pub fn etcdctl3(endpoints: &str, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "10s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl starts");
    {
        let mut w = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            w.write_all(s.as_bytes()).expect("stdin written");
        }
    }
    let o = child.wait_with_output().expect("etcdctl runs");
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// etcdctl's output without its own log lines (they carry a time stamp and a random client
/// id), for comparing two servers' answers.
pub fn without_etcdctl_logs(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("{\"level\":"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Replace, at any depth of `v`, the value of every field named in `names` with `"<masked>"`
/// (what legitimately differs between two servers: ids, terms, timings).
pub fn mask_fields(v: &mut serde_json::Value, names: &[&str]) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if names.contains(&k.as_str()) {
                    *x = serde_json::Value::String("<masked>".into());
                } else {
                    mask_fields(x, names);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| mask_fields(x, names)),
        _ => {}
    }
}
