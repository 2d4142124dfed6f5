//! etcd's configuration: command-line flags (Go syntax: `-name x`, `--name=x`, bare booleans),
//! `ETCD_*` environment variables (a flag wins over its variable) and the YAML config file
//! (`--config-file`; as in etcd, when it is given, flags and variables are ignored).
//!
//! Parsing never reads the process environment or the disk itself: both are injected, so
//! tests and the simulator pass their own.

use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;
use yaml_rust2::Yaml;

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster.
    New,
    /// Join a running cluster.
    Existing,
}

/// TLS settings of one side (client or peer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate file.
    pub cert_file: Option<PathBuf>,
    /// Key file.
    pub key_file: Option<PathBuf>,
    /// Require client certificates.
    pub client_cert_auth: bool,
    /// CA for client certificates.
    pub trusted_ca_file: Option<PathBuf>,
    /// Self-signed certificates.
    pub auto_tls: bool,
}

/// A member's whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `--name`.
    pub name: String,
    /// `--data-dir` (default `<name>.etcd`).
    pub data_dir: PathBuf,
    /// `--wal-dir`.
    pub wal_dir: Option<PathBuf>,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// `--experimental-leader-sync-delay` (detcd's own, in ms): how long the leader may
    /// hold its own entries unsynced while followers that form a quorum without it keep up
    /// (0: the leader fsyncs every Ready before its copy counts, as etcd does).
    pub leader_sync_delay_ms: u64,
    /// `--heartbeat-interval` (ms).
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` (ms).
    pub election_timeout_ms: u64,
    /// `--listen-peer-urls`.
    pub listen_peer_urls: Vec<Url>,
    /// `--listen-client-urls`.
    pub listen_client_urls: Vec<Url>,
    /// `--advertise-client-urls`.
    pub advertise_client_urls: Vec<Url>,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<Url>,
    /// `--initial-cluster` as (name, peer URL) pairs; a name may repeat.
    pub initial_cluster: Vec<(String, Url)>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--max-snapshots`.
    pub max_snapshots: u32,
    /// `--max-wals`.
    pub max_wals: u32,
    /// `--cors`.
    pub cors: Vec<String>,
    /// `--max-txn-ops`: operations allowed in one v3 transaction.
    pub max_txn_ops: usize,
    /// `--experimental-watch-progress-notify-interval`: how often a watcher that asked for
    /// progress notifications and saw no event gets one (etcd's default: 10 minutes).
    pub watch_progress_notify_interval: std::time::Duration,
    /// `--max-request-bytes`: the largest v3 request a client may send.
    pub max_request_bytes: usize,
    /// `--quota-backend-bytes`: the v3 backend's size limit (0: etcd's default, 2 GiB).
    pub quota_backend_bytes: u64,
    /// `--experimental-backend-cache-bytes` (detcd's own): the v3 keyspace's page cache
    /// (default 64 MiB). etcd maps its whole bbolt file instead.
    pub backend_cache_bytes: usize,
    /// `--experimental-restore-v3-snapshot` (detcd's own): a file `etcdctl snapshot save`
    /// wrote from a detcd member; a new cluster's member starts with its v3 keyspace.
    pub restore_v3_snapshot: Option<PathBuf>,
    /// `--discovery`.
    pub discovery: Option<String>,
    /// `--discovery-srv`.
    pub discovery_srv: Option<String>,
    /// `--discovery-dns` (detcd): the DNS server for `--discovery-srv` (default: the first
    /// `nameserver` of /etc/resolv.conf).
    pub discovery_dns: Option<String>,
    /// `--strict-reconfig-check`.
    pub strict_reconfig_check: bool,
    /// `--experimental-rejoin-when-damaged` (detcd's own, default true): a member whose WAL
    /// or snapshots are damaged past local repair rejoins under a new id (`crate::rejoin`).
    pub rejoin_when_damaged: bool,
    /// `--enable-v2` (accepted; v2 is always on).
    pub enable_v2: bool,
    /// Client TLS.
    pub client_tls: TlsConfig,
    /// Peer TLS.
    pub peer_tls: TlsConfig,
    /// `--cipher-suites`: Go's names of the TLS 1.2 suites allowed (empty: rustls' defaults).
    pub cipher_suites: Vec<String>,
    /// `--logger` (accepted).
    pub logger: String,
    /// `--log-outputs`.
    pub log_outputs: Vec<String>,
    /// `--log-level`.
    pub log_level: String,
    /// `--log-format` (detcd: text | json).
    pub log_format: String,
    /// `--rng-seed` (detcd): seed of the member's rng.
    pub rng_seed: Option<u64>,
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Parsed {
    /// Run a member with this configuration; the strings are warnings to log.
    Run(Box<Config>, Vec<String>),
    /// `--version`.
    Version,
    /// `--help`.
    Help(String),
}

/// A configuration error: one line, as the user should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
}

/// Every flag: name, kind, help. etcd-only flags that scripts pass are accepted and ignored.
const FLAGS: &[(&str, Kind, &str)] = &[
    ("name", Kind::Str, "Human-readable name for this member."),
    ("data-dir", Kind::Str, "Path to the data directory."),
    ("wal-dir", Kind::Str, "Path to the dedicated wal directory."),
    (
        "snapshot-count",
        Kind::Str,
        "Number of committed transactions to trigger a snapshot to disk.",
    ),
    (
        "experimental-leader-sync-delay",
        Kind::Str,
        "detcd only: time (in milliseconds) the leader may defer the fsync of its own entries while followers forming a quorum keep up (0 = never).",
    ),
    (
        "heartbeat-interval",
        Kind::Str,
        "Time (in milliseconds) of a heartbeat interval.",
    ),
    (
        "election-timeout",
        Kind::Str,
        "Time (in milliseconds) for an election to timeout.",
    ),
    (
        "listen-peer-urls",
        Kind::Str,
        "List of URLs to listen on for peer traffic.",
    ),
    (
        "listen-client-urls",
        Kind::Str,
        "List of URLs to listen on for client traffic.",
    ),
    (
        "max-snapshots",
        Kind::Str,
        "Maximum number of snapshot files to retain (0 is unlimited).",
    ),
    (
        "max-wals",
        Kind::Str,
        "Maximum number of wal files to retain (0 is unlimited).",
    ),
    (
        "cors",
        Kind::Str,
        "Comma-separated white list of origins for CORS.",
    ),
    (
        "quota-backend-bytes",
        Kind::Str,
        "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).",
    ),
    (
        "experimental-backend-cache-bytes",
        Kind::Str,
        "detcd only: the v3 keyspace's page cache in bytes (default 64 MiB); pages past it are read back from the backend file, each checked against the checksum of what was written.",
    ),
    (
        "experimental-restore-v3-snapshot",
        Kind::Str,
        "detcd only: a v3 snapshot file (etcdctl snapshot save from a detcd member) whose keyspace a member of a new cluster starts with; give every member the same file.",
    ),
    (
        "experimental-rejoin-when-damaged",
        Kind::Bool,
        "detcd only: a member whose WAL or snapshots are damaged past local repair asks the cluster to remove it and add it back under a new id, and rejoins from the leader's snapshot (false: it refuses to start, as etcd does).",
    ),
    (
        "max-txn-ops",
        Kind::Str,
        "Maximum number of operations permitted in a transaction.",
    ),
    (
        "experimental-watch-progress-notify-interval",
        Kind::Str,
        "Duration of periodic watch progress notifications.",
    ),
    (
        "max-request-bytes",
        Kind::Str,
        "Maximum client request size in bytes the server will accept.",
    ),
    (
        "initial-advertise-peer-urls",
        Kind::Str,
        "List of this member's peer URLs to advertise to the rest of the cluster.",
    ),
    (
        "initial-cluster",
        Kind::Str,
        "Initial cluster configuration for bootstrapping.",
    ),
    (
        "initial-cluster-state",
        Kind::Str,
        "Initial cluster state ('new' or 'existing').",
    ),
    (
        "initial-cluster-token",
        Kind::Str,
        "Initial cluster token for the etcd cluster during bootstrap.",
    ),
    (
        "advertise-client-urls",
        Kind::Str,
        "List of this member's client URLs to advertise to the public.",
    ),
    (
        "discovery",
        Kind::Str,
        "Discovery URL used to bootstrap the cluster.",
    ),
    (
        "discovery-srv",
        Kind::Str,
        "DNS srv domain used to bootstrap the cluster.",
    ),
    (
        "discovery-dns",
        Kind::Str,
        "detcd: DNS server (host:port) for --discovery-srv; default: /etc/resolv.conf's first nameserver.",
    ),
    (
        "discovery-fallback",
        Kind::Str,
        "Expected behavior ('exit' or 'proxy') when discovery services fails.",
    ),
    (
        "discovery-proxy",
        Kind::Str,
        "HTTP proxy to use for traffic to discovery service.",
    ),
    (
        "strict-reconfig-check",
        Kind::Bool,
        "Reject reconfiguration requests that would cause quorum loss.",
    ),
    (
        "enable-v2",
        Kind::Bool,
        "Accept etcd V2 client requests (always on in detcd).",
    ),
    (
        "force-new-cluster",
        Kind::Bool,
        "Accepted for etcd compatibility; refused when true.",
    ),
    (
        "cert-file",
        Kind::Str,
        "Path to the client server TLS cert file.",
    ),
    (
        "key-file",
        Kind::Str,
        "Path to the client server TLS key file.",
    ),
    (
        "client-cert-auth",
        Kind::Bool,
        "Enable client cert authentication.",
    ),
    (
        "trusted-ca-file",
        Kind::Str,
        "Path to the client server TLS trusted CA cert file.",
    ),
    (
        "auto-tls",
        Kind::Bool,
        "Client TLS using generated certificates.",
    ),
    (
        "peer-cert-file",
        Kind::Str,
        "Path to the peer server TLS cert file.",
    ),
    (
        "peer-key-file",
        Kind::Str,
        "Path to the peer server TLS key file.",
    ),
    (
        "peer-client-cert-auth",
        Kind::Bool,
        "Enable peer client cert authentication.",
    ),
    (
        "peer-trusted-ca-file",
        Kind::Str,
        "Path to the peer server TLS trusted CA file.",
    ),
    (
        "peer-auto-tls",
        Kind::Bool,
        "Peer TLS using generated certificates.",
    ),
    (
        "cipher-suites",
        Kind::Str,
        "Comma-separated list of supported TLS cipher suites.",
    ),
    (
        "logger",
        Kind::Str,
        "Accepted for etcd compatibility ('zap' or 'capnslog').",
    ),
    (
        "log-outputs",
        Kind::Str,
        "Where to write logs: 'default', 'stderr', 'stdout' or file paths.",
    ),
    (
        "log-level",
        Kind::Str,
        "Log level: debug, info, warn, error.",
    ),
    (
        "log-format",
        Kind::Str,
        "detcd: log format, 'text' or 'json'.",
    ),
    ("debug", Kind::Bool, "Enable debug-level logging."),
    (
        "metrics",
        Kind::Str,
        "Accepted for etcd compatibility ('basic' or 'extensive').",
    ),
    (
        "rng-seed",
        Kind::Str,
        "detcd: seed of this member's random number generator.",
    ),
    (
        "config-file",
        Kind::Str,
        "Path to the server configuration file (YAML).",
    ),
    ("version", Kind::Bool, "Print the version and exit."),
    ("help", Kind::Bool, "Show this help."),
    ("h", Kind::Bool, "Show this help."),
];

fn flag_kind(name: &str) -> Option<Kind> {
    FLAGS.iter().find(|f| f.0 == name).map(|f| f.1)
}

fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_uppercase().replace('-', "_"))
}

/// Help text.
pub fn help() -> String {
    let mut s = String::from("usage: detcd [flags]\n\nflags (etcd's; single or double dash; ETCD_<FLAG> environment variables too):\n");
    for (name, kind, help) in FLAGS {
        let arg = if *kind == Kind::Bool { "" } else { " <value>" };
        s.push_str(&format!("  --{name}{arg}\n        {help}\n"));
    }
    s
}

type Values = Vec<(String, String)>;

/// Parse arguments (without argv[0]) with an injected environment and file reader.
pub fn parse(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Parsed, ConfigError> {
    let mut flags: Values = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            if let Some(extra) = args.get(i + 1) {
                return Err(ConfigError(format!("'{extra}' is not a valid flag")));
            }
            break;
        }
        let Some(stripped) = a
            .strip_prefix("--")
            .or_else(|| a.strip_prefix('-'))
            .filter(|s| !s.is_empty())
        else {
            return Err(ConfigError(format!("'{a}' is not a valid flag")));
        };
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (stripped, None),
        };
        let kind = flag_kind(name)
            .ok_or_else(|| ConfigError(format!("flag provided but not defined: -{name}")))?;
        let value = match (kind, inline) {
            (_, Some(v)) => v,
            (Kind::Bool, None) => "true".into(),
            (Kind::Str, None) => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| ConfigError(format!("flag needs an argument: -{name}")))?
            }
        };
        flags.push((name.to_string(), value));
        i += 1;
    }
    let get = |flags: &Values, k: &str| {
        flags
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    if get(&flags, "help").is_some() || get(&flags, "h").is_some() {
        return Ok(Parsed::Help(help()));
    }
    if get(&flags, "version").map(|v| v == "true").unwrap_or(false) {
        return Ok(Parsed::Version);
    }
    let mut warnings = Vec::new();
    let config_file = get(&flags, "config-file").or_else(|| env("ETCD_CONFIG_FILE"));
    let values: Values = if let Some(path) = config_file {
        let text = read_file(Path::new(&path))
            .map_err(|e| ConfigError(format!("cannot read config file {path}: {e}")))?;
        if flags.iter().any(|(n, _)| n != "config-file") {
            warnings.push("--config-file is set: other command-line flags and environment variables are ignored".into());
        }
        file_values(&text, &path)?
    } else {
        // Environment first, flags after: the last value of a name wins.
        let mut v: Values = Vec::new();
        for (name, kind, _) in FLAGS {
            if let Some(val) = env(&env_name(name)) {
                if *kind == Kind::Bool && val.is_empty() {
                    continue;
                }
                v.push((name.to_string(), val));
            }
        }
        v.extend(flags);
        v
    };
    build(&values, warnings).map(|(c, w)| Parsed::Run(Box::new(c), w))
}

/// Flatten etcd's YAML config file into flag values.
fn file_values(text: &str, path: &str) -> Result<Values, ConfigError> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text)
        .map_err(|e| ConfigError(format!("config file {path}: {e}")))?;
    if docs.len() > 1 {
        return Err(ConfigError(format!(
            "config file {path}: more than one YAML document"
        )));
    }
    let mut out = Values::new();
    let Some(map) = docs.first().and_then(Yaml::as_hash) else {
        return Err(ConfigError(format!(
            "config file {path}: expected a mapping of etcd's keys"
        )));
    };
    for (k, v) in map {
        let key = k.as_str().unwrap_or("").to_string();
        match key.as_str() {
            "client-transport-security" | "peer-transport-security" => {
                let prefix = if key.starts_with("peer") { "peer-" } else { "" };
                if let Some(m) = v.as_hash() {
                    for (k2, v2) in m {
                        let name = format!("{prefix}{}", k2.as_str().unwrap_or(""));
                        if flag_kind(&name).is_none() {
                            return Err(ConfigError(format!(
                                "config file {path}: unknown key {key}.{}",
                                k2.as_str().unwrap_or("")
                            )));
                        }
                        out.push((name, yaml_scalar(v2)));
                    }
                }
            }
            _ => {
                if flag_kind(&key).is_none() {
                    return Err(ConfigError(format!(
                        "config file {path}: unknown key {key:?}"
                    )));
                }
                out.push((key, yaml_scalar(v)));
            }
        }
    }
    Ok(out)
}

/// A YAML value as a flag's text: scalars as written (booleans and integers in their
/// canonical form), null as empty, a sequence joined with commas (etcd's list flags), and
/// anything else (a mapping) as its YAML text.
fn yaml_scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Integer(n) => n.to_string(),
        Yaml::Null | Yaml::BadValue => String::new(),
        Yaml::Array(seq) => seq.iter().map(yaml_scalar).collect::<Vec<_>>().join(","),
        other => {
            let mut text = String::new();
            let _ = yaml_rust2::YamlEmitter::new(&mut text).dump(other);
            text.trim_start_matches("---").trim().to_string()
        }
    }
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ConfigError(format!(
            "invalid boolean value {v:?} for -{name}: parse error"
        ))),
    }
}

fn parse_u64(name: &str, v: &str) -> Result<u64, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError(format!("invalid value {v:?} for flag -{name}: parse error")))
}

/// A Go `time.Duration` flag value (`10m`, `1.5s`, `250ms`, `1h30m`, `0`), as `flag` parses it.
fn parse_go_duration(name: &str, v: &str) -> Result<std::time::Duration, ConfigError> {
    let bad = || ConfigError(format!("invalid value {v:?} for flag -{name}: parse error"));
    let t = v.trim();
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let (mut rest, mut nanos) = (t, 0f64);
    if rest.is_empty() || rest.starts_with('-') {
        return Err(bad());
    }
    rest = rest.strip_prefix('+').unwrap_or(rest);
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += n * scale;
        rest = &rest[unit_len..];
    }
    if !nanos.is_finite() || nanos > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_nanos(nanos as u64))
}

fn parse_urls(name: &str, v: &str) -> Result<Vec<Url>, ConfigError> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        out.push(parse_url(name, part)?);
    }
    if out.is_empty() {
        return Err(ConfigError(format!("--{name}: no valid URLs given")));
    }
    Ok(out)
}

fn parse_url(name: &str, s: &str) -> Result<Url, ConfigError> {
    let u = Url::parse(s).map_err(|e| ConfigError(format!("--{name}: {s:?}: {e}")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(ConfigError(format!(
            "--{name}: URL scheme must be http or https: {s}"
        )));
    }
    if u.host_str().is_none() || u.port().is_none() {
        return Err(ConfigError(format!(
            "--{name}: URL address does not have the form \"host:port\": {s}"
        )));
    }
    if u.path() != "/" && !u.path().is_empty() {
        return Err(ConfigError(format!(
            "--{name}: URL must not contain a path: {s}"
        )));
    }
    Ok(u)
}

fn build(values: &Values, mut warnings: Vec<String>) -> Result<(Config, Vec<String>), ConfigError> {
    let get = |k: &str| {
        values
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let name = get("name").unwrap_or_else(|| "default".into());
    let u64_or = |k: &str, d: u64| -> Result<u64, ConfigError> {
        get(k).map(|v| parse_u64(k, &v)).unwrap_or(Ok(d))
    };
    let bool_or = |k: &str, d: bool| -> Result<bool, ConfigError> {
        get(k).map(|v| parse_bool(k, &v)).unwrap_or(Ok(d))
    };
    let urls_or = |k: &str, d: &str| -> Result<Vec<Url>, ConfigError> {
        parse_urls(k, &get(k).unwrap_or_else(|| d.into()))
    };
    let path = |k: &str| get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let initial_advertise_peer_urls =
        urls_or("initial-advertise-peer-urls", "http://localhost:2380")?;
    let initial_cluster_text = get("initial-cluster").unwrap_or_else(|| {
        initial_advertise_peer_urls
            .iter()
            .map(|u| format!("{name}={}", crate_url(u)))
            .collect::<Vec<_>>()
            .join(",")
    });
    let mut initial_cluster = Vec::new();
    for part in initial_cluster_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (n, u) = part.split_once('=').ok_or_else(|| {
            ConfigError(format!(
                "--initial-cluster: {part:?} is not of the form name=url"
            ))
        })?;
        initial_cluster.push((
            n.trim().to_string(),
            parse_url("initial-cluster", u.trim())?,
        ));
    }
    let state = match get("initial-cluster-state").as_deref().unwrap_or("new") {
        "new" => ClusterState::New,
        "existing" => ClusterState::Existing,
        other => return Err(ConfigError(format!("invalid value {other:?} for flag -initial-cluster-state: valid values are \"new\", \"existing\""))),
    };
    let tls = |prefix: &str| -> Result<TlsConfig, ConfigError> {
        Ok(TlsConfig {
            cert_file: path(&format!("{prefix}cert-file")),
            key_file: path(&format!("{prefix}key-file")),
            client_cert_auth: bool_or(&format!("{prefix}client-cert-auth"), false)?,
            trusted_ca_file: path(&format!("{prefix}trusted-ca-file")),
            auto_tls: bool_or(&format!("{prefix}auto-tls"), false)?,
        })
    };
    let debug = bool_or("debug", false)?;
    // Unless set, 2 ms or less than a heartbeat, whichever is shorter (etcd accepts heartbeats
    // of 1 and 2 ms); set explicitly, it must be below the heartbeat.
    let heartbeat_interval_ms = u64_or("heartbeat-interval", 100)?;
    let leader_sync_delay_ms = if get("experimental-leader-sync-delay").is_some() {
        u64_or("experimental-leader-sync-delay", 2)?
    } else {
        2.min(heartbeat_interval_ms.saturating_sub(1))
    };
    let cfg = Config {
        data_dir: path("data-dir").unwrap_or_else(|| PathBuf::from(format!("{name}.etcd"))),
        wal_dir: path("wal-dir"),
        snapshot_count: u64_or("snapshot-count", 100_000)?,
        leader_sync_delay_ms,
        heartbeat_interval_ms,
        election_timeout_ms: u64_or("election-timeout", 1000)?,
        listen_peer_urls: urls_or("listen-peer-urls", "http://localhost:2380")?,
        listen_client_urls: urls_or("listen-client-urls", "http://localhost:2379")?,
        advertise_client_urls: urls_or("advertise-client-urls", "http://localhost:2379")?,
        initial_advertise_peer_urls,
        initial_cluster,
        initial_cluster_state: state,
        initial_cluster_token: get("initial-cluster-token")
            .unwrap_or_else(|| "etcd-cluster".into()),
        max_snapshots: u64_or("max-snapshots", 5)? as u32,
        max_wals: u64_or("max-wals", 5)? as u32,
        cors: get("cors").map(|v| comma_list(&v)).unwrap_or_default(),
        max_txn_ops: u64_or("max-txn-ops", 128)? as usize,
        watch_progress_notify_interval: match get("experimental-watch-progress-notify-interval") {
            Some(v) => parse_go_duration("experimental-watch-progress-notify-interval", &v)?,
            None => std::time::Duration::from_secs(600),
        },
        max_request_bytes: u64_or("max-request-bytes", 1_572_864)? as usize,
        quota_backend_bytes: u64_or("quota-backend-bytes", 0)?,
        backend_cache_bytes: u64_or(
            "experimental-backend-cache-bytes",
            crate::mvcc::DEFAULT_CACHE_BYTES as u64,
        )? as usize,
        restore_v3_snapshot: path("experimental-restore-v3-snapshot"),
        discovery: get("discovery").filter(|v| !v.is_empty()),
        discovery_srv: get("discovery-srv").filter(|v| !v.is_empty()),
        discovery_dns: get("discovery-dns").filter(|v| !v.is_empty()),
        strict_reconfig_check: bool_or("strict-reconfig-check", true)?,
        rejoin_when_damaged: bool_or("experimental-rejoin-when-damaged", true)?,
        enable_v2: bool_or("enable-v2", true)?,
        client_tls: tls("")?,
        peer_tls: tls("peer-")?,
        cipher_suites: get("cipher-suites")
            .map(|v| comma_list(&v))
            .unwrap_or_default(),
        logger: get("logger").unwrap_or_else(|| "zap".into()),
        log_outputs: get("log-outputs")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_else(|| vec!["default".into()]),
        log_level: if debug {
            "debug".into()
        } else {
            get("log-level").unwrap_or_else(|| "info".into())
        },
        log_format: get("log-format").unwrap_or_else(|| "text".into()),
        rng_seed: get("rng-seed")
            .map(|v| parse_u64("rng-seed", &v))
            .transpose()?,
        name,
    };
    if bool_or("force-new-cluster", false)? {
        return Err(ConfigError(
            "--force-new-cluster is not supported by detcd".into(),
        ));
    }
    let ways = usize::from(get("initial-cluster").is_some())
        + usize::from(cfg.discovery.is_some())
        + usize::from(cfg.discovery_srv.is_some());
    if ways > 1 {
        return Err(ConfigError("multiple discovery or bootstrap flags are set: choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"".into()));
    }
    if let Some(f) = get("discovery-fallback") {
        if f == "proxy" {
            return Err(ConfigError(
                "--discovery-fallback=proxy: detcd has no proxy mode; use exit".into(),
            ));
        } else if f != "exit" {
            return Err(ConfigError(format!("invalid value {f:?} for flag -discovery-fallback: valid values are \"exit\", \"proxy\"")));
        }
    }
    if get("discovery-proxy").is_some_and(|v| !v.is_empty()) {
        return Err(ConfigError(
            "--discovery-proxy is not supported by detcd".into(),
        ));
    }
    validate(&cfg, &mut warnings)?;
    Ok((cfg, warnings))
}

/// A comma-separated flag value: trimmed, empty items dropped.
fn comma_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn crate_url(u: &Url) -> String {
    let mut s = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(p) = u.port() {
        s.push_str(&format!(":{p}"));
    }
    s
}

fn validate(c: &Config, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    if c.heartbeat_interval_ms == 0 {
        return Err(ConfigError(
            "--heartbeat-interval must be greater than 0".into(),
        ));
    }
    if 5 * c.heartbeat_interval_ms > c.election_timeout_ms {
        return Err(ConfigError(format!(
            "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
            c.election_timeout_ms, c.heartbeat_interval_ms
        )));
    }
    if c.election_timeout_ms > 50_000 {
        return Err(ConfigError(format!(
            "--election-timeout[{}ms] is too long, and should be set less than 50000ms",
            c.election_timeout_ms
        )));
    }
    if c.leader_sync_delay_ms >= c.heartbeat_interval_ms {
        return Err(ConfigError(format!(
            "--experimental-leader-sync-delay[{}ms] must be less than --heartbeat-interval[{}ms]",
            c.leader_sync_delay_ms, c.heartbeat_interval_ms
        )));
    }
    if c.snapshot_count == 0 {
        return Err(ConfigError(
            "--snapshot-count must be greater than 0".into(),
        ));
    }
    let mut mine: Vec<String> = c
        .initial_cluster
        .iter()
        .filter(|(n, _)| *n == c.name)
        .map(|(_, u)| crate_url(u))
        .collect();
    let mut adv: Vec<String> = c
        .initial_advertise_peer_urls
        .iter()
        .map(crate_url)
        .collect();
    mine.sort();
    adv.sort();
    if mine.is_empty() {
        return Err(ConfigError(format!(
            "couldn't find local name {:?} in the initial cluster configuration (--initial-cluster)",
            c.name
        )));
    }
    if mine != adv {
        return Err(ConfigError(format!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={} (\"{}\" does not match)",
            c.name,
            mine.join(","),
            adv.join(","),
            adv.join(",")
        )));
    }
    let all_urls: Vec<String> = c
        .initial_cluster
        .iter()
        .map(|(_, u)| crate_url(u))
        .collect();
    for (i, u) in all_urls.iter().enumerate() {
        if all_urls[..i].contains(u) {
            return Err(ConfigError(format!(
                "--initial-cluster: peer URL {u} is listed twice"
            )));
        }
    }
    for (side, tls, urls) in [
        (
            "client",
            &c.client_tls,
            c.listen_client_urls
                .iter()
                .chain(&c.advertise_client_urls)
                .collect::<Vec<_>>(),
        ),
        (
            "peer",
            &c.peer_tls,
            c.listen_peer_urls
                .iter()
                .chain(&c.initial_advertise_peer_urls)
                .collect::<Vec<_>>(),
        ),
    ] {
        let https = urls.iter().any(|u| u.scheme() == "https");
        let flag = if side == "peer" { "--peer-" } else { "--" };
        if https && tls.cert_file.is_none() && !tls.auto_tls {
            return Err(ConfigError(format!(
                "https {side} URLs need {flag}cert-file and {flag}key-file, or {flag}auto-tls"
            )));
        }
        if tls.client_cert_auth && tls.trusted_ca_file.is_none() {
            return Err(ConfigError(format!(
                "{flag}client-cert-auth needs {flag}trusted-ca-file"
            )));
        }
        if !https && (tls.cert_file.is_some() || tls.auto_tls) {
            warnings.push(format!(
                "{side} TLS settings are ignored: every {side} URL is http"
            ));
        }
    }
    if !["text", "json"].contains(&c.log_format.as_str()) {
        return Err(ConfigError(format!(
            "--log-format {:?}: expected text or json",
            c.log_format
        )));
    }
    Ok(())
}

impl Config {
    /// Where the WAL lives.
    pub fn wal_path(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("member").join("wal"))
    }

    /// Where snapshots live.
    pub fn snap_path(&self) -> PathBuf {
        self.data_dir.join("member").join("snap")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(s: &str) -> Vec<String> {
        // A tiny shell-word splitter for test command lines (double quotes only).
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut any = false;
        for ch in s.chars() {
            match ch {
                '"' => {
                    quoted = !quoted;
                    any = true;
                }
                ' ' if !quoted => {
                    if any {
                        out.push(std::mem::take(&mut cur));
                        any = false;
                    }
                }
                c => {
                    cur.push(c);
                    any = true;
                }
            }
        }
        if any {
            out.push(cur);
        }
        out
    }

    fn run(cmd: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let no_file = |p: &Path| -> std::io::Result<String> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                p.display().to_string(),
            ))
        };
        match parse(&args(cmd), &|k| env.get(k).cloned(), &no_file)? {
            Parsed::Run(c, _) => Ok(*c),
            _ => panic!("not a run"),
        }
    }

    #[test]
    fn the_tutorials_first_member_parses() {
        let c = run(r#"--name autumn-client0 -advertise-client-urls http://192.167.0.168:2379 -listen-client-urls http://0.0.0.0:2379 -initial-advertise-peer-urls http://192.167.0.168:2380 -listen-peer-urls http://0.0.0.0:2380 -initial-cluster-token etcd-cluster -initial-cluster "autumn-client0=http://192.167.0.168:2380" -initial-cluster-state new"#, &[]).unwrap();
        assert_eq!(c.name, "autumn-client0");
        assert_eq!(c.initial_cluster.len(), 1);
        assert_eq!(c.initial_cluster_state, ClusterState::New);
        assert_eq!(c.data_dir, PathBuf::from("autumn-client0.etcd"));
        assert_eq!(
            c.wal_path(),
            PathBuf::from("autumn-client0.etcd/member/wal")
        );
    }

    #[test]
    fn the_tutorials_existing_member_parses() {
        let c = run(r#"-name autumn-client2 -advertise-client-urls http://192.167.0.172:2579 -listen-client-urls http://0.0.0.0:2379 -initial-advertise-peer-urls http://192.167.0.172:2580 -listen-peer-urls http://0.0.0.0:2380 -initial-cluster-token etcd-cluster -initial-cluster "autumn-client0=http://192.167.0.168:2380,autumn-client1=http://192.167.0.170:2480,autumn-client2=http://192.167.0.172:2580" -initial-cluster-state existing"#, &[]).unwrap();
        assert_eq!(c.initial_cluster.len(), 3);
        assert_eq!(c.initial_cluster_state, ClusterState::Existing);
    }

    #[test]
    fn environment_configures_and_flags_win() {
        let env = [
            ("ETCD_NAME", "node1"),
            ("ETCD_DATA_DIR", "/var/lib/etcd/default.etcd"),
            ("ETCD_SNAPSHOT_COUNT", "10000"),
            ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://node1:2380"),
            (
                "ETCD_INITIAL_CLUSTER",
                "node1=http://node1:2380,node2=http://node2:2380",
            ),
            ("ETCD_INITIAL_CLUSTER_TOKEN", "mritd-etcd-cluster"),
        ];
        let c = run("", &env).unwrap();
        assert_eq!(c.snapshot_count, 10000);
        assert_eq!(c.initial_cluster_token, "mritd-etcd-cluster");
        let c = run("--snapshot-count=5", &env).unwrap();
        assert_eq!(c.snapshot_count, 5);
    }

    #[test]
    fn the_watch_progress_interval_is_a_go_duration() {
        use std::time::Duration;
        let flag = |v: &str| {
            run(
                &format!("--experimental-watch-progress-notify-interval={v}"),
                &[],
            )
            .map(|c| c.watch_progress_notify_interval)
        };
        assert_eq!(
            run("", &[]).unwrap().watch_progress_notify_interval,
            Duration::from_secs(600)
        );
        assert_eq!(flag("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(flag("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(flag("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(flag("0").unwrap(), Duration::ZERO);
        for bad in ["10", "ten", "5x", "-1s", ""] {
            assert_eq!(
                flag(bad).unwrap_err().0,
                format!(
                    "invalid value {bad:?} for flag -experimental-watch-progress-notify-interval: parse error"
                )
            );
        }
    }

    #[test]
    fn the_leader_sync_delay_defaults_to_2_ms_and_stays_below_a_heartbeat() {
        assert_eq!(run("", &[]).unwrap().leader_sync_delay_ms, 2);
        // A 1 or 2 ms heartbeat still works without the flag.
        let c = run("--heartbeat-interval 2 --election-timeout 20", &[]).unwrap();
        assert_eq!(c.leader_sync_delay_ms, 1);
        let c = run("--heartbeat-interval 1 --election-timeout 10", &[]).unwrap();
        assert_eq!(c.leader_sync_delay_ms, 0);
        assert_eq!(
            run("--experimental-leader-sync-delay 0", &[])
                .unwrap()
                .leader_sync_delay_ms,
            0
        );
        let env = [("ETCD_EXPERIMENTAL_LEADER_SYNC_DELAY", "7")];
        assert_eq!(run("", &env).unwrap().leader_sync_delay_ms, 7);
        assert_eq!(
            run("--experimental-leader-sync-delay 100", &[])
                .unwrap_err()
                .0,
            "--experimental-leader-sync-delay[100ms] must be less than --heartbeat-interval[100ms]"
        );
        assert_eq!(
            run("--experimental-leader-sync-delay=-1", &[])
                .unwrap_err()
                .0,
            "invalid value \"-1\" for flag -experimental-leader-sync-delay: parse error"
        );
    }

    #[test]
    fn bad_input_is_one_clear_error() {
        assert_eq!(
            run("--nmae x", &[]).unwrap_err().0,
            "flag provided but not defined: -nmae"
        );
        assert_eq!(
            run("--snapshot-count abc", &[]).unwrap_err().0,
            "invalid value \"abc\" for flag -snapshot-count: parse error"
        );
        assert!(run("stray", &[])
            .unwrap_err()
            .0
            .contains("'stray' is not a valid flag"));
        assert!(run("--heartbeat-interval 300", &[])
            .unwrap_err()
            .0
            .contains("at least as 5 times"));
        assert!(run("--initial-cluster-state maybe", &[])
            .unwrap_err()
            .0
            .contains("valid values"));
        assert!(run("--name a --initial-cluster b=http://x:1", &[])
            .unwrap_err()
            .0
            .contains("couldn't find local name"));
        assert!(run("--name", &[])
            .unwrap_err()
            .0
            .contains("needs an argument"));
        assert!(run("--listen-client-urls foo", &[]).is_err());
    }

    #[test]
    fn bool_flags_never_take_the_next_argument() {
        let c = run(
            "--strict-reconfig-check --name x --initial-cluster x=http://localhost:2380",
            &[],
        )
        .unwrap();
        assert!(c.strict_reconfig_check);
        assert_eq!(c.name, "x");
        let c = run("--strict-reconfig-check=false --enable-v2=true", &[]).unwrap();
        assert!(!c.strict_reconfig_check);
    }

    #[test]
    fn config_file_is_read_and_wins() {
        let yaml = "name: infra9\ndata-dir: /d\ninitial-advertise-peer-urls: http://10.0.0.9:2380\ninitial-cluster: infra9=http://10.0.0.9:2380\nsnapshot-count: 42\nclient-transport-security:\n  client-cert-auth: false\n";
        let read = |_: &Path| Ok(yaml.to_string());
        let p = parse(
            &args("--config-file /etc/etcd.yaml --name ignored"),
            &|_| None,
            &read,
        )
        .unwrap();
        let Parsed::Run(c, w) = p else { panic!() };
        assert_eq!(c.name, "infra9");
        assert_eq!(c.snapshot_count, 42);
        assert!(!w.is_empty());
        let bad = |_: &Path| Ok("nmae: x\n".to_string());
        assert!(parse(&args("--config-file f"), &|_| None, &bad)
            .unwrap_err()
            .0
            .contains("unknown key"));
    }

    #[test]
    fn config_file_values_read_as_etcd_writes_them() {
        let file = |text: &'static str| {
            let read = move |_: &Path| Ok(text.to_string());
            parse(&args("--config-file f"), &|_| None, &read)
        };
        let yaml = "name: 'infra1'\n\
                    initial-cluster: infra1=http://10.0.0.1:2380\n\
                    initial-advertise-peer-urls: http://10.0.0.1:2380\n\
                    listen-client-urls: [http://127.0.0.1:2379, http://10.0.0.1:2379]\n\
                    cors:\n  - http://a.example\n  - http://b.example\n\
                    discovery:\n\
                    snapshot-count: 0x10\n\
                    strict-reconfig-check: True\n\
                    enable-v2: true\n\
                    peer-transport-security:\n  auto-tls: true\n";
        let Parsed::Run(c, _) = file(yaml).unwrap() else {
            panic!()
        };
        assert_eq!(c.name, "infra1");
        assert_eq!(c.listen_client_urls.len(), 2);
        assert_eq!(c.cors, ["http://a.example", "http://b.example"]);
        assert_eq!(c.discovery, None);
        assert_eq!(c.snapshot_count, 16);
        assert!(c.strict_reconfig_check && c.enable_v2);
        assert!(c.peer_tls.auto_tls && !c.client_tls.auto_tls);
        for (bad, says) in [
            ("- name\n", "expected a mapping"),
            ("", "expected a mapping"),
            ("name: a\n---\nname: b\n", "more than one YAML document"),
            ("name: [a\n", "config file f: "),
            ("client-transport-security:\n  nope: 1\n", "unknown key"),
        ] {
            let e = file(bad).unwrap_err().0;
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn random_argument_vectors_never_panic() {
        // Seeded, so a failure reproduces; the seed is in the assertion message.
        let seed = 0x5eed_u64;
        let words = [
            "--name",
            "-name=x",
            "--snapshot-count",
            "12",
            "--x",
            "=",
            "--",
            "-",
            "--heartbeat-interval=1",
            "http://a:1",
            "--initial-cluster",
            "a=b",
            "--enable-v2",
        ];
        let mut state = seed;
        for _ in 0..2000 {
            let n = (state % 6) as usize;
            let mut v = Vec::new();
            for _ in 0..n {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v.push(words[(state >> 33) as usize % words.len()].to_string());
            }
            let r = std::panic::catch_unwind(|| parse(&v, &|_| None, &|_| Ok(String::new())));
            assert!(r.is_ok(), "seed {seed}: panicked on {v:?}");
        }
    }
}
