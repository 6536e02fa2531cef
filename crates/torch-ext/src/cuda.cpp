// CUDA streams and events (torch_ext::cuda) on a build machine without the CUDA toolkit: c10's
// CUDA headers include cuda_runtime_api.h, so nothing here names a CUDA type. Everything goes
// through c10's device-generic interface instead — c10::Stream, c10::Event, c10::StreamGuard and
// the DeviceGuardImplInterface that libc10_cuda.so registers for kCUDA when it is loaded — which
// is how torch's own device-generic code (torch.Stream, torch.Event) reaches CUDA:
//   - no mangled names: every CUDA call is a virtual call on the registered CUDAGuardImpl, so the
//     only ABI assumption is that DeviceGuardImplInterface's vtable in these headers is the
//     runtime libtorch's (the same torch version, which tch's build already requires);
//   - a c10::Stream on kCUDA *is* a c10::cuda::CUDAStream (device + stream id; CUDAStream wraps
//     it), and the id round-trips through Rust as an int64 (Stream::pack3's id);
//   - c10::Event's PYTORCH_DEFAULT flag is cudaEventDisableTiming (CUDAGuardImpl::createEvent),
//     BACKEND_DEFAULT is cudaEventDefault (timing on). Events are created lazily on the device of
//     the stream they are first recorded on, as torch.cuda.Event does.
// Without a registered CUDA backend (a CPU-only libtorch, or libtorch_cuda not linked) each entry
// point fails with one line saying so, before touching CUDA.
#include "guard.h"
#include <ATen/core/Tensor.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <stdexcept>
#include <string>

namespace {

const c10::impl::DeviceGuardImplInterface *cuda_impl(const char *what) {
  if (!c10::impl::hasDeviceGuardImpl(c10::kCUDA)) {
    throw std::runtime_error(std::string(what) +
                             ": this libtorch has no CUDA backend (a CPU-only build, or "
                             "libc10_cuda.so was not loaded)");
  }
  return c10::impl::getDeviceGuardImpl(c10::kCUDA);
}

c10::Stream stream_of(int device, int64_t id) {
  return c10::Stream(c10::Stream::UNSAFE,
                     c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device)), id);
}

c10::Event *event_of(void *e) { return static_cast<c10::Event *>(e); }

}  // namespace

extern "C" {

// torch.cuda.current_stream(device): this thread's current stream on `device`.
char *torch_ext_cuda_current_stream(int device, int64_t *id) {
  GUARD({
    auto impl = cuda_impl("no current CUDA stream");
    *id = impl->getStream(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device))).id();
  })
}

// c10::cuda::getStreamFromPool(high_priority, device): one of the pool's streams, handed out
// round-robin (torch.cuda.Stream() makes a new one; DDP and the caching allocator use the pool).
char *torch_ext_cuda_stream_from_pool(int device, int high_priority, int64_t *id) {
  GUARD({
    auto impl = cuda_impl("no CUDA stream from the pool");
    auto d = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device));
    *id = impl->getStreamFromGlobalPool(d, high_priority != 0).id();
  })
}

// The stream's cudaStream_t (CUDAStream::stream(); null for the legacy default stream).
char *torch_ext_cuda_stream_handle(int device, int64_t id, void **out) {
  GUARD(*out = cuda_impl("no CUDA stream handle")->getStreamNativeHandle(stream_of(device, id)))
}

// Blocks until the stream's work is done (torch.cuda.Stream.synchronize).
char *torch_ext_cuda_stream_synchronize(int device, int64_t id) {
  GUARD(cuda_impl("no CUDA stream to synchronize")->synchronizeStream(stream_of(device, id)))
}

// c10::StreamGuard: makes the stream current on its device, and its device current, on this
// thread until deleted (on the same thread), which restores both (`with torch.cuda.stream(s)`).
char *torch_ext_cuda_stream_guard_new(int device, int64_t id, void **out) {
  GUARD({
    cuda_impl("no CUDA stream guard");
    *out = new c10::StreamGuard(stream_of(device, id));
  })
}

char *torch_ext_cuda_stream_guard_drop(void *guard) {
  GUARD(delete static_cast<c10::StreamGuard *>(guard))
}

// A CUDA event, created on the device of the first stream it is recorded on; with `timing` it
// can measure elapsed time (cudaEventDefault), else not (cudaEventDisableTiming, cheaper).
char *torch_ext_cuda_event_new(int timing, void **out) {
  GUARD({
    cuda_impl("no CUDA event");
    *out = new c10::Event(c10::kCUDA, timing != 0 ? c10::EventFlag::BACKEND_DEFAULT
                                                  : c10::EventFlag::PYTORCH_DEFAULT);
  })
}

// Destroys the CUDA event (cudaEventDestroy: released once the device has passed it).
char *torch_ext_cuda_event_drop(void *event) { GUARD(delete event_of(event)) }

// cudaEventRecord on the stream (with the stream's device current for the call).
char *torch_ext_cuda_event_record(void *event, int device, int64_t id) {
  GUARD(event_of(event)->record(stream_of(device, id)))
}

// cudaStreamWaitEvent: work enqueued on the stream from now on waits for the event (no host
// wait; nothing if the event was never recorded).
char *torch_ext_cuda_event_block(void *event, int device, int64_t id) {
  GUARD(event_of(event)->block(stream_of(device, id)))
}

// cudaEventQuery: whether the work before the event is done (true if never recorded).
char *torch_ext_cuda_event_query(void *event, int *done) {
  GUARD(*done = event_of(event)->query() ? 1 : 0)
}

// cudaEventSynchronize: blocks the calling thread until the event is reached.
char *torch_ext_cuda_event_synchronize(void *event) { GUARD(event_of(event)->synchronize()) }

// cudaEventElapsedTime from `start` to `end` (both recorded with timing, `end` reached).
char *torch_ext_cuda_event_elapsed(void *start, void *end, double *ms) {
  GUARD(*ms = event_of(start)->elapsedTime(*event_of(end)))
}

// Tensor.record_stream(stream): the caching allocator does not hand the tensor's memory to
// another allocation, once the tensor is freed, until the work queued on `stream` by then is done.
char *torch_ext_cuda_record_stream(at::Tensor *t, int device, int64_t id) {
  GUARD({
    TORCH_CHECK(t->is_cuda(), "record_stream: the tensor is on ", t->device(),
                ", not on a CUDA device");
    t->record_stream(stream_of(device, id));
  })
}

}  // extern "C"
