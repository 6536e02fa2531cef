//! `clip-tool bench-data --train-data URLS --workers N --batch-size B --image-size S --batches K`:
//! images/s of the full training input pipeline (read, group, shuffle, decode, augment,
//! tokenize, batch). The last line of the output is `<images/s> images/s`.
use anyhow::Result;
use clip_data::loader::{Loader, LoaderConfig};
use clip_data::processor::{ClipProcessor, OPENAI_MEAN, OPENAI_STD};
use clip_data::shards::ShardList;
use clip_data::text::TextTokenizer;
use clip_data::transform::AugCfg;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Shard URLs (`::`-separated, brace patterns).
    #[arg(long)]
    train_data: String,
    #[arg(long)]
    train_data_upsampling_factors: Option<String>,
    #[arg(long)]
    dataset_resampled: bool,
    /// Decode threads.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Data streams (OpenCLIP's workers; default = --workers).
    #[arg(long)]
    streams: Option<usize>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 224)]
    image_size: u32,
    /// Batches to time (after the warm-up ones).
    #[arg(long, default_value_t = 20)]
    batches: usize,
    #[arg(long, default_value_t = 1)]
    warmup_batches: usize,
    /// e.g. `scale=(0.5,1.0) re_prob=0.4 use_timm=True`
    #[arg(long, num_args = 0..)]
    aug_cfg: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: Args) -> Result<()> {
    let shards = ShardList::parse(&a.train_data, a.train_data_upsampling_factors.as_deref())?;
    let aug = AugCfg::parse(&a.aug_cfg)?;
    let proc_ = ClipProcessor::train(
        a.image_size,
        &aug,
        OPENAI_MEAN,
        OPENAI_STD,
        Arc::new(TextTokenizer::clip(77)),
    );
    let mut cfg = LoaderConfig::new(shards, a.batch_size);
    cfg.resampled = a.dataset_resampled;
    cfg.workers = a.workers;
    cfg.streams = a.streams;
    cfg.seed = a.seed;
    let total = (a.batches + a.warmup_batches) as u64;
    let streams = cfg.streams();
    cfg.num_samples = Some(total * a.batch_size as u64);
    let loader = Loader::new(cfg, Arc::new(proc_))?;
    let mut it = loader.epoch(0, None)?;
    for _ in 0..a.warmup_batches {
        it.next()
            .ok_or_else(|| anyhow::anyhow!("no data for the warm-up batch"))??;
    }
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    let mut n = 0usize;
    for _ in 0..a.batches {
        match it.next() {
            Some(b) => n += b?.batch_size,
            None => break,
        }
    }
    let dt = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let st = loader.stats();
    eprintln!(
        "bench-data: {n} images in {dt:.2} s using {cpu:.2} CPU-s ({:.1} images per CPU-second), {} workers, {streams} streams, batch {}, {} px; skipped {}",
        n as f64 / cpu.max(1e-9),
        a.workers,
        a.batch_size,
        a.image_size,
        st.total_skipped()
    );
    println!("{:.1} images/s", n as f64 / dt);
    Ok(())
}

/// User + system CPU time of this process (all threads), from /proc (USER_HZ = 100).
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}
