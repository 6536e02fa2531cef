//! A CPU random generator of its own (libtorch's `at::Generator`), so draws made off the
//! training thread leave the default generator — which the step reseeds — alone. Seeded with
//! `s`, it draws what `tch::manual_seed(s)` followed by the same calls draws. The C++ side is
//! `src/generator.cpp`.

use std::ffi::{c_char, c_int, c_void};

use anyhow::Result;
use tch::Tensor;

use crate::check;

type CTensor = *mut torch_sys::C_tensor;

extern "C" {
    fn torch_ext_generator_new(seed: i64, out: *mut *mut c_void) -> *mut c_char;
    fn torch_ext_generator_free(gen: *mut c_void);
    fn torch_ext_generator_randn(
        gen: *mut c_void,
        sizes: *const i64,
        n: c_int,
        out: *mut CTensor,
    ) -> *mut c_char;
    fn torch_ext_generator_randint(
        gen: *mut c_void,
        low: i64,
        high: i64,
        sizes: *const i64,
        n: c_int,
        out: *mut CTensor,
    ) -> *mut c_char;
}

pub struct Generator(*mut c_void);

// The generator is owned by one thread at a time (it moves with the work that draws from it).
unsafe impl Send for Generator {}

impl Generator {
    pub fn new(seed: i64) -> Result<Self> {
        let mut out = std::ptr::null_mut();
        check(unsafe { torch_ext_generator_new(seed, &mut out) })?;
        Ok(Generator(out))
    }

    /// f32 N(0, 1) of `shape` on the CPU (`torch.randn`).
    pub fn randn(&mut self, shape: &[i64]) -> Result<Tensor> {
        let mut out: CTensor = std::ptr::null_mut();
        check(unsafe {
            torch_ext_generator_randn(self.0, shape.as_ptr(), shape.len() as c_int, &mut out)
        })?;
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// i64 uniform in `[low, high)` of `shape` on the CPU (`torch.randint`).
    pub fn randint(&mut self, low: i64, high: i64, shape: &[i64]) -> Result<Tensor> {
        let mut out: CTensor = std::ptr::null_mut();
        check(unsafe {
            torch_ext_generator_randint(
                self.0,
                low,
                high,
                shape.as_ptr(),
                shape.len() as c_int,
                &mut out,
            )
        })?;
        Ok(unsafe { Tensor::from_ptr(out) })
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        unsafe { torch_ext_generator_free(self.0) }
    }
}
