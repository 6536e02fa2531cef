//! A tensor's memory taken away and given back while the tensor, every view of its storage and
//! autograd's saved copies of them keep their shape, dtype and place (the C++ side is
//! `src/storage.cpp`): FSDP frees a unit's gathered parameters after its forward and fills the
//! same storage again before its backward (torch's FSDP does `untyped_storage().resize_(0)`).
//! A released tensor has no memory behind it (a null data pointer): it must not be read until
//! filled again, as with torch's FSDP.

use std::ffi::{c_char, c_int};

use anyhow::Result;
use tch::Tensor;

use crate::{check, CTensor};

extern "C" {
    fn torch_ext_storage_nbytes(t: CTensor, out: *mut usize) -> *mut c_char;
    fn torch_ext_storage_release(t: CTensor) -> *mut c_char;
    fn torch_ext_storage_allocate(dst: CTensor, nbytes: usize) -> *mut c_char;
    fn torch_ext_storage_adopt(
        dst: CTensor,
        src: CTensor,
        nbytes: usize,
        moved: *mut c_int,
    ) -> *mut c_char;
}

/// The bytes of memory `t`'s storage holds (0 once released).
pub fn nbytes(t: &Tensor) -> Result<usize> {
    let mut n = 0;
    check(unsafe { torch_ext_storage_nbytes(t.as_ptr() as CTensor, &mut n) })?;
    Ok(n)
}

/// Frees the memory of `t`'s storage (for every tensor sharing it).
pub fn release(t: &Tensor) -> Result<()> {
    check(unsafe { torch_ext_storage_release(t.as_ptr() as CTensor) })
}

/// Fills `dst`'s storage (released, or not) with `src`'s values: `dst` must be a contiguous
/// tensor covering its whole storage, `src` of its shape and dtype. Zero copy when `src` owns
/// its memory alone (a collective's fresh result): the memory moves into `dst`'s storage and
/// `src` is left without any; else new memory and a copy.
pub fn fill_from(dst: &Tensor, src: Tensor) -> Result<()> {
    let bytes = dst.numel() * dst.kind().elt_size_in_bytes();
    let mut moved: c_int = 0;
    check(unsafe {
        torch_ext_storage_adopt(
            dst.as_ptr() as CTensor,
            src.as_ptr() as CTensor,
            bytes,
            &mut moved,
        )
    })?;
    if moved == 0 {
        check(unsafe { torch_ext_storage_allocate(dst.as_ptr() as CTensor, bytes) })?;
        tch::no_grad(|| dst.shallow_clone().f_copy_(&src))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn released_views_fail_and_see_the_memory_given_back() {
        let full = Tensor::arange(6, (Kind::Float, Device::Cpu));
        let a = full.narrow(0, 2, 4).view([2, 2]);
        release(&full).unwrap();
        assert_eq!(nbytes(&a).unwrap(), 0);
        assert_eq!(a.size(), vec![2, 2]);
        // A fresh tensor's memory moves in: the view reads it at its own offset.
        let fresh = Tensor::arange(6, (Kind::Float, Device::Cpu)) * 10.0;
        fill_from(&full, fresh.shallow_clone()).unwrap();
        assert_eq!(nbytes(&fresh).unwrap(), 0, "moved, not copied");
        assert_eq!(
            Vec::<f32>::try_from(&a.flatten(0, 1)).unwrap(),
            vec![20., 30., 40., 50.]
        );
        // A view of a larger tensor cannot give its memory away: it is copied.
        release(&full).unwrap();
        let big = Tensor::ones([8], (Kind::Float, Device::Cpu));
        fill_from(&full, big.narrow(0, 1, 6)).unwrap();
        assert_eq!(nbytes(&big).unwrap(), 32);
        assert_eq!(a.sum(Kind::Float).double_value(&[]), 4.0);
    }
}
