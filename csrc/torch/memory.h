// Allocation helpers for large outputs that a kernel overwrites completely.
#pragma once

#include <ATen/ATen.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>

namespace lse::torch_ops {

// at::empty, plus (Linux, CPU, >= 8 MiB) advice to back the buffer with
// transparent huge pages before its first touch. A fresh logits-sized
// buffer otherwise costs one page fault per 4 KiB when the kernel first
// writes it, which here is as slow as the kernel itself. Advice only: a
// kernel configured without THP ignores it and nothing changes.
inline at::Tensor empty_for_overwrite(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const size_t bytes = t.nbytes();
  if (t.device().is_cpu() && bytes >= 4 * kHuge) {
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data_ptr()) + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data_ptr()) + bytes) & ~(kHuge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
  return t;
}

}  // namespace lse::torch_ops
