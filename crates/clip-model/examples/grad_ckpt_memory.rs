//! Peak memory and time of one training step (forward + ClipLoss backward) with and without
//! gradient checkpointing. Peak host memory (VmHWM) only means something per process, so run it
//! once per setting:
//!
//!     cargo run --release -p clip-model --example grad_ckpt_memory -- convnext_large_d_320 2 off
//!     cargo run --release -p clip-model --example grad_ckpt_memory -- convnext_large_d_320 2 on
//!
//! Arguments: MODEL BATCH on|off [cuda]. On CUDA the host figure is not the GPU's: watch
//! nvidia-smi (tch does not bind torch.cuda.max_memory_allocated).

use std::time::Instant;

use clip_model::{Clip, ClipConfig};
use tch::{nn, Device, Kind, Tensor};

fn vm_hwm_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map(String::as_str).unwrap_or("clip_tiny_test");
    let batch: i64 = args.get(2).map(|b| b.parse()).transpose()?.unwrap_or(2);
    let ckpt = args.get(3).map(String::as_str).unwrap_or("off") == "on";
    let device = if args.get(4).map(String::as_str) == Some("cuda") {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    let cfg = ClipConfig::load(model)?;
    let vs = nn::VarStore::new(device);
    let m = Clip::new(&vs.root(), &cfg)?;
    m.set_grad_checkpointing(ckpt);
    let after_build = vm_hwm_mib();
    let (h, w) = cfg.vision.image_size;
    let images = Tensor::randn([batch, 3, h, w], (Kind::Float, device));
    let text = Tensor::randint_low(
        1,
        cfg.text.vocab_size,
        [batch, cfg.text.context_length],
        (Kind::Int64, device),
    );
    let t0 = Instant::now();
    let (img, txt, s) = m.forward(&images, &text, true);
    let labels = Tensor::arange(batch, (Kind::Int64, device));
    let ce =
        |l: Tensor| l.cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0);
    let loss = (ce((&s * &img).matmul(&txt.tr())) + ce((&s * &txt).matmul(&img.tr()))) / 2.0;
    loss.backward();
    if let Device::Cuda(_) = device {
        tch::Cuda::synchronize(0);
    }
    println!(
        "{model} batch {batch} grad_checkpointing={ckpt}: step {:.1}s, peak RSS {:.0} MiB \
         (after building the model {:.0} MiB, activations + gradients ~{:.0} MiB)",
        t0.elapsed().as_secs_f64(),
        vm_hwm_mib(),
        after_build,
        vm_hwm_mib() - after_build
    );
    Ok(())
}
