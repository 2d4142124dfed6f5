//! Bootstrapping without `--initial-cluster`: etcd's discovery protocol against a running
//! detcd (the tutorial's "existing cluster as discovery service"), and DNS SRV records served
//! by a small DNS server this test runs on loopback.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

/// etcd flags for a member that bootstraps by `how` (discovery flags) instead of
/// `--initial-cluster`.
fn discovering(dir: &std::path::Path, name: &str, (c, p): (u16, u16), how: &[String]) -> Member {
    let mut m = member(dir, name, c, p, "unused", "new");
    let i = m.args.iter().position(|a| a == "-initial-cluster").unwrap();
    m.args.drain(i..i + 2);
    m.args.extend(how.iter().cloned());
    m
}

fn same_members_everywhere(ms: &[Member], n: usize) {
    let t = std::time::Instant::now();
    loop {
        let lists: Vec<String> = ms
            .iter()
            .map(|m| {
                get(&m.addr(), "/v2/members")
                    .map(|r| r.body)
                    .unwrap_or_default()
            })
            .collect();
        let named = lists[0].matches("\"clientURLs\":[\"http").count() == n;
        if named && lists.iter().all(|l| *l == lists[0]) {
            return;
        }
        if t.elapsed() > Duration::from_secs(30) {
            for m in ms {
                eprintln!("=== {}\n{}", m.name, m.logs());
            }
            panic!("no identical lists of {n} members: {lists:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn join_by_discovery_url_with_size_3() {
    let dir = tempfile::tempdir().unwrap();
    // The discovery service: a one-member detcd.
    std::fs::create_dir_all(dir.path().join("disco")).unwrap();
    let mut disco = static_cluster(&dir.path().join("disco"), 1).remove(0);
    disco.start();
    eventually(Duration::from_secs(20), "the discovery service", || {
        (get(&disco.addr(), "/v2/members/leader").ok()?.status == 200).then_some(())
    });
    let token = "6c007a14875d53d9bf0ef5a6fc0257c817f0fb83";
    let r = form_put(
        &disco.addr(),
        &format!("/v2/keys/discovery/{token}/_config/size"),
        "value=3",
    )
    .unwrap();
    assert_eq!(r.status, 201);
    let url = format!("http://{}/v2/keys/discovery/{token}", disco.addr());
    let how = vec!["--discovery".to_string(), url.clone()];
    let mut ms: Vec<Member> = (0..3)
        .map(|i| discovering(dir.path(), &format!("d{i}"), ports(), &how))
        .collect();
    for m in ms.iter_mut() {
        m.start();
    }
    same_members_everywhere(&ms, 3);
    let r = form_put(&ms[0].addr(), "/v2/keys/message", "value=found").unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    eventually(Duration::from_secs(10), "the key on d2", || {
        get(&ms[2].addr(), "/v2/keys/message")
            .ok()?
            .body
            .contains("found")
            .then_some(())
    });
    // The three registrations are visible in the discovery service (`_config` is hidden).
    let listing = get(&disco.addr(), &format!("/v2/keys/discovery/{token}")).unwrap();
    assert_eq!(
        listing.json()["node"]["nodes"].as_array().unwrap().len(),
        3,
        "{}",
        listing.body
    );

    // A fourth member is late: the cluster is full.
    let mut late = discovering(dir.path(), "d3", ports(), &how);
    late.start();
    let status = eventually(Duration::from_secs(30), "the late member to exit", || {
        late.child.as_mut()?.try_wait().unwrap()
    });
    assert!(!status.success());
    assert!(late.logs().contains("cluster is full"), "{}", late.logs());
    late.child = None;

    // No size key: a clear error.
    let mut lost = discovering(
        dir.path(),
        "x",
        ports(),
        &[
            "--discovery".into(),
            format!("http://{}/v2/keys/discovery/nothing", disco.addr()),
        ],
    );
    lost.start();
    let status = eventually(Duration::from_secs(30), "the member to exit", || {
        lost.child.as_mut()?.try_wait().unwrap()
    });
    assert!(!status.success());
    assert!(
        lost.logs().contains("size key not found"),
        "{}",
        lost.logs()
    );
    lost.child = None;
}

/// A DNS server for one domain: answers SRV queries for `_etcd-server._tcp.<domain>` with
/// the given targets (and no `-ssl` records), until `stop` is set.
fn dns_server(
    domain: &'static str,
    targets: Vec<(String, u16)>,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::SRV;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        // bounded: at most 10 minutes of 100 ms polls
        for _ in 0..6000 {
            if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.message_type = MessageType::Response;
            for query in &q.queries {
                r.add_query(query.clone());
                let name = query.name().to_ascii();
                if query.query_type() == RecordType::SRV
                    && name == format!("_etcd-server._tcp.{domain}.")
                {
                    for (t, p) in &targets {
                        let srv = SRV::new(0, 0, *p, Name::from_ascii(t).unwrap());
                        r.answers.push(Record::from_rdata(
                            query.name().clone(),
                            60,
                            RData::SRV(srv),
                        ));
                    }
                } else {
                    r.metadata.response_code = ResponseCode::NXDomain;
                }
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), from);
        }
    });
    (port, stop)
}

#[test]
fn join_by_dns_srv() {
    let dir = tempfile::tempdir().unwrap();
    let ps: Vec<(u16, u16)> = (0..3).map(|_| ports()).collect();
    let targets = ps
        .iter()
        .map(|(_, p)| ("127.0.0.1.".to_string(), *p))
        .collect();
    let (dns, stop) = dns_server("detcd.test", targets);
    let how = vec![
        "--discovery-srv".to_string(),
        "detcd.test".into(),
        "--discovery-dns".into(),
        format!("127.0.0.1:{dns}"),
    ];
    let mut ms: Vec<Member> = ps
        .iter()
        .enumerate()
        .map(|(i, pp)| discovering(dir.path(), &format!("s{i}"), *pp, &how))
        .collect();
    for m in ms.iter_mut() {
        m.start();
    }
    same_members_everywhere(&ms, 3);
    let r = form_put(&ms[1].addr(), "/v2/keys/srv", "value=ok").unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    eventually(Duration::from_secs(10), "the key on s0", || {
        get(&ms[0].addr(), "/v2/keys/srv")
            .ok()?
            .body
            .contains("ok")
            .then_some(())
    });

    // A member whose peer URL has no record is refused with a clear error.
    let mut stray = discovering(dir.path(), "stray", ports(), &how);
    stray.start();
    let status = eventually(Duration::from_secs(30), "the stray member to exit", || {
        stray.child.as_mut()?.try_wait().unwrap()
    });
    assert!(!status.success());
    assert!(
        stray.logs().contains("no SRV record matches"),
        "{}",
        stray.logs()
    );
    stray.child = None;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}
