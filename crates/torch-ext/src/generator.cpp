// A CPU random generator of its own (at::Generator), for draws off the training thread that
// must not touch libtorch's default generator (which the step reseeds). Seeded with s, it
// draws exactly what `torch.manual_seed(s)` then the same calls on the default generator draw.
// Error convention: guard.h's (a malloc'd message, freed by torch_ext_free).
#include "guard.h"
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdlib>
#include <cstring>
#include <string>

extern "C" {

char *torch_ext_generator_new(int64_t seed, void **out) {
  GUARD({ *out = new at::Generator(at::detail::createCPUGenerator(seed)); })
}

void torch_ext_generator_free(void *gen) { delete static_cast<at::Generator *>(gen); }

// f32 N(0, 1) of the given shape, on the CPU.
char *torch_ext_generator_randn(void *gen, const int64_t *sizes, int n, at::Tensor **out) {
  GUARD({
    auto g = *static_cast<at::Generator *>(gen);
    *out = new at::Tensor(at::randn(at::IntArrayRef(sizes, n), g, at::kFloat));
  })
}

// i64 uniform in [low, high) of the given shape, on the CPU.
char *torch_ext_generator_randint(void *gen, int64_t low, int64_t high, const int64_t *sizes,
                                  int n, at::Tensor **out) {
  GUARD({
    auto g = *static_cast<at::Generator *>(gen);
    *out = new at::Tensor(at::randint(low, high, at::IntArrayRef(sizes, n), g, at::kLong));
  })
}

}  // extern "C"
