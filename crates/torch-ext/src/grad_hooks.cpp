// Gradient hooks for data parallelism (DDP's reducer), kept apart from shim.cpp: a hook that
// tells Rust when a parameter's gradient has been accumulated, and the `.grad` setter tch does
// not bind (to make each gradient a view into a flat bucket). Errors come back as malloc'd
// messages, freed by Rust with torch_ext_free, so no exception unwinds into Rust.
#include "guard.h"
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

namespace {

typedef void (*rust_ready_t)(void *ctx);
typedef void (*rust_drop_t)(void *ctx);

// A Rust callback owned by a tensor hook: dropped with the graph node that holds the hook.
struct RustCallback {
  void *ctx;
  rust_ready_t call;
  rust_drop_t drop;
  RustCallback(void *c, rust_ready_t f, rust_drop_t d) : ctx(c), call(f), drop(d) {}
  ~RustCallback() { drop(ctx); }
};

// Runs after AccumulateGrad has added this backward's gradient into the parameter's `.grad`
// (torch's register_post_accumulate_grad_hook; DDP hooks the same AccumulateGrad node).
struct RustPostAccumulateGradHook : public torch::autograd::PostAccumulateGradHook {
  void *ctx;
  rust_ready_t ready;
  RustPostAccumulateGradHook(void *c, rust_ready_t r) : ctx(c), ready(r) {}
  void operator()(const torch::autograd::Variable &) override { ready(ctx); }
};

}  // namespace

extern "C" {

// Replaces the post-accumulate-grad hook of leaf `param` with `ready(ctx)` (`ready` null:
// removes it). `ctx` must outlive the hook.
char *torch_ext_set_post_accumulate_grad_hook(at::Tensor *param, void *ctx, rust_ready_t ready) {
  GUARD({
    TORCH_CHECK(param->is_leaf() && param->requires_grad(),
                "a post-accumulate-grad hook needs a leaf tensor that requires grad");
    std::unique_ptr<torch::autograd::PostAccumulateGradHook> hook;
    if (ready != nullptr) hook.reset(new RustPostAccumulateGradHook(ctx, ready));
    torch::autograd::impl::set_post_acc_grad_hooks(*param, std::move(hook));
  })
}

// `param.grad = grad` (same shape, dtype and device; any view of a larger buffer).
char *torch_ext_set_grad(at::Tensor *param, at::Tensor *grad) {
  GUARD({
    TORCH_CHECK(grad->sizes() == param->sizes() && grad->dtype() == param->dtype() &&
                    grad->device() == param->device(),
                "a gradient must have its parameter's shape, dtype and device");
    param->mutable_grad() = *grad;
  })
}

// `call(ctx)` when the backward has computed the gradient of `t` (a tensor requiring grad), before
// that gradient flows on into `t`'s grad_fn (torch's `Tensor.register_hook`). Takes ownership of
// `ctx` at once: `drop(ctx)` runs when the hook goes with the graph, or now if this fails.
char *torch_ext_on_grad(at::Tensor *t, void *ctx, rust_ready_t call, rust_drop_t drop) {
  auto cb = std::make_shared<RustCallback>(ctx, call, drop);
  GUARD({
    TORCH_CHECK(t->requires_grad(), "a gradient hook needs a tensor that requires grad");
    t->register_hook([cb](const at::TensorBase &) { cb->call(cb->ctx); });
  })
}

}  // extern "C"
