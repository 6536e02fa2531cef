use tch::{Device, Kind, Tensor};
use torch_ext::{checkpoint, load_pickle, AutocastGuard};

#[test]
fn autocast_bf16_on_cpu_makes_matmul_bf16_and_restores() {
    let a = Tensor::randn([4, 4], (Kind::Float, Device::Cpu));
    {
        let _g = AutocastGuard::new(Device::Cpu, Kind::BFloat16).unwrap();
        assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
    }
    assert_eq!(a.matmul(&a).kind(), Kind::Float);
}

#[test]
fn checkpoint_gives_the_gradients_of_the_plain_function() {
    tch::manual_seed(0);
    let mut w = Tensor::randn([8, 8], (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let x0 = Tensor::randn([3, 8], (Kind::Double, Device::Cpu));
    let mut run = |ckpt: bool| {
        let x = x0.copy().set_requires_grad(true);
        let h = x.tanh();
        let wc = w.shallow_clone();
        let f = move |t: &Tensor| t.matmul(&wc).gelu("none").matmul(&wc);
        let y = if ckpt {
            checkpoint(&h, &[w.shallow_clone()], f).unwrap()
        } else {
            f(&h)
        };
        w.zero_grad();
        (y.sin().sum(Kind::Double)).backward();
        (y.detach(), w.grad().copy(), x.grad().copy())
    };
    let (y1, gw1, gx1) = run(false);
    let (y2, gw2, gx2) = run(true);
    assert!(y1.allclose(&y2, 0.0, 0.0, false));
    assert!(gw1.allclose(&gw2, 1e-12, 1e-12, false));
    assert!(gx1.allclose(&gx2, 1e-12, 1e-12, false));
}

#[test]
fn load_pickle_reports_a_missing_file() {
    let err = load_pickle(std::path::Path::new("/nonexistent/x.pt"))
        .err()
        .unwrap();
    // The path in the message, the operating system's reason under it.
    assert_eq!(err.to_string(), "cannot open /nonexistent/x.pt");
    let io = err.root_cause().downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound, "{err:#}");
}

/// torch's current CUDA stream: the default stream (null, the legacy default stream torch
/// uses) on every visible device; a clear error for a device libtorch does not see (without a
/// GPU that is every device: the function must not reach into CUDA then).
#[test]
fn current_cuda_stream_is_the_default_stream_or_a_clear_error() {
    let count = tch::Cuda::device_count() as usize;
    for device in 0..count {
        let stream = torch_ext::current_cuda_stream(device).unwrap();
        assert!(stream.is_null(), "cuda:{device}: {stream:?}");
    }
    let e = torch_ext::current_cuda_stream(count).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("no current CUDA stream on cuda:{count}: libtorch sees {count} CUDA device(s)")
    );
}

/// The GPU measurements: on every visible device a matmul's time is positive and its 4 MiB
/// operands raise the allocator's peak by at least that much; a clear error for a device
/// libtorch does not see (every device without a GPU).
#[test]
fn cuda_memory_and_time_are_measured_on_the_device_or_refused() {
    let count = tch::Cuda::device_count() as usize;
    for device in 0..count {
        torch_ext::reset_cuda_peak_memory(device).unwrap();
        let (before, _) = torch_ext::cuda_peak_memory(device).unwrap();
        let opts = (tch::Kind::Float, tch::Device::Cuda(device));
        let secs = torch_ext::cuda_time(device, || {
            let a = tch::Tensor::ones([1024, 1024], opts);
            let _ = a.matmul(&a);
            Ok(())
        })
        .unwrap();
        assert!(secs > 0.0, "cuda:{device}: {secs}");
        let (after, reserved) = torch_ext::cuda_peak_memory(device).unwrap();
        assert!(
            after - before >= 4 << 20,
            "cuda:{device}: {before} → {after}"
        );
        assert!(reserved >= after);
    }
    let e = torch_ext::cuda_peak_memory(count).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("no CUDA memory statistics on cuda:{count}: libtorch sees {count} CUDA device(s)")
    );
    let e = torch_ext::cuda_time(count, || Ok(())).unwrap_err();
    assert!(
        e.to_string().starts_with("no current CUDA stream on cuda:"),
        "{e}"
    );
}
