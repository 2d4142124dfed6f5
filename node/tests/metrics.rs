//! `/metrics` as etcd's dashboards and alerts read it: a 3-member detcd cluster serves v2
//! and v3 (gRPC) traffic, then every member's `/metrics` must hold every metric the etcd
//! mixin queries, under etcd 3.4's name, type, labels and buckets, with values that say what
//! happened (a leader everywhere, proposals committed, fsyncs timed, the gRPC calls made,
//! bytes to and from each peer, round trips measured). A second test holds the same list
//! against a real etcd 3.4.23, so the list and the expected types are etcd's, not detcd's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use detcd_node::rt::h2::H2Channel;
use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::kv_client::KvClient;
use detcd_proto::etcdserverpb::lease_client::LeaseClient;
use detcd_proto::etcdserverpb::watch_client::WatchClient;

type Channel = H2Channel<tonic::body::Body>;

/// What the etcd mixin queries, with etcd 3.4's type and the labels each series carries.
/// Sources: etcd 3.4's `Documentation/etcd-mixin/mixin.libsonnet` (alerts and the Grafana
/// dashboard) and etcd's current `contrib/mixin` (`alerts/alerts.libsonnet`,
/// `dashboards/targets.libsonnet`); plus, as the issue lists them, the member's id, version
/// and key count and the rest of the Prometheus process collector (`up` is Prometheus's own).
const MIXIN: &[(&str, &str, &[&str])] = &[
    ("etcd_server_has_leader", "gauge", &[]),
    ("etcd_server_leader_changes_seen_total", "counter", &[]),
    ("etcd_server_proposals_committed_total", "gauge", &[]),
    ("etcd_server_proposals_applied_total", "gauge", &[]),
    ("etcd_server_proposals_pending", "gauge", &[]),
    ("etcd_server_proposals_failed_total", "counter", &[]),
    ("etcd_disk_wal_fsync_duration_seconds", "histogram", &[]),
    (
        "etcd_disk_backend_commit_duration_seconds",
        "histogram",
        &[],
    ),
    ("etcd_network_peer_sent_bytes_total", "counter", &["To"]),
    (
        "etcd_network_peer_received_bytes_total",
        "counter",
        &["From"],
    ),
    (
        "etcd_network_peer_round_trip_time_seconds",
        "histogram",
        &["To"],
    ),
    ("etcd_network_peer_sent_failures_total", "counter", &["To"]),
    (
        "grpc_server_handled_total",
        "counter",
        &["grpc_code", "grpc_method", "grpc_service", "grpc_type"],
    ),
    (
        "grpc_server_started_total",
        "counter",
        &["grpc_method", "grpc_service", "grpc_type"],
    ),
    (
        "grpc_server_handling_seconds",
        "histogram",
        &["grpc_method", "grpc_service", "grpc_type"],
    ),
    (
        "etcd_network_client_grpc_received_bytes_total",
        "counter",
        &[],
    ),
    ("etcd_network_client_grpc_sent_bytes_total", "counter", &[]),
    ("etcd_mvcc_db_total_size_in_bytes", "gauge", &[]),
    ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge", &[]),
    ("etcd_debugging_mvcc_db_total_size_in_bytes", "gauge", &[]),
    ("etcd_server_quota_backend_bytes", "gauge", &[]),
    ("etcd_debugging_mvcc_keys_total", "gauge", &[]),
    ("etcd_server_id", "gauge", &["server_id"]),
    ("etcd_server_version", "gauge", &["server_version"]),
    ("process_cpu_seconds_total", "counter", &[]),
    ("process_resident_memory_bytes", "gauge", &[]),
    ("process_open_fds", "gauge", &[]),
    ("process_max_fds", "gauge", &[]),
    ("process_start_time_seconds", "gauge", &[]),
    ("process_virtual_memory_bytes", "gauge", &[]),
];

/// etcd 3.4's bucket bounds (`le`) per histogram, as its `/metrics` prints them.
const DISK_BUCKETS: &str =
    "0.001 0.002 0.004 0.008 0.016 0.032 0.064 0.128 0.256 0.512 1.024 2.048 4.096 8.192 +Inf";
const RTT_BUCKETS: &str = "0.0001 0.0002 0.0004 0.0008 0.0016 0.0032 0.0064 0.0128 0.0256 0.0512 0.1024 0.2048 0.4096 0.8192 1.6384 3.2768 +Inf";
const GRPC_BUCKETS: &str = "0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf";

fn buckets_of(name: &str) -> &'static str {
    match name {
        "etcd_network_peer_round_trip_time_seconds" => RTT_BUCKETS,
        "grpc_server_handling_seconds" => GRPC_BUCKETS,
        _ => DISK_BUCKETS,
    }
}

/// One series: its name (with `_bucket`/`_sum`/`_count`), labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` page (Prometheus text format 0.0.4).
#[derive(Debug, Default)]
struct Page {
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Page {
    fn parse(text: &str) -> Page {
        let mut p = Page::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (n, t) = rest.split_once(' ').expect("TYPE name kind");
                p.types.insert(n.into(), t.into());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (n, h) = rest.split_once(' ').unwrap_or((rest, ""));
                p.helps.insert(n.into(), h.into());
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((n, l)) => {
                    let l = l.strip_suffix('}').expect("labels end with }");
                    let labels = l
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").expect("k=\"v\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (n.to_string(), labels)
                }
            };
            p.samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        p
    }

    /// The series of metric `name` (a histogram's `_count` series stands for it).
    fn series(&self, name: &str) -> Vec<&Sample> {
        let want = if self.types.get(name).map(String::as_str) == Some("histogram") {
            format!("{name}_count")
        } else {
            name.to_string()
        };
        self.samples.iter().filter(|s| s.name == want).collect()
    }

    /// The value of the one series of `name` whose labels include `with`.
    fn value(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                with.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(found.len(), 1, "one series {name} with {with:?}: {found:?}");
        found[0].value
    }

    /// Check what the dashboards depend on for every metric of [`MIXIN`] this page has:
    /// the type, the label names of each series and, for histograms, etcd's buckets,
    /// cumulative, ending with `+Inf` equal to the count. Returns the names it lacks.
    fn check_shapes(&self, who: &str) -> Vec<&'static str> {
        let mut missing = Vec::new();
        for (name, kind, labels) in MIXIN {
            let Some(t) = self.types.get(*name) else {
                missing.push(*name);
                continue;
            };
            assert_eq!(t, kind, "{who}: the type of {name}");
            let series = self.series(name);
            assert!(!series.is_empty(), "{who}: {name} has a TYPE but no series");
            let want: BTreeSet<&str> = labels.iter().copied().collect();
            for s in &series {
                let have: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
                assert_eq!(have, want, "{who}: the labels of {name}: {s:?}");
            }
            if *kind != "histogram" {
                continue;
            }
            for s in &series {
                let buckets: Vec<&Sample> = self
                    .samples
                    .iter()
                    .filter(|b| b.name == format!("{name}_bucket"))
                    .filter(|b| {
                        let mut l = b.labels.clone();
                        l.remove("le");
                        l == s.labels
                    })
                    .collect();
                let les: Vec<&str> = buckets.iter().map(|b| b.labels["le"].as_str()).collect();
                assert_eq!(les.join(" "), buckets_of(name), "{who}: buckets of {name}");
                let counts: Vec<f64> = buckets.iter().map(|b| b.value).collect();
                assert!(
                    counts.windows(2).all(|w| w[0] <= w[1]),
                    "{who}: {name} buckets are cumulative: {counts:?}"
                );
                assert_eq!(
                    counts.last().copied(),
                    Some(s.value),
                    "{who}: {name} +Inf equals its count"
                );
            }
        }
        missing
    }
}

fn scrape(addr: &str) -> Page {
    let r = get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    Page::parse(&r.body)
}

fn addr_of(m: &Member) -> SocketAddr {
    m.addr().parse().unwrap()
}

/// The members' ids by name, from `/v2/members`.
fn member_ids(addr: &str) -> BTreeMap<String, String> {
    let v = get(addr, "/v2/members").expect("members").json();
    v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// v3 traffic through member `addr`, all over gRPC: 10 puts to distinct keys, a delete, a
/// range, a txn, one refused range (a future revision: OutOfRange), a watch stream that
/// sees one event and is closed, a lease granted and kept alive once on its stream.
async fn v3_traffic(addr: SocketAddr) {
    let mut kv = KvClient::new(Channel::connect(addr).await.expect("connect"));
    for i in 0..10 {
        kv.put(pb::PutRequest {
            key: format!("k{i}").into(),
            value: vec![b'v'; 100],
            ..Default::default()
        })
        .await
        .expect("put");
    }
    kv.delete_range(pb::DeleteRangeRequest {
        key: b"k9".to_vec(),
        ..Default::default()
    })
    .await
    .expect("delete");
    let r = kv
        .range(pb::RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(r.count, 9);
    kv.txn(pb::TxnRequest::default()).await.expect("txn");
    let e = kv
        .range(pb::RangeRequest {
            key: b"k0".to_vec(),
            revision: 1_000_000,
            ..Default::default()
        })
        .await
        .expect_err("a future revision");
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");

    let mut w = WatchClient::new(Channel::connect(addr).await.expect("connect"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<pb::WatchRequest>();
    let requests =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"w".to_vec(),
                ..Default::default()
            },
        )),
    })
    .unwrap();
    let mut answers = w.watch(requests).await.expect("watch").into_inner();
    let created = answers.message().await.expect("created").expect("open");
    assert!(created.created);
    kv.put(pb::PutRequest {
        key: b"w".to_vec(),
        value: b"1".to_vec(),
        ..Default::default()
    })
    .await
    .expect("put w");
    let event = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("an event within 10 s")
        .expect("event")
        .expect("open");
    assert_eq!(event.events.len(), 1);
    drop((tx, answers, w));

    let mut lease = LeaseClient::new(Channel::connect(addr).await.expect("connect"));
    let granted = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    let ka = pb::LeaseKeepAliveRequest { id: granted.id };
    let mut kept = lease
        .lease_keep_alive(futures::stream::iter(vec![ka]))
        .await
        .expect("keep-alive")
        .into_inner();
    let k = kept.message().await.expect("kept").expect("open");
    assert_eq!(k.id, granted.id);
    drop(kept);

    // The Lock service: a lock (its session's lease grant is not a gRPC call) and an unlock.
    use detcd_proto::v3lockpb::{self as lpb, lock_client::LockClient};
    let mut lock = LockClient::new(Channel::connect(addr).await.expect("connect"));
    let held = lock
        .lock(lpb::LockRequest {
            name: b"m".to_vec(),
            lease: 0,
        })
        .await
        .expect("lock")
        .into_inner();
    lock.unlock(lpb::UnlockRequest { key: held.key })
        .await
        .expect("unlock");
    // A Lock that waits behind another and whose client gives up: etcd counts it Unknown.
    let name = b"n".to_vec();
    let first = lock
        .lock(lpb::LockRequest {
            name: name.clone(),
            lease: 0,
        })
        .await
        .expect("lock n")
        .into_inner();
    let waiting = tokio::time::timeout(
        Duration::from_millis(500),
        lock.lock(lpb::LockRequest { name, lease: 0 }),
    )
    .await;
    assert!(waiting.is_err(), "the second lock of n waits: {waiting:?}");
    lock.unlock(lpb::UnlockRequest { key: first.key })
        .await
        .expect("unlock n");
}

#[test]
fn every_member_serves_the_metrics_etcd_dashboards_and_alerts_query() {
    let dir = tempfile::tempdir().unwrap();
    let mut ms = static_cluster(dir.path(), 3);
    for m in &mut ms {
        m.start();
    }
    eventually(Duration::from_secs(30), "a leader", || leader_of(&ms));
    // Proposals that failed while the cluster formed (a publication that timed out on a
    // slow machine, say); none may fail from here on.
    let failed_before: Vec<f64> = ms
        .iter()
        .map(|m| scrape(&m.addr()).value("etcd_server_proposals_failed_total", &[]))
        .collect();
    // v2 traffic: 5 writes and a read.
    for i in 0..5 {
        let r = form_put(&ms[1].addr(), &format!("/v2/keys/v2/{i}"), "value=x").expect("put");
        assert!(r.status == 200 || r.status == 201, "{}", r.body);
    }
    assert_eq!(get(&ms[2].addr(), "/v2/keys/v2/0").unwrap().status, 200);
    // v3 traffic through member 0.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(v3_traffic(addr_of(&ms[0])));
    let ids = member_ids(&ms[0].addr());
    let leader = ms[leader_of(&ms).expect("a leader")].name.clone();

    // Round trips are measured every 5 s; the streams closed above end on the server soon.
    let pages: Vec<Page> = eventually(
        Duration::from_secs(30),
        "round trips and ended streams",
        || {
            let pages: Vec<Page> = ms.iter().map(|m| scrape(&m.addr())).collect();
            let measured = pages.iter().all(|p| {
                p.series("etcd_network_peer_round_trip_time_seconds")
                    .iter()
                    .all(|s| s.value > 0.0)
            });
            let p = &pages[0];
            let open = |svc: &str| {
                let sum = |n: &str| -> f64 {
                    p.samples
                        .iter()
                        .filter(|s| {
                            s.name == n
                                && s.labels.get("grpc_service").map(String::as_str) == Some(svc)
                        })
                        .map(|s| s.value)
                        .sum()
                };
                sum("grpc_server_started_total") - sum("grpc_server_handled_total")
            };
            let settled = pages
                .iter()
                .all(|p| p.value("etcd_debugging_mvcc_keys_total", &[]) == 10.0);
            (measured
                && open("etcdserverpb.Watch") == 0.0
                && open("etcdserverpb.Lease") == 0.0
                && settled)
                .then_some(pages)
        },
    );

    for ((m, p), failed_before) in ms.iter().zip(&pages).zip(failed_before) {
        let who = &m.name;
        let missing = p.check_shapes(who);
        assert!(missing.is_empty(), "{who} lacks {missing:?}");
        let v = |name: &str| p.value(name, &[]);
        assert_eq!(v("etcd_server_has_leader"), 1.0, "{who}");
        assert!(v("etcd_server_leader_changes_seen_total") >= 1.0, "{who}");
        // 3 member publications, 5 v2 writes, 12 v3 writes and a lease at least.
        assert!(v("etcd_server_proposals_committed_total") >= 20.0, "{who}");
        assert!(v("etcd_server_proposals_applied_total") >= 20.0, "{who}");
        assert!(
            v("etcd_server_proposals_applied_total") <= v("etcd_server_proposals_committed_total"),
            "{who}"
        );
        assert_eq!(v("etcd_server_proposals_pending"), 0.0, "{who}");
        assert_eq!(
            v("etcd_server_proposals_failed_total"),
            failed_before,
            "{who}"
        );
        assert!(
            v("etcd_disk_wal_fsync_duration_seconds_count") > 0.0,
            "{who}"
        );
        assert!(v("etcd_disk_wal_fsync_duration_seconds_sum") > 0.0, "{who}");
        assert!(
            v("etcd_disk_backend_commit_duration_seconds_count") > 0.0,
            "{who}"
        );
        // 9 live keys of the first ten, and "w".
        assert_eq!(v("etcd_debugging_mvcc_keys_total"), 10.0, "{who}");
        let (size, in_use) = (
            v("etcd_mvcc_db_total_size_in_bytes"),
            v("etcd_mvcc_db_total_size_in_use_in_bytes"),
        );
        assert!(
            size > 0.0 && in_use > 0.0 && in_use <= size,
            "{who}: {size} {in_use}"
        );
        assert_eq!(
            v("etcd_debugging_mvcc_db_total_size_in_bytes"),
            size,
            "{who}"
        );
        assert_eq!(v("etcd_server_quota_backend_bytes"), 2147483648.0, "{who}");
        let id = &ids[who];
        assert_eq!(
            p.value("etcd_server_id", &[("server_id", id)]),
            1.0,
            "{who}"
        );
        assert_eq!(
            p.value("etcd_server_version", &[("server_version", "3.4.23")]),
            1.0
        );
        // Each peer, by its id: Raft traffic with the leader both ways (a follower sends
        // to the leader only), round trips measured with everyone, no failure.
        for (peer, pid) in ids.iter().filter(|(n, _)| *n != who) {
            let to = [("To", pid.as_str())];
            let from = [("From", pid.as_str())];
            let sent = p.value("etcd_network_peer_sent_bytes_total", &to);
            let received = p.value("etcd_network_peer_received_bytes_total", &from);
            if *who == leader || *peer == leader {
                assert!(
                    sent > 0.0 && received > 0.0,
                    "{who} with {peer}: {sent} {received}"
                );
            }
            let rtt = p.value("etcd_network_peer_round_trip_time_seconds_count", &to);
            assert!(rtt > 0.0, "{who} to {peer}");
            let rtt_sum = p.value("etcd_network_peer_round_trip_time_seconds_sum", &to);
            assert!(
                rtt_sum > 0.0 && rtt_sum / rtt < 1.0,
                "{who} to {peer}: {rtt_sum}"
            );
            assert_eq!(
                p.value("etcd_network_peer_sent_failures_total", &to),
                0.0,
                "{who} to {peer}"
            );
        }
        assert_eq!(
            p.series("etcd_network_peer_sent_bytes_total").len(),
            2,
            "{who}"
        );
        // The process collector: this member's process.
        assert!(v("process_resident_memory_bytes") > 1e6, "{who}");
        assert!(v("process_open_fds") > 0.0 && v("process_open_fds") <= v("process_max_fds"));
        assert!(v("process_virtual_memory_bytes") >= v("process_resident_memory_bytes"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = v("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 600.0,
            "{who}: {started} {now}"
        );
        // Every method of the six services with every code, as etcd registers them at
        // start; the Lock and Election services' series only once used (below).
        let registered = |name: &str| {
            p.series(name)
                .into_iter()
                .filter(|s| s.labels["grpc_service"].starts_with("etcdserverpb."))
                .count()
        };
        assert_eq!(registered("grpc_server_started_total"), 39, "{who}");
        assert_eq!(registered("grpc_server_handled_total"), 39 * 17, "{who}");
        let later: Vec<&Sample> = p
            .samples
            .iter()
            .filter(|s| s.name.starts_with("grpc_server_"))
            .filter(|s| !s.labels["grpc_service"].starts_with("etcdserverpb."))
            .collect();
        if *who != ms[0].name {
            assert!(later.is_empty(), "{who}: {later:?}");
        }
    }

    // The gRPC calls, counted where they were served (member 0) and nowhere else.
    let p = &pages[0];
    fn with<'a>(method: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let svc = match method {
            "Watch" => "etcdserverpb.Watch",
            "LeaseGrant" | "LeaseKeepAlive" => "etcdserverpb.Lease",
            _ => "etcdserverpb.KV",
        };
        let mut l = vec![("grpc_method", method), ("grpc_service", svc)];
        l.extend_from_slice(extra);
        l
    }
    for (method, calls, ty) in [
        ("Put", 11.0, "unary"),
        ("Range", 2.0, "unary"),
        ("DeleteRange", 1.0, "unary"),
        ("Txn", 1.0, "unary"),
        ("LeaseGrant", 1.0, "unary"),
        ("Watch", 1.0, "bidi_stream"),
        ("LeaseKeepAlive", 1.0, "bidi_stream"),
    ] {
        let labels = with(method, &[("grpc_type", ty)]);
        assert_eq!(
            p.value("grpc_server_started_total", &labels),
            calls,
            "{method}"
        );
        assert_eq!(
            p.value("grpc_server_handling_seconds_count", &labels),
            calls,
            "{method}"
        );
        assert_eq!(
            p.value("grpc_server_msg_received_total", &labels),
            calls,
            "{method}"
        );
    }
    assert_eq!(
        p.value(
            "grpc_server_handled_total",
            &with("Put", &[("grpc_code", "OK")])
        ),
        11.0
    );
    assert_eq!(
        p.value(
            "grpc_server_handled_total",
            &with("Range", &[("grpc_code", "OK")])
        ),
        1.0
    );
    assert_eq!(
        p.value(
            "grpc_server_handled_total",
            &with("Range", &[("grpc_code", "OutOfRange")])
        ),
        1.0
    );
    // The Lock and Unlock calls, as etcd 3.4.23 shows them after Locks over the gateway, one
    // of them given up while it waited: `started`, `msg_received`, `msg_sent` (answered calls
    // only) and `handled` with the codes that occurred (a Lock given up: Unknown), and here
    // `handling_seconds`, which etcd shows with `--metrics extensive`; no Election series.
    for (method, calls, answered) in [("Lock", 3.0, 2.0), ("Unlock", 2.0, 2.0)] {
        let l = [("grpc_method", method), ("grpc_service", "v3lockpb.Lock")];
        for (name, want) in [
            ("grpc_server_started_total", calls),
            ("grpc_server_msg_received_total", calls),
            ("grpc_server_msg_sent_total", answered),
            ("grpc_server_handling_seconds_count", calls),
        ] {
            assert_eq!(p.value(name, &l), want, "{name} {method}");
        }
        let handled: BTreeMap<&str, f64> = p
            .samples
            .iter()
            .filter(|s| s.name == "grpc_server_handled_total")
            .filter(|s| s.labels["grpc_method"] == method)
            .map(|s| (s.labels["grpc_code"].as_str(), s.value))
            .collect();
        let mut want = BTreeMap::from([("OK", answered)]);
        if calls > answered {
            want.insert("Unknown", calls - answered);
        }
        assert_eq!(handled, want, "{method}");
    }
    assert!(!p.samples.iter().any(|s| s
        .labels
        .get("grpc_service")
        .is_some_and(|v| v.starts_with("v3election"))));
    // The watch stream sent its created answer and an event; the range, nine keys.
    assert!(p.value("grpc_server_msg_sent_total", &with("Watch", &[])) >= 2.0);
    // Bytes: at least the ten 100-byte values in, at least the nine returned by the range out.
    assert!(p.value("etcd_network_client_grpc_received_bytes_total", &[]) > 1000.0);
    assert!(p.value("etcd_network_client_grpc_sent_bytes_total", &[]) > 900.0);
    for other in &pages[1..] {
        assert_eq!(
            other.value("etcd_network_client_grpc_received_bytes_total", &[]),
            0.0
        );
        assert_eq!(
            other.value(
                "grpc_server_started_total",
                &with("Put", &[("grpc_type", "unary")])
            ),
            0.0
        );
    }
    for m in &mut ms {
        m.kill();
    }
}

/// The list above is etcd's: a real etcd 3.4.23 (one member, `--metrics extensive` for the
/// gRPC handling histogram) after a put and a get serves every metric of it that is not
/// about peers, with the same types, labels and buckets. (A single member has no peer
/// series; the three-member test covers those by the names etcd's rafthttp registers.)
#[test]
fn the_metric_list_and_its_shapes_are_etcds() {
    if !require_bin("etcd", "Debian package etcd-server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut m = static_cluster(dir.path(), 1).remove(0);
    m.args
        .extend(["--metrics".to_string(), "extensive".to_string()]);
    m.start_binary("etcd");
    let addr = addr_of(&m);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut kv = loop {
            if let Ok(Ok(ch)) =
                tokio::time::timeout(Duration::from_secs(2), Channel::connect(addr)).await
            {
                let mut kv = KvClient::new(ch);
                let put = kv.put(pb::PutRequest {
                    key: b"a".to_vec(),
                    value: b"b".to_vec(),
                    ..Default::default()
                });
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), put).await {
                    break kv;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        kv.range(pb::RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range");
    });
    let p = scrape(&m.addr());
    let missing = p.check_shapes("etcd");
    assert_eq!(
        missing,
        vec![
            "etcd_network_peer_sent_bytes_total",
            "etcd_network_peer_received_bytes_total",
            "etcd_network_peer_round_trip_time_seconds",
            "etcd_network_peer_sent_failures_total",
        ],
        "etcd 3.4.23 lacks only the peer series of a one-member cluster"
    );
    // detcd's help texts are etcd's for every metric of the list.
    let dir2 = tempfile::tempdir().unwrap();
    let mut d = static_cluster(dir2.path(), 1).remove(0);
    d.start();
    eventually(Duration::from_secs(30), "detcd's /metrics", || {
        get(&d.addr(), "/metrics").ok().filter(|r| r.status == 200)
    });
    let q = scrape(&d.addr());
    for (name, _, _) in MIXIN {
        if let Some(h) = p.helps.get(*name) {
            assert_eq!(q.helps.get(*name), Some(h), "the help text of {name}");
        }
    }
    m.kill();
    d.kill();
}
