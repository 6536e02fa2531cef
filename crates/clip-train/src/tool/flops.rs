//! `clip-tool flops`: a model's FLOPs per sample from its config (`clip_model::flops`), one JSON
//! line — the forward, a trained sample's (forward + backward, no recompute: what model FLOP
//! utilisation counts) and the same with gradient checkpointing's recompute (the work the GPU
//! really does). `scripts/gpu-check.sh` turns samples/s into MFU with the second.
use anyhow::Result;
use clip_model::flops::{forward_flops, train_flops};
use clip_model::ClipConfig;

#[derive(clap::Args)]
pub struct Args {
    /// Built-in model name or config JSON.
    #[arg(long)]
    model: String,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = ClipConfig::load(&args.model)?;
    println!(
        "{}",
        serde_json::json!({
            "model": args.model,
            "forward_flops_per_sample": forward_flops(&cfg),
            "train_flops_per_sample": train_flops(&cfg, false),
            "train_flops_per_sample_with_recompute": train_flops(&cfg, true),
        })
    );
    Ok(())
}
