//! Finiteness on the device (`src/finite.cpp`): the gradients' global norm when nothing clips
//! them (a step whose norm is not finite is skipped), and every tensor's norm at once (a
//! checkpoint is written only from finite tensors). A few ATen ops per (device, dtype) group,
//! nothing read back: the caller decides when to read.

use std::ffi::{c_char, c_int};

use anyhow::Result;
use tch::Tensor;

use crate::{check, CTensor};

extern "C" {
    fn torch_ext_grad_norm(params: *const CTensor, n: c_int, total: *mut CTensor) -> *mut c_char;
    fn torch_ext_norms(ts: *const CTensor, n: c_int, ord: f64, out: *mut CTensor) -> *mut c_char;
}

fn ptrs<'a>(ts: impl IntoIterator<Item = &'a Tensor>) -> Vec<CTensor> {
    ts.into_iter().map(|t| t.as_ptr() as CTensor).collect()
}

/// The total 2-norm of the gradients of `params` — the norm
/// [`crate::optim::clip_grad_norm`] returns, computed the same way — without scaling them: an
/// f32 scalar on the device (0 when none has a gradient).
pub fn grad_norm(params: &[&Tensor]) -> Result<Tensor> {
    let ps = ptrs(params.iter().copied());
    let mut out: CTensor = std::ptr::null_mut();
    check(unsafe { torch_ext_grad_norm(ps.as_ptr(), ps.len() as c_int, &mut out) })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Which norm [`norms`] takes of each tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// The 2-norm: fast everywhere, but it overflows to inf on finite elements beyond ~1e19 (f32,
    /// bf16), so a finite one proves a tensor finite and an infinite one does not prove it is not.
    Two,
    /// The largest magnitude: exact (inf or NaN only for a tensor holding one), but on the CPU
    /// tens of times slower than the 2-norm.
    Max,
}

/// Each tensor's norm (floating tensors only), as an f32 vector in the order given, on the first
/// tensor's device (empty for none). A tensor holding a NaN or an inf has a NaN or an inf norm.
pub fn norms(ts: &[&Tensor], norm: Norm) -> Result<Tensor> {
    let ps = ptrs(ts.iter().copied());
    let ord = match norm {
        Norm::Two => 2.0,
        Norm::Max => f64::INFINITY,
    };
    let mut out: CTensor = std::ptr::null_mut();
    check(unsafe { torch_ext_norms(ps.as_ptr(), ps.len() as c_int, ord, &mut out) })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn finite(ts: &[&Tensor], norm: Norm) -> Vec<bool> {
        let n = norms(ts, norm).unwrap();
        Vec::<bool>::try_from(n.isfinite()).unwrap()
    }

    #[test]
    fn norms_see_one_bad_element_in_any_dtype_in_order() {
        let f32s = Tensor::ones([5], (Kind::Float, Device::Cpu));
        let bf16 = Tensor::ones([3, 2], (Kind::BFloat16, Device::Cpu));
        assert!(finite(&[], Norm::Two).is_empty());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for kind in [Kind::Float, Kind::BFloat16, Kind::Double] {
                let t = Tensor::zeros([7], (kind, Device::Cpu));
                let _ = t.get(3).fill_(bad);
                for norm in [Norm::Two, Norm::Max] {
                    let got = finite(&[&f32s, &t, &bf16, &f32s], norm);
                    assert_eq!(
                        got,
                        [true, false, true, true],
                        "{bad} in {kind:?}, {norm:?}"
                    );
                }
            }
        }
        // Finite but far beyond sqrt(f32::MAX): the 2-norm overflows, the max-norm does not.
        let huge = Tensor::full([4], 3e38, (Kind::Float, Device::Cpu));
        assert_eq!(finite(&[&huge], Norm::Two), [false]);
        assert_eq!(finite(&[&huge], Norm::Max), [true]);
        let n = norms(&[&f32s, &bf16], Norm::Max).unwrap();
        assert_eq!(Vec::<f32>::try_from(n).unwrap(), [1.0, 1.0]);
    }

    #[test]
    fn grad_norm_is_clip_grad_norms_total_and_leaves_the_gradients() {
        // Gradients [3, 4] (f32) and [12] (bf16): norms 5 and 12, exact in either dtype; total 13.
        let ws: Vec<Tensor> = [(Kind::Float, vec![3.0, 4.0]), (Kind::BFloat16, vec![12.0])]
            .iter()
            .map(|(k, g)| {
                let w = Tensor::zeros([g.len() as i64], (*k, Device::Cpu)).set_requires_grad(true);
                (&w * Tensor::from_slice(g)).sum(Kind::Float).backward();
                w
            })
            .collect();
        let refs: Vec<&Tensor> = ws.iter().collect();
        let total = grad_norm(&refs).unwrap().double_value(&[]);
        assert_eq!(total, 13.0);
        assert_eq!(ws[0].grad().double_value(&[1]), 4.0);
        let clipped = crate::optim::clip_grad_norm(&refs, 1e9).unwrap();
        assert_eq!(clipped.double_value(&[]), total);
        let _ = ws[1].grad().get(0).fill_(f64::NAN);
        assert!(grad_norm(&refs).unwrap().double_value(&[]).is_nan());
        let none = Tensor::zeros([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        assert_eq!(grad_norm(&[&none]).unwrap().double_value(&[]), 0.0);
    }
}
