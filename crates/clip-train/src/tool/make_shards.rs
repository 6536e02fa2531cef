//! `clip-tool make-shards --input DIR|FILE.csv|FILE.tsv --output DIR`: webdataset shards from
//! image+caption pairs, images resized like img2dataset's output. Prints a JSON report.
use anyhow::Result;
use clip_data::make_shards::{make_shards, MakeShardsCfg};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A folder of `x.jpg` + `x.txt` pairs (recursive), or a CSV/TSV with path and caption columns.
    #[arg(long)]
    input: PathBuf,
    /// Output folder for `{prefix}{00000..}.tar` and `sizes.json`.
    #[arg(long)]
    output: PathBuf,
    /// Samples per shard.
    #[arg(long, default_value_t = 10_000)]
    samples_per_shard: usize,
    /// Longest image side after resizing (never enlarged).
    #[arg(long, default_value_t = 384)]
    max_size: u32,
    /// JPEG quality.
    #[arg(long, default_value_t = 95)]
    quality: u8,
    /// Shard file name prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// CSV/TSV column of the image path.
    #[arg(long, default_value = "filepath")]
    csv_img_key: String,
    /// CSV/TSV column of the caption.
    #[arg(long, default_value = "title")]
    csv_caption_key: String,
    /// CSV separator (default: tab, or comma for *.csv).
    #[arg(long)]
    csv_separator: Option<char>,
    /// Encoder threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    let cfg = MakeShardsCfg {
        input: a.input,
        output: a.output,
        samples_per_shard: a.samples_per_shard,
        max_size: a.max_size,
        quality: a.quality,
        prefix: a.prefix,
        img_key: a.csv_img_key,
        caption_key: a.csv_caption_key,
        separator: a.csv_separator,
        threads: a.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
    };
    let rep = make_shards(&cfg)?;
    println!("{}", serde_json::to_string_pretty(&rep)?);
    Ok(())
}
