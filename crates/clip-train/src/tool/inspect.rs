//! `clip-tool inspect URLS…`: read shards (files, `pipe:`, `s3://`; brace patterns and `::`
//! allowed) and print a JSON summary: shards, samples, skipped by reason, image size and caption
//! length statistics, per-shard counts.
use anyhow::Result;
use clip_data::shards::expand_urls;

#[derive(clap::Args)]
pub struct Args {
    /// Shard URLs or patterns.
    #[arg(required = true)]
    urls: Vec<String>,
    /// Stop reading a shard after this many samples.
    #[arg(long)]
    max_samples_per_shard: Option<u64>,
    /// Leave out the per-shard list.
    #[arg(long)]
    brief: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut urls = Vec::new();
    for u in &a.urls {
        urls.extend(expand_urls(u)?);
    }
    let mut rep = clip_data::inspect::inspect(&urls, a.max_samples_per_shard)?;
    if a.brief {
        rep.per_shard.clear();
    }
    // a closed stdout (`| head`) is not an error
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&rep)?);
    Ok(())
}
