// The few libtorch entry points tch 0.24 does not bind. Every function catches C++ exceptions
// and reports them as a malloc'd message (freed by Rust with torch_ext_free), so no exception
// ever unwinds into Rust.
#include "guard.h"
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

typedef at::Tensor *tensor;

static at::DeviceType device_type(int device) {
  return device == 1 ? at::kCUDA : at::kCPU;
}

extern "C" {

void torch_ext_free(char *p) { std::free(p); }

// ---- autocast -------------------------------------------------------------------------
// tch's autocast only toggles the flag (fp16 on CUDA); these also set the dtype, per device.

char *torch_ext_autocast_enter(int device, int dtype, int *prev_enabled, int *prev_dtype) {
  GUARD({
    auto dt = device_type(device);
    *prev_enabled = at::autocast::is_autocast_enabled(dt) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dt));
    at::autocast::set_autocast_dtype(dt, static_cast<at::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(dt, true);
    at::autocast::increment_nesting();
  })
}

char *torch_ext_autocast_exit(int device, int prev_enabled, int prev_dtype) {
  GUARD({
    auto dt = device_type(device);
    at::autocast::set_autocast_enabled(dt, prev_enabled != 0);
    at::autocast::set_autocast_dtype(dt, static_cast<at::ScalarType>(prev_dtype));
    // Weights cast to the low precision are cached while autocast is on; drop them when
    // the outermost region ends, as torch.autocast.__exit__ does.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  })
}

// ---- gradient checkpointing ----------------------------------------------------------
// An autograd node whose forward runs a Rust closure without recording a graph, and whose
// backward re-runs it with grad enabled (under the autocast state of the forward) and
// differentiates it. The closure's parameters are the node's inputs, so their gradients flow
// through the engine like any other op's.

typedef tensor (*rust_call_t)(void *ctx, tensor input);
typedef void (*rust_drop_t)(void *ctx);

struct RustClosure {
  void *ctx;
  rust_call_t call;
  rust_drop_t drop;
  ~RustClosure() { drop(ctx); }
  at::Tensor run(const at::Tensor &x) {
    at::Tensor in = x;
    tensor out = call(ctx, &in);
    if (out == nullptr) throw std::runtime_error("checkpointed closure failed (see the panic above)");
    at::Tensor result = *out;
    delete out;
    return result;
  }
};

struct AutocastState {
  bool enabled[2];
  at::ScalarType dtype[2];
  static AutocastState capture() {
    AutocastState s;
    for (int d = 0; d < 2; d++) {
      s.enabled[d] = at::autocast::is_autocast_enabled(device_type(d));
      s.dtype[d] = at::autocast::get_autocast_dtype(device_type(d));
    }
    return s;
  }
  void apply() const {
    for (int d = 0; d < 2; d++) {
      at::autocast::set_autocast_enabled(device_type(d), enabled[d]);
      at::autocast::set_autocast_dtype(device_type(d), dtype[d]);
    }
  }
};

// A hand-made autograd node rather than torch::autograd::Function: it holds the Rust closure
// and the autocast state as plain members (Function's saved_data only takes IValues).
struct CheckpointNode : public torch::autograd::Node {
  std::shared_ptr<RustClosure> closure;
  AutocastState autocast;
  at::Tensor x;  // detached input
  bool x_needs_grad = false;
  std::vector<at::Tensor> params;

  std::string name() const override { return "CheckpointBackward"; }

  torch::autograd::variable_list apply(torch::autograd::variable_list &&grad_out) override {
    if (!closure) throw std::runtime_error("checkpointed block: backward called twice");
    at::Tensor input = x.detach();
    input.requires_grad_(x_needs_grad);

    AutocastState before = AutocastState::capture();
    autocast.apply();
    at::autocast::increment_nesting();
    at::Tensor y;
    {
      at::AutoGradMode grad_on(true);
      y = closure->run(input);
    }
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    before.apply();

    // Frozen parameters (--lock-image / --lock-text) get no gradient: autograd::grad refuses
    // tensors that do not require one.
    std::vector<at::Tensor> inputs;
    if (x_needs_grad) inputs.push_back(input);
    for (auto &p : params)
      if (p.requires_grad()) inputs.push_back(p);
    torch::autograd::variable_list grads(inputs.size());
    if (!inputs.empty() && y.requires_grad() && grad_out[0].defined()) {
      grads = torch::autograd::grad({y}, inputs, {grad_out[0]}, /*retain_graph=*/false,
                                    /*create_graph=*/false, /*allow_unused=*/true);
    }
    torch::autograd::variable_list result;
    size_t i = 0;
    result.push_back(x_needs_grad ? grads[i++] : at::Tensor());
    for (auto &p : params) result.push_back(p.requires_grad() ? grads[i++] : at::Tensor());
    release_variables();
    return result;
  }

  void release_variables() override {
    x.reset();
    params.clear();
    closure.reset();
  }
};

// Runs `call(ctx, x)` with checkpointing. `params` must be the tensors requiring grad that the
// closure reads (a block's parameters); `drop(ctx)` is called once the graph no longer needs it.
char *torch_ext_checkpoint(tensor x, tensor *params, int n_params, void *ctx, rust_call_t call,
                           rust_drop_t drop, tensor *out) {
  auto closure = std::shared_ptr<RustClosure>(new RustClosure{ctx, call, drop});
  GUARD({
    std::vector<at::Tensor> ps;
    bool any_grad = x->requires_grad();
    for (int i = 0; i < n_params; i++) {
      ps.push_back(*params[i]);
      any_grad = any_grad || params[i]->requires_grad();
    }
    at::Tensor y;
    {
      at::NoGradGuard no_grad;
      y = closure->run(*x);
      // The output gets this node as its grad_fn; a view would carry its base's history.
      if (y.is_view()) y = y.clone();
    }
    if (any_grad && at::GradMode::is_enabled()) {
      auto node = std::shared_ptr<CheckpointNode>(new CheckpointNode(), torch::autograd::deleteNode);
      node->set_next_edges(torch::autograd::collect_next_edges(*x, ps));
      node->closure = closure;
      node->autocast = AutocastState::capture();
      node->x = x->detach();
      node->x_needs_grad = x->requires_grad();
      node->params = ps;
      torch::autograd::create_gradient_edge(y, node);
    }
    *out = new at::Tensor(y);
  })
}

}  // extern "C"

// ---------------------------------------------------------------------------------------------
// GPU memory measured on the GPU (clip-tool bench-model --device cuda): the caching allocator's
// statistics go through c10::DeviceAllocator (c10/core, no CUDA headers needed). Streams, events
// and GPU timing are in cuda.cpp.
#include <c10/core/CachingDeviceAllocator.h>

extern "C" char *torch_ext_cuda_memory_peaks(int device, int64_t *allocated, int64_t *reserved) {
  GUARD({
    auto stats = c10::getDeviceAllocator(c10::kCUDA)->getDeviceStats(device);
    auto all = static_cast<size_t>(c10::CachingDeviceAllocator::StatType::AGGREGATE);
    *allocated = stats.allocated_bytes[all].peak;
    *reserved = stats.reserved_bytes[all].peak;
  })
}

extern "C" char *torch_ext_cuda_reset_peak_memory(int device) {
  GUARD(c10::getDeviceAllocator(c10::kCUDA)->resetPeakStats(device))
}
