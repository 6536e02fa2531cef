// The optimizer's libtorch calls (issue 9: the GPU never waits on the host), kept apart from
// shim.cpp so the two change independently. Each entry point issues a constant number of ATen
// ops per (device, dtype) group of tensors, never one per parameter, and waits on no device:
// AdamW and SGD through their fused kernels, clipping through _foreach_norm / _foreach_mul_ with the
// coefficient on the device, the loss scaler's unscale and inf check through the AMP kernel.
// (On CPU, libtorch runs the foreach ops as per-tensor loops inside the one op, and its fused
// AdamW reads the step tensor with .item(): host memory, no wait.) Errors come back as malloc'd
// messages, as in shim.cpp.
#include "guard.h"
#include "tensor_groups.h"
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

typedef at::Tensor *tensor;

namespace {

using torch_ext::by_device_and_dtype;
using torch_ext::pick;

// The defined gradients of `params` (torch skips `p.grad is None`).
std::vector<at::Tensor> grads_of(tensor *params, int n) {
  std::vector<at::Tensor> out;
  for (int i = 0; i < n; i++) {
    const at::Tensor &g = params[i]->grad();
    if (g.defined()) out.push_back(g);
  }
  return out;
}

// Indices of the parameters with a gradient (torch skips `p.grad is None`), grouped by equal
// (learning rate, weight decay) in first-seen order: a fused kernel takes one of each.
std::vector<std::vector<int>> by_lr_and_wd(tensor *params, const double *lr, const double *wd,
                                           int n) {
  std::vector<std::vector<int>> groups;
  for (int i = 0; i < n; i++) {
    if (!params[i]->grad().defined()) continue;
    auto g = groups.begin();
    while (g != groups.end() && !(lr[g->front()] == lr[i] && wd[g->front()] == wd[i])) ++g;
    if (g == groups.end())
      groups.push_back({i});
    else
      g->push_back(i);
  }
  return groups;
}

// torch's _multi_tensor_sgd (dampening 0, buffers from zero: see torch_ext_fused_sgd), for the
// 16-bit parameters on the CPU, where torch 2.11's fused kernel updates the momentum buffers but
// leaves a parameter of a vector's length or more unchanged (its vectorised path; a 4-element
// bf16 tensor moves, a 64-element one does not). With `found_inf`, on copies written back by
// torch.where.
void foreach_sgd(std::vector<at::Tensor> ps, std::vector<at::Tensor> gs,
                 std::vector<at::Tensor> bufs, double wd, double momentum, double lr,
                 bool nesterov, const std::optional<at::Tensor> &found_inf) {
  std::optional<at::Tensor> skip;
  if (found_inf) skip = found_inf->ne(0);
  auto work = [&](const std::vector<at::Tensor> &ts) {
    std::vector<at::Tensor> out;
    for (const auto &t : ts) out.push_back(skip ? t.clone() : t);
    return out;
  };
  auto p = work(ps), b = work(bufs);
  auto d = wd != 0 ? at::_foreach_add(gs, p, wd) : gs;
  if (momentum != 0) {
    at::_foreach_mul_(b, momentum);
    at::_foreach_add_(b, d, 1.0);
    if (nesterov)
      d = at::_foreach_add(d, b, momentum);
    else
      d = b;
  }
  at::_foreach_add_(p, d, -lr);
  if (!skip) return;
  for (size_t i = 0; i < ps.size(); i++) at::where_out(ps[i], *skip, ps[i], p[i]);
  for (size_t i = 0; i < bufs.size(); i++) at::where_out(bufs[i], *skip, bufs[i], b[i]);
}

}  // namespace

extern "C" {

// One AdamW step over `n` parameters (torch.optim.AdamW(fused=True)'s kernel), parameter i at
// learning rate `lr[i]` and weight decay `wd[i]` (its group's): one kernel per (lr, wd, device,
// dtype). `state_step` is the step count (f32 scalar on the parameters' device), already
// incremented for this step; the kernel reads it for the bias correction. `found_inf`
// (nullable, f32 scalar) makes the kernel leave everything untouched when it holds 1, with no
// host read.
char *torch_ext_fused_adamw(tensor *params, tensor *exp_avgs, tensor *exp_avg_sqs,
                            const double *lr, const double *wd, int n, tensor state_step,
                            double beta1, double beta2, double eps, tensor found_inf) {
  GUARD({
    at::NoGradGuard no_grad;
    std::optional<at::Tensor> inf;
    if (found_inf != nullptr) inf = *found_inf;
    for (const auto &g : by_lr_and_wd(params, lr, wd, n)) {
      std::vector<at::Tensor> ps, gs, ms, vs;
      for (int i : g) {
        ps.push_back(*params[i]);
        gs.push_back(params[i]->grad());
        ms.push_back(*exp_avgs[i]);
        vs.push_back(*exp_avg_sqs[i]);
      }
      for (const auto &idx : by_device_and_dtype(ps)) {
        // One step tensor for every parameter: the kernel only reads it.
        std::vector<at::Tensor> steps(idx.size(), *state_step);
        at::_fused_adamw_(pick(ps, idx), pick(gs, idx), pick(ms, idx), pick(vs, idx), {}, steps,
                          lr[g[0]], beta1, beta2, wd[g[0]], eps, /*amsgrad=*/false,
                          /*maximize=*/false, /*grad_scale=*/std::nullopt, inf);
      }
    }
  })
}

// One SGD step (torch.optim.SGD(fused=True)'s kernel; L2 weight decay added to the gradient,
// momentum, Nesterov), parameter i at `lr[i]` and `wd[i]`, one kernel per (lr, wd, device,
// dtype). The momentum buffers start at zero and every step is a later step: with dampening 0
// that equals torch's first step (buffer = gradient) bit for bit, and a skipped first step
// (`found_inf`) leaves a zero buffer, not an unset one. `momentum` 0: no buffers.
char *torch_ext_fused_sgd(tensor *params, tensor *momentum_buffers, const double *lr,
                          const double *wd, int n, double momentum, int nesterov,
                          tensor found_inf) {
  GUARD({
    at::NoGradGuard no_grad;
    std::optional<at::Tensor> inf;
    if (found_inf != nullptr) inf = *found_inf;
    for (const auto &g : by_lr_and_wd(params, lr, wd, n)) {
      std::vector<at::Tensor> ps, gs, bufs;
      for (int i : g) {
        ps.push_back(*params[i]);
        gs.push_back(params[i]->grad());
        if (momentum != 0) bufs.push_back(*momentum_buffers[i]);
      }
      for (const auto &idx : by_device_and_dtype(ps)) {
        auto b = momentum != 0 ? pick(bufs, idx) : std::vector<at::Tensor>{};
        auto kind = ps[idx[0]].scalar_type();
        if (ps[idx[0]].is_cpu() && kind != at::kFloat && kind != at::kDouble) {
          foreach_sgd(pick(ps, idx), pick(gs, idx), b, wd[g[0]], momentum, lr[g[0]],
                      nesterov != 0, inf);
          continue;
        }
        at::_fused_sgd_(pick(ps, idx), pick(gs, idx), b, wd[g[0]], momentum, lr[g[0]],
                        /*dampening=*/0.0, nesterov != 0, /*maximize=*/false,
                        /*is_first_step=*/false, /*grad_scale=*/std::nullopt, inf);
      }
    }
  })
}

// torch.nn.utils.clip_grad_norm_(params, max_norm, 2.0, foreach=True): the total 2-norm of the
// gradients (each tensor's norm in its own dtype, as _foreach_norm gives it, then in f32), and
// every gradient times min(1, max_norm / (total + 1e-6)), the coefficient never leaving the
// device. `*total_out` gets the norm (f32 scalar; 0 when there is no gradient).
char *torch_ext_clip_grad_norm(tensor *params, int n, double max_norm, tensor *total_out) {
  GUARD({
    at::NoGradGuard no_grad;
    auto grads = grads_of(params, n);
    if (grads.empty()) {
      *total_out = new at::Tensor(at::zeros({}, at::kFloat));
      return nullptr;
    }
    auto groups = by_device_and_dtype(grads);
    std::vector<at::Tensor> norms;
    for (const auto &idx : groups) {
      auto ns = at::_foreach_norm(pick(grads, idx), 2);
      norms.push_back(at::stack(ns).to(grads[0].device(), at::kFloat));
    }
    at::Tensor total = at::linalg_vector_norm(at::cat(norms), 2);
    at::Tensor coef = at::clamp_max(max_norm / (total + 1e-6), 1.0);
    for (const auto &idx : groups) at::_foreach_mul_(pick(grads, idx), coef);
    *total_out = new at::Tensor(total);
  })
}

// GradScaler.unscale_: every gradient times `inv_scale`, and `found_inf` set to 1 when any is
// inf or NaN (_amp_foreach_non_finite_check_and_unscale_, once per dtype).
char *torch_ext_amp_unscale(tensor *params, int n, tensor inv_scale, tensor found_inf) {
  GUARD({
    at::NoGradGuard no_grad;
    auto grads = grads_of(params, n);
    for (const auto &idx : by_device_and_dtype(grads))
      at::_amp_foreach_non_finite_check_and_unscale_(pick(grads, idx), *found_inf, *inv_scale);
  })
}

// optimizer.zero_grad() in torch 2.x (set_to_none=True): the gradients are freed, not zeroed,
// so their memory is free through the next forward. No ATen op runs.
char *torch_ext_set_grads_to_none(tensor *params, int n) {
  GUARD({
    for (int i = 0; i < n; i++) params[i]->mutable_grad().reset();
  })
}

// ---- CUDA backend settings ----------------------------------------------------------------
// OpenCLIP's main.py on CUDA: torch.backends.cuda.matmul.allow_tf32 = True,
// torch.backends.cudnn.benchmark = True, cudnn.deterministic = False (cuDNN's TF32 is torch's
// default, on). These are process-wide flags in libtorch's global context. `deterministic`:
// cudnn.deterministic and torch.use_deterministic_algorithms(True, warn_only=True), for runs
// compared bit for bit.

char *torch_ext_set_cuda_backend(int cudnn_benchmark, int tf32, int deterministic) {
  GUARD({
    auto &ctx = at::globalContext();
    ctx.setBenchmarkCuDNN(cudnn_benchmark != 0);
    ctx.setDeterministicCuDNN(deterministic != 0);
    ctx.setDeterministicAlgorithms(deterministic != 0, /*warn_only=*/true);
    ctx.setAllowTF32CuBLAS(tf32 != 0);
    ctx.setAllowTF32CuDNN(tf32 != 0);
  })
}

char *torch_ext_get_cuda_backend(int *cudnn_benchmark, int *tf32_cublas, int *tf32_cudnn,
                                 int *deterministic) {
  GUARD({
    auto &ctx = at::globalContext();
    *cudnn_benchmark = ctx.benchmarkCuDNN() ? 1 : 0;
    *tf32_cublas = ctx.allowTF32CuBLAS() ? 1 : 0;
    *tf32_cudnn = ctx.allowTF32CuDNN() ? 1 : 0;
    *deterministic = ctx.deterministicCuDNN() && ctx.deterministicAlgorithms() ? 1 : 0;
  })
}

}  // extern "C"
