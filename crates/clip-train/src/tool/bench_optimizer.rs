//! `clip-tool bench-optimizer`: seconds per AdamW step over a model's trainable parameters
//! (OpenCLIP's two groups, gradients set), with the trainer's fused step or the per-tensor loop
//! it replaced; the last line is JSON. `scripts/bench-optimizer.sh` runs both next to
//! `torch.optim.AdamW(fused=True)` (scripts/bench-optimizer.py) on the same parameters.
use std::time::Instant;

use anyhow::{bail, Result};
use tch::{Device, Kind};

use crate::optimizer::{AdamW, AdamWConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Built-in model name or config JSON.
    #[arg(long)]
    model: String,
    /// `fused` (the trainer's step: libtorch's fused AdamW) or `loop` (the per-tensor reference,
    /// `AdamW::step_loop`).
    #[arg(long = "impl", default_value = "fused", value_parser = ["fused", "loop"])]
    implementation: String,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// OpenCLIP's defaults for ViT/ConvNeXt training (main.py's betas, eps; `--wd 0.2`).
const CONFIG: AdamWConfig = AdamWConfig {
    beta1: 0.9,
    beta2: 0.98,
    eps: 1e-6,
    weight_decay: 0.2,
};

pub fn run(args: Args) -> Result<()> {
    let device = crate::device::tool_device(&args.device)?;
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    tch::manual_seed(0);
    let (_vs, model) = super::build_model(&args.model, device)?;
    let named = model.named_parameters();
    let mut opt = AdamW::new(named, CONFIG);
    // Gradients equal to the weights (d/dp Σ p²/2 = p): realistic magnitudes, no extra copy.
    let loss = named
        .iter()
        .map(|(_, p)| p.square().sum(Kind::Float) * 0.5)
        .fold(tch::Tensor::zeros([], (Kind::Float, device)), |a, b| a + b);
    loss.backward();
    let fused = args.implementation == "fused";
    let mut step = || -> Result<()> {
        if fused {
            opt.step(1e-4, None)?;
        } else {
            opt.step_loop(1e-4);
        }
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
        Ok(())
    };
    step()?;
    let t0 = Instant::now();
    for _ in 0..args.steps {
        step()?;
    }
    let per_step = t0.elapsed().as_secs_f64() / args.steps as f64;
    let elements: i64 = opt.params.iter().map(|p| p.tensor.numel() as i64).sum();
    println!(
        "{}",
        serde_json::json!({
            "impl": format!("clip-train {}", args.implementation), "model": args.model,
            "tensors": opt.params.len(), "elements": elements, "device": args.device,
            "step_s": per_step,
        })
    );
    Ok(())
}
