//! `clip-tool tokenize [--context-length N] [--hf-tokenizer NAME …] TEXT…`: OpenCLIP's token ids,
//! one JSON array per text, as one JSON array on stdout. CLIP's BPE by default; with
//! `--hf-tokenizer`, OpenCLIP's `HFTokenizer` over that Hugging Face tokenizer (a folder, or a
//! hub id found in the Hugging Face cache, never downloaded), as a config's
//! `hf_tokenizer_name` and `tokenizer_kwargs` set it up.
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clip_data::hf_tokenizer::{Clean, HfSpec, HfTokenizer};
use clip_data::tokenizer::Tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// Tokens per text (OpenCLIP's context_length).
    #[arg(long, default_value_t = 77)]
    context_length: usize,
    /// A Hugging Face tokenizer: a folder holding tokenizer.json, or a hub id (ORG/NAME) in
    /// the Hugging Face cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, ~/.cache/huggingface/hub).
    #[arg(long)]
    hf_tokenizer: Option<String>,
    /// `tokenizer_kwargs.clean`: whitespace, lower or canonicalize (with --hf-tokenizer).
    #[arg(long, default_value = "whitespace", requires = "hf_tokenizer")]
    clean: String,
    /// `tokenizer_kwargs.strip_sep_token`: the sep token's id becomes 0 (with --hf-tokenizer).
    #[arg(long, requires = "hf_tokenizer")]
    strip_sep_token: bool,
    /// The Hugging Face cache folder to look in instead (OpenCLIP's --cache-dir).
    #[arg(long, requires = "hf_tokenizer")]
    cache_dir: Option<PathBuf>,
    /// The texts.
    #[arg(required = true)]
    texts: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let ctx = args.context_length;
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let ids = match &args.hf_tokenizer {
        None => {
            if ctx < 2 {
                bail!("--context-length {ctx}: needs room for start and end tokens (>= 2)");
            }
            Tokenizer::new().tokenize(&texts, ctx)
        }
        Some(name) => {
            let spec = HfSpec {
                name: name.clone(),
                clean: Clean::parse(&args.clean).map_err(|e| anyhow!("--{e}"))?,
                strip_sep_token: args.strip_sep_token,
                context_length: ctx,
                cache_dir: args.cache_dir.clone(),
            };
            let tok = HfTokenizer::load(&spec).map_err(|e| anyhow!("--hf-tokenizer {e}"))?;
            if let Some(class) = tok.unverified_class() {
                eprintln!(
                    "clip-tool: note: {name} names tokenizer_class {class}, which transformers 5 \
                     rebuilds from its own pipeline; clip-tool runs tokenizer.json as it is"
                );
            }
            tok.tokenize(&texts)
        }
    };
    let rows: Vec<&[i64]> = ids.chunks(ctx).collect();
    println!("{}", serde_json::to_string(&rows)?);
    Ok(())
}
