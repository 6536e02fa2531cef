//! `clip-tool tokenize [--context-length N] TEXT…`: OpenCLIP's token ids, one JSON array per
//! text, as one JSON array on stdout.
use anyhow::{bail, Result};
use clip_data::tokenizer::Tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// Tokens per text (OpenCLIP's context_length).
    #[arg(long, default_value_t = 77)]
    context_length: usize,
    /// The texts.
    #[arg(required = true)]
    texts: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    if args.context_length < 2 {
        bail!(
            "--context-length {}: needs room for start and end tokens (>= 2)",
            args.context_length
        );
    }
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let ids = Tokenizer::new().tokenize(&texts, args.context_length);
    let rows: Vec<&[i64]> = ids.chunks(args.context_length).collect();
    println!("{}", serde_json::to_string(&rows)?);
    Ok(())
}
