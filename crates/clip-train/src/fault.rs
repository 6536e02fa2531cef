//! Faults planted on purpose, for the negative controls of `scripts/gpu-check.sh`: a check that
//! compares bits or values proves something only if it reports FAIL when the thing it checks
//! is broken, so the script runs each such check once more with a fault switched on and must
//! see it fail. Never set in a real run.
//!
//! `CLIP_TRAIN_FAULT` (comma-separated):
//! - `skip-comm-wait` (CUDA): the communication stream does not wait for the event after a
//!   bucket's gradients (`buckets.rs`), so its all-reduce may read them before they are written;
//! - `skip-copy-wait`: the step's stream does not wait for its batch's copy event
//!   (`prefetch.rs`). On the CPU, where there is no copy to wait for, the step reads the batch's
//!   images as a read before the copy would find fresh memory: zeros (an emulation, so that the
//!   control's comparison runs in CI too);
//! - `sum-grads`: the gradient buckets are summed over the ranks instead of averaged (seen at
//!   world size 2 and more: in a world of one the sum is the average).
//!
//! `CLIP_TRAIN_DELAY` (comma-separated; not faults — the controls' positive runs use them too,
//! so that only the wait stands between a reader and a writer still running):
//! - `grads` (CUDA): at the first gradient hook of each backward of an overlapped step, a long
//!   run of matmuls on the compute stream, so the rest of the backward's gradients are written
//!   well after their buckets are launched;
//! - `copy` (CUDA): the same on the copy stream before each batch's copy.

use std::sync::OnceLock;

use anyhow::{bail, Result};

/// A fault of `CLIP_TRAIN_FAULT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    SkipCommWait,
    SkipCopyWait,
    SumGrads,
}

/// A delay of `CLIP_TRAIN_DELAY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    Grads,
    Copy,
}

/// What is switched on in this process.
#[derive(Debug, Default, PartialEq)]
pub struct Planted {
    faults: Vec<Fault>,
    delays: Vec<Delay>,
}

impl Planted {
    /// Parses the two variables' values; an unknown name is an error naming it.
    pub fn parse(faults: Option<&str>, delays: Option<&str>) -> Result<Planted> {
        let names = |v: Option<&str>| -> Vec<String> {
            v.unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect()
        };
        let mut planted = Planted::default();
        for n in names(faults) {
            planted.faults.push(match n.as_str() {
                "skip-comm-wait" => Fault::SkipCommWait,
                "skip-copy-wait" => Fault::SkipCopyWait,
                "sum-grads" => Fault::SumGrads,
                _ => bail!(
                    "CLIP_TRAIN_FAULT: unknown fault {n:?} (skip-comm-wait, skip-copy-wait, sum-grads)"
                ),
            });
        }
        for n in names(delays) {
            planted.delays.push(match n.as_str() {
                "grads" => Delay::Grads,
                "copy" => Delay::Copy,
                _ => bail!("CLIP_TRAIN_DELAY: unknown delay {n:?} (grads, copy)"),
            });
        }
        Ok(planted)
    }

    fn from_env() -> Result<Planted> {
        let var = |k| std::env::var(k).ok();
        Planted::parse(
            var("CLIP_TRAIN_FAULT").as_deref(),
            var("CLIP_TRAIN_DELAY").as_deref(),
        )
    }
}

/// Refuses bad values of the variables (`plan::validate` calls it: exit 2, nothing written).
pub fn check_env() -> Result<()> {
    Planted::from_env().map(drop)
}

fn planted_here() -> &'static Planted {
    static PLANTED: OnceLock<Planted> = OnceLock::new();
    // Checked by `check_env` before any run; a tool that never checks plants nothing.
    PLANTED.get_or_init(|| Planted::from_env().unwrap_or_default())
}

/// Whether `fault` is planted in this process.
pub fn planted(fault: Fault) -> bool {
    planted_here().faults.contains(&fault)
}

/// Whether `delay` is switched on in this process.
pub fn delayed(delay: Delay) -> bool {
    planted_here().delays.contains(&delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_and_delays_are_parsed_by_name_and_unknown_names_refused() {
        assert_eq!(Planted::parse(None, Some("")).unwrap(), Planted::default());
        let p = Planted::parse(Some("skip-comm-wait, sum-grads"), Some("grads,copy")).unwrap();
        assert_eq!(p.faults, vec![Fault::SkipCommWait, Fault::SumGrads]);
        assert_eq!(p.delays, vec![Delay::Grads, Delay::Copy]);
        let e = Planted::parse(Some("skip-wait"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("CLIP_TRAIN_FAULT: unknown fault \"skip-wait\""),
            "{e}"
        );
        let e = Planted::parse(None, Some("slow")).unwrap_err().to_string();
        assert!(
            e.starts_with("CLIP_TRAIN_DELAY: unknown delay \"slow\""),
            "{e}"
        );
    }
}
