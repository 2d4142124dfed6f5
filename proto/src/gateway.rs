//! JSON exactly as etcd 3.4.23's gateway (grpc-gateway with golang/protobuf's `jsonpb`,
//! `OrigName: true`, unknown fields allowed) reads and writes it.
//!
//! Output ([`encode`]) is the pbjson serde impls generated in `build.rs`: proto field names,
//! 64-bit integers as strings, bytes as padded standard base64, enums by name, default values
//! and empty fields left out, fields in declaration order, compact.
//!
//! Input ([`decode`]) follows what the Go gateway does, error texts included, because those
//! texts reach clients as `{"error": ...}` bodies. Each rule below was checked against a live
//! etcd 3.4.23 (see `conformance/etcd-3.4.23-v3.jsonl` and `tests/gateway_json.rs`):
//! - the body is read as ONE JSON value by Go's `json.Decoder`: bytes after it are ignored, an
//!   empty (or all-whitespace) body is an empty request, a truncated one is `unexpected EOF`,
//!   a syntax error is Go's `invalid character 'x' looking for beginning of value` & co.;
//! - a message must be an object (`json: cannot unmarshal array into Go value of type
//!   map[string]json.RawMessage`); a field is found by its proto name or its lowerCamel JSON
//!   name, exactly (the camel one wins when both are there); a repeated key's last value wins;
//!   unknown fields are ignored; `null` leaves a field unset;
//! - integers: a JSON number, or a string whose contents (between the quotes, unescaped) is
//!   one: `"1"`, `" 1"`; fractions, exponents and overflow fail with `json: cannot unmarshal
//!   number 1.5 into Go value of type int64`;
//! - enums: a name in quotes (`unknown value "x" for enum etcdserverpb.RangeRequest_SortOrder`
//!   otherwise, also for a number in quotes) or any int32 number, known or not;
//! - bytes: padded standard base64 (newlines skipped; Go's `illegal base64 data at input byte
//!   N`), or an array of numbers 0..=255;
//! - bools and strings: only JSON booleans and strings.
//!
//! - nesting: Go's scanner refuses a 10,001st open bracket (`invalid character '[' exceeded max
//!   depth`); so does this reader, which parses without recursion.
//!
//! Not reproduced: when several members of one oneof are given, Go keeps a random one (its map
//! iteration order); here the last one in declaration order wins. A `null` element of a
//! repeated message field is an empty message here (a nil pointer in Go). Messages nested more
//! than 99 deep (about 49 nested txns) are refused with a detcd error, since prost decodes no
//! deeper; etcd takes them.

use std::sync::OnceLock;

use prost::bytes::Bytes;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value,
};

/// The compiled schema (`FileDescriptorSet` of `proto/`), written by `build.rs`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/etcd_descriptors.bin"));

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("build.rs wrote it"))
}

/// A message's JSON as etcd's gateway writes it.
pub fn encode<M: serde::Serialize>(msg: &M) -> Vec<u8> {
    // The generated impls only fail on an enum number with no name, which no server response
    // of ours carries; fall back to an empty object rather than panic in a request path.
    serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec())
}

/// Decode a request body as `full_name` (e.g. `"etcdserverpb.RangeRequest"`) the way etcd's
/// gateway does. `Err` carries the gateway's message (answered as code 3, HTTP 400).
pub fn decode<M: prost::Message + Default>(full_name: &str, body: &[u8]) -> Result<M, String> {
    let desc = pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| format!("no message {full_name} in the schema"))?;
    let mut p = Parser { s: body, i: 0 };
    p.ws();
    if p.i == p.s.len() {
        // io.EOF: the gateway treats an empty body as an empty request.
        return Ok(M::default());
    }
    let v = p.value().map_err(|e| e.text())?;
    let dm = message(&desc, &v, 0)?;
    dm.transcode_to::<M>().map_err(|e| e.to_string())
}

/// Decode a streaming request body (grpc-gateway's client stream: one JSON value after
/// another, as Go's `json.Decoder` reads them) as `full_name` messages. A value that fails
/// ends the list with its error; an empty body is no request.
pub fn decode_stream<M: prost::Message + Default>(
    full_name: &str,
    body: &[u8],
) -> Vec<Result<M, String>> {
    let Some(desc) = pool().get_message_by_name(full_name) else {
        return vec![Err(format!("no message {full_name} in the schema"))];
    };
    let mut p = Parser { s: body, i: 0 };
    let mut out = Vec::new();
    loop {
        p.ws();
        if p.i == p.s.len() {
            return out;
        }
        let m = p
            .value()
            .map_err(|e| e.text())
            .and_then(|v| message(&desc, &v, 0))
            .and_then(|dm| dm.transcode_to::<M>().map_err(|e| e.to_string()));
        let failed = m.is_err();
        out.push(m);
        if failed {
            return out;
        }
    }
}

/// etcd's error body for a failed call: `{"error":m,"message":m,"code":c}`, Go-escaped.
pub fn error_body(code: i32, message: &str) -> Vec<u8> {
    let m = go_quote(message);
    format!("{{\"error\":{m},\"message\":{m},\"code\":{code}}}").into_bytes()
}

/// The HTTP status grpc-gateway (v1) gives a gRPC status code.
pub fn http_status(code: i32) -> u16 {
    match code {
        0 => 200,
        1 => 408,  // Canceled
        2 => 500,  // Unknown
        3 => 400,  // InvalidArgument
        4 => 504,  // DeadlineExceeded
        5 => 404,  // NotFound
        6 => 409,  // AlreadyExists
        7 => 403,  // PermissionDenied
        8 => 429,  // ResourceExhausted
        9 => 412,  // FailedPrecondition
        10 => 409, // Aborted
        11 => 400, // OutOfRange
        12 => 501, // Unimplemented
        13 => 500, // Internal
        14 => 503, // Unavailable
        15 => 500, // DataLoss
        16 => 401, // Unauthenticated
        _ => 500,
    }
}

/// A string as Go's `encoding/json` writes it (HTML-escaping on, as jsonpb's marshaller has it).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// A JSON reader that fails where Go's scanner fails, with its words.

/// A parsed JSON value; strings and numbers keep their source text (Go's messages quote it).
#[derive(Debug)]
enum J<'a> {
    Null,
    Bool(bool),
    Num(&'a [u8]),
    /// The source between the quotes, and the decoded bytes.
    Str(&'a [u8], Vec<u8>),
    Arr(Vec<J<'a>>),
    /// Members in order; lookups take the last of a name (Go decodes into a map).
    Obj(Vec<(Vec<u8>, J<'a>)>),
}

impl J<'_> {
    fn kind(&self) -> &'static str {
        match self {
            J::Null => "null",
            J::Bool(_) => "bool",
            J::Num(_) => "number",
            J::Str(..) => "string",
            J::Arr(_) => "array",
            J::Obj(_) => "object",
        }
    }
}

enum SynErr {
    /// Input ended inside the value.
    Eof,
    /// `invalid character 'c' <context>`.
    Bad(u8, &'static str),
}

impl SynErr {
    fn text(&self) -> String {
        match self {
            SynErr::Eof => "unexpected EOF".into(),
            SynErr::Bad(c, ctx) => format!("invalid character {} {ctx}", quote_char(*c)),
        }
    }
}

/// Go's `quoteChar`: the byte read as a rune, in single quotes, escaped like `strconv.Quote`.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".into(),
        b'"' => "'\"'".into(),
        b'\\' => "'\\\\'".into(),
        0x07 => "'\\a'".into(),
        0x08 => "'\\b'".into(),
        0x0c => "'\\f'".into(),
        b'\n' => "'\\n'".into(),
        b'\r' => "'\\r'".into(),
        b'\t' => "'\\t'".into(),
        0x0b => "'\\v'".into(),
        c if c < 0x20 || c == 0x7f => format!("'\\x{c:02x}'"),
        // C1 controls, no-break space and soft hyphen are not printable for strconv.
        c if (0x80..0xa0).contains(&c) || c == 0xa0 || c == 0xad => format!("'\\u{c:04x}'"),
        c => format!("'{}'", c as char),
    }
}

/// Go's `maxNestingDepth`: the scanner refuses the 10001st open bracket.
const MAX_DEPTH: usize = 10_000;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

/// An open container while parsing: the items so far (and an object's pending key).
enum Frame<'a> {
    Arr(Vec<J<'a>>),
    Obj(Vec<(Vec<u8>, J<'a>)>, Vec<u8>),
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Result<u8, SynErr> {
        self.s.get(self.i).copied().ok_or(SynErr::Eof)
    }

    /// One JSON value, iteratively (a body may nest 10,000 deep; the stack stays flat).
    fn value(&mut self) -> Result<J<'a>, SynErr> {
        let mut stack: Vec<Frame<'a>> = Vec::new();
        loop {
            // The start of a value.
            self.ws();
            let c = self.peek()?;
            let mut v = match c {
                b'{' | b'[' => {
                    if stack.len() + 1 > MAX_DEPTH {
                        return Err(SynErr::Bad(c, "exceeded max depth"));
                    }
                    self.i += 1;
                    self.ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                        if c == b'{' {
                            J::Obj(Vec::new())
                        } else {
                            J::Arr(Vec::new())
                        }
                    } else {
                        if c == b'{' {
                            let key = self.key()?;
                            stack.push(Frame::Obj(Vec::new(), key));
                        } else {
                            stack.push(Frame::Arr(Vec::new()));
                        }
                        continue;
                    }
                }
                _ => self.scalar()?,
            };
            // A complete value: hand it to the open containers, closing those that end.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(v);
                };
                self.ws();
                let c = self.peek()?;
                match top {
                    Frame::Arr(items) => {
                        items.push(v);
                        match c {
                            b',' => {
                                self.i += 1;
                                break;
                            }
                            b']' => self.i += 1,
                            c => return Err(SynErr::Bad(c, "after array element")),
                        }
                    }
                    Frame::Obj(members, key) => {
                        members.push((std::mem::take(key), v));
                        match c {
                            b',' => {
                                self.i += 1;
                                *key = self.key()?;
                                break;
                            }
                            b'}' => self.i += 1,
                            c => return Err(SynErr::Bad(c, "after object key:value pair")),
                        }
                    }
                }
                v = match stack.pop() {
                    Some(Frame::Arr(items)) => J::Arr(items),
                    Some(Frame::Obj(members, _)) => J::Obj(members),
                    None => unreachable!("a frame was on top"),
                };
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Result<Vec<u8>, SynErr> {
        self.ws();
        let c = self.peek()?;
        if c != b'"' {
            return Err(SynErr::Bad(c, "looking for beginning of object key string"));
        }
        let (_, key) = self.string()?;
        self.ws();
        let c = self.peek()?;
        if c != b':' {
            return Err(SynErr::Bad(c, "after object key"));
        }
        self.i += 1;
        Ok(key)
    }

    fn scalar(&mut self) -> Result<J<'a>, SynErr> {
        let c = self.peek()?;
        match c {
            b'"' => {
                let (raw, dec) = self.string()?;
                Ok(J::Str(raw, dec))
            }
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true", "true").map(|_| J::Bool(true)),
            b'f' => self.literal(b"false", "false").map(|_| J::Bool(false)),
            b'n' => self.literal(b"null", "null").map(|_| J::Null),
            c => Err(SynErr::Bad(c, "looking for beginning of value")),
        }
    }

    fn literal(&mut self, word: &[u8], name: &'static str) -> Result<(), SynErr> {
        self.i += 1;
        for &want in &word[1..] {
            let c = self.peek()?;
            if c != want {
                let ctx: &'static str = match (name, want) {
                    ("true", b'r') => "in literal true (expecting 'r')",
                    ("true", b'u') => "in literal true (expecting 'u')",
                    ("true", _) => "in literal true (expecting 'e')",
                    ("false", b'a') => "in literal false (expecting 'a')",
                    ("false", b'l') => "in literal false (expecting 'l')",
                    ("false", b's') => "in literal false (expecting 's')",
                    ("false", _) => "in literal false (expecting 'e')",
                    (_, b'u') => "in literal null (expecting 'u')",
                    _ => "in literal null (expecting 'l')",
                };
                return Err(SynErr::Bad(c, ctx));
            }
            self.i += 1;
        }
        Ok(())
    }

    /// A number; at the end of input a complete number is complete (Go's decoder agrees).
    fn number(&mut self) -> Result<J<'a>, SynErr> {
        let start = self.i;
        let digit = |p: &Self| p.s.get(p.i).is_some_and(u8::is_ascii_digit);
        if self.s[self.i] == b'-' {
            self.i += 1;
            let c = self.peek()?;
            if !c.is_ascii_digit() {
                return Err(SynErr::Bad(c, "in numeric literal"));
            }
        }
        if self.s[self.i] == b'0' {
            self.i += 1;
        } else {
            while digit(self) {
                self.i += 1;
            }
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            let c = self.peek()?;
            if !c.is_ascii_digit() {
                return Err(SynErr::Bad(c, "after decimal point in numeric literal"));
            }
            while digit(self) {
                self.i += 1;
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            let mut c = self.peek()?;
            if c == b'+' || c == b'-' {
                self.i += 1;
                c = self.peek()?;
            }
            if !c.is_ascii_digit() {
                return Err(SynErr::Bad(c, "in exponent of numeric literal"));
            }
            while digit(self) {
                self.i += 1;
            }
        }
        Ok(J::Num(&self.s[start..self.i]))
    }

    /// A string at `"`: its raw source and its decoded bytes (bad UTF-8 becomes U+FFFD).
    fn string(&mut self) -> Result<(&'a [u8], Vec<u8>), SynErr> {
        self.i += 1;
        let start = self.i;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => {
                    let raw = &self.s[start..self.i - 1];
                    let dec = String::from_utf8_lossy(&out).into_owned().into_bytes();
                    return Ok((raw, dec));
                }
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut r = self.hex4()?;
                            if (0xd800..0xdc00).contains(&r)
                                && self.s.get(self.i) == Some(&b'\\')
                                && self.s.get(self.i + 1) == Some(&b'u')
                            {
                                // A surrogate pair, if the next escape completes one.
                                let save = self.i;
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xdc00..0xe000).contains(&lo) {
                                    r = 0x10000 + ((r - 0xd800) << 10) + (lo - 0xdc00);
                                } else {
                                    self.i = save;
                                }
                            }
                            let ch = char::from_u32(r).unwrap_or('\u{fffd}');
                            let mut b = [0; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                        }
                        e => return Err(SynErr::Bad(e, "in string escape code")),
                    }
                }
                c if c < 0x20 => return Err(SynErr::Bad(c, "in string literal")),
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, SynErr> {
        let mut r = 0u32;
        for _ in 0..4 {
            let c = self.peek()?;
            let d = (c as char)
                .to_digit(16)
                .ok_or(SynErr::Bad(c, "in \\u hexadecimal character escape"))?;
            r = r * 16 + d;
            self.i += 1;
        }
        Ok(r)
    }
}

/// Go's `json.Unmarshal` syntax check of a whole input (used for the inside of a quoted number).
fn unmarshal_whole(s: &[u8]) -> Result<J<'_>, String> {
    let mut p = Parser { s, i: 0 };
    let v = p.value().map_err(|e| match e {
        SynErr::Eof => "unexpected end of JSON input".to_string(),
        e => e.text(),
    })?;
    p.ws();
    if p.i < s.len() {
        return Err(SynErr::Bad(s[p.i], "after top-level value").text());
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// From the parsed value to a message, as jsonpb (golang/protobuf 1.3) does it.

fn type_err(kind: &str, go_type: &str) -> String {
    format!("json: cannot unmarshal {kind} into Go value of type {go_type}")
}

/// How deep messages may nest in a request: prost's decoding limit (100 levels, so about 50
/// nested txns). etcd has no such limit; past it this reader refuses the request.
const MAX_MESSAGE_DEPTH: usize = 99;

fn message(desc: &MessageDescriptor, v: &J, depth: usize) -> Result<DynamicMessage, String> {
    if depth > MAX_MESSAGE_DEPTH {
        return Err(format!(
            "detcd: the request nests messages deeper than {MAX_MESSAGE_DEPTH} levels"
        ));
    }
    let mut dm = DynamicMessage::new(desc.clone());
    let members = match v {
        J::Null => return Ok(dm),
        J::Obj(m) => m,
        other => return Err(type_err(other.kind(), "map[string]json.RawMessage")),
    };
    let find = |name: &str| members.iter().rev().find(|(k, _)| k == name.as_bytes());
    // Plain fields first, then oneof members (jsonpb's order), each in declaration order.
    let fields: Vec<FieldDescriptor> = desc.fields().collect();
    let ordered = fields
        .iter()
        .filter(|f| f.containing_oneof().is_none())
        .chain(fields.iter().filter(|f| f.containing_oneof().is_some()));
    for f in ordered {
        let hit = find(f.json_name()).or_else(|| find(f.name()));
        let Some((_, jv)) = hit else { continue };
        if matches!(jv, J::Null) {
            continue;
        }
        let value = if f.is_list() {
            let items = match jv {
                J::Arr(items) => items,
                other => return Err(type_err(other.kind(), "[]json.RawMessage")),
            };
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(match (f.kind(), item) {
                    (Kind::Message(m), J::Null) => Value::Message(DynamicMessage::new(m)),
                    (k, item) => match scalar(&k, item, depth)? {
                        Some(v) => v,
                        None => default_of(&k),
                    },
                });
            }
            Value::List(out)
        } else {
            match scalar(&f.kind(), jv, depth)? {
                Some(v) => v,
                None => continue,
            }
        };
        dm.set_field(f, value);
    }
    Ok(dm)
}

fn default_of(k: &Kind) -> Value {
    match k {
        Kind::Message(m) => Value::Message(DynamicMessage::new(m.clone())),
        Kind::Enum(_) => Value::EnumNumber(0),
        Kind::Bool => Value::Bool(false),
        Kind::String => Value::String(String::new()),
        Kind::Bytes => Value::Bytes(Bytes::new()),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(0),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(0),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(0),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(0),
        Kind::Float => Value::F32(0.0),
        Kind::Double => Value::F64(0.0),
    }
}

/// Go's name for an enum type: package, then the nested names joined by `_`.
fn go_enum_name(e: &prost_reflect::EnumDescriptor) -> String {
    let pkg = e.package_name();
    let rest = e.full_name().strip_prefix(pkg).unwrap_or(e.full_name());
    format!("{pkg}.{}", rest.trim_start_matches('.').replace('.', "_"))
}

/// One value of kind `k`; `None` when Go leaves the field as it is (a null).
fn scalar(k: &Kind, v: &J, depth: usize) -> Result<Option<Value>, String> {
    Ok(Some(match k {
        Kind::Message(m) => Value::Message(message(m, v, depth + 1)?),
        Kind::Enum(e) => {
            let go = go_enum_name(e);
            match v {
                J::Null => return Ok(None),
                J::Str(raw, _) => match e.get_value_by_name(&String::from_utf8_lossy(raw)) {
                    Some(ev) => Value::EnumNumber(ev.number()),
                    None => {
                        let shown = String::from_utf8_lossy(raw);
                        return Err(format!("unknown value {shown:?} for enum {go}"));
                    }
                },
                J::Num(n) => Value::EnumNumber(int::<i32>(n, &go)?),
                other => return Err(type_err(other.kind(), &go)),
            }
        }
        Kind::Bool => match v {
            J::Null => return Ok(None),
            J::Bool(b) => Value::Bool(*b),
            other => return Err(type_err(other.kind(), "bool")),
        },
        Kind::String => match v {
            J::Null => return Ok(None),
            J::Str(_, dec) => Value::String(String::from_utf8_lossy(dec).into_owned()),
            other => return Err(type_err(other.kind(), "string")),
        },
        Kind::Bytes => match v {
            J::Null => return Ok(None),
            J::Str(_, dec) => Value::Bytes(Bytes::from(go_base64(dec)?)),
            J::Arr(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut first_err = None;
                for it in items {
                    match it {
                        J::Num(n) => match int::<u8>(n, "uint8") {
                            Ok(b) => out.push(b),
                            Err(e) => {
                                first_err.get_or_insert(e);
                                out.push(0);
                            }
                        },
                        J::Null => out.push(0),
                        other => {
                            first_err.get_or_insert(type_err(other.kind(), "uint8"));
                            out.push(0);
                        }
                    }
                }
                if let Some(e) = first_err {
                    return Err(e);
                }
                Value::Bytes(Bytes::from(out))
            }
            other => return Err(type_err(other.kind(), "[]uint8")),
        },
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => match number(v, "int64")? {
            Some(n) => Value::I64(int::<i64>(&n, "int64")?),
            None => return Ok(None),
        },
        Kind::Uint64 | Kind::Fixed64 => match number(v, "uint64")? {
            Some(n) => Value::U64(int::<u64>(&n, "uint64")?),
            None => return Ok(None),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => match number(v, "int32")? {
            Some(n) => Value::I32(int::<i32>(&n, "int32")?),
            None => return Ok(None),
        },
        Kind::Uint32 | Kind::Fixed32 => match number(v, "uint32")? {
            Some(n) => Value::U32(int::<u32>(&n, "uint32")?),
            None => return Ok(None),
        },
        Kind::Float | Kind::Double => {
            let go = if matches!(k, Kind::Float) {
                "float32"
            } else {
                "float64"
            };
            match number(v, go)? {
                Some(n) => {
                    let x: f64 = std::str::from_utf8(&n)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| type_err(&format!("number {}", lossy(&n)), go))?;
                    if matches!(k, Kind::Float) {
                        Value::F32(x as f32)
                    } else {
                        Value::F64(x)
                    }
                }
                None => return Ok(None),
            }
        }
    }))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// jsonpb's number rule: a quoted value loses its quotes and is read again by `json.Unmarshal`.
/// Returns the number's source text, or `None` for a null.
fn number(v: &J, go: &str) -> Result<Option<Vec<u8>>, String> {
    match v {
        J::Null => Ok(None),
        J::Num(n) => Ok(Some(n.to_vec())),
        J::Str(raw, _) => match unmarshal_whole(raw)? {
            J::Null => Ok(None),
            J::Num(n) => Ok(Some(n.to_vec())),
            other => Err(type_err(other.kind(), go)),
        },
        other => Err(type_err(other.kind(), go)),
    }
}

/// `strconv.ParseInt/ParseUint(s, 10, bits)` as `encoding/json` uses it for integer targets.
fn int<T: std::str::FromStr>(n: &[u8], go: &str) -> Result<T, String> {
    std::str::from_utf8(n)
        .ok()
        .filter(|s| !s.starts_with('+'))
        .and_then(|s| s.parse::<T>().ok())
        .ok_or_else(|| type_err(&format!("number {}", lossy(n)), go))
}

/// Go's `base64.StdEncoding.Decode`, error offsets included (`illegal base64 data at input
/// byte N`); `\r` and `\n` are skipped; trailing bits are not checked.
fn go_base64(src: &[u8]) -> Result<Vec<u8>, String> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bad = |at: usize| format!("illegal base64 data at input byte {at}");
    let nl = |c: u8| c == b'\n' || c == b'\r';
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    while si < src.len() {
        let mut dbuf = [0u32; 4];
        let mut dlen = 4;
        let mut j = 0;
        let mut err = None;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                return Err(bad(si - j));
            }
            let c = src[si];
            si += 1;
            if let Some(d) = val(c) {
                dbuf[j] = d;
                j += 1;
                continue;
            }
            if nl(c) {
                continue;
            }
            if c != b'=' {
                return Err(bad(si - 1));
            }
            match j {
                0 | 1 => return Err(bad(si - 1)),
                2 => {
                    while si < src.len() && nl(src[si]) {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(bad(src.len()));
                    }
                    if src[si] != b'=' {
                        return Err(bad(si - 1));
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && nl(src[si]) {
                si += 1;
            }
            if si < src.len() {
                err = Some(bad(si));
            }
            dlen = j;
            break;
        }
        let v = dbuf[0] << 18 | dbuf[1] << 12 | dbuf[2] << 6 | dbuf[3];
        let b = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&b[..dlen - 1]);
        if let Some(e) = err {
            return Err(e);
        }
        if dlen < 4 {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_base64_offsets() {
        assert_eq!(go_base64(b"YQ==").unwrap(), b"a");
        assert_eq!(go_base64(b"YQ==\n").unwrap(), b"a");
        assert_eq!(go_base64(b"").unwrap(), b"");
        assert_eq!(
            go_base64(b"YQ").unwrap_err(),
            "illegal base64 data at input byte 0"
        );
        assert_eq!(
            go_base64(b"YQ-_").unwrap_err(),
            "illegal base64 data at input byte 2"
        );
        assert_eq!(
            go_base64(b"Y Q==").unwrap_err(),
            "illegal base64 data at input byte 1"
        );
        assert_eq!(
            go_base64(b"not base64!").unwrap_err(),
            "illegal base64 data at input byte 3"
        );
        assert_eq!(go_base64(b"YWJj").unwrap(), b"abc");
        assert_eq!(
            go_base64(b"YQ==YQ==").unwrap_err(),
            "illegal base64 data at input byte 4"
        );
    }

    /// Go's depth limit, and no stack overflow below it on a 2 MiB stack (tokio's default for
    /// worker threads), for the parser and for the schema walk of nested txns.
    #[test]
    fn nesting_depth_like_go_within_a_small_stack() {
        let t = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
                let r = |b: &str| {
                    decode::<crate::etcdserverpb::RangeRequest>(
                        "etcdserverpb.RangeRequest",
                        b.as_bytes(),
                    )
                };
                assert_eq!(
                    r(&deep(10_001)).unwrap_err(),
                    "invalid character '[' exceeded max depth"
                );
                assert_eq!(r(&"[".repeat(10_000)).unwrap_err(), "unexpected EOF");
                let ok = format!(r#"{{"key":"YQ==","x":{}}}"#, deep(9_999));
                assert!(r(&ok).is_ok());
                let nested = |n: usize| {
                    let mut t = r#"{"success":[{"request_range":{"key":"dC8w"}}]}"#.to_string();
                    for _ in 0..n {
                        t = format!(r#"{{"success":[{{"request_txn":{t}}}]}}"#);
                    }
                    decode::<crate::etcdserverpb::TxnRequest>(
                        "etcdserverpb.TxnRequest",
                        t.as_bytes(),
                    )
                };
                // Each nested txn is two message levels (RequestOp, TxnRequest).
                let mut ok = nested(48).expect("48 nested txns decode");
                for _ in 0..48 {
                    ok = match ok.success.remove(0).request {
                        Some(crate::etcdserverpb::request_op::Request::RequestTxn(t)) => t,
                        other => panic!("{other:?}"),
                    };
                }
                assert_eq!(ok.success.len(), 1);
                for n in [49, 50, 3000] {
                    assert_eq!(
                        nested(n).unwrap_err(),
                        "detcd: the request nests messages deeper than 99 levels",
                        "{n}"
                    );
                }
            })
            .unwrap();
        t.join().expect("no stack overflow");
    }

    #[test]
    fn quote_char_like_go() {
        assert_eq!(quote_char(b'x'), "'x'");
        assert_eq!(quote_char(b'\''), "'\\''");
        assert_eq!(quote_char(b'\n'), "'\\n'");
        assert_eq!(quote_char(0), "'\\x00'");
    }
}
