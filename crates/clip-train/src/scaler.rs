//! `--precision amp`'s loss scaler: PyTorch's `torch.amp.GradScaler` with its defaults (what
//! OpenCLIP creates). The loss is multiplied by `scale` before the backward so fp16 activation
//! gradients do not underflow; the gradients are divided by it before clipping and the optimizer;
//! a step whose gradients hold an inf or NaN is skipped and the scale halved; after 2000 clean
//! steps in a row the scale doubles. All of it on the device (torch's AMP kernels), so an amp
//! step reads nothing back to the host.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::optimizer::Param;

const INIT_SCALE: f64 = 65536.0;
const GROWTH_FACTOR: f64 = 2.0;
const BACKOFF_FACTOR: f64 = 0.5;
const GROWTH_INTERVAL: i64 = 2000;

/// The scaler's whole state as checkpoints hold it (so a resumed run scales as the uninterrupted
/// one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub growth_tracker: i64,
}

impl Default for ScalerState {
    fn default() -> Self {
        ScalerState {
            scale: INIT_SCALE,
            growth_tracker: 0,
        }
    }
}

/// The live scaler: its state on the device (torch's `_scale`, f32, and `_growth_tracker`, i32),
/// so that the inf check, the skip and the scale update need no host read.
pub struct GradScaler {
    scale: Tensor,
    growth_tracker: Tensor,
}

impl GradScaler {
    pub fn new(state: ScalerState, device: Device) -> Self {
        GradScaler {
            scale: Tensor::full([], state.scale, (Kind::Float, device)),
            growth_tracker: Tensor::full([], state.growth_tracker, (Kind::Int, device)),
        }
    }

    /// The state to checkpoint (host reads: not for every step).
    pub fn state(&self) -> ScalerState {
        ScalerState {
            scale: self.scale.double_value(&[]),
            growth_tracker: self.growth_tracker.int64_value(&[]),
        }
    }

    /// The factor the loss is multiplied by before the backward.
    pub fn scale(&self) -> &Tensor {
        &self.scale
    }

    /// `unscale_`: divides every gradient by the scale (times the f32 reciprocal, as PyTorch
    /// does) and returns `found_inf`, an f32 scalar on the device that is 1 when any gradient
    /// holds an inf or NaN (then the optimizer step must be skipped: [`crate::optimizer::AdamW::step`]
    /// takes it).
    pub fn unscale(&self, params: &[Param]) -> Result<Tensor> {
        let found_inf = self.scale.zeros_like();
        let inv = self
            .scale
            .to_kind(Kind::Double)
            .reciprocal()
            .to_kind(Kind::Float);
        let tensors: Vec<&Tensor> = params.iter().map(|p| &p.tensor).collect();
        torch_ext::optim::amp_unscale(&tensors, &inv, &found_inf)?;
        Ok(found_inf)
    }

    /// `update()` (`torch._amp_update_scale_`, on the device): halve after a skipped step,
    /// double after `GROWTH_INTERVAL` clean ones.
    pub fn update(&mut self, found_inf: &Tensor) {
        let _ = self.scale.internal_amp_update_scale_(
            &self.growth_tracker,
            found_inf,
            GROWTH_FACTOR,
            BACKOFF_FACTOR,
            GROWTH_INTERVAL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_on_overflow_and_grows_after_the_interval() {
        let mut s = GradScaler::new(ScalerState::default(), Device::Cpu);
        let flag = |v: f64| Tensor::full([], v, (Kind::Float, Device::Cpu));
        s.update(&flag(1.0));
        let st = |s: &GradScaler| (s.state().scale, s.state().growth_tracker);
        assert_eq!(st(&s), (32768.0, 0));
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(&flag(0.0));
        }
        assert_eq!(st(&s), (32768.0, GROWTH_INTERVAL - 1));
        s.update(&flag(0.0));
        assert_eq!(st(&s), (65536.0, 0));
        // A checkpointed state comes back as it was.
        let again = GradScaler::new(s.state(), Device::Cpu);
        assert_eq!(st(&again), (65536.0, 0));
    }

    /// The gradients come out divided by the scale, and an inf in any of them (of any dtype)
    /// raises `found_inf` on the device.
    #[test]
    fn unscale_divides_and_flags_non_finite_gradients() {
        let s = GradScaler::new(ScalerState::default(), Device::Cpu);
        let named: Vec<(String, Tensor)> = [(4, Kind::Float), (3, Kind::BFloat16)]
            .iter()
            .enumerate()
            .map(|(i, &(n, k))| {
                let t = Tensor::ones([n], (k, Device::Cpu)).set_requires_grad(true);
                (format!("w{i}.weight"), t)
            })
            .collect();
        let config = crate::optimizer::AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let opt = crate::optimizer::AdamW::new(&named, config);
        let backward = |v: f64| {
            let loss = named
                .iter()
                .map(|(_, t)| (t * v).sum(Kind::Float))
                .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
            loss.backward();
        };
        backward(65536.0 * 3.0);
        assert_eq!(s.unscale(&opt.params).unwrap().double_value(&[]), 0.0);
        for p in &opt.params {
            let g = p.tensor.grad().to_kind(Kind::Double);
            assert_eq!(g.min().double_value(&[]), 3.0, "{}", p.name);
            assert_eq!(g.max().double_value(&[]), 3.0, "{}", p.name);
        }
        opt.zero_grad().unwrap();
        backward(f64::INFINITY);
        assert_eq!(s.unscale(&opt.params).unwrap().double_value(&[]), 1.0);
    }
}
