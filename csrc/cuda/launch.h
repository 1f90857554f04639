// Launch geometry shared by the one-thread-per-output-pixel CUDA kernels.
#pragma once

#include <cstdint>

namespace lse::cuda {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t count) {
  return static_cast<unsigned int>((count + kThreads - 1) / kThreads);
}

}  // namespace lse::cuda
