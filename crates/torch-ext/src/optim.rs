//! The optimizer's libtorch calls (`src/optim.cpp`): AdamW's fused kernel, gradient clipping
//! with `_foreach_norm`, the loss scaler's unscale-and-check, gradients set to none, and the CUDA
//! backend flags OpenCLIP sets. Each issues a few ATen ops per (device, dtype) group, not per
//! tensor, and none reads a value back to the host.

use std::ffi::{c_char, c_int};

use anyhow::Result;
use tch::Tensor;

use crate::{check, CTensor};

extern "C" {
    fn torch_ext_fused_adamw(
        params: *const CTensor,
        exp_avgs: *const CTensor,
        exp_avg_sqs: *const CTensor,
        decay: *const c_int,
        n: c_int,
        state_step: CTensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        found_inf: CTensor,
    ) -> *mut c_char;
    fn torch_ext_clip_grad_norm(
        params: *const CTensor,
        n: c_int,
        max_norm: f64,
        total: *mut CTensor,
    ) -> *mut c_char;
    fn torch_ext_amp_unscale(
        params: *const CTensor,
        n: c_int,
        inv_scale: CTensor,
        found_inf: CTensor,
    ) -> *mut c_char;
    fn torch_ext_set_grads_to_none(params: *const CTensor, n: c_int) -> *mut c_char;
    fn torch_ext_set_cuda_backend(
        cudnn_benchmark: c_int,
        tf32: c_int,
        deterministic: c_int,
    ) -> *mut c_char;
    fn torch_ext_get_cuda_backend(
        cudnn_benchmark: *mut c_int,
        tf32_cublas: *mut c_int,
        tf32_cudnn: *mut c_int,
        deterministic: *mut c_int,
    ) -> *mut c_char;
}

fn ptrs<'a>(ts: impl IntoIterator<Item = &'a Tensor>) -> Vec<CTensor> {
    ts.into_iter().map(|t| t.as_ptr() as CTensor).collect()
}

/// One parameter as the fused AdamW sees it.
pub struct AdamWTensor<'a> {
    pub param: &'a Tensor,
    pub exp_avg: &'a Tensor,
    pub exp_avg_sq: &'a Tensor,
    /// In the weight-decay group.
    pub decay: bool,
}

/// AdamW's hyper-parameters for [`fused_adamw`].
#[derive(Debug, Clone, Copy)]
pub struct AdamWHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Applied to the tensors with `decay` only.
    pub weight_decay: f64,
    pub eps: f64,
}

/// `torch._fused_adamw_` over `tensors` (those without a gradient skipped, as torch skips them),
/// one kernel per (decay group, device, dtype). `state_step` (f32 scalar on the parameters'
/// device) must already count this step. With `found_inf` (f32 scalar) holding 1, nothing moves.
pub fn fused_adamw(
    tensors: &[AdamWTensor],
    state_step: &Tensor,
    h: AdamWHyper,
    found_inf: Option<&Tensor>,
) -> Result<()> {
    let params = ptrs(tensors.iter().map(|t| t.param));
    let ms = ptrs(tensors.iter().map(|t| t.exp_avg));
    let vs = ptrs(tensors.iter().map(|t| t.exp_avg_sq));
    let decay: Vec<c_int> = tensors.iter().map(|t| c_int::from(t.decay)).collect();
    let inf = found_inf.map_or(std::ptr::null_mut(), |t| t.as_ptr() as CTensor);
    check(unsafe {
        torch_ext_fused_adamw(
            params.as_ptr(),
            ms.as_ptr(),
            vs.as_ptr(),
            decay.as_ptr(),
            params.len() as c_int,
            state_step.as_ptr() as CTensor,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
            inf,
        )
    })
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm, 2.0, foreach=True)` over the gradients of
/// `params`: returns the total norm before clipping, an f32 scalar left on the device.
pub fn clip_grad_norm(params: &[&Tensor], max_norm: f64) -> Result<Tensor> {
    let ps = ptrs(params.iter().copied());
    let mut out: CTensor = std::ptr::null_mut();
    check(unsafe { torch_ext_clip_grad_norm(ps.as_ptr(), ps.len() as c_int, max_norm, &mut out) })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// `GradScaler.unscale_`'s kernel: multiplies the gradients of `params` by `inv_scale` and sets
/// `found_inf` (f32 scalar) to 1 when any of them holds an inf or NaN.
pub fn amp_unscale(params: &[&Tensor], inv_scale: &Tensor, found_inf: &Tensor) -> Result<()> {
    let ps = ptrs(params.iter().copied());
    check(unsafe {
        torch_ext_amp_unscale(
            ps.as_ptr(),
            ps.len() as c_int,
            inv_scale.as_ptr() as CTensor,
            found_inf.as_ptr() as CTensor,
        )
    })
}

/// `zero_grad(set_to_none=True)`: drops the gradients of `params` (their memory is freed).
pub fn set_grads_to_none(params: &[&Tensor]) -> Result<()> {
    let ps = ptrs(params.iter().copied());
    check(unsafe { torch_ext_set_grads_to_none(ps.as_ptr(), ps.len() as c_int) })
}

/// libtorch's process-wide CUDA flags that OpenCLIP sets, and the deterministic mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaBackend {
    /// `torch.backends.cudnn.benchmark`.
    pub cudnn_benchmark: bool,
    /// `torch.backends.cuda.matmul.allow_tf32`.
    pub tf32_matmul: bool,
    /// `torch.backends.cudnn.allow_tf32`.
    pub tf32_cudnn: bool,
    /// `torch.backends.cudnn.deterministic` and `torch.use_deterministic_algorithms(True,
    /// warn_only=True)`.
    pub deterministic: bool,
}

/// Sets cuDNN's autotuner, TF32 (for both cuBLAS matmuls and cuDNN convolutions) and the
/// deterministic mode (cuDNN's and libtorch's deterministic algorithms, warning where an op has
/// none) in libtorch's global context.
pub fn set_cuda_backend(flags: CudaBackend) -> Result<()> {
    // One TF32 switch for both, as OpenCLIP's flags leave them equal.
    debug_assert_eq!(flags.tf32_matmul, flags.tf32_cudnn);
    check(unsafe {
        torch_ext_set_cuda_backend(
            c_int::from(flags.cudnn_benchmark),
            c_int::from(flags.tf32_matmul),
            c_int::from(flags.deterministic),
        )
    })
}

/// The flags as libtorch's global context holds them.
pub fn cuda_backend() -> Result<CudaBackend> {
    let (mut b, mut m, mut c, mut d) = (0, 0, 0, 0);
    check(unsafe { torch_ext_get_cuda_backend(&mut b, &mut m, &mut c, &mut d) })?;
    Ok(CudaBackend {
        cudnn_benchmark: b != 0,
        tf32_matmul: m != 0,
        tf32_cudnn: c != 0,
        deterministic: d != 0,
    })
}
