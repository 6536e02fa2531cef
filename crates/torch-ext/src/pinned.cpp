// Page-locked host memory allocated as such (torch's caching host allocator, not pageable memory
// pinned afterwards by a copy), pinning without the deprecated device argument that tch's
// `pin_memory(device)` passes (a warning per call in torch 2.11), and copies that do not block
// the host. Error convention: guard.h's.
#include "guard.h"
#include <ATen/ATen.h>

extern "C" {

// at::empty with pinned_memory(true): the caching host allocator's memory, page-locked once.
char *torch_ext_empty_pinned(const int64_t *sizes, int n, int dtype, at::Tensor **out) {
  GUARD({
    auto options = at::TensorOptions().dtype(static_cast<at::ScalarType>(dtype)).pinned_memory(true);
    *out = new at::Tensor(at::empty(at::IntArrayRef(sizes, n), options));
  })
}

// Tensor.pin_memory() for the current accelerator (no device argument).
char *torch_ext_pin_memory(at::Tensor *t, at::Tensor **out) {
  GUARD({ *out = new at::Tensor(t->pin_memory()); })
}

char *torch_ext_is_pinned(at::Tensor *t, int *out) {
  GUARD({ *out = t->is_pinned() ? 1 : 0; })
}

// dst.copy_(src, non_blocking): between pinned host memory and a GPU the copy is enqueued on the
// current stream and the host goes on; the caller waits before reading what it wrote.
char *torch_ext_copy_(at::Tensor *dst, at::Tensor *src, int non_blocking) {
  GUARD({ dst->copy_(*src, non_blocking != 0); })
}

}  // extern "C"
