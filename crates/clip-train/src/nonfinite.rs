//! A step whose update is not finite is skipped, without a host read per step (issue 24): the
//! global gradient norm — the one clipping computes, or computed for this when `--grad-clip-norm`
//! is off — is checked on the device, and a non-finite one raises a `found_inf` that the
//! optimizer's step reads, as it reads `--precision amp`'s (the two combine: either skips the
//! step; every `--opt` honours it on the device, see [`crate::optimizer::Optimizer::step`]). The
//! weights and the optimizer's state stay as they were and the optimizer does not count the step,
//! so the run's step minus its count is the number of skipped steps (the log line's `Skipped
//! steps:`).
//!
//! Every rank sees the same verdict without agreeing on it: the norm (and amp's `found_inf`) is
//! of the gradients after the all-reduce, which every rank holds bit for bit (see
//! [`crate::buckets`]), so every rank skips the same steps and counts the same streaks. With
//! `--fsdp` each rank holds other shards of the gradients: the norm is the whole model's, summed
//! over the shards by a collective, and amp's `found_inf` is agreed by one
//! ([`crate::fsdp::GradSync`]), so the verdict is again the same on every rank.
//!
//! [`SkippedSteps`] keeps the current streak of skipped steps on the device; the host reads it
//! where the divergence check reads its own verdict (log steps, before every checkpoint, an
//! epoch's end): `CLIP_TRAIN_MAX_SKIPPED` steps in a row (default 8) stop the run as a diverged
//! loss does. Under `--precision amp` the streak counts from the run's first step that was not
//! skipped: until then the loss scaler is still halving its initial scale (2^16) to one the
//! gradients fit in, as torch's GradScaler does, which is calibration, not divergence.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// `CLIP_TRAIN_MAX_SKIPPED` when unset.
pub const DEFAULT_MAX_SKIPPED: i64 = 8;

/// `CLIP_TRAIN_MAX_SKIPPED` (through `get`, the environment): how many skipped steps in a row
/// stop the run; a whole number of at least 1.
pub fn max_skipped_from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<i64> {
    match get("CLIP_TRAIN_MAX_SKIPPED") {
        None => Ok(DEFAULT_MAX_SKIPPED),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => bail!("CLIP_TRAIN_MAX_SKIPPED={v}: expected a number of steps, at least 1"),
        },
    }
}

/// The step's `found_inf` for [`crate::optimizer::Optimizer::step`]: an f32 scalar on the device,
/// exactly 1 (what the fused kernel compares with) when the gradient norm `norm` is not finite
/// or amp's loss scaler found an inf / NaN, else 0.
pub fn found_inf(norm: &Tensor, amp: Option<&Tensor>) -> Tensor {
    tch::no_grad(|| {
        let bad = norm.isfinite().logical_not().to_kind(Kind::Float);
        match amp {
            Some(a) => bad.maximum(a),
            None => bad,
        }
    })
}

/// The run stopped by too many skipped steps in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManySkipped {
    /// The streak's first and last step (global, from 1).
    pub first: i64,
    pub last: i64,
    /// The last step's epoch.
    pub epoch: i64,
}

impl std::fmt::Display for TooManySkipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} steps in a row were skipped for non-finite gradients (steps {} to {}, epoch {}; CLIP_TRAIN_MAX_SKIPPED)",
            self.last - self.first + 1,
            self.first,
            self.last,
            self.epoch
        )
    }
}

/// The streak of skipped steps, on the device.
pub struct SkippedSteps {
    limit: i64,
    /// Skipped steps in a row up to the last recorded one (i64 scalar).
    in_a_row: Tensor,
    /// 1 once a step was not skipped (or from the start without a loss scaler; i64 scalar):
    /// before, skipped steps are the scaler's calibration and are not counted.
    counting: Tensor,
    /// The first step at which the streak reached `limit` (−1: none yet; i64 scalar).
    stop_at: Tensor,
    /// (step, epoch) of the steps recorded since the last check, to name the epoch.
    epochs: Vec<(i64, i64)>,
}

impl SkippedSteps {
    /// `calibrating`: a loss scaler finds its scale in the first steps (`--precision amp`).
    pub fn new(device: Device, limit: i64, calibrating: bool) -> Self {
        SkippedSteps {
            limit,
            in_a_row: Tensor::zeros([], (Kind::Int64, device)),
            counting: Tensor::full([], i64::from(!calibrating), (Kind::Int64, device)),
            stop_at: Tensor::full([], -1, (Kind::Int64, device)),
            epochs: Vec::new(),
        }
    }

    /// Records global step `step` of `epoch`, skipped when `found_inf` (the optimizer's, on the
    /// device) is non-zero. A few scalar kernels; nothing is read back.
    pub fn record(&mut self, step: i64, epoch: i64, found_inf: &Tensor) {
        self.epochs.push((step, epoch));
        tch::no_grad(|| {
            let skipped = found_inf.reshape([]).gt(0.0).to_kind(Kind::Int64);
            let _ = self.counting.bitwise_or_tensor_(&(1 - &skipped));
            let _ = self
                .in_a_row
                .g_add_scalar_(1)
                .g_mul_(&skipped)
                .g_mul_(&self.counting);
            let reached = self
                .in_a_row
                .ge(self.limit)
                .logical_and(&self.stop_at.lt(0));
            let _ = self.stop_at.masked_fill_(&reached, step);
        });
    }

    /// Reads the verdict (one host read): the streak that reached the limit, if one did.
    pub fn check(&mut self) -> Option<TooManySkipped> {
        let last = self.stop_at.int64_value(&[]);
        if last < 0 {
            self.epochs.clear();
            return None;
        }
        let epoch = self
            .epochs
            .iter()
            .find(|(s, _)| *s == last)
            .map_or(-1, |e| e.1);
        Some(TooManySkipped {
            first: last - self.limit + 1,
            last,
            epoch,
        })
    }
}

/// The factor step `step` back-propagates its loss with on `rank`: `scale` (amp's loss scale, or
/// none), except under the test hook `CLIP_TRAIN_TEST_INF_GRADS_AT_STEP=A[-B][:RANK]` (inert
/// unless set; never set outside `tests/`): steps A to B (global, from 1; B = A when not given),
/// on RANK only when given, back-propagate it times inf. Their loss stays finite, their gradients
/// are not, as in an overflow in the backward.
pub fn test_loss_scale(
    scale: Option<Tensor>,
    step: i64,
    rank: usize,
    device: Device,
) -> Option<Tensor> {
    if !test_inf_grads(step, rank) {
        return scale;
    }
    let inf = Tensor::full([], f64::INFINITY, (Kind::Float, device));
    Some(match scale {
        Some(s) => s * inf,
        None => inf,
    })
}

/// Whether `CLIP_TRAIN_TEST_INF_GRADS_AT_STEP` names `step` on `rank`.
fn test_inf_grads(step: i64, rank: usize) -> bool {
    // Read once: this runs every step.
    static HOOK: std::sync::OnceLock<Option<(i64, i64, Option<usize>)>> =
        std::sync::OnceLock::new();
    let hook = HOOK.get_or_init(|| {
        let hook = std::env::var("CLIP_TRAIN_TEST_INF_GRADS_AT_STEP").ok()?;
        let (steps, only) = match hook.split_once(':') {
            Some((s, r)) => (s, Some(r.parse::<usize>().expect("a rank"))),
            None => (hook.as_str(), None),
        };
        let (a, b) = steps.split_once('-').unwrap_or((steps, steps));
        Some((a.parse().expect("a step"), b.parse().expect("a step"), only))
    });
    hook.is_some_and(|(a, b, only)| (a..=b).contains(&step) && only.is_none_or(|r| r == rank))
}

/// Test hook, inert unless set: `CLIP_TRAIN_TEST_NAN_WEIGHT_AT_STEP=N` puts a NaN into the first
/// element of `param` after step N's update, as an update that overflowed after a finite loss
/// would (the next checkpoint must refuse it). Never set outside `tests/`.
pub fn test_nan_weight(step: i64, param: &Tensor) {
    static HOOK: std::sync::OnceLock<Option<i64>> = std::sync::OnceLock::new();
    let hook = HOOK.get_or_init(|| {
        let v = std::env::var("CLIP_TRAIN_TEST_NAN_WEIGHT_AT_STEP").ok()?;
        Some(v.parse().expect("a step"))
    });
    if *hook == Some(step) {
        tch::no_grad(|| {
            let _ = param.view([-1]).get(0).fill_(f64::NAN);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(v: f64) -> Tensor {
        Tensor::full([], v, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn found_inf_is_one_for_a_non_finite_norm_or_amps_flag() {
        let v = |norm: f64, amp: Option<f64>| {
            found_inf(&flag(norm), amp.map(flag).as_ref()).double_value(&[])
        };
        assert_eq!(v(3.5, None), 0.0);
        assert_eq!(v(f64::NAN, None), 1.0);
        assert_eq!(v(f64::INFINITY, None), 1.0);
        assert_eq!(v(3.5, Some(0.0)), 0.0);
        assert_eq!(v(3.5, Some(1.0)), 1.0);
        assert_eq!(v(f64::NAN, Some(1.0)), 1.0);
        assert_eq!(v(f64::NAN, Some(0.0)), 1.0);
    }

    /// A streak stops the run once it reaches the limit, naming its steps; a clean step in
    /// between starts the count again.
    #[test]
    fn a_streak_of_skipped_steps_is_counted_on_the_device() {
        let mut s = SkippedSteps::new(Device::Cpu, 3, false);
        for (step, skipped) in [(1, 1.0), (2, 1.0), (3, 0.0), (4, 1.0), (5, 1.0)] {
            s.record(step, 0, &flag(skipped));
        }
        assert_eq!(s.check(), None);
        s.record(6, 1, &flag(1.0));
        s.record(7, 1, &flag(1.0));
        let stop = s.check().unwrap();
        assert_eq!(
            stop,
            TooManySkipped {
                first: 4,
                last: 6,
                epoch: 1
            }
        );
        assert!(stop.to_string().starts_with("3 steps in a row"), "{stop}");
        // A loss scaler's first skips (finding its scale) are not counted; once a step went
        // through, skips count as without one.
        let mut amp = SkippedSteps::new(Device::Cpu, 3, true);
        for step in 1..=5 {
            amp.record(step, 0, &flag(1.0));
        }
        assert_eq!(amp.check(), None);
        for (step, skipped) in [(6, 0.0), (7, 1.0), (8, 1.0), (9, 1.0)] {
            amp.record(step, 0, &flag(skipped));
        }
        assert_eq!(amp.check().map(|t| (t.first, t.last)), Some((7, 9)));
        assert_eq!(max_skipped_from_env(&|_| None).unwrap(), 8);
        assert_eq!(max_skipped_from_env(&|_| Some("2".into())).unwrap(), 2);
        for bad in ["0", "-1", "x", "1.5"] {
            let e = max_skipped_from_env(&|_| Some(bad.into())).unwrap_err();
            assert!(e.to_string().contains("CLIP_TRAIN_MAX_SKIPPED"), "{e}");
        }
    }
}
