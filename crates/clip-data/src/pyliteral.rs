//! Python literals as `ast.literal_eval` reads them, for `--aug-cfg key=value` values
//! (`scale=(0.5, 1.0)`, `re_prob=0.4`, `use_timm=True`): parsed once here for both the flag
//! parser (clip-train's params) and the augmentation config ([`crate::transform::AugCfg`]).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub enum PyLiteral {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<PyLiteral>),
    List(Vec<PyLiteral>),
    Dict(Vec<(PyLiteral, PyLiteral)>),
}

impl PyLiteral {
    /// `ast.literal_eval(text)`, falling back to the text itself where Python would raise
    /// ValueError (a bare name such as `bicubic`), as OpenCLIP's ParseKwargs does. What Python
    /// would reject as a SyntaxError (OpenCLIP then crashes) is an error here.
    pub fn parse_or_string(text: &str) -> Result<PyLiteral, String> {
        let mut p = LitParser {
            s: text.as_bytes(),
            i: 0,
        };
        match p.value().and_then(|v| {
            p.ws();
            if p.i == p.s.len() {
                Ok(v)
            } else {
                Err(format!(
                    "unexpected {:?} at column {}",
                    &text[p.i..],
                    p.i + 1
                ))
            }
        }) {
            Ok(v) => Ok(v),
            Err(_) if is_dotted_name(text) => Ok(PyLiteral::Str(text.to_owned())),
            Err(e) => Err(format!("not a Python literal ({e})")),
        }
    }

    /// The value as a number, as Python arithmetic sees it (bools are 0 and 1).
    pub fn num(&self) -> Option<f64> {
        match self {
            PyLiteral::Bool(b) => Some(*b as i64 as f64),
            PyLiteral::Int(i) => Some(*i as f64),
            PyLiteral::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Python's truth value.
    pub fn truthy(&self) -> bool {
        match self {
            PyLiteral::None => false,
            PyLiteral::Bool(b) => *b,
            PyLiteral::Int(i) => *i != 0,
            PyLiteral::Float(f) => *f != 0.0,
            PyLiteral::Str(s) => !s.is_empty(),
            PyLiteral::Tuple(v) | PyLiteral::List(v) => !v.is_empty(),
            PyLiteral::Dict(v) => !v.is_empty(),
        }
    }

    /// The items of a tuple or list.
    pub fn items(&self) -> Option<&[PyLiteral]> {
        match self {
            PyLiteral::Tuple(v) | PyLiteral::List(v) => Some(v),
            _ => None,
        }
    }
}

fn is_dotted_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && s.split('.').all(|part| {
            let mut c = part.chars();
            matches!(c.next(), Some(f) if f.is_alphabetic() || f == '_')
                && c.all(|ch| ch.is_alphanumeric() || ch == '_')
        })
}

struct LitParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl LitParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at column {}", self.i + 1))
    }

    fn value(&mut self) -> Result<PyLiteral, String> {
        self.ws();
        match self.peek() {
            None => self.err("unexpected end"),
            Some(b'(') => self.seq(b')', true),
            Some(b'[') => self.seq(b']', false),
            Some(b'{') => self.dict(),
            Some(q @ (b'\'' | b'"')) => self.string(q),
            Some(c) if c == b'-' || c == b'+' || c == b'.' || c.is_ascii_digit() => self.number(),
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
                {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    b"True" => Ok(PyLiteral::Bool(true)),
                    b"False" => Ok(PyLiteral::Bool(false)),
                    b"None" => Ok(PyLiteral::None),
                    _ => {
                        self.i = start;
                        self.err("not a literal")
                    }
                }
            }
        }
    }

    /// A tuple or list; `(x)` without a comma is just `x`, as in Python.
    fn seq(&mut self, close: u8, tuple: bool) -> Result<PyLiteral, String> {
        self.i += 1;
        let mut items = vec![];
        let mut comma = false;
        loop {
            self.ws();
            if self.peek() == Some(close) {
                self.i += 1;
                break;
            }
            items.push(self.value()?);
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    comma = true;
                }
                Some(c) if c == close => {}
                _ => return self.err(&format!("expected ',' or '{}'", close as char)),
            }
        }
        Ok(match (tuple, items.len(), comma) {
            (true, 1, false) => items.pop().expect("one item"),
            (true, ..) => PyLiteral::Tuple(items),
            _ => PyLiteral::List(items),
        })
    }

    fn dict(&mut self) -> Result<PyLiteral, String> {
        self.i += 1;
        let mut items = vec![];
        loop {
            self.ws();
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(PyLiteral::Dict(items));
            }
            let k = self.value()?;
            self.ws();
            if self.peek() != Some(b':') {
                return self.err("expected ':'");
            }
            self.i += 1;
            let v = self.value()?;
            items.push((k, v));
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }

    fn string(&mut self, quote: u8) -> Result<PyLiteral, String> {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                c if c == quote => {
                    return Ok(PyLiteral::Str(String::from_utf8_lossy(&out).into_owned()))
                }
                b'\\' => {
                    let e = self
                        .peek()
                        .ok_or_else(|| "unterminated string".to_string())?;
                    self.i += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'0' => 0,
                        other => other,
                    });
                }
                c => out.push(c),
            }
        }
        self.err("unterminated string")
    }

    fn number(&mut self) -> Result<PyLiteral, String> {
        let start = self.i;
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.i += 1;
            self.ws();
        }
        let digits_start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || matches!(self.s[self.i], b'.' | b'_'))
            || (self.i > digits_start
                && matches!(self.s[self.i - 1], b'e' | b'E')
                && matches!(self.peek(), Some(b'-' | b'+')))
        {
            self.i += 1;
        }
        let sign = if self.s[start] == b'-' { "-" } else { "" };
        let body = std::str::from_utf8(&self.s[digits_start..self.i])
            .map_err(|_| "bad number".to_string())?
            .replace('_', "");
        let text = format!("{sign}{body}");
        if body.is_empty() {
            return self.err("expected a number");
        }
        let is_float = body.contains(['.', 'e', 'E']) && !body.starts_with("0x");
        if !is_float {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(PyLiteral::Int(i));
            }
        } else if body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        {
            if let Ok(f) = text.parse::<f64>() {
                return Ok(PyLiteral::Float(f));
            }
        }
        self.i = start;
        self.err(&format!("invalid number {text:?}"))
    }
}

impl Serialize for PyLiteral {
    /// As Python's json.dumps writes the value (tuples as arrays).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PyLiteral::None => s.serialize_none(),
            PyLiteral::Bool(b) => s.serialize_bool(*b),
            PyLiteral::Int(i) => s.serialize_i64(*i),
            PyLiteral::Float(f) => s.serialize_f64(*f),
            PyLiteral::Str(t) => s.serialize_str(t),
            PyLiteral::Tuple(v) | PyLiteral::List(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            PyLiteral::Dict(items) => {
                let mut m = s.serialize_map(Some(items.len()))?;
                for (k, v) in items {
                    let key = match k {
                        PyLiteral::Str(t) => t.clone(),
                        other => serde_json::to_string(other).map_err(serde::ser::Error::custom)?,
                    };
                    m.serialize_entry(&key, v)?;
                }
                m.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PyLiteral::{self, *};

    fn p(s: &str) -> Result<PyLiteral, String> {
        PyLiteral::parse_or_string(s)
    }

    #[test]
    fn reads_the_literals_aug_cfg_uses() {
        assert_eq!(p("(0.5, 1.0)"), Ok(Tuple(vec![Float(0.5), Float(1.0)])));
        assert!(p("(3/4, 4/3)").is_err(), "division is not a literal");
        assert_eq!(p("[0.08,1]"), Ok(List(vec![Float(0.08), Int(1)])));
        assert_eq!(p("0.4"), Ok(Float(0.4)));
        assert_eq!(p("1"), Ok(Int(1)));
        assert_eq!(p("-2e-3"), Ok(Float(-0.002)));
        assert_eq!(p("True"), Ok(Bool(true)));
        assert_eq!(p("None"), Ok(None));
        assert_eq!(p("(1,)"), Ok(Tuple(vec![Int(1)])));
        assert_eq!(p("(1)"), Ok(Int(1)));
        assert_eq!(p("'pixel'"), Ok(Str("pixel".into())));
        assert_eq!(p("{'a': 1}"), Ok(Dict(vec![(Str("a".into()), Int(1))])));
    }

    #[test]
    fn bare_names_fall_back_to_strings_and_syntax_errors_are_errors() {
        assert_eq!(p("bicubic"), Ok(Str("bicubic".into())));
        assert_eq!(p("torch.float"), Ok(Str("torch.float".into())));
        assert!(p("(0.5, 1.0").is_err());
        assert!(p("0.4.5").is_err());
        assert!(p("").is_err());
        assert!(p("a b").is_err());
    }
}
