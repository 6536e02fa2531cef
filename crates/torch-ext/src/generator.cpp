// A CPU random generator of its own (at::Generator), for draws off the training thread that
// must not touch libtorch's default generator (which the step reseeds). Seeded with s, it
// draws exactly what `torch.manual_seed(s)` then the same calls on the default generator draw.
// Error convention: shim.cpp's (a malloc'd message, freed by torch_ext_free).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace {

char *generator_message(const std::string &s) {
  char *out = static_cast<char *>(std::malloc(s.size() + 1));
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

#define GENERATOR_GUARD(...)                                                             \
  try {                                                                                  \
    __VA_ARGS__;                                                                         \
    return nullptr;                                                                      \
  } catch (const c10::Error &e) {                                                        \
    return generator_message(e.what_without_backtrace());                                \
  } catch (const std::exception &e) {                                                    \
    return generator_message(e.what());                                                  \
  }

}  // namespace

extern "C" {

char *torch_ext_generator_new(int64_t seed, void **out) {
  GENERATOR_GUARD({ *out = new at::Generator(at::detail::createCPUGenerator(seed)); })
}

void torch_ext_generator_free(void *gen) { delete static_cast<at::Generator *>(gen); }

// f32 N(0, 1) of the given shape, on the CPU.
char *torch_ext_generator_randn(void *gen, const int64_t *sizes, int n, at::Tensor **out) {
  GENERATOR_GUARD({
    auto g = *static_cast<at::Generator *>(gen);
    *out = new at::Tensor(at::randn(at::IntArrayRef(sizes, n), g, at::kFloat));
  })
}

// i64 uniform in [low, high) of the given shape, on the CPU.
char *torch_ext_generator_randint(void *gen, int64_t low, int64_t high, const int64_t *sizes,
                                  int n, at::Tensor **out) {
  GENERATOR_GUARD({
    auto g = *static_cast<at::Generator *>(gen);
    *out = new at::Tensor(at::randint(low, high, at::IntArrayRef(sizes, n), g, at::kLong));
  })
}

}  // extern "C"
