//! OpenCLIP's `SimpleTokenizer` (CLIP byte-level BPE) in Rust.
//!
//! Matches `open_clip.tokenizer.SimpleTokenizer` with the default `clean="lower"`:
//! `whitespace_clean(basic_clean(text)).lower()` where
//! `basic_clean = strip(html.unescape(html.unescape(ftfy.fix_text(text))))`.
//!
//! ftfy coverage: every step of `ftfy.fix_text` with its default config is implemented
//! (HTML entity unescaping in "auto" mode, C1 controls, Latin ligatures, character width,
//! curly quotes, line breaks, terminal escapes, control characters, NFC) **except
//! `fix_encoding`**, ftfy's heuristic mojibake repair (`"cafÃ©"` → `"café"`). Captions that
//! contain mojibake are tokenized as they are, where OpenCLIP would first repair them.
//! Unicode tables (letters, lower-casing, NFC) are Rust's, which may be a newer Unicode
//! version than the Python that produced a given dataset's reference tokens. The HTML-entity and
//! ftfy tables are generated from Python into `tokenizer/` (see `tokenizer/tables.rs`).

mod tables;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::{Captures, Regex};
use unicode_normalization::UnicodeNormalization;

use tables::{
    FTFY_C1, FTFY_LIGATURES, FTFY_UPPER_ENTITIES, FTFY_WIDTH_MAP, HTML5_ENTITIES,
    HTML_INVALID_CHARREFS,
};

/// `<start_of_text>` id.
pub const SOT_TOKEN: u32 = 49406;
/// `<end_of_text>` id.
pub const EOT_TOKEN: u32 = 49407;
/// Vocabulary size (256 bytes + 256 bytes with `</w>` + 48,894 merges + 2 specials).
pub const VOCAB_SIZE: usize = 49408;
/// OpenCLIP's default context length.
pub const DEFAULT_CONTEXT_LENGTH: usize = 77;

const NUM_MERGES: usize = 49152 - 256 - 2;
const BPE_GZ: &[u8] = include_bytes!("bpe_simple_vocab_16e6.txt.gz");
const CACHE_LIMIT: usize = 100_000;

/// CLIP BPE tokenizer with OpenCLIP's text cleaning. `Send + Sync`; share it behind an `Arc`.
pub struct Tokenizer {
    /// Vocab id of byte `b` as a word-inner symbol.
    byte_id: [u32; 256],
    /// Vocab id of byte `b` as the last symbol of a word (`</w>` suffix).
    byte_id_end: [u32; 256],
    /// (left id, right id) → merge rank; the merged symbol's id is `512 + rank`.
    merges: HashMap<(u32, u32), u32>,
    /// id → vocab string (byte-level unicode, `</w>` marks end of word).
    decoder: Vec<String>,
    byte_decoder: HashMap<char, u8>,
    pat: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self::new()
    }
}

/// GPT-2/CLIP `bytes_to_unicode`: byte values in vocab order and the char each maps to.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b as u8, char::from_u32(c).unwrap()))
        .collect()
}

impl Tokenizer {
    /// Tokenizer over the embedded CLIP vocabulary (`bpe_simple_vocab_16e6.txt.gz`).
    pub fn new() -> Tokenizer {
        use std::io::Read;
        let mut text = String::new();
        flate2::read::GzDecoder::new(BPE_GZ)
            .read_to_string(&mut text)
            .expect("embedded BPE vocab is valid gzip/utf-8");
        let lines: Vec<&str> = text.split('\n').collect();
        let merge_lines = &lines[1..1 + NUM_MERGES];

        let b2u = bytes_to_unicode();
        let mut decoder: Vec<String> = Vec::with_capacity(VOCAB_SIZE);
        let mut byte_id = [0u32; 256];
        let mut byte_id_end = [0u32; 256];
        let mut byte_decoder = HashMap::new();
        for (i, &(b, c)) in b2u.iter().enumerate() {
            byte_id[b as usize] = i as u32;
            byte_id_end[b as usize] = (i + 256) as u32;
            byte_decoder.insert(c, b);
            decoder.push(c.to_string());
        }
        for &(_, c) in b2u.iter() {
            decoder.push(format!("{c}</w>"));
        }
        let mut encoder: HashMap<String, u32> = decoder
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let mut merges = HashMap::with_capacity(NUM_MERGES);
        for (rank, line) in merge_lines.iter().enumerate() {
            let mut parts = line.split_whitespace();
            let (a, b) = (parts.next().unwrap(), parts.next().unwrap());
            let (ia, ib) = (encoder[a], encoder[b]);
            merges.insert((ia, ib), rank as u32);
            let joined = format!("{a}{b}");
            let id = decoder.len() as u32;
            encoder.insert(joined.clone(), id);
            decoder.push(joined);
        }
        decoder.push("<start_of_text>".into());
        decoder.push("<end_of_text>".into());
        debug_assert_eq!(decoder.len(), VOCAB_SIZE);
        let pat = Regex::new(
            r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
        )
        .unwrap();
        Tokenizer {
            byte_id,
            byte_id_end,
            merges,
            decoder,
            byte_decoder,
            pat,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Vocabulary size (49,408).
    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }

    /// BPE ids of `text` after OpenCLIP's cleaning ("lower"), without sot/eot.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean_lower(text);
        let mut out = Vec::new();
        for m in self.pat.find_iter(&cleaned) {
            let tok = m.as_str();
            match tok {
                "<start_of_text>" => out.push(SOT_TOKEN),
                "<end_of_text>" => out.push(EOT_TOKEN),
                _ => self.bpe_into(tok, &mut out),
            }
        }
        out
    }

    fn bpe_into(&self, token: &str, out: &mut Vec<u32>) {
        if let Some(ids) = self.cache.lock().unwrap().get(token) {
            out.extend_from_slice(ids);
            return;
        }
        let ids = self.bpe(token.as_bytes());
        out.extend_from_slice(&ids);
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(token.to_string(), ids);
    }

    fn bpe(&self, bytes: &[u8]) -> Vec<u32> {
        let n = bytes.len();
        let mut word: Vec<u32> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if i + 1 == n {
                    self.byte_id_end[b as usize]
                } else {
                    self.byte_id[b as usize]
                }
            })
            .collect();
        while word.len() > 1 {
            let mut best: Option<u32> = None;
            for w in word.windows(2) {
                if let Some(&r) = self.merges.get(&(w[0], w[1])) {
                    if best.is_none_or(|b| r < b) {
                        best = Some(r);
                    }
                }
            }
            let Some(rank) = best else { break };
            let merged = 512 + rank;
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && self.merges.get(&(word[i], word[i + 1])) == Some(&rank) {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        word
    }

    /// OpenCLIP's `tokenize(texts, context_length)`: `[sot] bpe [eot]` zero-padded; longer input
    /// is cut to `context_length` with the last token set to eot. Row-major
    /// `[texts.len(), context_length]`.
    pub fn tokenize(&self, texts: &[&str], context_length: usize) -> Vec<i64> {
        let mut out = vec![0i64; texts.len() * context_length];
        for (row, text) in out.chunks_mut(context_length.max(1)).zip(texts) {
            self.tokenize_into(text, row);
        }
        out
    }

    /// Tokenize one text into `row` (its length is the context length).
    pub fn tokenize_into(&self, text: &str, row: &mut [i64]) {
        let ctx = row.len();
        row.fill(0);
        if ctx == 0 {
            return;
        }
        let ids = self.encode(text);
        let mut toks = Vec::with_capacity(ids.len() + 2);
        toks.push(SOT_TOKEN);
        toks.extend_from_slice(&ids);
        toks.push(EOT_TOKEN);
        if toks.len() > ctx {
            toks.truncate(ctx);
            toks[ctx - 1] = EOT_TOKEN;
        }
        for (dst, &t) in row.iter_mut().zip(&toks) {
            *dst = t as i64;
        }
    }

    /// OpenCLIP's `decode`: ids → text with `</w>` turned into spaces (lossy utf-8).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(s) = self.decoder.get(id as usize) else {
                continue;
            };
            for c in s.chars() {
                match self.byte_decoder.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.to_string().as_bytes()),
                }
            }
        }
        String::from_utf8_lossy(&bytes).replace("</w>", " ")
    }
}

// ---------------------------------------------------------------------------------------------
// Cleaning
// ---------------------------------------------------------------------------------------------

/// Python's `str.isspace`.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// OpenCLIP's `_clean_lower`: `whitespace_clean(basic_clean(x)).lower()`.
pub fn clean_lower(text: &str) -> String {
    whitespace_clean(&basic_clean(text)).to_lowercase()
}

/// OpenCLIP's `basic_clean`: ftfy, then HTML unescaped twice; its `strip()` is left to
/// [`whitespace_clean`], which every caller applies after it and which strips too.
pub(crate) fn basic_clean(text: &str) -> String {
    html_unescape(&html_unescape(&fix_text(text)))
}

/// OpenCLIP's `whitespace_clean`: Python's `" ".join(text.split())`.
pub(crate) fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, w) in text.split(py_isspace).filter(|w| !w.is_empty()).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

struct Tables {
    html5: HashMap<String, String>,
    invalid_charrefs: HashMap<u32, String>,
    ftfy_entities: HashMap<String, String>,
    width: HashMap<char, String>,
    ligatures: HashMap<char, String>,
    c1: HashMap<char, String>,
    charref_re: Regex,
    ftfy_entity_re: Regex,
    ansi_re: Regex,
}

fn parse_hex_chars(s: &str) -> String {
    s.split(' ')
        .filter(|h| !h.is_empty())
        .map(|h| char::from_u32(u32::from_str_radix(h, 16).unwrap()).unwrap())
        .collect()
}

fn parse_table(src: &str) -> Vec<(&str, String)> {
    src.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            (k, parse_hex_chars(v))
        })
        .collect()
}

fn char_table(src: &str) -> HashMap<char, String> {
    parse_table(src)
        .into_iter()
        .map(|(k, v)| {
            (
                char::from_u32(u32::from_str_radix(k, 16).unwrap()).unwrap(),
                v,
            )
        })
        .collect()
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let html5: HashMap<String, String> = parse_table(HTML5_ENTITIES)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut ftfy_entities: HashMap<String, String> = html5
            .iter()
            .filter(|(k, _)| k.ends_with(';'))
            .map(|(k, v)| (format!("&{k}"), v.clone()))
            .collect();
        for (k, v) in parse_table(FTFY_UPPER_ENTITIES) {
            ftfy_entities.insert(format!("&{k}"), v);
        }
        Tables {
            html5,
            invalid_charrefs: parse_table(HTML_INVALID_CHARREFS)
                .into_iter()
                .map(|(k, v)| (u32::from_str_radix(k, 16).unwrap(), v))
                .collect(),
            ftfy_entities,
            width: char_table(FTFY_WIDTH_MAP),
            ligatures: char_table(FTFY_LIGATURES),
            c1: char_table(FTFY_C1),
            charref_re: Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)")
                .unwrap(),
            ftfy_entity_re: Regex::new(r"&#?[0-9A-Za-z]{1,24};").unwrap(),
            ansi_re: Regex::new(r"\x1b\[((?:\d|;)*)([a-zA-Z])").unwrap(),
        }
    })
}

fn is_py_invalid_codepoint(n: u32) -> bool {
    matches!(n, 0x1..=0x8 | 0xB | 0xE..=0x1F | 0x7F..=0x9F | 0xFDD0..=0xFDEF)
        || (n & 0xFFFE == 0xFFFE && n <= 0x10FFFF)
}

/// Python's `html.unescape`.
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let t = tables();
    t.charref_re
        .replace_all(s, |caps: &Captures| {
            let g = &caps[1];
            if let Some(num) = g.strip_prefix('#') {
                let (digits, radix) = match num.strip_prefix(['x', 'X']) {
                    Some(h) => (h, 16),
                    None => (num, 10),
                };
                let digits = digits.trim_end_matches(';');
                let n = u32::from_str_radix(digits, radix).unwrap_or(u32::MAX);
                if let Some(r) = t.invalid_charrefs.get(&n) {
                    return r.clone();
                }
                if (0xD800..=0xDFFF).contains(&n) || n > 0x10FFFF {
                    return "\u{FFFD}".to_string();
                }
                if is_py_invalid_codepoint(n) {
                    return String::new();
                }
                char::from_u32(n).map(String::from).unwrap_or_default()
            } else {
                if let Some(v) = t.html5.get(g) {
                    return v.clone();
                }
                let idx: Vec<usize> = g.char_indices().map(|(i, _)| i).collect();
                for x in (2..idx.len()).rev() {
                    if let Some(v) = t.html5.get(&g[..idx[x]]) {
                        return format!("{v}{}", &g[idx[x]..]);
                    }
                }
                format!("&{g}")
            }
        })
        .into_owned()
}

/// ftfy's `unescape_html`: only semicolon-terminated entities, plus upper-cased Latin ones.
fn ftfy_unescape_html(s: &str) -> String {
    let t = tables();
    t.ftfy_entity_re
        .replace_all(s, |caps: &Captures| {
            let m = &caps[0];
            if let Some(v) = t.ftfy_entities.get(m) {
                v.clone()
            } else if m.starts_with("&#") {
                let u = html_unescape(m);
                if u.contains(';') {
                    m.to_string()
                } else {
                    u
                }
            } else {
                m.to_string()
            }
        })
        .into_owned()
}

fn is_ftfy_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}

/// `ftfy.fix_text` with the default config, minus `fix_encoding` (mojibake repair).
pub fn fix_text(text: &str) -> String {
    let mut unescape = true; // unescape_html="auto": off from the first segment containing '<'
    let mut out = String::with_capacity(text.len());
    for segment in text.split_inclusive('\n') {
        if unescape && segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
    }
    out
}

fn fix_segment(text: &str, unescape: bool) -> String {
    let t = tables();
    let mut text = text.to_string();
    loop {
        let orig = text.clone();
        if unescape && text.contains('&') {
            text = ftfy_unescape_html(&text);
        }
        // fix_encoding (mojibake repair) is not implemented.
        let mut s = String::with_capacity(text.len());
        for c in text.chars() {
            // fix_c1_controls, then ligatures, then width, then quotes (each maps to chars the
            // later ones leave alone, so a single pass per char is equivalent).
            let mapped =
                t.c1.get(&c)
                    .or_else(|| t.ligatures.get(&c))
                    .or_else(|| t.width.get(&c));
            if let Some(r) = mapped {
                s.extend(r.chars().map(uncurl));
            } else {
                s.push(uncurl(c));
            }
        }
        // fix_line_breaks
        let s = s
            .replace("\r\n", "\n")
            .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
        // remove_terminal_escapes
        let s = if s.contains('\x1b') {
            t.ansi_re.replace_all(&s, "").into_owned()
        } else {
            s
        };
        // remove_control_chars
        let s: String = s.chars().filter(|&c| !is_ftfy_control(c)).collect();
        text = s.nfc().collect();
        if text == orig {
            return text;
        }
    }
}

fn uncurl(c: char) -> char {
    match c {
        '\u{2BC}' | '\u{2018}'..='\u{201B}' => '\'',
        '\u{201C}'..='\u{201F}' => '"',
        _ => c,
    }
}
