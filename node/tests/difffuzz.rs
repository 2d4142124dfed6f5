//! Differential fuzz of the v2 API: the same seeded stream of odd requests (methods, paths,
//! query flags, form and JSON bodies) sent to a single-member etcd 3.4 and a single-member
//! detcd side by side; every answer's status, etcd error code and message, CORS and `Allow`
//! headers must match, and so must the resulting stores. Needs Debian's etcd-server (under
//! CI a missing etcd fails the test).
//!
//! Left different on purpose (not generated here): raw indexes (`X-Etcd-Index`, `index`,
//! `createdIndex`, `modifiedIndex`; each server numbers its own internal entries), TTL
//! expiry times, and invalid UTF-8 in keys (etcd answers it escaped as U+FFFD).

mod common;

use std::time::Duration;

use common::*;

/// A tiny seeded generator (SplitMix64): the stream is a function of the seed alone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// One request of the stream.
struct Req {
    method: &'static str,
    path: String,
    body: Option<(&'static str, String)>,
    origin: bool,
}

fn request(r: &mut Rng) -> Req {
    let method = r.pick(&[
        "GET", "GET", "PUT", "PUT", "PUT", "POST", "DELETE", "DELETE", "HEAD", "OPTIONS", "PATCH",
    ]);
    let path = if r.chance(12) {
        r.pick(&[
            "/version",
            "/health",
            "/v2/machines",
            "/v2/stats/self",
            "/v2/stats/store",
            "/nothing",
            "/v2/keys",
            "/v2",
        ])
        .to_string()
    } else {
        let key = r.pick(&[
            "a", "b", "a/x", "a/y", "b/c/d", "dir", "dir/k", "sp%20ace", "_hidden",
        ]);
        let mut q: Vec<String> = Vec::new();
        for _ in 0..r.below(4) {
            q.push(match r.below(12) {
                0 => "recursive=true".to_string(),
                1 => "sorted=true".into(),
                2 => format!("dir={}", r.pick(&["true", "false", "maybe"])),
                3 => format!("prevExist={}", r.pick(&["true", "false", "x"])),
                4 => format!("prevValue={}", r.pick(&["v1", "v2", ""])),
                5 => format!("prevIndex={}", r.pick(&["0", "1", "99999", "-1", "z"])),
                6 => format!("ttl={}", r.pick(&["1000", "", "-5", "abc"])),
                7 => "quorum=true".into(),
                8 => format!("value={}", r.pick(&["q1", "q2"])),
                9 => "refresh=true".into(),
                10 => "wait=false".into(),
                _ => format!("{}=1", r.pick(&["unknown", "stream", "noValueOnSuccess"])),
            });
        }
        let query = if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        };
        format!("/v2/keys/{key}{query}")
    };
    let body = match r.below(5) {
        0 | 1 => Some((
            "application/x-www-form-urlencoded",
            match r.below(4) {
                0 => format!("value={}", r.pick(&["v1", "v2", "v3"])),
                1 => format!("value=v{}&ttl=1000", r.below(3)),
                2 => "dir=true".to_string(),
                _ => format!("value=v1&prevValue={}", r.pick(&["v1", "v2"])),
            },
        )),
        2 => Some((
            "application/json",
            r.pick(&[r#"{"value":"j"}"#, "{", "[]", "null"]).to_string(),
        )),
        _ => None,
    };
    Req {
        method,
        path,
        body,
        origin: r.chance(30),
    }
}

/// What must match between the two servers' answers to one request.
fn summary(resp: &Resp) -> String {
    let j = resp.json();
    let mut s = format!("{}", resp.status);
    for k in ["errorCode", "message", "cause", "action"] {
        if let Some(v) = j.get(k) {
            s.push_str(&format!(" {k}={v}"));
        }
    }
    for k in [
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Methods",
        "Allow",
    ] {
        if let Some(v) = resp.header(k) {
            s.push_str(&format!(" {k}:{v}"));
        }
    }
    s
}

/// A store listing without what each server numbers or times on its own.
fn normalise(v: &mut serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        for k in [
            "createdIndex",
            "modifiedIndex",
            "expiration",
            "ttl",
            "index",
        ] {
            o.remove(k);
        }
        for (_, x) in o.iter_mut() {
            normalise(x);
        }
    } else if let Some(a) = v.as_array_mut() {
        a.iter_mut().for_each(normalise);
    }
}

fn store(addr: &str) -> serde_json::Value {
    let mut v = get(addr, "/v2/keys/?recursive=true&sorted=true")
        .expect("listing the store")
        .json();
    normalise(&mut v);
    v
}

fn single(dir: &std::path::Path, name: &str) -> Member {
    let (c, p) = ports();
    member(
        dir,
        name,
        c,
        p,
        &format!("{name}=http://127.0.0.1:{p}"),
        "new",
    )
}

#[test]
fn etcd_and_detcd_answer_the_same_odd_requests_alike() {
    if !require_bin("etcd", "Debian package etcd-server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = single(dir.path(), "etcd0");
    etcd.args.push("--enable-v2=true".into());
    etcd.start_binary("etcd");
    let mut detcd = single(dir.path(), "detcd0");
    detcd.start();
    for m in [&etcd, &detcd] {
        eventually(Duration::from_secs(30), "a healthy member", || {
            get(&m.addr(), "/health").ok().filter(|r| r.status == 200)
        });
    }
    let t = Duration::from_secs(3);
    let mut differences = Vec::new();
    for seed in 1..=3u64 {
        eprintln!("difffuzz seed {seed}");
        let mut r = Rng(seed);
        for i in 0..300 {
            let q = request(&mut r);
            let headers: Vec<(&str, &str)> = if q.origin {
                vec![("Origin", "http://o.example:80")]
            } else {
                vec![]
            };
            let body = q.body.as_ref().map(|(ct, b)| (*ct, b.as_str()));
            let answers: Vec<String> = [&etcd, &detcd]
                .iter()
                .map(
                    |m| match http_with(q.method, &m.addr(), &q.path, &headers, body, t) {
                        Ok(resp) => summary(&resp),
                        Err(e) => format!("no answer: {e}"),
                    },
                )
                .collect();
            if answers[0] != answers[1] {
                differences.push(format!(
                    "seed {seed} request {i}: {} {} {:?}\n  etcd:  {}\n  detcd: {}",
                    q.method, q.path, q.body, answers[0], answers[1]
                ));
            }
        }
    }
    let (a, b) = (store(&etcd.addr()), store(&detcd.addr()));
    assert!(
        differences.is_empty(),
        "{} answers differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert_eq!(a, b, "the stores differ after the same requests");
}

/// Sent raw: `http_with` always writes a Content-Length.
fn raw(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_malformed_chunked_body_is_a_bad_request_and_a_huge_one_too_large() {
    // etcd 3.4 stores an empty value for the malformed body (left different on purpose: the
    // request is broken, and 400 says so); a body over detcd's 4 MiB limit is 413.
    let dir = tempfile::tempdir().unwrap();
    let mut detcd = single(dir.path(), "detcd0");
    detcd.start();
    eventually(Duration::from_secs(30), "a healthy member", || {
        get(&detcd.addr(), "/health")
            .ok()
            .filter(|r| r.status == 200)
    });
    let bad = raw(
        &detcd.addr(),
        "PUT /v2/keys/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n\
         zz\r\nvalue=1\r\n0\r\n\r\n",
    );
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    assert_eq!(get(&detcd.addr(), "/v2/keys/c").unwrap().status, 404);
    let huge = format!("value={}", "x".repeat(5 << 20));
    let r = http(
        "PUT",
        &detcd.addr(),
        "/v2/keys/h",
        Some(("application/x-www-form-urlencoded", &huge)),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 413, "{}", r.body);
}
