//! `clip-tool bench-model`: seconds per forward+backward step (ClipLoss, train mode) of a model
//! on random inputs, and peak memory; the last line is JSON. The steps are timed by the wall
//! clock after one warm-up step, from a device sync to a device sync (no sync in between); on
//! `cuda:N` the peaks are the CUDA caching allocator's (`torch.cuda.max_memory_allocated` /
//! `max_memory_reserved`, from the warm-up on), and the process's peak RSS everywhere.
//! `scripts/bench-model.sh` and `scripts/gpu-check.sh` run it next to OpenCLIP's
//! `scripts/bench-model.py`, which does the same.
use std::time::Instant;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::loss::LocalOnly;
use crate::step::{forward_backward, LossKind, StepOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Built-in model name or config JSON.
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 2)]
    batch_size: i64,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    grad_checkpointing: bool,
    /// fp32 or amp_bf16 (autocast to bf16).
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "amp_bf16"])]
    precision: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::device::tool_device(&args.device)?;
    let precision = crate::precision::Precision::parse(&args.precision)?;
    if args.batch_size < 2 || args.steps == 0 {
        bail!("--batch-size must be at least 2 and --steps at least 1");
    }
    tch::manual_seed(0);
    let (_vs, model) = super::build_model(&args.model, device)?;
    model.set_grad_checkpointing(args.grad_checkpointing);
    let cfg = model.config();
    let (h, w) = cfg.vision.image_size;
    let b = args.batch_size;
    let images = Tensor::randn([b, 3, h, w], (Kind::Float, device));
    let ctx = cfg.text.context_length;
    let tokens = Tensor::randint_low(1, cfg.text.vocab_size - 1, [b, ctx], (Kind::Int64, device));
    let step = || -> Result<()> {
        for (_, p) in model.named_parameters() {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let opts = StepOptions {
            autocast: precision.autocast().map(|k| (device, k)),
            loss_scale: None,
            train: true,
            loss: LossKind::default(),
        };
        let batch = [(images.shallow_clone(), tokens.shallow_clone())];
        let _loss = forward_backward(&model, &batch, &LocalOnly, &opts, &|_| 0)?;
        Ok(())
    };
    let sync = || {
        if let Device::Cuda(n) = device {
            tch::Cuda::synchronize(n as i64);
        }
    };
    if let Device::Cuda(n) = device {
        torch_ext::reset_cuda_peak_memory(n)?;
    }
    step()?;
    sync();
    let t0 = Instant::now();
    for _ in 0..args.steps {
        step()?;
    }
    sync();
    let seconds = t0.elapsed().as_secs_f64();
    let gpu_peaks = match device {
        Device::Cuda(n) => Some(torch_ext::cuda_peak_memory(n)?),
        _ => None,
    };
    let per_step = seconds / args.steps as f64;
    let mib = |bytes: i64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{}",
        serde_json::json!({
            "impl": "clip-train", "model": args.model, "batch": b, "precision": args.precision,
            "grad_checkpointing": args.grad_checkpointing, "device": args.device,
            "step_s": per_step, "samples_per_s": b as f64 / per_step,
            "peak_rss_mb": crate::timing::peak_rss_mib(),
            "peak_gpu_allocated_mb": gpu_peaks.map(|(a, _)| mib(a)),
            "peak_gpu_reserved_mb": gpu_peaks.map(|(_, r)| mib(r)),
        })
    );
    Ok(())
}
