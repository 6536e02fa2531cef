//! The divergence stop without a host read per step: each step's loss is checked on the device
//! (the first non-finite step and its loss are kept there), and the host reads the verdict only
//! where it reads the device anyway or must not go on unchecked: on log steps, before every
//! checkpoint, and at an epoch's end. Steps after the bad one may run before the check sees it,
//! but no checkpoint is written after it, so the stop names the bad step and the newest good
//! checkpoint exactly as a per-step check would.
//!
//! With many ranks the verdicts are agreed through the store (host bytes): the earliest bad step
//! of any rank, so every rank stops with the same message.

use anyhow::{bail, Result};
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
        let step = self.first_step.int64_value(&[]);
        let mine = match step {
            -1 => None,
            s => Some((s, self.first_loss.double_value(&[]))),
        };
        let bad = if comm.world_size() == 1 {
            mine
        } else {
            // (step, loss bits), little-endian; nothing when this rank's losses were finite (a
            // NaN survives the trip, which JSON would turn into null).
            let bytes: Vec<u8> = mine.map_or(vec![], |(s, l)| {
                [s.to_le_bytes(), l.to_bits().to_le_bytes()].concat()
            });
            let mut earliest: Option<(i64, f64)> = None;
            for theirs in comm.all_gather_bytes(&bytes)? {
                let theirs = match theirs.len() {
                    0 => None,
                    16 => {
                        let (s, l) = theirs.split_at(8);
                        let (s, l) = (s.try_into().expect("8"), l.try_into().expect("8"));
                        Some((i64::from_le_bytes(s), f64::from_bits(u64::from_le_bytes(l))))
                    }
                    n => bail!("a rank's divergence verdict has {n} bytes, not 0 or 16"),
                };
                if let Some(t) = theirs.filter(|t| earliest.is_none_or(|e| t.0 < e.0)) {
                    earliest = Some(t);
                }
            }
            earliest
        };
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
