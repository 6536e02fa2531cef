//! The optimizers besides AdamW and SGD (`src/optim_algos.cpp`): timm 1.0's Lamb, Lion,
//! Adafactor, Adafactor (Big Vision), ADOPT, NAdamW and Muon / AdaMuon, and torch's NAdam. Each
//! call steps every parameter given; the step count is a device scalar and a step with
//! `found_inf` ≠ 0 leaves everything as it was, decided on the device (see the C++ file).

use std::ffi::{c_char, c_int};

use anyhow::Result;
use tch::Tensor;

use crate::optim::{ptr_or_null, ptrs, Stepped};
use crate::{check, CTensor};

#[repr(C)]
struct StepCommon {
    params: *const CTensor,
    n: c_int,
    lr: *const f64,
    wd: *const f64,
    step: CTensor,
    found_inf: CTensor,
}

#[repr(C)]
struct CLamb {
    beta1: f64,
    beta2: f64,
    eps: f64,
    max_grad_norm: f64,
    bias_correction: c_int,
    grad_averaging: c_int,
    trust_clip: c_int,
    always_adapt: c_int,
    decoupled: c_int,
}

#[repr(C)]
struct CLion {
    beta1: f64,
    beta2: f64,
}

#[repr(C)]
struct CAdafactor {
    eps: f64,
    clip_threshold: f64,
    decay_rate: f64,
    beta1: f64,
}

#[repr(C)]
struct CAdafactorBv {
    decay_rate: f64,
    beta2_cap: f64,
    momentum: f64,
    eps: f64,
    clipping_threshold: f64,
    decay_offset: c_int,
    unscaled_wd: c_int,
}

#[repr(C)]
struct CAdopt {
    beta1: f64,
    beta2: f64,
    eps: f64,
    clip_exp: f64,
    decoupled: c_int,
}

#[repr(C)]
struct CNAdamW {
    beta1: f64,
    beta2: f64,
    eps: f64,
}

#[repr(C)]
struct CNAdam {
    beta1: f64,
    beta2: f64,
    eps: f64,
    momentum_decay: f64,
    decoupled: c_int,
}

#[repr(C)]
struct CMuon {
    momentum: f64,
    eps: f64,
    safety_factor: f64,
    beta2: f64,
    coefficients: *const f64,
    ns_steps: c_int,
    nesterov: c_int,
    adjust_lr_fn: c_int,
    batched: c_int,
    normalize_spatial: c_int,
    scale_eps: c_int,
    adamuon: c_int,
}

extern "C" {
    fn torch_ext_lamb(
        c: *const StepCommon,
        exp_avg: *const CTensor,
        exp_avg_sq: *const CTensor,
        h: *const CLamb,
    ) -> *mut c_char;
    fn torch_ext_lion(
        c: *const StepCommon,
        exp_avg: *const CTensor,
        h: *const CLion,
    ) -> *mut c_char;
    fn torch_ext_adafactor(
        c: *const StepCommon,
        exp_avg: *const CTensor,
        exp_avg_sq: *const CTensor,
        row: *const CTensor,
        col: *const CTensor,
        dims: *const c_int,
        h: *const CAdafactor,
    ) -> *mut c_char;
    fn torch_ext_adafactor_bv(
        c: *const StepCommon,
        exp_avg: *const CTensor,
        exp_avg_sq: *const CTensor,
        row: *const CTensor,
        col: *const CTensor,
        dims: *const c_int,
        h: *const CAdafactorBv,
    ) -> *mut c_char;
    fn torch_ext_adopt(
        c: *const StepCommon,
        exp_avg: *const CTensor,
        exp_avg_sq: *const CTensor,
        h: *const CAdopt,
    ) -> *mut c_char;
    fn torch_ext_timm_nadamw(
        c: *const StepCommon,
        exp_avg: *const CTensor,
        exp_avg_sq: *const CTensor,
        h: *const CNAdamW,
    ) -> *mut c_char;
    fn torch_ext_nadam(
        c: *const StepCommon,
        exp_avg: *const CTensor,
        exp_avg_sq: *const CTensor,
        mu_product: CTensor,
        h: *const CNAdam,
    ) -> *mut c_char;
    fn torch_ext_muon(
        c: *const StepCommon,
        momentum_buffer: *const CTensor,
        exp_avg_sq: *const CTensor,
        h: *const CMuon,
    ) -> *mut c_char;
}

/// What every call shares: the parameters with their learning rates and weight decays, the
/// step count (f32 scalar on their device, this step counted unless skipped) and `found_inf`.
pub struct StepArgs<'a> {
    pub stepped: &'a Stepped<'a>,
    pub step: &'a Tensor,
    pub found_inf: Option<&'a Tensor>,
}

/// The C arguments of `a`; the pointers borrow `params`.
fn common(a: &StepArgs, params: &[CTensor]) -> StepCommon {
    let s = a.stepped;
    assert!(s.lr.len() == params.len() && s.wd.len() == params.len());
    StepCommon {
        params: params.as_ptr(),
        n: params.len() as c_int,
        lr: s.lr.as_ptr(),
        wd: s.wd.as_ptr(),
        step: a.step.as_ptr() as CTensor,
        found_inf: ptr_or_null(a.found_inf),
    }
}

/// One state tensor per parameter, in parameter order.
fn states(ts: &[&Tensor], n: usize) -> Vec<CTensor> {
    assert_eq!(ts.len(), n, "one state tensor per parameter");
    ptrs(ts.iter().copied())
}

/// Optional state tensors (null where absent).
fn optional_states(ts: &[Option<&Tensor>], n: usize) -> Vec<CTensor> {
    assert_eq!(ts.len(), n, "one state slot per parameter");
    ts.iter().map(|t| ptr_or_null(*t)).collect()
}

/// timm `Lamb`'s settings (`lamb`: coupled decay; `lambw`: `decoupled_decay`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lamb {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// The global gradient norm is divided down to this (None: not clipped).
    pub max_grad_norm: Option<f64>,
    pub bias_correction: bool,
    pub grad_averaging: bool,
    pub trust_clip: bool,
    pub always_adapt: bool,
    pub decoupled: bool,
}

/// One timm Lamb step.
pub fn lamb(a: &StepArgs, exp_avg: &[&Tensor], exp_avg_sq: &[&Tensor], h: &Lamb) -> Result<()> {
    let params = ptrs(a.stepped.params.iter().copied());
    let (m, v) = (
        states(exp_avg, params.len()),
        states(exp_avg_sq, params.len()),
    );
    let c = CLamb {
        beta1: h.beta1,
        beta2: h.beta2,
        eps: h.eps,
        max_grad_norm: h.max_grad_norm.unwrap_or(-1.0),
        bias_correction: h.bias_correction.into(),
        grad_averaging: h.grad_averaging.into(),
        trust_clip: h.trust_clip.into(),
        always_adapt: h.always_adapt.into(),
        decoupled: h.decoupled.into(),
    };
    check(unsafe { torch_ext_lamb(&common(a, &params), m.as_ptr(), v.as_ptr(), &c) })
}

/// One timm Lion step (betas `(beta1, beta2)`).
pub fn lion(a: &StepArgs, exp_avg: &[&Tensor], (beta1, beta2): (f64, f64)) -> Result<()> {
    let params = ptrs(a.stepped.params.iter().copied());
    let m = states(exp_avg, params.len());
    let c = CLion { beta1, beta2 };
    check(unsafe { torch_ext_lion(&common(a, &params), m.as_ptr(), &c) })
}

/// A second moment per parameter for the Adafactors: factored over dimensions `(col, row)` (two
/// reduced vectors) or whole.
pub enum SecondMoment<'a> {
    Factored {
        dims: (usize, usize),
        row: &'a Tensor,
        col: &'a Tensor,
    },
    Full(&'a Tensor),
}

/// The C arguments of the Adafactors' state: exp_avg_sq, row, col and the dims.
fn second_moments(ts: &[SecondMoment]) -> (Vec<CTensor>, Vec<CTensor>, Vec<CTensor>, Vec<c_int>) {
    let mut out = (vec![], vec![], vec![], vec![]);
    for t in ts {
        match t {
            SecondMoment::Factored { dims, row, col } => {
                out.0.push(std::ptr::null_mut());
                out.1.push(row.as_ptr() as CTensor);
                out.2.push(col.as_ptr() as CTensor);
                out.3.extend([dims.0 as c_int, dims.1 as c_int]);
            }
            SecondMoment::Full(v) => {
                out.0.push(v.as_ptr() as CTensor);
                out.1.push(std::ptr::null_mut());
                out.2.push(std::ptr::null_mut());
                out.3.extend([-1, -1]);
            }
        }
    }
    out
}

/// timm `Adafactor`'s settings with an external learning rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adafactor {
    pub eps: f64,
    pub clip_threshold: f64,
    pub decay_rate: f64,
    /// The first moment's beta (None: no first moment).
    pub beta1: Option<f64>,
}

/// One timm Adafactor step; `exp_avg[i]` present exactly with `beta1`.
pub fn adafactor(
    a: &StepArgs,
    exp_avg: &[Option<&Tensor>],
    second: &[SecondMoment],
    h: &Adafactor,
) -> Result<()> {
    let params = ptrs(a.stepped.params.iter().copied());
    let m = optional_states(exp_avg, params.len());
    let (v, row, col, dims) = second_moments(second);
    assert_eq!(v.len(), params.len());
    let c = CAdafactor {
        eps: h.eps,
        clip_threshold: h.clip_threshold,
        decay_rate: h.decay_rate,
        beta1: h.beta1.unwrap_or(-1.0),
    };
    check(unsafe {
        torch_ext_adafactor(
            &common(a, &params),
            m.as_ptr(),
            v.as_ptr(),
            row.as_ptr(),
            col.as_ptr(),
            dims.as_ptr(),
            &c,
        )
    })
}

/// timm `AdafactorBigVision`'s settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdafactorBv {
    pub decay_rate: f64,
    pub decay_offset: i64,
    pub beta2_cap: f64,
    pub momentum: Option<f64>,
    /// None: 1e-30 (1e-7 for fp16 gradients).
    pub eps: Option<f64>,
    pub clipping_threshold: Option<f64>,
    pub unscaled_wd: bool,
}

/// One timm AdafactorBigVision step; `exp_avg[i]` (in the momentum dtype) present exactly
/// with `momentum`.
pub fn adafactor_bv(
    a: &StepArgs,
    exp_avg: &[Option<&Tensor>],
    second: &[SecondMoment],
    h: &AdafactorBv,
) -> Result<()> {
    let params = ptrs(a.stepped.params.iter().copied());
    let m = optional_states(exp_avg, params.len());
    let (v, row, col, dims) = second_moments(second);
    assert_eq!(v.len(), params.len());
    let c = CAdafactorBv {
        decay_rate: h.decay_rate,
        beta2_cap: h.beta2_cap,
        momentum: h.momentum.unwrap_or(-1.0),
        eps: h.eps.unwrap_or(-1.0),
        clipping_threshold: h.clipping_threshold.unwrap_or(-1.0),
        decay_offset: h.decay_offset as c_int,
        unscaled_wd: h.unscaled_wd.into(),
    };
    check(unsafe {
        torch_ext_adafactor_bv(
            &common(a, &params),
            m.as_ptr(),
            v.as_ptr(),
            row.as_ptr(),
            col.as_ptr(),
            dims.as_ptr(),
            &c,
        )
    })
}

/// timm `Adopt`'s settings (`adoptw`: `decoupled`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adopt {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub clip_exp: Option<f64>,
    pub decoupled: bool,
}

/// One timm ADOPT step.
pub fn adopt(a: &StepArgs, exp_avg: &[&Tensor], exp_avg_sq: &[&Tensor], h: &Adopt) -> Result<()> {
    let params = ptrs(a.stepped.params.iter().copied());
    let (m, v) = (
        states(exp_avg, params.len()),
        states(exp_avg_sq, params.len()),
    );
    let c = CAdopt {
        beta1: h.beta1,
        beta2: h.beta2,
        eps: h.eps,
        clip_exp: h.clip_exp.unwrap_or(-1.0),
        decoupled: h.decoupled.into(),
    };
    check(unsafe { torch_ext_adopt(&common(a, &params), m.as_ptr(), v.as_ptr(), &c) })
}

/// One timm NAdamW step (betas and eps).
pub fn timm_nadamw(
    a: &StepArgs,
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    (beta1, beta2, eps): (f64, f64, f64),
) -> Result<()> {
    let params = ptrs(a.stepped.params.iter().copied());
    let (m, v) = (
        states(exp_avg, params.len()),
        states(exp_avg_sq, params.len()),
    );
    let c = CNAdamW { beta1, beta2, eps };
    check(unsafe { torch_ext_timm_nadamw(&common(a, &params), m.as_ptr(), v.as_ptr(), &c) })
}

/// `torch.optim.NAdam`'s settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NAdam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub momentum_decay: f64,
    pub decoupled_weight_decay: bool,
}

/// One torch NAdam step through foreach ops; `mu_product` (f32 scalar on the device) is the
/// momentum schedule's product so far, updated here.
pub fn nadam(
    a: &StepArgs,
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    mu_product: &Tensor,
    h: &NAdam,
) -> Result<()> {
    let params = ptrs(a.stepped.params.iter().copied());
    let (m, v) = (
        states(exp_avg, params.len()),
        states(exp_avg_sq, params.len()),
    );
    let c = CNAdam {
        beta1: h.beta1,
        beta2: h.beta2,
        eps: h.eps,
        momentum_decay: h.momentum_decay,
        decoupled: h.decoupled_weight_decay.into(),
    };
    check(unsafe {
        torch_ext_nadam(
            &common(a, &params),
            m.as_ptr(),
            v.as_ptr(),
            mu_product.as_ptr() as CTensor,
            &c,
        )
    })
}

/// How Muon scales a matrix's learning rate by its shape (timm's `adjust_lr_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjustLr {
    None,
    Original,
    MatchRmsAdamW,
    RmsToRms,
    /// AdaMuon only.
    RsqrtIn,
}

/// timm `Muon`'s settings for the matrices it orthogonalises.
#[derive(Debug, Clone, PartialEq)]
pub struct Muon {
    pub momentum: f64,
    pub nesterov: bool,
    pub eps: f64,
    pub safety_factor: f64,
    /// (a, b, c) per Newton–Schulz step.
    pub coefficients: Vec<(f64, f64, f64)>,
    pub adjust_lr: AdjustLr,
    /// `conv_mode="batched"` (else flatten).
    pub batched: bool,
    pub normalize_spatial: bool,
    pub scale_eps: bool,
    /// AdaMuon, with its second moment's beta.
    pub adamuon: Option<f64>,
}

/// One Muon / AdaMuon step of the orthogonalised matrices; `exp_avg_sq` only for AdaMuon.
pub fn muon(
    a: &StepArgs,
    momentum_buffer: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    h: &Muon,
) -> Result<()> {
    let params = ptrs(a.stepped.params.iter().copied());
    let bufs = states(momentum_buffer, params.len());
    let v = match h.adamuon {
        Some(_) => states(exp_avg_sq, params.len()),
        None => vec![std::ptr::null_mut(); params.len()],
    };
    let coefficients: Vec<f64> = h
        .coefficients
        .iter()
        .flat_map(|&(a, b, c)| [a, b, c])
        .collect();
    let c = CMuon {
        momentum: h.momentum,
        eps: h.eps,
        safety_factor: h.safety_factor,
        beta2: h.adamuon.unwrap_or(0.0),
        coefficients: coefficients.as_ptr(),
        ns_steps: h.coefficients.len() as c_int,
        nesterov: h.nesterov.into(),
        adjust_lr_fn: match h.adjust_lr {
            AdjustLr::None => 0,
            AdjustLr::Original => 1,
            AdjustLr::MatchRmsAdamW => 2,
            AdjustLr::RmsToRms => 3,
            AdjustLr::RsqrtIn => 4,
        },
        batched: h.batched.into(),
        normalize_spatial: h.normalize_spatial.into(),
        scale_eps: h.scale_eps.into(),
        adamuon: h.adamuon.is_some().into(),
    };
    check(unsafe { torch_ext_muon(&common(a, &params), bufs.as_ptr(), v.as_ptr(), &c) })
}
