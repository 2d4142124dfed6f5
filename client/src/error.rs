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
        }
    }
}

impl std::error::Error for Error {}
