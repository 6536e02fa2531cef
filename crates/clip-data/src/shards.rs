//! Shard URL lists as OpenCLIP / webdataset accept them.
//!
//! `--train-data "a/{00000..00009}.tar::pipe:aws s3 cp s3://b/{x,y}.tar -"` is split on `::`
//! into sources, and each source is brace-expanded:
//! - `{00000..41407}`: numeric range, inclusive; zero padding to the width of the wider bound
//!   when either bound has a leading zero (as python's `braceexpand` does); descending ranges and
//!   an optional step (`{0..10..2}`) work too;
//! - `{a,b,c}`: alternatives, each of which may itself contain groups (nesting).
//!
//! Malformed patterns are an error that names the (0-based, character) position, e.g. the model
//! card's `{laion{00000..xxxxx}.tar`: an unbalanced `{` at 0. A group that is neither a range nor a
//! list of alternatives (`{abc}`, `{a..b}`) is an error too rather than a silent literal.

use anyhow::{bail, Context, Result};

/// One `::`-separated source: its expanded URLs and its upsampling weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub pattern: String,
    pub urls: Vec<String>,
    pub weight: f64,
}

/// A full shard list: every URL with the weight of the source it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardList {
    pub sources: Vec<Source>,
}

impl ShardList {
    /// Parse `--train-data` and the optional `--train-data-upsampling-factors`.
    pub fn parse(spec: &str, upsampling: Option<&str>) -> Result<ShardList> {
        let parts: Vec<&str> = spec.split("::").collect();
        let weights: Vec<f64> = match upsampling {
            None => vec![1.0; parts.len()],
            Some(w) => {
                let ws: Vec<&str> = w.split("::").collect();
                if ws.len() != parts.len() {
                    bail!(
                        "expected as many upsampling factors as data sources: {} sources in {spec:?}, {} factors in {w:?}",
                        parts.len(),
                        ws.len()
                    );
                }
                ws.iter()
                    .map(|x| {
                        let v: f64 = x
                            .trim()
                            .parse()
                            .with_context(|| format!("upsampling factor {x:?} is not a number"))?;
                        if !(v.is_finite() && v >= 0.0) {
                            bail!("upsampling factor {x:?} must be finite and >= 0");
                        }
                        Ok(v)
                    })
                    .collect::<Result<_>>()?
            }
        };
        let mut sources = Vec::new();
        for (p, w) in parts.iter().zip(weights) {
            if p.trim().is_empty() {
                bail!("empty data source in {spec:?} (check the '::' separators)");
            }
            let urls = expand(p).with_context(|| format!("bad shard pattern {p:?}"))?;
            sources.push(Source {
                pattern: p.to_string(),
                urls,
                weight: w,
            });
        }
        if sources.iter().all(|s| s.weight == 0.0) {
            bail!("all upsampling factors are zero");
        }
        Ok(ShardList { sources })
    }

    /// All URLs in order (sources concatenated).
    pub fn urls(&self) -> Vec<String> {
        self.sources
            .iter()
            .flat_map(|s| s.urls.iter().cloned())
            .collect()
    }

    /// Per-URL weights, aligned with [`ShardList::urls`] (OpenCLIP gives every URL its source's factor).
    pub fn weights(&self) -> Vec<f64> {
        self.sources
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.weight, s.urls.len()))
            .collect()
    }

    pub fn has_upsampling(&self) -> bool {
        self.sources.iter().any(|s| s.weight != 1.0)
    }
}

/// OpenCLIP's `get_dataset_size`: the total of `sizes.json` (`{"shard.tar": n, ...}`, as
/// `clip-tool make-shards` writes it) in the folder of the first shard, summed over the given
/// shards; `None` when the shards are not local files or the file is missing or incomplete.
pub fn dataset_size(urls: &[String]) -> Option<u64> {
    let sizes = shard_sizes(urls)?;
    Some(urls.iter().map(|u| sizes[u]).sum())
}

/// Every shard's sample count from that `sizes.json`, by URL (same conditions as
/// [`dataset_size`]).
pub fn shard_sizes(urls: &[String]) -> Option<std::collections::HashMap<String, u64>> {
    let first = urls.first()?;
    if first.starts_with("pipe:") || first.contains("://") && !first.starts_with("file://") {
        return None;
    }
    let first = first.strip_prefix("file://").unwrap_or(first);
    let dir = std::path::Path::new(first).parent()?;
    let sizes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sizes.json")).ok()?).ok()?;
    urls.iter()
        .map(|u| {
            let name = u.rsplit('/').next()?;
            Some((u.clone(), sizes.get(name)?.as_u64()?))
        })
        .collect()
}

/// Expand `::`-separated sources (no weights) into one URL list.
pub fn expand_urls(spec: &str) -> Result<Vec<String>> {
    Ok(ShardList::parse(spec, None)?.urls())
}

/// Brace-expand one pattern.
pub fn expand(pattern: &str) -> Result<Vec<String>> {
    let chars: Vec<char> = pattern.chars().collect();
    // Balance check first so that the error names the real culprit (the unclosed brace).
    let mut stack = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '{' => stack.push(i),
            '}' if stack.pop().is_none() => {
                bail!(
                    "unbalanced '}}' at position {i} in {pattern:?}{}",
                    caret(pattern, i)
                );
            }
            _ => {}
        }
    }
    if let Some(&i) = stack.first() {
        bail!(
            "unbalanced '{{' at position {i} in {pattern:?} (never closed){}",
            caret(pattern, i)
        );
    }
    let mut p = Parser {
        chars: &chars,
        pos: 0,
        pattern,
    };
    let out = p.seq(false)?;
    debug_assert_eq!(p.pos, chars.len());
    Ok(out)
}

fn caret(pattern: &str, i: usize) -> String {
    format!("\n  {pattern}\n  {}^", " ".repeat(i))
}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
    pattern: &'a str,
}

const MAX_EXPANSION: usize = 10_000_000;

impl Parser<'_> {
    /// A sequence of literals and groups; inside a group it stops at `,` or `}`.
    fn seq(&mut self, in_group: bool) -> Result<Vec<String>> {
        let mut acc = vec![String::new()];
        let mut lit = String::new();
        while self.pos < self.chars.len() {
            let c = self.chars[self.pos];
            if in_group && (c == ',' || c == '}') {
                break;
            }
            if c == '{' {
                let alts = self.group()?;
                let lit_now = std::mem::take(&mut lit);
                if acc.len().saturating_mul(alts.len()) > MAX_EXPANSION {
                    bail!(
                        "pattern {:?} expands to more than {MAX_EXPANSION} URLs",
                        self.pattern
                    );
                }
                let mut next = Vec::with_capacity(acc.len() * alts.len());
                for a in &acc {
                    for b in &alts {
                        next.push(format!("{a}{lit_now}{b}"));
                    }
                }
                acc = next;
                continue;
            }
            lit.push(c);
            self.pos += 1;
        }
        for a in &mut acc {
            a.push_str(&lit);
        }
        Ok(acc)
    }

    fn group(&mut self) -> Result<Vec<String>> {
        let open = self.pos;
        self.pos += 1; // '{'
        let mut alts: Vec<Vec<String>> = Vec::new();
        let mut nested = false;
        loop {
            let start = self.pos;
            let part = self.seq(true)?;
            if self.chars[start..self.pos].contains(&'{') {
                nested = true;
            }
            alts.push(part);
            match self.chars.get(self.pos) {
                Some(',') => self.pos += 1,
                Some('}') => {
                    self.pos += 1;
                    break;
                }
                _ => bail!(
                    "unbalanced '{{' at position {open} in {:?}{}",
                    self.pattern,
                    caret(self.pattern, open)
                ),
            }
        }
        if alts.len() > 1 {
            return Ok(alts.into_iter().flatten().collect());
        }
        let body: String = self.chars[open + 1..self.pos - 1].iter().collect();
        if nested {
            bail!(
                "brace group at position {open} in {:?} has a single alternative {body:?} (need a range a..b or alternatives a,b){}",
                self.pattern,
                caret(self.pattern, open)
            );
        }
        range(&body).map_err(|e| {
            anyhow::anyhow!(
                "bad brace group {{{body}}} at position {open} in {:?}: {e}{}",
                self.pattern,
                caret(self.pattern, open)
            )
        })
    }
}

fn range(body: &str) -> Result<Vec<String>> {
    let parts: Vec<&str> = body.split("..").collect();
    if parts.len() < 2 {
        bail!("neither a numeric range (a..b) nor alternatives (a,b)");
    }
    if parts.len() > 3 {
        bail!("a range has the form a..b or a..b..step");
    }
    let num = |s: &str| -> Result<i64> {
        if s.is_empty()
            || !s
                .trim_start_matches('-')
                .chars()
                .all(|c| c.is_ascii_digit())
            || s.trim_start_matches('-').is_empty()
        {
            bail!("non-numeric range bound {s:?}");
        }
        s.parse::<i64>()
            .map_err(|_| anyhow::anyhow!("range bound {s:?} out of range"))
    };
    let a = num(parts[0])?;
    let b = num(parts[1])?;
    let step = if parts.len() == 3 {
        num(parts[2])?.unsigned_abs().max(1)
    } else {
        1
    };
    let padded = |s: &str| {
        let d = s.trim_start_matches('-');
        d.len() > 1 && d.starts_with('0')
    };
    let width = if padded(parts[0]) || padded(parts[1]) {
        parts[0].len().max(parts[1].len())
    } else {
        0
    };
    let n = (a - b).unsigned_abs() / step + 1;
    if n as usize > MAX_EXPANSION {
        bail!("range expands to {n} items");
    }
    let mut out = Vec::with_capacity(n as usize);
    let mut v = a;
    for _ in 0..n {
        out.push(if width > 0 {
            if v < 0 {
                format!("-{:0w$}", -v, w = width - 1)
            } else {
                format!("{v:0width$}")
            }
        } else {
            v.to_string()
        });
        if a <= b {
            v += step as i64
        } else {
            v -= step as i64
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_padding() {
        assert_eq!(
            expand("s-{00000..00002}.tar").unwrap(),
            ["s-00000.tar", "s-00001.tar", "s-00002.tar"]
        );
        assert_eq!(expand("{8..11}").unwrap(), ["8", "9", "10", "11"]);
        assert_eq!(expand("{098..101}").unwrap(), ["098", "099", "100", "101"]);
        assert_eq!(expand("{3..1}").unwrap(), ["3", "2", "1"]);
        assert_eq!(expand("{0..6..3}").unwrap(), ["0", "3", "6"]);
        assert_eq!(expand("{00000..41407}").unwrap().len(), 41408);
        assert_eq!(expand("plain.tar").unwrap(), ["plain.tar"]);
        assert_eq!(expand("").unwrap(), [""]);
    }

    #[test]
    fn alternatives_and_nesting() {
        assert_eq!(
            expand("{a,b}/{0..1}").unwrap(),
            ["a/0", "a/1", "b/0", "b/1"]
        );
        assert_eq!(
            expand("x{a,b{1..2},}y").unwrap(),
            ["xay", "xb1y", "xb2y", "xy"]
        );
        assert_eq!(expand("{a,{b,c}}").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            expand("pipe:aws s3 cp s3://bk/{00..01}.tar -").unwrap(),
            [
                "pipe:aws s3 cp s3://bk/00.tar -",
                "pipe:aws s3 cp s3://bk/01.tar -"
            ]
        );
    }

    #[test]
    fn sources_and_weights() {
        let l = ShardList::parse("a{0..1}.tar::b{0..2}.tar", Some("1::2.5")).unwrap();
        assert_eq!(l.urls(), ["a0.tar", "a1.tar", "b0.tar", "b1.tar", "b2.tar"]);
        assert_eq!(l.weights(), [1.0, 1.0, 2.5, 2.5, 2.5]);
        assert!(l.has_upsampling());
        assert!(ShardList::parse("a::b", Some("1")).is_err());
        assert!(ShardList::parse("a::b", Some("1::x")).is_err());
        assert!(ShardList::parse("a::", None).is_err());
        assert_eq!(expand_urls("a::b").unwrap(), ["a", "b"]);
    }

    fn err(p: &str) -> String {
        format!("{:#}", expand(p).unwrap_err())
    }

    #[test]
    fn malformed() {
        let e = err("{laion{00000..xxxxx}.tar");
        assert!(e.contains("unbalanced '{' at position 0"), "{e}");
        let e = err("laion/{00000..xxxxx}.tar");
        assert!(e.contains("position 6") && e.contains("non-numeric"), "{e}");
        let e = err("a}b");
        assert!(e.contains("unbalanced '}' at position 1"), "{e}");
        let e = err("a{0..1");
        assert!(e.contains("position 1"), "{e}");
        let e = err("a{abc}");
        assert!(e.contains("position 1"), "{e}");
        let e = err("x{{a,b}}");
        assert!(e.contains("position 1"), "{e}");
        let e = format!(
            "{:#}",
            ShardList::parse("ok{0..1}::{laion{00000..xxxxx}.tar", None).unwrap_err()
        );
        assert!(e.contains("position 0") && e.contains("laion"), "{e}");
    }
}
