//! libtorch's profiler (Kineto) from Rust, for clip-train's `--profile-steps`: start, stop with
//! the Chrome trace written as `torch.profiler.profile().export_chrome_trace` writes it
//! (`traceEvents`, aten op names, CUDA kernels on a GPU), and named ranges
//! (`torch.profiler.record_function`). The C++ side is `src/profiler.cpp`.

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::Path;

use anyhow::{Context, Result};
use tch::Device;

use crate::check;

extern "C" {
    fn torch_ext_profiler_start(cuda: c_int) -> *mut c_char;
    fn torch_ext_profiler_stop(path: *const c_char) -> *mut c_char;
    fn torch_ext_range_start(name: *const c_char, out: *mut *mut c_void) -> *mut c_char;
    fn torch_ext_range_end(range: *mut c_void) -> *mut c_char;
}

/// A running profiler on the calling thread (and the autograd threads its work starts).
/// [`Profiler::save`] stops it and writes the trace; dropping it unsaved stops it too.
pub struct Profiler {
    running: bool,
}

impl Profiler {
    /// Starts recording: CPU ops, and CUDA kernels when `device` is a GPU.
    pub fn start(device: Device) -> Result<Self> {
        let cuda = matches!(device, Device::Cuda(_)) as c_int;
        check(unsafe { torch_ext_profiler_start(cuda) }).context("starting libtorch's profiler")?;
        Ok(Profiler { running: true })
    }

    /// Stops recording and writes the Chrome trace to `path`.
    pub fn save(mut self, path: &Path) -> Result<()> {
        self.running = false;
        let c = CString::new(path.as_os_str().as_encoded_bytes())?;
        check(unsafe { torch_ext_profiler_stop(c.as_ptr()) })
            .with_context(|| format!("writing the profiler trace {}", path.display()))
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if self.running {
            // A run that fails while profiling: the trace is not wanted, the profiler must stop.
            let _ = check(unsafe { torch_ext_profiler_stop(c"/dev/null".as_ptr()) });
        }
    }
}

/// A named range in the profile while it lives (`record_function(name)`); nothing when no
/// profiler is running.
pub struct Range(*mut c_void);

impl Range {
    pub fn new(name: &str) -> Self {
        let mut out = std::ptr::null_mut();
        // A name with a NUL byte or a failing RecordFunction only loses the range.
        if let Ok(c) = CString::new(name) {
            let _ = check(unsafe { torch_ext_range_start(c.as_ptr(), &mut out) });
        }
        Range(out)
    }
}

impl Drop for Range {
    fn drop(&mut self) {
        if !self.0.is_null() {
            let _ = check(unsafe { torch_ext_range_end(self.0) });
        }
    }
}
