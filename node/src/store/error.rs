//! etcd's v2 errors: codes, messages, HTTP statuses and the exact JSON body.

use std::fmt;

/// An etcd v2 error (`{"errorCode":..,"message":..,"cause":..,"index":..}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdError {
    /// etcd's error code.
    pub code: u32,
    /// What went wrong, in detail (a path, a comparison...).
    pub cause: String,
    /// The store index when it happened (0 for request errors).
    pub index: u64,
}

/// Key not found.
pub const KEY_NOT_FOUND: u32 = 100;
/// Compare failed.
pub const TEST_FAILED: u32 = 101;
/// Not a file.
pub const NOT_FILE: u32 = 102;
/// Not a directory.
pub const NOT_DIR: u32 = 104;
/// Key already exists.
pub const NODE_EXIST: u32 = 105;
/// Root is read only.
pub const ROOT_RONLY: u32 = 107;
/// Directory not empty.
pub const DIR_NOT_EMPTY: u32 = 108;
/// prevValue is required.
pub const PREV_VALUE_REQUIRED: u32 = 201;
/// TTL is not a number.
pub const TTL_NAN: u32 = 202;
/// Index is not a number.
pub const INDEX_NAN: u32 = 203;
/// Invalid field.
pub const INVALID_FIELD: u32 = 209;
/// Invalid form.
pub const INVALID_FORM: u32 = 210;
/// The request requires user authentication (v2 auth).
pub const UNAUTHORIZED: u32 = 110;
/// Value provided on refresh.
pub const REFRESH_VALUE: u32 = 211;
/// TTL required on refresh.
pub const REFRESH_TTL_REQUIRED: u32 = 212;
/// Raft internal error (timeouts).
pub const RAFT_INTERNAL: u32 = 300;
/// During leader election.
pub const LEADER_ELECT: u32 = 301;
/// Watcher cleared by recovery.
pub const WATCHER_CLEARED: u32 = 400;
/// The event history no longer holds the index.
pub const EVENT_INDEX_CLEARED: u32 = 401;

/// etcd's message for a code.
pub fn message(code: u32) -> &'static str {
    match code {
        100 => "Key not found",
        101 => "Compare failed",
        102 => "Not a file",
        103 => "Reached the max number of peers in the cluster",
        104 => "Not a directory",
        105 => "Key already exists",
        106 => "The prefix of given key is a keyword in etcd",
        107 => "Root is read only",
        108 => "Directory not empty",
        109 => "Peer address has existed",
        110 => "The request requires user authentication",
        200 => "Value is Required in POST form",
        201 => "PrevValue is Required in POST form",
        202 => "The given TTL in POST form is not a number",
        203 => "The given index in POST form is not a number",
        204 => "Value or TTL is required in POST form",
        205 => "The given timeout in POST form is not a number",
        206 => "Name is required in POST form",
        207 => "Index or value is required",
        208 => "Index and value cannot both be specified",
        209 => "Invalid field",
        210 => "Invalid POST form",
        211 => "Value provided on refresh",
        212 => "A TTL must be provided on refresh",
        300 => "Raft Internal Error",
        301 => "During Leader Election",
        400 => "watcher is cleared due to etcd recovery",
        401 => "The event in requested index is outdated and cleared",
        _ => "Unknown error",
    }
}

impl EtcdError {
    /// An error with a cause and the index it happened at.
    pub fn new(code: u32, cause: impl Into<String>, index: u64) -> EtcdError {
        EtcdError {
            code,
            cause: cause.into(),
            index,
        }
    }

    /// etcd's HTTP status for the code.
    pub fn http_status(&self) -> u16 {
        match self.code {
            KEY_NOT_FOUND => 404,
            NOT_FILE | DIR_NOT_EMPTY => 403,
            UNAUTHORIZED => 401,
            TEST_FAILED | NODE_EXIST => 412,
            RAFT_INTERNAL | LEADER_ELECT => 500,
            _ => 400,
        }
    }

    /// The body etcd sends, with its trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = format!(
            "{{\"errorCode\":{},\"message\":{}",
            self.code,
            json_str(message(self.code))
        );
        if !self.cause.is_empty() {
            s.push_str(&format!(",\"cause\":{}", json_str(&self.cause)));
        }
        s.push_str(&format!(",\"index\":{}}}\n", self.index));
        s
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({}) [{}]",
            self.code,
            message(self.code),
            self.cause,
            self.index
        )
    }
}

impl std::error::Error for EtcdError {}

/// A JSON string literal as Go's encoder writes it (it escapes <, > and & too).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
