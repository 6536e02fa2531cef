//! clip-tool's subcommands, one file each.
pub mod bench_model;
pub mod bench_optimizer;
pub mod convert;
pub mod embed;
pub mod flops;
pub mod inspect;
pub mod make_shards;
pub mod profile;
pub mod sim_ranks;
pub mod tokenize;

use anyhow::Result;
use clip_model::{Clip, ClipConfig};
use tch::{nn::VarStore, Device};

/// A model from a built-in name or config JSON, OpenCLIP-initialised on the CPU and moved to
/// `device` (as the trainer's: a seed gives the same weights on any device).
pub fn build_model(model: &str, device: Device) -> Result<(VarStore, Clip)> {
    let cfg = ClipConfig::load(model)?;
    let mut vs = VarStore::new(Device::Cpu);
    let clip = Clip::new(&vs.root(), &cfg)?;
    vs.set_device(device);
    Ok((vs, clip))
}

pub mod bench_data;
