//! The libtorch calls tch 0.24 does not bind, through a small C++ shim (`src/shim.cpp`):
//! autocast with a chosen dtype (tch's is fp16-only), gradient checkpointing (a custom autograd
//! function that recomputes a Rust closure in backward), and — in Rust, see [`pickle`] —
//! loading torch.save'd dicts such as OpenCLIP's `epoch_N.pt` (tch only reads plain dicts);
//! CUDA streams and events ([`cuda`]; torch's current stream is the one NCCL runs on); and pinned
//! host memory allocated as such, with copies that do not block the host ([`pinned`]).

pub mod cuda;
pub mod finite;
pub mod generator;
pub mod grad_hooks;
pub mod optim;
pub mod optim_algos;
pub mod pickle;
pub mod pinned;
pub mod profiler;
pub mod storage;

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;

use anyhow::{anyhow, Result};
use tch::{Device, Kind, Tensor};

pub(crate) type CTensor = *mut torch_sys::C_tensor;
type CallFn = unsafe extern "C" fn(*mut c_void, CTensor) -> CTensor;
type DropFn = unsafe extern "C" fn(*mut c_void);

extern "C" {
    fn torch_ext_free(p: *mut c_char);
    fn torch_ext_autocast_enter(
        device: c_int,
        dtype: c_int,
        prev_enabled: *mut c_int,
        prev_dtype: *mut c_int,
    ) -> *mut c_char;
    fn torch_ext_autocast_exit(
        device: c_int,
        prev_enabled: c_int,
        prev_dtype: c_int,
    ) -> *mut c_char;
    fn torch_ext_checkpoint(
        x: CTensor,
        params: *const CTensor,
        n_params: c_int,
        ctx: *mut c_void,
        call: CallFn,
        drop: DropFn,
        out: *mut CTensor,
    ) -> *mut c_char;
    fn torch_ext_cuda_memory_peaks(
        device: c_int,
        allocated: *mut i64,
        reserved: *mut i64,
    ) -> *mut c_char;
    fn torch_ext_cuda_reset_peak_memory(device: c_int) -> *mut c_char;
}

/// Turns a message returned by the shim into an error (null means success).
pub(crate) fn check(err: *mut c_char) -> Result<()> {
    if err.is_null() {
        return Ok(());
    }
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { torch_ext_free(err) };
    Err(anyhow!(msg))
}

/// c10::ScalarType codes (c10/core/ScalarType.h); tch keeps its own mapping private.
fn scalar_type(kind: Kind) -> Result<c_int> {
    match kind {
        Kind::Half => Ok(5),
        Kind::Float => Ok(6),
        Kind::BFloat16 => Ok(15),
        k => Err(anyhow!(
            "autocast dtype {k:?} is not a floating-point type autocast supports"
        )),
    }
}

fn device_code(device: Device) -> c_int {
    match device {
        Device::Cuda(_) => 1,
        _ => 0,
    }
}

/// Autocast on `device` to `dtype` while the guard lives (torch.autocast's context manager).
/// Nested guards restore the state they found.
pub struct AutocastGuard {
    device: c_int,
    prev_enabled: c_int,
    prev_dtype: c_int,
}

impl AutocastGuard {
    pub fn new(device: Device, dtype: Kind) -> Result<Self> {
        let device = device_code(device);
        let (mut prev_enabled, mut prev_dtype) = (0, 0);
        check(unsafe {
            torch_ext_autocast_enter(
                device,
                scalar_type(dtype)?,
                &mut prev_enabled,
                &mut prev_dtype,
            )
        })?;
        Ok(Self {
            device,
            prev_enabled,
            prev_dtype,
        })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // Restoring plain flags cannot fail in practice; a failure here has no caller to go to.
        let _ = check(unsafe {
            torch_ext_autocast_exit(self.device, self.prev_enabled, self.prev_dtype)
        });
    }
}

type Closure = Box<dyn Fn(&Tensor) -> Tensor>;

unsafe extern "C" fn call_closure(ctx: *mut c_void, x: CTensor) -> CTensor {
    let f = &*(ctx as *const Closure);
    let x = Tensor::clone_from_ptr(x);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&x))) {
        Ok(mut y) => {
            let p = y.as_mut_ptr();
            std::mem::forget(y);
            p
        }
        Err(_) => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn drop_closure(ctx: *mut c_void) {
    drop(Box::from_raw(ctx as *mut Closure));
}

/// `f(x)` with gradient checkpointing: the forward keeps no activations inside `f`; backward
/// runs `f` again with grad enabled (under the autocast state of the forward) and
/// differentiates it. `params` are the tensors requiring grad that `f` reads; `f` must be
/// deterministic (draw any random mask outside and capture it).
///
/// The closure lives in the autograd graph until backward is done with it. On CUDA the
/// autograd engine calls it from its device thread, one call at a time, never concurrently.
pub fn checkpoint<F>(x: &Tensor, params: &[Tensor], f: F) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Tensor + 'static,
{
    let boxed: Box<Closure> = Box::new(Box::new(f));
    let ctx = Box::into_raw(boxed) as *mut c_void;
    let ptrs: Vec<CTensor> = params.iter().map(|p| p.as_ptr() as CTensor).collect();
    let mut out: CTensor = std::ptr::null_mut();
    // The shim takes ownership of ctx at once: drop_closure runs even if this call fails.
    check(unsafe {
        torch_ext_checkpoint(
            x.as_ptr() as CTensor,
            ptrs.as_ptr(),
            ptrs.len() as c_int,
            ctx,
            call_closure,
            drop_closure,
            &mut out,
        )
    })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// What a torch.save'd dict holds that this project reads: the tensors of its state dict
/// (under `state_dict`, or the top level itself) in file order, and its top-level integers
/// (`epoch`, …).
#[derive(Default)]
pub struct PickledDict {
    pub tensors: Vec<(String, Tensor)>,
    pub ints: Vec<(String, i64)>,
}

/// Reads a torch.save'd (zip format) dict onto the CPU.
pub fn load_pickle(path: &Path) -> Result<PickledDict> {
    let root = pickle::load(path)?;
    let pickle::Value::Dict(top) = &root else {
        return Err(anyhow!("the pickled object is not a dict"));
    };
    let sd = match root.get("state_dict") {
        Some(pickle::Value::Dict(sd)) => sd,
        _ => top,
    };
    let mut out = PickledDict::default();
    for (k, v) in sd {
        if let (pickle::Value::Str(k), pickle::Value::Tensor(t)) = (k, v) {
            out.tensors.push((k.clone(), t.shallow_clone()));
        }
    }
    for (k, v) in top {
        if let (pickle::Value::Str(k), pickle::Value::Int(i)) = (k, v) {
            out.ints.push((k.clone(), *i));
        }
    }
    Ok(out)
}

/// torch's current CUDA stream on `cuda:device` (`torch.cuda.current_stream(device)`, a
/// `cudaStream_t`): the default stream unless a stream guard chose another. Work enqueued on it
/// is ordered with libtorch's kernels around it. Fails without a CUDA libtorch and device.
pub fn current_cuda_stream(device: usize) -> Result<*mut c_void> {
    cuda::Stream::current(device)?.raw()
}

/// The CUDA caching allocator's peaks on `cuda:device` since the last
/// [`reset_cuda_peak_memory`]: bytes allocated to tensors
/// (`torch.cuda.max_memory_allocated`) and bytes reserved from the driver
/// (`torch.cuda.max_memory_reserved`).
pub fn cuda_peak_memory(device: usize) -> Result<(i64, i64)> {
    cuda::check_device(device, "no CUDA memory statistics")?;
    let (mut allocated, mut reserved) = (0, 0);
    check(unsafe { torch_ext_cuda_memory_peaks(device as c_int, &mut allocated, &mut reserved) })?;
    Ok((allocated, reserved))
}

/// `torch.cuda.reset_peak_memory_stats(device)`.
pub fn reset_cuda_peak_memory(device: usize) -> Result<()> {
    cuda::check_device(device, "no CUDA memory statistics")?;
    check(unsafe { torch_ext_cuda_reset_peak_memory(device as c_int) })
}

/// Seconds `f` takes on `cuda:device`, measured with CUDA events on torch's current stream
/// ([`cuda::time`]).
pub fn cuda_time(device: usize, f: impl FnOnce() -> Result<()>) -> Result<f64> {
    cuda::time(device, f)
}
