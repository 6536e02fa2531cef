//! `--device` for the trainer and every clip-tool subcommand.

use anyhow::{bail, Result};
use tch::Device;

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
        // A driver too old for CUDA 13 leaves libtorch with no device: say so, and what to do.
        if let Some(problem) = clip_dist::driver_problem_here() {
            bail!("--device {s}: {problem}");
        }
        let count = tch::Cuda::device_count() as usize;
        if n >= count {
            bail!("--device {s}: CUDA is not available here ({count} GPU(s) visible to libtorch)");
        }
    }
    Ok(device)
}
