// A tensor's memory taken away and given back while the tensor (and every view of its storage,
// autograd's saved tensors included) keeps its shape, dtype and place: what FSDP does to a
// unit's gathered parameters (`untyped_storage().resize_(0)` in torch's FSDP). Device-generic:
// memory comes from the storage's own allocator (CUDA's caching allocator on a GPU).
#include "guard.h"
#include <ATen/ATen.h>
#include <c10/core/StorageImpl.h>

extern "C" {

// The bytes `t`'s storage holds now (0 once released).
char *torch_ext_storage_nbytes(at::Tensor *t, size_t *out) {
  GUARD(*out = t->storage().nbytes())
}

// Frees `t`'s storage's memory: every tensor on that storage keeps its metadata and fails to be
// read ("data is not allocated") until the storage is filled again.
char *torch_ext_storage_release(at::Tensor *t) {
  GUARD({
    c10::StorageImpl *s = t->storage().unsafeGetStorageImpl();
    s->set_data_ptr_noswap(at::DataPtr(nullptr, s->device()));
    s->set_nbytes(0);
  })
}

// Gives `dst`'s storage `nbytes` of fresh memory (contents undefined) from its allocator.
char *torch_ext_storage_allocate(at::Tensor *dst, size_t nbytes) {
  GUARD({
    c10::StorageImpl *s = dst->storage().unsafeGetStorageImpl();
    TORCH_CHECK(s->allocator() != nullptr, "this storage has no allocator");
    s->set_data_ptr_noswap(s->allocator()->allocate(nbytes));
    s->set_nbytes(nbytes);
  })
}

// Moves `src`'s memory into `dst`'s storage, zero copy, when `src` is the sole owner of a
// storage of exactly `nbytes` that it covers from offset 0, on `dst`'s device, with `dst`'s
// dtype; `*moved` says whether it did (src is left without memory). Otherwise nothing changes and
// the caller copies.
char *torch_ext_storage_adopt(at::Tensor *dst, at::Tensor *src, size_t nbytes, int *moved) {
  GUARD({
    *moved = 0;
    const c10::Storage &from = src->storage();
    bool whole = src->is_contiguous() && src->storage_offset() == 0 &&
                 from.nbytes() == nbytes && src->nbytes() == nbytes;
    if (!whole || from.use_count() != 1 || src->device() != dst->device() ||
        src->dtype() != dst->dtype())
      return nullptr;
    c10::StorageImpl *in = from.unsafeGetStorageImpl();
    c10::StorageImpl *out = dst->storage().unsafeGetStorageImpl();
    at::DataPtr memory = in->set_data_ptr(at::DataPtr(nullptr, in->device()));
    in->set_nbytes(0);
    out->set_data_ptr_noswap(std::move(memory));
    out->set_nbytes(nbytes);
    *moved = 1;
  })
}

}  // extern "C"
