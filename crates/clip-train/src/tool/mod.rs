//! clip-tool's subcommands, one file each.
pub mod bench_model;
pub mod convert;
pub mod embed;
pub mod inspect;
pub mod make_shards;
pub mod tokenize;

use anyhow::{bail, Result};
use clip_model::{Clip, ClipConfig};
use tch::{nn::VarStore, Device};

/// A model from a built-in name or config JSON, OpenCLIP-initialised on `device`.
pub fn build_model(model: &str, device: Device) -> Result<(VarStore, Clip)> {
    let cfg = ClipConfig::load(model)?;
    let vs = VarStore::new(device);
    let clip = Clip::new(&vs.root(), &cfg)?;
    Ok((vs, clip))
}

/// `cpu` or `cuda` (`cuda:N`), failing clearly where CUDA is not there.
pub fn parse_device(s: &str) -> Result<Device> {
    let device = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        s => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Device::Cuda(n),
            None => bail!("--device {s}: expected cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(n) = device {
        let count = tch::Cuda::device_count() as usize;
        if n >= count {
            bail!("--device {s}: CUDA is not available here ({count} GPU(s) visible to libtorch)");
        }
    }
    Ok(device)
}
pub mod bench_data;
