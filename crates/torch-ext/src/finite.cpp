// Finiteness checks that stay on the device (issue 24: nothing non-finite gets in or out): the
// gradients' global 2-norm without clipping (the trainer skips a step whose norm is not finite),
// and one verdict for a whole list of tensors (a checkpoint is written only from finite ones).
// Like optim.cpp, a constant number of ATen ops per (device, dtype) group, never one per tensor,
// and no value read back to the host. Errors come back as malloc'd messages (guard.h).
#include "guard.h"
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

typedef at::Tensor *tensor;

namespace {

// Indices of `ts` grouped by (device, dtype): the foreach kernels take uniform lists.
std::vector<std::vector<size_t>> groups_of(const std::vector<at::Tensor> &ts) {
  std::vector<std::pair<std::pair<at::Device, at::ScalarType>, std::vector<size_t>>> groups;
  for (size_t i = 0; i < ts.size(); i++) {
    auto key = std::make_pair(ts[i].device(), ts[i].scalar_type());
    auto it = groups.begin();
    while (it != groups.end() && it->first != key) ++it;
    if (it == groups.end()) {
      groups.push_back({key, {}});
      it = groups.end() - 1;
    }
    it->second.push_back(i);
  }
  std::vector<std::vector<size_t>> out;
  for (auto &g : groups) out.push_back(std::move(g.second));
  return out;
}

std::vector<at::Tensor> pick(const std::vector<at::Tensor> &ts, const std::vector<size_t> &idx) {
  std::vector<at::Tensor> out;
  out.reserve(idx.size());
  for (size_t i : idx) out.push_back(ts[i]);
  return out;
}

// Each group's per-tensor `ord`-norms (_foreach_norm, in the group's dtype), as one f32 vector
// on the first tensor's device.
at::Tensor norms_of(const std::vector<at::Tensor> &ts, double ord) {
  std::vector<at::Tensor> norms;
  for (const auto &idx : groups_of(ts)) {
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

// Whether every element of every tensor is finite: a bool scalar on the first tensor's device
// (true for no tensors). The max-norm (ord = inf, the largest |x|) of each tensor is a NaN when
// the tensor holds one, an inf when it holds one, and never overflows otherwise (a 2-norm of
// large finite weights would), so one isfinite over the norms decides. Non-floating tensors are
// always finite and left out.
char *torch_ext_all_finite(tensor *ts, int n, tensor *out) {
  GUARD({
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> floats;
    for (int i = 0; i < n; i++)
      if (at::isFloatingType(ts[i]->scalar_type()) && ts[i]->numel() > 0)
        floats.push_back(ts[i]->detach());
    if (floats.empty()) {
      *out = new at::Tensor(at::ones({}, at::kBool));
      return nullptr;
    }
    *out = new at::Tensor(at::isfinite(norms_of(floats, std::numeric_limits<double>::infinity())).all());
  })
}

}  // extern "C"
