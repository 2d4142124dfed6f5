//! etcd's v2 keys request parsing, rule for rule (etcd 3.4's `parseKeyRequest` and Go's
//! `ParseForm`/`ServeMux` behaviour): pure, so it is tested without a server.

use crate::store::{
    Command, EtcdError, WriteMethod, INDEX_NAN, INVALID_FIELD, INVALID_FORM, PREV_VALUE_REQUIRED,
    REFRESH_TTL_REQUIRED, REFRESH_VALUE, TTL_NAN,
};

/// The URL prefix of the keys API.
pub const KEYS_PREFIX: &str = "/v2/keys";

/// A watch request's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitSpec {
    /// `waitIndex` (None = from the next index).
    pub index: Option<u64>,
    /// `recursive=true`.
    pub recursive: bool,
    /// `stream=true`.
    pub stream: bool,
}

/// A parsed keys request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysRequest {
    /// GET or HEAD.
    Get {
        /// Cleaned key.
        key: String,
        /// `recursive=true`.
        recursive: bool,
        /// `sorted=true`.
        sorted: bool,
        /// `quorum=true`: linearizable.
        quorum: bool,
        /// `wait=true`.
        wait: Option<WaitSpec>,
        /// HEAD: no body.
        head: bool,
    },
    /// PUT, POST or DELETE.
    Write {
        /// The replicated command.
        cmd: Command,
        /// `noValueOnSuccess=true`.
        no_value: bool,
    },
}

/// Why a request is answered without reaching the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// etcd's error JSON.
    Etcd(EtcdError),
    /// 405 with `Allow: HEAD,GET,PUT,POST,DELETE`.
    MethodNotAllowed,
    /// 301 to the cleaned path (Go's ServeMux).
    Redirect(String),
}

/// The methods the keys API allows, as etcd lists them.
pub const ALLOWED: &str = "HEAD,GET,PUT,POST,DELETE";

/// Go's `path.Clean`.
pub fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Go's `url.QueryUnescape` / `PathUnescape`: `%XX` escapes (and `+` as space in queries),
/// failing with Go's message on a bad escape.
pub fn unescape(s: &str, plus_is_space: bool) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(unhex);
                let lo = b.get(i + 2).copied().and_then(unhex);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                    }
                    _ => {
                        let end = (i + 3).min(b.len());
                        return Err(format!(
                            "invalid URL escape {:?}",
                            String::from_utf8_lossy(&b[i..end])
                        ));
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `url.ParseQuery`: pairs in order; the first error wins but parsing goes on.
fn parse_query(q: &str, into: &mut Vec<(String, String)>) -> Result<(), String> {
    let mut first_err = None;
    for part in q.split('&') {
        if part.is_empty() {
            continue;
        }
        if part.contains(';') {
            first_err.get_or_insert_with(|| "invalid semicolon separator in query".to_string());
            continue;
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match (unescape(k, true), unescape(v, true)) {
            (Ok(k), Ok(v)) => into.push((k, v)),
            (Err(e), _) | (_, Err(e)) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The request's form: body values (for form-encoded PUT/POST) before query values, as Go's
/// `r.Form` orders them.
struct Form(Vec<(String, String)>);

impl Form {
    fn has(&self, k: &str) -> bool {
        self.0.iter().any(|(n, _)| n == k)
    }
    fn value(&self, k: &str) -> String {
        self.0
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
    fn get_bool(&self, k: &str) -> Result<bool, ()> {
        match self.0.iter().find(|(n, _)| n == k) {
            None => Ok(false),
            Some((_, v)) => parse_go_bool(v).ok_or(()),
        }
    }
    fn get_u64(&self, k: &str) -> Result<u64, ()> {
        match self.0.iter().find(|(n, _)| n == k) {
            None => Ok(0),
            Some((_, v)) => v.parse::<u64>().map_err(|_| ()).and_then(|x| {
                if v.starts_with('+') {
                    Err(())
                } else {
                    Ok(x)
                }
            }),
        }
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn field(cause: &str) -> Reject {
    Reject::Etcd(EtcdError::new(INVALID_FIELD, cause, 0))
}

/// Parse a request to `/v2/keys...`. `path` is the raw (escaped) URI path, `query` the raw
/// query string.
pub fn parse(
    method: &str,
    path: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<KeysRequest, Reject> {
    // Go's ServeMux redirects to the cleaned path before any handler runs.
    let decoded =
        unescape(path, false).map_err(|e| Reject::Etcd(EtcdError::new(INVALID_FORM, e, 0)))?;
    let mut cleaned = clean(&decoded);
    if decoded.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    if cleaned != decoded {
        let mut loc = cleaned;
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            loc.push('?');
            loc.push_str(q);
        }
        return Err(Reject::Redirect(loc));
    }
    if !matches!(method, "HEAD" | "GET" | "PUT" | "POST" | "DELETE") {
        return Err(Reject::MethodNotAllowed);
    }
    let mut pairs = Vec::new();
    let mut form_err = None;
    let is_form = content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
        .unwrap_or(false);
    if matches!(method, "PUT" | "POST") && is_form {
        let text = String::from_utf8_lossy(body);
        if let Err(e) = parse_query(&text, &mut pairs) {
            form_err = Some(e);
        }
    }
    if let Err(e) = parse_query(query.unwrap_or(""), &mut pairs) {
        form_err.get_or_insert(e);
    }
    if let Some(e) = form_err {
        return Err(Reject::Etcd(EtcdError::new(INVALID_FORM, e, 0)));
    }
    let form = Form(pairs);
    let rest = decoded.strip_prefix(KEYS_PREFIX).unwrap_or("");
    let key = clean(&format!("/{rest}"));

    let prev_index = form.get_u64("prevIndex").map_err(|_| {
        Reject::Etcd(EtcdError::new(
            INDEX_NAN,
            "invalid value for \"prevIndex\"",
            0,
        ))
    })?;
    let wait_index = form.get_u64("waitIndex").map_err(|_| {
        Reject::Etcd(EtcdError::new(
            INDEX_NAN,
            "invalid value for \"waitIndex\"",
            0,
        ))
    })?;
    let b = |k: &str| {
        form.get_bool(k)
            .map_err(|_| field(&format!("invalid value for \"{k}\"")))
    };
    let recursive = b("recursive")?;
    let sorted = b("sorted")?;
    let wait = b("wait")?;
    let dir = b("dir")?;
    let quorum = b("quorum")?;
    let stream = b("stream")?;
    if wait && method != "GET" {
        return Err(field("\"wait\" can only be used with GET requests"));
    }
    let prev_value = form.value("prevValue");
    if form.has("prevValue") && prev_value.is_empty() {
        return Err(Reject::Etcd(EtcdError::new(
            PREV_VALUE_REQUIRED,
            "\"prevValue\" cannot be empty",
            0,
        )));
    }
    let no_value = b("noValueOnSuccess")?;
    let ttl =
        if form.value("ttl").is_empty() {
            None
        } else {
            Some(form.get_u64("ttl").map_err(|_| {
                Reject::Etcd(EtcdError::new(TTL_NAN, "invalid value for \"ttl\"", 0))
            })?)
        };
    let prev_exist = if form.has("prevExist") {
        Some(
            form.get_bool("prevExist")
                .map_err(|_| field("invalid value for prevExist"))?,
        )
    } else {
        None
    };
    let mut refresh = false;
    if form.has("refresh") {
        refresh = form
            .get_bool("refresh")
            .map_err(|_| field("invalid value for refresh"))?;
        if refresh {
            if form.has("value") && !form.value("value").is_empty() {
                return Err(Reject::Etcd(EtcdError::new(
                    REFRESH_VALUE,
                    "A value was provided on a refresh",
                    0,
                )));
            }
            if ttl.is_none() {
                return Err(Reject::Etcd(EtcdError::new(
                    REFRESH_TTL_REQUIRED,
                    "No TTL value set",
                    0,
                )));
            }
        }
    }
    let write = |m: WriteMethod| Command {
        method: m,
        key: key.clone(),
        value: form.value("value"),
        dir,
        prev_value: prev_value.clone(),
        prev_index,
        prev_exist,
        recursive,
        ttl,
        refresh,
    };
    Ok(match method {
        "GET" | "HEAD" => KeysRequest::Get {
            key: key.clone(),
            recursive,
            sorted,
            quorum,
            wait: wait.then_some(WaitSpec {
                index: (wait_index > 0).then_some(wait_index),
                recursive,
                stream,
            }),
            head: method == "HEAD",
        },
        "PUT" => KeysRequest::Write {
            cmd: write(WriteMethod::Put),
            no_value,
        },
        "POST" => KeysRequest::Write {
            cmd: write(WriteMethod::Post),
            no_value,
        },
        _ => KeysRequest::Write {
            cmd: write(WriteMethod::Delete),
            no_value,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: &str, uri: &str, body: &str) -> Result<KeysRequest, Reject> {
        let (path, query) = match uri.split_once('?') {
            Some((a, b)) => (a, Some(b)),
            None => (uri, None),
        };
        parse(
            method,
            path,
            query,
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
        )
    }

    fn code(r: Result<KeysRequest, Reject>) -> (u32, String) {
        match r {
            Err(Reject::Etcd(e)) => (e.code, e.cause),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_are_cleaned_and_redirected_like_go() {
        assert_eq!(
            p("PUT", "/v2/keys/corpus//dbl//", "value=d"),
            Err(Reject::Redirect("/v2/keys/corpus/dbl/".into()))
        );
        assert_eq!(clean("/a/../b/./c/"), "/b/c");
        match p("PUT", "/v2/keys/corpus/sp%20ace", "value=s").unwrap() {
            KeysRequest::Write { cmd, .. } => assert_eq!(cmd.key, "/corpus/sp ace"),
            other => panic!("{other:?}"),
        }
        assert_eq!(p("PATCH", "/v2/keys/x", ""), Err(Reject::MethodNotAllowed));
    }

    #[test]
    fn field_errors_match_etcd() {
        assert_eq!(
            code(p("PUT", "/v2/keys/bf", "value=%zz")),
            (210, "invalid URL escape \"%zz\"".into())
        );
        assert_eq!(
            code(p("GET", "/v2/keys/k?recursive=maybe", "")),
            (209, "invalid value for \"recursive\"".into())
        );
        assert_eq!(
            code(p("PUT", "/v2/keys/c?prevExist=bogus", "value=x")),
            (209, "invalid value for prevExist".into())
        );
        assert_eq!(
            code(p("PUT", "/v2/keys/c?prevIndex=abc", "value=x")),
            (203, "invalid value for \"prevIndex\"".into())
        );
        assert_eq!(
            code(p("PUT", "/v2/keys/c?prevValue=", "value=x")),
            (201, "\"prevValue\" cannot be empty".into())
        );
        assert_eq!(
            code(p("PUT", "/v2/keys/t", "value=t&ttl=abc")),
            (202, "invalid value for \"ttl\"".into())
        );
        assert_eq!(
            code(p("PUT", "/v2/keys/t", "value=t&ttl=-1")),
            (202, "invalid value for \"ttl\"".into())
        );
        assert_eq!(
            code(p(
                "PUT",
                "/v2/keys/t?refresh=true&prevExist=true",
                "ttl=60&value=new"
            ))
            .0,
            211
        );
        assert_eq!(
            code(p("PUT", "/v2/keys/t?refresh=true&prevExist=true", "")).0,
            212
        );
        assert_eq!(
            code(p("GET", "/v2/keys/w?wait=true&waitIndex=abc", "")),
            (203, "invalid value for \"waitIndex\"".into())
        );
        assert_eq!(code(p("PUT", "/v2/keys/w?wait=true", "")).0, 209);
    }

    #[test]
    fn body_values_win_over_query_values() {
        match p("PUT", "/v2/keys/k?value=q", "value=b").unwrap() {
            KeysRequest::Write { cmd, .. } => assert_eq!(cmd.value, "b"),
            other => panic!("{other:?}"),
        }
        // Without a form content type the body is ignored, as Go's ParseForm does.
        match parse("PUT", "/v2/keys/k", Some("value=q"), None, b"value=b").unwrap() {
            KeysRequest::Write { cmd, .. } => assert_eq!(cmd.value, "q"),
            other => panic!("{other:?}"),
        }
    }
}
