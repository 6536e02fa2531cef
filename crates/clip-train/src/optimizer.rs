//! AdamW with OpenCLIP's two parameter groups, and gradient-norm clipping, with the optimizer
//! state owned here (tch's optimizer hides it) so checkpoints can save and restore it.
//!
//! The update is torch.optim.AdamW(fused=True)'s (decoupled weight decay, bias-corrected
//! moments) through libtorch's fused kernel, and the clipping is
//! `torch.nn.utils.clip_grad_norm_(params, max_norm, 2.0)` through its foreach ops: a few kernels
//! per step whatever the parameter count, and nothing read back to the host (see
//! `torch_ext::optim`). The checkpointed state is the moments and the step count.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};
use torch_ext::optim::{AdamWHyper, AdamWTensor};

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
    /// torch's `state_steps`: the optimizer steps taken, an f32 scalar on the parameters' device
    /// (one for all: they always step together). On the device so that a step `--precision amp`
    /// skips is not counted without the host having to know it was skipped.
    state_step: Tensor,
}

impl AdamW {
    /// Over `named` (name, tensor) pairs; tensors not requiring grad are left out, as OpenCLIP
    /// leaves out locked towers.
    pub fn new(named: &[(String, Tensor)], config: AdamWConfig) -> Self {
        let params: Vec<Param> = named
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
        let device = params.first().map_or(Device::Cpu, |p| p.tensor.device());
        Self {
            config,
            params,
            state_step: Tensor::zeros([], (Kind::Float, device)),
        }
    }

    /// `optimizer.zero_grad()` as torch 2.x does it (`set_to_none=True`): the gradients are
    /// freed, so the next forward runs without them held; the backward allocates them again.
    pub fn zero_grad(&self) -> Result<()> {
        torch_ext::optim::set_grads_to_none(&self.tensors())
    }

    /// The trainable tensors.
    pub fn tensors(&self) -> Vec<&Tensor> {
        self.params.iter().map(|p| &p.tensor).collect()
    }

    /// One AdamW update at learning rate `lr`: `torch.optim.AdamW(fused=True)`'s kernel, one
    /// launch per (weight-decay group, dtype). Parameters without a gradient are skipped, as
    /// torch skips `p.grad is None`. With `found_inf` (the loss scaler's, f32 scalar) holding 1
    /// the step is skipped and not counted, decided on the device. Per element, with t the
    /// step count:
    ///
    /// ```text
    /// p  ← p·(1 − lr·wd)                       (decay group only: decoupled weight decay)
    /// m  ← m + (1 − β1)·(g − m)                (lerp)
    /// v  ← β2·v + (1 − β2)·g²
    /// p  ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + eps)
    /// ```
    ///
    /// computed in f32 for every parameter dtype (bf16 weights and moments are rounded once, on
    /// store).
    ///
    /// On CUDA the kernel reads the step count on the device. libtorch's CPU kernel reads it with
    /// `.item()` once per tensor: `aten::_local_scalar_dense` nested under `aten::_fused_adamw_`
    /// in a profile, a read of host memory rather than a wait on a device.
    ///
    /// A `found_inf` on another device than the parameters' (`--fsdp-offload-cpu`: the verdict
    /// on the GPU, the step on the host) is copied to theirs first.
    pub fn step(&mut self, lr: f64, found_inf: Option<&Tensor>) -> Result<()> {
        let device = self.state_step.device();
        let moved = found_inf
            .filter(|t| t.device() != device)
            .map(|t| t.to_device(device));
        let found_inf = moved.as_ref().or(found_inf);
        tch::no_grad(|| {
            let _ = self.state_step.g_add_scalar_(1.0);
            if let Some(inf) = found_inf {
                let _ = self.state_step.g_sub_(inf);
            }
        });
        let tensors: Vec<AdamWTensor> = self
            .params
            .iter()
            .map(|p| AdamWTensor {
                param: &p.tensor,
                exp_avg: &p.exp_avg,
                exp_avg_sq: &p.exp_avg_sq,
                decay: p.weight_decay,
            })
            .collect();
        let c = self.config;
        let hyper = AdamWHyper {
            lr,
            beta1: c.beta1,
            beta2: c.beta2,
            weight_decay: c.weight_decay,
            eps: c.eps,
        };
        torch_ext::optim::fused_adamw(&tensors, &self.state_step, hyper, found_inf)
    }

    /// The same update as [`AdamW::step`], as a loop of single-tensor ops (~9 per parameter,
    /// torch's `_single_tensor_adamw`, and what this crate ran before the fused kernel), with the
    /// bias correction on the host. The reference `clip-tool bench-optimizer --impl loop` and
    /// the tests compare the fused step against; the trainer does not use it.
    pub fn step_loop(&mut self, lr: f64) {
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let step = self.steps_taken() + 1;
        tch::no_grad(|| {
            let _ = self.state_step.g_add_scalar_(1.0);
        });
        let bias1 = 1.0 - beta1.powi(step as i32);
        let bias2_sqrt = (1.0 - beta2.powi(step as i32)).sqrt();
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

    /// The optimizer steps taken (a host read of the device count: for checkpoints, not for
    /// every step).
    pub fn steps_taken(&self) -> i64 {
        self.state_step.double_value(&[]) as i64
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
        tch::no_grad(|| {
            let _ = self.state_step.fill_(step as f64);
        });
        Ok(())
    }
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=2.0)` (its foreach path): scales
/// every gradient by `min(1, max_norm / (total_norm + 1e-6))`, where total_norm is the 2-norm of
/// the per-tensor norms, and returns total_norm before clipping. Both stay on the device (an f32
/// scalar): a handful of ops per gradient dtype, no host read; whoever logs the norm reads it.
pub fn clip_grad_norm(params: &[Param], max_norm: f64) -> Result<Tensor> {
    let tensors: Vec<&Tensor> = params.iter().map(|p| &p.tensor).collect();
    torch_ext::optim::clip_grad_norm(&tensors, max_norm)
}
