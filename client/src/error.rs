//! The client's errors.

/// etcd's error JSON (`{"errorCode":100,"message":"Key not found","cause":"/a","index":7}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct EtcdError {
    /// etcd's error code (100 key not found, 101 compare failed, 105 key exists, 110
    /// unauthorized, 401 event index cleared, ...).
    #[serde(rename = "errorCode")]
    pub error_code: u32,
    /// etcd's message for the code.
    #[serde(default)]
    pub message: String,
    /// What it applies to.
    #[serde(default)]
    pub cause: String,
    /// The store index when it happened.
    #[serde(default)]
    pub index: u64,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// etcd answered with one of its errors.
    Etcd(EtcdError),
    /// Another HTTP error (e.g. 401 from the auth API, 500 during an election).
    Http {
        /// Status code.
        status: u16,
        /// The body.
        body: String,
    },
    /// No endpoint could be reached: the request was certainly not applied.
    Unavailable(String),
    /// The request was sent but no answer came in time: it may or may not have been applied.
    Indeterminate(String),
    /// The answer could not be understood.
    Decode(String),
    /// Bad client configuration.
    Config(String),
    /// A v3 (gRPC) call was answered with a status: etcd's code and exact message, and which
    /// of etcd's errors it is.
    Grpc(crate::v3::GrpcError),
    /// A v3 watch was cancelled because the revision it (re)started from has been compacted:
    /// events from before `compact_revision` are gone. Read the current state and watch
    /// again from its revision + 1.
    Compacted {
        /// The revision the store was compacted at.
        compact_revision: i64,
    },
    /// A v3 watch was cancelled by the server for another reason (etcd's `cancel_reason`,
    /// e.g. a permission that was revoked).
    WatchCanceled(String),
}

impl Error {
    /// etcd's error code, if etcd answered with one.
    pub fn code(&self) -> Option<u32> {
        match self {
            Error::Etcd(e) => Some(e.error_code),
            _ => None,
        }
    }
    /// Whether this is etcd's 100 "Key not found".
    pub fn is_key_not_found(&self) -> bool {
        self.code() == Some(100)
    }

    /// Which of etcd's v3 errors this is, if a v3 call was answered with one.
    pub fn kind(&self) -> Option<crate::v3::ErrorKind> {
        match self {
            Error::Grpc(g) => Some(g.kind),
            _ => None,
        }
    }

    /// Whether a revision was compacted away: a v3 read at a compacted revision, or a watch
    /// cancelled for it.
    pub fn is_compacted(&self) -> bool {
        matches!(self, Error::Compacted { .. })
            || self.kind() == Some(crate::v3::ErrorKind::Compacted)
    }

    /// Whether a write may or may not have been applied: sent without an answer, or answered
    /// with one of etcd's timeouts (the proposal may still commit) or "leader changed".
    pub fn is_indeterminate(&self) -> bool {
        match self {
            Error::Indeterminate(_) => true,
            Error::Grpc(g) => g.kind.is_indeterminate(),
            _ => false,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Etcd(e) => write!(
                f,
                "etcd error {}: {} ({}) [{}]",
                e.error_code, e.message, e.cause, e.index
            ),
            Error::Http { status, body } => write!(f, "HTTP {status}: {}", body.trim()),
            Error::Unavailable(e) => write!(f, "no endpoint reachable: {e}"),
            Error::Indeterminate(e) => {
                write!(f, "no answer (the request may have been applied): {e}")
            }
            Error::Decode(e) => write!(f, "undecodable answer: {e}"),
            Error::Config(e) => write!(f, "client configuration: {e}"),
            Error::Grpc(g) => write!(f, "{g}"),
            Error::Compacted { compact_revision } => write!(
                f,
                "watch canceled: required revision has been compacted (compact revision {compact_revision})"
            ),
            Error::WatchCanceled(r) => write!(f, "watch canceled: {r}"),
        }
    }
}

impl std::error::Error for Error {}
