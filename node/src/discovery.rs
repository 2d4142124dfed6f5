//! Bootstrapping a new cluster without `--initial-cluster`, as etcd does:
//!
//! - **Discovery URL** (`--discovery http://host:2379/v2/keys/discovery/<token>`), etcd's v2
//!   discovery protocol against any etcd or detcd cluster: read the expected size from
//!   `<url>/_config/size`, register this member as `<url>/<member id>` = `name=peerURL,...`
//!   (create-only: a second registration of the same id is refused), then wait until `size`
//!   members are registered. The first `size` registrations, by creation index, are the
//!   initial cluster; a member that registered later is told "cluster is full".
//! - **DNS SRV** (`--discovery-srv example.com`): `_etcd-server-ssl._tcp.<domain>` (https peer
//!   URLs) and `_etcd-server._tcp.<domain>` (http) records name every member's peer address;
//!   the record whose address is one of this member's advertised peer URLs is this member.
//!   Queries go over UDP to the configured DNS server (hickory-proto builds and parses them).
//!
//! Both produce the initial cluster; bootstrapping then proceeds as with `--initial-cluster`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::{TcpStream, UdpSocket};

use crate::rt::{FlushFilter, HyperExec};

/// How long one HTTP exchange with the discovery service may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed exchanges in a row before discovery gives up (etcd: 8 exponential retries).
const RETRIES: u32 = 8;

/// One HTTP answer: status, `X-Etcd-Index`, JSON body.
struct Answer {
    status: u16,
    index: u64,
    body: serde_json::Value,
}

fn split_url(url: &str) -> Result<(String, String), String> {
    let u = url::Url::parse(url).map_err(|e| format!("--discovery {url:?}: {e}"))?;
    if u.scheme() != "http" {
        return Err(format!(
            "--discovery {url:?}: only http discovery URLs are supported"
        ));
    }
    let host = u
        .host_str()
        .ok_or_else(|| format!("--discovery {url:?}: no host"))?;
    let port = u.port_or_known_default().unwrap_or(80);
    let path = u.path().trim_end_matches('/').to_string();
    if !path.starts_with("/v2/keys/") {
        return Err(format!(
            "--discovery {url:?}: expected a v2 keys URL such as http://host:2379/v2/keys/discovery/<token>"
        ));
    }
    Ok((format!("{host}:{port}"), path))
}

async fn http(
    addr: &str,
    method: &str,
    path: &str,
    form: Option<String>,
) -> Result<Answer, String> {
    let fut = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let io = hyper_util::rt::TokioIo::new(FlushFilter::new(stream));
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        hyper::rt::Executor::execute(&HyperExec, async move {
            let _ = conn.await;
        });
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", addr);
        let body = match form {
            Some(f) => {
                b = b.header("Content-Type", "application/x-www-form-urlencoded");
                Full::new(Bytes::from(f))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = send
            .send_request(b.body(body).expect("valid request"))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let status = resp.status().as_u16();
        let index = resp
            .headers()
            .get("X-Etcd-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{addr}: {e}"))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(Answer {
            status,
            index,
            body,
        })
    };
    crate::rt::timeout(HTTP_TIMEOUT, fut)
        .await
        .map_err(|_| format!("{addr}: no answer within {HTTP_TIMEOUT:?}"))?
}

/// Retry `f` on transport errors, backing off (1 s, 2 s, 4 s, ... capped at 16 s).
async fn with_retries<T, F, Fut>(what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for attempt in 0..RETRIES {
        match f().await {
            Ok(t) => return Ok(t),
            Err(e) => {
                let wait = Duration::from_secs(1 << attempt.min(4));
                tracing::warn!(error = %e, retry_in = ?wait, "discovery: {what} failed");
                last = e;
                crate::rt::sleep(wait).await;
            }
        }
    }
    Err(format!("discovery: {what} failed {RETRIES} times: {last}"))
}

/// Join through a discovery URL: returns the initial cluster as `(name, peer URL)` pairs.
pub async fn join_by_url(
    url: &str,
    name: &str,
    id: u64,
    peer_urls: &[String],
) -> Result<Vec<(String, String)>, String> {
    let (addr, dir) = split_url(url)?;
    let size_path = format!("{dir}/_config/size");
    let size = with_retries("reading the cluster size", || {
        http(&addr, "GET", &size_path, None)
    })
    .await?;
    let size: usize = match size.status {
        200 => size.body["node"]["value"]
            .as_str()
            .and_then(|v| v.trim().parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("discovery: {url}/_config/size is not a positive number"))?,
        404 => {
            return Err(format!(
                "discovery: size key not found: {url}/_config/size is not set"
            ))
        }
        s => {
            return Err(format!(
                "discovery: reading {url}/_config/size answered HTTP {s}"
            ))
        }
    };
    let value: Vec<String> = peer_urls.iter().map(|u| format!("{name}={u}")).collect();
    let value = value.join(",");
    let self_key = format!("{dir}/{id:x}");
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("value", &value)
        .finish();
    let create = format!("{self_key}?prevExist=false");
    let reg = with_retries("registering this member", || {
        http(&addr, "PUT", &create, Some(form.clone()))
    })
    .await?;
    match reg.status {
        200 | 201 => {}
        412 => {
            return Err(format!(
                "discovery: member id {id:x} is already registered at {url} (duplicate id: a member with the same peer URLs and token registered before; use a new discovery token)"
            ))
        }
        s => return Err(format!("discovery: registering at {url} answered HTTP {s}")),
    }
    tracing::info!(
        url,
        size,
        "discovery: registered; waiting for the cluster's members"
    );
    loop {
        let list = with_retries("listing registered members", || {
            http(&addr, "GET", &dir, None)
        })
        .await?;
        if list.status != 200 {
            return Err(format!(
                "discovery: listing {url} answered HTTP {}",
                list.status
            ));
        }
        let mut nodes: Vec<(u64, String, String)> = list.body["node"]["nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|n| !n["key"].as_str().unwrap_or("").ends_with("/_config"))
                    .filter_map(|n| {
                        Some((
                            n["createdIndex"].as_u64()?,
                            n["key"].as_str()?.to_string(),
                            n["value"].as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        nodes.sort();
        if nodes.len() >= size {
            let first = &nodes[..size];
            // Listed keys are store keys: the path without `/v2/keys`.
            let self_node = self_key.strip_prefix("/v2/keys").unwrap_or(&self_key);
            if !first.iter().any(|(_, k, _)| k == self_node) {
                return Err(format!(
                    "discovery: cluster is full: {url} already has the {size} members it expects"
                ));
            }
            let mut out = Vec::new();
            for (_, key, v) in first {
                for part in v.split(',') {
                    let (n, u) = part.split_once('=').ok_or_else(|| {
                        format!("discovery: registration {key} holds {v:?}, not name=URL")
                    })?;
                    out.push((n.to_string(), u.to_string()));
                }
            }
            return Ok(out);
        }
        tracing::info!(
            registered = nodes.len(),
            size,
            "discovery: waiting for more members"
        );
        // Watch the directory for the next registration (bounded, then list again).
        let watch = format!(
            "{dir}?wait=true&recursive=true&waitIndex={}",
            list.index + 1
        );
        let _ = http(&addr, "GET", &watch, None).await;
    }
}

/// Where DNS queries go.
pub fn dns_server(cfg: &crate::config::Config) -> Result<SocketAddr, String> {
    let s = cfg
        .discovery_dns
        .as_deref()
        .ok_or("--discovery-srv: no DNS server known (set --discovery-dns host:port)")?;
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("--discovery-dns {s:?}: expected an address such as 10.0.0.2:53"))
}

async fn dns_query(
    server: SocketAddr,
    name: &str,
    rtype: hickory_proto::rr::RecordType,
    id: u16,
) -> Result<hickory_proto::op::Message, String> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;
    let qname = Name::from_ascii(name).map_err(|e| format!("DNS name {name:?}: {e}"))?;
    let mut q = Message::query();
    q.metadata.id = id;
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(qname, rtype));
    let bytes = q.to_vec().map_err(|e| format!("DNS query: {e}"))?;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("DNS: {e}"))?;
    for _ in 0..3 {
        crate::rt::udp_send_to(&sock, &bytes, server)
            .await
            .map_err(|e| format!("DNS {server}: {e}"))?;
        let mut buf = vec![0u8; 4096];
        match crate::rt::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                let m = Message::from_vec(&buf[..n]).map_err(|e| format!("DNS answer: {e}"))?;
                if m.metadata.id == id {
                    return Ok(m);
                }
            }
            Ok(Err(e)) => return Err(format!("DNS {server}: {e}")),
            Err(_) => continue,
        }
    }
    Err(format!("DNS {server}: no answer for {name}"))
}

/// The addresses of `host` (an IP literal, `localhost`, or a DNS A lookup).
async fn resolve(server: SocketAddr, host: &str, hint: &[(String, IpAddr)]) -> Vec<IpAddr> {
    let host = host.trim_end_matches('.');
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return vec![ip];
    }
    if host.eq_ignore_ascii_case("localhost") {
        return vec![IpAddr::from([127, 0, 0, 1])];
    }
    let known: Vec<IpAddr> = hint
        .iter()
        .filter(|(n, _)| n.trim_end_matches('.').eq_ignore_ascii_case(host))
        .map(|(_, ip)| *ip)
        .collect();
    if !known.is_empty() {
        return known;
    }
    match dns_query(
        server,
        &format!("{host}."),
        hickory_proto::rr::RecordType::A,
        0x5eed,
    )
    .await
    {
        Ok(m) => m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                hickory_proto::rr::RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Build the initial cluster from DNS SRV records, etcd's way: other members are named
/// `0`, `1`, ... (names of others do not matter at bootstrap), this member by its own name
/// with its advertised peer URL.
pub async fn cluster_from_srv(
    server: SocketAddr,
    domain: &str,
    name: &str,
    peer_urls: &[url::Url],
) -> Result<Vec<(String, String)>, String> {
    let mut own: Vec<(SocketAddr, &url::Url)> = Vec::new();
    for u in peer_urls {
        let port = u.port_or_known_default().unwrap_or(2380);
        for ip in resolve(server, u.host_str().unwrap_or(""), &[]).await {
            own.push((SocketAddr::new(ip, port), u));
        }
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut temp = 0usize;
    for (service, scheme) in [("_etcd-server-ssl", "https"), ("_etcd-server", "http")] {
        let qname = format!("{service}._tcp.{}.", domain.trim_end_matches('.'));
        let m = match dns_query(server, &qname, hickory_proto::rr::RecordType::SRV, 0x7e5d).await {
            Ok(m) => m,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let hints: Vec<(String, IpAddr)> = m
            .additionals
            .iter()
            .filter_map(|r| match &r.data {
                hickory_proto::rr::RData::A(a) => Some((r.name.to_ascii(), IpAddr::V4(a.0))),
                _ => None,
            })
            .collect();
        let mut found = 0;
        for r in &m.answers {
            let hickory_proto::rr::RData::SRV(srv) = &r.data else {
                continue;
            };
            let target = srv.target.to_ascii();
            let short = target.trim_end_matches('.').to_string();
            let ips = resolve(server, &short, &hints).await;
            let mine = own
                .iter()
                .find(|(sa, _)| sa.port() == srv.port && ips.contains(&sa.ip()));
            match mine {
                Some((_, u)) if u.scheme() != scheme => {
                    errors.push(format!(
                        "bootstrap at {scheme}://{short}:{} from DNS for {service} has scheme mismatch with expected peer {u}",
                        srv.port
                    ));
                }
                Some((_, u)) => {
                    out.push((name.to_string(), crate::cluster::url_string(u)));
                    found += 1;
                }
                None => {
                    out.push((temp.to_string(), format!("{scheme}://{short}:{}", srv.port)));
                    temp += 1;
                    found += 1;
                }
            }
        }
        if found == 0 {
            errors.push(format!("no SRV records for {qname}"));
        }
    }
    if out.is_empty() {
        return Err(format!(
            "--discovery-srv {domain}: too many errors querying DNS SRV records ({})",
            errors.join("; ")
        ));
    }
    Ok(out)
}
