//! Pinned (page-locked) host memory and copies that do not block the host, for the batches'
//! host buffers and the checkpoint snapshot. tch 0.24's `pin_memory(device)` passes the device
//! argument torch 2.11 deprecates (one warning per call) and pins by copying pageable memory;
//! these allocate pinned memory directly from torch's caching host allocator. The C++ side is
//! `src/pinned.cpp`.

use std::ffi::{c_char, c_int};

use anyhow::{anyhow, Result};
use tch::{Kind, Tensor};

use crate::{check, CTensor};

extern "C" {
    fn torch_ext_empty_pinned(
        sizes: *const i64,
        n: c_int,
        dtype: c_int,
        out: *mut CTensor,
    ) -> *mut c_char;
    fn torch_ext_pin_memory(t: CTensor, out: *mut CTensor) -> *mut c_char;
    fn torch_ext_is_pinned(t: CTensor, out: *mut c_int) -> *mut c_char;
    fn torch_ext_copy_(dst: CTensor, src: CTensor, non_blocking: c_int) -> *mut c_char;
}

/// c10::ScalarType codes (c10/core/ScalarType.h) of the kinds host buffers hold.
fn scalar_type(kind: Kind) -> Result<c_int> {
    Ok(match kind {
        Kind::Uint8 => 0,
        Kind::Int8 => 1,
        Kind::Int16 => 2,
        Kind::Int => 3,
        Kind::Int64 => 4,
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::Double => 7,
        Kind::Bool => 11,
        Kind::BFloat16 => 15,
        k => return Err(anyhow!("no pinned allocation of {k:?} tensors")),
    })
}

/// An uninitialised CPU tensor in pinned memory (`torch.empty(..., pin_memory=True)`). Fails
/// without a CUDA libtorch and device.
pub fn empty(shape: &[i64], kind: Kind) -> Result<Tensor> {
    let mut out: CTensor = std::ptr::null_mut();
    let dtype = scalar_type(kind)?;
    check(unsafe {
        torch_ext_empty_pinned(shape.as_ptr(), shape.len() as c_int, dtype, &mut out)
    })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// A pinned copy of `t` (`t.pin_memory()`; `t` itself when it is pinned already).
pub fn pin(t: &Tensor) -> Result<Tensor> {
    let mut out: CTensor = std::ptr::null_mut();
    check(unsafe { torch_ext_pin_memory(t.as_ptr() as CTensor, &mut out) })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// `t.is_pinned()`.
pub fn is_pinned(t: &Tensor) -> Result<bool> {
    let mut out = 0;
    check(unsafe { torch_ext_is_pinned(t.as_ptr() as CTensor, &mut out) })?;
    Ok(out != 0)
}

/// `dst.copy_(src, non_blocking=True)`: a copy between pinned host memory and a GPU is enqueued
/// on the current stream and returns at once — `dst` may be read only after that stream is
/// synchronised; any other copy completes before returning.
pub fn copy_non_blocking(dst: &mut Tensor, src: &Tensor) -> Result<()> {
    check(unsafe { torch_ext_copy_(dst.as_ptr() as CTensor, src.as_ptr() as CTensor, 1) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The unit tests see a libtorch without CUDA: pinned memory is refused in one error, and
    /// the copy is an ordinary one.
    #[test]
    fn copies_complete_on_the_cpu_and_pinning_needs_cuda() {
        let src = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]);
        let mut dst = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu)).transpose(0, 1);
        copy_non_blocking(&mut dst, &src).unwrap();
        assert!(dst.equal(&src));
        assert!(!is_pinned(&src).unwrap());
        assert!(empty(&[4], Kind::Float).is_err());
        assert!(empty(&[4], Kind::ComplexFloat)
            .unwrap_err()
            .to_string()
            .contains("ComplexFloat"));
    }
}
