//! Gradient hooks for data parallelism (the C++ side is `src/grad_hooks.cpp`): a callback after
//! a parameter's gradient has been accumulated by a backward (torch's
//! `register_post_accumulate_grad_hook`, the AccumulateGrad hook DDP's reducer uses),
//! `param.grad = view` (tch binds no `.grad` setter), so gradients can live in flat buckets, and a
//! callback when the backward reaches a tensor ([`on_grad`], torch's `Tensor.register_hook`: FSDP
//! gathers a unit's parameters there, before the unit's backward).

use std::ffi::{c_char, c_void};

use anyhow::Result;
use tch::Tensor;

use crate::{check, CTensor};

type Callback = Box<dyn Fn() + Send + Sync>;
type ReadyFn = unsafe extern "C" fn(*mut c_void);
type DropFn = unsafe extern "C" fn(*mut c_void);

extern "C" {
    fn torch_ext_set_post_accumulate_grad_hook(
        param: CTensor,
        ctx: *mut c_void,
        ready: Option<ReadyFn>,
    ) -> *mut c_char;
    fn torch_ext_set_grad(param: CTensor, grad: CTensor) -> *mut c_char;
    fn torch_ext_on_grad(t: CTensor, ctx: *mut c_void, call: ReadyFn, drop: DropFn) -> *mut c_char;
}

unsafe extern "C" fn drop_callback(ctx: *mut c_void) {
    drop(Box::from_raw(ctx as *mut Callback));
}

/// `f` runs when a backward has computed the gradient of `t` (a tensor that requires grad,
/// normally an intermediate result), before that gradient flows on into the operation that made
/// `t`: torch's `t.register_hook`. It runs on the thread running the backward, once per backward
/// through `t`; it lives as long as the graph node that made `t`.
pub fn on_grad(t: &Tensor, f: impl Fn() + Send + Sync + 'static) -> Result<()> {
    let ctx = Box::into_raw(Box::new(Box::new(f) as Callback)) as *mut c_void;
    // The shim owns ctx from here: drop_callback runs even if this fails.
    check(unsafe { torch_ext_on_grad(t.as_ptr() as CTensor, ctx, call_ready, drop_callback) })
}

unsafe extern "C" fn call_ready(ctx: *mut c_void) {
    let f = &*(ctx as *const Callback);
    // A panic must not unwind into the autograd engine's C++ frames.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        eprintln!("a post-accumulate-grad hook panicked");
        std::process::abort();
    }
}

/// `f` runs after every backward that accumulates a gradient into `param` (a leaf requiring
/// grad), on the thread running the backward (the calling thread on CPU, the device's autograd
/// thread on CUDA), while the backward goes on: it should only record that the gradient is ready.
/// A parameter holds one such hook; dropping the handle removes it.
pub struct PostAccumulateGradHook {
    param: Tensor,
    ctx: *mut Callback,
}

// The handle only owns the boxed callback (Send + Sync) and a reference to the parameter.
unsafe impl Send for PostAccumulateGradHook {}

impl PostAccumulateGradHook {
    pub fn register(param: &Tensor, f: impl Fn() + Send + Sync + 'static) -> Result<Self> {
        let ctx = Box::into_raw(Box::new(Box::new(f) as Callback));
        let param = param.shallow_clone();
        let set = check(unsafe {
            torch_ext_set_post_accumulate_grad_hook(
                param.as_ptr() as CTensor,
                ctx as *mut c_void,
                Some(call_ready),
            )
        });
        if let Err(e) = set {
            drop(unsafe { Box::from_raw(ctx) });
            return Err(e);
        }
        Ok(Self { param, ctx })
    }
}

impl Drop for PostAccumulateGradHook {
    fn drop(&mut self) {
        // Removing a hook from a leaf that took one cannot fail.
        let _ = check(unsafe {
            torch_ext_set_post_accumulate_grad_hook(
                self.param.as_ptr() as CTensor,
                std::ptr::null_mut(),
                None,
            )
        });
        drop(unsafe { Box::from_raw(self.ctx) });
    }
}

/// `param.grad = grad`: `grad` (any view, e.g. a slice of a flat bucket) must have the
/// parameter's shape, dtype and device. A backward then adds into it in place.
pub fn set_grad(param: &Tensor, grad: &Tensor) -> Result<()> {
    check(unsafe { torch_ext_set_grad(param.as_ptr() as CTensor, grad.as_ptr() as CTensor) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tch::{Device, Kind};

    #[test]
    fn the_hook_fires_once_per_backward_after_the_gradient_is_in_the_view() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let bucket = Tensor::zeros([5], (Kind::Float, Device::Cpu));
        set_grad(&p, &bucket.narrow(0, 3, 2)).unwrap();
        let fired = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(vec![]));
        let (f, s) = (fired.clone(), seen.clone());
        let b = std::sync::Mutex::new(bucket.shallow_clone());
        let hook = PostAccumulateGradHook::register(&p, move || {
            f.fetch_add(1, Ordering::SeqCst);
            s.lock()
                .unwrap()
                .push(Vec::<f32>::try_from(&*b.lock().unwrap()).unwrap());
        })
        .unwrap();
        (&p * 3.0).sum(Kind::Float).backward();
        (&p * &p).sum(Kind::Float).backward();
        assert_eq!(fired.load(Ordering::SeqCst), 2);
        // The gradients were added into the bucket's slice, and were there when the hook ran.
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![vec![0., 0., 0., 3., 3.], vec![0., 0., 0., 5., 7.]]
        );
        drop(hook);
        (&p * 1.0).sum(Kind::Float).backward();
        assert_eq!(fired.load(Ordering::SeqCst), 2);
        assert_eq!(
            Vec::<f32>::try_from(&bucket).unwrap(),
            vec![0., 0., 0., 6., 8.]
        );
    }

    #[test]
    fn on_grad_fires_before_the_gradient_flows_on() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let y = &p * 3.0;
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let pg = std::sync::Mutex::new(p.shallow_clone());
        on_grad(&y, move || {
            // p's gradient is not in yet: y's gradient is computed, y's backward not run.
            assert!(!pg.lock().unwrap().grad().defined());
            f.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        (&y * &y).sum(Kind::Float).backward();
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        assert_eq!(Vec::<f32>::try_from(&p.grad()).unwrap(), vec![18., 36.]);
        let e = on_grad(&Tensor::zeros([1], (Kind::Float, Device::Cpu)), || {}).unwrap_err();
        assert!(e.to_string().contains("requires grad"), "{e}");
    }

    #[test]
    fn set_grad_refuses_a_gradient_of_another_shape() {
        let p = Tensor::zeros([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let e = set_grad(&p, &Tensor::zeros([3], (Kind::Float, Device::Cpu))).unwrap_err();
        assert!(e.to_string().contains("shape"), "{e}");
    }
}
