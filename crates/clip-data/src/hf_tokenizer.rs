//! OpenCLIP's `HFTokenizer` (open_clip/tokenizer.py) for configs that name `hf_tokenizer_name`:
//! a Hugging Face `tokenizer.json` run by the `tokenizers` library (what transformers' fast
//! tokenizers are), after OpenCLIP's cleaning, padded and truncated to the context length as
//! `AutoTokenizer(texts, max_length=ctx, padding="max_length", truncation=True)` does.
//!
//! The files come from a local folder or from the Hugging Face cache, found offline as
//! `huggingface_hub` finds them (`models--ORG--NAME/snapshots/<refs/main>/`); never downloaded:
//! compute nodes have no internet. What transformers reads besides `tokenizer.json`:
//! `tokenizer_config.json` and `special_tokens_map.json` for the pad and sep tokens and the
//! padding and truncation sides (transformers 5 ignores `add_bos_token` / `add_eos_token` where
//! there is a `tokenizer.json`).
//!
//! Which transformers class `tokenizer_config.json` names matters in transformers 5: the generic
//! one (`PreTrainedTokenizerFast`) and `BertTokenizer` / `RobertaTokenizer` run `tokenizer.json`
//! as it is (tested here), while classes such as `T5Tokenizer` and `GemmaTokenizer` rebuild their
//! own normalizer and pre-tokenizer, which equal a genuine T5 / Gemma `tokenizer.json`'s but were
//! not compared here (the hub's files cannot be fetched): [`HfTokenizer::unverified_class`]
//! names such a class so that callers can say so.
//!
//! Cleaning (`tokenizer_kwargs.clean`), as OpenCLIP's `get_clean_fn`:
//! - `whitespace` (the default): `whitespace_clean(basic_clean(x))`;
//! - `lower`: the same, lower-cased;
//! - `canonicalize`: big_vision's `canonicalize_text(basic_clean(x))`: `_` to space, ASCII
//!   punctuation removed, lower-cased, whitespace collapsed.
//!
//! `basic_clean` is the CLIP tokenizer's ftfy + double HTML unescape (see `tokenizer.rs`, which
//! does not repair mojibake).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::tokenizer::{basic_clean, clean_lower, whitespace_clean};

/// OpenCLIP's `clean` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clean {
    Whitespace,
    Lower,
    Canonicalize,
}

impl Clean {
    /// `tokenizer_kwargs.clean`'s value.
    pub fn parse(s: &str) -> Result<Clean, String> {
        match s {
            "whitespace" => Ok(Clean::Whitespace),
            "lower" => Ok(Clean::Lower),
            "canonicalize" => Ok(Clean::Canonicalize),
            _ => Err(format!(
                "clean {s:?}: OpenCLIP knows whitespace, lower and canonicalize"
            )),
        }
    }

    /// The text OpenCLIP hands the tokenizer.
    pub fn apply(self, text: &str) -> String {
        match self {
            Clean::Whitespace => whitespace_clean(&basic_clean(text)),
            Clean::Lower => clean_lower(text),
            Clean::Canonicalize => {
                // Python's string.punctuation: ASCII only; `_` became a space first.
                let kept: String = basic_clean(text)
                    .chars()
                    .map(|c| if c == '_' { ' ' } else { c })
                    .filter(|c| !c.is_ascii_punctuation())
                    .collect();
                whitespace_clean(&kept.to_lowercase())
            }
        }
    }
}

/// How OpenCLIP's `HFTokenizer` is set up: the config's `hf_tokenizer_name` and
/// `tokenizer_kwargs`, the context length, `--cache-dir`.
#[derive(Clone, Debug)]
pub struct HfSpec {
    pub name: String,
    pub clean: Clean,
    pub strip_sep_token: bool,
    pub context_length: usize,
    pub cache_dir: Option<PathBuf>,
}

/// OpenCLIP's `HFTokenizer`. `Send + Sync`.
pub struct HfTokenizer {
    tok: tokenizers::Tokenizer,
    clean: Clean,
    /// `strip_sep_token`: the sep id, replaced by 0 in the output.
    strip_sep: Option<u32>,
    context_length: usize,
    /// `tokenizer_config.json`'s `tokenizer_class`.
    class: Option<String>,
}

/// transformers classes that run `tokenizer.json` as it is (compared with transformers 5 in
/// clip-data's tests; `Fast` suffixes alike).
const FILE_AS_IS: [&str; 4] = [
    "PreTrainedTokenizer",
    "TokenizersBackend",
    "BertTokenizer",
    "RobertaTokenizer",
];

impl HfTokenizer {
    /// Loads `spec.name`'s files (a folder, else the Hugging Face cache); every failure is one
    /// line naming the path or the setting at fault.
    pub fn load(spec: &HfSpec) -> Result<HfTokenizer, String> {
        let dir = find_files(&spec.name, spec.cache_dir.as_deref())?;
        let file = dir.join("tokenizer.json");
        let mut tok = tokenizers::Tokenizer::from_file(&file).map_err(|e| {
            format!(
                "{}: not a tokenizer.json the tokenizers library reads: {e}",
                file.display()
            )
        })?;
        let cfg = TokenizerConfig::read(&dir)?;
        let name = &spec.name;
        let class = cfg.class();
        let id = |role: &str, token: &str| {
            tok.token_to_id(token).ok_or_else(|| {
                format!("{name}: {role} {token:?} (tokenizer_config.json) is not in the vocabulary")
            })
        };
        let pad_token = cfg.special("pad_token").ok_or_else(|| {
            format!("{name}: no pad_token in tokenizer_config.json or special_tokens_map.json (OpenCLIP pads every text)")
        })?;
        let pad_id = id("pad_token", &pad_token)?;
        let strip_sep = match (spec.strip_sep_token, cfg.special("sep_token")) {
            (false, _) => None,
            (true, Some(sep)) => Some(id("sep_token", &sep)?),
            (true, None) => {
                return Err(format!(
                    "{name}: strip_sep_token needs a sep_token, and its tokenizer has none"
                ))
            }
        };
        let ctx = spec.context_length;
        if ctx == 0 {
            return Err(format!("{name}: context length 0"));
        }
        tok.with_truncation(Some(TruncationParams {
            direction: cfg.side("truncation_side")?.truncation(),
            max_length: ctx,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| format!("{name}: truncation to {ctx}: {e}"))?;
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(ctx),
            direction: cfg.side("padding_side")?.padding(),
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        Ok(HfTokenizer {
            tok,
            clean: spec.clean,
            strip_sep,
            context_length: ctx,
            class,
        })
    }

    /// The transformers class `tokenizer_config.json` names when transformers 5 builds its own
    /// pipeline for it instead of running `tokenizer.json` as it is (see the module's note).
    pub fn unverified_class(&self) -> Option<&str> {
        let class = self.class.as_deref()?;
        let base = class.strip_suffix("Fast").unwrap_or(class);
        (!FILE_AS_IS.contains(&base)).then_some(class)
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Ids it can give: the vocabulary with the added tokens.
    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    /// One text's ids into `row` (`context_length` long).
    pub fn tokenize_into(&self, text: &str, row: &mut [i64]) {
        let enc = self
            .tok
            .encode(self.clean.apply(text), true)
            .expect("a tokenizer that loaded encodes any text");
        let ids = enc.get_ids();
        assert_eq!(
            ids.len(),
            row.len(),
            "padded and truncated to the context length"
        );
        for (out, &id) in row.iter_mut().zip(ids) {
            *out = if Some(id) == self.strip_sep {
                0
            } else {
                id as i64
            };
        }
    }

    /// `texts`' ids, `context_length` per text, row after row.
    pub fn tokenize(&self, texts: &[&str]) -> Vec<i64> {
        let mut out = vec![0; texts.len() * self.context_length];
        for (text, row) in texts.iter().zip(out.chunks_mut(self.context_length)) {
            self.tokenize_into(text, row);
        }
        out
    }
}

/// The folder holding `name`'s `tokenizer.json`: `name` itself when it is a folder (as
/// transformers takes a local path), else its snapshot in the Hugging Face cache.
pub fn find_files(name: &str, cache_dir: Option<&Path>) -> Result<PathBuf, String> {
    let local = Path::new(name);
    if local.is_dir() {
        return if local.join("tokenizer.json").is_file() {
            Ok(local.to_path_buf())
        } else {
            Err(format!("{name}: a folder without tokenizer.json"))
        };
    }
    let cache = cache_dir.map(Path::to_path_buf).unwrap_or_else(hub_cache);
    let repo = cache.join(format!("models--{}", name.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    // refs/main names the snapshot the hub's `main` pointed at when it was downloaded;
    // without it, the one snapshot there is.
    let chosen = match std::fs::read_to_string(repo.join("refs/main")) {
        Ok(commit) => Some(snapshots.join(commit.trim())),
        Err(_) => {
            let all: Vec<PathBuf> = std::fs::read_dir(&snapshots)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.join("tokenizer.json").is_file())
                .collect();
            match &all[..] {
                [one] => Some(one.clone()),
                [] => None,
                _ => {
                    return Err(format!(
                        "{name}: {} snapshots in {} and no refs/main to choose one",
                        all.len(),
                        snapshots.display()
                    ))
                }
            }
        }
    };
    match chosen {
        Some(dir) if dir.join("tokenizer.json").is_file() => Ok(dir),
        _ => Err(format!(
            "{name}: no tokenizer.json in the Hugging Face cache (searched {}; never downloaded \
             here); on a machine with internet: huggingface-cli download {name} tokenizer.json \
             tokenizer_config.json special_tokens_map.json config.json --cache-dir {}",
            repo.display(),
            cache.display()
        )),
    }
}

/// huggingface_hub's cache folder: `$HF_HUB_CACHE`, `$HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`,
/// `$XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`.
fn hub_cache() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
        .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"))
}

#[derive(Clone, Copy)]
enum Side {
    Left,
    Right,
}

impl Side {
    fn padding(self) -> PaddingDirection {
        match self {
            Side::Left => PaddingDirection::Left,
            Side::Right => PaddingDirection::Right,
        }
    }
    fn truncation(self) -> TruncationDirection {
        match self {
            Side::Left => TruncationDirection::Left,
            Side::Right => TruncationDirection::Right,
        }
    }
}

/// What transformers reads from `tokenizer_config.json`, with `special_tokens_map.json`
/// filling the special tokens the first leaves out, then the class's own defaults (the class
/// named there, or the one `config.json`'s `model_type` maps to, as AutoTokenizer picks it).
struct TokenizerConfig {
    config: Value,
    special_map: Value,
    model_type: Option<String>,
    dir: PathBuf,
}

/// (`model_type`, class) as transformers' tokenizer auto-mapping has them, for the families
/// OpenCLIP's configs name.
const MODEL_TYPES: [(&str, &str); 9] = [
    ("bert", "BertTokenizer"),
    ("roberta", "RobertaTokenizer"),
    ("xlm-roberta", "XLMRobertaTokenizer"),
    ("t5", "T5Tokenizer"),
    ("mt5", "T5Tokenizer"),
    ("umt5", "T5Tokenizer"),
    ("gemma", "GemmaTokenizer"),
    ("gemma2", "GemmaTokenizer"),
    ("siglip", "SiglipTokenizer"),
];

/// The `__init__` defaults of those classes' pad and sep tokens (transformers 5).
fn class_default(class: &str, key: &str) -> Option<&'static str> {
    let class = class.strip_suffix("Fast").unwrap_or(class);
    let (pad, sep) = match class {
        "BertTokenizer" => ("[PAD]", Some("[SEP]")),
        "RobertaTokenizer" | "XLMRobertaTokenizer" => ("<pad>", Some("</s>")),
        "T5Tokenizer" | "GemmaTokenizer" => ("<pad>", None),
        "SiglipTokenizer" => ("</s>", None),
        _ => return None,
    };
    match key {
        "pad_token" => Some(pad),
        "sep_token" => sep,
        _ => None,
    }
}

impl TokenizerConfig {
    fn read(dir: &Path) -> Result<TokenizerConfig, String> {
        let json = |f: &str| -> Result<Value, String> {
            let path = dir.join(f);
            match std::fs::read(&path) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: not JSON: {e}", path.display())),
                Err(_) => Ok(Value::Null),
            }
        };
        let model_type = json("config.json")?["model_type"]
            .as_str()
            .map(str::to_string);
        Ok(TokenizerConfig {
            config: json("tokenizer_config.json")?,
            special_map: json("special_tokens_map.json")?,
            model_type,
            dir: dir.to_path_buf(),
        })
    }

    /// The transformers class AutoTokenizer builds: `tokenizer_class`, else `model_type`'s.
    fn class(&self) -> Option<String> {
        if let Some(class) = self.config["tokenizer_class"].as_str() {
            return Some(class.to_string());
        }
        let model_type = self.model_type.as_deref()?;
        MODEL_TYPES
            .iter()
            .find(|(t, _)| *t == model_type)
            .map(|(_, class)| class.to_string())
    }

    /// A special token's text: a string, or an AddedToken object's `content`.
    fn special(&self, key: &str) -> Option<String> {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        text(&self.config[key])
            .or_else(|| text(&self.special_map[key]))
            .or_else(|| class_default(&self.class()?, key).map(str::to_string))
    }

    fn side(&self, key: &str) -> Result<Side, String> {
        match &self.config[key] {
            Value::Null => Ok(Side::Right),
            Value::String(s) if s == "right" => Ok(Side::Right),
            Value::String(s) if s == "left" => Ok(Side::Left),
            v => Err(format!(
                "{}: {key} {v}: transformers knows \"left\" and \"right\"",
                self.dir.join("tokenizer_config.json").display()
            )),
        }
    }
}
