//! Intruders (`[intruders]` in a `tls = true` scenario): processes on a machine of their own
//! that, all through the load, dial the members' client and peer ports with the wrong
//! credentials and try to read and write, as someone who found the ports would:
//!
//! | intruder            | port   | certificate shown                          |
//! |---------------------|--------|--------------------------------------------|
//! | `client-no-cert`    | client | none                                       |
//! | `client-unknown-ca` | client | one from a CA no member trusts (CN `root`) |
//! | `peer-client-cert`  | peer   | a valid *client* certificate (client CA)   |
//! | `peer-no-cert`      | peer   | none                                       |
//! | `peer-unknown-ca`   | peer   | the unknown CA's                           |
//!
//! Each trusts the member's server certificate (so a refusal is the member's doing, never
//! the intruder's), takes its turn every `every_ms`, picks a member with the run's seeded
//! rng, and makes two requests, each on a fresh connection: on the client port a quorum
//! `GET` of the workload's prefix and a `PUT` under [`PREFIX`]; on the peer port the
//! membership request a joining member makes and a stream that opens with a member's hello
//! and carries a forwarded proposal (`MsgPropose`) writing a key under [`PREFIX`]. Every
//! request is an `intruder` line in the history, with what came back.
//!
//! The `intruders` check fails if any request got an answer (bytes of an HTTP response, a
//! membership answer), if any key under [`PREFIX`] is in the store after the run, or if
//! some intruder was never refused by a member (it would have checked nothing).

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::cluster::{MemberSim, CLIENT_PORT, PEER_PORT};
use crate::output::{Check, IntruderEvent};
use crate::pki::{dialer, Pki};

/// Where intruders try to write; nothing else in a run writes there.
pub const PREFIX: &str = "/intruders";

/// The intruders, in the order they take turns.
pub const NAMES: [&str; 5] = [
    "client-no-cert",
    "client-unknown-ca",
    "peer-client-cert",
    "peer-no-cert",
    "peer-unknown-ca",
];

/// How one request ended.
pub mod outcome {
    /// A member answered: the intruder got in.
    pub const ANSWERED: &str = "answered";
    /// A member refused it (TLS alert, or the connection closed on it).
    pub const REFUSED: &str = "refused";
    /// Connected, but nothing came back in time (partitioned, paused, or a stream left open).
    pub const NO_ANSWER: &str = "no-answer";
    /// No connection (the member is down or cut off).
    pub const UNREACHABLE: &str = "unreachable";
}

const DIAL: Duration = Duration::from_millis(500);
const HANDSHAKE: Duration = Duration::from_secs(2);
const ANSWER: Duration = Duration::from_secs(1);

/// Run the intruders from `start` until `end` against `members`; every request they made.
pub async fn run(
    every_ms: u64,
    members: Arc<Vec<MemberSim>>,
    pki: Pki,
    seed: u64,
    start: Instant,
    end: Instant,
) -> Vec<IntruderEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, 0, 0x1a7d));
    // Each intruder trusts the CA of the port it dials, and shows its own certificate.
    let configs = [
        dialer(&pki.client_ca, None),
        dialer(&pki.client_ca, Some(&pki.stranger)),
        dialer(&pki.peer_ca, Some(&pki.client_cert)),
        dialer(&pki.peer_ca, None),
        dialer(&pki.peer_ca, Some(&pki.stranger)),
    ];
    let mut ids: Vec<Option<u64>> = vec![None; members.len()];
    let mut events = Vec::new();
    let at = |t: Instant| t.saturating_duration_since(start).as_nanos() as u64;
    let mut turn = 0usize;
    loop {
        let next =
            start + Duration::from_millis(every_ms * turn as u64 + rng.gen_range(0..every_ms));
        if next >= end {
            break;
        }
        detcd_node::rt::sleep_until(next).await;
        for (i, m) in members.iter().enumerate() {
            if let Some(sh) = m.shared() {
                ids[i] = Some(sh.id);
            }
        }
        let who = turn % NAMES.len();
        let name = NAMES[who];
        let target = rng.gen_range(0..members.len());
        let ip = members[target].ip;
        let cfg = &configs[who];
        let key = format!("{PREFIX}/{name}-{turn}");
        let requests: Vec<(String, u16, Vec<u8>)> = if who < 2 {
            let addr = format!("{ip}:{CLIENT_PORT}");
            let body = "value=intruder";
            vec![
                (
                    format!("GET /v2/keys{}?quorum=true", crate::workload::KEY_PREFIX),
                    CLIENT_PORT,
                    format!(
                        "GET /v2/keys{}?quorum=true HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                        crate::workload::KEY_PREFIX
                    )
                    .into_bytes(),
                ),
                (
                    format!("PUT /v2/keys{key}"),
                    CLIENT_PORT,
                    format!(
                        "PUT /v2/keys{key} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes(),
                ),
            ]
        } else {
            let mut r = vec![(
                "membership request".to_string(),
                PEER_PORT,
                frame(
                    &serde_json::to_vec(&serde_json::json!({
                        "cluster_id": 0, "from": 0, "to": 0, "token": "etcd-cluster"
                    }))
                    .expect("hello serialises"),
                ),
            )];
            if let Some(to) = ids[target] {
                // Pose as another member (or as itself in a one-member cluster).
                let from = ids
                    .iter()
                    .enumerate()
                    .find_map(|(j, id)| id.filter(|_| j != target))
                    .unwrap_or(to);
                let mut bytes = frame(
                    &serde_json::to_vec(&serde_json::json!({
                        "cluster_id": 0, "from": from, "to": to, "token": ""
                    }))
                    .expect("hello serialises"),
                );
                bytes.extend(frame(&propose(from, to, &key, rng.gen::<u64>() | 1)));
                r.push((format!("MsgPropose {key} as {from:x}"), PEER_PORT, bytes));
            }
            r
        };
        for (what, port, bytes) in requests {
            let t0 = Instant::now();
            let (result, detail) =
                exchange(&format!("{ip}:{port}"), cfg, &bytes, port == CLIENT_PORT).await;
            events.push(IntruderEvent {
                intruder: name.to_string(),
                member: target,
                request: what,
                start_ns: at(t0),
                end_ns: at(Instant::now()),
                outcome: result.to_string(),
                detail,
            });
        }
        turn += 1;
    }
    events
}

/// `[len u32 LE][payload]`, the peer transport's framing.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut b = (payload.len() as u32).to_le_bytes().to_vec();
    b.extend_from_slice(payload);
    b
}

/// A forwarded proposal from `from` to `to` that writes `key`, encoded as a member would.
fn propose(from: u64, to: u64, key: &str, id: u64) -> Vec<u8> {
    use detcd_node::sm::{Op, Proposal};
    use detcd_node::store::{Command, WriteMethod};
    use protobuf::Message as _;
    let p = Proposal {
        id,
        time_ms: 0,
        op: Op::Keys(Command {
            method: WriteMethod::Put,
            key: key.to_string(),
            value: "intruder".into(),
            dir: false,
            prev_value: String::new(),
            prev_index: 0,
            prev_exist: None,
            recursive: false,
            ttl: None,
            refresh: false,
        }),
    };
    let e = raft::eraftpb::Entry {
        data: serde_json::to_vec(&p).expect("proposal serialises").into(),
        ..Default::default()
    };
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgPropose);
    m.from = from;
    m.to = to;
    m.set_entries(vec![e].into());
    m.write_to_bytes().expect("raft message encodes")
}

/// Dial `addr` with `cfg`, send `bytes`, and see what comes back.
async fn exchange(
    addr: &str,
    cfg: &Arc<rustls::ClientConfig>,
    bytes: &[u8],
    http: bool,
) -> (&'static str, String) {
    use outcome::*;
    let tcp = match detcd_node::rt::timeout(DIAL, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return (UNREACHABLE, format!("dial: {e}")),
        Err(_) => return (UNREACHABLE, "dial timed out".into()),
    };
    detcd_node::rt::tune_stream(&tcp);
    let url = format!("https://{addr}");
    let stream = detcd_node::rt::FlushFilter::new(tcp);
    let mut s =
        match detcd_node::rt::timeout(HANDSHAKE, detcd_node::tls::connect(Some(cfg), &url, stream))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return (REFUSED, format!("TLS handshake: {}", brief(&e))),
            Err(_) => return (NO_ANSWER, "TLS handshake timed out".into()),
        };
    let sent = detcd_node::rt::timeout(HANDSHAKE, async {
        s.write_all(bytes).await?;
        s.flush().await
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return (REFUSED, format!("sending: {}", brief(&e))),
        Err(_) => return (NO_ANSWER, "sending timed out".into()),
    }
    let mut buf = vec![0u8; 512];
    match detcd_node::rt::timeout(ANSWER, s.read(&mut buf)).await {
        Ok(Ok(0)) => (REFUSED, "closed without an answer".into()),
        Ok(Ok(n)) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            let first = if http {
                text.lines().next().unwrap_or_default().to_string()
            } else {
                format!("{n} bytes of a membership answer")
            };
            (ANSWERED, first)
        }
        Ok(Err(e)) => (REFUSED, brief(&e)),
        Err(_) => (NO_ANSWER, "nothing came back within 1 s".into()),
    }
}

/// An error without the link to rustls's manual some of its messages end with.
fn brief(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(": https://") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The keys under [`PREFIX`] in the store, by a quorum read through the run's own client
/// (Err: no member answered within `limit`).
pub async fn keys_written(addrs: &[String], limit: Duration) -> Result<Vec<String>, String> {
    let end = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < end {
        for a in addrs {
            let c = crate::client::member_client(a, Duration::from_secs(1));
            let o = detcd_client::GetOptions {
                recursive: true,
                sorted: true,
                quorum: true,
            };
            match c.get(PREFIX, o).await {
                Ok(r) => {
                    let mut keys = Vec::new();
                    let mut stack = vec![r.node];
                    while let Some(n) = stack.pop() {
                        if !n.dir {
                            keys.push(n.key.clone());
                        }
                        stack.extend(n.nodes);
                    }
                    keys.sort();
                    return Ok(keys);
                }
                Err(e) if e.is_key_not_found() => return Ok(Vec::new()),
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        detcd_node::rt::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

/// The `intruders` check: nobody got an answer, nothing they wrote is in the store, and
/// every intruder was refused by a member at least once.
pub fn check(events: &[IntruderEvent], written: &Result<Vec<String>, String>) -> Check {
    let mut problems = Vec::new();
    for e in events.iter().filter(|e| e.outcome == outcome::ANSWERED) {
        problems.push(format!(
            "{} got an answer from member {} at {:.3} s to {}: {}",
            e.intruder,
            e.member,
            e.start_ns as f64 / 1e9,
            e.request,
            e.detail
        ));
    }
    match written {
        Ok(keys) if keys.is_empty() => {}
        Ok(keys) => problems.push(format!(
            "{} intruder key(s) in the store: {}",
            keys.len(),
            keys.join(", ")
        )),
        Err(e) => problems.push(format!("could not read {PREFIX} after the run: {e}")),
    }
    let mut counts = Vec::new();
    for n in NAMES {
        let mine: Vec<&IntruderEvent> = events.iter().filter(|e| e.intruder == n).collect();
        let refused = mine
            .iter()
            .filter(|e| e.outcome == outcome::REFUSED)
            .count();
        if refused == 0 {
            problems.push(format!(
                "{n} was never refused by a member ({} requests): nothing was checked",
                mine.len()
            ));
        }
        counts.push(format!("{n} {refused}/{}", mine.len()));
    }
    Check {
        name: "intruders".into(),
        passed: Some(problems.is_empty()),
        detail: if problems.is_empty() {
            format!(
                "{} requests by intruders, none answered, nothing written (refused/requests: {})",
                events.len(),
                counts.join(", ")
            )
        } else {
            format!("{} problem(s): {}", problems.len(), problems.join("; "))
        },
    }
}
