//! `--precision amp`'s loss scaler: PyTorch's `torch.amp.GradScaler` with its defaults (what
//! OpenCLIP creates). The loss is multiplied by `scale` before the backward so fp16 activation
//! gradients do not underflow; the gradients are divided by it before clipping and the optimizer;
//! a step whose gradients hold an inf or NaN is skipped and the scale halved; after 2000 clean
//! steps in a row the scale doubles.

use serde::{Deserialize, Serialize};

use crate::optimizer::{gradients, Param};

const INIT_SCALE: f64 = 65536.0;
const GROWTH_FACTOR: f64 = 2.0;
const BACKOFF_FACTOR: f64 = 0.5;
const GROWTH_INTERVAL: i64 = 2000;

/// The scaler's whole state (saved in checkpoints, so a resumed run scales as the uninterrupted
/// one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub growth_tracker: i64,
}

impl Default for GradScaler {
    fn default() -> Self {
        GradScaler {
            scale: INIT_SCALE,
            growth_tracker: 0,
        }
    }
}

impl GradScaler {
    /// Divides every gradient by the scale (`unscale_`); false when any is not finite (then the
    /// optimizer step must be skipped).
    pub fn unscale(&self, params: &[Param]) -> bool {
        // PyTorch multiplies by the f32 reciprocal; for a power of two that is exact either way.
        let inv = (1.0 / self.scale) as f32;
        tch::no_grad(|| {
            let mut finite = true;
            for g in &gradients(params) {
                let _ = g.shallow_clone().g_mul_scalar_(f64::from(inv));
                finite &= g.isfinite().all().int64_value(&[]) != 0;
            }
            finite
        })
    }

    /// `update()`: halve after a skipped step, double after `GROWTH_INTERVAL` clean ones.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= BACKOFF_FACTOR;
            self.growth_tracker = 0;
        } else if self.growth_tracker + 1 == GROWTH_INTERVAL {
            self.scale *= GROWTH_FACTOR;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_on_overflow_and_grows_after_the_interval() {
        let mut s = GradScaler::default();
        s.update(true);
        assert_eq!((s.scale, s.growth_tracker), (32768.0, 0));
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(false);
        }
        assert_eq!((s.scale, s.growth_tracker), (32768.0, GROWTH_INTERVAL - 1));
        s.update(false);
        assert_eq!((s.scale, s.growth_tracker), (65536.0, 0));
    }
}
