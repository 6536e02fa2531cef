//! AdamW with OpenCLIP's two parameter groups, and gradient-norm clipping, with the optimizer
//! state owned here (tch's optimizer hides it) so checkpoints can save and restore it.
//!
//! The update is torch.optim.AdamW's (decoupled weight decay, bias-corrected moments), and the
//! clipping is `torch.nn.utils.clip_grad_norm_(params, max_norm, 2.0)`.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// OpenCLIP's rule (main.py): no weight decay for tensors with fewer than 2 dimensions or names
/// containing `bn`, `ln`, `bias` or `logit_scale` — biases, LayerNorms, ConvNeXt gammas,
/// logit_scale; decay for the rest, embeddings and depthwise convs included.
pub fn excluded_from_weight_decay(name: &str, dims: usize) -> bool {
    dims < 2
        || ["bn", "ln", "bias", "logit_scale"]
            .iter()
            .any(|s| name.contains(s))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// `--wd`, applied to the decay group only.
    pub weight_decay: f64,
}

/// One trainable tensor and its AdamW moments.
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    pub weight_decay: bool,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

pub struct AdamW {
    pub config: AdamWConfig,
    pub params: Vec<Param>,
    /// Optimizer steps taken (torch keeps one per parameter; they are always equal here).
    pub step: i64,
}

impl AdamW {
    /// Over `named` (name, tensor) pairs; tensors not requiring grad are left out, as OpenCLIP
    /// leaves out locked towers.
    pub fn new(named: &[(String, Tensor)], config: AdamWConfig) -> Self {
        let params = named
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, t)| Param {
                name: n.clone(),
                tensor: t.shallow_clone(),
                weight_decay: !excluded_from_weight_decay(n, t.dim()),
                exp_avg: t.zeros_like().detach(),
                exp_avg_sq: t.zeros_like().detach(),
            })
            .collect();
        Self {
            config,
            params,
            step: 0,
        }
    }

    /// Sets every gradient to zero (keeping the buffers, like `zero_grad(set_to_none=False)`).
    pub fn zero_grad(&self) {
        for p in &self.params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// One AdamW update at learning rate `lr`. Parameters without a gradient are skipped, as
    /// torch skips `p.grad is None`.
    pub fn step(&mut self, lr: f64) {
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        self.step += 1;
        let bias1 = 1.0 - beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bias1;
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let mut t = p.tensor.shallow_clone();
                if p.weight_decay && weight_decay != 0.0 {
                    let _ = t.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let _ = p.exp_avg.lerp_(&grad, 1.0 - beta1);
                let _ = p.exp_avg_sq.g_mul_scalar_(beta2);
                let _ = p.exp_avg_sq.addcmul_(&(&grad * (1.0 - beta2)), &grad);
                let denom = p.exp_avg_sq.sqrt() / bias2_sqrt + eps;
                let _ = t.addcdiv_(&(&p.exp_avg * -step_size), &denom);
            }
        });
    }

    /// The state to checkpoint: `(name, tensor)` for both moments of every parameter.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            out.push((format!("exp_avg.{}", p.name), p.exp_avg.shallow_clone()));
            out.push((
                format!("exp_avg_sq.{}", p.name),
                p.exp_avg_sq.shallow_clone(),
            ));
        }
        out
    }

    /// Restores moments saved by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)], step: i64) -> Result<()> {
        let find = |key: String| {
            tensors
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, t)| t.shallow_clone())
        };
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                let (Some(m), Some(v)) = (
                    find(format!("exp_avg.{}", p.name)),
                    find(format!("exp_avg_sq.{}", p.name)),
                ) else {
                    bail!("optimizer state has no moments for {}", p.name);
                };
                if m.size() != p.tensor.size() || v.size() != p.tensor.size() {
                    bail!(
                        "optimizer state for {} has shape {:?}, the parameter {:?}",
                        p.name,
                        m.size(),
                        p.tensor.size()
                    );
                }
                p.exp_avg.copy_(&m);
                p.exp_avg_sq.copy_(&v);
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=2.0)`: scales every gradient by
/// `min(1, max_norm / (total_norm + 1e-6))` and returns the total norm before clipping.
pub fn clip_grad_norm(params: &[Param], max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let grads = gradients(params);
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads
            .iter()
            .map(|g| g.norm().to_kind(Kind::Float))
            .collect();
        let total = Tensor::stack(&norms, 0).norm();
        let coef = (max_norm / (total.double_value(&[]) + 1e-6)).min(1.0);
        for g in &grads {
            let _ = g.shallow_clone().g_mul_scalar_(coef);
        }
        total.double_value(&[])
    })
}

/// The gradients the backward produced (frozen or unused parameters have none).
pub fn gradients(params: &[Param]) -> Vec<Tensor> {
    params
        .iter()
        .map(|p| p.tensor.grad())
        .filter(|g| g.defined())
        .collect()
}
