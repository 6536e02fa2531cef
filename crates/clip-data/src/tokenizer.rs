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
//! version than the Python that produced a given dataset's reference tokens.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::{Captures, Regex};
use unicode_normalization::UnicodeNormalization;

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
    let t = fix_text(text);
    let t = html_unescape(&html_unescape(&t));
    // basic_clean's strip() is subsumed by whitespace_clean's split/join.
    let mut out = String::with_capacity(t.len());
    for (i, w) in t.split(py_isspace).filter(|w| !w.is_empty()).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(w);
    }
    out.to_lowercase()
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

// ---------------------------------------------------------------------------------------------
// Tables generated from Python's html.entities and ftfy 6.3 (see scripts/make-data-goldens.py).
// ---------------------------------------------------------------------------------------------

// @generated by scripts/make-data-goldens.py --rust-tables (Python 3.11.7 html.entities, ftfy tables). Do not edit by hand.
const HTML5_ENTITIES: &str = "\
AElig C6\n\
AElig; C6\n\
AMP 26\n\
AMP; 26\n\
Aacute C1\n\
Aacute; C1\n\
Abreve; 102\n\
Acirc C2\n\
Acirc; C2\n\
Acy; 410\n\
Afr; 1D504\n\
Agrave C0\n\
Agrave; C0\n\
Alpha; 391\n\
Amacr; 100\n\
And; 2A53\n\
Aogon; 104\n\
Aopf; 1D538\n\
ApplyFunction; 2061\n\
Aring C5\n\
Aring; C5\n\
Ascr; 1D49C\n\
Assign; 2254\n\
Atilde C3\n\
Atilde; C3\n\
Auml C4\n\
Auml; C4\n\
Backslash; 2216\n\
Barv; 2AE7\n\
Barwed; 2306\n\
Bcy; 411\n\
Because; 2235\n\
Bernoullis; 212C\n\
Beta; 392\n\
Bfr; 1D505\n\
Bopf; 1D539\n\
Breve; 2D8\n\
Bscr; 212C\n\
Bumpeq; 224E\n\
CHcy; 427\n\
COPY A9\n\
COPY; A9\n\
Cacute; 106\n\
Cap; 22D2\n\
CapitalDifferentialD; 2145\n\
Cayleys; 212D\n\
Ccaron; 10C\n\
Ccedil C7\n\
Ccedil; C7\n\
Ccirc; 108\n\
Cconint; 2230\n\
Cdot; 10A\n\
Cedilla; B8\n\
CenterDot; B7\n\
Cfr; 212D\n\
Chi; 3A7\n\
CircleDot; 2299\n\
CircleMinus; 2296\n\
CirclePlus; 2295\n\
CircleTimes; 2297\n\
ClockwiseContourIntegral; 2232\n\
CloseCurlyDoubleQuote; 201D\n\
CloseCurlyQuote; 2019\n\
Colon; 2237\n\
Colone; 2A74\n\
Congruent; 2261\n\
Conint; 222F\n\
ContourIntegral; 222E\n\
Copf; 2102\n\
Coproduct; 2210\n\
CounterClockwiseContourIntegral; 2233\n\
Cross; 2A2F\n\
Cscr; 1D49E\n\
Cup; 22D3\n\
CupCap; 224D\n\
DD; 2145\n\
DDotrahd; 2911\n\
DJcy; 402\n\
DScy; 405\n\
DZcy; 40F\n\
Dagger; 2021\n\
Darr; 21A1\n\
Dashv; 2AE4\n\
Dcaron; 10E\n\
Dcy; 414\n\
Del; 2207\n\
Delta; 394\n\
Dfr; 1D507\n\
DiacriticalAcute; B4\n\
DiacriticalDot; 2D9\n\
DiacriticalDoubleAcute; 2DD\n\
DiacriticalGrave; 60\n\
DiacriticalTilde; 2DC\n\
Diamond; 22C4\n\
DifferentialD; 2146\n\
Dopf; 1D53B\n\
Dot; A8\n\
DotDot; 20DC\n\
DotEqual; 2250\n\
DoubleContourIntegral; 222F\n\
DoubleDot; A8\n\
DoubleDownArrow; 21D3\n\
DoubleLeftArrow; 21D0\n\
DoubleLeftRightArrow; 21D4\n\
DoubleLeftTee; 2AE4\n\
DoubleLongLeftArrow; 27F8\n\
DoubleLongLeftRightArrow; 27FA\n\
DoubleLongRightArrow; 27F9\n\
DoubleRightArrow; 21D2\n\
DoubleRightTee; 22A8\n\
DoubleUpArrow; 21D1\n\
DoubleUpDownArrow; 21D5\n\
DoubleVerticalBar; 2225\n\
DownArrow; 2193\n\
DownArrowBar; 2913\n\
DownArrowUpArrow; 21F5\n\
DownBreve; 311\n\
DownLeftRightVector; 2950\n\
DownLeftTeeVector; 295E\n\
DownLeftVector; 21BD\n\
DownLeftVectorBar; 2956\n\
DownRightTeeVector; 295F\n\
DownRightVector; 21C1\n\
DownRightVectorBar; 2957\n\
DownTee; 22A4\n\
DownTeeArrow; 21A7\n\
Downarrow; 21D3\n\
Dscr; 1D49F\n\
Dstrok; 110\n\
ENG; 14A\n\
ETH D0\n\
ETH; D0\n\
Eacute C9\n\
Eacute; C9\n\
Ecaron; 11A\n\
Ecirc CA\n\
Ecirc; CA\n\
Ecy; 42D\n\
Edot; 116\n\
Efr; 1D508\n\
Egrave C8\n\
Egrave; C8\n\
Element; 2208\n\
Emacr; 112\n\
EmptySmallSquare; 25FB\n\
EmptyVerySmallSquare; 25AB\n\
Eogon; 118\n\
Eopf; 1D53C\n\
Epsilon; 395\n\
Equal; 2A75\n\
EqualTilde; 2242\n\
Equilibrium; 21CC\n\
Escr; 2130\n\
Esim; 2A73\n\
Eta; 397\n\
Euml CB\n\
Euml; CB\n\
Exists; 2203\n\
ExponentialE; 2147\n\
Fcy; 424\n\
Ffr; 1D509\n\
FilledSmallSquare; 25FC\n\
FilledVerySmallSquare; 25AA\n\
Fopf; 1D53D\n\
ForAll; 2200\n\
Fouriertrf; 2131\n\
Fscr; 2131\n\
GJcy; 403\n\
GT 3E\n\
GT; 3E\n\
Gamma; 393\n\
Gammad; 3DC\n\
Gbreve; 11E\n\
Gcedil; 122\n\
Gcirc; 11C\n\
Gcy; 413\n\
Gdot; 120\n\
Gfr; 1D50A\n\
Gg; 22D9\n\
Gopf; 1D53E\n\
GreaterEqual; 2265\n\
GreaterEqualLess; 22DB\n\
GreaterFullEqual; 2267\n\
GreaterGreater; 2AA2\n\
GreaterLess; 2277\n\
GreaterSlantEqual; 2A7E\n\
GreaterTilde; 2273\n\
Gscr; 1D4A2\n\
Gt; 226B\n\
HARDcy; 42A\n\
Hacek; 2C7\n\
Hat; 5E\n\
Hcirc; 124\n\
Hfr; 210C\n\
HilbertSpace; 210B\n\
Hopf; 210D\n\
HorizontalLine; 2500\n\
Hscr; 210B\n\
Hstrok; 126\n\
HumpDownHump; 224E\n\
HumpEqual; 224F\n\
IEcy; 415\n\
IJlig; 132\n\
IOcy; 401\n\
Iacute CD\n\
Iacute; CD\n\
Icirc CE\n\
Icirc; CE\n\
Icy; 418\n\
Idot; 130\n\
Ifr; 2111\n\
Igrave CC\n\
Igrave; CC\n\
Im; 2111\n\
Imacr; 12A\n\
ImaginaryI; 2148\n\
Implies; 21D2\n\
Int; 222C\n\
Integral; 222B\n\
Intersection; 22C2\n\
InvisibleComma; 2063\n\
InvisibleTimes; 2062\n\
Iogon; 12E\n\
Iopf; 1D540\n\
Iota; 399\n\
Iscr; 2110\n\
Itilde; 128\n\
Iukcy; 406\n\
Iuml CF\n\
Iuml; CF\n\
Jcirc; 134\n\
Jcy; 419\n\
Jfr; 1D50D\n\
Jopf; 1D541\n\
Jscr; 1D4A5\n\
Jsercy; 408\n\
Jukcy; 404\n\
KHcy; 425\n\
KJcy; 40C\n\
Kappa; 39A\n\
Kcedil; 136\n\
Kcy; 41A\n\
Kfr; 1D50E\n\
Kopf; 1D542\n\
Kscr; 1D4A6\n\
LJcy; 409\n\
LT 3C\n\
LT; 3C\n\
Lacute; 139\n\
Lambda; 39B\n\
Lang; 27EA\n\
Laplacetrf; 2112\n\
Larr; 219E\n\
Lcaron; 13D\n\
Lcedil; 13B\n\
Lcy; 41B\n\
LeftAngleBracket; 27E8\n\
LeftArrow; 2190\n\
LeftArrowBar; 21E4\n\
LeftArrowRightArrow; 21C6\n\
LeftCeiling; 2308\n\
LeftDoubleBracket; 27E6\n\
LeftDownTeeVector; 2961\n\
LeftDownVector; 21C3\n\
LeftDownVectorBar; 2959\n\
LeftFloor; 230A\n\
LeftRightArrow; 2194\n\
LeftRightVector; 294E\n\
LeftTee; 22A3\n\
LeftTeeArrow; 21A4\n\
LeftTeeVector; 295A\n\
LeftTriangle; 22B2\n\
LeftTriangleBar; 29CF\n\
LeftTriangleEqual; 22B4\n\
LeftUpDownVector; 2951\n\
LeftUpTeeVector; 2960\n\
LeftUpVector; 21BF\n\
LeftUpVectorBar; 2958\n\
LeftVector; 21BC\n\
LeftVectorBar; 2952\n\
Leftarrow; 21D0\n\
Leftrightarrow; 21D4\n\
LessEqualGreater; 22DA\n\
LessFullEqual; 2266\n\
LessGreater; 2276\n\
LessLess; 2AA1\n\
LessSlantEqual; 2A7D\n\
LessTilde; 2272\n\
Lfr; 1D50F\n\
Ll; 22D8\n\
Lleftarrow; 21DA\n\
Lmidot; 13F\n\
LongLeftArrow; 27F5\n\
LongLeftRightArrow; 27F7\n\
LongRightArrow; 27F6\n\
Longleftarrow; 27F8\n\
Longleftrightarrow; 27FA\n\
Longrightarrow; 27F9\n\
Lopf; 1D543\n\
LowerLeftArrow; 2199\n\
LowerRightArrow; 2198\n\
Lscr; 2112\n\
Lsh; 21B0\n\
Lstrok; 141\n\
Lt; 226A\n\
Map; 2905\n\
Mcy; 41C\n\
MediumSpace; 205F\n\
Mellintrf; 2133\n\
Mfr; 1D510\n\
MinusPlus; 2213\n\
Mopf; 1D544\n\
Mscr; 2133\n\
Mu; 39C\n\
NJcy; 40A\n\
Nacute; 143\n\
Ncaron; 147\n\
Ncedil; 145\n\
Ncy; 41D\n\
NegativeMediumSpace; 200B\n\
NegativeThickSpace; 200B\n\
NegativeThinSpace; 200B\n\
NegativeVeryThinSpace; 200B\n\
NestedGreaterGreater; 226B\n\
NestedLessLess; 226A\n\
NewLine; A\n\
Nfr; 1D511\n\
NoBreak; 2060\n\
NonBreakingSpace; A0\n\
Nopf; 2115\n\
Not; 2AEC\n\
NotCongruent; 2262\n\
NotCupCap; 226D\n\
NotDoubleVerticalBar; 2226\n\
NotElement; 2209\n\
NotEqual; 2260\n\
NotEqualTilde; 2242 338\n\
NotExists; 2204\n\
NotGreater; 226F\n\
NotGreaterEqual; 2271\n\
NotGreaterFullEqual; 2267 338\n\
NotGreaterGreater; 226B 338\n\
NotGreaterLess; 2279\n\
NotGreaterSlantEqual; 2A7E 338\n\
NotGreaterTilde; 2275\n\
NotHumpDownHump; 224E 338\n\
NotHumpEqual; 224F 338\n\
NotLeftTriangle; 22EA\n\
NotLeftTriangleBar; 29CF 338\n\
NotLeftTriangleEqual; 22EC\n\
NotLess; 226E\n\
NotLessEqual; 2270\n\
NotLessGreater; 2278\n\
NotLessLess; 226A 338\n\
NotLessSlantEqual; 2A7D 338\n\
NotLessTilde; 2274\n\
NotNestedGreaterGreater; 2AA2 338\n\
NotNestedLessLess; 2AA1 338\n\
NotPrecedes; 2280\n\
NotPrecedesEqual; 2AAF 338\n\
NotPrecedesSlantEqual; 22E0\n\
NotReverseElement; 220C\n\
NotRightTriangle; 22EB\n\
NotRightTriangleBar; 29D0 338\n\
NotRightTriangleEqual; 22ED\n\
NotSquareSubset; 228F 338\n\
NotSquareSubsetEqual; 22E2\n\
NotSquareSuperset; 2290 338\n\
NotSquareSupersetEqual; 22E3\n\
NotSubset; 2282 20D2\n\
NotSubsetEqual; 2288\n\
NotSucceeds; 2281\n\
NotSucceedsEqual; 2AB0 338\n\
NotSucceedsSlantEqual; 22E1\n\
NotSucceedsTilde; 227F 338\n\
NotSuperset; 2283 20D2\n\
NotSupersetEqual; 2289\n\
NotTilde; 2241\n\
NotTildeEqual; 2244\n\
NotTildeFullEqual; 2247\n\
NotTildeTilde; 2249\n\
NotVerticalBar; 2224\n\
Nscr; 1D4A9\n\
Ntilde D1\n\
Ntilde; D1\n\
Nu; 39D\n\
OElig; 152\n\
Oacute D3\n\
Oacute; D3\n\
Ocirc D4\n\
Ocirc; D4\n\
Ocy; 41E\n\
Odblac; 150\n\
Ofr; 1D512\n\
Ograve D2\n\
Ograve; D2\n\
Omacr; 14C\n\
Omega; 3A9\n\
Omicron; 39F\n\
Oopf; 1D546\n\
OpenCurlyDoubleQuote; 201C\n\
OpenCurlyQuote; 2018\n\
Or; 2A54\n\
Oscr; 1D4AA\n\
Oslash D8\n\
Oslash; D8\n\
Otilde D5\n\
Otilde; D5\n\
Otimes; 2A37\n\
Ouml D6\n\
Ouml; D6\n\
OverBar; 203E\n\
OverBrace; 23DE\n\
OverBracket; 23B4\n\
OverParenthesis; 23DC\n\
PartialD; 2202\n\
Pcy; 41F\n\
Pfr; 1D513\n\
Phi; 3A6\n\
Pi; 3A0\n\
PlusMinus; B1\n\
Poincareplane; 210C\n\
Popf; 2119\n\
Pr; 2ABB\n\
Precedes; 227A\n\
PrecedesEqual; 2AAF\n\
PrecedesSlantEqual; 227C\n\
PrecedesTilde; 227E\n\
Prime; 2033\n\
Product; 220F\n\
Proportion; 2237\n\
Proportional; 221D\n\
Pscr; 1D4AB\n\
Psi; 3A8\n\
QUOT 22\n\
QUOT; 22\n\
Qfr; 1D514\n\
Qopf; 211A\n\
Qscr; 1D4AC\n\
RBarr; 2910\n\
REG AE\n\
REG; AE\n\
Racute; 154\n\
Rang; 27EB\n\
Rarr; 21A0\n\
Rarrtl; 2916\n\
Rcaron; 158\n\
Rcedil; 156\n\
Rcy; 420\n\
Re; 211C\n\
ReverseElement; 220B\n\
ReverseEquilibrium; 21CB\n\
ReverseUpEquilibrium; 296F\n\
Rfr; 211C\n\
Rho; 3A1\n\
RightAngleBracket; 27E9\n\
RightArrow; 2192\n\
RightArrowBar; 21E5\n\
RightArrowLeftArrow; 21C4\n\
RightCeiling; 2309\n\
RightDoubleBracket; 27E7\n\
RightDownTeeVector; 295D\n\
RightDownVector; 21C2\n\
RightDownVectorBar; 2955\n\
RightFloor; 230B\n\
RightTee; 22A2\n\
RightTeeArrow; 21A6\n\
RightTeeVector; 295B\n\
RightTriangle; 22B3\n\
RightTriangleBar; 29D0\n\
RightTriangleEqual; 22B5\n\
RightUpDownVector; 294F\n\
RightUpTeeVector; 295C\n\
RightUpVector; 21BE\n\
RightUpVectorBar; 2954\n\
RightVector; 21C0\n\
RightVectorBar; 2953\n\
Rightarrow; 21D2\n\
Ropf; 211D\n\
RoundImplies; 2970\n\
Rrightarrow; 21DB\n\
Rscr; 211B\n\
Rsh; 21B1\n\
RuleDelayed; 29F4\n\
SHCHcy; 429\n\
SHcy; 428\n\
SOFTcy; 42C\n\
Sacute; 15A\n\
Sc; 2ABC\n\
Scaron; 160\n\
Scedil; 15E\n\
Scirc; 15C\n\
Scy; 421\n\
Sfr; 1D516\n\
ShortDownArrow; 2193\n\
ShortLeftArrow; 2190\n\
ShortRightArrow; 2192\n\
ShortUpArrow; 2191\n\
Sigma; 3A3\n\
SmallCircle; 2218\n\
Sopf; 1D54A\n\
Sqrt; 221A\n\
Square; 25A1\n\
SquareIntersection; 2293\n\
SquareSubset; 228F\n\
SquareSubsetEqual; 2291\n\
SquareSuperset; 2290\n\
SquareSupersetEqual; 2292\n\
SquareUnion; 2294\n\
Sscr; 1D4AE\n\
Star; 22C6\n\
Sub; 22D0\n\
Subset; 22D0\n\
SubsetEqual; 2286\n\
Succeeds; 227B\n\
SucceedsEqual; 2AB0\n\
SucceedsSlantEqual; 227D\n\
SucceedsTilde; 227F\n\
SuchThat; 220B\n\
Sum; 2211\n\
Sup; 22D1\n\
Superset; 2283\n\
SupersetEqual; 2287\n\
Supset; 22D1\n\
THORN DE\n\
THORN; DE\n\
TRADE; 2122\n\
TSHcy; 40B\n\
TScy; 426\n\
Tab; 9\n\
Tau; 3A4\n\
Tcaron; 164\n\
Tcedil; 162\n\
Tcy; 422\n\
Tfr; 1D517\n\
Therefore; 2234\n\
Theta; 398\n\
ThickSpace; 205F 200A\n\
ThinSpace; 2009\n\
Tilde; 223C\n\
TildeEqual; 2243\n\
TildeFullEqual; 2245\n\
TildeTilde; 2248\n\
Topf; 1D54B\n\
TripleDot; 20DB\n\
Tscr; 1D4AF\n\
Tstrok; 166\n\
Uacute DA\n\
Uacute; DA\n\
Uarr; 219F\n\
Uarrocir; 2949\n\
Ubrcy; 40E\n\
Ubreve; 16C\n\
Ucirc DB\n\
Ucirc; DB\n\
Ucy; 423\n\
Udblac; 170\n\
Ufr; 1D518\n\
Ugrave D9\n\
Ugrave; D9\n\
Umacr; 16A\n\
UnderBar; 5F\n\
UnderBrace; 23DF\n\
UnderBracket; 23B5\n\
UnderParenthesis; 23DD\n\
Union; 22C3\n\
UnionPlus; 228E\n\
Uogon; 172\n\
Uopf; 1D54C\n\
UpArrow; 2191\n\
UpArrowBar; 2912\n\
UpArrowDownArrow; 21C5\n\
UpDownArrow; 2195\n\
UpEquilibrium; 296E\n\
UpTee; 22A5\n\
UpTeeArrow; 21A5\n\
Uparrow; 21D1\n\
Updownarrow; 21D5\n\
UpperLeftArrow; 2196\n\
UpperRightArrow; 2197\n\
Upsi; 3D2\n\
Upsilon; 3A5\n\
Uring; 16E\n\
Uscr; 1D4B0\n\
Utilde; 168\n\
Uuml DC\n\
Uuml; DC\n\
VDash; 22AB\n\
Vbar; 2AEB\n\
Vcy; 412\n\
Vdash; 22A9\n\
Vdashl; 2AE6\n\
Vee; 22C1\n\
Verbar; 2016\n\
Vert; 2016\n\
VerticalBar; 2223\n\
VerticalLine; 7C\n\
VerticalSeparator; 2758\n\
VerticalTilde; 2240\n\
VeryThinSpace; 200A\n\
Vfr; 1D519\n\
Vopf; 1D54D\n\
Vscr; 1D4B1\n\
Vvdash; 22AA\n\
Wcirc; 174\n\
Wedge; 22C0\n\
Wfr; 1D51A\n\
Wopf; 1D54E\n\
Wscr; 1D4B2\n\
Xfr; 1D51B\n\
Xi; 39E\n\
Xopf; 1D54F\n\
Xscr; 1D4B3\n\
YAcy; 42F\n\
YIcy; 407\n\
YUcy; 42E\n\
Yacute DD\n\
Yacute; DD\n\
Ycirc; 176\n\
Ycy; 42B\n\
Yfr; 1D51C\n\
Yopf; 1D550\n\
Yscr; 1D4B4\n\
Yuml; 178\n\
ZHcy; 416\n\
Zacute; 179\n\
Zcaron; 17D\n\
Zcy; 417\n\
Zdot; 17B\n\
ZeroWidthSpace; 200B\n\
Zeta; 396\n\
Zfr; 2128\n\
Zopf; 2124\n\
Zscr; 1D4B5\n\
aacute E1\n\
aacute; E1\n\
abreve; 103\n\
ac; 223E\n\
acE; 223E 333\n\
acd; 223F\n\
acirc E2\n\
acirc; E2\n\
acute B4\n\
acute; B4\n\
acy; 430\n\
aelig E6\n\
aelig; E6\n\
af; 2061\n\
afr; 1D51E\n\
agrave E0\n\
agrave; E0\n\
alefsym; 2135\n\
aleph; 2135\n\
alpha; 3B1\n\
amacr; 101\n\
amalg; 2A3F\n\
amp 26\n\
amp; 26\n\
and; 2227\n\
andand; 2A55\n\
andd; 2A5C\n\
andslope; 2A58\n\
andv; 2A5A\n\
ang; 2220\n\
ange; 29A4\n\
angle; 2220\n\
angmsd; 2221\n\
angmsdaa; 29A8\n\
angmsdab; 29A9\n\
angmsdac; 29AA\n\
angmsdad; 29AB\n\
angmsdae; 29AC\n\
angmsdaf; 29AD\n\
angmsdag; 29AE\n\
angmsdah; 29AF\n\
angrt; 221F\n\
angrtvb; 22BE\n\
angrtvbd; 299D\n\
angsph; 2222\n\
angst; C5\n\
angzarr; 237C\n\
aogon; 105\n\
aopf; 1D552\n\
ap; 2248\n\
apE; 2A70\n\
apacir; 2A6F\n\
ape; 224A\n\
apid; 224B\n\
apos; 27\n\
approx; 2248\n\
approxeq; 224A\n\
aring E5\n\
aring; E5\n\
ascr; 1D4B6\n\
ast; 2A\n\
asymp; 2248\n\
asympeq; 224D\n\
atilde E3\n\
atilde; E3\n\
auml E4\n\
auml; E4\n\
awconint; 2233\n\
awint; 2A11\n\
bNot; 2AED\n\
backcong; 224C\n\
backepsilon; 3F6\n\
backprime; 2035\n\
backsim; 223D\n\
backsimeq; 22CD\n\
barvee; 22BD\n\
barwed; 2305\n\
barwedge; 2305\n\
bbrk; 23B5\n\
bbrktbrk; 23B6\n\
bcong; 224C\n\
bcy; 431\n\
bdquo; 201E\n\
becaus; 2235\n\
because; 2235\n\
bemptyv; 29B0\n\
bepsi; 3F6\n\
bernou; 212C\n\
beta; 3B2\n\
beth; 2136\n\
between; 226C\n\
bfr; 1D51F\n\
bigcap; 22C2\n\
bigcirc; 25EF\n\
bigcup; 22C3\n\
bigodot; 2A00\n\
bigoplus; 2A01\n\
bigotimes; 2A02\n\
bigsqcup; 2A06\n\
bigstar; 2605\n\
bigtriangledown; 25BD\n\
bigtriangleup; 25B3\n\
biguplus; 2A04\n\
bigvee; 22C1\n\
bigwedge; 22C0\n\
bkarow; 290D\n\
blacklozenge; 29EB\n\
blacksquare; 25AA\n\
blacktriangle; 25B4\n\
blacktriangledown; 25BE\n\
blacktriangleleft; 25C2\n\
blacktriangleright; 25B8\n\
blank; 2423\n\
blk12; 2592\n\
blk14; 2591\n\
blk34; 2593\n\
block; 2588\n\
bne; 3D 20E5\n\
bnequiv; 2261 20E5\n\
bnot; 2310\n\
bopf; 1D553\n\
bot; 22A5\n\
bottom; 22A5\n\
bowtie; 22C8\n\
boxDL; 2557\n\
boxDR; 2554\n\
boxDl; 2556\n\
boxDr; 2553\n\
boxH; 2550\n\
boxHD; 2566\n\
boxHU; 2569\n\
boxHd; 2564\n\
boxHu; 2567\n\
boxUL; 255D\n\
boxUR; 255A\n\
boxUl; 255C\n\
boxUr; 2559\n\
boxV; 2551\n\
boxVH; 256C\n\
boxVL; 2563\n\
boxVR; 2560\n\
boxVh; 256B\n\
boxVl; 2562\n\
boxVr; 255F\n\
boxbox; 29C9\n\
boxdL; 2555\n\
boxdR; 2552\n\
boxdl; 2510\n\
boxdr; 250C\n\
boxh; 2500\n\
boxhD; 2565\n\
boxhU; 2568\n\
boxhd; 252C\n\
boxhu; 2534\n\
boxminus; 229F\n\
boxplus; 229E\n\
boxtimes; 22A0\n\
boxuL; 255B\n\
boxuR; 2558\n\
boxul; 2518\n\
boxur; 2514\n\
boxv; 2502\n\
boxvH; 256A\n\
boxvL; 2561\n\
boxvR; 255E\n\
boxvh; 253C\n\
boxvl; 2524\n\
boxvr; 251C\n\
bprime; 2035\n\
breve; 2D8\n\
brvbar A6\n\
brvbar; A6\n\
bscr; 1D4B7\n\
bsemi; 204F\n\
bsim; 223D\n\
bsime; 22CD\n\
bsol; 5C\n\
bsolb; 29C5\n\
bsolhsub; 27C8\n\
bull; 2022\n\
bullet; 2022\n\
bump; 224E\n\
bumpE; 2AAE\n\
bumpe; 224F\n\
bumpeq; 224F\n\
cacute; 107\n\
cap; 2229\n\
capand; 2A44\n\
capbrcup; 2A49\n\
capcap; 2A4B\n\
capcup; 2A47\n\
capdot; 2A40\n\
caps; 2229 FE00\n\
caret; 2041\n\
caron; 2C7\n\
ccaps; 2A4D\n\
ccaron; 10D\n\
ccedil E7\n\
ccedil; E7\n\
ccirc; 109\n\
ccups; 2A4C\n\
ccupssm; 2A50\n\
cdot; 10B\n\
cedil B8\n\
cedil; B8\n\
cemptyv; 29B2\n\
cent A2\n\
cent; A2\n\
centerdot; B7\n\
cfr; 1D520\n\
chcy; 447\n\
check; 2713\n\
checkmark; 2713\n\
chi; 3C7\n\
cir; 25CB\n\
cirE; 29C3\n\
circ; 2C6\n\
circeq; 2257\n\
circlearrowleft; 21BA\n\
circlearrowright; 21BB\n\
circledR; AE\n\
circledS; 24C8\n\
circledast; 229B\n\
circledcirc; 229A\n\
circleddash; 229D\n\
cire; 2257\n\
cirfnint; 2A10\n\
cirmid; 2AEF\n\
cirscir; 29C2\n\
clubs; 2663\n\
clubsuit; 2663\n\
colon; 3A\n\
colone; 2254\n\
coloneq; 2254\n\
comma; 2C\n\
commat; 40\n\
comp; 2201\n\
compfn; 2218\n\
complement; 2201\n\
complexes; 2102\n\
cong; 2245\n\
congdot; 2A6D\n\
conint; 222E\n\
copf; 1D554\n\
coprod; 2210\n\
copy A9\n\
copy; A9\n\
copysr; 2117\n\
crarr; 21B5\n\
cross; 2717\n\
cscr; 1D4B8\n\
csub; 2ACF\n\
csube; 2AD1\n\
csup; 2AD0\n\
csupe; 2AD2\n\
ctdot; 22EF\n\
cudarrl; 2938\n\
cudarrr; 2935\n\
cuepr; 22DE\n\
cuesc; 22DF\n\
cularr; 21B6\n\
cularrp; 293D\n\
cup; 222A\n\
cupbrcap; 2A48\n\
cupcap; 2A46\n\
cupcup; 2A4A\n\
cupdot; 228D\n\
cupor; 2A45\n\
cups; 222A FE00\n\
curarr; 21B7\n\
curarrm; 293C\n\
curlyeqprec; 22DE\n\
curlyeqsucc; 22DF\n\
curlyvee; 22CE\n\
curlywedge; 22CF\n\
curren A4\n\
curren; A4\n\
curvearrowleft; 21B6\n\
curvearrowright; 21B7\n\
cuvee; 22CE\n\
cuwed; 22CF\n\
cwconint; 2232\n\
cwint; 2231\n\
cylcty; 232D\n\
dArr; 21D3\n\
dHar; 2965\n\
dagger; 2020\n\
daleth; 2138\n\
darr; 2193\n\
dash; 2010\n\
dashv; 22A3\n\
dbkarow; 290F\n\
dblac; 2DD\n\
dcaron; 10F\n\
dcy; 434\n\
dd; 2146\n\
ddagger; 2021\n\
ddarr; 21CA\n\
ddotseq; 2A77\n\
deg B0\n\
deg; B0\n\
delta; 3B4\n\
demptyv; 29B1\n\
dfisht; 297F\n\
dfr; 1D521\n\
dharl; 21C3\n\
dharr; 21C2\n\
diam; 22C4\n\
diamond; 22C4\n\
diamondsuit; 2666\n\
diams; 2666\n\
die; A8\n\
digamma; 3DD\n\
disin; 22F2\n\
div; F7\n\
divide F7\n\
divide; F7\n\
divideontimes; 22C7\n\
divonx; 22C7\n\
djcy; 452\n\
dlcorn; 231E\n\
dlcrop; 230D\n\
dollar; 24\n\
dopf; 1D555\n\
dot; 2D9\n\
doteq; 2250\n\
doteqdot; 2251\n\
dotminus; 2238\n\
dotplus; 2214\n\
dotsquare; 22A1\n\
doublebarwedge; 2306\n\
downarrow; 2193\n\
downdownarrows; 21CA\n\
downharpoonleft; 21C3\n\
downharpoonright; 21C2\n\
drbkarow; 2910\n\
drcorn; 231F\n\
drcrop; 230C\n\
dscr; 1D4B9\n\
dscy; 455\n\
dsol; 29F6\n\
dstrok; 111\n\
dtdot; 22F1\n\
dtri; 25BF\n\
dtrif; 25BE\n\
duarr; 21F5\n\
duhar; 296F\n\
dwangle; 29A6\n\
dzcy; 45F\n\
dzigrarr; 27FF\n\
eDDot; 2A77\n\
eDot; 2251\n\
eacute E9\n\
eacute; E9\n\
easter; 2A6E\n\
ecaron; 11B\n\
ecir; 2256\n\
ecirc EA\n\
ecirc; EA\n\
ecolon; 2255\n\
ecy; 44D\n\
edot; 117\n\
ee; 2147\n\
efDot; 2252\n\
efr; 1D522\n\
eg; 2A9A\n\
egrave E8\n\
egrave; E8\n\
egs; 2A96\n\
egsdot; 2A98\n\
el; 2A99\n\
elinters; 23E7\n\
ell; 2113\n\
els; 2A95\n\
elsdot; 2A97\n\
emacr; 113\n\
empty; 2205\n\
emptyset; 2205\n\
emptyv; 2205\n\
emsp13; 2004\n\
emsp14; 2005\n\
emsp; 2003\n\
eng; 14B\n\
ensp; 2002\n\
eogon; 119\n\
eopf; 1D556\n\
epar; 22D5\n\
eparsl; 29E3\n\
eplus; 2A71\n\
epsi; 3B5\n\
epsilon; 3B5\n\
epsiv; 3F5\n\
eqcirc; 2256\n\
eqcolon; 2255\n\
eqsim; 2242\n\
eqslantgtr; 2A96\n\
eqslantless; 2A95\n\
equals; 3D\n\
equest; 225F\n\
equiv; 2261\n\
equivDD; 2A78\n\
eqvparsl; 29E5\n\
erDot; 2253\n\
erarr; 2971\n\
escr; 212F\n\
esdot; 2250\n\
esim; 2242\n\
eta; 3B7\n\
eth F0\n\
eth; F0\n\
euml EB\n\
euml; EB\n\
euro; 20AC\n\
excl; 21\n\
exist; 2203\n\
expectation; 2130\n\
exponentiale; 2147\n\
fallingdotseq; 2252\n\
fcy; 444\n\
female; 2640\n\
ffilig; FB03\n\
fflig; FB00\n\
ffllig; FB04\n\
ffr; 1D523\n\
filig; FB01\n\
fjlig; 66 6A\n\
flat; 266D\n\
fllig; FB02\n\
fltns; 25B1\n\
fnof; 192\n\
fopf; 1D557\n\
forall; 2200\n\
fork; 22D4\n\
forkv; 2AD9\n\
fpartint; 2A0D\n\
frac12 BD\n\
frac12; BD\n\
frac13; 2153\n\
frac14 BC\n\
frac14; BC\n\
frac15; 2155\n\
frac16; 2159\n\
frac18; 215B\n\
frac23; 2154\n\
frac25; 2156\n\
frac34 BE\n\
frac34; BE\n\
frac35; 2157\n\
frac38; 215C\n\
frac45; 2158\n\
frac56; 215A\n\
frac58; 215D\n\
frac78; 215E\n\
frasl; 2044\n\
frown; 2322\n\
fscr; 1D4BB\n\
gE; 2267\n\
gEl; 2A8C\n\
gacute; 1F5\n\
gamma; 3B3\n\
gammad; 3DD\n\
gap; 2A86\n\
gbreve; 11F\n\
gcirc; 11D\n\
gcy; 433\n\
gdot; 121\n\
ge; 2265\n\
gel; 22DB\n\
geq; 2265\n\
geqq; 2267\n\
geqslant; 2A7E\n\
ges; 2A7E\n\
gescc; 2AA9\n\
gesdot; 2A80\n\
gesdoto; 2A82\n\
gesdotol; 2A84\n\
gesl; 22DB FE00\n\
gesles; 2A94\n\
gfr; 1D524\n\
gg; 226B\n\
ggg; 22D9\n\
gimel; 2137\n\
gjcy; 453\n\
gl; 2277\n\
glE; 2A92\n\
gla; 2AA5\n\
glj; 2AA4\n\
gnE; 2269\n\
gnap; 2A8A\n\
gnapprox; 2A8A\n\
gne; 2A88\n\
gneq; 2A88\n\
gneqq; 2269\n\
gnsim; 22E7\n\
gopf; 1D558\n\
grave; 60\n\
gscr; 210A\n\
gsim; 2273\n\
gsime; 2A8E\n\
gsiml; 2A90\n\
gt 3E\n\
gt; 3E\n\
gtcc; 2AA7\n\
gtcir; 2A7A\n\
gtdot; 22D7\n\
gtlPar; 2995\n\
gtquest; 2A7C\n\
gtrapprox; 2A86\n\
gtrarr; 2978\n\
gtrdot; 22D7\n\
gtreqless; 22DB\n\
gtreqqless; 2A8C\n\
gtrless; 2277\n\
gtrsim; 2273\n\
gvertneqq; 2269 FE00\n\
gvnE; 2269 FE00\n\
hArr; 21D4\n\
hairsp; 200A\n\
half; BD\n\
hamilt; 210B\n\
hardcy; 44A\n\
harr; 2194\n\
harrcir; 2948\n\
harrw; 21AD\n\
hbar; 210F\n\
hcirc; 125\n\
hearts; 2665\n\
heartsuit; 2665\n\
hellip; 2026\n\
hercon; 22B9\n\
hfr; 1D525\n\
hksearow; 2925\n\
hkswarow; 2926\n\
hoarr; 21FF\n\
homtht; 223B\n\
hookleftarrow; 21A9\n\
hookrightarrow; 21AA\n\
hopf; 1D559\n\
horbar; 2015\n\
hscr; 1D4BD\n\
hslash; 210F\n\
hstrok; 127\n\
hybull; 2043\n\
hyphen; 2010\n\
iacute ED\n\
iacute; ED\n\
ic; 2063\n\
icirc EE\n\
icirc; EE\n\
icy; 438\n\
iecy; 435\n\
iexcl A1\n\
iexcl; A1\n\
iff; 21D4\n\
ifr; 1D526\n\
igrave EC\n\
igrave; EC\n\
ii; 2148\n\
iiiint; 2A0C\n\
iiint; 222D\n\
iinfin; 29DC\n\
iiota; 2129\n\
ijlig; 133\n\
imacr; 12B\n\
image; 2111\n\
imagline; 2110\n\
imagpart; 2111\n\
imath; 131\n\
imof; 22B7\n\
imped; 1B5\n\
in; 2208\n\
incare; 2105\n\
infin; 221E\n\
infintie; 29DD\n\
inodot; 131\n\
int; 222B\n\
intcal; 22BA\n\
integers; 2124\n\
intercal; 22BA\n\
intlarhk; 2A17\n\
intprod; 2A3C\n\
iocy; 451\n\
iogon; 12F\n\
iopf; 1D55A\n\
iota; 3B9\n\
iprod; 2A3C\n\
iquest BF\n\
iquest; BF\n\
iscr; 1D4BE\n\
isin; 2208\n\
isinE; 22F9\n\
isindot; 22F5\n\
isins; 22F4\n\
isinsv; 22F3\n\
isinv; 2208\n\
it; 2062\n\
itilde; 129\n\
iukcy; 456\n\
iuml EF\n\
iuml; EF\n\
jcirc; 135\n\
jcy; 439\n\
jfr; 1D527\n\
jmath; 237\n\
jopf; 1D55B\n\
jscr; 1D4BF\n\
jsercy; 458\n\
jukcy; 454\n\
kappa; 3BA\n\
kappav; 3F0\n\
kcedil; 137\n\
kcy; 43A\n\
kfr; 1D528\n\
kgreen; 138\n\
khcy; 445\n\
kjcy; 45C\n\
kopf; 1D55C\n\
kscr; 1D4C0\n\
lAarr; 21DA\n\
lArr; 21D0\n\
lAtail; 291B\n\
lBarr; 290E\n\
lE; 2266\n\
lEg; 2A8B\n\
lHar; 2962\n\
lacute; 13A\n\
laemptyv; 29B4\n\
lagran; 2112\n\
lambda; 3BB\n\
lang; 27E8\n\
langd; 2991\n\
langle; 27E8\n\
lap; 2A85\n\
laquo AB\n\
laquo; AB\n\
larr; 2190\n\
larrb; 21E4\n\
larrbfs; 291F\n\
larrfs; 291D\n\
larrhk; 21A9\n\
larrlp; 21AB\n\
larrpl; 2939\n\
larrsim; 2973\n\
larrtl; 21A2\n\
lat; 2AAB\n\
latail; 2919\n\
late; 2AAD\n\
lates; 2AAD FE00\n\
lbarr; 290C\n\
lbbrk; 2772\n\
lbrace; 7B\n\
lbrack; 5B\n\
lbrke; 298B\n\
lbrksld; 298F\n\
lbrkslu; 298D\n\
lcaron; 13E\n\
lcedil; 13C\n\
lceil; 2308\n\
lcub; 7B\n\
lcy; 43B\n\
ldca; 2936\n\
ldquo; 201C\n\
ldquor; 201E\n\
ldrdhar; 2967\n\
ldrushar; 294B\n\
ldsh; 21B2\n\
le; 2264\n\
leftarrow; 2190\n\
leftarrowtail; 21A2\n\
leftharpoondown; 21BD\n\
leftharpoonup; 21BC\n\
leftleftarrows; 21C7\n\
leftrightarrow; 2194\n\
leftrightarrows; 21C6\n\
leftrightharpoons; 21CB\n\
leftrightsquigarrow; 21AD\n\
leftthreetimes; 22CB\n\
leg; 22DA\n\
leq; 2264\n\
leqq; 2266\n\
leqslant; 2A7D\n\
les; 2A7D\n\
lescc; 2AA8\n\
lesdot; 2A7F\n\
lesdoto; 2A81\n\
lesdotor; 2A83\n\
lesg; 22DA FE00\n\
lesges; 2A93\n\
lessapprox; 2A85\n\
lessdot; 22D6\n\
lesseqgtr; 22DA\n\
lesseqqgtr; 2A8B\n\
lessgtr; 2276\n\
lesssim; 2272\n\
lfisht; 297C\n\
lfloor; 230A\n\
lfr; 1D529\n\
lg; 2276\n\
lgE; 2A91\n\
lhard; 21BD\n\
lharu; 21BC\n\
lharul; 296A\n\
lhblk; 2584\n\
ljcy; 459\n\
ll; 226A\n\
llarr; 21C7\n\
llcorner; 231E\n\
llhard; 296B\n\
lltri; 25FA\n\
lmidot; 140\n\
lmoust; 23B0\n\
lmoustache; 23B0\n\
lnE; 2268\n\
lnap; 2A89\n\
lnapprox; 2A89\n\
lne; 2A87\n\
lneq; 2A87\n\
lneqq; 2268\n\
lnsim; 22E6\n\
loang; 27EC\n\
loarr; 21FD\n\
lobrk; 27E6\n\
longleftarrow; 27F5\n\
longleftrightarrow; 27F7\n\
longmapsto; 27FC\n\
longrightarrow; 27F6\n\
looparrowleft; 21AB\n\
looparrowright; 21AC\n\
lopar; 2985\n\
lopf; 1D55D\n\
loplus; 2A2D\n\
lotimes; 2A34\n\
lowast; 2217\n\
lowbar; 5F\n\
loz; 25CA\n\
lozenge; 25CA\n\
lozf; 29EB\n\
lpar; 28\n\
lparlt; 2993\n\
lrarr; 21C6\n\
lrcorner; 231F\n\
lrhar; 21CB\n\
lrhard; 296D\n\
lrm; 200E\n\
lrtri; 22BF\n\
lsaquo; 2039\n\
lscr; 1D4C1\n\
lsh; 21B0\n\
lsim; 2272\n\
lsime; 2A8D\n\
lsimg; 2A8F\n\
lsqb; 5B\n\
lsquo; 2018\n\
lsquor; 201A\n\
lstrok; 142\n\
lt 3C\n\
lt; 3C\n\
ltcc; 2AA6\n\
ltcir; 2A79\n\
ltdot; 22D6\n\
lthree; 22CB\n\
ltimes; 22C9\n\
ltlarr; 2976\n\
ltquest; 2A7B\n\
ltrPar; 2996\n\
ltri; 25C3\n\
ltrie; 22B4\n\
ltrif; 25C2\n\
lurdshar; 294A\n\
luruhar; 2966\n\
lvertneqq; 2268 FE00\n\
lvnE; 2268 FE00\n\
mDDot; 223A\n\
macr AF\n\
macr; AF\n\
male; 2642\n\
malt; 2720\n\
maltese; 2720\n\
map; 21A6\n\
mapsto; 21A6\n\
mapstodown; 21A7\n\
mapstoleft; 21A4\n\
mapstoup; 21A5\n\
marker; 25AE\n\
mcomma; 2A29\n\
mcy; 43C\n\
mdash; 2014\n\
measuredangle; 2221\n\
mfr; 1D52A\n\
mho; 2127\n\
micro B5\n\
micro; B5\n\
mid; 2223\n\
midast; 2A\n\
midcir; 2AF0\n\
middot B7\n\
middot; B7\n\
minus; 2212\n\
minusb; 229F\n\
minusd; 2238\n\
minusdu; 2A2A\n\
mlcp; 2ADB\n\
mldr; 2026\n\
mnplus; 2213\n\
models; 22A7\n\
mopf; 1D55E\n\
mp; 2213\n\
mscr; 1D4C2\n\
mstpos; 223E\n\
mu; 3BC\n\
multimap; 22B8\n\
mumap; 22B8\n\
nGg; 22D9 338\n\
nGt; 226B 20D2\n\
nGtv; 226B 338\n\
nLeftarrow; 21CD\n\
nLeftrightarrow; 21CE\n\
nLl; 22D8 338\n\
nLt; 226A 20D2\n\
nLtv; 226A 338\n\
nRightarrow; 21CF\n\
nVDash; 22AF\n\
nVdash; 22AE\n\
nabla; 2207\n\
nacute; 144\n\
nang; 2220 20D2\n\
nap; 2249\n\
napE; 2A70 338\n\
napid; 224B 338\n\
napos; 149\n\
napprox; 2249\n\
natur; 266E\n\
natural; 266E\n\
naturals; 2115\n\
nbsp A0\n\
nbsp; A0\n\
nbump; 224E 338\n\
nbumpe; 224F 338\n\
ncap; 2A43\n\
ncaron; 148\n\
ncedil; 146\n\
ncong; 2247\n\
ncongdot; 2A6D 338\n\
ncup; 2A42\n\
ncy; 43D\n\
ndash; 2013\n\
ne; 2260\n\
neArr; 21D7\n\
nearhk; 2924\n\
nearr; 2197\n\
nearrow; 2197\n\
nedot; 2250 338\n\
nequiv; 2262\n\
nesear; 2928\n\
nesim; 2242 338\n\
nexist; 2204\n\
nexists; 2204\n\
nfr; 1D52B\n\
ngE; 2267 338\n\
nge; 2271\n\
ngeq; 2271\n\
ngeqq; 2267 338\n\
ngeqslant; 2A7E 338\n\
nges; 2A7E 338\n\
ngsim; 2275\n\
ngt; 226F\n\
ngtr; 226F\n\
nhArr; 21CE\n\
nharr; 21AE\n\
nhpar; 2AF2\n\
ni; 220B\n\
nis; 22FC\n\
nisd; 22FA\n\
niv; 220B\n\
njcy; 45A\n\
nlArr; 21CD\n\
nlE; 2266 338\n\
nlarr; 219A\n\
nldr; 2025\n\
nle; 2270\n\
nleftarrow; 219A\n\
nleftrightarrow; 21AE\n\
nleq; 2270\n\
nleqq; 2266 338\n\
nleqslant; 2A7D 338\n\
nles; 2A7D 338\n\
nless; 226E\n\
nlsim; 2274\n\
nlt; 226E\n\
nltri; 22EA\n\
nltrie; 22EC\n\
nmid; 2224\n\
nopf; 1D55F\n\
not AC\n\
not; AC\n\
notin; 2209\n\
notinE; 22F9 338\n\
notindot; 22F5 338\n\
notinva; 2209\n\
notinvb; 22F7\n\
notinvc; 22F6\n\
notni; 220C\n\
notniva; 220C\n\
notnivb; 22FE\n\
notnivc; 22FD\n\
npar; 2226\n\
nparallel; 2226\n\
nparsl; 2AFD 20E5\n\
npart; 2202 338\n\
npolint; 2A14\n\
npr; 2280\n\
nprcue; 22E0\n\
npre; 2AAF 338\n\
nprec; 2280\n\
npreceq; 2AAF 338\n\
nrArr; 21CF\n\
nrarr; 219B\n\
nrarrc; 2933 338\n\
nrarrw; 219D 338\n\
nrightarrow; 219B\n\
nrtri; 22EB\n\
nrtrie; 22ED\n\
nsc; 2281\n\
nsccue; 22E1\n\
nsce; 2AB0 338\n\
nscr; 1D4C3\n\
nshortmid; 2224\n\
nshortparallel; 2226\n\
nsim; 2241\n\
nsime; 2244\n\
nsimeq; 2244\n\
nsmid; 2224\n\
nspar; 2226\n\
nsqsube; 22E2\n\
nsqsupe; 22E3\n\
nsub; 2284\n\
nsubE; 2AC5 338\n\
nsube; 2288\n\
nsubset; 2282 20D2\n\
nsubseteq; 2288\n\
nsubseteqq; 2AC5 338\n\
nsucc; 2281\n\
nsucceq; 2AB0 338\n\
nsup; 2285\n\
nsupE; 2AC6 338\n\
nsupe; 2289\n\
nsupset; 2283 20D2\n\
nsupseteq; 2289\n\
nsupseteqq; 2AC6 338\n\
ntgl; 2279\n\
ntilde F1\n\
ntilde; F1\n\
ntlg; 2278\n\
ntriangleleft; 22EA\n\
ntrianglelefteq; 22EC\n\
ntriangleright; 22EB\n\
ntrianglerighteq; 22ED\n\
nu; 3BD\n\
num; 23\n\
numero; 2116\n\
numsp; 2007\n\
nvDash; 22AD\n\
nvHarr; 2904\n\
nvap; 224D 20D2\n\
nvdash; 22AC\n\
nvge; 2265 20D2\n\
nvgt; 3E 20D2\n\
nvinfin; 29DE\n\
nvlArr; 2902\n\
nvle; 2264 20D2\n\
nvlt; 3C 20D2\n\
nvltrie; 22B4 20D2\n\
nvrArr; 2903\n\
nvrtrie; 22B5 20D2\n\
nvsim; 223C 20D2\n\
nwArr; 21D6\n\
nwarhk; 2923\n\
nwarr; 2196\n\
nwarrow; 2196\n\
nwnear; 2927\n\
oS; 24C8\n\
oacute F3\n\
oacute; F3\n\
oast; 229B\n\
ocir; 229A\n\
ocirc F4\n\
ocirc; F4\n\
ocy; 43E\n\
odash; 229D\n\
odblac; 151\n\
odiv; 2A38\n\
odot; 2299\n\
odsold; 29BC\n\
oelig; 153\n\
ofcir; 29BF\n\
ofr; 1D52C\n\
ogon; 2DB\n\
ograve F2\n\
ograve; F2\n\
ogt; 29C1\n\
ohbar; 29B5\n\
ohm; 3A9\n\
oint; 222E\n\
olarr; 21BA\n\
olcir; 29BE\n\
olcross; 29BB\n\
oline; 203E\n\
olt; 29C0\n\
omacr; 14D\n\
omega; 3C9\n\
omicron; 3BF\n\
omid; 29B6\n\
ominus; 2296\n\
oopf; 1D560\n\
opar; 29B7\n\
operp; 29B9\n\
oplus; 2295\n\
or; 2228\n\
orarr; 21BB\n\
ord; 2A5D\n\
order; 2134\n\
orderof; 2134\n\
ordf AA\n\
ordf; AA\n\
ordm BA\n\
ordm; BA\n\
origof; 22B6\n\
oror; 2A56\n\
orslope; 2A57\n\
orv; 2A5B\n\
oscr; 2134\n\
oslash F8\n\
oslash; F8\n\
osol; 2298\n\
otilde F5\n\
otilde; F5\n\
otimes; 2297\n\
otimesas; 2A36\n\
ouml F6\n\
ouml; F6\n\
ovbar; 233D\n\
par; 2225\n\
para B6\n\
para; B6\n\
parallel; 2225\n\
parsim; 2AF3\n\
parsl; 2AFD\n\
part; 2202\n\
pcy; 43F\n\
percnt; 25\n\
period; 2E\n\
permil; 2030\n\
perp; 22A5\n\
pertenk; 2031\n\
pfr; 1D52D\n\
phi; 3C6\n\
phiv; 3D5\n\
phmmat; 2133\n\
phone; 260E\n\
pi; 3C0\n\
pitchfork; 22D4\n\
piv; 3D6\n\
planck; 210F\n\
planckh; 210E\n\
plankv; 210F\n\
plus; 2B\n\
plusacir; 2A23\n\
plusb; 229E\n\
pluscir; 2A22\n\
plusdo; 2214\n\
plusdu; 2A25\n\
pluse; 2A72\n\
plusmn B1\n\
plusmn; B1\n\
plussim; 2A26\n\
plustwo; 2A27\n\
pm; B1\n\
pointint; 2A15\n\
popf; 1D561\n\
pound A3\n\
pound; A3\n\
pr; 227A\n\
prE; 2AB3\n\
prap; 2AB7\n\
prcue; 227C\n\
pre; 2AAF\n\
prec; 227A\n\
precapprox; 2AB7\n\
preccurlyeq; 227C\n\
preceq; 2AAF\n\
precnapprox; 2AB9\n\
precneqq; 2AB5\n\
precnsim; 22E8\n\
precsim; 227E\n\
prime; 2032\n\
primes; 2119\n\
prnE; 2AB5\n\
prnap; 2AB9\n\
prnsim; 22E8\n\
prod; 220F\n\
profalar; 232E\n\
profline; 2312\n\
profsurf; 2313\n\
prop; 221D\n\
propto; 221D\n\
prsim; 227E\n\
prurel; 22B0\n\
pscr; 1D4C5\n\
psi; 3C8\n\
puncsp; 2008\n\
qfr; 1D52E\n\
qint; 2A0C\n\
qopf; 1D562\n\
qprime; 2057\n\
qscr; 1D4C6\n\
quaternions; 210D\n\
quatint; 2A16\n\
quest; 3F\n\
questeq; 225F\n\
quot 22\n\
quot; 22\n\
rAarr; 21DB\n\
rArr; 21D2\n\
rAtail; 291C\n\
rBarr; 290F\n\
rHar; 2964\n\
race; 223D 331\n\
racute; 155\n\
radic; 221A\n\
raemptyv; 29B3\n\
rang; 27E9\n\
rangd; 2992\n\
range; 29A5\n\
rangle; 27E9\n\
raquo BB\n\
raquo; BB\n\
rarr; 2192\n\
rarrap; 2975\n\
rarrb; 21E5\n\
rarrbfs; 2920\n\
rarrc; 2933\n\
rarrfs; 291E\n\
rarrhk; 21AA\n\
rarrlp; 21AC\n\
rarrpl; 2945\n\
rarrsim; 2974\n\
rarrtl; 21A3\n\
rarrw; 219D\n\
ratail; 291A\n\
ratio; 2236\n\
rationals; 211A\n\
rbarr; 290D\n\
rbbrk; 2773\n\
rbrace; 7D\n\
rbrack; 5D\n\
rbrke; 298C\n\
rbrksld; 298E\n\
rbrkslu; 2990\n\
rcaron; 159\n\
rcedil; 157\n\
rceil; 2309\n\
rcub; 7D\n\
rcy; 440\n\
rdca; 2937\n\
rdldhar; 2969\n\
rdquo; 201D\n\
rdquor; 201D\n\
rdsh; 21B3\n\
real; 211C\n\
realine; 211B\n\
realpart; 211C\n\
reals; 211D\n\
rect; 25AD\n\
reg AE\n\
reg; AE\n\
rfisht; 297D\n\
rfloor; 230B\n\
rfr; 1D52F\n\
rhard; 21C1\n\
rharu; 21C0\n\
rharul; 296C\n\
rho; 3C1\n\
rhov; 3F1\n\
rightarrow; 2192\n\
rightarrowtail; 21A3\n\
rightharpoondown; 21C1\n\
rightharpoonup; 21C0\n\
rightleftarrows; 21C4\n\
rightleftharpoons; 21CC\n\
rightrightarrows; 21C9\n\
rightsquigarrow; 219D\n\
rightthreetimes; 22CC\n\
ring; 2DA\n\
risingdotseq; 2253\n\
rlarr; 21C4\n\
rlhar; 21CC\n\
rlm; 200F\n\
rmoust; 23B1\n\
rmoustache; 23B1\n\
rnmid; 2AEE\n\
roang; 27ED\n\
roarr; 21FE\n\
robrk; 27E7\n\
ropar; 2986\n\
ropf; 1D563\n\
roplus; 2A2E\n\
rotimes; 2A35\n\
rpar; 29\n\
rpargt; 2994\n\
rppolint; 2A12\n\
rrarr; 21C9\n\
rsaquo; 203A\n\
rscr; 1D4C7\n\
rsh; 21B1\n\
rsqb; 5D\n\
rsquo; 2019\n\
rsquor; 2019\n\
rthree; 22CC\n\
rtimes; 22CA\n\
rtri; 25B9\n\
rtrie; 22B5\n\
rtrif; 25B8\n\
rtriltri; 29CE\n\
ruluhar; 2968\n\
rx; 211E\n\
sacute; 15B\n\
sbquo; 201A\n\
sc; 227B\n\
scE; 2AB4\n\
scap; 2AB8\n\
scaron; 161\n\
sccue; 227D\n\
sce; 2AB0\n\
scedil; 15F\n\
scirc; 15D\n\
scnE; 2AB6\n\
scnap; 2ABA\n\
scnsim; 22E9\n\
scpolint; 2A13\n\
scsim; 227F\n\
scy; 441\n\
sdot; 22C5\n\
sdotb; 22A1\n\
sdote; 2A66\n\
seArr; 21D8\n\
searhk; 2925\n\
searr; 2198\n\
searrow; 2198\n\
sect A7\n\
sect; A7\n\
semi; 3B\n\
seswar; 2929\n\
setminus; 2216\n\
setmn; 2216\n\
sext; 2736\n\
sfr; 1D530\n\
sfrown; 2322\n\
sharp; 266F\n\
shchcy; 449\n\
shcy; 448\n\
shortmid; 2223\n\
shortparallel; 2225\n\
shy AD\n\
shy; AD\n\
sigma; 3C3\n\
sigmaf; 3C2\n\
sigmav; 3C2\n\
sim; 223C\n\
simdot; 2A6A\n\
sime; 2243\n\
simeq; 2243\n\
simg; 2A9E\n\
simgE; 2AA0\n\
siml; 2A9D\n\
simlE; 2A9F\n\
simne; 2246\n\
simplus; 2A24\n\
simrarr; 2972\n\
slarr; 2190\n\
smallsetminus; 2216\n\
smashp; 2A33\n\
smeparsl; 29E4\n\
smid; 2223\n\
smile; 2323\n\
smt; 2AAA\n\
smte; 2AAC\n\
smtes; 2AAC FE00\n\
softcy; 44C\n\
sol; 2F\n\
solb; 29C4\n\
solbar; 233F\n\
sopf; 1D564\n\
spades; 2660\n\
spadesuit; 2660\n\
spar; 2225\n\
sqcap; 2293\n\
sqcaps; 2293 FE00\n\
sqcup; 2294\n\
sqcups; 2294 FE00\n\
sqsub; 228F\n\
sqsube; 2291\n\
sqsubset; 228F\n\
sqsubseteq; 2291\n\
sqsup; 2290\n\
sqsupe; 2292\n\
sqsupset; 2290\n\
sqsupseteq; 2292\n\
squ; 25A1\n\
square; 25A1\n\
squarf; 25AA\n\
squf; 25AA\n\
srarr; 2192\n\
sscr; 1D4C8\n\
ssetmn; 2216\n\
ssmile; 2323\n\
sstarf; 22C6\n\
star; 2606\n\
starf; 2605\n\
straightepsilon; 3F5\n\
straightphi; 3D5\n\
strns; AF\n\
sub; 2282\n\
subE; 2AC5\n\
subdot; 2ABD\n\
sube; 2286\n\
subedot; 2AC3\n\
submult; 2AC1\n\
subnE; 2ACB\n\
subne; 228A\n\
subplus; 2ABF\n\
subrarr; 2979\n\
subset; 2282\n\
subseteq; 2286\n\
subseteqq; 2AC5\n\
subsetneq; 228A\n\
subsetneqq; 2ACB\n\
subsim; 2AC7\n\
subsub; 2AD5\n\
subsup; 2AD3\n\
succ; 227B\n\
succapprox; 2AB8\n\
succcurlyeq; 227D\n\
succeq; 2AB0\n\
succnapprox; 2ABA\n\
succneqq; 2AB6\n\
succnsim; 22E9\n\
succsim; 227F\n\
sum; 2211\n\
sung; 266A\n\
sup1 B9\n\
sup1; B9\n\
sup2 B2\n\
sup2; B2\n\
sup3 B3\n\
sup3; B3\n\
sup; 2283\n\
supE; 2AC6\n\
supdot; 2ABE\n\
supdsub; 2AD8\n\
supe; 2287\n\
supedot; 2AC4\n\
suphsol; 27C9\n\
suphsub; 2AD7\n\
suplarr; 297B\n\
supmult; 2AC2\n\
supnE; 2ACC\n\
supne; 228B\n\
supplus; 2AC0\n\
supset; 2283\n\
supseteq; 2287\n\
supseteqq; 2AC6\n\
supsetneq; 228B\n\
supsetneqq; 2ACC\n\
supsim; 2AC8\n\
supsub; 2AD4\n\
supsup; 2AD6\n\
swArr; 21D9\n\
swarhk; 2926\n\
swarr; 2199\n\
swarrow; 2199\n\
swnwar; 292A\n\
szlig DF\n\
szlig; DF\n\
target; 2316\n\
tau; 3C4\n\
tbrk; 23B4\n\
tcaron; 165\n\
tcedil; 163\n\
tcy; 442\n\
tdot; 20DB\n\
telrec; 2315\n\
tfr; 1D531\n\
there4; 2234\n\
therefore; 2234\n\
theta; 3B8\n\
thetasym; 3D1\n\
thetav; 3D1\n\
thickapprox; 2248\n\
thicksim; 223C\n\
thinsp; 2009\n\
thkap; 2248\n\
thksim; 223C\n\
thorn FE\n\
thorn; FE\n\
tilde; 2DC\n\
times D7\n\
times; D7\n\
timesb; 22A0\n\
timesbar; 2A31\n\
timesd; 2A30\n\
tint; 222D\n\
toea; 2928\n\
top; 22A4\n\
topbot; 2336\n\
topcir; 2AF1\n\
topf; 1D565\n\
topfork; 2ADA\n\
tosa; 2929\n\
tprime; 2034\n\
trade; 2122\n\
triangle; 25B5\n\
triangledown; 25BF\n\
triangleleft; 25C3\n\
trianglelefteq; 22B4\n\
triangleq; 225C\n\
triangleright; 25B9\n\
trianglerighteq; 22B5\n\
tridot; 25EC\n\
trie; 225C\n\
triminus; 2A3A\n\
triplus; 2A39\n\
trisb; 29CD\n\
tritime; 2A3B\n\
trpezium; 23E2\n\
tscr; 1D4C9\n\
tscy; 446\n\
tshcy; 45B\n\
tstrok; 167\n\
twixt; 226C\n\
twoheadleftarrow; 219E\n\
twoheadrightarrow; 21A0\n\
uArr; 21D1\n\
uHar; 2963\n\
uacute FA\n\
uacute; FA\n\
uarr; 2191\n\
ubrcy; 45E\n\
ubreve; 16D\n\
ucirc FB\n\
ucirc; FB\n\
ucy; 443\n\
udarr; 21C5\n\
udblac; 171\n\
udhar; 296E\n\
ufisht; 297E\n\
ufr; 1D532\n\
ugrave F9\n\
ugrave; F9\n\
uharl; 21BF\n\
uharr; 21BE\n\
uhblk; 2580\n\
ulcorn; 231C\n\
ulcorner; 231C\n\
ulcrop; 230F\n\
ultri; 25F8\n\
umacr; 16B\n\
uml A8\n\
uml; A8\n\
uogon; 173\n\
uopf; 1D566\n\
uparrow; 2191\n\
updownarrow; 2195\n\
upharpoonleft; 21BF\n\
upharpoonright; 21BE\n\
uplus; 228E\n\
upsi; 3C5\n\
upsih; 3D2\n\
upsilon; 3C5\n\
upuparrows; 21C8\n\
urcorn; 231D\n\
urcorner; 231D\n\
urcrop; 230E\n\
uring; 16F\n\
urtri; 25F9\n\
uscr; 1D4CA\n\
utdot; 22F0\n\
utilde; 169\n\
utri; 25B5\n\
utrif; 25B4\n\
uuarr; 21C8\n\
uuml FC\n\
uuml; FC\n\
uwangle; 29A7\n\
vArr; 21D5\n\
vBar; 2AE8\n\
vBarv; 2AE9\n\
vDash; 22A8\n\
vangrt; 299C\n\
varepsilon; 3F5\n\
varkappa; 3F0\n\
varnothing; 2205\n\
varphi; 3D5\n\
varpi; 3D6\n\
varpropto; 221D\n\
varr; 2195\n\
varrho; 3F1\n\
varsigma; 3C2\n\
varsubsetneq; 228A FE00\n\
varsubsetneqq; 2ACB FE00\n\
varsupsetneq; 228B FE00\n\
varsupsetneqq; 2ACC FE00\n\
vartheta; 3D1\n\
vartriangleleft; 22B2\n\
vartriangleright; 22B3\n\
vcy; 432\n\
vdash; 22A2\n\
vee; 2228\n\
veebar; 22BB\n\
veeeq; 225A\n\
vellip; 22EE\n\
verbar; 7C\n\
vert; 7C\n\
vfr; 1D533\n\
vltri; 22B2\n\
vnsub; 2282 20D2\n\
vnsup; 2283 20D2\n\
vopf; 1D567\n\
vprop; 221D\n\
vrtri; 22B3\n\
vscr; 1D4CB\n\
vsubnE; 2ACB FE00\n\
vsubne; 228A FE00\n\
vsupnE; 2ACC FE00\n\
vsupne; 228B FE00\n\
vzigzag; 299A\n\
wcirc; 175\n\
wedbar; 2A5F\n\
wedge; 2227\n\
wedgeq; 2259\n\
weierp; 2118\n\
wfr; 1D534\n\
wopf; 1D568\n\
wp; 2118\n\
wr; 2240\n\
wreath; 2240\n\
wscr; 1D4CC\n\
xcap; 22C2\n\
xcirc; 25EF\n\
xcup; 22C3\n\
xdtri; 25BD\n\
xfr; 1D535\n\
xhArr; 27FA\n\
xharr; 27F7\n\
xi; 3BE\n\
xlArr; 27F8\n\
xlarr; 27F5\n\
xmap; 27FC\n\
xnis; 22FB\n\
xodot; 2A00\n\
xopf; 1D569\n\
xoplus; 2A01\n\
xotime; 2A02\n\
xrArr; 27F9\n\
xrarr; 27F6\n\
xscr; 1D4CD\n\
xsqcup; 2A06\n\
xuplus; 2A04\n\
xutri; 25B3\n\
xvee; 22C1\n\
xwedge; 22C0\n\
yacute FD\n\
yacute; FD\n\
yacy; 44F\n\
ycirc; 177\n\
ycy; 44B\n\
yen A5\n\
yen; A5\n\
yfr; 1D536\n\
yicy; 457\n\
yopf; 1D56A\n\
yscr; 1D4CE\n\
yucy; 44E\n\
yuml FF\n\
yuml; FF\n\
zacute; 17A\n\
zcaron; 17E\n\
zcy; 437\n\
zdot; 17C\n\
zeetrf; 2128\n\
zeta; 3B6\n\
zfr; 1D537\n\
zhcy; 436\n\
zigrarr; 21DD\n\
zopf; 1D56B\n\
zscr; 1D4CF\n\
zwj; 200D\n\
zwnj; 200C\n\
";
const HTML_INVALID_CHARREFS: &str = "\
0 FFFD\n\
D D\n\
80 20AC\n\
81 81\n\
82 201A\n\
83 192\n\
84 201E\n\
85 2026\n\
86 2020\n\
87 2021\n\
88 2C6\n\
89 2030\n\
8A 160\n\
8B 2039\n\
8C 152\n\
8D 8D\n\
8E 17D\n\
8F 8F\n\
90 90\n\
91 2018\n\
92 2019\n\
93 201C\n\
94 201D\n\
95 2022\n\
96 2013\n\
97 2014\n\
98 2DC\n\
99 2122\n\
9A 161\n\
9B 203A\n\
9C 153\n\
9D 9D\n\
9E 17E\n\
9F 178\n\
";
const FTFY_UPPER_ENTITIES: &str = "\
AACUTE; C1\n\
ABREVE; 102\n\
AC; 223E\n\
ACD; 223F\n\
ACIRC; C2\n\
ACUTE; B4\n\
ACY; 410\n\
AELIG; C6\n\
AF; 2061\n\
AFR; 1D51E\n\
AGRAVE; C0\n\
ALEFSYM; 2135\n\
ALEPH; 2135\n\
ALPHA; 391\n\
AMACR; 100\n\
AMALG; 2A3F\n\
AND; 2227\n\
ANDAND; 2A55\n\
ANDD; 2A5C\n\
ANDSLOPE; 2A58\n\
ANDV; 2A5A\n\
ANG; 2220\n\
ANGE; 29A4\n\
ANGLE; 2220\n\
ANGMSD; 2221\n\
ANGMSDAA; 29A8\n\
ANGMSDAB; 29A9\n\
ANGMSDAC; 29AA\n\
ANGMSDAD; 29AB\n\
ANGMSDAE; 29AC\n\
ANGMSDAF; 29AD\n\
ANGMSDAG; 29AE\n\
ANGMSDAH; 29AF\n\
ANGRT; 221F\n\
ANGRTVB; 22BE\n\
ANGRTVBD; 299D\n\
ANGSPH; 2222\n\
ANGST; C5\n\
ANGZARR; 237C\n\
AOGON; 104\n\
AOPF; 1D552\n\
AP; 2248\n\
APACIR; 2A6F\n\
APE; 224A\n\
APID; 224B\n\
APOS; 27\n\
APPROX; 2248\n\
APPROXEQ; 224A\n\
ARING; C5\n\
ASCR; 1D4B6\n\
AST; 2A\n\
ASYMP; 2248\n\
ASYMPEQ; 224D\n\
ATILDE; C3\n\
AUML; C4\n\
AWCONINT; 2233\n\
AWINT; 2A11\n\
BACKCONG; 224C\n\
BACKEPSILON; 3F6\n\
BACKPRIME; 2035\n\
BACKSIM; 223D\n\
BACKSIMEQ; 22CD\n\
BARVEE; 22BD\n\
BARWED; 2305\n\
BARWEDGE; 2305\n\
BBRK; 23B5\n\
BBRKTBRK; 23B6\n\
BCONG; 224C\n\
BCY; 411\n\
BDQUO; 201E\n\
BECAUS; 2235\n\
BECAUSE; 2235\n\
BEMPTYV; 29B0\n\
BEPSI; 3F6\n\
BERNOU; 212C\n\
BETA; 392\n\
BETH; 2136\n\
BETWEEN; 226C\n\
BFR; 1D51F\n\
BIGCAP; 22C2\n\
BIGCIRC; 25EF\n\
BIGCUP; 22C3\n\
BIGODOT; 2A00\n\
BIGOPLUS; 2A01\n\
BIGOTIMES; 2A02\n\
BIGSQCUP; 2A06\n\
BIGSTAR; 2605\n\
BIGTRIANGLEDOWN; 25BD\n\
BIGTRIANGLEUP; 25B3\n\
BIGUPLUS; 2A04\n\
BIGVEE; 22C1\n\
BIGWEDGE; 22C0\n\
BKAROW; 290D\n\
BLACKLOZENGE; 29EB\n\
BLACKSQUARE; 25AA\n\
BLACKTRIANGLE; 25B4\n\
BLACKTRIANGLEDOWN; 25BE\n\
BLACKTRIANGLELEFT; 25C2\n\
BLACKTRIANGLERIGHT; 25B8\n\
BLANK; 2423\n\
BLK12; 2592\n\
BLK14; 2591\n\
BLK34; 2593\n\
BLOCK; 2588\n\
BNE; 3D 20E5\n\
BNEQUIV; 2261 20E5\n\
BNOT; 2310\n\
BOPF; 1D553\n\
BOT; 22A5\n\
BOTTOM; 22A5\n\
BOWTIE; 22C8\n\
BOXBOX; 29C9\n\
BOXDL; 2510\n\
BOXDR; 250C\n\
BOXH; 2500\n\
BOXHD; 252C\n\
BOXHU; 2534\n\
BOXMINUS; 229F\n\
BOXPLUS; 229E\n\
BOXTIMES; 22A0\n\
BOXUL; 2518\n\
BOXUR; 2514\n\
BOXV; 2502\n\
BOXVH; 253C\n\
BOXVL; 2524\n\
BOXVR; 251C\n\
BPRIME; 2035\n\
BREVE; 2D8\n\
BRVBAR; A6\n\
BSCR; 1D4B7\n\
BSEMI; 204F\n\
BSIM; 223D\n\
BSIME; 22CD\n\
BSOL; 5C\n\
BSOLB; 29C5\n\
BSOLHSUB; 27C8\n\
BULL; 2022\n\
BULLET; 2022\n\
BUMP; 224E\n\
BUMPE; 224F\n\
BUMPEQ; 224F\n\
CACUTE; 106\n\
CAP; 2229\n\
CAPAND; 2A44\n\
CAPBRCUP; 2A49\n\
CAPCAP; 2A4B\n\
CAPCUP; 2A47\n\
CAPDOT; 2A40\n\
CAPS; 2229 FE00\n\
CARET; 2041\n\
CARON; 2C7\n\
CCAPS; 2A4D\n\
CCARON; 10C\n\
CCEDIL; C7\n\
CCIRC; 108\n\
CCUPS; 2A4C\n\
CCUPSSM; 2A50\n\
CDOT; 10A\n\
CEDIL; B8\n\
CEMPTYV; 29B2\n\
CENT; A2\n\
CENTERDOT; B7\n\
CFR; 1D520\n\
CHCY; 427\n\
CHECK; 2713\n\
CHECKMARK; 2713\n\
CHI; 3A7\n\
CIR; 25CB\n\
CIRC; 2C6\n\
CIRCEQ; 2257\n\
CIRCLEARROWLEFT; 21BA\n\
CIRCLEARROWRIGHT; 21BB\n\
CIRCLEDAST; 229B\n\
CIRCLEDCIRC; 229A\n\
CIRCLEDDASH; 229D\n\
CIRE; 2257\n\
CIRFNINT; 2A10\n\
CIRMID; 2AEF\n\
CIRSCIR; 29C2\n\
CLUBS; 2663\n\
CLUBSUIT; 2663\n\
COLON; 3A\n\
COLONE; 2254\n\
COLONEQ; 2254\n\
COMMA; 2C\n\
COMMAT; 40\n\
COMP; 2201\n\
COMPFN; 2218\n\
COMPLEMENT; 2201\n\
COMPLEXES; 2102\n\
CONG; 2245\n\
CONGDOT; 2A6D\n\
CONINT; 222E\n\
COPF; 1D554\n\
COPROD; 2210\n\
CRARR; 21B5\n\
CROSS; 2717\n\
CSCR; 1D4B8\n\
CSUB; 2ACF\n\
CSUBE; 2AD1\n\
CSUP; 2AD0\n\
CSUPE; 2AD2\n\
CTDOT; 22EF\n\
CUDARRL; 2938\n\
CUDARRR; 2935\n\
CUEPR; 22DE\n\
CUESC; 22DF\n\
CULARR; 21B6\n\
CULARRP; 293D\n\
CUP; 222A\n\
CUPBRCAP; 2A48\n\
CUPCAP; 2A46\n\
CUPCUP; 2A4A\n\
CUPDOT; 228D\n\
CUPOR; 2A45\n\
CUPS; 222A FE00\n\
CURARR; 21B7\n\
CURARRM; 293C\n\
CURLYEQPREC; 22DE\n\
CURLYEQSUCC; 22DF\n\
CURLYVEE; 22CE\n\
CURLYWEDGE; 22CF\n\
CURREN; A4\n\
CURVEARROWLEFT; 21B6\n\
CURVEARROWRIGHT; 21B7\n\
CUVEE; 22CE\n\
CUWED; 22CF\n\
CWCONINT; 2232\n\
CWINT; 2231\n\
CYLCTY; 232D\n\
DAGGER; 2020\n\
DALETH; 2138\n\
DARR; 2193\n\
DASH; 2010\n\
DASHV; 22A3\n\
DBKAROW; 290F\n\
DBLAC; 2DD\n\
DCARON; 10E\n\
DCY; 414\n\
DDAGGER; 2021\n\
DDARR; 21CA\n\
DDOTSEQ; 2A77\n\
DEG; B0\n\
DELTA; 394\n\
DEMPTYV; 29B1\n\
DFISHT; 297F\n\
DFR; 1D521\n\
DHARL; 21C3\n\
DHARR; 21C2\n\
DIAM; 22C4\n\
DIAMOND; 22C4\n\
DIAMONDSUIT; 2666\n\
DIAMS; 2666\n\
DIE; A8\n\
DIGAMMA; 3DC\n\
DISIN; 22F2\n\
DIV; F7\n\
DIVIDE; F7\n\
DIVIDEONTIMES; 22C7\n\
DIVONX; 22C7\n\
DJCY; 402\n\
DLCORN; 231E\n\
DLCROP; 230D\n\
DOLLAR; 24\n\
DOPF; 1D555\n\
DOT; 2D9\n\
DOTEQ; 2250\n\
DOTEQDOT; 2251\n\
DOTMINUS; 2238\n\
DOTPLUS; 2214\n\
DOTSQUARE; 22A1\n\
DOUBLEBARWEDGE; 2306\n\
DOWNARROW; 2193\n\
DOWNDOWNARROWS; 21CA\n\
DOWNHARPOONLEFT; 21C3\n\
DOWNHARPOONRIGHT; 21C2\n\
DRBKAROW; 2910\n\
DRCORN; 231F\n\
DRCROP; 230C\n\
DSCR; 1D4B9\n\
DSCY; 405\n\
DSOL; 29F6\n\
DSTROK; 110\n\
DTDOT; 22F1\n\
DTRI; 25BF\n\
DTRIF; 25BE\n\
DUARR; 21F5\n\
DUHAR; 296F\n\
DWANGLE; 29A6\n\
DZCY; 40F\n\
DZIGRARR; 27FF\n\
EACUTE; C9\n\
EASTER; 2A6E\n\
ECARON; 11A\n\
ECIR; 2256\n\
ECIRC; CA\n\
ECOLON; 2255\n\
ECY; 42D\n\
EDOT; 116\n\
EE; 2147\n\
EFR; 1D522\n\
EG; 2A9A\n\
EGRAVE; C8\n\
EGS; 2A96\n\
EGSDOT; 2A98\n\
EL; 2A99\n\
ELINTERS; 23E7\n\
ELL; 2113\n\
ELS; 2A95\n\
ELSDOT; 2A97\n\
EMACR; 112\n\
EMPTY; 2205\n\
EMPTYSET; 2205\n\
EMPTYV; 2205\n\
EMSP13; 2004\n\
EMSP14; 2005\n\
EMSP; 2003\n\
ENSP; 2002\n\
EOGON; 118\n\
EOPF; 1D556\n\
EPAR; 22D5\n\
EPARSL; 29E3\n\
EPLUS; 2A71\n\
EPSI; 395\n\
EPSILON; 395\n\
EPSIV; 395\n\
EQCIRC; 2256\n\
EQCOLON; 2255\n\
EQSIM; 2242\n\
EQSLANTGTR; 2A96\n\
EQSLANTLESS; 2A95\n\
EQUALS; 3D\n\
EQUEST; 225F\n\
EQUIV; 2261\n\
EQVPARSL; 29E5\n\
ERARR; 2971\n\
ESCR; 212F\n\
ESDOT; 2250\n\
ESIM; 2242\n\
ETA; 397\n\
EUML; CB\n\
EURO; 20AC\n\
EXCL; 21\n\
EXIST; 2203\n\
EXPECTATION; 2130\n\
EXPONENTIALE; 2147\n\
FALLINGDOTSEQ; 2252\n\
FCY; 424\n\
FEMALE; 2640\n\
FFILIG; 46 46 49\n\
FFLIG; 46 46\n\
FFLLIG; 46 46 4C\n\
FFR; 1D523\n\
FILIG; 46 49\n\
FJLIG; 46 4A\n\
FLAT; 266D\n\
FLLIG; 46 4C\n\
FLTNS; 25B1\n\
FNOF; 191\n\
FOPF; 1D557\n\
FORALL; 2200\n\
FORK; 22D4\n\
FORKV; 2AD9\n\
FPARTINT; 2A0D\n\
FRAC12; BD\n\
FRAC13; 2153\n\
FRAC14; BC\n\
FRAC15; 2155\n\
FRAC16; 2159\n\
FRAC18; 215B\n\
FRAC23; 2154\n\
FRAC25; 2156\n\
FRAC34; BE\n\
FRAC35; 2157\n\
FRAC38; 215C\n\
FRAC45; 2158\n\
FRAC56; 215A\n\
FRAC58; 215D\n\
FRAC78; 215E\n\
FRASL; 2044\n\
FROWN; 2322\n\
FSCR; 1D4BB\n\
GACUTE; 1F4\n\
GAMMA; 393\n\
GAMMAD; 3DC\n\
GAP; 2A86\n\
GBREVE; 11E\n\
GCIRC; 11C\n\
GCY; 413\n\
GDOT; 120\n\
GE; 2265\n\
GEL; 22DB\n\
GEQ; 2265\n\
GEQQ; 2267\n\
GEQSLANT; 2A7E\n\
GES; 2A7E\n\
GESCC; 2AA9\n\
GESDOT; 2A80\n\
GESDOTO; 2A82\n\
GESDOTOL; 2A84\n\
GESL; 22DB FE00\n\
GESLES; 2A94\n\
GFR; 1D524\n\
GG; 226B\n\
GGG; 22D9\n\
GIMEL; 2137\n\
GJCY; 403\n\
GL; 2277\n\
GLA; 2AA5\n\
GLJ; 2AA4\n\
GNAP; 2A8A\n\
GNAPPROX; 2A8A\n\
GNE; 2A88\n\
GNEQ; 2A88\n\
GNEQQ; 2269\n\
GNSIM; 22E7\n\
GOPF; 1D558\n\
GRAVE; 60\n\
GSCR; 210A\n\
GSIM; 2273\n\
GSIME; 2A8E\n\
GSIML; 2A90\n\
GVERTNEQQ; 2269 FE00\n\
HAIRSP; 200A\n\
HALF; BD\n\
HAMILT; 210B\n\
HARDCY; 42A\n\
HARR; 2194\n\
HARRCIR; 2948\n\
HARRW; 21AD\n\
HBAR; 210F\n\
HCIRC; 124\n\
HEARTS; 2665\n\
HEARTSUIT; 2665\n\
HELLIP; 2026\n\
HERCON; 22B9\n\
HFR; 1D525\n\
HKSEAROW; 2925\n\
HKSWAROW; 2926\n\
HOARR; 21FF\n\
HOMTHT; 223B\n\
HOOKLEFTARROW; 21A9\n\
HOOKRIGHTARROW; 21AA\n\
HOPF; 1D559\n\
HORBAR; 2015\n\
HSCR; 1D4BD\n\
HSLASH; 210F\n\
HSTROK; 126\n\
HYBULL; 2043\n\
HYPHEN; 2010\n\
IACUTE; CD\n\
IC; 2063\n\
ICIRC; CE\n\
ICY; 418\n\
IECY; 415\n\
IEXCL; A1\n\
IFF; 21D4\n\
IFR; 1D526\n\
IGRAVE; CC\n\
II; 2148\n\
IIIINT; 2A0C\n\
IIINT; 222D\n\
IINFIN; 29DC\n\
IIOTA; 2129\n\
IJLIG; 132\n\
IMACR; 12A\n\
IMAGE; 2111\n\
IMAGLINE; 2110\n\
IMAGPART; 2111\n\
IMATH; 49\n\
IMOF; 22B7\n\
IMPED; 1B5\n\
IN; 2208\n\
INCARE; 2105\n\
INFIN; 221E\n\
INFINTIE; 29DD\n\
INODOT; 49\n\
INT; 222B\n\
INTCAL; 22BA\n\
INTEGERS; 2124\n\
INTERCAL; 22BA\n\
INTLARHK; 2A17\n\
INTPROD; 2A3C\n\
IOCY; 401\n\
IOGON; 12E\n\
IOPF; 1D55A\n\
IOTA; 399\n\
IPROD; 2A3C\n\
IQUEST; BF\n\
ISCR; 1D4BE\n\
ISIN; 2208\n\
ISINDOT; 22F5\n\
ISINS; 22F4\n\
ISINSV; 22F3\n\
ISINV; 2208\n\
IT; 2062\n\
ITILDE; 128\n\
IUKCY; 406\n\
IUML; CF\n\
JCIRC; 134\n\
JCY; 419\n\
JFR; 1D527\n\
JMATH; 237\n\
JOPF; 1D55B\n\
JSCR; 1D4BF\n\
JSERCY; 408\n\
JUKCY; 404\n\
KAPPA; 39A\n\
KAPPAV; 39A\n\
KCEDIL; 136\n\
KCY; 41A\n\
KFR; 1D528\n\
KGREEN; 138\n\
KHCY; 425\n\
KJCY; 40C\n\
KOPF; 1D55C\n\
KSCR; 1D4C0\n\
LACUTE; 139\n\
LAEMPTYV; 29B4\n\
LAGRAN; 2112\n\
LAMBDA; 39B\n\
LANG; 27E8\n\
LANGD; 2991\n\
LANGLE; 27E8\n\
LAP; 2A85\n\
LAQUO; AB\n\
LARR; 2190\n\
LARRB; 21E4\n\
LARRBFS; 291F\n\
LARRFS; 291D\n\
LARRHK; 21A9\n\
LARRLP; 21AB\n\
LARRPL; 2939\n\
LARRSIM; 2973\n\
LARRTL; 21A2\n\
LAT; 2AAB\n\
LATAIL; 2919\n\
LATE; 2AAD\n\
LATES; 2AAD FE00\n\
LBARR; 290C\n\
LBBRK; 2772\n\
LBRACE; 7B\n\
LBRACK; 5B\n\
LBRKE; 298B\n\
LBRKSLD; 298F\n\
LBRKSLU; 298D\n\
LCARON; 13D\n\
LCEDIL; 13B\n\
LCEIL; 2308\n\
LCUB; 7B\n\
LCY; 41B\n\
LDCA; 2936\n\
LDQUO; 201C\n\
LDQUOR; 201E\n\
LDRDHAR; 2967\n\
LDRUSHAR; 294B\n\
LDSH; 21B2\n\
LE; 2264\n\
LEFTARROW; 2190\n\
LEFTARROWTAIL; 21A2\n\
LEFTHARPOONDOWN; 21BD\n\
LEFTHARPOONUP; 21BC\n\
LEFTLEFTARROWS; 21C7\n\
LEFTRIGHTARROW; 2194\n\
LEFTRIGHTARROWS; 21C6\n\
LEFTRIGHTHARPOONS; 21CB\n\
LEFTRIGHTSQUIGARROW; 21AD\n\
LEFTTHREETIMES; 22CB\n\
LEG; 22DA\n\
LEQ; 2264\n\
LEQQ; 2266\n\
LEQSLANT; 2A7D\n\
LES; 2A7D\n\
LESCC; 2AA8\n\
LESDOT; 2A7F\n\
LESDOTO; 2A81\n\
LESDOTOR; 2A83\n\
LESG; 22DA FE00\n\
LESGES; 2A93\n\
LESSAPPROX; 2A85\n\
LESSDOT; 22D6\n\
LESSEQGTR; 22DA\n\
LESSEQQGTR; 2A8B\n\
LESSGTR; 2276\n\
LESSSIM; 2272\n\
LFISHT; 297C\n\
LFLOOR; 230A\n\
LFR; 1D529\n\
LG; 2276\n\
LHARD; 21BD\n\
LHARU; 21BC\n\
LHARUL; 296A\n\
LHBLK; 2584\n\
LJCY; 409\n\
LL; 226A\n\
LLARR; 21C7\n\
LLCORNER; 231E\n\
LLHARD; 296B\n\
LLTRI; 25FA\n\
LMIDOT; 13F\n\
LMOUST; 23B0\n\
LMOUSTACHE; 23B0\n\
LNAP; 2A89\n\
LNAPPROX; 2A89\n\
LNE; 2A87\n\
LNEQ; 2A87\n\
LNEQQ; 2268\n\
LNSIM; 22E6\n\
LOANG; 27EC\n\
LOARR; 21FD\n\
LOBRK; 27E6\n\
LONGLEFTARROW; 27F5\n\
LONGLEFTRIGHTARROW; 27F7\n\
LONGMAPSTO; 27FC\n\
LONGRIGHTARROW; 27F6\n\
LOOPARROWLEFT; 21AB\n\
LOOPARROWRIGHT; 21AC\n\
LOPAR; 2985\n\
LOPF; 1D55D\n\
LOPLUS; 2A2D\n\
LOTIMES; 2A34\n\
LOWAST; 2217\n\
LOWBAR; 5F\n\
LOZ; 25CA\n\
LOZENGE; 25CA\n\
LOZF; 29EB\n\
LPAR; 28\n\
LPARLT; 2993\n\
LRARR; 21C6\n\
LRCORNER; 231F\n\
LRHAR; 21CB\n\
LRHARD; 296D\n\
LRM; 200E\n\
LRTRI; 22BF\n\
LSAQUO; 2039\n\
LSCR; 1D4C1\n\
LSH; 21B0\n\
LSIM; 2272\n\
LSIME; 2A8D\n\
LSIMG; 2A8F\n\
LSQB; 5B\n\
LSQUO; 2018\n\
LSQUOR; 201A\n\
LSTROK; 141\n\
LURDSHAR; 294A\n\
LURUHAR; 2966\n\
LVERTNEQQ; 2268 FE00\n\
MACR; AF\n\
MALE; 2642\n\
MALT; 2720\n\
MALTESE; 2720\n\
MAP; 21A6\n\
MAPSTO; 21A6\n\
MAPSTODOWN; 21A7\n\
MAPSTOLEFT; 21A4\n\
MAPSTOUP; 21A5\n\
MARKER; 25AE\n\
MCOMMA; 2A29\n\
MCY; 41C\n\
MDASH; 2014\n\
MEASUREDANGLE; 2221\n\
MFR; 1D52A\n\
MHO; 2127\n\
MICRO; 39C\n\
MID; 2223\n\
MIDAST; 2A\n\
MIDCIR; 2AF0\n\
MIDDOT; B7\n\
MINUS; 2212\n\
MINUSB; 229F\n\
MINUSD; 2238\n\
MINUSDU; 2A2A\n\
MLCP; 2ADB\n\
MLDR; 2026\n\
MNPLUS; 2213\n\
MODELS; 22A7\n\
MOPF; 1D55E\n\
MP; 2213\n\
MSCR; 1D4C2\n\
MSTPOS; 223E\n\
MU; 39C\n\
MULTIMAP; 22B8\n\
MUMAP; 22B8\n\
NABLA; 2207\n\
NACUTE; 143\n\
NANG; 2220 20D2\n\
NAP; 2249\n\
NAPID; 224B 338\n\
NAPOS; 2BC 4E\n\
NAPPROX; 2249\n\
NATUR; 266E\n\
NATURAL; 266E\n\
NATURALS; 2115\n\
NBSP; A0\n\
NBUMP; 224E 338\n\
NBUMPE; 224F 338\n\
NCAP; 2A43\n\
NCARON; 147\n\
NCEDIL; 145\n\
NCONG; 2247\n\
NCONGDOT; 2A6D 338\n\
NCUP; 2A42\n\
NCY; 41D\n\
NDASH; 2013\n\
NE; 2260\n\
NEARHK; 2924\n\
NEARR; 2197\n\
NEARROW; 2197\n\
NEDOT; 2250 338\n\
NEQUIV; 2262\n\
NESEAR; 2928\n\
NESIM; 2242 338\n\
NEXIST; 2204\n\
NEXISTS; 2204\n\
NFR; 1D52B\n\
NGE; 2271\n\
NGEQ; 2271\n\
NGEQQ; 2267 338\n\
NGEQSLANT; 2A7E 338\n\
NGES; 2A7E 338\n\
NGSIM; 2275\n\
NGT; 226F\n\
NGTR; 226F\n\
NHARR; 21AE\n\
NHPAR; 2AF2\n\
NI; 220B\n\
NIS; 22FC\n\
NISD; 22FA\n\
NIV; 220B\n\
NJCY; 40A\n\
NLARR; 219A\n\
NLDR; 2025\n\
NLE; 2270\n\
NLEFTARROW; 219A\n\
NLEFTRIGHTARROW; 21AE\n\
NLEQ; 2270\n\
NLEQQ; 2266 338\n\
NLEQSLANT; 2A7D 338\n\
NLES; 2A7D 338\n\
NLESS; 226E\n\
NLSIM; 2274\n\
NLT; 226E\n\
NLTRI; 22EA\n\
NLTRIE; 22EC\n\
NMID; 2224\n\
NOPF; 1D55F\n\
NOT; AC\n\
NOTIN; 2209\n\
NOTINDOT; 22F5 338\n\
NOTINVA; 2209\n\
NOTINVB; 22F7\n\
NOTINVC; 22F6\n\
NOTNI; 220C\n\
NOTNIVA; 220C\n\
NOTNIVB; 22FE\n\
NOTNIVC; 22FD\n\
NPAR; 2226\n\
NPARALLEL; 2226\n\
NPARSL; 2AFD 20E5\n\
NPART; 2202 338\n\
NPOLINT; 2A14\n\
NPR; 2280\n\
NPRCUE; 22E0\n\
NPRE; 2AAF 338\n\
NPREC; 2280\n\
NPRECEQ; 2AAF 338\n\
NRARR; 219B\n\
NRARRC; 2933 338\n\
NRARRW; 219D 338\n\
NRIGHTARROW; 219B\n\
NRTRI; 22EB\n\
NRTRIE; 22ED\n\
NSC; 2281\n\
NSCCUE; 22E1\n\
NSCE; 2AB0 338\n\
NSCR; 1D4C3\n\
NSHORTMID; 2224\n\
NSHORTPARALLEL; 2226\n\
NSIM; 2241\n\
NSIME; 2244\n\
NSIMEQ; 2244\n\
NSMID; 2224\n\
NSPAR; 2226\n\
NSQSUBE; 22E2\n\
NSQSUPE; 22E3\n\
NSUB; 2284\n\
NSUBE; 2288\n\
NSUBSET; 2282 20D2\n\
NSUBSETEQ; 2288\n\
NSUBSETEQQ; 2AC5 338\n\
NSUCC; 2281\n\
NSUCCEQ; 2AB0 338\n\
NSUP; 2285\n\
NSUPE; 2289\n\
NSUPSET; 2283 20D2\n\
NSUPSETEQ; 2289\n\
NSUPSETEQQ; 2AC6 338\n\
NTGL; 2279\n\
NTILDE; D1\n\
NTLG; 2278\n\
NTRIANGLELEFT; 22EA\n\
NTRIANGLELEFTEQ; 22EC\n\
NTRIANGLERIGHT; 22EB\n\
NTRIANGLERIGHTEQ; 22ED\n\
NU; 39D\n\
NUM; 23\n\
NUMERO; 2116\n\
NUMSP; 2007\n\
NVAP; 224D 20D2\n\
NVDASH; 22AC\n\
NVGE; 2265 20D2\n\
NVGT; 3E 20D2\n\
NVINFIN; 29DE\n\
NVLE; 2264 20D2\n\
NVLT; 3C 20D2\n\
NVLTRIE; 22B4 20D2\n\
NVRTRIE; 22B5 20D2\n\
NVSIM; 223C 20D2\n\
NWARHK; 2923\n\
NWARR; 2196\n\
NWARROW; 2196\n\
NWNEAR; 2927\n\
OACUTE; D3\n\
OAST; 229B\n\
OCIR; 229A\n\
OCIRC; D4\n\
OCY; 41E\n\
ODASH; 229D\n\
ODBLAC; 150\n\
ODIV; 2A38\n\
ODOT; 2299\n\
ODSOLD; 29BC\n\
OELIG; 152\n\
OFCIR; 29BF\n\
OFR; 1D52C\n\
OGON; 2DB\n\
OGRAVE; D2\n\
OGT; 29C1\n\
OHBAR; 29B5\n\
OHM; 3A9\n\
OINT; 222E\n\
OLARR; 21BA\n\
OLCIR; 29BE\n\
OLCROSS; 29BB\n\
OLINE; 203E\n\
OLT; 29C0\n\
OMACR; 14C\n\
OMEGA; 3A9\n\
OMICRON; 39F\n\
OMID; 29B6\n\
OMINUS; 2296\n\
OOPF; 1D560\n\
OPAR; 29B7\n\
OPERP; 29B9\n\
OPLUS; 2295\n\
OR; 2228\n\
ORARR; 21BB\n\
ORD; 2A5D\n\
ORDER; 2134\n\
ORDEROF; 2134\n\
ORDF; AA\n\
ORDM; BA\n\
ORIGOF; 22B6\n\
OROR; 2A56\n\
ORSLOPE; 2A57\n\
ORV; 2A5B\n\
OSCR; 2134\n\
OSLASH; D8\n\
OSOL; 2298\n\
OTILDE; D5\n\
OTIMES; 2297\n\
OTIMESAS; 2A36\n\
OUML; D6\n\
OVBAR; 233D\n\
PAR; 2225\n\
PARA; B6\n\
PARALLEL; 2225\n\
PARSIM; 2AF3\n\
PARSL; 2AFD\n\
PART; 2202\n\
PCY; 41F\n\
PERCNT; 25\n\
PERIOD; 2E\n\
PERMIL; 2030\n\
PERP; 22A5\n\
PERTENK; 2031\n\
PFR; 1D52D\n\
PHI; 3A6\n\
PHIV; 3A6\n\
PHMMAT; 2133\n\
PHONE; 260E\n\
PI; 3A0\n\
PITCHFORK; 22D4\n\
PIV; 3A0\n\
PLANCK; 210F\n\
PLANCKH; 210E\n\
PLANKV; 210F\n\
PLUS; 2B\n\
PLUSACIR; 2A23\n\
PLUSB; 229E\n\
PLUSCIR; 2A22\n\
PLUSDO; 2214\n\
PLUSDU; 2A25\n\
PLUSE; 2A72\n\
PLUSMN; B1\n\
PLUSSIM; 2A26\n\
PLUSTWO; 2A27\n\
PM; B1\n\
POINTINT; 2A15\n\
POPF; 1D561\n\
POUND; A3\n\
PR; 227A\n\
PRAP; 2AB7\n\
PRCUE; 227C\n\
PRE; 2AAF\n\
PREC; 227A\n\
PRECAPPROX; 2AB7\n\
PRECCURLYEQ; 227C\n\
PRECEQ; 2AAF\n\
PRECNAPPROX; 2AB9\n\
PRECNEQQ; 2AB5\n\
PRECNSIM; 22E8\n\
PRECSIM; 227E\n\
PRIME; 2032\n\
PRIMES; 2119\n\
PRNAP; 2AB9\n\
PRNSIM; 22E8\n\
PROD; 220F\n\
PROFALAR; 232E\n\
PROFLINE; 2312\n\
PROFSURF; 2313\n\
PROP; 221D\n\
PROPTO; 221D\n\
PRSIM; 227E\n\
PRUREL; 22B0\n\
PSCR; 1D4C5\n\
PSI; 3A8\n\
PUNCSP; 2008\n\
QFR; 1D52E\n\
QINT; 2A0C\n\
QOPF; 1D562\n\
QPRIME; 2057\n\
QSCR; 1D4C6\n\
QUATERNIONS; 210D\n\
QUATINT; 2A16\n\
QUEST; 3F\n\
QUESTEQ; 225F\n\
RACE; 223D 331\n\
RACUTE; 154\n\
RADIC; 221A\n\
RAEMPTYV; 29B3\n\
RANG; 27E9\n\
RANGD; 2992\n\
RANGE; 29A5\n\
RANGLE; 27E9\n\
RAQUO; BB\n\
RARR; 2192\n\
RARRAP; 2975\n\
RARRB; 21E5\n\
RARRBFS; 2920\n\
RARRC; 2933\n\
RARRFS; 291E\n\
RARRHK; 21AA\n\
RARRLP; 21AC\n\
RARRPL; 2945\n\
RARRSIM; 2974\n\
RARRTL; 21A3\n\
RARRW; 219D\n\
RATAIL; 291A\n\
RATIO; 2236\n\
RATIONALS; 211A\n\
RBARR; 290D\n\
RBBRK; 2773\n\
RBRACE; 7D\n\
RBRACK; 5D\n\
RBRKE; 298C\n\
RBRKSLD; 298E\n\
RBRKSLU; 2990\n\
RCARON; 158\n\
RCEDIL; 156\n\
RCEIL; 2309\n\
RCUB; 7D\n\
RCY; 420\n\
RDCA; 2937\n\
RDLDHAR; 2969\n\
RDQUO; 201D\n\
RDQUOR; 201D\n\
RDSH; 21B3\n\
REAL; 211C\n\
REALINE; 211B\n\
REALPART; 211C\n\
REALS; 211D\n\
RECT; 25AD\n\
RFISHT; 297D\n\
RFLOOR; 230B\n\
RFR; 1D52F\n\
RHARD; 21C1\n\
RHARU; 21C0\n\
RHARUL; 296C\n\
RHO; 3A1\n\
RHOV; 3A1\n\
RIGHTARROW; 2192\n\
RIGHTARROWTAIL; 21A3\n\
RIGHTHARPOONDOWN; 21C1\n\
RIGHTHARPOONUP; 21C0\n\
RIGHTLEFTARROWS; 21C4\n\
RIGHTLEFTHARPOONS; 21CC\n\
RIGHTRIGHTARROWS; 21C9\n\
RIGHTSQUIGARROW; 219D\n\
RIGHTTHREETIMES; 22CC\n\
RING; 2DA\n\
RISINGDOTSEQ; 2253\n\
RLARR; 21C4\n\
RLHAR; 21CC\n\
RLM; 200F\n\
RMOUST; 23B1\n\
RMOUSTACHE; 23B1\n\
RNMID; 2AEE\n\
ROANG; 27ED\n\
ROARR; 21FE\n\
ROBRK; 27E7\n\
ROPAR; 2986\n\
ROPF; 1D563\n\
ROPLUS; 2A2E\n\
ROTIMES; 2A35\n\
RPAR; 29\n\
RPARGT; 2994\n\
RPPOLINT; 2A12\n\
RRARR; 21C9\n\
RSAQUO; 203A\n\
RSCR; 1D4C7\n\
RSH; 21B1\n\
RSQB; 5D\n\
RSQUO; 2019\n\
RSQUOR; 2019\n\
RTHREE; 22CC\n\
RTIMES; 22CA\n\
RTRI; 25B9\n\
RTRIE; 22B5\n\
RTRIF; 25B8\n\
RTRILTRI; 29CE\n\
RULUHAR; 2968\n\
RX; 211E\n\
SACUTE; 15A\n\
SBQUO; 201A\n\
SC; 227B\n\
SCAP; 2AB8\n\
SCARON; 160\n\
SCCUE; 227D\n\
SCE; 2AB0\n\
SCEDIL; 15E\n\
SCIRC; 15C\n\
SCNAP; 2ABA\n\
SCNSIM; 22E9\n\
SCPOLINT; 2A13\n\
SCSIM; 227F\n\
SCY; 421\n\
SDOT; 22C5\n\
SDOTB; 22A1\n\
SDOTE; 2A66\n\
SEARHK; 2925\n\
SEARR; 2198\n\
SEARROW; 2198\n\
SECT; A7\n\
SEMI; 3B\n\
SESWAR; 2929\n\
SETMINUS; 2216\n\
SETMN; 2216\n\
SEXT; 2736\n\
SFR; 1D530\n\
SFROWN; 2322\n\
SHARP; 266F\n\
SHCHCY; 429\n\
SHCY; 428\n\
SHORTMID; 2223\n\
SHORTPARALLEL; 2225\n\
SHY; AD\n\
SIGMA; 3A3\n\
SIGMAF; 3A3\n\
SIGMAV; 3A3\n\
SIM; 223C\n\
SIMDOT; 2A6A\n\
SIME; 2243\n\
SIMEQ; 2243\n\
SIMG; 2A9E\n\
SIML; 2A9D\n\
SIMNE; 2246\n\
SIMPLUS; 2A24\n\
SIMRARR; 2972\n\
SLARR; 2190\n\
SMALLSETMINUS; 2216\n\
SMASHP; 2A33\n\
SMEPARSL; 29E4\n\
SMID; 2223\n\
SMILE; 2323\n\
SMT; 2AAA\n\
SMTE; 2AAC\n\
SMTES; 2AAC FE00\n\
SOFTCY; 42C\n\
SOL; 2F\n\
SOLB; 29C4\n\
SOLBAR; 233F\n\
SOPF; 1D564\n\
SPADES; 2660\n\
SPADESUIT; 2660\n\
SPAR; 2225\n\
SQCAP; 2293\n\
SQCAPS; 2293 FE00\n\
SQCUP; 2294\n\
SQCUPS; 2294 FE00\n\
SQSUB; 228F\n\
SQSUBE; 2291\n\
SQSUBSET; 228F\n\
SQSUBSETEQ; 2291\n\
SQSUP; 2290\n\
SQSUPE; 2292\n\
SQSUPSET; 2290\n\
SQSUPSETEQ; 2292\n\
SQU; 25A1\n\
SQUARE; 25A1\n\
SQUARF; 25AA\n\
SQUF; 25AA\n\
SRARR; 2192\n\
SSCR; 1D4C8\n\
SSETMN; 2216\n\
SSMILE; 2323\n\
SSTARF; 22C6\n\
STAR; 2606\n\
STARF; 2605\n\
STRAIGHTEPSILON; 395\n\
STRAIGHTPHI; 3A6\n\
STRNS; AF\n\
SUB; 2282\n\
SUBDOT; 2ABD\n\
SUBE; 2286\n\
SUBEDOT; 2AC3\n\
SUBMULT; 2AC1\n\
SUBNE; 228A\n\
SUBPLUS; 2ABF\n\
SUBRARR; 2979\n\
SUBSET; 2282\n\
SUBSETEQ; 2286\n\
SUBSETEQQ; 2AC5\n\
SUBSETNEQ; 228A\n\
SUBSETNEQQ; 2ACB\n\
SUBSIM; 2AC7\n\
SUBSUB; 2AD5\n\
SUBSUP; 2AD3\n\
SUCC; 227B\n\
SUCCAPPROX; 2AB8\n\
SUCCCURLYEQ; 227D\n\
SUCCEQ; 2AB0\n\
SUCCNAPPROX; 2ABA\n\
SUCCNEQQ; 2AB6\n\
SUCCNSIM; 22E9\n\
SUCCSIM; 227F\n\
SUM; 2211\n\
SUNG; 266A\n\
SUP1; B9\n\
SUP2; B2\n\
SUP3; B3\n\
SUP; 2283\n\
SUPDOT; 2ABE\n\
SUPDSUB; 2AD8\n\
SUPE; 2287\n\
SUPEDOT; 2AC4\n\
SUPHSOL; 27C9\n\
SUPHSUB; 2AD7\n\
SUPLARR; 297B\n\
SUPMULT; 2AC2\n\
SUPNE; 228B\n\
SUPPLUS; 2AC0\n\
SUPSET; 2283\n\
SUPSETEQ; 2287\n\
SUPSETEQQ; 2AC6\n\
SUPSETNEQ; 228B\n\
SUPSETNEQQ; 2ACC\n\
SUPSIM; 2AC8\n\
SUPSUB; 2AD4\n\
SUPSUP; 2AD6\n\
SWARHK; 2926\n\
SWARR; 2199\n\
SWARROW; 2199\n\
SWNWAR; 292A\n\
SZLIG; 53 53\n\
TARGET; 2316\n\
TAU; 3A4\n\
TBRK; 23B4\n\
TCARON; 164\n\
TCEDIL; 162\n\
TCY; 422\n\
TDOT; 20DB\n\
TELREC; 2315\n\
TFR; 1D531\n\
THERE4; 2234\n\
THEREFORE; 2234\n\
THETA; 398\n\
THETASYM; 398\n\
THETAV; 398\n\
THICKAPPROX; 2248\n\
THICKSIM; 223C\n\
THINSP; 2009\n\
THKAP; 2248\n\
THKSIM; 223C\n\
TILDE; 2DC\n\
TIMES; D7\n\
TIMESB; 22A0\n\
TIMESBAR; 2A31\n\
TIMESD; 2A30\n\
TINT; 222D\n\
TOEA; 2928\n\
TOP; 22A4\n\
TOPBOT; 2336\n\
TOPCIR; 2AF1\n\
TOPF; 1D565\n\
TOPFORK; 2ADA\n\
TOSA; 2929\n\
TPRIME; 2034\n\
TRIANGLE; 25B5\n\
TRIANGLEDOWN; 25BF\n\
TRIANGLELEFT; 25C3\n\
TRIANGLELEFTEQ; 22B4\n\
TRIANGLEQ; 225C\n\
TRIANGLERIGHT; 25B9\n\
TRIANGLERIGHTEQ; 22B5\n\
TRIDOT; 25EC\n\
TRIE; 225C\n\
TRIMINUS; 2A3A\n\
TRIPLUS; 2A39\n\
TRISB; 29CD\n\
TRITIME; 2A3B\n\
TRPEZIUM; 23E2\n\
TSCR; 1D4C9\n\
TSCY; 426\n\
TSHCY; 40B\n\
TSTROK; 166\n\
TWIXT; 226C\n\
TWOHEADLEFTARROW; 219E\n\
TWOHEADRIGHTARROW; 21A0\n\
UACUTE; DA\n\
UARR; 2191\n\
UBRCY; 40E\n\
UBREVE; 16C\n\
UCIRC; DB\n\
UCY; 423\n\
UDARR; 21C5\n\
UDBLAC; 170\n\
UDHAR; 296E\n\
UFISHT; 297E\n\
UFR; 1D532\n\
UGRAVE; D9\n\
UHARL; 21BF\n\
UHARR; 21BE\n\
UHBLK; 2580\n\
ULCORN; 231C\n\
ULCORNER; 231C\n\
ULCROP; 230F\n\
ULTRI; 25F8\n\
UMACR; 16A\n\
UML; A8\n\
UOGON; 172\n\
UOPF; 1D566\n\
UPARROW; 2191\n\
UPDOWNARROW; 2195\n\
UPHARPOONLEFT; 21BF\n\
UPHARPOONRIGHT; 21BE\n\
UPLUS; 228E\n\
UPSI; 3A5\n\
UPSIH; 3D2\n\
UPSILON; 3A5\n\
UPUPARROWS; 21C8\n\
URCORN; 231D\n\
URCORNER; 231D\n\
URCROP; 230E\n\
URING; 16E\n\
URTRI; 25F9\n\
USCR; 1D4CA\n\
UTDOT; 22F0\n\
UTILDE; 168\n\
UTRI; 25B5\n\
UTRIF; 25B4\n\
UUARR; 21C8\n\
UUML; DC\n\
UWANGLE; 29A7\n\
VANGRT; 299C\n\
VAREPSILON; 395\n\
VARKAPPA; 39A\n\
VARNOTHING; 2205\n\
VARPHI; 3A6\n\
VARPI; 3A0\n\
VARPROPTO; 221D\n\
VARR; 2195\n\
VARRHO; 3A1\n\
VARSIGMA; 3A3\n\
VARSUBSETNEQ; 228A FE00\n\
VARSUBSETNEQQ; 2ACB FE00\n\
VARSUPSETNEQ; 228B FE00\n\
VARSUPSETNEQQ; 2ACC FE00\n\
VARTHETA; 398\n\
VARTRIANGLELEFT; 22B2\n\
VARTRIANGLERIGHT; 22B3\n\
VCY; 412\n\
VDASH; 22A2\n\
VEE; 2228\n\
VEEBAR; 22BB\n\
VEEEQ; 225A\n\
VELLIP; 22EE\n\
VERBAR; 7C\n\
VERT; 7C\n\
VFR; 1D533\n\
VLTRI; 22B2\n\
VNSUB; 2282 20D2\n\
VNSUP; 2283 20D2\n\
VOPF; 1D567\n\
VPROP; 221D\n\
VRTRI; 22B3\n\
VSCR; 1D4CB\n\
VSUBNE; 228A FE00\n\
VSUPNE; 228B FE00\n\
VZIGZAG; 299A\n\
WCIRC; 174\n\
WEDBAR; 2A5F\n\
WEDGE; 2227\n\
WEDGEQ; 2259\n\
WEIERP; 2118\n\
WFR; 1D534\n\
WOPF; 1D568\n\
WP; 2118\n\
WR; 2240\n\
WREATH; 2240\n\
WSCR; 1D4CC\n\
XCAP; 22C2\n\
XCIRC; 25EF\n\
XCUP; 22C3\n\
XDTRI; 25BD\n\
XFR; 1D535\n\
XHARR; 27F7\n\
XI; 39E\n\
XLARR; 27F5\n\
XMAP; 27FC\n\
XNIS; 22FB\n\
XODOT; 2A00\n\
XOPF; 1D569\n\
XOPLUS; 2A01\n\
XOTIME; 2A02\n\
XRARR; 27F6\n\
XSCR; 1D4CD\n\
XSQCUP; 2A06\n\
XUPLUS; 2A04\n\
XUTRI; 25B3\n\
XVEE; 22C1\n\
XWEDGE; 22C0\n\
YACUTE; DD\n\
YACY; 42F\n\
YCIRC; 176\n\
YCY; 42B\n\
YEN; A5\n\
YFR; 1D536\n\
YICY; 407\n\
YOPF; 1D56A\n\
YSCR; 1D4CE\n\
YUCY; 42E\n\
YUML; 178\n\
ZACUTE; 179\n\
ZCARON; 17D\n\
ZCY; 417\n\
ZDOT; 17B\n\
ZEETRF; 2128\n\
ZETA; 396\n\
ZFR; 1D537\n\
ZHCY; 416\n\
ZIGRARR; 21DD\n\
ZOPF; 1D56B\n\
ZSCR; 1D4CF\n\
ZWJ; 200D\n\
ZWNJ; 200C\n\
";
const FTFY_WIDTH_MAP: &str = "\
3000 20\n\
FF01 21\n\
FF02 22\n\
FF03 23\n\
FF04 24\n\
FF05 25\n\
FF06 26\n\
FF07 27\n\
FF08 28\n\
FF09 29\n\
FF0A 2A\n\
FF0B 2B\n\
FF0C 2C\n\
FF0D 2D\n\
FF0E 2E\n\
FF0F 2F\n\
FF10 30\n\
FF11 31\n\
FF12 32\n\
FF13 33\n\
FF14 34\n\
FF15 35\n\
FF16 36\n\
FF17 37\n\
FF18 38\n\
FF19 39\n\
FF1A 3A\n\
FF1B 3B\n\
FF1C 3C\n\
FF1D 3D\n\
FF1E 3E\n\
FF1F 3F\n\
FF20 40\n\
FF21 41\n\
FF22 42\n\
FF23 43\n\
FF24 44\n\
FF25 45\n\
FF26 46\n\
FF27 47\n\
FF28 48\n\
FF29 49\n\
FF2A 4A\n\
FF2B 4B\n\
FF2C 4C\n\
FF2D 4D\n\
FF2E 4E\n\
FF2F 4F\n\
FF30 50\n\
FF31 51\n\
FF32 52\n\
FF33 53\n\
FF34 54\n\
FF35 55\n\
FF36 56\n\
FF37 57\n\
FF38 58\n\
FF39 59\n\
FF3A 5A\n\
FF3B 5B\n\
FF3C 5C\n\
FF3D 5D\n\
FF3E 5E\n\
FF3F 5F\n\
FF40 60\n\
FF41 61\n\
FF42 62\n\
FF43 63\n\
FF44 64\n\
FF45 65\n\
FF46 66\n\
FF47 67\n\
FF48 68\n\
FF49 69\n\
FF4A 6A\n\
FF4B 6B\n\
FF4C 6C\n\
FF4D 6D\n\
FF4E 6E\n\
FF4F 6F\n\
FF50 70\n\
FF51 71\n\
FF52 72\n\
FF53 73\n\
FF54 74\n\
FF55 75\n\
FF56 76\n\
FF57 77\n\
FF58 78\n\
FF59 79\n\
FF5A 7A\n\
FF5B 7B\n\
FF5C 7C\n\
FF5D 7D\n\
FF5E 7E\n\
FF5F 2985\n\
FF60 2986\n\
FF61 3002\n\
FF62 300C\n\
FF63 300D\n\
FF64 3001\n\
FF65 30FB\n\
FF66 30F2\n\
FF67 30A1\n\
FF68 30A3\n\
FF69 30A5\n\
FF6A 30A7\n\
FF6B 30A9\n\
FF6C 30E3\n\
FF6D 30E5\n\
FF6E 30E7\n\
FF6F 30C3\n\
FF70 30FC\n\
FF71 30A2\n\
FF72 30A4\n\
FF73 30A6\n\
FF74 30A8\n\
FF75 30AA\n\
FF76 30AB\n\
FF77 30AD\n\
FF78 30AF\n\
FF79 30B1\n\
FF7A 30B3\n\
FF7B 30B5\n\
FF7C 30B7\n\
FF7D 30B9\n\
FF7E 30BB\n\
FF7F 30BD\n\
FF80 30BF\n\
FF81 30C1\n\
FF82 30C4\n\
FF83 30C6\n\
FF84 30C8\n\
FF85 30CA\n\
FF86 30CB\n\
FF87 30CC\n\
FF88 30CD\n\
FF89 30CE\n\
FF8A 30CF\n\
FF8B 30D2\n\
FF8C 30D5\n\
FF8D 30D8\n\
FF8E 30DB\n\
FF8F 30DE\n\
FF90 30DF\n\
FF91 30E0\n\
FF92 30E1\n\
FF93 30E2\n\
FF94 30E4\n\
FF95 30E6\n\
FF96 30E8\n\
FF97 30E9\n\
FF98 30EA\n\
FF99 30EB\n\
FF9A 30EC\n\
FF9B 30ED\n\
FF9C 30EF\n\
FF9D 30F3\n\
FF9E 3099\n\
FF9F 309A\n\
FFA0 1160\n\
FFA1 1100\n\
FFA2 1101\n\
FFA3 11AA\n\
FFA4 1102\n\
FFA5 11AC\n\
FFA6 11AD\n\
FFA7 1103\n\
FFA8 1104\n\
FFA9 1105\n\
FFAA 11B0\n\
FFAB 11B1\n\
FFAC 11B2\n\
FFAD 11B3\n\
FFAE 11B4\n\
FFAF 11B5\n\
FFB0 111A\n\
FFB1 1106\n\
FFB2 1107\n\
FFB3 1108\n\
FFB4 1121\n\
FFB5 1109\n\
FFB6 110A\n\
FFB7 110B\n\
FFB8 110C\n\
FFB9 110D\n\
FFBA 110E\n\
FFBB 110F\n\
FFBC 1110\n\
FFBD 1111\n\
FFBE 1112\n\
FFC2 1161\n\
FFC3 1162\n\
FFC4 1163\n\
FFC5 1164\n\
FFC6 1165\n\
FFC7 1166\n\
FFCA 1167\n\
FFCB 1168\n\
FFCC 1169\n\
FFCD 116A\n\
FFCE 116B\n\
FFCF 116C\n\
FFD2 116D\n\
FFD3 116E\n\
FFD4 116F\n\
FFD5 1170\n\
FFD6 1171\n\
FFD7 1172\n\
FFDA 1173\n\
FFDB 1174\n\
FFDC 1175\n\
FFE0 A2\n\
FFE1 A3\n\
FFE2 AC\n\
FFE3 20 304\n\
FFE4 A6\n\
FFE5 A5\n\
FFE6 20A9\n\
FFE8 2502\n\
FFE9 2190\n\
FFEA 2191\n\
FFEB 2192\n\
FFEC 2193\n\
FFED 25A0\n\
FFEE 25CB\n\
";
const FTFY_LIGATURES: &str = "\
132 49 4A\n\
133 69 6A\n\
149 2BC 6E\n\
1C4 44 17D\n\
1C5 44 17E\n\
1C6 64 17E\n\
1C7 4C 4A\n\
1C8 4C 6A\n\
1C9 6C 6A\n\
1CA 4E 4A\n\
1CB 4E 6A\n\
1CC 6E 6A\n\
1F1 44 5A\n\
1F2 44 7A\n\
1F3 64 7A\n\
FB00 66 66\n\
FB01 66 69\n\
FB02 66 6C\n\
FB03 66 66 69\n\
FB04 66 66 6C\n\
FB05 17F 74\n\
FB06 73 74\n\
";
const FTFY_C1: &str = "\
80 20AC\n\
81 81\n\
82 201A\n\
83 192\n\
84 201E\n\
85 2026\n\
86 2020\n\
87 2021\n\
88 2C6\n\
89 2030\n\
8A 160\n\
8B 2039\n\
8C 152\n\
8D 8D\n\
8E 17D\n\
8F 8F\n\
90 90\n\
91 2018\n\
92 2019\n\
93 201C\n\
94 201D\n\
95 2022\n\
96 2013\n\
97 2014\n\
98 2DC\n\
99 2122\n\
9A 161\n\
9B 203A\n\
9C 153\n\
9D 9D\n\
9E 17E\n\
9F 178\n\
";
