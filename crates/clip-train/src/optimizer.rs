//! The optimizer: `--opt`'s update rule ([`crate::optim_spec`]) over the trainable parameters
//! in their groups ([`crate::param_groups`]), with its state owned here (tch's optimizer hides
//! it) so checkpoints can save and restore it, and gradient-norm clipping.
//!
//! Every rule runs as libtorch kernels with nothing read back to the host: AdamW (also Muon's
//! fallback) and SGD through their fused kernels, torch's NAdam through foreach ops, timm's
//! optimizers as their single-tensor paths (`torch_ext::optim_algos`). The step count is a
//! device scalar, so a step `found_inf` skips is not counted without the host knowing. The
//! clipping is `torch.nn.utils.clip_grad_norm_(params, max_norm, 2.0)` through its foreach ops.
//! The checkpointed state is the step count and, per parameter, timm's / torch's state tensors
//! under their names (`exp_avg.<param>`, `momentum_buffer.<param>`, …).

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};
use torch_ext::optim::Stepped;
use torch_ext::optim_algos::{self as algos, SecondMoment, StepArgs};

use crate::optim_spec::{Algo, OptimSpec};
use crate::param_groups::{self, Group, ModelLayout, Rules};

/// OpenCLIP's rule (main.py) for `--opt adamw`: no weight decay for tensors with fewer than 2
/// dimensions or names containing `bn`, `ln`, `bias` or `logit_scale` — biases, LayerNorms,
/// ConvNeXt gammas, logit_scale; decay for the rest, embeddings and depthwise convs included.
pub fn excluded_from_weight_decay(name: &str, dims: usize) -> bool {
    dims < 2
        || ["bn", "ln", "bias", "logit_scale"]
            .iter()
            .any(|s| name.contains(s))
}

/// AdamW's settings (`--opt adamw` without the development branch's flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// `--wd`, applied to the decay group only.
    pub weight_decay: f64,
}

/// A tensor for [`Optimizer::adamw_grouped`]: whether it is in the weight-decay group, and its
/// moments (`exp_avg`, `exp_avg_sq`) when the caller holds them (else zeros are made).
pub struct GroupedParam {
    pub name: String,
    pub tensor: Tensor,
    pub decay: bool,
    pub moments: Option<(Tensor, Tensor)>,
}

/// One trainable tensor, its group and its optimizer state.
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    /// Index into [`Optimizer::groups`].
    pub group: usize,
    /// Muon: orthogonalised by Newton–Schulz (else its AdamW fallback).
    pub matrix: bool,
    /// The state tensors, by the names timm / torch give them.
    pub state: Vec<(&'static str, Tensor)>,
}

impl Param {
    /// State tensor `key` (present by construction: see [`initial_state`]).
    fn get(&self, key: &str) -> &Tensor {
        self.find(key)
            .unwrap_or_else(|| panic!("{}: no optimizer state {key}", self.name))
    }

    fn find(&self, key: &str) -> Option<&Tensor> {
        self.state.iter().find(|(k, _)| *k == key).map(|(_, t)| t)
    }
}

pub struct Optimizer {
    /// `--opt` (lowercased).
    pub name: String,
    pub algo: Algo,
    pub groups: Vec<Group>,
    pub params: Vec<Param>,
    /// torch's `state_steps`: the optimizer steps taken, an f32 scalar on the parameters' device
    /// (one for all: they always step together). On the device so that a step `found_inf` skips
    /// is not counted without the host having to know it was skipped.
    state_step: Tensor,
    /// torch NAdam's product of its momentum schedule (one for all parameters).
    mu_product: Option<Tensor>,
}

/// The name callers have used since AdamW was the only optimizer.
pub type AdamW = Optimizer;

impl Optimizer {
    /// AdamW with OpenCLIP 3.3.0's two groups over `named` (name, tensor) pairs; tensors not
    /// requiring grad are left out, as OpenCLIP leaves out locked towers.
    pub fn new(named: &[(String, Tensor)], config: AdamWConfig) -> Self {
        let spec = OptimSpec {
            name: "adamw".into(),
            class: "AdamW",
            algo: Algo::AdamW {
                betas: (config.beta1, config.beta2),
                eps: config.eps,
            },
            weight_decay: config.weight_decay,
            summary: vec![],
        };
        Self::build(named, &spec, &Rules::Main, &ModelLayout::default())
            .expect("the main rule needs no model layout")
    }

    /// AdamW with OpenCLIP 3.3.0's two groups (`no_wd` first, as main.py lists them) over
    /// tensors whose group and moments are given rather than derived from the tensor: `--fsdp`
    /// steps 1-D pieces of parameters, each in the group of its whole parameter, with moments that
    /// are views of its shards' own (no second copy of them is allocated). Tensors not requiring
    /// grad are left out, as in [`Optimizer::new`].
    pub fn adamw_grouped(given: Vec<GroupedParam>, config: AdamWConfig) -> Self {
        let algo = Algo::AdamW {
            betas: (config.beta1, config.beta2),
            eps: config.eps,
        };
        let group = |name: &str, weight_decay| Group {
            name: name.into(),
            weight_decay,
            lr_scale: 1.0,
            fallback: false,
        };
        let params: Vec<Param> = given
            .into_iter()
            .filter(|g| g.tensor.requires_grad())
            .map(|g| Param {
                state: match g.moments {
                    Some((m, v)) => vec![("exp_avg", m), ("exp_avg_sq", v)],
                    None => initial_state(&algo, &g.tensor, false),
                },
                name: g.name,
                tensor: g.tensor,
                group: usize::from(g.decay),
                matrix: false,
            })
            .collect();
        let device = params.first().map_or(Device::Cpu, |p| p.tensor.device());
        Self {
            name: "adamw".into(),
            algo,
            groups: vec![group("no_wd", 0.0), group("wd", config.weight_decay)],
            params,
            state_step: Tensor::zeros([], (Kind::Float, device)),
            mu_product: None,
        }
    }

    /// `spec`'s optimizer over the trainable tensors of `named`, grouped by `rules`.
    pub fn build(
        named: &[(String, Tensor)],
        spec: &OptimSpec,
        rules: &Rules,
        layout: &ModelLayout,
    ) -> Result<Self> {
        let (groups, of) = param_groups::assign(named, rules, spec.weight_decay, layout)?;
        let params: Vec<Param> = named
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .zip(of)
            .map(|((n, t), group)| {
                let matrix = matches!(spec.algo, Algo::Muon { .. })
                    && !groups[group].fallback
                    && suitable_for_muon(&t.size());
                Param {
                    name: n.clone(),
                    tensor: t.shallow_clone(),
                    group,
                    matrix,
                    state: initial_state(&spec.algo, t, matrix),
                }
            })
            .collect();
        let device = params.first().map_or(Device::Cpu, |p| p.tensor.device());
        let scalar = |v: f64| Tensor::full([], v, (Kind::Float, device));
        Ok(Self {
            name: spec.name.clone(),
            algo: spec.algo.clone(),
            groups,
            params,
            state_step: scalar(0.0),
            mu_product: matches!(spec.algo, Algo::NAdam(_)).then(|| scalar(1.0)),
        })
    }

    /// The groups as the log's first lines list them: tensors, learning-rate scale, decay.
    pub fn describe_groups(&self) -> Vec<String> {
        self.groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let (n, elements) = self
                    .params
                    .iter()
                    .filter(|p| p.group == i)
                    .fold((0, 0), |(n, e), p| (n + 1, e + p.tensor.numel()));
                format!(
                    "Parameter group {}: {}: {n} tensors ({elements} parameters), lr_scale {}, weight_decay {}{}",
                    i + 1,
                    g.name,
                    g.lr_scale,
                    g.weight_decay,
                    if g.fallback { ", AdamW fallback" } else { "" }
                )
            })
            .collect()
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

    /// One update at learning rate `lr` (each group's times its scale). Parameters without a
    /// gradient are skipped, as torch skips `p.grad is None`. With `found_inf` (f32 scalar)
    /// holding anything but 0 the step is skipped and not counted, decided on the device: the
    /// fused kernels take it, the other rules update copies written back by `torch.where`.
    ///
    /// AdamW, per element, with t the step count:
    ///
    /// ```text
    /// p  ← p·(1 − lr·wd)                       (decoupled weight decay)
    /// m  ← m + (1 − β1)·(g − m)                (lerp)
    /// v  ← β2·v + (1 − β2)·g²
    /// p  ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + eps)
    /// ```
    ///
    /// computed in f32 for every parameter dtype (bf16 weights and moments are rounded once, on
    /// store). On CUDA the fused kernel reads the step count on the device. libtorch's CPU kernel
    /// reads it with `.item()` once per tensor: `aten::_local_scalar_dense` nested under
    /// `aten::_fused_adamw_` in a profile, a read of host memory rather than a wait on a device.
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
                let _ = self.state_step.g_sub_(&inf.ne(0).to_kind(Kind::Float));
            }
        });
        let all: Vec<usize> = (0..self.params.len()).collect();
        let step = &self.state_step;
        let run = |idx: &[usize], scale: f64, f: &dyn Fn(&StepArgs) -> Result<()>| {
            let stepped = self.stepped(idx, lr * scale);
            f(&StepArgs {
                stepped: &stepped,
                step,
                found_inf,
            })
        };
        let states = |idx: &[usize], key: &str| -> Vec<&Tensor> {
            idx.iter().map(|&i| self.params[i].get(key)).collect()
        };
        let moments = |idx: &[usize]| (states(idx, "exp_avg"), states(idx, "exp_avg_sq"));
        match &self.algo {
            Algo::AdamW { betas, eps } => run(&all, 1.0, &|a| {
                let (m, v) = moments(&all);
                torch_ext::optim::fused_adamw(
                    a.stepped,
                    &m,
                    &v,
                    step,
                    (betas.0, betas.1, *eps),
                    found_inf,
                )
            }),
            Algo::NAdam(h) => run(&all, 1.0, &|a| {
                let (m, v) = moments(&all);
                algos::nadam(a, &m, &v, self.mu_product.as_ref().unwrap(), h)
            }),
            Algo::TimmNAdamW { betas, eps } => run(&all, 1.0, &|a| {
                let (m, v) = moments(&all);
                algos::timm_nadamw(a, &m, &v, (betas.0, betas.1, *eps))
            }),
            Algo::Lamb(h) => run(&all, 1.0, &|a| {
                let (m, v) = moments(&all);
                algos::lamb(a, &m, &v, h)
            }),
            Algo::Lion { betas } => run(&all, 1.0, &|a| {
                algos::lion(a, &states(&all, "exp_avg"), *betas)
            }),
            Algo::Adafactor { h, .. } => run(&all, 1.0, &|a| {
                algos::adafactor(
                    a,
                    &self.optional(&all, "exp_avg"),
                    &self.second_moments(&all, "_row", "_col"),
                    h,
                )
            }),
            Algo::AdafactorBv { h, .. } => run(&all, 1.0, &|a| {
                algos::adafactor_bv(
                    a,
                    &self.optional(&all, "exp_avg"),
                    &self.second_moments(&all, "_r", "_c"),
                    h,
                )
            }),
            Algo::Adopt(h) => run(&all, 1.0, &|a| {
                let (m, v) = moments(&all);
                algos::adopt(a, &m, &v, h)
            }),
            Algo::Sgd { momentum, nesterov } => run(&all, 1.0, &|a| {
                let bufs = if *momentum != 0.0 {
                    states(&all, "momentum_buffer")
                } else {
                    vec![]
                };
                torch_ext::optim::fused_sgd(a.stepped, &bufs, *momentum, *nesterov, found_inf)
            }),
            Algo::Muon {
                h,
                betas,
                fallback_lr_scale,
            } => {
                let (matrices, rest): (Vec<usize>, Vec<usize>) =
                    all.iter().partition(|&&i| self.params[i].matrix);
                run(&matrices, 1.0, &|a| {
                    let v = if h.adamuon.is_some() {
                        states(&matrices, "exp_avg_sq")
                    } else {
                        vec![]
                    };
                    algos::muon(a, &states(&matrices, "momentum_buffer"), &v, h)
                })?;
                let (m, v) = moments(&rest);
                let hyper = (betas.0, betas.1, h.eps);
                run(&rest, *fallback_lr_scale, &|a| match h.nesterov {
                    true => algos::timm_nadamw(a, &m, &v, hyper),
                    false => {
                        torch_ext::optim::fused_adamw(a.stepped, &m, &v, step, hyper, found_inf)
                    }
                })
            }
        }
    }

    /// Parameters `idx` at the learning rate `lr` times their group's scale, with its decay.
    fn stepped(&self, idx: &[usize], lr: f64) -> Stepped<'_> {
        let group = |i: usize| &self.groups[self.params[i].group];
        Stepped {
            params: idx.iter().map(|&i| &self.params[i].tensor).collect(),
            lr: idx.iter().map(|&i| lr * group(i).lr_scale).collect(),
            wd: idx.iter().map(|&i| group(i).weight_decay).collect(),
        }
    }

    fn optional(&self, idx: &[usize], key: &str) -> Vec<Option<&Tensor>> {
        idx.iter().map(|&i| self.params[i].find(key)).collect()
    }

    /// The Adafactors' second moments: `exp_avg_sq{row}` / `exp_avg_sq{col}` when factored.
    fn second_moments(&self, idx: &[usize], row: &str, col: &str) -> Vec<SecondMoment<'_>> {
        idx.iter()
            .map(|&i| {
                let p = &self.params[i];
                match p.find("exp_avg_sq") {
                    Some(v) => SecondMoment::Full(v),
                    None => SecondMoment::Factored {
                        dims: self.factored_dims(&p.tensor.size()).expect("factored"),
                        row: p.get(&format!("exp_avg_sq{row}")),
                        col: p.get(&format!("exp_avg_sq{col}")),
                    },
                }
            })
            .collect()
    }

    /// The (col, row) dimensions an Adafactor factors a tensor of `shape` over (timm's
    /// `_get_options` / `_factored_dims`), or None.
    fn factored_dims(&self, shape: &[i64]) -> Option<(usize, usize)> {
        factored_dims(&self.algo, shape)
    }

    /// The same update as [`Optimizer::step`] for AdamW, as a loop of single-tensor ops (~9 per
    /// parameter, torch's `_single_tensor_adamw`, and what this crate ran before the fused
    /// kernel), with the bias correction on the host. The reference `clip-tool bench-optimizer
    /// --impl loop` and the tests compare the fused step against; the trainer does not use it.
    pub fn step_loop(&mut self, lr: f64) {
        let Algo::AdamW {
            betas: (beta1, beta2),
            eps,
        } = self.algo
        else {
            panic!("step_loop is AdamW's reference loop");
        };
        let step = self.steps_taken() + 1;
        tch::no_grad(|| {
            let _ = self.state_step.g_add_scalar_(1.0);
        });
        let bias1 = 1.0 - beta1.powi(step as i32);
        let bias2_sqrt = (1.0 - beta2.powi(step as i32)).sqrt();
        tch::no_grad(|| {
            for p in &self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let g = &self.groups[p.group];
                let lr = lr * g.lr_scale;
                let mut t = p.tensor.shallow_clone();
                if g.weight_decay != 0.0 {
                    let _ = t.g_mul_scalar_(1.0 - lr * g.weight_decay);
                }
                let (mut m, mut v) = (
                    p.get("exp_avg").shallow_clone(),
                    p.get("exp_avg_sq").shallow_clone(),
                );
                let _ = m.lerp_(&grad, 1.0 - beta1);
                let _ = v.g_mul_scalar_(beta2);
                let _ = v.addcmul_(&(&grad * (1.0 - beta2)), &grad);
                let denom = v.sqrt() / bias2_sqrt + eps;
                let _ = t.addcdiv_(&(&m * (-lr / bias1)), &denom);
            }
        });
    }

    /// The optimizer steps taken (a host read of the device count: for checkpoints, not for
    /// every step).
    pub fn steps_taken(&self) -> i64 {
        self.state_step.double_value(&[]) as i64
    }

    /// The state to checkpoint: `(state.param, tensor)` for every state tensor of every
    /// parameter, and the optimizer-wide ones by name (`mu_product`).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        for p in &self.params {
            for (k, t) in &p.state {
                out.push((format!("{k}.{}", p.name), t.shallow_clone()));
            }
        }
        if let Some(mu) = &self.mu_product {
            out.push(("mu_product".into(), mu.shallow_clone()));
        }
        out
    }

    /// Restores the state saved by [`Optimizer::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)], step: i64) -> Result<()> {
        let find = |key: String| {
            tensors
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, t)| t.shallow_clone())
        };
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                for (k, t) in &mut p.state {
                    let Some(saved) = find(format!("{k}.{}", p.name)) else {
                        bail!(
                            "optimizer state has no {k} for {} (saved by another --opt?)",
                            p.name
                        );
                    };
                    if saved.size() != t.size() {
                        bail!(
                            "optimizer state {k} for {} has shape {:?}, expected {:?}",
                            p.name,
                            saved.size(),
                            t.size()
                        );
                    }
                    t.copy_(&saved);
                }
            }
            if let Some(mu) = &mut self.mu_product {
                let Some(saved) = find("mu_product".into()) else {
                    bail!("optimizer state has no mu_product (saved by another --opt?)");
                };
                mu.copy_(&saved.reshape([]));
            }
            Ok(())
        })?;
        tch::no_grad(|| {
            let _ = self.state_step.fill_(step as f64);
        });
        Ok(())
    }
}

/// timm Muon's `_is_suitable_for_muon`: at least two dimensions above 1, neither of the first
/// two 1, both sides of the (out, in·rest) matrix at least 4 and within an aspect ratio of 128.
pub fn suitable_for_muon(s: &[i64]) -> bool {
    if s.len() < 2 || s.iter().filter(|&&d| d > 1).count() < 2 || s[0] == 1 || s[1] == 1 {
        return false;
    }
    let (out, rest) = (s[0], s[1..].iter().product::<i64>());
    let (lo, hi) = (out.min(rest), out.max(rest));
    lo >= 4 && hi as f64 / lo as f64 <= 128.0
}

/// See [`Optimizer::factored_dims`].
fn factored_dims(algo: &Algo, s: &[i64]) -> Option<(usize, usize)> {
    let n = s.len();
    match algo {
        // Adafactor: the first two dimensions of a conv weight, else the last two.
        Algo::Adafactor {
            min_dim_size_to_factor: min,
            ..
        } => {
            if n > 2 && s[0] > *min && s[1] > *min {
                Some((0, 1))
            } else if n >= 2 && s[n - 2] > *min && s[n - 1] > *min {
                Some((n - 2, n - 1))
            } else {
                None
            }
        }
        // Big Vision: the two largest (by size, then index), if the smaller is large enough.
        Algo::AdafactorBv {
            min_dim_size_to_factor: min,
            ..
        } => {
            if n < 2 {
                return None;
            }
            let mut dims: Vec<(i64, usize)> = s.iter().enumerate().map(|(i, &d)| (d, i)).collect();
            dims.sort();
            let (second, first) = (dims[n - 2], dims[n - 1]);
            (s[second.1] >= *min).then_some((second.1, first.1))
        }
        _ => None,
    }
}

/// A parameter's state at the start, named as timm / torch name it.
fn initial_state(algo: &Algo, t: &Tensor, matrix: bool) -> Vec<(&'static str, Tensor)> {
    let zeros = |kind: Kind, shape: &[i64]| Tensor::zeros(shape, (kind, t.device()));
    let like = || t.zeros_like().detach();
    let size = t.size();
    let moments = || vec![("exp_avg", like()), ("exp_avg_sq", like())];
    match algo {
        Algo::AdamW { .. } | Algo::NAdam(_) | Algo::TimmNAdamW { .. } | Algo::Lamb(_) => moments(),
        Algo::Adopt(_) => moments(),
        Algo::Lion { .. } => vec![("exp_avg", like())],
        Algo::Sgd { momentum, .. } if *momentum != 0.0 => vec![("momentum_buffer", like())],
        Algo::Sgd { .. } => vec![],
        Algo::Muon { h, .. } if matrix => {
            let mut s = vec![("momentum_buffer", like())];
            if h.adamuon.is_some() {
                s.push(("exp_avg_sq", like()));
            }
            s
        }
        Algo::Muon { .. } => moments(),
        // f32 state whatever the parameter's dtype (timm casts 16-bit gradients to f32).
        Algo::Adafactor { h, .. } => {
            let mut s = vec![];
            if h.beta1.is_some() {
                s.push(("exp_avg", zeros(Kind::Float, &size)));
            }
            match factored_dims(algo, &size) {
                Some((col, row)) => {
                    let without = |d: usize| {
                        let mut v = size.clone();
                        v.remove(d);
                        v
                    };
                    s.push(("exp_avg_sq_row", zeros(Kind::Float, &without(row))));
                    s.push(("exp_avg_sq_col", zeros(Kind::Float, &without(col))));
                }
                None => s.push(("exp_avg_sq", zeros(Kind::Float, &size))),
            }
            s
        }
        Algo::AdafactorBv {
            h, momentum_dtype, ..
        } => {
            let mut s = vec![];
            match factored_dims(algo, &size) {
                Some((dc, dr)) => {
                    let one = |d: usize| {
                        let mut v = size.clone();
                        v[d] = 1;
                        v
                    };
                    s.push(("exp_avg_sq_r", zeros(t.kind(), &one(dr))));
                    s.push(("exp_avg_sq_c", zeros(t.kind(), &one(dc))));
                }
                None => s.push(("exp_avg_sq", like())),
            }
            if h.momentum.is_some() {
                s.push(("exp_avg", zeros(*momentum_dtype, &size)));
            }
            s
        }
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

#[cfg(test)]
mod tests {
    use super::suitable_for_muon;

    #[test]
    fn muon_takes_the_matrices_timm_takes() {
        assert!(suitable_for_muon(&[64, 128]));
        assert!(suitable_for_muon(&[96, 3, 4, 4]));
        assert!(!suitable_for_muon(&[4, 2048]));
        assert!(!suitable_for_muon(&[64]));
        assert!(!suitable_for_muon(&[1, 196, 768]));
        assert!(!suitable_for_muon(&[64, 1, 7, 7]));
        assert!(!suitable_for_muon(&[3, 64]));
    }
}
