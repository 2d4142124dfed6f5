//! Scenario files (`scenarios/*.toml`): what cluster to run, what load to put on it, which
//! faults to inject and which checks and targets the run must meet. Every field is documented
//! in scenarios/README.md; unknown fields are rejected with the file, line and field named.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A whole scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; reports go to `reports/<name>/`.
    pub name: String,
    /// What the scenario proves.
    #[serde(default)]
    pub description: String,
    /// The cluster.
    #[serde(default)]
    pub cluster: ClusterSpec,
    /// The simulated network.
    #[serde(default)]
    pub network: NetworkSpec,
    /// The simulated disks.
    #[serde(default)]
    pub disk: DiskSpec,
    /// The client load.
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// Faults at fixed times.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Seeded random faults (swarm testing).
    #[serde(default)]
    pub swarm: Option<SwarmSpec>,
    /// Faults at the node's failpoints (crash or pause a member right there).
    #[serde(default)]
    pub failpoints: Vec<FailpointRule>,
    /// Service registration and weighted discovery through detcd-client.
    #[serde(default)]
    pub registry: RegistrySpec,
    /// Clients taking etcd's v3 locks (the Lock service) and writing under them.
    #[serde(default, skip_serializing_if = "LockSpec::is_off")]
    pub locks: LockSpec,
    /// v2 auth: users and roles made before the load, auth on, the workload's clients acting
    /// as those users.
    #[serde(default, skip_serializing_if = "AuthSpec::is_off")]
    pub auth: AuthSpec,
    /// Processes without the right certificate that knock on the members' client and peer
    /// ports during the load (`tls = true` scenarios).
    #[serde(default, skip_serializing_if = "IntrudersSpec::is_off")]
    pub intruders: IntrudersSpec,
    /// Checks to run at the end.
    #[serde(default)]
    pub checks: ChecksSpec,
    /// Targets the run must meet.
    #[serde(default)]
    pub targets: TargetsSpec,
}

/// Cluster size and etcd flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSpec {
    /// Members (1, 3, 5 or 7).
    pub members: usize,
    /// `--heartbeat-interval` in ms.
    pub heartbeat_ms: u64,
    /// `--election-timeout` in ms.
    pub election_ms: u64,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// `--experimental-leader-sync-delay` in ms (detcd's default 2; 0 = the leader never
    /// defers its fsync).
    pub leader_sync_delay_ms: u64,
    /// `--experimental-backend-cache-bytes` in KiB (unset: the node's 64 MiB). A cache
    /// smaller than the keyspace makes members read its pages back from the file, where a
    /// `bit-rot` fault can have damaged them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_cache_kib: Option<u64>,
    /// Every client and peer URL https, each side with its own CA and, by default,
    /// client-certificate auth (certificates made at the start of the run).
    pub tls: bool,
    /// With `tls`: `--client-cert-auth` on the client port (default true; only tests of the
    /// `intruders` check turn it off).
    #[serde(skip_serializing_if = "is_true")]
    pub client_cert_auth: bool,
    /// With `tls`: `--peer-client-cert-auth` on the peer port (default true; as above).
    #[serde(skip_serializing_if = "is_true")]
    pub peer_client_cert_auth: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            members: 3,
            heartbeat_ms: 100,
            election_ms: 1000,
            snapshot_count: 10_000,
            leader_sync_delay_ms: 2,
            backend_cache_kib: None,
            tls: false,
            client_cert_auth: true,
            peer_client_cert_auth: true,
        }
    }
}

/// Network latency.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSpec {
    /// One-way message latency range in µs, `[min, max]`.
    pub latency_us: [u64; 2],
    /// Whether a message arrives at its drawn latency exactly, and a busy stream may flush
    /// every 100 µs. By default madsim delivers a stream's message no sooner than 1 ms after
    /// its reader asked for it and a stream flushes at most once a millisecond, so a
    /// 100-500 µs hop costs about 1 ms (reports/sim-speed.md).
    #[serde(skip_serializing_if = "is_false")]
    pub exact_delays: bool,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            latency_us: [100, 500],
            exact_delays: false,
        }
    }
}

/// Disk behaviour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiskSpec {
    /// fsync latency range in µs, `[min, max]`. The default is this project's machines'
    /// fdatasync as measured (p10 83 µs, p50 108 µs, p99 181 µs on a 200-byte append).
    pub fsync_us: [u64; 2],
    /// Whether a crash may leave a torn prefix of unsynced writes.
    pub torn_writes: bool,
    /// Cut WAL segments past this many KiB (0: the node's default, 64 MiB, which a
    /// simulated run never reaches; a small value makes runs cut segments).
    pub wal_segment_kib: u64,
    /// Whether each fsync takes its drawn latency exactly. By default an fsync's time is
    /// owed until the debt reaches 1 ms (madsim's least sleep) and then paid at once, so
    /// most fsyncs take no time and one in several takes 1 ms.
    #[serde(skip_serializing_if = "is_false")]
    pub exact_fsync: bool,
}

impl Default for DiskSpec {
    fn default() -> Self {
        DiskSpec {
            fsync_us: [80, 200],
            torn_writes: true,
            wal_segment_kib: 0,
            exact_fsync: false,
        }
    }
}

/// What a failpoint does to the member that reaches it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailpointAction {
    /// Kill the member right there (its unsynced writes are lost, and nothing the rest of
    /// its step writes or sends gets out) and restart it `duration_s` later.
    Crash,
    /// Pause the member (at its next await) for `duration_s`.
    Pause,
}

/// A fault at one of the node's failpoints (names: `detcd_node::failpoints::ALL`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FailpointRule {
    /// The failpoint.
    pub name: String,
    /// What happens there.
    pub action: FailpointAction,
    /// Which member may fire it: `leader`, `follower` (its role when it reaches the point),
    /// `{ member = n }`, or `random` (any member; the default).
    #[serde(default = "any_member")]
    pub target: Target,
    /// Chance of firing on each hit (seeded), when `nth` is 0.
    #[serde(default)]
    pub probability: f64,
    /// Fire on the nth hit (1-based, counted over the members the target allows).
    #[serde(default)]
    pub nth: u64,
    /// Hits before this many simulated seconds after the load started never fire.
    #[serde(default)]
    pub after_s: f64,
    /// Fire at most this many times.
    #[serde(default = "one")]
    pub times: u64,
    /// How long the member stays down or paused.
    #[serde(default = "one_s")]
    pub duration_s: f64,
}

fn any_member() -> Target {
    Target::Random
}

fn one() -> u64 {
    1
}

fn one_s() -> f64 {
    1.0
}

/// v2 auth under load (`[auth]`): before the load the harness creates `root`, the roles and
/// the users through the auth API, enables auth and revokes everything from `guest`; each
/// workload client then acts as one of the users (basic auth), and the `permissions` check
/// compares every answer with what these roles allow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSpec {
    /// Whether auth is on.
    pub enabled: bool,
    /// Password of `root` (the harness's own clients, watchers included, act as root).
    pub root_password: String,
    /// Roles (never `root` or `guest`).
    pub roles: Vec<RoleSpec>,
    /// Users the workload's clients act as (client `i` as user `(first + i) mod n`, `first`
    /// seeded).
    pub users: Vec<UserSpec>,
    /// v3 only: a role (of `roles`, with one pattern) whose permission the harness revokes
    /// and grants again in turn during the load, every `flip_every_ms` (empty: none).
    pub flip_role: String,
    /// See `flip_role`.
    pub flip_every_ms: u64,
}

impl AuthSpec {
    /// Nothing to do (auth off and nothing defined): not written back into a scenario.
    pub fn is_off(&self) -> bool {
        *self == AuthSpec::default()
    }

    /// The root password the harness uses (`root_password`, or `root` when empty).
    pub fn root_password(&self) -> &str {
        if self.root_password.is_empty() {
            "root"
        } else {
            &self.root_password
        }
    }
}

/// A role: the key patterns it may read and write (etcd's: a key, or a prefix ending in `*`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Its name.
    pub name: String,
    /// Readable patterns.
    #[serde(default)]
    pub read: Vec<String>,
    /// Writable patterns.
    #[serde(default)]
    pub write: Vec<String>,
}

/// A user and its roles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Its name (never `root`).
    pub name: String,
    /// Its password.
    pub password: String,
    /// Its roles (names from `roles`; may be empty: a user that may do nothing).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Open loop (a target rate) or closed loop (each client waits for its answer).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Each client sends its next request when the previous one returned.
    Closed,
    /// Requests start at a fixed total rate, whatever the answers.
    Open,
}

/// Which member each client sends its requests to first (it moves on to the next after a
/// failure either way).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Drawn from the client's seeded rng: one seed may crowd most clients on one member.
    #[default]
    Random,
    /// Client `i` starts at member `i mod n`, as etcd's benchmark tool hands out its
    /// endpoints in turn: no seed favours the member that happens to lead. For benchmarks.
    Spread,
    /// Every client starts at the member that leads when the load begins (asked through
    /// `/v2/members/leader`; v3 loads through `Maintenance/Status`, which etcd serves with its
    /// v2 API off), as etcd's benchmark is often pointed at the leader: the
    /// placement where the leader's own request path carries the whole load.
    Leader,
}

/// Relative weights of operation kinds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OpMix {
    /// Local (non-quorum) get.
    pub get: u32,
    /// `quorum=true` get.
    pub qget: u32,
    /// Unconditional set.
    pub set: u32,
    /// `prevExist=false`.
    pub create: u32,
    /// `prevExist=true`.
    pub update: u32,
    /// Compare-and-swap by value.
    pub cas_value: u32,
    /// Compare-and-swap by index.
    pub cas_index: u32,
    /// Delete.
    pub delete: u32,
    /// Compare-and-delete by value.
    pub cad: u32,
    /// Recursive get of a directory (`/k` or one of its key directories).
    #[serde(skip_serializing_if = "is_zero")]
    pub rget: u32,
    /// Create a directory (`dir=true`) next to the keys.
    #[serde(skip_serializing_if = "is_zero")]
    pub mkdir: u32,
    /// Delete an empty directory (`dir=true`).
    #[serde(skip_serializing_if = "is_zero")]
    pub rmdir: u32,
    /// Delete a directory recursively (`recursive=true`).
    #[serde(skip_serializing_if = "is_zero")]
    pub rdelete: u32,
    /// TTL refresh of a key (`refresh=true&prevExist=true&ttl=86400`, no value).
    #[serde(skip_serializing_if = "is_zero")]
    pub refresh: u32,
}

impl Default for OpMix {
    fn default() -> Self {
        OpMix {
            get: 5,
            qget: 20,
            set: 35,
            create: 5,
            update: 5,
            cas_value: 10,
            cas_index: 10,
            delete: 5,
            cad: 5,
            rget: 0,
            mkdir: 0,
            rmdir: 0,
            rdelete: 0,
            refresh: 0,
        }
    }
}

fn is_zero(w: &u32) -> bool {
    *w == 0
}

/// The client load.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadSpec {
    /// Simulated seconds of load.
    pub duration_s: f64,
    /// Concurrent clients.
    pub clients: usize,
    /// Open or closed loop.
    pub mode: LoadMode,
    /// Total requests per simulated second (open loop).
    pub rate: u64,
    /// Distinct keys.
    pub keys: usize,
    /// Operation weights.
    pub mix: OpMix,
    /// Watchers (each watches the key space with `wait=true&recursive=true`, resuming by
    /// `waitIndex`).
    pub watchers: usize,
    /// A request not answered within this many ms is indeterminate.
    pub request_timeout_ms: u64,
    /// Which member each client starts at.
    pub placement: Placement,
    /// Which API the clients speak: etcd's v2 HTTP+JSON (the default) or v3 gRPC.
    pub api: Api,
    /// v3 lease clients (`api = "v3"` only): each grants leases, attaches keys, keeps them
    /// alive, revokes them or lets them expire, and now and then compacts
    /// (`sim/src/v3load.rs` `run_lease_client`).
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub leases: usize,
    /// Of the watchers, how many are slow consumers (`api = "v3"` only): after each watch
    /// response such a watcher pauses a seeded 0.1-2.5 s before reading the next, so the
    /// member's stream backs up behind HTTP/2 flow control and the watcher lags.
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub slow_watchers: usize,
    /// A compactor client (`api = "v3"` only; 0 = none): every this many ms it reads the
    /// newest revision and compacts a seeded 20-200 revisions behind it, so compactions
    /// overtake lagging watchers.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub compact_every_ms: u64,
    /// Percentages of the v3 clients' operations (`api = "v3"` only; they sum to 100).
    #[serde(skip_serializing_if = "V3Mix::is_default")]
    pub v3_mix: V3Mix,
}

/// Percentages of a v3 client's operations, drawn per operation from the client's seed. The
/// default is the mixed load every v3 scenario runs; `put = 100` is etcd's `benchmark put`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct V3Mix {
    /// Linearizable Range of one key.
    pub range: u32,
    /// Serializable Range of one key.
    pub serializable_range: u32,
    /// Linearizable Range of every key.
    pub range_all: u32,
    /// Put of one key.
    pub put: u32,
    /// DeleteRange of one key.
    pub delete: u32,
    /// Compare-and-swap Txn on one key's mod_revision: Put if equal, else Range.
    pub txn: u32,
}

impl Default for V3Mix {
    fn default() -> Self {
        V3Mix {
            range: 25,
            serializable_range: 10,
            range_all: 5,
            put: 35,
            delete: 10,
            txn: 15,
        }
    }
}

/// One kind of v3 client operation ([`V3Mix::pick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V3Op {
    /// Range of one key, serializable or not.
    Range {
        /// Served from the member's own state, without a read barrier.
        serializable: bool,
    },
    /// Range of every key.
    RangeAll,
    /// Put.
    Put,
    /// DeleteRange.
    Delete,
    /// Compare-and-swap Txn.
    Txn,
}

impl V3Mix {
    fn is_default(&self) -> bool {
        *self == V3Mix::default()
    }

    fn total(&self) -> u32 {
        self.range + self.serializable_range + self.range_all + self.put + self.delete + self.txn
    }

    /// The operation a roll in `0..100` stands for.
    pub fn pick(&self, roll: u32) -> V3Op {
        let kinds = [
            (
                self.range,
                V3Op::Range {
                    serializable: false,
                },
            ),
            (self.serializable_range, V3Op::Range { serializable: true }),
            (self.range_all, V3Op::RangeAll),
            (self.put, V3Op::Put),
            (self.delete, V3Op::Delete),
        ];
        let mut below = 0;
        for (w, op) in kinds {
            below += w;
            if roll < below {
                return op;
            }
        }
        V3Op::Txn
    }
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

/// The API a workload speaks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// etcd's v2 keys API (HTTP/1.1, JSON), checked by the v2 model.
    #[default]
    V2,
    /// etcd's v3 KV API (gRPC over HTTP/2), checked by the v3 model (`sim/src/v3load.rs`).
    V3,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            duration_s: 10.0,
            clients: 8,
            mode: LoadMode::Closed,
            rate: 1000,
            keys: 8,
            mix: OpMix::default(),
            watchers: 1,
            request_timeout_ms: 2000,
            placement: Placement::Random,
            api: Api::V2,
            leases: 0,
            slow_watchers: 0,
            compact_every_ms: 0,
            v3_mix: V3Mix::default(),
        }
    }
}

/// Who a fault hits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The member that is leader when the fault starts (found through `/v2/members/leader`).
    Leader,
    /// A member other than the leader.
    Follower,
    /// A seeded random member.
    Random,
    /// Member number `n` (0-based).
    Member(usize),
}

/// Kinds of faults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// Cut the target off from every other member (both directions).
    Isolate {
        /// Who.
        target: Target,
    },
    /// Split the cluster into a minority (containing the leader if `leader_in_minority`) and
    /// a majority.
    MinorityMajority {
        /// Whether the current leader goes to the minority side.
        #[serde(default)]
        leader_in_minority: bool,
    },
    /// Two halves that only the target (the bridge) sees both of.
    Bridge,
    /// Each member sees only its two ring neighbours.
    Ring,
    /// `target` hears the others but they do not hear it.
    OneWay {
        /// Who.
        target: Target,
    },
    /// Kill the target (unsynced writes lost) and restart it when the fault ends.
    Crash {
        /// Who.
        target: Target,
    },
    /// Restart every member in turn, `duration_s` apart.
    RollingRestart,
    /// Every member loses power at the same instant (each loses its unsynced writes) and all
    /// are started again when the fault ends: what was acknowledged must be on a quorum's
    /// disks, not merely in a quorum's memory.
    PowerLoss,
    /// Pause the target (a GC-like stall: its timers and tasks stop).
    Pause {
        /// Who.
        target: Target,
    },
    /// Replace the target, as an operator would: remove it (`DELETE /v2/members/<id>`), wipe
    /// its data directory, add it again (`POST /v2/members`, retried while the cluster refuses)
    /// and start it with `--initial-cluster-state existing`; it rejoins by snapshot.
    Replace {
        /// Who.
        target: Target,
    },
    /// Skew the target's wall clock.
    ClockSkew {
        /// Who.
        target: Target,
        /// Offset in ms (negative = behind).
        #[serde(default)]
        offset_ms: i64,
        /// Drift in parts per million.
        #[serde(default)]
        drift_ppm: i64,
    },
    /// Flap the links of the target on and off (message loss on a reliable transport shows as
    /// stalls and reconnects).
    Flaky {
        /// Who.
        target: Target,
        /// Period of one flap in ms.
        #[serde(default = "default_flap_ms")]
        flap_ms: u64,
    },
    /// The target's disk stalls: every fsync takes `fsync_ms` longer (a slow or busy disk;
    /// the member falls behind its peers while it lasts).
    SlowDisk {
        /// Who.
        target: Target,
        /// Extra ms per fsync.
        #[serde(default = "default_fsync_ms")]
        fsync_ms: u64,
    },
    /// A storage fault on the target's disk (see [`DiskFault`]), in the files of `area`. A
    /// member that stops on it (as it must, rather than serve damaged data or retry a failed
    /// fsync) is started again when the fault ends; one that then refuses to start is
    /// replaced as an operator would (remove, wipe, add back).
    Disk {
        /// Who.
        target: Target,
        /// What goes wrong.
        fault: DiskFault,
        /// Which files.
        area: DiskArea,
    },
}

/// Which of a member's files a storage fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DiskArea {
    /// Any file.
    #[default]
    Any,
    /// The write-ahead log's segments (`*.wal`).
    Wal,
    /// Snapshot files (`*.snap`).
    Snap,
    /// The v3 keyspace's backend file (`member/snap/db`).
    V3,
}

impl DiskArea {
    /// Whether `path` belongs to this area.
    pub fn holds(self, path: &Path) -> bool {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.as_deref().unwrap_or("");
        // Damaged files a member kept aside (`db.damaged.N`, `wal.damaged.N/`) are never
        // read again: damaging them tests nothing.
        if path
            .components()
            .any(|c| c.as_os_str().to_string_lossy().contains(".damaged"))
        {
            return false;
        }
        match self {
            DiskArea::Any => true,
            DiskArea::Wal => name.ends_with(".wal"),
            DiskArea::Snap => name.ends_with(".snap"),
            DiskArea::V3 => name == "db",
        }
    }

    /// The name used in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            DiskArea::Any => "any",
            DiskArea::Wal => "wal",
            DiskArea::Snap => "snap",
            DiskArea::V3 => "v3",
        }
    }
}

/// The storage faults of the `disk` fault kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskFault {
    /// `bit-flip`: one bit of a synced byte flips; the member is crashed at once, so its
    /// recovery reads the damage, and restarted when the fault ends.
    BitFlip,
    /// `bit-rot`: one bit flips under the running member, which is not crashed, in a range
    /// of a file it read lately (any synced byte of the area if none), on the disk and in the
    /// writes not yet synced over it: it must refuse the damaged bytes when it next reads them
    /// (at once for the keyspace's pages past its cache, at its next start for the rest) and
    /// stop; it is restarted once it has.
    BitRot,
    /// `misdirected-write`: the member's next write to the area lands at another offset of
    /// the file; the member is crashed when the fault ends and restarted.
    MisdirectedWrite,
    /// `read-error`: a 4 KiB range of a file returns `EIO` until it is rewritten; the member
    /// is crashed at once and restarted when the fault ends.
    ReadError,
    /// `fsync-error`: the member's next fsync fails, dropping what it was to make durable.
    FsyncError,
    /// `disk-full`: the disk takes no more bytes (`ENOSPC`) while the fault lasts.
    DiskFull,
}

impl DiskFault {
    /// Whether the fault leaves bytes on the disk that are not what the member wrote (so the
    /// member may rightly refuse to start): a flipped bit, a misdirected write, an unreadable
    /// range. A failed fsync or a full disk only stop writes.
    pub fn damages_data(self) -> bool {
        matches!(
            self,
            DiskFault::BitFlip
                | DiskFault::BitRot
                | DiskFault::MisdirectedWrite
                | DiskFault::ReadError
        )
    }

    /// The fault kind's name in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            DiskFault::BitFlip => "bit-flip",
            DiskFault::BitRot => "bit-rot",
            DiskFault::MisdirectedWrite => "misdirected-write",
            DiskFault::ReadError => "read-error",
            DiskFault::FsyncError => "fsync-error",
            DiskFault::DiskFull => "disk-full",
        }
    }

    /// The storage fault whose kind name is `name`.
    pub fn named(name: &str) -> Option<DiskFault> {
        DiskFault::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Every storage fault.
    pub const ALL: [DiskFault; 6] = [
        DiskFault::BitFlip,
        DiskFault::BitRot,
        DiskFault::MisdirectedWrite,
        DiskFault::ReadError,
        DiskFault::FsyncError,
        DiskFault::DiskFull,
    ];
}

fn default_flap_ms() -> u64 {
    200
}

fn default_fsync_ms() -> u64 {
    50
}

/// One fault on the timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "RawFault", into = "RawFault")]
pub struct Fault {
    /// Start, in simulated seconds from the start of the load.
    pub at_s: f64,
    /// How long it lasts (0 = until the end of the load).
    pub duration_s: f64,
    /// What it does.
    pub kind: FaultKind,
}

/// A fault as written in the file: one flat table, every field known (serde cannot deny
/// unknown fields through a flattened tagged enum, and a typo must never pass silently).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    at_s: f64,
    #[serde(default)]
    duration_s: f64,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leader_in_minority: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    drift_ppm: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flap_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fsync_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    area: Option<DiskArea>,
}

impl TryFrom<RawFault> for Fault {
    type Error = String;

    fn try_from(r: RawFault) -> Result<Fault, String> {
        let needs_target = || {
            r.target
                .clone()
                .ok_or_else(|| format!("fault kind {:?} needs a `target`", r.kind))
        };
        let no = |field: &str, present: bool| {
            if present {
                Err(format!("fault kind {:?} has no field `{field}`", r.kind))
            } else {
                Ok(())
            }
        };
        let kind = match r.kind.as_str() {
            "isolate" => FaultKind::Isolate { target: needs_target()? },
            "one-way" => FaultKind::OneWay { target: needs_target()? },
            "crash" => FaultKind::Crash { target: needs_target()? },
            "replace" => FaultKind::Replace { target: needs_target()? },
            "pause" => FaultKind::Pause { target: needs_target()? },
            "flaky" => FaultKind::Flaky { target: needs_target()?, flap_ms: r.flap_ms.unwrap_or_else(default_flap_ms) },
            "slow-disk" => FaultKind::SlowDisk { target: needs_target()?, fsync_ms: r.fsync_ms.unwrap_or_else(default_fsync_ms) },
            "clock-skew" => FaultKind::ClockSkew {
                target: needs_target()?,
                offset_ms: r.offset_ms.unwrap_or(0),
                drift_ppm: r.drift_ppm.unwrap_or(0),
            },
            "minority-majority" => {
                no("target", r.target.is_some())?;
                FaultKind::MinorityMajority { leader_in_minority: r.leader_in_minority.unwrap_or(false) }
            }
            "bridge" => FaultKind::Bridge,
            "ring" => FaultKind::Ring,
            "rolling-restart" => FaultKind::RollingRestart,
            "power-loss" => FaultKind::PowerLoss,
            other => match DiskFault::named(other) {
                Some(fault) => FaultKind::Disk {
                    target: needs_target()?,
                    fault,
                    area: r.area.unwrap_or_default(),
                },
                None => {
                    return Err(format!(
                        "unknown fault kind {other:?} (known: isolate, minority-majority, bridge, ring, one-way, crash, replace, rolling-restart, power-loss, pause, clock-skew, flaky, slow-disk, bit-flip, bit-rot, misdirected-write, read-error, fsync-error, disk-full)"
                    ))
                }
            },
        };
        let k = r.kind.as_str();
        no("offset_ms", r.offset_ms.is_some() && k != "clock-skew")?;
        no("drift_ppm", r.drift_ppm.is_some() && k != "clock-skew")?;
        no("flap_ms", r.flap_ms.is_some() && k != "flaky")?;
        no("fsync_ms", r.fsync_ms.is_some() && k != "slow-disk")?;
        no("area", r.area.is_some() && DiskFault::named(k).is_none())?;
        no(
            "leader_in_minority",
            r.leader_in_minority.is_some() && k != "minority-majority",
        )?;
        if matches!(k, "bridge" | "ring" | "rolling-restart" | "power-loss") {
            no("target", r.target.is_some())?;
        }
        Ok(Fault {
            at_s: r.at_s,
            duration_s: r.duration_s,
            kind,
        })
    }
}

impl From<Fault> for RawFault {
    fn from(f: Fault) -> RawFault {
        let mut r = RawFault {
            at_s: f.at_s,
            duration_s: f.duration_s,
            kind: kind_name(&f.kind).to_string(),
            ..Default::default()
        };
        match f.kind {
            FaultKind::Isolate { target }
            | FaultKind::OneWay { target }
            | FaultKind::Crash { target }
            | FaultKind::Replace { target }
            | FaultKind::Pause { target } => r.target = Some(target),
            FaultKind::Flaky { target, flap_ms } => {
                r.target = Some(target);
                r.flap_ms = Some(flap_ms);
            }
            FaultKind::SlowDisk { target, fsync_ms } => {
                r.target = Some(target);
                r.fsync_ms = Some(fsync_ms);
            }
            FaultKind::Disk { target, area, .. } => {
                r.target = Some(target);
                r.area = Some(area);
            }
            FaultKind::ClockSkew {
                target,
                offset_ms,
                drift_ppm,
            } => {
                r.target = Some(target);
                r.offset_ms = Some(offset_ms);
                r.drift_ppm = Some(drift_ppm);
            }
            FaultKind::MinorityMajority { leader_in_minority } => {
                r.leader_in_minority = Some(leader_in_minority)
            }
            FaultKind::Bridge
            | FaultKind::Ring
            | FaultKind::RollingRestart
            | FaultKind::PowerLoss => {}
        }
        r
    }
}

/// Swarm testing: each seed picks which fault kinds are enabled and how often they strike.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmSpec {
    /// Fault kinds that may be enabled (names as in `kind`).
    pub kinds: Vec<String>,
    /// Mean seconds between faults.
    pub mean_interval_s: f64,
    /// Longest fault in seconds.
    pub max_duration_s: f64,
    /// Failpoints a seed may arm (each enabled by the seed with probability 1/2, crashing or
    /// pausing a random member on a seeded hit).
    pub failpoints: Vec<String>,
}

impl Default for SwarmSpec {
    fn default() -> Self {
        SwarmSpec {
            kinds: [
                "isolate",
                "minority-majority",
                "one-way",
                "crash",
                "pause",
                "clock-skew",
                "bridge",
                "ring",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            mean_interval_s: 3.0,
            max_duration_s: 3.0,
            failpoints: Vec::new(),
        }
    }
}

/// Service instances registered under a TTL and kept alive by heartbeats (detcd-client's
/// `register`), callers that follow them with a watch and pick by weight (`watch_service`),
/// instances that crash and weights that change at seeded times.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySpec {
    /// Instances of the one service (0: no registry load).
    pub instances: usize,
    /// Their TTL in seconds (refreshed every third of it).
    pub ttl_s: u64,
    /// Callers watching the service.
    pub callers: usize,
    /// Calls (picks) per simulated second per caller.
    pub call_rate: u64,
    /// Instances that crash (stop refreshing, stop answering) at seeded times.
    pub crashes: usize,
    /// Seeded weight changes.
    pub weight_changes: usize,
    /// A crashed instance must stop getting calls within its TTL plus this many seconds.
    pub grace_s: f64,
}

impl Default for RegistrySpec {
    fn default() -> Self {
        RegistrySpec {
            instances: 0,
            ttl_s: 3,
            callers: 2,
            call_rate: 50,
            crashes: 0,
            weight_changes: 0,
            grace_s: 5.0,
        }
    }
}

/// The lock load (`[locks]`, see [`crate::locks`]): clients lock one of `names` locks
/// through the members' Lock service, each attempt with a lease of its own, add to a counter
/// beside the lock with txns fenced by the lock key, unlock and revoke.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LockSpec {
    /// Lock clients (0: no lock load).
    pub clients: usize,
    /// Locks they share.
    pub names: usize,
    /// A hold lasts up to this long; a client pauses up to this long between attempts.
    pub hold_ms: u64,
    /// Fenced increments per hold, up to (at least 1).
    pub increments: u32,
    /// Each attempt's lease TTL, in seconds: at least `lock_timeout_ms` + 15 s, so that no
    /// waiter's key expires under it (etcd would then grant a lock whose key is gone) and a
    /// hold ends well before it.
    pub lease_ttl_s: i64,
    /// A Lock call that has not answered within this is abandoned (its lease revoked).
    pub lock_timeout_ms: u64,
}

impl Default for LockSpec {
    fn default() -> Self {
        LockSpec {
            clients: 0,
            names: 2,
            hold_ms: 100,
            increments: 3,
            lease_ttl_s: 30,
            lock_timeout_ms: 10_000,
        }
    }
}

impl LockSpec {
    fn is_off(&self) -> bool {
        *self == LockSpec::default()
    }
}

/// Intruders (`[intruders]`, with `cluster.tls`): from a machine of their own, processes
/// take turns dialling a member's client port without a certificate or with one from a CA
/// nobody trusts, and its peer port with a valid *client* certificate, without one, or with
/// the unknown CA's; each tries to read and write (v2 requests; on the peer port the
/// membership request and a forwarded proposal, as a member sends them). The `intruders`
/// check fails if one got an answer or its write is in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IntrudersSpec {
    /// Milliseconds between two attempts (0: no intruders).
    pub every_ms: u64,
}

impl IntrudersSpec {
    /// No intruders (not written back into a scenario).
    pub fn is_off(&self) -> bool {
        *self == IntrudersSpec::default()
    }
}

/// Which checks to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksSpec {
    /// Linearizability of the recorded history.
    pub linearizable: bool,
    /// Watch guarantees.
    pub watches: bool,
    /// After the final heal, a leader serves a quorum read and a write within this many
    /// simulated seconds.
    pub liveness_s: f64,
    /// All members reach the same applied index with identical store digests.
    pub convergence: bool,
    /// How long the linearizability checker may search, in wall-clock seconds.
    pub checker_timeout_s: f64,
    /// Availability: outside fault windows, and from this many simulated seconds after each
    /// fault ends (0: five election timeouts), the cluster must have a leader and
    /// acknowledge writes with no gap longer than `max_stall_s`.
    pub recovery_s: f64,
    /// The longest time without a leader or an acknowledged write that availability allows
    /// (0: three election timeouts).
    pub max_stall_s: f64,
    /// Checks that may find nothing to check in this scenario (otherwise a check with
    /// nothing to check fails): `watches`, `leases`, `reads-after-faults`, `leaders`,
    /// `serializable-reads`.
    pub expect_vacuous: Vec<String>,
}

impl Default for ChecksSpec {
    fn default() -> Self {
        ChecksSpec {
            linearizable: true,
            watches: true,
            liveness_s: 15.0,
            convergence: true,
            checker_timeout_s: 60.0,
            recovery_s: 0.0,
            max_stall_s: 0.0,
            expect_vacuous: Vec::new(),
        }
    }
}

/// Throughput targets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TargetsSpec {
    /// Acknowledged writes per simulated second in the steady phase (0 = no target).
    pub writes_per_sec: u64,
}

/// Errors loading a scenario: one line, naming the file.
#[derive(Debug)]
pub struct ScenarioError(pub String);

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Scenario {
    /// Parse and validate scenario text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| {
            let (line, col) = e
                .span()
                .map(|sp| {
                    let before = &text[..sp.start.min(text.len())];
                    (
                        before.matches('\n').count() + 1,
                        sp.start - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1,
                    )
                })
                .unwrap_or((0, 0));
            ScenarioError(format!(
                "{origin}:{line}:{col}: {}",
                e.message().replace('\n', " ")
            ))
        })?;
        s.validate()
            .map_err(|m| ScenarioError(format!("{origin}: {m}")))?;
        Ok(s)
    }

    /// Load a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("{}: {e}", path.display())))?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// The file of a scenario given by path, or by name under `scenarios/`.
    pub fn path_of(arg: &str) -> PathBuf {
        let p = Path::new(arg);
        if p.exists() {
            p.to_path_buf()
        } else {
            Path::new("scenarios").join(format!("{arg}.toml"))
        }
    }

    /// Load a scenario given by path, or by name under `scenarios/`.
    pub fn find(arg: &str) -> Result<Scenario, ScenarioError> {
        Scenario::load(&Scenario::path_of(arg))
    }

    /// Whether the scenario is well-formed (what loading a file checks).
    pub fn validate_public(&self) -> Result<(), String> {
        self.validate()
    }

    fn validate(&self) -> Result<(), String> {
        let n = self.cluster.members;
        if ![1, 3, 5, 7].contains(&n) {
            return Err(format!("cluster.members = {n}: must be 1, 3, 5 or 7"));
        }
        if self.cluster.leader_sync_delay_ms >= self.cluster.heartbeat_ms {
            return Err(format!(
                "cluster.leader_sync_delay_ms = {} must be less than heartbeat_ms = {}",
                self.cluster.leader_sync_delay_ms, self.cluster.heartbeat_ms
            ));
        }
        if self.cluster.election_ms < 5 * self.cluster.heartbeat_ms {
            return Err(format!(
                "cluster.election_ms = {} must be at least 5 × heartbeat_ms = {}",
                self.cluster.election_ms, self.cluster.heartbeat_ms
            ));
        }
        if self.workload.duration_s <= 0.0 || self.workload.duration_s > 3600.0 {
            return Err(format!(
                "workload.duration_s = {}: must be in (0, 3600]",
                self.workload.duration_s
            ));
        }
        if self.workload.clients == 0 || self.workload.clients > 1000 {
            return Err(format!(
                "workload.clients = {}: must be 1 to 1000",
                self.workload.clients
            ));
        }
        if self.workload.v3_mix.total() != 100 {
            return Err(format!(
                "workload.v3_mix: the percentages sum to {}, not 100",
                self.workload.v3_mix.total()
            ));
        }
        if self.workload.slow_watchers > self.workload.watchers {
            return Err(format!(
                "workload.slow_watchers = {} exceeds workload.watchers = {}",
                self.workload.slow_watchers, self.workload.watchers
            ));
        }
        if (self.workload.slow_watchers > 0 || self.workload.compact_every_ms > 0)
            && self.workload.api != Api::V3
        {
            return Err(
                "workload.slow_watchers and workload.compact_every_ms need api = \"v3\"".into(),
            );
        }
        if self.workload.compact_every_ms > 0 && self.workload.compact_every_ms < 50 {
            return Err(format!(
                "workload.compact_every_ms = {}: at least 50 (or 0 for no compactor)",
                self.workload.compact_every_ms
            ));
        }
        if self.workload.keys == 0 {
            return Err("workload.keys must be at least 1".into());
        }
        self.validate_auth()?;
        if !self.intruders.is_off() {
            if !self.cluster.tls {
                return Err("intruders: needs cluster.tls = true".into());
            }
            if self.intruders.every_ms < 50 {
                return Err(format!(
                    "intruders.every_ms = {}: must be at least 50",
                    self.intruders.every_ms
                ));
            }
        }
        let l = &self.locks;
        if l.clients > 0 {
            if l.names == 0
                || l.increments == 0
                || l.lock_timeout_ms == 0
                || l.lease_ttl_s < 0
                || l.lock_timeout_ms + 15_000 > l.lease_ttl_s as u64 * 1000
            {
                return Err(format!(
                    "locks: names and increments must be at least 1, and lease_ttl_s ({} s) at least lock_timeout_ms ({}) + 15 s, so that no lease runs out during an attempt",
                    l.lease_ttl_s, l.lock_timeout_ms
                ));
            }
            // The lock clients act as nobody, and read every grant back at its revision.
            if self.workload.api != Api::V3
                || self.auth.enabled
                || self.workload.compact_every_ms > 0
                || self.workload.leases > 0
            {
                return Err("locks: need api = \"v3\", no auth, and no compaction (compact_every_ms = 0; leases = 0, as the lease clients compact)".into());
            }
        }
        let r = &self.registry;
        if r.instances > 0 {
            if r.crashes >= r.instances {
                return Err(format!(
                    "registry.crashes = {} must leave at least one of the {} instances alive",
                    r.crashes, r.instances
                ));
            }
            if r.ttl_s == 0 || r.callers == 0 || r.call_rate == 0 || r.call_rate > 10_000 {
                return Err(
                    "registry: ttl_s, callers and call_rate (up to 10000) must be at least 1"
                        .into(),
                );
            }
        }
        if self.network.latency_us[0] > self.network.latency_us[1]
            || self.disk.fsync_us[0] > self.disk.fsync_us[1]
        {
            return Err("latency ranges must be [min, max] with min <= max".into());
        }
        for (i, f) in self.faults.iter().enumerate() {
            if f.at_s < 0.0 || f.duration_s < 0.0 {
                return Err(format!(
                    "faults[{i}]: at_s and duration_s must not be negative"
                ));
            }
            let needs_two_sides = matches!(
                f.kind,
                FaultKind::MinorityMajority { .. } | FaultKind::Bridge | FaultKind::Ring
            );
            if needs_two_sides && n < 3 {
                return Err(format!(
                    "faults[{i}]: a {} partition needs at least 3 members, the cluster has {n}",
                    kind_name(&f.kind)
                ));
            }
            let target = f.kind.target();
            if let Some(Target::Member(m)) = target {
                if *m >= n {
                    return Err(format!(
                        "faults[{i}]: member {m} does not exist (the cluster has {n})"
                    ));
                }
            }
            if matches!(target, Some(Target::Follower)) && n < 2 {
                return Err(format!("faults[{i}]: a 1-member cluster has no follower"));
            }
        }
        for (i, f) in self.failpoints.iter().enumerate() {
            if !detcd_node::failpoints::exists(&f.name) {
                return Err(format!(
                    "failpoints[{i}]: unknown failpoint {:?} (known: {})",
                    f.name,
                    failpoint_names()
                ));
            }
            if f.nth == 0 && !(f.probability > 0.0 && f.probability <= 1.0) {
                return Err(format!(
                    "failpoints[{i}]: set `nth` (the hit that fires) or `probability` in (0, 1]"
                ));
            }
            if f.duration_s <= 0.0 || f.after_s < 0.0 || f.times == 0 {
                return Err(format!(
                    "failpoints[{i}]: duration_s must be positive, after_s not negative, times at least 1"
                ));
            }
            if let Target::Member(m) = f.target {
                if m >= n {
                    return Err(format!(
                        "failpoints[{i}]: member {m} does not exist (the cluster has {n})"
                    ));
                }
            }
        }
        for v in &self.checks.expect_vacuous {
            if !VACUITY_CHECKS.contains(&v.as_str()) {
                return Err(format!(
                    "checks.expect_vacuous: unknown check {v:?} (known: {})",
                    VACUITY_CHECKS.join(", ")
                ));
            }
        }
        if let Some(sw) = &self.swarm {
            for f in &sw.failpoints {
                if !detcd_node::failpoints::exists(f) {
                    return Err(format!(
                        "swarm.failpoints: unknown failpoint {f:?} (known: {})",
                        failpoint_names()
                    ));
                }
            }
            for k in &sw.kinds {
                if !SWARM_KINDS.contains(&k.as_str()) {
                    return Err(format!(
                        "swarm.kinds: unknown fault kind {k:?} (known: {})",
                        SWARM_KINDS.join(", ")
                    ));
                }
            }
            if sw.mean_interval_s <= 0.0 || sw.max_duration_s <= 0.0 {
                return Err(
                    "swarm.mean_interval_s and swarm.max_duration_s must be positive".into(),
                );
            }
        }
        Ok(())
    }
}

impl Scenario {
    fn validate_auth(&self) -> Result<(), String> {
        let a = &self.auth;
        if !a.enabled {
            if a.is_off() {
                return Ok(());
            }
            return Err("auth: users and roles are defined but `enabled` is false".into());
        }
        if a.users.is_empty() {
            return Err("auth: at least one user for the workload's clients".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &a.roles {
            if r.name.is_empty() || r.name == "root" || r.name == "guest" {
                return Err(format!(
                    "auth.roles: {:?} is not a role name the scenario may define",
                    r.name
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(format!("auth.roles: {:?} defined twice", r.name));
            }
            // v2 patterns are key paths; v3 ones keys of the workload's key space.
            let (bad, want) = match self.workload.api {
                Api::V2 => (
                    r.read.iter().chain(&r.write).find(|p| !p.starts_with('/')),
                    "start with `/`",
                ),
                Api::V3 => (
                    r.read
                        .iter()
                        .chain(&r.write)
                        .find(|p| !p.starts_with("v3/")),
                    "start with `v3/` (the v3 workload's keys)",
                ),
            };
            if let Some(p) = bad {
                return Err(format!(
                    "auth.roles: {:?}: pattern {p:?} must {want}",
                    r.name
                ));
            }
        }
        if !a.flip_role.is_empty() || a.flip_every_ms > 0 {
            let Some(r) = a.roles.iter().find(|r| r.name == a.flip_role) else {
                return Err(format!(
                    "auth.flip_role: {:?} is not a role of auth.roles",
                    a.flip_role
                ));
            };
            let patterns: std::collections::BTreeSet<&String> =
                r.read.iter().chain(&r.write).collect();
            if patterns.len() != 1 {
                return Err(format!(
                    "auth.flip_role: {:?} must have exactly one pattern (read, write or both)",
                    r.name
                ));
            }
            if self.workload.api != Api::V3 {
                return Err("auth.flip_role: v3 workloads only (`api = \"v3\"`)".into());
            }
            if a.flip_every_ms == 0 {
                return Err("auth.flip_every_ms: at least 1 with a flip_role".into());
            }
        }
        let mut users = std::collections::BTreeSet::new();
        for u in &a.users {
            if u.name.is_empty() || u.name == "root" || u.name.contains(':') {
                return Err(format!(
                    "auth.users: {:?} is not a user name the scenario may define",
                    u.name
                ));
            }
            if !users.insert(u.name.as_str()) {
                return Err(format!("auth.users: {:?} defined twice", u.name));
            }
            if u.password.is_empty() {
                return Err(format!("auth.users: {:?} needs a password", u.name));
            }
            if let Some(r) = u.roles.iter().find(|r| !names.contains(r.as_str())) {
                return Err(format!(
                    "auth.users: {:?} has role {r:?}, which `roles` does not define",
                    u.name
                ));
            }
        }
        Ok(())
    }
}

/// What a vacuity check may find nothing of (see `checks.expect_vacuous`).
pub const VACUITY_CHECKS: &[&str] = &[
    "watches",
    "leases",
    "reads-after-faults",
    "leaders",
    "serializable-reads",
];

fn failpoint_names() -> String {
    detcd_node::failpoints::ALL
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The failpoint rules a swarm seed arms: each failpoint listed in `swarm.failpoints` with
/// probability 1/2, crashing (or, one time in four, pausing) a random member on a hit drawn
/// between the 1st and the 50th after a seeded time in the first 80% of the load, for up to
/// `max_duration_s`.
pub fn swarm_failpoints(sw: &SwarmSpec, duration_s: f64, seed: u64) -> Vec<FailpointRule> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xf41_7b01);
    let mut rules = Vec::new();
    for name in &sw.failpoints {
        if !rng.gen_bool(0.5) {
            continue;
        }
        rules.push(FailpointRule {
            name: name.clone(),
            action: if rng.gen_bool(0.25) {
                FailpointAction::Pause
            } else {
                FailpointAction::Crash
            },
            target: Target::Random,
            probability: 0.0,
            nth: rng.gen_range(1..=50),
            after_s: rng.gen_range(0.0..duration_s * 0.8),
            times: 1,
            duration_s: rng.gen_range(0.2..sw.max_duration_s.max(0.3)),
        });
    }
    rules
}

/// Fault kinds swarm testing can pick.
pub const SWARM_KINDS: &[&str] = &[
    "isolate",
    "minority-majority",
    "bridge",
    "ring",
    "one-way",
    "crash",
    "pause",
    "clock-skew",
    "flaky",
    "slow-disk",
    "power-loss",
    "bit-flip",
    "bit-rot",
    "misdirected-write",
    "read-error",
    "fsync-error",
    "disk-full",
];

impl FaultKind {
    /// The member a single-target fault hits (None for partitions of the whole cluster).
    pub fn target(&self) -> Option<&Target> {
        match self {
            FaultKind::Isolate { target }
            | FaultKind::OneWay { target }
            | FaultKind::Crash { target }
            | FaultKind::Replace { target }
            | FaultKind::Pause { target }
            | FaultKind::ClockSkew { target, .. }
            | FaultKind::Flaky { target, .. }
            | FaultKind::SlowDisk { target, .. }
            | FaultKind::Disk { target, .. } => Some(target),
            _ => None,
        }
    }
}

/// The sides of a `minority-majority` partition of `n` members: a seeded shuffle, with the
/// leader (if known) placed in the minority or the majority as asked. Returns (minority,
/// majority), the minority being `n / 2` members.
pub fn minority_majority(
    n: usize,
    leader: Option<usize>,
    leader_in_minority: bool,
    rng: &mut ChaCha8Rng,
) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.gen_range(0..=i);
        order.swap(i, j);
    }
    if let Some(l) = leader {
        order.retain(|x| *x != l);
        if leader_in_minority {
            order.insert(0, l);
        } else {
            order.push(l);
        }
    }
    let majority = order.split_off(n / 2);
    (order, majority)
}

/// The `kind` name of a fault.
pub fn kind_name(k: &FaultKind) -> &'static str {
    match k {
        FaultKind::Isolate { .. } => "isolate",
        FaultKind::MinorityMajority { .. } => "minority-majority",
        FaultKind::Bridge => "bridge",
        FaultKind::Ring => "ring",
        FaultKind::OneWay { .. } => "one-way",
        FaultKind::Crash { .. } => "crash",
        FaultKind::Replace { .. } => "replace",
        FaultKind::RollingRestart => "rolling-restart",
        FaultKind::PowerLoss => "power-loss",
        FaultKind::Pause { .. } => "pause",
        FaultKind::ClockSkew { .. } => "clock-skew",
        FaultKind::Flaky { .. } => "flaky",
        FaultKind::SlowDisk { .. } => "slow-disk",
        FaultKind::Disk { fault, .. } => fault.name(),
    }
}

/// The swarm timeline of a seed: which kinds are enabled (a seeded subset, never empty) and
/// faults of those kinds at seeded times until `duration_s`.
pub fn swarm_faults(sw: &SwarmSpec, s: &Scenario, seed: u64) -> Vec<Fault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5_3a4d);
    let mut enabled: Vec<&str> = sw
        .kinds
        .iter()
        .map(|k| k.as_str())
        .filter(|_| rng.gen_bool(0.5))
        .collect();
    if enabled.is_empty() && !sw.kinds.is_empty() {
        enabled.push(sw.kinds[rng.gen_range(0..sw.kinds.len())].as_str());
    }
    let n = s.cluster.members;
    let mut faults = Vec::new();
    let mut t = 1.0;
    while t < s.workload.duration_s - 1.0 && !enabled.is_empty() {
        let kind = enabled[rng.gen_range(0..enabled.len())];
        let target = if rng.gen_bool(0.5) {
            Target::Leader
        } else {
            Target::Member(rng.gen_range(0..n))
        };
        let k = match kind {
            "isolate" => FaultKind::Isolate { target },
            "minority-majority" if n >= 3 => FaultKind::MinorityMajority {
                leader_in_minority: rng.gen_bool(0.5),
            },
            "bridge" if n >= 3 => FaultKind::Bridge,
            "ring" if n >= 5 => FaultKind::Ring,
            "one-way" => FaultKind::OneWay { target },
            "crash" => FaultKind::Crash { target },
            "pause" => FaultKind::Pause { target },
            "clock-skew" => FaultKind::ClockSkew {
                target,
                offset_ms: rng.gen_range(-60_000..60_000),
                drift_ppm: rng.gen_range(-500..500),
            },
            "flaky" => FaultKind::Flaky {
                target,
                flap_ms: rng.gen_range(50..500),
            },
            "slow-disk" => FaultKind::SlowDisk {
                target,
                fsync_ms: rng.gen_range(5..200),
            },
            "power-loss" => FaultKind::PowerLoss,
            other => match DiskFault::named(other) {
                Some(fault) => FaultKind::Disk {
                    target,
                    fault,
                    area: [DiskArea::Any, DiskArea::Wal, DiskArea::Snap, DiskArea::V3]
                        [rng.gen_range(0..4)],
                },
                None => FaultKind::Isolate { target },
            },
        };
        debug_assert!(SWARM_KINDS.contains(&kind_name(&k)));
        let dur = rng.gen_range(0.2..sw.max_duration_s.max(0.3));
        faults.push(Fault {
            at_s: t,
            duration_s: dur,
            kind: k,
        });
        t += dur + rng.gen_range(0.0..2.0 * sw.mean_interval_s);
    }
    limit_damage(&mut faults, n, seed);
    faults
}

/// Storage faults that damage data strike at most a minority of the members in a run,
/// `(n - 1) / 2`, each a fixed member (not "the leader", which moves after each damage): a
/// member whose log is damaged rejoins only through a quorum of the others, and a cluster
/// whose majority lost their logs cannot recover without an operator (v3-swarm seeds 23, 49,
/// 83 and 90 of 100: in a 3-member cluster, a second member's log was damaged while the
/// first one's rejoin had removed its old id and not yet added the new one, which left two
/// voters, one of them without its log). Drawn from a stream of its own, so the rest of the
/// plan is what the seed drew. A one-member cluster gets no such fault.
fn limit_damage(faults: &mut Vec<Fault>, n: usize, seed: u64) {
    let f = (n.max(1) - 1) / 2;
    let damaging =
        |k: &FaultKind| matches!(k, FaultKind::Disk { fault, .. } if fault.damages_data());
    if f == 0 {
        faults.retain(|x| !damaging(&x.kind));
        return;
    }
    let mut pick = ChaCha8Rng::seed_from_u64(seed ^ 0xda_3a9e);
    let mut damaged: Vec<usize> = Vec::new();
    for x in faults.iter_mut() {
        if let FaultKind::Disk { target, fault, .. } = &mut x.kind {
            if !fault.damages_data() {
                continue;
            }
            let m = match target {
                Target::Member(m) if damaged.contains(m) || damaged.len() < f => *m,
                _ if damaged.len() < f => pick.gen_range(0..n),
                _ => damaged[pick.gen_range(0..damaged.len())],
            };
            if !damaged.contains(&m) {
                damaged.push(m);
            }
            *target = Target::Member(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_damages_the_storage_of_a_minority_of_fixed_members() {
        for (members, f) in [(1, 0), (3, 1), (5, 2)] {
            let text = format!(
                "name = \"x\"\n[cluster]\nmembers = {members}\n[swarm]\nkinds = [\"bit-flip\", \"bit-rot\", \"read-error\", \"misdirected-write\", \"disk-full\", \"crash\"]\nmean_interval_s = 0.5\n"
            );
            let s = Scenario::parse(&text, "s.toml").unwrap();
            let mut most = 0;
            for seed in 1..=200u64 {
                let faults = swarm_faults(s.swarm.as_ref().unwrap(), &s, seed);
                let mut hit = std::collections::BTreeSet::new();
                for x in &faults {
                    if let FaultKind::Disk { target, fault, .. } = &x.kind {
                        if fault.damages_data() {
                            let Target::Member(m) = target else {
                                panic!("seed {seed}: a damaging fault on {target:?}");
                            };
                            hit.insert(*m);
                        }
                    }
                }
                assert!(hit.len() <= f, "{members} members, seed {seed}: {hit:?}");
                most = most.max(hit.len());
            }
            assert_eq!(most, f, "{members} members: the budget is used");
        }
    }

    #[test]
    fn the_v3_mix_maps_rolls_to_operations_and_must_sum_to_100() {
        let m = V3Mix::default();
        // The default keeps the rolls every v3 scenario drew before the mix was a setting.
        let kinds: Vec<V3Op> = (0..100).map(|r| m.pick(r)).collect();
        assert_eq!(
            kinds[24],
            V3Op::Range {
                serializable: false
            }
        );
        assert_eq!(kinds[25], V3Op::Range { serializable: true });
        assert_eq!(kinds[34], V3Op::Range { serializable: true });
        assert_eq!(kinds[35], V3Op::RangeAll);
        assert_eq!(kinds[40], V3Op::Put);
        assert_eq!(kinds[74], V3Op::Put);
        assert_eq!(kinds[75], V3Op::Delete);
        assert_eq!(kinds[85], V3Op::Txn);
        assert_eq!(kinds[99], V3Op::Txn);
        let puts = Scenario::parse(
            "name = \"x\"\n[workload]\napi = \"v3\"\n[workload.v3_mix]\nrange = 0\nserializable_range = 0\nrange_all = 0\nput = 100\ndelete = 0\ntxn = 0\n",
            "s.toml",
        )
        .unwrap();
        assert!((0..100).all(|r| puts.workload.v3_mix.pick(r) == V3Op::Put));
        let e =
            Scenario::parse("name = \"x\"\n[workload.v3_mix]\nput = 50\n", "s.toml").unwrap_err();
        assert!(
            e.0.contains("workload.v3_mix: the percentages sum to 115, not 100"),
            "{e}"
        );
        // Left at its default, it is not written back (failure files stay as they were).
        let plain = Scenario::parse("name = \"x\"\n", "s.toml").unwrap();
        assert!(!toml::to_string(&plain).unwrap().contains("v3_mix"));
    }

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let e = Scenario::parse("name = \"x\"\n[workload]\nclientz = 3\n", "s.toml").unwrap_err();
        assert!(e.0.starts_with("s.toml:3:"), "{e}");
        assert!(e.0.contains("clientz"), "{e}");
    }

    #[test]
    fn auth_fields_are_checked() {
        let ok = Scenario::parse(
            "name = \"x\"\n[auth]\nenabled = true\n[[auth.roles]]\nname = \"r\"\nread = [\"/k/*\"]\n[[auth.users]]\nname = \"u\"\npassword = \"p\"\nroles = [\"r\"]\n",
            "s.toml",
        )
        .unwrap();
        assert_eq!(ok.auth.users[0].roles, ["r"]);
        assert_eq!(ok.auth.root_password(), "root");
        let typo = Scenario::parse(
            "name = \"x\"\n[auth]\nenabled = true\n[[auth.roles]]\nname = \"r\"\nreads = [\"/k/*\"]\n",
            "s.toml",
        )
        .unwrap_err();
        assert!(typo.0.contains("reads"), "{typo}");
        let unknown_role = Scenario::parse(
            "name = \"x\"\n[auth]\nenabled = true\n[[auth.users]]\nname = \"u\"\npassword = \"p\"\nroles = [\"nope\"]\n",
            "s.toml",
        )
        .unwrap_err();
        assert!(
            unknown_role.0.contains("which `roles` does not define"),
            "{unknown_role}"
        );
        let guest = Scenario::parse(
            "name = \"x\"\n[auth]\nenabled = true\n[[auth.roles]]\nname = \"guest\"\n[[auth.users]]\nname = \"u\"\npassword = \"p\"\n",
            "s.toml",
        )
        .unwrap_err();
        assert!(guest.0.contains("\"guest\" is not a role name"), "{guest}");
        // v3: patterns of the workload's keys; a flipped role has one pattern, v3 only.
        let v3 = |extra: &str, role: &str| {
            Scenario::parse(
                &format!("name = \"x\"\n[workload]\napi = \"v3\"\n[auth]\nenabled = true\n{extra}[[auth.roles]]\nname = \"r\"\n{role}[[auth.users]]\nname = \"u\"\npassword = \"p\"\nroles = [\"r\"]\n"),
                "s.toml",
            )
        };
        assert!(v3(
            "flip_role = \"r\"\nflip_every_ms = 500\n",
            "read = [\"v3/5\"]\nwrite = [\"v3/5\"]\n"
        )
        .is_ok());
        let e = v3("", "read = [\"/k/*\"]\n").unwrap_err();
        assert!(e.0.contains("must start with `v3/`"), "{e}");
        let e = v3(
            "flip_role = \"r\"\nflip_every_ms = 500\n",
            "read = [\"v3/5\", \"v3/6\"]\n",
        )
        .unwrap_err();
        assert!(e.0.contains("exactly one pattern"), "{e}");
        let e = v3("flip_role = \"r\"\n", "read = [\"v3/5\"]\n").unwrap_err();
        assert!(e.0.contains("flip_every_ms"), "{e}");
        let e = v3(
            "flip_role = \"nope\"\nflip_every_ms = 5\n",
            "read = [\"v3/5\"]\n",
        )
        .unwrap_err();
        assert!(e.0.contains("not a role of auth.roles"), "{e}");
        // Without auth nothing is written back (shrink re-encodes scenarios).
        let plain = Scenario::parse("name = \"x\"\n", "s.toml").unwrap();
        let text = toml::to_string(&plain).unwrap();
        assert!(
            !text.contains("[auth]") && !text.contains("rget ="),
            "{text}"
        );
    }

    #[test]
    fn impossible_partitions_are_refused() {
        let e = Scenario::parse(
            "name = \"x\"\n[cluster]\nmembers = 1\n[[faults]]\nat_s = 1.0\nkind = \"minority-majority\"\n",
            "s.toml",
        )
        .unwrap_err();
        assert!(e.0.contains("needs at least 3 members"), "{e}");
    }

    #[test]
    fn the_leader_sync_delay_must_stay_below_a_heartbeat() {
        let e = Scenario::parse(
            "name = \"x\"\n[cluster]\nheartbeat_ms = 50\nelection_ms = 500\nleader_sync_delay_ms = 50\n",
            "s.toml",
        )
        .unwrap_err();
        assert!(
            e.0.contains("leader_sync_delay_ms = 50 must be less than heartbeat_ms = 50"),
            "{e}"
        );
        let ok = Scenario::parse(
            "name = \"x\"\n[cluster]\nleader_sync_delay_ms = 0\n",
            "s.toml",
        );
        assert_eq!(ok.unwrap().cluster.leader_sync_delay_ms, 0);
        let power = Scenario::parse(
            "name = \"x\"\n[[faults]]\nat_s = 1.0\nkind = \"power-loss\"\ntarget = \"leader\"\n",
            "s.toml",
        )
        .unwrap_err();
        assert!(power.0.contains("has no field `target`"), "{power}");
    }

    #[test]
    fn a_full_scenario_parses() {
        let s = Scenario::parse(
            r#"name = "leader-crash"
[cluster]
members = 3
[[faults]]
at_s = 2.0
duration_s = 1.5
kind = "crash"
target = "leader"
[[faults]]
at_s = 1.0
kind = "clock-skew"
target = { member = 2 }
offset_ms = 30000
"#,
            "s.toml",
        )
        .unwrap();
        assert_eq!(s.faults.len(), 2);
        assert_eq!(
            s.faults[0].kind,
            FaultKind::Crash {
                target: Target::Leader
            }
        );
    }
}
