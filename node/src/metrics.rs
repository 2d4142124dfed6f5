//! What `/metrics` shows beyond the Raft status: latency histograms (where a write's time
//! goes on its way through a member, the Ready loop's turns, WAL fsyncs and v3 backend
//! commits), the gRPC server's counters (go-grpc-prometheus's, as etcd 3.4 registers them)
//! and each peer's traffic (etcd's `rafthttp` counters). Everything is an atomic updated
//! where the thing happens, without locks; durations come from the member's clock, so under
//! the simulator they are simulated time and as reproducible as the rest of a run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// detcd's own buckets: 100 µs doubling up to ~13 s (then +Inf).
pub const DETCD_BOUNDS: &[f64] = &[
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536, 13.1072,
];

/// etcd's disk latency buckets (`prometheus.ExponentialBuckets(0.001, 2, 14)`: 1 ms to
/// 8.192 s), used by `etcd_disk_wal_fsync_duration_seconds` and
/// `etcd_disk_backend_commit_duration_seconds`.
pub const ETCD_DISK_BOUNDS: &[f64] = &[
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// etcd's peer round-trip buckets (`ExponentialBuckets(0.0001, 2, 16)`: 100 µs to 3.2768 s).
pub const ETCD_RTT_BOUNDS: &[f64] = &[
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

/// Prometheus's default buckets (`prometheus.DefBuckets`), go-grpc-prometheus's for
/// `grpc_server_handling_seconds`.
pub const PROMETHEUS_DEFAULT_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram of durations, updated without locks.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (not cumulative; summed when rendered).
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::with_bounds(DETCD_BOUNDS)
    }
}

impl Histogram {
    /// An empty histogram with these (ascending) bucket upper bounds.
    pub fn with_bounds(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }

    /// Record one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The longest duration recorded.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns.load(Ordering::Relaxed))
    }

    /// Append the histogram in Prometheus's text format; `labels` is `k="v",…` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        use std::fmt::Write as _;
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = write!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}\n{name}_sum{braces} {sum}\n{name}_count{braces} {count}\n"
        );
    }
}

/// Append `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    use std::fmt::Write as _;
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// Append one metric with no labels.
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
    use std::fmt::Write as _;
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {v}");
}

/// The member's latency histograms.
#[derive(Debug)]
pub struct Timings {
    /// A write request from its call to the Ready loop taking the proposal that applied (once
    /// per applied request, so that the three stages add up to the whole).
    pub propose_wait: Histogram,
    /// From the Ready loop taking a proposal to the entry applied (replication, fsyncs).
    pub commit_apply: Histogram,
    /// From the entry applied to the waiting request running again.
    pub wake: Histogram,
    /// A write request's whole wait in [`crate::raft::Shared::propose`].
    pub propose_total: Histogram,
    /// One busy turn of the Ready loop (handling its inbox and a Ready).
    pub loop_turn: Histogram,
    /// One write of the WAL that ended in an fsync (etcd's buckets).
    pub wal_fsync: Histogram,
    /// One commit of the v3 backend's batch (redb), as the Ready loop makes it after an
    /// apply batch (etcd's buckets).
    pub backend_commit: Histogram,
    /// Serialising and writing one snapshot (off the Ready loop).
    pub snapshot_save: Histogram,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            propose_wait: Histogram::default(),
            commit_apply: Histogram::default(),
            wake: Histogram::default(),
            propose_total: Histogram::default(),
            loop_turn: Histogram::default(),
            wal_fsync: Histogram::with_bounds(ETCD_DISK_BOUNDS),
            backend_commit: Histogram::with_bounds(ETCD_DISK_BOUNDS),
            snapshot_save: Histogram::default(),
        }
    }
}

impl Timings {
    /// Append every histogram to a `/metrics` page.
    pub fn render(&self, out: &mut String) {
        let mut one = |name: &str, help: &str, parts: &[(&str, &Histogram)]| {
            header(out, name, "histogram", help);
            for (labels, h) in parts {
                h.render(out, name, labels);
            }
        };
        one(
            "detcd_request_stage_duration_seconds",
            "Where a write request's time goes: waiting for the Ready loop to take its proposal, from then to the entry applied, from then to the request running again, and the whole.",
            &[
                ("stage=\"propose_wait\"", &self.propose_wait),
                ("stage=\"commit_apply\"", &self.commit_apply),
                ("stage=\"wake\"", &self.wake),
                ("stage=\"total\"", &self.propose_total),
            ],
        );
        one(
            "detcd_raft_loop_turn_duration_seconds",
            "How long one turn of the Ready loop keeps it busy (nothing else reaches Raft meanwhile).",
            &[("", &self.loop_turn)],
        );
        one(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            &[("", &self.wal_fsync)],
        );
        one(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            &[("", &self.backend_commit)],
        );
        one(
            "etcd_debugging_snap_save_total_duration_seconds",
            "The total latency distributions of saving a v2 snapshot (off the Ready loop).",
            &[("", &self.snapshot_save)],
        );
    }
}

/// gRPC call types, as go-grpc-prometheus names them.
const UNARY: &str = "unary";
const SERVER_STREAM: &str = "server_stream";
const BIDI_STREAM: &str = "bidi_stream";

/// Every method detcd serves over gRPC: (service, method, type). etcd 3.4 registers the
/// first [`GRPC_REGISTERED`] with go-grpc-prometheus at start (and grpc.health.v1.Health,
/// which detcd does not serve), each with every code; the Lock and Election services, which
/// it adds to the server after that, get their series when they are first used.
pub const GRPC_METHODS: [(&str, &str, &str); 46] = [
    ("etcdserverpb.KV", "Range", UNARY),
    ("etcdserverpb.KV", "Put", UNARY),
    ("etcdserverpb.KV", "DeleteRange", UNARY),
    ("etcdserverpb.KV", "Txn", UNARY),
    ("etcdserverpb.KV", "Compact", UNARY),
    ("etcdserverpb.Watch", "Watch", BIDI_STREAM),
    ("etcdserverpb.Lease", "LeaseGrant", UNARY),
    ("etcdserverpb.Lease", "LeaseRevoke", UNARY),
    ("etcdserverpb.Lease", "LeaseKeepAlive", BIDI_STREAM),
    ("etcdserverpb.Lease", "LeaseTimeToLive", UNARY),
    ("etcdserverpb.Lease", "LeaseLeases", UNARY),
    ("etcdserverpb.Cluster", "MemberAdd", UNARY),
    ("etcdserverpb.Cluster", "MemberRemove", UNARY),
    ("etcdserverpb.Cluster", "MemberUpdate", UNARY),
    ("etcdserverpb.Cluster", "MemberList", UNARY),
    ("etcdserverpb.Cluster", "MemberPromote", UNARY),
    ("etcdserverpb.Maintenance", "Alarm", UNARY),
    ("etcdserverpb.Maintenance", "Status", UNARY),
    ("etcdserverpb.Maintenance", "Defragment", UNARY),
    ("etcdserverpb.Maintenance", "Hash", UNARY),
    ("etcdserverpb.Maintenance", "HashKV", UNARY),
    ("etcdserverpb.Maintenance", "Snapshot", SERVER_STREAM),
    ("etcdserverpb.Maintenance", "MoveLeader", UNARY),
    ("etcdserverpb.Auth", "AuthEnable", UNARY),
    ("etcdserverpb.Auth", "AuthDisable", UNARY),
    ("etcdserverpb.Auth", "Authenticate", UNARY),
    ("etcdserverpb.Auth", "UserAdd", UNARY),
    ("etcdserverpb.Auth", "UserGet", UNARY),
    ("etcdserverpb.Auth", "UserList", UNARY),
    ("etcdserverpb.Auth", "UserDelete", UNARY),
    ("etcdserverpb.Auth", "UserChangePassword", UNARY),
    ("etcdserverpb.Auth", "UserGrantRole", UNARY),
    ("etcdserverpb.Auth", "UserRevokeRole", UNARY),
    ("etcdserverpb.Auth", "RoleAdd", UNARY),
    ("etcdserverpb.Auth", "RoleGet", UNARY),
    ("etcdserverpb.Auth", "RoleList", UNARY),
    ("etcdserverpb.Auth", "RoleDelete", UNARY),
    ("etcdserverpb.Auth", "RoleGrantPermission", UNARY),
    ("etcdserverpb.Auth", "RoleRevokePermission", UNARY),
    ("v3lockpb.Lock", "Lock", UNARY),
    ("v3lockpb.Lock", "Unlock", UNARY),
    ("v3electionpb.Election", "Campaign", UNARY),
    ("v3electionpb.Election", "Proclaim", UNARY),
    ("v3electionpb.Election", "Leader", UNARY),
    ("v3electionpb.Election", "Observe", SERVER_STREAM),
    ("v3electionpb.Election", "Resign", UNARY),
];

/// The methods of [`GRPC_METHODS`] whose series exist from the start (every code at 0);
/// the rest show a series once it has counted something, as a Prometheus vector creates a
/// series on its first use (etcd 3.4 with a Lock call: `started`, `handled` with the code
/// it ended with, `msg_received`, `msg_sent`; nothing else).
pub const GRPC_REGISTERED: usize = 39;

/// Whether a series of method `i` that has counted `n` is on the page (see
/// [`GRPC_REGISTERED`]).
fn listed(i: usize, n: u64) -> bool {
    i < GRPC_REGISTERED || n > 0
}

/// gRPC status codes by number, as go-grpc-prometheus writes them (`codes.Code.String()`).
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The counters of one gRPC method.
#[derive(Debug)]
pub struct GrpcMethod {
    started: AtomicU64,
    handled: [AtomicU64; 17],
    msg_received: AtomicU64,
    msg_sent: AtomicU64,
    handling: Histogram,
}

impl Default for GrpcMethod {
    fn default() -> GrpcMethod {
        GrpcMethod {
            started: AtomicU64::new(0),
            handled: Default::default(),
            msg_received: AtomicU64::new(0),
            msg_sent: AtomicU64::new(0),
            handling: Histogram::with_bounds(PROMETHEUS_DEFAULT_BOUNDS),
        }
    }
}

/// The gRPC server's metrics: go-grpc-prometheus's per-method counters and handling time,
/// and etcd's client byte counters (the sizes of the messages its codec marshals and
/// unmarshals: gRPC's 5-byte message prefix is not counted).
#[derive(Debug)]
pub struct Grpc {
    methods: Vec<GrpcMethod>,
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
}

impl Default for Grpc {
    fn default() -> Grpc {
        Grpc {
            methods: GRPC_METHODS.iter().map(|_| GrpcMethod::default()).collect(),
            received_bytes: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
        }
    }
}

impl Grpc {
    /// The index of the method a request path (`/etcdserverpb.KV/Range`) names, if detcd
    /// serves it (an unknown method never reaches go-grpc-prometheus's interceptors either).
    pub fn method(path: &str) -> Option<usize> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        GRPC_METHODS
            .iter()
            .position(|(s, m, _)| *m == method && *s == service)
    }

    /// A call of method `i` started.
    pub fn started(&self, i: usize) {
        self.methods[i].started.fetch_add(1, Ordering::Relaxed);
    }

    /// A call of method `i` ended with status `code` (a gRPC code number) after `took`.
    pub fn handled(&self, i: usize, code: usize, took: Duration) {
        let m = &self.methods[i];
        m.handled[code.min(GRPC_CODES.len() - 1)].fetch_add(1, Ordering::Relaxed);
        m.handling.observe(took);
    }

    /// A message of `len` bytes arrived for a call of method `i`.
    pub fn received(&self, i: usize, len: u64) {
        self.methods[i].msg_received.fetch_add(1, Ordering::Relaxed);
        self.received_bytes.fetch_add(len, Ordering::Relaxed);
    }

    /// A message of `len` bytes was sent by a call of method `i`.
    pub fn sent(&self, i: usize, len: u64) {
        self.methods[i].msg_sent.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(len, Ordering::Relaxed);
    }

    /// Append the gRPC metrics (every method, every code, as etcd 3.4 registers them).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let labels = |i: usize| {
            let (s, m, t) = GRPC_METHODS[i];
            format!("grpc_method=\"{m}\",grpc_service=\"{s}\",grpc_type=\"{t}\"")
        };
        single(
            out,
            "etcd_network_client_grpc_received_bytes_total",
            "counter",
            "The total number of bytes received from grpc clients.",
            self.received_bytes.load(Ordering::Relaxed),
        );
        single(
            out,
            "etcd_network_client_grpc_sent_bytes_total",
            "counter",
            "The total number of bytes sent to grpc clients.",
            self.sent_bytes.load(Ordering::Relaxed),
        );
        header(
            out,
            "grpc_server_handled_total",
            "counter",
            "Total number of RPCs completed on the server, regardless of success or failure.",
        );
        for (i, m) in self.methods.iter().enumerate() {
            let (s, me, t) = GRPC_METHODS[i];
            for (c, n) in GRPC_CODES.iter().zip(&m.handled) {
                let n = n.load(Ordering::Relaxed);
                if !listed(i, n) {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "grpc_server_handled_total{{grpc_code=\"{c}\",grpc_method=\"{me}\",grpc_service=\"{s}\",grpc_type=\"{t}\"}} {n}"
                );
            }
        }
        header(
            out,
            "grpc_server_handling_seconds",
            "histogram",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
        );
        for (i, m) in self.methods.iter().enumerate() {
            if listed(i, m.handling.count()) {
                m.handling
                    .render(out, "grpc_server_handling_seconds", &labels(i));
            }
        }
        let mut each = |name: &str, help: &str, f: &dyn Fn(&GrpcMethod) -> &AtomicU64| {
            header(out, name, "counter", help);
            for (i, m) in self.methods.iter().enumerate() {
                let n = f(m).load(Ordering::Relaxed);
                if listed(i, n) {
                    let _ = writeln!(out, "{name}{{{}}} {n}", labels(i));
                }
            }
        };
        each(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            &|m| &m.msg_received,
        );
        each(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            &|m| &m.msg_sent,
        );
        each(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            &|m| &m.started,
        );
    }
}

/// The traffic with one peer (etcd's `rafthttp` metrics, labelled `To` and `From` with the
/// peer's id in hex).
#[derive(Debug)]
pub struct Peer {
    /// Bytes of Raft messages written to the peer's stream.
    pub sent_bytes: AtomicU64,
    /// Bytes of Raft messages read from the peer's stream.
    pub received_bytes: AtomicU64,
    /// Messages that could not be sent (queue full, or the stream failed under them).
    pub sent_failures: AtomicU64,
    /// Round trips of a probe on the peer port.
    pub rtt: Histogram,
}

impl Default for Peer {
    fn default() -> Peer {
        Peer {
            sent_bytes: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            sent_failures: AtomicU64::new(0),
            rtt: Histogram::with_bounds(ETCD_RTT_BOUNDS),
        }
    }
}

impl Peer {
    /// Add to one of the counters.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Append the peer metrics of `peers` (id, its counters), in id order.
pub fn render_peers(out: &mut String, peers: &[(u64, std::sync::Arc<Peer>)]) {
    use std::fmt::Write as _;
    header(
        out,
        "etcd_network_peer_received_bytes_total",
        "counter",
        "The total number of bytes received from peers.",
    );
    for (id, p) in peers {
        let n = p.received_bytes.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "etcd_network_peer_received_bytes_total{{From=\"{id:x}\"}} {n}"
        );
    }
    header(
        out,
        "etcd_network_peer_round_trip_time_seconds",
        "histogram",
        "Round-Trip-Time histogram between peers",
    );
    for (id, p) in peers {
        p.rtt.render(
            out,
            "etcd_network_peer_round_trip_time_seconds",
            &format!("To=\"{id:x}\""),
        );
    }
    header(
        out,
        "etcd_network_peer_sent_bytes_total",
        "counter",
        "The total number of bytes sent to peers.",
    );
    for (id, p) in peers {
        let n = p.sent_bytes.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "etcd_network_peer_sent_bytes_total{{To=\"{id:x}\"}} {n}"
        );
    }
    header(
        out,
        "etcd_network_peer_sent_failures_total",
        "counter",
        "The total number of send failures from peers.",
    );
    for (id, p) in peers {
        let n = p.sent_failures.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "etcd_network_peer_sent_failures_total{{To=\"{id:x}\"}} {n}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(150));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "stage=\"a\"");
        assert!(
            out.contains("x_bucket{stage=\"a\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{stage=\"a\",le=\"0.0002\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{stage=\"a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{stage=\"a\"} 3\n"), "{out}");
        assert_eq!(h.max(), Duration::from_secs(60));
        let mut plain = String::new();
        h.render(&mut plain, "y", "");
        assert!(
            plain.contains("y_bucket{le=\"+Inf\"} 3\ny_sum 60.0002\ny_count 3\n"),
            "{plain}"
        );
    }
}
