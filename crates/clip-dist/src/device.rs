//! Which GPU a rank uses and whether this machine's NVIDIA driver can run it, decided from the
//! environment as clusters set it (pure functions of what they read, so tested on any machine).

/// Where Linux's NVIDIA kernel module reports its version.
pub const DRIVER_VERSION_FILE: &str = "/proc/driver/nvidia/version";

/// The CUDA device index of a rank with local rank `local_rank`, given `CUDA_VISIBLE_DEVICES`
/// (`visible`): `cuda:0` when it lists exactly one device (slurm's `--gpus-per-task=1`), else
/// `cuda:local_rank` (OpenCLIP's choice: torchrun, or every GPU of the node visible).
pub fn local_cuda_device(local_rank: usize, visible: Option<&str>) -> usize {
    match listed(visible) {
        Some(1) => 0,
        _ => local_rank,
    }
}

fn listed(visible: Option<&str>) -> Option<usize> {
    visible.map(|v| v.split(',').filter(|d| !d.trim().is_empty()).count())
}

/// [`local_cuda_device`] with this process's `CUDA_VISIBLE_DEVICES`.
pub fn local_cuda_device_from_env(local_rank: usize) -> usize {
    local_cuda_device(
        local_rank,
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
    )
}

/// The rule for a task that sees several GPUs but fewer than its local rank needs (`srun
/// --accel-bind=g` shows each task the 2–4 GPUs near its cores): one line saying why and what to
/// do, or `None`. `cuda:local_rank` within a visible list is always another GPU for another task
/// on the node (two tasks that see the same list have different local ranks), so only a local
/// rank past the list is ambiguous — and then any guess (modulo, division) may put two ranks on
/// one GPU, which NCCL refuses deep in its setup.
pub fn several_visible_problem(local_rank: usize, visible: Option<&str>) -> Option<String> {
    let n = listed(visible)?;
    (n > 1 && local_rank >= n).then(|| {
        format!(
            "local rank {local_rank} sees {n} GPUs (CUDA_VISIBLE_DEVICES={}): cuda:{local_rank} \
             does not exist and no other choice is sure to differ from every other rank's; give \
             each task one GPU (srun --gpus-per-task=1, which a task sees as cuda:0) or all of \
             the node's (no --accel-bind=g)",
            visible.unwrap_or_default()
        )
    })
}

/// [`several_visible_problem`] with this process's `CUDA_VISIBLE_DEVICES`.
pub fn several_visible_problem_here(local_rank: usize) -> Option<String> {
    several_visible_problem(
        local_rank,
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
    )
}

/// The driver version in the text of [`DRIVER_VERSION_FILE`] (`… Kernel Module  580.65.06 …`,
/// or the open modules' `… Open Kernel Module for x86_64  580.65.06 …`).
pub fn parse_driver_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .find(|w| {
            let mut parts = w.split('.');
            parts.next().is_some_and(|m| m.parse::<u32>().is_ok())
                && parts.next().is_some_and(|m| m.parse::<u32>().is_ok())
        })
        .map(str::to_string)
}

/// The oldest Linux driver that runs a CUDA `major`.x runtime (CUDA's minor version
/// compatibility: any 12.x runtime on a 12.0-capable driver, any 13.x on a 13.0-capable one), as
/// NVIDIA's compatibility table gives it; `None` for a runtime this table does not know.
pub fn min_driver(cuda_major: u32) -> Option<&'static str> {
    match cuda_major {
        11 => Some("450.80.02"),
        12 => Some("525.60.13"),
        13 => Some("580.65.06"),
        _ => None,
    }
}

/// A driver version's numbers (`580.65.06` → [580, 65, 6]), compared part by part.
fn numbers(version: &str) -> Vec<u32> {
    version.split('.').map_while(|p| p.parse().ok()).collect()
}

/// One line saying what to do when the driver described by `text` (the contents of
/// [`DRIVER_VERSION_FILE`], if any) is too old for the CUDA runtime libtorch links (`runtime`:
/// `(major, minor)`, see [`cuda_runtime_here`]); `None` when it is recent enough, or either is
/// unknown.
pub fn driver_problem(text: Option<&str>, runtime: Option<(u32, u32)>) -> Option<String> {
    let version = parse_driver_version(text?)?;
    let (major, minor) = runtime?;
    let min = min_driver(major)?;
    (numbers(&version) < numbers(min)).then(|| {
        format!(
            "the NVIDIA driver here is {version}, older than {min}, the oldest that runs CUDA \
             {major}.x (libtorch here links the CUDA {major}.{minor} runtime): update the driver, \
             run on nodes that have a newer one, or build against a libtorch for an older CUDA \
             (README: building on a cluster)"
        )
    })
}

/// The CUDA runtime this process's libtorch links, `(major, minor)`: `cudaRuntimeGetVersion` of
/// the libcudart loaded with libtorch_cuda (no driver needed); `None` without one (a CPU
/// libtorch).
pub fn cuda_runtime_here() -> Option<(u32, u32)> {
    type GetVersion = unsafe extern "C" fn(*mut std::ffi::c_int) -> std::ffi::c_int;
    let this = libloading::os::unix::Library::this();
    // SAFETY: cudaRuntimeGetVersion(int*) only writes the version it was built as.
    unsafe {
        let get = this.get::<GetVersion>(b"cudaRuntimeGetVersion\0").ok()?;
        let mut v = 0;
        (get(&mut v) == 0 && v > 0).then_some((v as u32 / 1000, v as u32 % 1000 / 10))
    }
}

/// [`driver_problem`] for this machine and this process's libtorch.
pub fn driver_problem_here() -> Option<String> {
    let text = std::fs::read_to_string(DRIVER_VERSION_FILE).ok();
    driver_problem(text.as_deref(), cuda_runtime_here())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_visible_device_is_cuda_0() {
        let cases = [
            (3, Some("5"), 0),
            (3, Some("GPU-8a1b2c3d"), 0),
            (3, None, 3),
            (3, Some("0,1,2,3"), 3),
            (1, Some("2,3"), 1),
            (2, Some(""), 2),
        ];
        for (local_rank, visible, want) in cases {
            assert_eq!(local_cuda_device(local_rank, visible), want, "{visible:?}");
        }
    }

    /// srun --accel-bind=g: a task with local rank 5 that sees four GPUs is refused, naming the
    /// list and what to do; within the list (or with one device, or no list) nothing is said.
    #[test]
    fn a_local_rank_past_several_visible_gpus_is_refused() {
        let e = several_visible_problem(5, Some("4,5,6,7")).unwrap();
        assert!(
            e.starts_with("local rank 5 sees 4 GPUs (CUDA_VISIBLE_DEVICES=4,5,6,7)"),
            "{e}"
        );
        assert!(e.contains("srun --gpus-per-task=1"), "{e}");
        for (local_rank, visible) in [(3, Some("4,5,6,7")), (5, Some("2")), (5, None)] {
            assert_eq!(several_visible_problem(local_rank, visible), None);
        }
    }

    /// The runtime is read from the libcudart this process loaded with libtorch_cuda (the
    /// build links it wherever libtorch has CUDA), with no driver; without one there is none.
    #[test]
    fn the_cuda_runtime_is_the_one_libtorch_loaded() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let soname = maps
            .lines()
            .filter_map(|l| l.split('/').next_back())
            .find_map(|f| f.strip_prefix("libcudart.so."));
        match (soname, cuda_runtime_here()) {
            (Some(so), Some((major, _))) => assert!(so.starts_with(&format!("{major}")), "{so}"),
            (None, None) => {}
            other => panic!("libcudart loaded and runtime version disagree: {other:?}"),
        }
    }

    #[test]
    fn drivers_older_than_the_runtimes_minimum_are_refused_with_what_to_do() {
        let proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 \
                           22:23:56 UTC 2024\nGCC version:  gcc version 12.3.0\n";
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release \
                    Build  (dvs-builder@U16-I3-B03-4-3)  Sun Jul 27 06:54:38 UTC 2025\n";
        assert_eq!(
            parse_driver_version(proprietary).as_deref(),
            Some("550.54.15")
        );
        assert_eq!(parse_driver_version(open).as_deref(), Some("580.65.06"));
        assert_eq!(
            driver_problem(Some(proprietary), Some((13, 0))).as_deref(),
            Some(
                "the NVIDIA driver here is 550.54.15, older than 580.65.06, the oldest that runs \
                 CUDA 13.x (libtorch here links the CUDA 13.0 runtime): update the driver, run on \
                 nodes that have a newer one, or build against a libtorch for an older CUDA \
                 (README: building on a cluster)"
            )
        );
        // A CUDA 12.8 libtorch runs on 550 (12.x's minimum is 525.60.13), not on 525.53.
        assert_eq!(driver_problem(Some(proprietary), Some((12, 8))), None);
        let old = proprietary.replace("550.54.15", "525.53.01");
        let e = driver_problem(Some(&old), Some((12, 8))).unwrap();
        assert!(
            e.contains("older than 525.60.13") && e.contains("CUDA 12.8"),
            "{e}"
        );
        assert_eq!(driver_problem(Some(open), Some((13, 0))), None);
        assert_eq!(driver_problem(Some("garbage"), Some((13, 0))), None);
        assert_eq!(driver_problem(None, Some((13, 0))), None);
        // No CUDA runtime (a CPU libtorch) or one the table does not know: nothing to say.
        assert_eq!(driver_problem(Some(proprietary), None), None);
        assert_eq!(driver_problem(Some(proprietary), Some((14, 0))), None);
    }
}
