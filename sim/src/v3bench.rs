//! Benchmarks of etcd's v3 watch and lease APIs (`detcd-real --processes --bench MODE`), run
//! against a 3-member cluster of detcd or etcd 3.4 with the same tonic-generated gRPC clients
//! over [`H2Channel`] as the v3 workload (`crate::v3load`). Every loop is bounded.
//!
//! * `watch-fanout`: `watchers` watchers on one key prefix, `per_stream` of them on each gRPC
//!   Watch stream, the streams spread over `conns` HTTP/2 connections (connection j at member
//!   j mod 3) — the shape of etcd's own `benchmark watch`. Every watch starts at the revision
//!   after the one read before they were created, so each must see every Put of the run. Then
//!   `writers` closed-loop clients (writer w at member w mod 3) put `puts` distinct keys under
//!   the prefix. Measured: events delivered per second over all watchers (from the first Put
//!   sent to the last event received), and each event's delivery latency, from the Put's
//!   acknowledgement (its response) to the watcher's receipt (0 when the event came first,
//!   which is counted), and from the Put's sending to the receipt.
//!   Checked: every watcher got every acknowledged Put exactly once, in revision order
//!   ([`account`]); any Put without an answer fails the run.
//! * `lease-keepalive`: `leases` leases of `ttl` seconds granted by `granters` closed-loop
//!   clients, then kept alive for `keep_s` seconds over `streams` LeaseKeepAlive streams
//!   (leases split evenly, streams over `conns` connections). Each stream runs closed-loop
//!   rounds: a keep-alive for each of its leases queued at once, then every answer read; the
//!   latency is from the round's send to each answer (so it includes the queue of the
//!   stream's leases ahead of it). Checked: no answer with TTL ≤ 0 (expired), every lease
//!   answered each round, LeaseLeases lists every lease, and LeaseTimeToLive of a sample of
//!   100 leases shows a TTL renewed by the keep-alives (≥ ttl − seconds since the lease's last
//!   answer − 2).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use detcd_node::rt::h2::H2Channel;
use detcd_proto::etcdserverpb as pb;
use detcd_proto::etcdserverpb::kv_client::KvClient;
use detcd_proto::etcdserverpb::lease_client::LeaseClient;
use detcd_proto::etcdserverpb::watch_client::WatchClient;
use tokio::time::Instant;

type Ch = H2Channel<tonic::body::Body>;

/// The watched prefix; the Puts go to `bench/w/<writer>-<n>`.
const PREFIX: &str = "bench/w/";
const PREFIX_END: &str = "bench/w0";
/// A stream with no message for this long is given up (its watchers' missing events fail
/// the run).
const SILENCE: Duration = Duration::from_secs(10);
/// A request without an answer in this long fails.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Which benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bench {
    /// Watch fan-out: events/s delivered to many watchers, delivery latency, exactly-once.
    WatchFanout,
    /// Lease keep-alive load: keep-alive answers/s over many leases, none expired.
    LeaseKeepalive,
}

impl Bench {
    /// The benchmark's name in report paths (`bench-watch-fanout`, `bench-lease-keepalive`).
    pub fn name(self) -> &'static str {
        match self {
            Bench::WatchFanout => "bench-watch-fanout",
            Bench::LeaseKeepalive => "bench-lease-keepalive",
        }
    }
}

/// The knobs of both benchmarks (`detcd-real --bench ... --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOpts {
    /// watch-fanout: watchers on the prefix.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// watch-fanout: watchers per Watch stream.
    #[arg(long, default_value_t = 50)]
    pub per_stream: usize,
    /// Both: HTTP/2 connections the streams share (connection j at member j mod 3).
    #[arg(long, default_value_t = 10)]
    pub conns: usize,
    /// watch-fanout: Puts under the prefix (distinct keys).
    #[arg(long, default_value_t = 2000)]
    pub puts: usize,
    /// watch-fanout: closed-loop writers (writer w at member w mod 3).
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// lease-keepalive: leases granted and kept alive.
    #[arg(long, default_value_t = 10000)]
    pub leases: usize,
    /// lease-keepalive: the leases' TTL, seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
    /// lease-keepalive: closed-loop LeaseGrant clients.
    #[arg(long, default_value_t = 16)]
    pub granters: usize,
    /// lease-keepalive: LeaseKeepAlive streams.
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// lease-keepalive: seconds of keep-alives.
    #[arg(long, default_value_t = 10.0)]
    pub keep_s: f64,
}

impl BenchOpts {
    /// Why benchmark `b` cannot run with these options (checked before any member starts).
    pub fn invalid(&self, b: Bench) -> Option<String> {
        let positive: &[(&str, f64)] = match b {
            Bench::WatchFanout => &[
                ("--watchers", self.watchers as f64),
                ("--per-stream", self.per_stream as f64),
                ("--conns", self.conns as f64),
                ("--puts", self.puts as f64),
                ("--writers", self.writers as f64),
            ],
            Bench::LeaseKeepalive => &[
                ("--leases", self.leases as f64),
                ("--ttl", self.ttl as f64),
                ("--granters", self.granters as f64),
                ("--streams", self.streams as f64),
                ("--keep-s", self.keep_s),
            ],
        };
        positive
            .iter()
            .find(|(_, v)| v.is_nan() || *v <= 0.0)
            .map(|(name, v)| format!("{name} {v}: must be greater than 0"))
    }
}

/// What one watcher received against what it should have.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Events received.
    pub received: usize,
    /// Acknowledged Puts the watcher never saw.
    pub missing: usize,
    /// Events of a revision seen before.
    pub duplicates: usize,
    /// Events whose revision is below an earlier event's (not counting duplicates).
    pub out_of_order: usize,
    /// Events of a revision no acknowledged Put had.
    pub unexpected: usize,
}

impl Tally {
    /// Every acknowledged Put exactly once, in order, and nothing else.
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.out_of_order == 0 && self.unexpected == 0
    }
}

/// Account one watcher's events (revisions in the order received) against the acknowledged
/// Puts' revisions (`expected`, sorted ascending): every one exactly once, in order.
pub fn account(expected: &[i64], got: &[i64]) -> Tally {
    let mut t = Tally {
        received: got.len(),
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::with_capacity(got.len());
    let mut high = i64::MIN;
    for &r in got {
        if !seen.insert(r) {
            t.duplicates += 1;
            continue;
        }
        if r < high {
            t.out_of_order += 1;
        }
        high = high.max(r);
        if expected.binary_search(&r).is_err() {
            t.unexpected += 1;
        }
    }
    t.missing = expected.iter().filter(|r| !seen.contains(r)).count();
    t
}

/// Percentile `q` (0..=1) of sorted values, in ms from ns.
fn pct_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1e6
}

fn lat_json(mut v: Vec<u64>) -> serde_json::Value {
    v.sort_unstable();
    serde_json::json!({
        "count": v.len(),
        "p50_ms": pct_ms(&v, 0.5),
        "p99_ms": pct_ms(&v, 0.99),
        "max_ms": pct_ms(&v, 1.0),
    })
}

async fn connect(addr: SocketAddr) -> Result<Ch, String> {
    match tokio::time::timeout(TIMEOUT, H2Channel::connect(addr)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("connecting to {addr}: {e}")),
        Err(_) => Err(format!("connecting to {addr}: timed out")),
    }
}

async fn connections(addrs: &[SocketAddr], n: usize) -> Result<Vec<Ch>, String> {
    let mut v = Vec::with_capacity(n);
    for j in 0..n.max(1) {
        v.push(connect(addrs[j % addrs.len()]).await?);
    }
    Ok(v)
}

/// The outcome of a benchmark: its figures (JSON) and the failed checks.
pub struct Outcome {
    /// The figures, written to `bench.json`.
    pub figures: serde_json::Value,
    /// Each failed check, said.
    pub failures: Vec<String>,
}

/// What one watch stream task brings back: per watcher of the stream, (revision, receipt
/// ns) of each event in the order received; and why it ended early, if it did.
type StreamEvents = (Vec<Vec<(i64, u64)>>, Option<String>);

async fn watch_stream(
    ch: Ch,
    n: usize,
    start_revision: i64,
    expect_each: usize,
    t0: Instant,
    created: tokio::sync::mpsc::UnboundedSender<()>,
) -> StreamEvents {
    let mut events: Vec<Vec<(i64, u64)>> = vec![Vec::new(); n];
    let (tx, rx) = futures::channel::mpsc::unbounded();
    // Every create queued before the call: the server may send response headers only with
    // its first answer.
    for _ in 0..n {
        let req = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: PREFIX.as_bytes().to_vec(),
                    range_end: PREFIX_END.as_bytes().to_vec(),
                    start_revision,
                    ..Default::default()
                },
            )),
        };
        let _ = tx.unbounded_send(req);
    }
    let mut w = WatchClient::new(ch).max_decoding_message_size(usize::MAX);
    let mut answers = match tokio::time::timeout(TIMEOUT, w.watch(rx)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(e)) => return (events, Some(format!("Watch call: {e}"))),
        Err(_) => return (events, Some("Watch call: timed out".into())),
    };
    // Creates on one stream are answered in order: the i-th created is watcher i.
    let mut ids: HashMap<i64, usize> = HashMap::new();
    let mut left = n * expect_each;
    let cap = t0 + Duration::from_secs(600);
    while left > 0 || ids.len() < n {
        let deadline = cap.min(Instant::now() + SILENCE);
        let r = match tokio::time::timeout_at(deadline, answers.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return (events, Some("stream ended".into())),
            Ok(Err(e)) => return (events, Some(format!("stream broke: {e}"))),
            Err(_) => return (events, Some(format!("silent for {SILENCE:?}"))),
        };
        let at = t0.elapsed().as_nanos() as u64;
        if r.created {
            let i = ids.len();
            ids.insert(r.watch_id, i);
            if ids.len() == n {
                let _ = created.send(());
            }
        }
        if r.canceled {
            return (
                events,
                Some(format!(
                    "watch {} canceled: {:?} (compact {})",
                    r.watch_id, r.cancel_reason, r.compact_revision
                )),
            );
        }
        if r.events.is_empty() {
            continue;
        }
        let Some(&i) = ids.get(&r.watch_id) else {
            return (
                events,
                Some(format!("events for unknown watch {}", r.watch_id)),
            );
        };
        for e in &r.events {
            let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            events[i].push((rev, at));
            left = left.saturating_sub(1);
        }
    }
    drop(tx);
    (events, None)
}

/// One closed-loop writer: Puts `n` keys; (revision, send ns, ack ns) of each acknowledged
/// one, and the errors.
async fn writer(ch: Ch, w: usize, n: usize, t0: Instant) -> (Vec<(i64, u64, u64)>, Vec<String>) {
    let mut kv = KvClient::new(ch);
    let mut acks = Vec::with_capacity(n);
    let mut errs = Vec::new();
    let value = vec![b'x'; 32];
    for i in 0..n {
        let req = pb::PutRequest {
            key: format!("{PREFIX}{w}-{i}").into_bytes(),
            value: value.clone(),
            ..Default::default()
        };
        let sent = t0.elapsed().as_nanos() as u64;
        match tokio::time::timeout(TIMEOUT, kv.put(req)).await {
            Ok(Ok(r)) => {
                let rev = r.into_inner().header.map_or(0, |h| h.revision);
                acks.push((rev, sent, t0.elapsed().as_nanos() as u64));
            }
            Ok(Err(e)) => errs.push(format!("writer {w} put {i}: {e}")),
            Err(_) => errs.push(format!("writer {w} put {i}: timed out")),
        }
    }
    (acks, errs)
}

/// The watch fan-out benchmark (see the module docs).
pub async fn watch_fanout(addrs: &[SocketAddr], o: &BenchOpts) -> Result<Outcome, String> {
    if o.watchers == 0 || o.puts == 0 {
        return Err("watch-fanout needs --watchers and --puts above 0".into());
    }
    let t0 = Instant::now();
    let conns = connections(addrs, o.conns).await?;
    let mut kv = KvClient::new(conns[0].clone());
    let rev0 = match tokio::time::timeout(
        TIMEOUT,
        kv.range(pb::RangeRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: PREFIX_END.as_bytes().to_vec(),
            count_only: true,
            ..Default::default()
        }),
    )
    .await
    {
        Ok(Ok(r)) => r.into_inner().header.map_or(0, |h| h.revision),
        other => return Err(format!("first Range: {other:?}")),
    };
    let per = o.per_stream.max(1);
    let nstreams = o.watchers.div_ceil(per);
    let (ctx, mut crx) = tokio::sync::mpsc::unbounded_channel();
    let mut streams = Vec::new();
    for s in 0..nstreams {
        let n = per.min(o.watchers - s * per);
        let ch = conns[s % conns.len()].clone();
        streams.push(tokio::spawn(watch_stream(
            ch,
            n,
            rev0 + 1,
            o.puts,
            t0,
            ctx.clone(),
        )));
    }
    drop(ctx);
    let created_by = Instant::now() + Duration::from_secs(60);
    for k in 0..nstreams {
        match tokio::time::timeout_at(created_by, crx.recv()).await {
            Ok(Some(())) => {}
            _ => {
                for s in &streams {
                    s.abort();
                }
                return Err(format!(
                    "only {k} of {nstreams} watch streams had all their watches created"
                ));
            }
        }
    }
    let created_s = t0.elapsed().as_secs_f64();
    let mut ws = Vec::new();
    for w in 0..o.writers.max(1) {
        let share = o.puts / o.writers.max(1) + usize::from(w < o.puts % o.writers.max(1));
        let ch = connect(addrs[w % addrs.len()]).await?;
        ws.push(tokio::spawn(writer(ch, w, share, t0)));
    }
    let first_put = t0.elapsed().as_nanos() as u64;
    let mut acks = Vec::new();
    let mut failures = Vec::new();
    for w in ws {
        let (a, e) = w.await.map_err(|e| e.to_string())?;
        acks.extend(a);
        failures.extend(e);
    }
    let last_ack = acks.iter().map(|a| a.2).max().unwrap_or(first_put);
    acks.sort_unstable();
    let expected: Vec<i64> = acks.iter().map(|a| a.0).collect();
    let put_at: HashMap<i64, (u64, u64)> = acks.iter().map(|a| (a.0, (a.1, a.2))).collect();
    let mut lat = Vec::new();
    let mut lat_send = Vec::new();
    let mut before_ack = 0u64;
    let mut delivered = 0usize;
    let mut last_event = first_put;
    let mut bad_watchers = 0usize;
    let mut sum = Tally::default();
    let mut watcher = 0usize;
    for s in streams {
        let (events, why) = s.await.map_err(|e| e.to_string())?;
        if let Some(why) = why {
            failures.push(format!("watch stream of watchers {watcher}..: {why}"));
        }
        for evs in events {
            let revs: Vec<i64> = evs.iter().map(|e| e.0).collect();
            let t = account(&expected, &revs);
            if !t.ok() {
                if bad_watchers < 10 {
                    failures.push(format!("watcher {watcher}: {t:?} of {}", expected.len()));
                }
                bad_watchers += 1;
            }
            sum.received += t.received;
            sum.missing += t.missing;
            sum.duplicates += t.duplicates;
            sum.out_of_order += t.out_of_order;
            sum.unexpected += t.unexpected;
            delivered += evs.len();
            for (rev, at) in evs {
                last_event = last_event.max(at);
                if let Some(&(sent, acked)) = put_at.get(&rev) {
                    if at < acked {
                        before_ack += 1;
                    }
                    lat.push(at.saturating_sub(acked));
                    lat_send.push(at.saturating_sub(sent));
                }
            }
            watcher += 1;
        }
    }
    if bad_watchers > 0 {
        failures.push(format!(
            "{bad_watchers} of {} watchers did not get every event exactly once in order: \
             missing {}, duplicated {}, out of order {}, unexpected {}",
            o.watchers, sum.missing, sum.duplicates, sum.out_of_order, sum.unexpected
        ));
    }
    let span_s = (last_event - first_put) as f64 / 1e9;
    let puts_s = (last_ack - first_put) as f64 / 1e9;
    let figures = serde_json::json!({
        "bench": "watch-fanout",
        "watchers": o.watchers,
        "watchers_per_stream": per,
        "streams": nstreams,
        "connections": conns.len(),
        "writers": o.writers,
        "puts": o.puts,
        "puts_acknowledged": expected.len(),
        "watches_created_s": created_s,
        "puts_per_s": expected.len() as f64 / puts_s.max(1e-9),
        "events_expected": expected.len() * o.watchers,
        "events_delivered": delivered,
        "delivery_span_s": span_s,
        "events_per_s": delivered as f64 / span_s.max(1e-9),
        "events_before_ack": before_ack,
        "latency_from_ack": lat_json(lat),
        "latency_from_send": lat_json(lat_send),
        "missing": sum.missing,
        "duplicates": sum.duplicates,
        "out_of_order": sum.out_of_order,
        "unexpected": sum.unexpected,
    });
    Ok(Outcome { figures, failures })
}

/// One keep-alive stream's result: answers' latencies (ns), answers with TTL ≤ 0, each
/// lease's last answer (ns since t0), and why it ended early.
struct KeepResult {
    lat: Vec<u64>,
    expired: Vec<i64>,
    last: Vec<(i64, u64)>,
    rounds: u64,
    failure: Option<String>,
}

async fn keep_stream(ch: Ch, leases: Vec<i64>, until: Instant, t0: Instant) -> KeepResult {
    let mut res = KeepResult {
        lat: Vec::new(),
        expired: Vec::new(),
        last: leases.iter().map(|&l| (l, 0)).collect(),
        rounds: 0,
        failure: None,
    };
    let idx: HashMap<i64, usize> = leases.iter().enumerate().map(|(i, &l)| (l, i)).collect();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let send_round = |tx: &futures::channel::mpsc::UnboundedSender<pb::LeaseKeepAliveRequest>| {
        for &id in &leases {
            let _ = tx.unbounded_send(pb::LeaseKeepAliveRequest { id });
        }
        Instant::now()
    };
    // The first round queued before the call: etcd's grpc-go sends the response headers
    // only with its first answer, and the call returns once they arrive.
    let mut sent = send_round(&tx);
    let mut l = LeaseClient::new(ch);
    let mut answers = match tokio::time::timeout(TIMEOUT, l.lease_keep_alive(rx)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(e)) => {
            res.failure = Some(format!("LeaseKeepAlive call: {e}"));
            return res;
        }
        Err(_) => {
            res.failure = Some("LeaseKeepAlive call: timed out".into());
            return res;
        }
    };
    loop {
        let mut answered = vec![false; leases.len()];
        let mut left = leases.len();
        while left > 0 {
            let r = match tokio::time::timeout(TIMEOUT, answers.message()).await {
                Ok(Ok(Some(r))) => r,
                other => {
                    res.failure = Some(format!(
                        "round {}: {left} of {} leases unanswered: {other:?}",
                        res.rounds,
                        leases.len()
                    ));
                    return res;
                }
            };
            let now = Instant::now();
            let Some(&i) = idx.get(&r.id) else {
                res.failure = Some(format!("an answer for lease {} not asked", r.id));
                return res;
            };
            if answered[i] {
                continue; // counted as unanswered for its twin; should not happen
            }
            answered[i] = true;
            left -= 1;
            res.lat.push((now - sent).as_nanos() as u64);
            if r.ttl <= 0 {
                res.expired.push(r.id);
            } else {
                res.last[i].1 = (now - t0).as_nanos() as u64;
            }
        }
        res.rounds += 1;
        if Instant::now() >= until {
            break;
        }
        sent = send_round(&tx);
    }
    res
}

async fn grant(ch: Ch, n: usize, ttl: i64) -> Result<Vec<i64>, String> {
    let mut l = LeaseClient::new(ch);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let r = tokio::time::timeout(TIMEOUT, l.lease_grant(pb::LeaseGrantRequest { ttl, id: 0 }))
            .await
            .map_err(|_| "LeaseGrant timed out".to_string())?
            .map_err(|e| format!("LeaseGrant: {e}"))?
            .into_inner();
        if !r.error.is_empty() {
            return Err(format!("LeaseGrant: {}", r.error));
        }
        ids.push(r.id);
    }
    Ok(ids)
}

/// The lease keep-alive benchmark (see the module docs).
pub async fn lease_keepalive(addrs: &[SocketAddr], o: &BenchOpts) -> Result<Outcome, String> {
    if o.leases == 0 || o.keep_s <= 0.0 || o.ttl <= 0 {
        return Err("lease-keepalive needs --leases, --keep-s and --ttl above 0".into());
    }
    let t0 = Instant::now();
    let conns = connections(addrs, o.conns).await?;
    let g = o.granters.max(1);
    let mut gs = Vec::new();
    for k in 0..g {
        let share = o.leases / g + usize::from(k < o.leases % g);
        gs.push(tokio::spawn(grant(
            conns[k % conns.len()].clone(),
            share,
            o.ttl,
        )));
    }
    let mut leases = Vec::with_capacity(o.leases);
    for h in gs {
        leases.extend(h.await.map_err(|e| e.to_string())??);
    }
    let grant_s = t0.elapsed().as_secs_f64();
    let ns = o.streams.clamp(1, leases.len().max(1));
    let keep_from = Instant::now();
    let until = keep_from + Duration::from_secs_f64(o.keep_s);
    let mut ks = Vec::new();
    for s in 0..ns {
        let mine: Vec<i64> = leases.iter().skip(s).step_by(ns).copied().collect();
        ks.push(tokio::spawn(keep_stream(
            conns[s % conns.len()].clone(),
            mine,
            until,
            t0,
        )));
    }
    let mut lat = Vec::new();
    let mut expired = Vec::new();
    let mut last: HashMap<i64, u64> = HashMap::new();
    let mut failures = Vec::new();
    let mut rounds = Vec::new();
    // Answers per member (stream s is on connection s mod conns, at member (that) mod 3).
    let mut by_member = vec![0usize; addrs.len()];
    for (s, h) in ks.into_iter().enumerate() {
        let r = h.await.map_err(|e| e.to_string())?;
        by_member[(s % conns.len()) % addrs.len()] += r.lat.len();
        lat.extend(r.lat);
        expired.extend(r.expired);
        last.extend(r.last);
        rounds.push(r.rounds);
        if let Some(f) = r.failure {
            failures.push(f);
        }
    }
    let keep_s = keep_from.elapsed().as_secs_f64();
    let answers = lat.len();
    if !expired.is_empty() {
        failures.push(format!(
            "{} keep-alive answers said expired (TTL <= 0), e.g. lease {:x}",
            expired.len(),
            expired[0]
        ));
    }
    // Every lease still there, and renewed: LeaseLeases lists them all; a sample's
    // remaining TTL is at least what its last keep-alive left.
    let mut lc = LeaseClient::new(conns[0].clone()).max_decoding_message_size(usize::MAX);
    let listed =
        match tokio::time::timeout(TIMEOUT, lc.lease_leases(pb::LeaseLeasesRequest {})).await {
            Ok(Ok(r)) => {
                let have: std::collections::HashSet<i64> =
                    r.into_inner().leases.iter().map(|l| l.id).collect();
                let gone = leases.iter().filter(|l| !have.contains(l)).count();
                if gone > 0 {
                    failures.push(format!(
                        "LeaseLeases: {gone} of {} granted leases missing",
                        leases.len()
                    ));
                }
                have.len()
            }
            other => {
                failures.push(format!("LeaseLeases: {other:?}"));
                0
            }
        };
    let step = (leases.len() / 100).max(1);
    let mut sampled = 0;
    let mut min_ttl = i64::MAX;
    for &id in leases.iter().step_by(step) {
        let r = match tokio::time::timeout(
            TIMEOUT,
            lc.lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: false }),
        )
        .await
        {
            Ok(Ok(r)) => r.into_inner(),
            other => {
                failures.push(format!("LeaseTimeToLive {id:x}: {other:?}"));
                continue;
            }
        };
        sampled += 1;
        min_ttl = min_ttl.min(r.ttl);
        let since =
            (t0.elapsed().as_nanos() as u64).saturating_sub(last.get(&id).copied().unwrap_or(0));
        let floor = o.ttl - (since / 1_000_000_000) as i64 - 2;
        if r.ttl < floor.max(1) {
            failures.push(format!(
                "lease {id:x}: TimeToLive {} s, below {} (TTL {} s, last renewed {:.1} s ago)",
                r.ttl,
                floor.max(1),
                o.ttl,
                since as f64 / 1e9
            ));
        }
    }
    rounds.sort_unstable();
    let figures = serde_json::json!({
        "bench": "lease-keepalive",
        "leases": o.leases,
        "ttl_s": o.ttl,
        "granters": g,
        "grant_s": grant_s,
        "grants_per_s": leases.len() as f64 / grant_s.max(1e-9),
        "streams": ns,
        "connections": conns.len(),
        "keepalive_s": keep_s,
        "keepalive_answers": answers,
        "keepalives_per_s": answers as f64 / keep_s.max(1e-9),
        "keepalives_per_s_by_member": by_member
            .iter()
            .map(|&n| n as f64 / keep_s.max(1e-9))
            .collect::<Vec<f64>>(),
        "rounds_min": rounds.first().copied().unwrap_or(0),
        "rounds_max": rounds.last().copied().unwrap_or(0),
        "latency": lat_json(lat),
        "expired": expired.len(),
        "leases_listed": listed,
        "ttl_sampled": sampled,
        "ttl_sample_min_s": if sampled > 0 { min_ttl } else { 0 },
    });
    Ok(Outcome { figures, failures })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_once_in_order_passes() {
        let t = account(&[3, 4, 7], &[3, 4, 7]);
        assert!(t.ok(), "{t:?}");
        assert_eq!(t.received, 3);
    }

    #[test]
    fn losses_duplicates_reorders_and_strays_are_counted() {
        let exp = [3, 4, 5, 7];
        assert_eq!(
            account(&exp, &[3, 5, 7]),
            Tally {
                received: 3,
                missing: 1,
                ..Default::default()
            }
        );
        assert_eq!(account(&exp, &[3, 4, 4, 5, 7]).duplicates, 1);
        let t = account(&exp, &[3, 5, 4, 7]);
        assert_eq!((t.out_of_order, t.missing, t.duplicates), (1, 0, 0));
        let t = account(&exp, &[3, 4, 5, 6, 7]);
        assert_eq!((t.unexpected, t.missing), (1, 0));
        assert!(!t.ok());
    }

    #[test]
    fn percentiles_pick_sorted_ranks() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1_000_000).collect();
        assert_eq!(pct_ms(&v, 0.5), 51.0);
        assert_eq!(pct_ms(&v, 1.0), 100.0);
        assert_eq!(pct_ms(&[], 0.99), 0.0);
    }

    #[test]
    fn options_that_cannot_run_are_refused_naming_the_flag() {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            o: BenchOpts,
        }
        let parse = |a: &[&str]| <P as clap::Parser>::parse_from(a).o;
        let ok = parse(&["bench"]);
        assert_eq!(ok.invalid(Bench::WatchFanout), None);
        assert_eq!(ok.invalid(Bench::LeaseKeepalive), None);
        let none = parse(&["bench", "--watchers", "0"]);
        assert_eq!(
            none.invalid(Bench::WatchFanout).as_deref(),
            Some("--watchers 0: must be greater than 0")
        );
        // A watch option does not concern the lease benchmark.
        assert_eq!(none.invalid(Bench::LeaseKeepalive), None);
        let none = parse(&["bench", "--keep-s", "0"]);
        assert!(none
            .invalid(Bench::LeaseKeepalive)
            .unwrap()
            .starts_with("--keep-s"));
    }
}
