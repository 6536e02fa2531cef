//! The tokenizer a model config names, built in one place for training, `--val-data`, zero-shot
//! and `clip-tool embed`: CLIP's BPE, or OpenCLIP's `HFTokenizer` over `hf_tokenizer_name` with
//! `tokenizer_kwargs` (clip-data's `hf_tokenizer.rs`: found in a folder or offline in the Hugging
//! Face cache, never downloaded).
use anyhow::{anyhow, bail, Result};
use clip_data::hf_tokenizer::{Clean, HfSpec, HfTokenizer};
use clip_data::text::TextTokenizer;
use clip_model::config::ClipConfig;

/// `cfg`'s tokenizer at its context length; fails, in one line naming the model, where its files
/// are missing.
pub fn for_model(cfg: &ClipConfig, model: &str) -> Result<TextTokenizer> {
    let text = &cfg.text;
    let ctx = text.context_length as usize;
    let Some(name) = &text.hf_tokenizer_name else {
        return Ok(TextTokenizer::clip(ctx));
    };
    let spec = HfSpec {
        name: name.clone(),
        clean: Clean::parse(&text.tokenizer_clean)
            .map_err(|e| anyhow!("model {model}: tokenizer_kwargs {e}"))?,
        strip_sep_token: text.strip_sep_token,
        context_length: ctx,
        cache_dir: None,
    };
    let tok =
        HfTokenizer::load(&spec).map_err(|e| anyhow!("model {model}: hf_tokenizer_name {e}"))?;
    Ok(TextTokenizer::Hf(Box::new(tok)))
}

/// Fails unless the text tower's `vocab_size` covers every id `tok` gives (captions would index
/// past the token embedding): what real captions need (synthetic data draws its own ids).
pub fn check_vocab(cfg: &ClipConfig, tok: &TextTokenizer, model: &str) -> Result<()> {
    let ids = tok.vocab_size();
    if (cfg.text.vocab_size as usize) < ids {
        bail!(
            "model {model}: text vocab_size {} is smaller than the tokenizer's {ids} ids (captions would index past the token embedding)",
            cfg.text.vocab_size
        );
    }
    Ok(())
}

/// What to tell the user about `tok`: a Hugging Face tokenizer whose transformers class rebuilds
/// its own pipeline (see clip-data's `hf_tokenizer.rs`).
pub fn warnings(tok: &TextTokenizer) -> Vec<String> {
    match tok {
        TextTokenizer::Hf(t) => t
            .unverified_class()
            .map(|class| {
                format!(
                    "tokenizer_class {class}: transformers 5 rebuilds this class's pipeline; clip-train runs tokenizer.json as it is (compare with `clip-tool tokenize --hf-tokenizer`)"
                )
            })
            .into_iter()
            .collect(),
        TextTokenizer::Clip(..) => Vec::new(),
    }
}
