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

/// OpenCLIP's main.py on CUDA: cuDNN's autotuner on (`cudnn.benchmark`, not deterministic) and
/// TF32 for fp32 matmuls (`cuda.matmul.allow_tf32`) and cuDNN convolutions (torch's default).
/// `CLIP_TRAIN_TF32=0` turns TF32 off, for parity runs that need fp32 matmuls. Nothing on CPU.
pub fn apply_cuda_settings(device: Device) -> Result<()> {
    if !device.is_cuda() {
        return Ok(());
    }
    set_openclip_cuda_flags(std::env::var("CLIP_TRAIN_TF32").ok().as_deref())
}

/// Sets the flags of [`apply_cuda_settings`] in libtorch's global context; `tf32` is
/// `CLIP_TRAIN_TF32`'s value.
fn set_openclip_cuda_flags(tf32: Option<&str>) -> Result<()> {
    let tf32 = match tf32 {
        None | Some("1") => true,
        Some("0") => false,
        Some(v) => bail!("CLIP_TRAIN_TF32={v}: expected 0 (TF32 off) or 1"),
    };
    torch_ext::optim::set_cuda_backend(true, tf32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use torch_ext::optim::{cuda_backend, CudaBackend};

    /// The flags land in libtorch's global context (what its CUDA kernels read), and the
    /// environment switch turns TF32 off for both matmuls and convolutions.
    #[test]
    fn openclip_cuda_flags_are_set_in_libtorchs_context() {
        let on = CudaBackend {
            cudnn_benchmark: true,
            tf32_matmul: true,
            tf32_cudnn: true,
        };
        set_openclip_cuda_flags(None).unwrap();
        assert_eq!(cuda_backend().unwrap(), on);
        set_openclip_cuda_flags(Some("0")).unwrap();
        let off = CudaBackend {
            tf32_matmul: false,
            tf32_cudnn: false,
            ..on
        };
        assert_eq!(cuda_backend().unwrap(), off);
        let e = set_openclip_cuda_flags(Some("yes"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("CLIP_TRAIN_TF32=yes"), "{e}");
        set_openclip_cuda_flags(Some("1")).unwrap();
        assert_eq!(cuda_backend().unwrap(), on);
        // On CPU nothing is touched.
        set_openclip_cuda_flags(Some("0")).unwrap();
        apply_cuda_settings(Device::Cpu).unwrap();
        assert_eq!(cuda_backend().unwrap(), off);
    }
}
