// The error convention of every torch-ext entry point (shim.cpp, optim.cpp, grad_hooks.cpp,
// profiler.cpp, generator.cpp, cuda.cpp, pinned.cpp, finite.cpp): no C++ exception crosses into
// Rust; a failure comes back as a malloc'd message (freed by Rust with torch_ext_free), success as
// nullptr.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

inline char *torch_ext_message(const std::string &s) {
  char *out = static_cast<char *>(std::malloc(s.size() + 1));
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

// Runs the statements; returns nullptr, or the message of what they threw.
#define GUARD(...)                                                                       \
  try {                                                                                  \
    __VA_ARGS__;                                                                         \
    return nullptr;                                                                      \
  } catch (const c10::Error &e) {                                                        \
    return torch_ext_message(e.what_without_backtrace());                                \
  } catch (const std::exception &e) {                                                    \
    return torch_ext_message(e.what());                                                  \
  }
