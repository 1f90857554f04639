// Run-time choice between the AVX2+FMA and the baseline compile of a hot
// loop: kernels define a body once (LSE_HD, always inlined) and two thin
// wrappers, one marked LSE_TARGET_AVX2, and pick one with cpu_has_avx2_fma().
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define LSE_X86_DISPATCH 1
#define LSE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define LSE_X86_DISPATCH 0
#endif

namespace lse::cpu {

inline bool cpu_has_avx2_fma() {
#if LSE_X86_DISPATCH
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

}  // namespace lse::cpu
