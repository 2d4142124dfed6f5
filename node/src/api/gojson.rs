//! Go's `encoding/json` syntax-error messages, for the members API's 400 answers (etcd
//! returns the decoder's error text verbatim, and clients match on it).

/// The message Go's decoder gives for the first syntax error in `input`, or `None` when the
/// input is syntactically valid JSON.
pub fn syntax_error(input: &[u8]) -> Option<String> {
    let mut p = Parser { s: input, i: 0 };
    p.ws();
    if let Err(e) = p.value() {
        return Some(e);
    }
    p.ws();
    if p.i < p.s.len() {
        return Some(format!(
            "invalid character {} after top-level value",
            p.quote(p.s[p.i])
        ));
    }
    None
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

const EOF: &str = "unexpected end of JSON input";

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn quote(&self, c: u8) -> String {
        match c {
            b'\'' => "'\\''".into(),
            b'"' => "'\"'".into(),
            c if c.is_ascii_graphic() || c == b' ' => format!("'{}'", c as char),
            c => format!("'\\x{c:02x}'"),
        }
    }

    fn peek(&self) -> Result<u8, String> {
        self.s.get(self.i).copied().ok_or_else(|| EOF.to_string())
    }

    fn value(&mut self) -> Result<(), String> {
        match self.peek()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string(),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            c => Err(format!(
                "invalid character {} looking for beginning of value",
                self.quote(c)
            )),
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), String> {
        for (k, expected) in word.bytes().enumerate() {
            let c = self.peek()?;
            if c != expected {
                return Err(format!(
                    "invalid character {} in literal {word} (expecting {})",
                    self.quote(c),
                    self.quote(word.as_bytes()[k])
                ));
            }
            self.i += 1;
        }
        Ok(())
    }

    fn number(&mut self) -> Result<(), String> {
        if self.peek()? == b'-' {
            self.i += 1;
        }
        let c = self.peek()?;
        if !c.is_ascii_digit() {
            return Err(format!(
                "invalid character {} in numeric literal",
                self.quote(c)
            ));
        }
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_digit()
                || matches!(self.s[self.i], b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            self.i += 1;
        }
        Ok(())
    }

    fn string(&mut self) -> Result<(), String> {
        self.i += 1;
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Ok(()),
                b'\\' => {
                    self.peek()?;
                    self.i += 1;
                }
                c if c < 0x20 => {
                    return Err(format!(
                        "invalid character {} in string literal",
                        self.quote(c)
                    ))
                }
                _ => {}
            }
        }
    }

    fn array(&mut self) -> Result<(), String> {
        self.i += 1;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.value()?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(());
                }
                c => {
                    return Err(format!(
                        "invalid character {} after array element",
                        self.quote(c)
                    ))
                }
            }
        }
    }

    fn object(&mut self) -> Result<(), String> {
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let c = self.peek()?;
            if c != b'"' {
                return Err(format!(
                    "invalid character {} looking for beginning of object key string",
                    self.quote(c)
                ));
            }
            self.string()?;
            self.ws();
            let c = self.peek()?;
            if c != b':' {
                return Err(format!(
                    "invalid character {} after object key",
                    self.quote(c)
                ));
            }
            self.i += 1;
            self.ws();
            self.value()?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Ok(());
                }
                c => {
                    return Err(format!(
                        "invalid character {} after object key:value pair",
                        self.quote(c)
                    ))
                }
            }
        }
    }
}

/// The message for a body that is valid JSON but of the wrong shape for `{"peerURLs": [..]}`.
pub fn type_error(input: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(input).unwrap_or_default();
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::String(_) => "string",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
        serde_json::Value::Null => "null",
    };
    match v.get("peerURLs") {
        Some(p) if !p.is_array() => {
            format!("json: cannot unmarshal {} into Go struct field memberCreateOrUpdateRequest.peerURLs of type []string", kind(p))
        }
        _ if !v.is_object() => format!(
            "json: cannot unmarshal {} into Go value of type httptypes.MemberCreateRequest",
            kind(&v)
        ),
        _ => "json: cannot unmarshal array element into Go value of type string".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_go() {
        assert_eq!(
            syntax_error(b"not json").unwrap(),
            "invalid character 'o' in literal null (expecting 'u')"
        );
        assert_eq!(syntax_error(b"").unwrap(), "unexpected end of JSON input");
        assert_eq!(
            syntax_error(b"{\"a\" 1}").unwrap(),
            "invalid character '1' after object key"
        );
        assert_eq!(
            syntax_error(b"{x}").unwrap(),
            "invalid character 'x' looking for beginning of object key string"
        );
        assert_eq!(
            syntax_error(b"[1 2]").unwrap(),
            "invalid character '2' after array element"
        );
        assert_eq!(syntax_error(b"{\"peerURLs\": [\"a\"]}"), None);
        assert_eq!(
            syntax_error(b"{} x").unwrap(),
            "invalid character 'x' after top-level value"
        );
    }
}
