//! `--device` for the trainer and every clip-tool subcommand.

use anyhow::{bail, Result};
use tch::Device;
use torch_ext::optim::CudaBackend;

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

/// [`parse_device`] for a clip-tool subcommand, with [`apply_cuda_settings`] on CUDA: a tool
/// computes on the GPU what the trainer would (the same TF32 and cuDNN flags, and the same
/// environment switches), so a tool's figures can stand for training's.
pub fn tool_device(s: &str) -> Result<Device> {
    let device = parse_device(s)?;
    apply_cuda_settings(device)?;
    Ok(device)
}

/// OpenCLIP's main.py on CUDA: cuDNN's autotuner on (`cudnn.benchmark`, not deterministic) and
/// TF32 for fp32 matmuls (`cuda.matmul.allow_tf32`) and cuDNN convolutions (torch's default).
/// `CLIP_TRAIN_TF32=0` turns TF32 off, for parity runs that need fp32 matmuls;
/// `CLIP_TRAIN_DETERMINISTIC=1` turns the autotuner off and cuDNN's and libtorch's
/// deterministic algorithms on, for runs compared bit for bit (two processes may otherwise pick
/// different algorithms). Nothing on CPU.
pub fn apply_cuda_settings(device: Device) -> Result<()> {
    if !device.is_cuda() {
        return Ok(());
    }
    let env = |k: &str| std::env::var(k).ok();
    torch_ext::optim::set_cuda_backend(cuda_flags(&env)?)
}

/// The flags of [`apply_cuda_settings`] from the environment `env`.
fn cuda_flags(env: &dyn Fn(&str) -> Option<String>) -> Result<CudaBackend> {
    let tf32 = match env("CLIP_TRAIN_TF32").as_deref() {
        None | Some("1") => true,
        Some("0") => false,
        Some(v) => bail!("CLIP_TRAIN_TF32={v}: expected 0 (TF32 off) or 1"),
    };
    let deterministic = match env("CLIP_TRAIN_DETERMINISTIC").as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(v) => bail!("CLIP_TRAIN_DETERMINISTIC={v}: expected 0 or 1 (deterministic)"),
    };
    // cuBLAS repeats its bits only with a fixed workspace, read when its handle is made: set
    // by the caller before the process starts, not here.
    if deterministic && env("CUBLAS_WORKSPACE_CONFIG").is_none() {
        bail!(
            "CLIP_TRAIN_DETERMINISTIC=1 needs CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment \
             (cuBLAS's deterministic workspace)"
        );
    }
    Ok(CudaBackend {
        cudnn_benchmark: !deterministic,
        tf32_matmul: tf32,
        tf32_cudnn: tf32,
        deterministic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use torch_ext::optim::{cuda_backend, set_cuda_backend};

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    /// OpenCLIP's flags by default; the switches turn TF32 off and the deterministic mode on;
    /// bad values and a deterministic run without cuBLAS's workspace are refused by name.
    #[test]
    fn cuda_flags_follow_openclip_and_the_switches() {
        let on = CudaBackend {
            cudnn_benchmark: true,
            tf32_matmul: true,
            tf32_cudnn: true,
            deterministic: false,
        };
        assert_eq!(cuda_flags(&env(&[])).unwrap(), on);
        let off = CudaBackend {
            tf32_matmul: false,
            tf32_cudnn: false,
            ..on
        };
        assert_eq!(cuda_flags(&env(&[("CLIP_TRAIN_TF32", "0")])).unwrap(), off);
        let det = [
            ("CLIP_TRAIN_DETERMINISTIC", "1"),
            ("CUBLAS_WORKSPACE_CONFIG", ":4096:8"),
        ];
        let want = CudaBackend {
            cudnn_benchmark: false,
            deterministic: true,
            ..on
        };
        assert_eq!(cuda_flags(&env(&det)).unwrap(), want);
        for (bad, culprit) in [
            (&[("CLIP_TRAIN_TF32", "yes")][..], "CLIP_TRAIN_TF32=yes"),
            (
                &[("CLIP_TRAIN_DETERMINISTIC", "on")][..],
                "CLIP_TRAIN_DETERMINISTIC=on",
            ),
            (&det[..1], "CUBLAS_WORKSPACE_CONFIG"),
        ] {
            let e = cuda_flags(&env(bad)).unwrap_err().to_string();
            assert!(e.contains(culprit), "{e}");
        }
    }

    /// The flags land in libtorch's global context (what its CUDA kernels read); on CPU
    /// nothing is touched.
    #[test]
    fn cuda_flags_are_set_in_libtorchs_context() {
        let det = CudaBackend {
            cudnn_benchmark: false,
            tf32_matmul: false,
            tf32_cudnn: false,
            deterministic: true,
        };
        set_cuda_backend(det).unwrap();
        assert_eq!(cuda_backend().unwrap(), det);
        let on = cuda_flags(&env(&[])).unwrap();
        set_cuda_backend(on).unwrap();
        assert_eq!(cuda_backend().unwrap(), on);
        set_cuda_backend(det).unwrap();
        apply_cuda_settings(Device::Cpu).unwrap();
        assert_eq!(cuda_backend().unwrap(), det);
        set_cuda_backend(on).unwrap();
    }
}
