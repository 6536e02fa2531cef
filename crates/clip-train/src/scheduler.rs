//! Learning-rate schedules, OpenCLIP's `open_clip_train/scheduler.py` formula for formula,
//! stepped once per optimizer step. `total_steps = (batches_per_epoch // accum_freq) * epochs`.

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Cosine,
    Const,
    /// Constant, then a polynomial decay to `end_lr` over the last `cooldown_steps`.
    ConstCooldown {
        cooldown_steps: i64,
        power: f64,
        end_lr: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    pub schedule: Schedule,
    pub base_lr: f64,
    pub warmup: i64,
    pub total_steps: i64,
}

impl LrSchedule {
    /// From `--lr-scheduler` and friends; `cooldown_steps` is
    /// `(batches_per_epoch // accum_freq) * epochs_cooldown` when that schedule is chosen.
    pub fn new(
        name: &str,
        base_lr: f64,
        warmup: i64,
        total_steps: i64,
        cooldown: Option<(i64, f64, f64)>,
    ) -> Result<Self> {
        let schedule = match (name, cooldown) {
            ("cosine", _) => Schedule::Cosine,
            ("const", _) => Schedule::Const,
            ("const-cooldown", Some((cooldown_steps, power, end_lr))) => {
                Schedule::ConstCooldown { cooldown_steps, power, end_lr }
            }
            ("const-cooldown", None) => bail!("--lr-scheduler const-cooldown needs --epochs-cooldown"),
            (other, _) => bail!("--lr-scheduler {other}: unknown scheduler; available: cosine, const, const-cooldown"),
        };
        Ok(Self {
            schedule,
            base_lr,
            warmup,
            total_steps,
        })
    }

    /// The learning rate at optimizer step `step` (0-based).
    pub fn lr(&self, step: i64) -> f64 {
        let (base, warmup, steps) = (self.base_lr, self.warmup, self.total_steps);
        if step < warmup {
            return base * (step + 1) as f64 / warmup as f64;
        }
        match self.schedule {
            Schedule::Const => base,
            Schedule::Cosine => {
                let e = (step - warmup) as f64;
                let es = (steps - warmup) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * e / es).cos()) * base
            }
            Schedule::ConstCooldown {
                cooldown_steps,
                power,
                end_lr,
            } => {
                let start = steps - cooldown_steps;
                if step < start {
                    base
                } else {
                    let e = (step - start) as f64;
                    let es = (steps - start) as f64;
                    (1.0 - e / es).powf(power) * (base - end_lr) + end_lr
                }
            }
        }
    }
}
