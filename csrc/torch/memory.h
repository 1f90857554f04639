// Allocation helpers for large outputs that a kernel overwrites completely.
#pragma once

#include <ATen/ATen.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <cstdint>
#include <cstdlib>
#include <mutex>

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

// A logits-sized CPU buffer that a kernel overwrites completely and that is
// freed again soon after, as the focal loss's gradient is in every training
// step. Fresh memory of that size comes from mmap and costs a page fault
// and a kernel-side zeroing per page on first touch, about a third of the
// fused loss's time on a 2-core CPU; so the most recently freed such buffer
// (one, >= 8 MiB) is kept and handed out again for the same size. At most
// one buffer is held; a different size frees it.
class ReusableCpuBuffer {
 public:
  static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    const size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) * options.dtype().itemsize();
    constexpr size_t kMin = size_t{8} << 20;
    if (!options.device().is_cpu() || bytes < kMin) return empty_for_overwrite(sizes, options);
    void* p = instance().take(bytes);
    if (p == nullptr) {
      constexpr size_t kHuge = size_t{2} << 20;
      const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
      p = std::aligned_alloc(kHuge, rounded);
      TORCH_CHECK(p != nullptr, "lse_fast: could not allocate ", bytes, " bytes");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      madvise(p, rounded, MADV_HUGEPAGE);
#endif
    }
    return at::from_blob(
        p, sizes, [bytes](void* q) { instance().give_back(q, bytes); }, options);
  }

 private:
  static ReusableCpuBuffer& instance() {
    static ReusableCpuBuffer* cache = new ReusableCpuBuffer();  // never destroyed: deleters may run at exit
    return *cache;
  }
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (ptr_ == nullptr || bytes_ != bytes) return nullptr;
    void* p = ptr_;
    ptr_ = nullptr;
    return p;
  }
  void give_back(void* p, size_t bytes) {
    void* drop = p;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (ptr_ == nullptr || bytes_ != bytes) std::swap(ptr_, drop), bytes_ = bytes;
    }
    std::free(drop);  // the previous buffer of another size, or p when one of this size is held
  }
  std::mutex mutex_;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace lse::torch_ops
