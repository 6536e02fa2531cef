//! CUDA streams and events as torch has them (`torch.cuda.Stream`, `torch.cuda.Event`,
//! `with torch.cuda.stream(s)`, `Tensor.record_stream`), for work that must overlap on one GPU:
//! the gradient all-reduce on a communication stream, host-to-device copies on a copy stream.
//!
//! The C++ side (`src/cuda.cpp`) needs no CUDA headers: it reaches CUDA through c10's
//! device-generic stream, event and guard types, i.e. the `DeviceGuardImplInterface` that
//! `libc10_cuda.so` registers (see its header comment for the ABI assumptions). Without a CUDA
//! libtorch, or for a device libtorch does not see, every call returns a one-line error saying
//! what is missing; none reaches into CUDA then.
//!
//! torch's current stream is per thread and per device: a new thread starts on the device's
//! default (legacy) stream, and the autograd engine runs a CUDA backward on its device thread with
//! the forward's current stream made current there.

use std::ffi::{c_char, c_int, c_void};
use std::marker::PhantomData;

use anyhow::{anyhow, Result};
use tch::{Device, Kind, Tensor};

use crate::{check, CTensor};

extern "C" {
    fn torch_ext_cuda_current_stream(device: c_int, id: *mut i64) -> *mut c_char;
    fn torch_ext_cuda_stream_from_pool(device: c_int, high: c_int, id: *mut i64) -> *mut c_char;
    fn torch_ext_cuda_stream_handle(device: c_int, id: i64, out: *mut *mut c_void) -> *mut c_char;
    fn torch_ext_cuda_stream_synchronize(device: c_int, id: i64) -> *mut c_char;
    fn torch_ext_cuda_stream_guard_new(
        device: c_int,
        id: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn torch_ext_cuda_stream_guard_drop(guard: *mut c_void) -> *mut c_char;
    fn torch_ext_cuda_event_new(timing: c_int, out: *mut *mut c_void) -> *mut c_char;
    fn torch_ext_cuda_event_drop(event: *mut c_void) -> *mut c_char;
    fn torch_ext_cuda_event_record(event: *mut c_void, device: c_int, id: i64) -> *mut c_char;
    fn torch_ext_cuda_event_block(event: *mut c_void, device: c_int, id: i64) -> *mut c_char;
    fn torch_ext_cuda_event_query(event: *mut c_void, done: *mut c_int) -> *mut c_char;
    fn torch_ext_cuda_event_synchronize(event: *mut c_void) -> *mut c_char;
    fn torch_ext_cuda_event_elapsed(
        start: *mut c_void,
        end: *mut c_void,
        ms: *mut f64,
    ) -> *mut c_char;
    fn torch_ext_cuda_record_stream(t: CTensor, device: c_int, id: i64) -> *mut c_char;
}

/// `what` fails on a device libtorch does not see (asking c10 about it would fail deep inside
/// CUDA's initialisation, or abort).
pub(crate) fn check_device(device: usize, what: &str) -> Result<()> {
    let count = tch::Cuda::device_count().max(0) as usize;
    if device >= count {
        return Err(anyhow!(
            "{what} on cuda:{device}: libtorch sees {count} CUDA device(s)"
        ));
    }
    Ok(())
}

/// A CUDA stream of torch's (a `c10::cuda::CUDAStream`: a device and torch's stream id). Streams
/// are never destroyed (torch's pool and default streams live as long as the process), so this is
/// a plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stream {
    device: usize,
    id: i64,
}

impl Stream {
    /// `torch.cuda.current_stream(device)`: this thread's current stream on `cuda:device` — the
    /// default stream unless a [`StreamGuard`] chose another.
    pub fn current(device: usize) -> Result<Stream> {
        check_device(device, "no current CUDA stream")?;
        let mut id = 0;
        check(unsafe { torch_ext_cuda_current_stream(device as c_int, &mut id) })?;
        Ok(Stream { device, id })
    }

    /// A stream from torch's pool on `cuda:device` (`c10::cuda::getStreamFromPool`, low
    /// priority): the pool hands its streams out round-robin, so one taken once and kept is a
    /// stream of one's own for as long as fewer than the pool's size (32) are taken.
    pub fn from_pool(device: usize) -> Result<Stream> {
        check_device(device, "no CUDA stream from the pool")?;
        let mut id = 0;
        check(unsafe { torch_ext_cuda_stream_from_pool(device as c_int, 0, &mut id) })?;
        Ok(Stream { device, id })
    }

    /// The CUDA device index.
    pub fn device(&self) -> usize {
        self.device
    }

    /// torch's id for the stream (`torch.cuda.Stream.stream_id`).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The stream's `cudaStream_t` (null for the legacy default stream), to enqueue foreign work
    /// (NCCL) on it.
    pub fn raw(&self) -> Result<*mut c_void> {
        let mut out = std::ptr::null_mut();
        check(unsafe { torch_ext_cuda_stream_handle(self.device as c_int, self.id, &mut out) })?;
        Ok(out)
    }

    /// `Stream.wait_event(event)`: work enqueued on this stream from now on waits (on the GPU,
    /// not the host) until `event` is reached; nothing if `event` was never recorded.
    pub fn wait_event(&self, event: &Event) -> Result<()> {
        check(unsafe { torch_ext_cuda_event_block(event.ptr, self.device as c_int, self.id) })
    }

    /// `Stream.wait_stream(other)`: work enqueued on this stream from now on waits for what is
    /// enqueued on `other` now (an event recorded on `other`, waited on here).
    pub fn wait_stream(&self, other: &Stream) -> Result<()> {
        self.wait_event(&other.record_event()?)
    }

    /// `Stream.record_event()`: a new event (no timing) recorded on this stream.
    pub fn record_event(&self) -> Result<Event> {
        let mut event = Event::new()?;
        event.record(self)?;
        Ok(event)
    }

    /// `Stream.synchronize()`: blocks the calling thread until the stream's work is done.
    pub fn synchronize(&self) -> Result<()> {
        check(unsafe { torch_ext_cuda_stream_synchronize(self.device as c_int, self.id) })
    }
}

/// `with torch.cuda.stream(stream):` — while the guard lives, `stream` is this thread's current
/// stream on its device and its device the current device, so libtorch's kernels (and NCCL,
/// which reads the current stream) go there; dropping it restores both. Guards nest. It belongs
/// to the thread that made it (not `Send`).
pub struct StreamGuard {
    ptr: *mut c_void,
    _thread_bound: PhantomData<*mut c_void>,
}

impl StreamGuard {
    pub fn new(stream: Stream) -> Result<StreamGuard> {
        let mut ptr = std::ptr::null_mut();
        check(unsafe {
            torch_ext_cuda_stream_guard_new(stream.device as c_int, stream.id, &mut ptr)
        })?;
        Ok(StreamGuard {
            ptr,
            _thread_bound: PhantomData,
        })
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // Restoring a stream and device that were current before cannot fail in practice, and a
        // failure here has no caller to go to.
        let _ = check(unsafe { torch_ext_cuda_stream_guard_drop(self.ptr) });
    }
}

/// A CUDA event (`torch.cuda.Event()`: `cudaEventDisableTiming` unless made
/// [`Event::with_timing`]), created on the device of the first stream it is recorded on and
/// destroyed on drop (CUDA releases it once the device has passed it). Not `Sync`: recording
/// takes `&mut self`.
pub struct Event {
    ptr: *mut c_void,
}

// The C++ event may be used and destroyed from any thread (c10 sets the device for each call).
unsafe impl Send for Event {}

impl Event {
    /// An event without timing (the cheaper kind, for ordering streams).
    pub fn new() -> Result<Event> {
        Self::make(false)
    }

    /// An event that can measure time ([`Event::elapsed_seconds`]).
    pub fn with_timing() -> Result<Event> {
        Self::make(true)
    }

    fn make(timing: bool) -> Result<Event> {
        let mut ptr = std::ptr::null_mut();
        check(unsafe { torch_ext_cuda_event_new(c_int::from(timing), &mut ptr) })?;
        Ok(Event { ptr })
    }

    /// `Event.record(stream)`: the event is reached once the work enqueued on `stream` so far is
    /// done. Recording again moves it to the new point.
    pub fn record(&mut self, stream: &Stream) -> Result<()> {
        check(unsafe { torch_ext_cuda_event_record(self.ptr, stream.device as c_int, stream.id) })
    }

    /// `Event.query()`: whether the event has been reached (true if never recorded).
    pub fn query(&self) -> Result<bool> {
        let mut done = 0;
        check(unsafe { torch_ext_cuda_event_query(self.ptr, &mut done) })?;
        Ok(done != 0)
    }

    /// `Event.synchronize()`: blocks the calling thread until the event is reached.
    pub fn synchronize(&self) -> Result<()> {
        check(unsafe { torch_ext_cuda_event_synchronize(self.ptr) })
    }

    /// Seconds from this event to `end` (both [`Event::with_timing`], recorded and reached).
    pub fn elapsed_seconds(&self, end: &Event) -> Result<f64> {
        let mut ms = 0f64;
        check(unsafe { torch_ext_cuda_event_elapsed(self.ptr, end.ptr, &mut ms) })?;
        Ok(ms / 1e3)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // cudaEventDestroy failing leaves nothing to undo (c10 only warns).
        let _ = check(unsafe { torch_ext_cuda_event_drop(self.ptr) });
    }
}

/// `tensor.record_stream(stream)`: `tensor` (on CUDA) is used by work on `stream`, so once it is
/// freed the caching allocator does not reuse its memory until the work enqueued on `stream` by
/// then is done. Needed for a tensor allocated on one stream and used on another.
pub fn record_stream(tensor: &Tensor, stream: &Stream) -> Result<()> {
    check(unsafe {
        torch_ext_cuda_record_stream(
            tensor.as_ptr() as CTensor,
            stream.device as c_int,
            stream.id,
        )
    })
}

/// Seconds `f` takes on `cuda:device`, measured with CUDA events recorded on torch's current
/// stream before and after it (the GPU's own clock: the host may return long before the work
/// ends); waits for the end event.
pub fn time(device: usize, f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let stream = Stream::current(device)?;
    let (mut start, mut end) = (Event::with_timing()?, Event::with_timing()?);
    start.record(&stream)?;
    let ran = f();
    end.record(&stream)?;
    end.synchronize()?;
    ran?;
    start.elapsed_seconds(&end)
}

/// Keeps `cuda:device`'s current stream busy: `matmuls` bf16 matmuls of 8192² (1.1 TFLOP each;
/// 100 take about 0.15 s on an H100), enqueued at once, so whatever is enqueued on that stream
/// after them runs long after the host moved on. For negative controls: a reader on another
/// stream that does not wait for it reads too early.
pub fn occupy(device: usize, matmuls: usize) -> Result<()> {
    check_device(device, "nothing to occupy")?;
    let a = Tensor::f_ones([8192, 8192], (Kind::BFloat16, Device::Cuda(device)))?;
    for _ in 0..matmuls {
        let _ = a.f_mm(&a)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary does not link torch_cuda: c10 has no CUDA backend here, and every entry
    /// point that does not first ask about a device says so in one line.
    #[test]
    fn without_the_cuda_backend_events_and_guards_are_refused_in_one_line() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            !maps.contains("/libc10_cuda.so"),
            "libc10_cuda.so is loaded"
        );
        let why = "this libtorch has no CUDA backend (a CPU-only build, or libc10_cuda.so was not loaded)";
        let e = Event::new().err().unwrap().to_string();
        assert_eq!(e, format!("no CUDA event: {why}"));
        let stream = Stream { device: 0, id: 0 };
        let e = StreamGuard::new(stream).err().unwrap().to_string();
        assert_eq!(e, format!("no CUDA stream guard: {why}"));
        let e = stream.raw().unwrap_err().to_string();
        assert_eq!(e, format!("no CUDA stream handle: {why}"));
        let e = stream.synchronize().unwrap_err().to_string();
        assert_eq!(e, format!("no CUDA stream to synchronize: {why}"));
    }
}
