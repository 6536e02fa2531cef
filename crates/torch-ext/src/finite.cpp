// Finiteness checks that stay on the device (issue 24: nothing non-finite gets in or out): the
// gradients' global 2-norm without clipping (the trainer skips a step whose norm is not finite),
// and every tensor's norm at once (a checkpoint is written only from finite tensors).
// Like optim.cpp, a constant number of ATen ops per (device, dtype) group, never one per tensor,
// and no value read back to the host. Errors come back as malloc'd messages (guard.h).
#include "guard.h"
#include "tensor_groups.h"
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

typedef at::Tensor *tensor;

namespace {

using torch_ext::by_device_and_dtype;
using torch_ext::pick;

// Each group's per-tensor `ord`-norms (_foreach_norm, in the group's dtype), as one f32 vector
// on the first tensor's device.
at::Tensor norms_of(const std::vector<at::Tensor> &ts, double ord) {
  std::vector<at::Tensor> norms;
  for (const auto &idx : by_device_and_dtype(ts)) {
    auto ns = at::_foreach_norm(pick(ts, idx), ord);
    norms.push_back(at::stack(ns).to(ts[0].device(), at::kFloat));
  }
  return at::cat(norms);
}

}  // namespace

extern "C" {

// The total 2-norm of the defined gradients of `params`, exactly as clip_grad_norm_ computes it
// (torch_ext_clip_grad_norm: each tensor's norm in its own dtype, then in f32), without scaling
// anything. `*total_out` gets an f32 scalar on the gradients' device (0 with no gradient).
char *torch_ext_grad_norm(tensor *params, int n, tensor *total_out) {
  GUARD({
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> grads;
    for (int i = 0; i < n; i++) {
      const at::Tensor &g = params[i]->grad();
      if (g.defined()) grads.push_back(g);
    }
    if (grads.empty()) {
      *total_out = new at::Tensor(at::zeros({}, at::kFloat));
      return nullptr;
    }
    *total_out = new at::Tensor(at::linalg_vector_norm(norms_of(grads, 2.0), 2));
  })
}

// Each tensor's `ord`-norm (2, or inf: the largest |x|), as an f32 vector in the order given, on
// the first tensor's device (empty for no tensors): one _foreach_norm per (device, dtype) group.
// A NaN or an inf in a tensor makes its norm one; a 2-norm also overflows to inf on finite
// values beyond ~1e19 (f32, bf16), a max-norm never does. On the CPU the 2-norm is the fast one
// (vectorised; the max-norm runs tens of times slower).
char *torch_ext_norms(tensor *ts, int n, double ord, tensor *out) {
  GUARD({
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> all;
    for (int i = 0; i < n; i++) all.push_back(ts[i]->detach());
    if (all.empty()) {
      *out = new at::Tensor(at::empty({0}, at::kFloat));
      return nullptr;
    }
    std::vector<at::Tensor> placed(all.size());
    for (const auto &idx : by_device_and_dtype(all)) {
      auto ns = at::stack(at::_foreach_norm(pick(all, idx), ord)).to(all[0].device(), at::kFloat);
      auto each = ns.unbind();
      for (size_t i = 0; i < idx.size(); i++) placed[idx[i]] = each[i];
    }
    *out = new at::Tensor(at::stack(placed));
  })
}

}  // extern "C"
