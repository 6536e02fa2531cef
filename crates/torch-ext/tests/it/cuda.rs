//! torch_ext::cuda: streams, stream guards, events and record_stream. Without a GPU only the
//! refusals run (every device is one libtorch does not see); on a GPU every visible device is
//! exercised.
use tch::{Device, Kind, Tensor};
use torch_ext::cuda::{record_stream, Event, Stream, StreamGuard};

fn device_count() -> usize {
    tch::Cuda::device_count().max(0) as usize
}

/// Whether the libtorch this was built against has CUDA (the build links torch_cuda then).
fn cuda_libtorch() -> bool {
    env!("TORCH_EXT_CUDA") == "1"
}

/// Whether libc10_cuda.so (which registers c10's CUDA backend) is loaded in this process.
fn cuda_backend_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .contains("/libc10_cuda.so")
}

#[test]
fn streams_on_a_device_libtorch_does_not_see_are_refused_in_one_line() {
    let n = device_count();
    let seen = format!("cuda:{n}: libtorch sees {n} CUDA device(s)");
    let e = Stream::current(n).unwrap_err().to_string();
    assert_eq!(e, format!("no current CUDA stream on {seen}"));
    let e = Stream::from_pool(n).unwrap_err().to_string();
    assert_eq!(e, format!("no CUDA stream from the pool on {seen}"));
}

/// An event is created on its first record (as torch.cuda.Event): before that it is reached,
/// synchronizing returns at once and it measures nothing — no CUDA call, so this runs without a
/// GPU too. With a CPU-only libtorch, making one is refused in one line (src/cuda.rs's unit
/// test, which does not link torch_cuda, checks the other calls).
#[test]
fn an_event_never_recorded_is_reached_and_measures_nothing() {
    assert_eq!(cuda_backend_loaded(), cuda_libtorch());
    if !cuda_libtorch() {
        let e = Event::new().err().unwrap().to_string();
        assert!(
            e.starts_with("no CUDA event: this libtorch has no CUDA backend"),
            "{e}"
        );
        return;
    }
    let event = Event::new().unwrap();
    assert!(event.query().unwrap());
    event.synchronize().unwrap();
    let (start, end) = (Event::with_timing().unwrap(), Event::with_timing().unwrap());
    let e = start.elapsed_seconds(&end).unwrap_err().to_string();
    assert!(e.contains("must be recorded"), "{e}");
    let e = event.elapsed_seconds(&end).unwrap_err().to_string();
    assert!(e.contains("enable_timing"), "{e}");
}

/// A pool stream is not the default stream; a guard makes it current (also for
/// `current_cuda_stream`, which NCCL reads) and restores the default stream; another thread
/// still starts on the default stream.
#[test]
fn a_stream_guard_makes_a_pool_stream_current_on_this_thread_only() {
    for device in 0..device_count() {
        let default = Stream::current(device).unwrap();
        assert!(default.raw().unwrap().is_null(), "cuda:{device}");
        let pool = Stream::from_pool(device).unwrap();
        assert_ne!(pool, default);
        assert!(!pool.raw().unwrap().is_null());
        {
            let _g = StreamGuard::new(pool).unwrap();
            assert_eq!(Stream::current(device).unwrap(), pool);
            let raw = torch_ext::current_cuda_stream(device).unwrap();
            assert_eq!(raw, pool.raw().unwrap());
            let other = std::thread::spawn(move || Stream::current(device).unwrap());
            assert_eq!(other.join().unwrap(), default);
        }
        assert_eq!(Stream::current(device).unwrap(), default);
    }
}

/// Work on a side stream, ordered before the default stream's by an event (and by wait_stream):
/// the consumer on the default stream sees the producer's result, computed on the same device
/// without streams as the reference.
#[test]
fn events_order_a_side_stream_before_the_default_stream() {
    for device in 0..device_count() {
        let opts = (Kind::Float, Device::Cuda(device));
        let default = Stream::current(device).unwrap();
        let side = Stream::from_pool(device).unwrap();
        let a = Tensor::randn([2048, 2048], opts);
        let reference = a.matmul(&a).matmul(&a).sum(Kind::Float);
        // The side stream must not start before `a` (made on the default stream) is written.
        side.wait_stream(&default).unwrap();
        let (product, mut done) = {
            let _g = StreamGuard::new(side).unwrap();
            let p = a.matmul(&a).matmul(&a);
            (p, side.record_event().unwrap())
        };
        // `product` was allocated on the side stream and is read on the default stream.
        record_stream(&product, &default).unwrap();
        default.wait_event(&done).unwrap();
        let sum = product.sum(Kind::Float);
        assert!(sum.equal(&reference), "cuda:{device}");
        done.record(&side).unwrap();
        done.synchronize().unwrap();
        assert!(done.query().unwrap());
        default.synchronize().unwrap();
        let e = record_stream(&Tensor::zeros([1], (Kind::Float, Device::Cpu)), &side);
        let e = e.unwrap_err().to_string();
        assert!(
            e.starts_with("record_stream: the tensor is on cpu, not on a CUDA device"),
            "{e}"
        );
    }
}
