//! Which GPU a rank uses and whether this machine's NVIDIA driver can run it, decided from the
//! environment as clusters set it (pure functions of what they read, so tested on any machine).

/// The oldest NVIDIA driver branch that runs CUDA 13, which the libtorch here is built for.
pub const MIN_DRIVER: u32 = 580;
/// Where Linux's NVIDIA kernel module reports its version.
pub const DRIVER_VERSION_FILE: &str = "/proc/driver/nvidia/version";

/// The CUDA device index of a rank with local rank `local_rank`: `cuda:local_rank` (OpenCLIP's
/// choice), except when `CUDA_VISIBLE_DEVICES` (`visible`) lists exactly one device — slurm's
/// one GPU per task — where that device is `cuda:0` whatever the local rank.
pub fn local_cuda_device(local_rank: usize, visible: Option<&str>) -> usize {
    let listed = visible.map(|v| v.split(',').filter(|d| !d.trim().is_empty()).count());
    match listed {
        Some(1) => 0,
        _ => local_rank,
    }
}

/// [`local_cuda_device`] with this process's `CUDA_VISIBLE_DEVICES`.
pub fn local_cuda_device_from_env(local_rank: usize) -> usize {
    local_cuda_device(
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

/// One line saying what to do when the driver described by `text` (the contents of
/// [`DRIVER_VERSION_FILE`], if any) is too old for CUDA 13; `None` when it is recent enough or
/// unknown.
pub fn driver_problem(text: Option<&str>) -> Option<String> {
    let version = parse_driver_version(text?)?;
    let major: u32 = version.split('.').next()?.parse().ok()?;
    (major < MIN_DRIVER).then(|| {
        format!(
            "the NVIDIA driver here is {version}, older than {MIN_DRIVER}, the oldest that runs \
             CUDA 13 (which this libtorch is built for): update the driver to {MIN_DRIVER} or \
             newer, or run on nodes that have it"
        )
    })
}

/// [`driver_problem`] for this machine.
pub fn driver_problem_here() -> Option<String> {
    driver_problem(std::fs::read_to_string(DRIVER_VERSION_FILE).ok().as_deref())
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

    #[test]
    fn drivers_older_than_580_are_refused_with_what_to_do() {
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
            driver_problem(Some(proprietary)).as_deref(),
            Some(
                "the NVIDIA driver here is 550.54.15, older than 580, the oldest that runs CUDA \
                 13 (which this libtorch is built for): update the driver to 580 or newer, or run \
                 on nodes that have it"
            )
        );
        assert_eq!(driver_problem(Some(open)), None);
        assert_eq!(driver_problem(Some("garbage")), None);
        assert_eq!(driver_problem(None), None);
    }
}
