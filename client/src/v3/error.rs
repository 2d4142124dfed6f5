//! etcd's v3 errors: a gRPC status code and etcd's exact message, and which of etcd's errors
//! (`rpctypes`) the message names.

/// A gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum GrpcCode {
    Ok,
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl GrpcCode {
    fn from_tonic(c: tonic::Code) -> GrpcCode {
        use tonic::Code as C;
        match c {
            C::Ok => GrpcCode::Ok,
            C::Cancelled => GrpcCode::Cancelled,
            C::Unknown => GrpcCode::Unknown,
            C::InvalidArgument => GrpcCode::InvalidArgument,
            C::DeadlineExceeded => GrpcCode::DeadlineExceeded,
            C::NotFound => GrpcCode::NotFound,
            C::AlreadyExists => GrpcCode::AlreadyExists,
            C::PermissionDenied => GrpcCode::PermissionDenied,
            C::ResourceExhausted => GrpcCode::ResourceExhausted,
            C::FailedPrecondition => GrpcCode::FailedPrecondition,
            C::Aborted => GrpcCode::Aborted,
            C::OutOfRange => GrpcCode::OutOfRange,
            C::Unimplemented => GrpcCode::Unimplemented,
            C::Internal => GrpcCode::Internal,
            C::Unavailable => GrpcCode::Unavailable,
            C::DataLoss => GrpcCode::DataLoss,
            C::Unauthenticated => GrpcCode::Unauthenticated,
        }
    }
}

/// Which of etcd 3.4's errors an answer is, told by its message (etcd's own client does the
/// same: the code alone is ambiguous, e.g. Unavailable is both "no leader", which was never
/// proposed, and "request timed out", which may still commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// "etcdserver: key is not provided"
    EmptyKey,
    /// "etcdserver: key not found"
    KeyNotFound,
    /// "etcdserver: value is provided"
    ValueProvided,
    /// "etcdserver: lease is provided"
    LeaseProvided,
    /// "etcdserver: too many operations in txn request"
    TooManyOps,
    /// "etcdserver: duplicate key given in txn request"
    DuplicateKey,
    /// "etcdserver: mvcc: required revision has been compacted"
    Compacted,
    /// "etcdserver: mvcc: required revision is a future revision"
    FutureRev,
    /// "etcdserver: mvcc: database space exceeded"
    NoSpace,
    /// "etcdserver: requested lease not found"
    LeaseNotFound,
    /// "etcdserver: lease already exists"
    LeaseExist,
    /// "etcdserver: too large lease TTL"
    LeaseTtlTooLarge,
    /// "etcdserver: request is too large"
    RequestTooLarge,
    /// "etcdserver: too many requests"
    TooManyRequests,
    /// "etcdserver: permission denied"
    PermissionDenied,
    /// "etcdserver: invalid auth token"
    InvalidAuthToken,
    /// "etcdserver: authentication failed, invalid user ID or password"
    AuthFailed,
    /// "etcdserver: authentication is not enabled"
    AuthNotEnabled,
    /// "etcdserver: no leader" (not proposed: safe to send elsewhere)
    NoLeader,
    /// "etcdserver: not leader"
    NotLeader,
    /// "etcdserver: leader changed" (may have been applied)
    LeaderChanged,
    /// "etcdserver: not capable"
    NotCapable,
    /// "etcdserver: server stopped" (may have been applied)
    Stopped,
    /// "etcdserver: request timed out" and its variants (may still be applied)
    Timeout,
    /// "etcdserver: unhealthy cluster"
    Unhealthy,
    /// "etcdserver: corrupt cluster"
    Corrupt,
    /// "etcdserver: rpc not supported for learner"
    NotSupportedForLearner,
    /// Any other answer (membership and auth management errors, gRPC's own).
    Other,
}

impl ErrorKind {
    /// etcd's error for a message (etcd's exact text; `Other` for anything else).
    pub fn from_message(m: &str) -> ErrorKind {
        use ErrorKind as K;
        match m {
            "etcdserver: key is not provided" => K::EmptyKey,
            "etcdserver: key not found" => K::KeyNotFound,
            "etcdserver: value is provided" => K::ValueProvided,
            "etcdserver: lease is provided" => K::LeaseProvided,
            "etcdserver: too many operations in txn request" => K::TooManyOps,
            "etcdserver: duplicate key given in txn request" => K::DuplicateKey,
            "etcdserver: mvcc: required revision has been compacted" => K::Compacted,
            "etcdserver: mvcc: required revision is a future revision" => K::FutureRev,
            "etcdserver: mvcc: database space exceeded" => K::NoSpace,
            "etcdserver: requested lease not found" => K::LeaseNotFound,
            "etcdserver: lease already exists" => K::LeaseExist,
            "etcdserver: too large lease TTL" => K::LeaseTtlTooLarge,
            "etcdserver: request is too large" => K::RequestTooLarge,
            "etcdserver: too many requests" => K::TooManyRequests,
            "etcdserver: permission denied" => K::PermissionDenied,
            "etcdserver: invalid auth token" => K::InvalidAuthToken,
            "etcdserver: authentication failed, invalid user ID or password" => K::AuthFailed,
            "etcdserver: authentication is not enabled" => K::AuthNotEnabled,
            "etcdserver: no leader" => K::NoLeader,
            "etcdserver: not leader" => K::NotLeader,
            "etcdserver: leader changed" => K::LeaderChanged,
            "etcdserver: not capable" => K::NotCapable,
            "etcdserver: server stopped" => K::Stopped,
            "etcdserver: unhealthy cluster" => K::Unhealthy,
            "etcdserver: corrupt cluster" => K::Corrupt,
            "etcdserver: rpc not supported for learner" => K::NotSupportedForLearner,
            m if m.starts_with("etcdserver: request timed out") => K::Timeout,
            _ => K::Other,
        }
    }

    /// Whether a write answered with this may or may not have been applied.
    pub fn is_indeterminate(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::LeaderChanged | ErrorKind::Stopped
        )
    }

    /// Whether the request was refused before it was proposed, so sending it to another
    /// member cannot apply it twice.
    pub(crate) fn refused_before_proposal(self) -> bool {
        matches!(
            self,
            ErrorKind::NoLeader | ErrorKind::NotCapable | ErrorKind::NotSupportedForLearner
        )
    }
}

/// A gRPC status from the server: etcd's code and exact message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcError {
    /// The gRPC code.
    pub code: GrpcCode,
    /// etcd's message, as sent.
    pub message: String,
    /// Which of etcd's errors it is.
    pub kind: ErrorKind,
}

impl GrpcError {
    /// An error with etcd's message `message` (as etcd would have sent it).
    pub(crate) fn new(code: GrpcCode, message: &str) -> GrpcError {
        GrpcError {
            code,
            message: message.to_string(),
            kind: ErrorKind::from_message(message),
        }
    }
}

impl std::fmt::Display for GrpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gRPC {:?}: {}", self.code, self.message)
    }
}

/// What a failed call's status means for the client.
pub(crate) enum Failed {
    /// An answer from the server (etcd's or gRPC's own error).
    Answer(GrpcError),
    /// The connection broke or the stream was reset: no answer (the request may or may not
    /// have reached the server).
    Transport(String),
}

/// Tell an answer from a transport failure. tonic turns a broken connection into `Unknown`
/// (or `Internal`/`Cancelled`/`Unavailable` for HTTP/2 resets) with hyper's text; every
/// status etcd sends itself carries an `etcdserver:` message.
pub(crate) fn classify(s: &tonic::Status) -> Failed {
    let code = GrpcCode::from_tonic(s.code());
    let transport_code = matches!(
        code,
        GrpcCode::Unknown
            | GrpcCode::Internal
            | GrpcCode::Cancelled
            | GrpcCode::Unavailable
            | GrpcCode::DeadlineExceeded
    );
    if transport_code && !s.message().starts_with("etcdserver:") {
        return Failed::Transport(format!("{:?}: {}", s.code(), s.message()));
    }
    Failed::Answer(GrpcError::new(code, s.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_messages_and_transport_failures_are_told_apart() {
        let s = tonic::Status::new(
            tonic::Code::Unavailable,
            "etcdserver: request timed out, possibly due to previous leader failure",
        );
        match classify(&s) {
            Failed::Answer(g) => {
                assert_eq!(
                    (g.code, g.kind),
                    (GrpcCode::Unavailable, ErrorKind::Timeout)
                );
                assert!(g.kind.is_indeterminate());
            }
            Failed::Transport(t) => panic!("an answer taken for a transport failure: {t}"),
        }
        let s = tonic::Status::new(tonic::Code::Unavailable, "etcdserver: no leader");
        assert!(matches!(classify(&s), Failed::Answer(g) if g.kind.refused_before_proposal()));
        let s = tonic::Status::new(
            tonic::Code::Unknown,
            "connection closed before message completed",
        );
        assert!(matches!(classify(&s), Failed::Transport(_)));
        let s = tonic::Status::new(tonic::Code::InvalidArgument, "grpc: something else");
        assert!(matches!(classify(&s), Failed::Answer(g) if g.kind == ErrorKind::Other));
    }
}
