//! Readers for the three history formats: detcd's native JSON lines (docs/formats.md),
//! Jepsen's register log lines and Jepsen's kv EDN maps. A malformed line is an error that
//! names its line number; nothing is guessed.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::etcd::{EtcdInput, EtcdOutput};
use crate::model::kv::{KvInput, KvOutput};
use crate::model::register::{RegInput, RegOutput};
use crate::search::Op;

/// A history line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// Pairs invocations with completions per process. `complete` returns the completed op.
struct Pairing<I, O> {
    open: BTreeMap<u64, (u64, I)>,
    ops: Vec<Op<I, O>>,
}

impl<I: Clone, O> Pairing<I, O> {
    fn new() -> Self {
        Pairing {
            open: BTreeMap::new(),
            ops: Vec::new(),
        }
    }
    fn invoke(&mut self, line: usize, process: u64, time: u64, input: I) -> Result<(), ParseError> {
        if self.open.insert(process, (time, input)).is_some() {
            return Err(err(
                line,
                format!("process {process} invokes again before its previous operation completed"),
            ));
        }
        Ok(())
    }
    fn take(&mut self, line: usize, process: u64) -> Result<(u64, I), ParseError> {
        self.open.remove(&process).ok_or_else(|| {
            err(
                line,
                format!("process {process} completes an operation it never invoked"),
            )
        })
    }
    /// Operations never completed are indeterminate.
    fn finish(mut self) -> Vec<Op<I, O>> {
        for (p, (t, i)) in std::mem::take(&mut self.open) {
            self.ops.push(Op {
                client: p,
                call: t,
                ret: None,
                input: i,
                output: None,
            });
        }
        self.ops
    }
}

fn parse_int(s: &str, line: usize) -> Result<i64, ParseError> {
    s.trim()
        .parse()
        .map_err(|_| err(line, format!("expected an integer, found {s:?}")))
}

/// Splits off the first field of `s`: the text up to its first run of spaces or tabs, and what
/// follows that run.
fn first_field(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches([' ', '\t']);
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

/// Jepsen's etcd register log: `INFO  jepsen.util - <process>\t:<type>\t:<f>\t<value>`,
/// optionally followed by an error column. Jepsen separates the columns with tabs, but some of
/// its logs (and copies of them) have spaces instead, so any run of spaces or tabs separates
/// columns, as in Porcupine's reader. The value is one token (`nil`, an integer,
/// `:timed-out`) or a vector that itself contains spaces (`[FROM TO]`); anything after it is
/// the error column, which is ignored.
pub fn jepsen_log(text: &str) -> Result<Vec<Op<RegInput, RegOutput>>, ParseError> {
    let mut p = Pairing::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let rest = raw.split_once(" - ").map(|x| x.1).ok_or_else(|| {
            err(
                line,
                "expected `... - <process> :<type> :<f> <value>` (columns separated by tabs or spaces)",
            )
        })?;
        let (process_col, rest) = first_field(rest);
        let (ty, rest) = first_field(rest);
        let (f, rest) = first_field(rest);
        let value = if rest.starts_with('[') {
            match rest.find(']') {
                Some(end) => &rest[..=end],
                None => return Err(err(line, format!("unterminated vector {rest:?}"))),
            }
        } else {
            first_field(rest).0
        };
        let found = [process_col, ty, f, value]
            .iter()
            .filter(|c| !c.is_empty())
            .count();
        if found < 4 {
            return Err(err(
                line,
                format!(
                    "expected 4 columns (process, type, f, value) separated by tabs or spaces, found {found}"
                ),
            ));
        }
        let process: u64 = process_col
            .parse()
            .map_err(|_| err(line, format!("bad process {process_col:?}")))?;
        let time = line as u64;
        match ty {
            ":invoke" => {
                let input = match f {
                    ":read" => RegInput::Read,
                    ":write" => RegInput::Write(parse_int(value, line)?),
                    ":cas" => {
                        let inner = value.trim_start_matches('[').trim_end_matches(']');
                        let v: Vec<&str> = inner.split_whitespace().collect();
                        if v.len() != 2 {
                            return Err(err(line, format!("bad cas value {value:?}")));
                        }
                        RegInput::Cas(parse_int(v[0], line)?, parse_int(v[1], line)?)
                    }
                    other => return Err(err(line, format!("unknown operation {other}"))),
                };
                p.invoke(line, process, time, input)?;
            }
            ":ok" => {
                let (call, input) = p.take(line, process)?;
                let output = match input {
                    RegInput::Read => RegOutput::Read(if value == "nil" {
                        None
                    } else {
                        Some(parse_int(value, line)?)
                    }),
                    _ => RegOutput::Ok,
                };
                p.ops.push(Op {
                    client: process,
                    call,
                    ret: Some(time),
                    input,
                    output: Some(output),
                });
            }
            ":fail" => {
                let (call, input) = p.take(line, process)?;
                // A failed cas is a compare that did not match: it constrains the state. A
                // failed read or write definitely did nothing and constrains nothing.
                if let RegInput::Cas(..) = input {
                    p.ops.push(Op {
                        client: process,
                        call,
                        ret: Some(time),
                        input,
                        output: Some(RegOutput::CasFailed),
                    });
                }
            }
            ":info" => {
                let (call, input) = p.take(line, process)?;
                p.ops.push(Op {
                    client: process,
                    call,
                    ret: None,
                    input,
                    output: None,
                });
            }
            other => return Err(err(line, format!("unknown type {other}"))),
        }
    }
    Ok(p.finish())
}

/// A tiny reader for the flat EDN maps of Jepsen's kv histories.
fn edn_map(s: &str, line: usize) -> Result<BTreeMap<String, String>, ParseError> {
    let body = s
        .trim()
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| err(line, "expected an EDN map {...}"))?;
    let mut out = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(c) = chars.next() else { break };
        if c != ':' {
            return Err(err(line, format!("expected a keyword, found {c:?}")));
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect();
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => v.extend(chars.next()),
                    Some(c) => v.push(c),
                    None => return Err(err(line, "unterminated string")),
                }
            }
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace() && *c != ',')).collect()
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// Jepsen's kv EDN lines: `{:process P, :type :invoke|:ok, :f :get|:put|:append, :key "K", :value ...}`.
pub fn jepsen_edn(text: &str) -> Result<Vec<Op<KvInput, KvOutput>>, ParseError> {
    let mut p = Pairing::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let m = edn_map(raw, line)?;
        let get = |k: &str| {
            m.get(k)
                .cloned()
                .ok_or_else(|| err(line, format!("missing :{k}")))
        };
        let process: u64 = get("process")?
            .parse()
            .map_err(|_| err(line, "bad :process"))?;
        let key = get("key")?;
        let value = m.get("value").cloned().unwrap_or_default();
        let f = get("f")?;
        match get("type")?.as_str() {
            ":invoke" => {
                let input = match f.as_str() {
                    ":get" => KvInput::Get(key),
                    ":put" => KvInput::Put(key, value),
                    ":append" => KvInput::Append(key, value),
                    other => return Err(err(line, format!("unknown :f {other}"))),
                };
                p.invoke(line, process, line as u64, input)?;
            }
            ":ok" => {
                let (call, input) = p.take(line, process)?;
                let output = match input {
                    KvInput::Get(_) => {
                        KvOutput::Value(if value == "nil" { String::new() } else { value })
                    }
                    _ => KvOutput::Ok,
                };
                p.ops.push(Op {
                    client: process,
                    call,
                    ret: Some(line as u64),
                    input,
                    output: Some(output),
                });
            }
            ":fail" => {
                p.take(line, process)?;
            }
            ":info" => {
                let (call, input) = p.take(line, process)?;
                p.ops.push(Op {
                    client: process,
                    call,
                    ret: None,
                    input,
                    output: None,
                });
            }
            other => return Err(err(line, format!("unknown :type {other}"))),
        }
    }
    Ok(p.finish())
}

/// One line of detcd's native history.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// The run.
    Meta {
        /// Format version.
        version: u32,
    },
    /// An operation.
    Op(NativeOp),
    /// A watch event.
    Watch(WatchLine),
    /// A fault window.
    Fault(FaultLine),
    /// A leader observation.
    Leader {
        /// When.
        at_ns: u64,
        /// Member index, if any.
        member: Option<usize>,
    },
    /// A request by an intruder (judged by the simulator's `intruders` check, not here).
    Intruder {},
}

/// An operation line.
#[derive(Debug, Clone, Deserialize)]
pub struct NativeOp {
    /// Stable id.
    pub id: u64,
    /// Client.
    pub client: u64,
    /// get, qget, set, create, update, cas_value, cas_index, delete, cad; rget, mkdir,
    /// rmdir, rdelete (directories: not checked for linearizability).
    pub f: String,
    /// Key.
    pub key: String,
    /// Written value.
    #[serde(default)]
    pub value: Option<String>,
    /// Compared value.
    #[serde(default)]
    pub prev_value: Option<String>,
    /// Compared index.
    #[serde(default)]
    pub prev_index: Option<u64>,
    /// Invoke time (ns).
    pub invoke_ns: u64,
    /// Return time (ns); null = indeterminate.
    pub return_ns: Option<u64>,
    /// `{"ok":true,...}`, `{"ok":false,"error":N}`, "indeterminate" or "not_sent".
    pub outcome: serde_json::Value,
    /// The member the request went to (absent in histories written before it was recorded).
    #[serde(default)]
    pub member: Option<usize>,
    /// Reads: the `X-Etcd-Index` the member answered with (an answer or error 100); null
    /// otherwise, and absent in histories written before it was recorded.
    #[serde(default)]
    pub etcd_index: Option<u64>,
}

/// A watch event line.
#[derive(Debug, Clone, Deserialize)]
pub struct WatchLine {
    /// Watcher id.
    pub watcher: u64,
    /// When it arrived.
    pub at_ns: u64,
    /// Action, or "cleared".
    pub action: String,
    /// Key.
    pub key: String,
    /// modifiedIndex (for "cleared": the index the watcher resumed after).
    pub index: u64,
    /// Value.
    #[serde(default)]
    pub value: Option<String>,
    /// The waitIndex asked for.
    pub wait_index: u64,
    /// The key the watcher watched (recursively); absent in histories written before it was
    /// recorded, where the checker's default prefix stands in.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// A fault line.
#[derive(Debug, Clone, Deserialize)]
pub struct FaultLine {
    /// Kind.
    pub kind: String,
    /// Targets.
    #[serde(default)]
    pub targets: Vec<usize>,
    /// Start (ns).
    pub start_ns: u64,
    /// End (ns).
    pub end_ns: u64,
}

/// A native history, read.
#[derive(Debug, Default)]
pub struct Native {
    /// Operations checked for linearizability (quorum reads and writes that were sent), with
    /// their line ids.
    pub ops: Vec<Op<EtcdInput, EtcdOutput>>,
    /// Ids of `ops`, in the same order.
    pub ids: Vec<u64>,
    /// Every operation line (for the watch checker).
    pub all_ops: Vec<NativeOp>,
    /// Watch events.
    pub watches: Vec<WatchLine>,
    /// Faults.
    pub faults: Vec<FaultLine>,
}

fn etcd_input(o: &NativeOp, line: usize) -> Result<Option<EtcdInput>, ParseError> {
    let key = o.key.clone();
    let need = |v: &Option<String>, what: &str| {
        v.clone()
            .ok_or_else(|| err(line, format!("{} needs {what}", o.f)))
    };
    Ok(Some(match o.f.as_str() {
        // Local reads are sequentially consistent in etcd v2, not linearizable: not checked.
        "get" => return Ok(None),
        // Directory operations and recursive reads act on directories, not on the checked
        // keys (the watch check still matches their events).
        "rget" | "mkdir" | "rmdir" | "rdelete" => return Ok(None),
        "qget" => EtcdInput::Get { key },
        "set" => EtcdInput::Set {
            key,
            value: need(&o.value, "value")?,
        },
        "create" => EtcdInput::Create {
            key,
            value: need(&o.value, "value")?,
        },
        "update" => EtcdInput::Update {
            key,
            value: need(&o.value, "value")?,
        },
        "cas_value" => EtcdInput::CasValue {
            key,
            prev: need(&o.prev_value, "prev_value")?,
            value: need(&o.value, "value")?,
        },
        "cas_index" => EtcdInput::CasIndex {
            key,
            prev: o
                .prev_index
                .ok_or_else(|| err(line, "cas_index needs prev_index"))?,
            value: need(&o.value, "value")?,
        },
        "delete" => EtcdInput::Delete { key },
        "refresh" => EtcdInput::Refresh { key },
        "cad" => EtcdInput::Cad {
            key,
            prev: need(&o.prev_value, "prev_value")?,
        },
        other => return Err(err(line, format!("unknown operation {other:?}"))),
    }))
}

/// The output of a native op: Ok(None) for "not sent" (dropped), Ok(Some(None)) for an
/// indeterminate one.
fn etcd_output(
    v: &serde_json::Value,
    line: usize,
) -> Result<Option<Option<EtcdOutput>>, ParseError> {
    match v {
        serde_json::Value::String(s) if s == "not_sent" => Ok(None),
        serde_json::Value::String(s) if s == "indeterminate" => Ok(Some(None)),
        serde_json::Value::Object(m) => match m.get("ok").and_then(|b| b.as_bool()) {
            Some(true) => Ok(Some(Some(EtcdOutput::Ok {
                value: m.get("value").and_then(|x| x.as_str()).map(str::to_string),
                index: m
                    .get("index")
                    .and_then(|x| x.as_u64())
                    .ok_or_else(|| err(line, "ok outcome without index"))?,
                prev_value: m
                    .get("prev_value")
                    .and_then(|x| x.as_str())
                    .map(str::to_string),
                prev_index: m.get("prev_index").and_then(|x| x.as_u64()),
            }))),
            Some(false) => {
                let code = m
                    .get("error")
                    .and_then(|x| x.as_u64())
                    .ok_or_else(|| err(line, "failed outcome without error code"))?;
                Ok(Some(Some(EtcdOutput::Err(code as u32))))
            }
            None => Err(err(line, "outcome object without \"ok\"")),
        },
        other => Err(err(line, format!("bad outcome {other}"))),
    }
}

/// One native line. The `type` is read first in a pass that allocates nothing, then the line
/// is read straight into its struct: serde's internally tagged enums buffer every field of
/// every line, which made reading a history cost as much as the search.
fn parse_native_line(raw: &str) -> serde_json::Result<Line> {
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(rename = "type", borrow)]
        t: std::borrow::Cow<'a, str>,
    }
    let tag: Tag = serde_json::from_str(raw)?;
    Ok(match &*tag.t {
        "op" => Line::Op(serde_json::from_str(raw)?),
        "watch" => Line::Watch(serde_json::from_str(raw)?),
        "fault" => Line::Fault(serde_json::from_str(raw)?),
        _ => serde_json::from_str(raw)?,
    })
}

/// detcd's native JSON lines.
pub fn native(text: &str) -> Result<Native, ParseError> {
    let mut h = Native::default();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let l = parse_native_line(raw).map_err(|e| err(line, e.to_string()))?;
        match l {
            Line::Meta { version } if version != 1 => {
                return Err(err(
                    line,
                    format!("history format version {version} is not supported (1 is)"),
                ))
            }
            Line::Meta { .. } | Line::Leader { .. } | Line::Intruder {} => {}
            Line::Watch(w) => h.watches.push(w),
            Line::Fault(f) => h.faults.push(f),
            Line::Op(o) => {
                // Refused by auth (401, errorCode 110) before anything happened: no effect,
                // whatever the key holds, so nothing for the search to place.
                let refused = o.outcome.get("error").and_then(|c| c.as_u64()) == Some(110);
                if let (Some(input), Some(output), false) = (
                    etcd_input(&o, line)?,
                    etcd_output(&o.outcome, line)?,
                    refused,
                ) {
                    let ret = if output.is_some() { o.return_ns } else { None };
                    h.ops.push(Op {
                        client: o.client,
                        call: o.invoke_ns,
                        ret,
                        input,
                        output,
                    });
                    h.ids.push(o.id);
                }
                h.all_ops.push(o);
            }
        }
    }
    Ok(h)
}
