//! The divergence stop without a host read per step: each step's loss is checked on the device
//! (the first non-finite step and its loss are kept there), and the host reads the verdict only
//! where it reads the device anyway or must not go on unchecked: on log steps, before every
//! checkpoint, and at an epoch's end. Steps after the bad one may run before the check sees it,
//! but no checkpoint is written after it, so the stop names the bad step and the newest good
//! checkpoint exactly as a per-step check would.
//!
//! With many ranks the verdicts are agreed over the collectives (one all-gather of two numbers
//! per rank, on the device, at the check's read): the earliest bad step of any rank, so every
//! rank stops with the same message.

use anyhow::Result;
use clip_dist::Collectives;
use tch::{Device, Kind, Tensor};

/// A non-finite loss found by [`Divergence::check`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Diverged {
    pub step: i64,
    pub epoch: i64,
    pub loss: f64,
}

pub struct Divergence {
    /// The first recorded step whose loss was not finite (−1: none yet), on the device.
    first_step: Tensor,
    /// That step's loss (f64), on the device.
    first_loss: Tensor,
    /// (step, epoch) of the steps recorded since the last check, to name the bad step's epoch.
    epochs: Vec<(i64, i64)>,
}

impl Divergence {
    pub fn new(device: Device) -> Self {
        Divergence {
            first_step: Tensor::full([], -1, (Kind::Int64, device)),
            first_loss: Tensor::zeros([], (Kind::Double, device)),
            epochs: Vec::new(),
        }
    }

    /// Records global step `step` of `epoch` with this rank's `loss` (on the device); a step the
    /// loss scaler skipped (`--precision amp`'s inf/NaN gradients: `found_inf`, non-zero, on the
    /// device) is not a divergence. Nothing is read back.
    pub fn record(&mut self, step: i64, epoch: i64, loss: &Tensor, found_inf: Option<&Tensor>) {
        self.epochs.push((step, epoch));
        tch::no_grad(|| {
            let loss = loss.to_kind(Kind::Double).reshape([]);
            let mut first = loss
                .isfinite()
                .logical_not()
                .logical_and(&self.first_step.lt(0));
            if let Some(inf) = found_inf {
                first = first.logical_and(&inf.eq(0.0).reshape([]));
            }
            let _ = self.first_step.masked_fill_(&first, step);
            self.first_loss = loss.where_self(&first, &self.first_loss);
        });
    }

    /// Reads the verdict (one host sync) and agrees on it with the other ranks: the earliest
    /// bad step of any rank, with that rank's loss. Every rank calls it at the same step.
    pub fn check(&mut self, comm: &dyn Collectives) -> Result<Option<Diverged>> {
        // (step, loss) per rank, f64: a step is exact below 2^53 and a NaN loss stays NaN.
        let mine = Tensor::stack(
            &[
                self.first_step.to_kind(Kind::Double),
                self.first_loss.shallow_clone(),
            ],
            0,
        );
        let all = match comm.world_size() {
            1 => mine,
            _ => comm.all_gather(&mine)?,
        };
        let all: Vec<f64> = Vec::try_from(&all.to_device(Device::Cpu))?;
        let bad = all
            .chunks_exact(2)
            .filter(|v| v[0] >= 0.0)
            .map(|v| (v[0] as i64, v[1]))
            .min_by_key(|&(step, _)| step);
        let Some((step, loss)) = bad else {
            self.epochs.clear();
            return Ok(None);
        };
        let epoch = self
            .epochs
            .iter()
            .find(|(s, _)| *s == step)
            .map_or(-1, |e| e.1);
        Ok(Some(Diverged { step, epoch, loss }))
    }
}
