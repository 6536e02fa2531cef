// libtorch's step profiler for `--profile-steps` (clip-train): Kineto started and stopped from
// Rust, the Chrome trace saved as torch.profiler's `export_chrome_trace` writes it, and named
// user ranges (Python's `torch.profiler.record_function`). Kept apart from shim.cpp so the
// helpers working on the other shim entry points merge without conflicts; the error
// convention is guard.h's (a malloc'd message, freed by torch_ext_free).
#include "guard.h"
#include <ATen/record_function.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string>

namespace {

namespace prof = torch::autograd::profiler;
namespace impl = torch::profiler::impl;

// One named range: the RecordFunction and the name it points to live together until the
// range ends (RecordFunction keeps a view of the name).
struct Range {
  std::string name;
  at::RecordFunction record;
  explicit Range(const char *n) : name(n), record(at::RecordScope::USER_SCOPE) {}
};

}  // namespace

extern "C" {

// Starts Kineto on this thread (and the autograd threads it starts): CPU ops, and CUDA
// kernels and copies when `cuda` is set — torch.profiler.profile's default activities.
char *torch_ext_profiler_start(int cuda) {
  GUARD({
    std::set<impl::ActivityType> activities{impl::ActivityType::CPU};
    if (cuda) activities.insert(impl::ActivityType::CUDA);
    impl::ProfilerConfig config(impl::ProfilerState::KINETO);
    prof::prepareProfiler(config, activities);
    prof::enableProfiler(config, activities);
  })
}

// Stops the profiler and writes the Chrome trace (`traceEvents`) to `path`.
char *torch_ext_profiler_stop(const char *path) {
  GUARD({
    auto result = prof::disableProfiler();
    result->save(path);
  })
}

// Opens a named range; null when no profiler listens (nothing to close).
char *torch_ext_range_start(const char *name, void **out) {
  GUARD({
    *out = nullptr;
    auto range = std::make_unique<Range>(name);
    if (range->record.isActive()) {
      range->record.before(std::string_view(range->name), c10::ArrayRef<const c10::IValue>{});
      *out = range.release();
    }
  })
}

char *torch_ext_range_end(void *range) {
  GUARD({
    std::unique_ptr<Range> r(static_cast<Range *>(range));
    r->record.end();
  })
}

}  // extern "C"
