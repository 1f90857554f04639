// Run-time choice between the AVX2+FMA and the portable (baseline ISA)
// compile of the CPU kernels' hot loops, defined once for every kernel.
//
// A kernel writes its loop once as an always-inlined body (LSE_HD) and
// declares `LSE_CPU_DISPATCH(name, body)`: that defines `name(args...)`,
// which runs `body(args...)` compiled for AVX2+FMA when active_cpu_isa() is
// Avx2Fma and compiled for the baseline ISA otherwise.
//
// The environment variable LSE_FAST_CPU_ISA, read once at the first
// dispatch, picks the path:
//   unset, "" or "auto"  AVX2+FMA when the CPU has both, else portable
//   "portable"           the baseline path on any CPU (what older or
//                        non-x86 CPUs run; the test suite runs it too)
//   "avx2"               AVX2+FMA, an error on a CPU without it
// Any other value is an error that names the variable and these values.
#pragma once

#include <cstdlib>
#include <string>
#include <utility>

#if defined(__x86_64__) && defined(__GNUC__)
#define LSE_X86_DISPATCH 1
#define LSE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define LSE_X86_DISPATCH 0
#endif

namespace lse::cpu {

enum class CpuIsa : int { Portable = 0, Avx2Fma = 1 };

inline const char* cpu_isa_name(CpuIsa isa) { return isa == CpuIsa::Avx2Fma ? "avx2" : "portable"; }

inline bool cpu_has_avx2_fma() {
#if LSE_X86_DISPATCH
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

struct CpuIsaChoice {
  CpuIsa isa = CpuIsa::Portable;
  std::string error;  // empty when `value` was valid
};

// The path for a value of LSE_FAST_CPU_ISA (nullptr when unset) on a CPU
// with or without AVX2+FMA. Pure, so the C++ tests cover every value.
inline CpuIsaChoice parse_cpu_isa(const char* value, bool has_avx2_fma) {
  CpuIsaChoice c;
  const std::string v = value == nullptr ? "" : value;
  if (v.empty() || v == "auto") {
    c.isa = has_avx2_fma ? CpuIsa::Avx2Fma : CpuIsa::Portable;
  } else if (v == "portable") {
    c.isa = CpuIsa::Portable;
  } else if (v == "avx2") {
    if (has_avx2_fma) {
      c.isa = CpuIsa::Avx2Fma;
    } else {
      c.error = "LSE_FAST_CPU_ISA=avx2, but this CPU (or this build) has no AVX2+FMA path; "
                "unset it or use LSE_FAST_CPU_ISA=portable";
    }
  } else {
    c.error = "LSE_FAST_CPU_ISA must be unset, 'auto', 'portable' or 'avx2', got '" + v + "'";
  }
  return c;
}

// The process-wide choice, made once from the environment at first use.
inline const CpuIsaChoice& cpu_isa_choice() {
  static const CpuIsaChoice choice = parse_cpu_isa(std::getenv("LSE_FAST_CPU_ISA"), cpu_has_avx2_fma());
  return choice;
}

// The path the kernels run (portable when the variable was invalid; the
// torch glue reports that error before any kernel runs).
inline CpuIsa active_cpu_isa() { return cpu_isa_choice().isa; }

}  // namespace lse::cpu

// Defines NAME(args...) running BODY(args...) on the active ISA's compile.
// BODY must be an always-inlined function (template or not) so that each
// variant holds its own copy of the loop, compiled for its ISA.
#if LSE_X86_DISPATCH
#define LSE_CPU_DISPATCH(NAME, BODY)                                              \
  template <typename... Args>                                                     \
  decltype(auto) NAME##_portable(Args&&... args) {                                \
    return BODY(std::forward<Args>(args)...);                                     \
  }                                                                               \
  template <typename... Args>                                                     \
  LSE_TARGET_AVX2 decltype(auto) NAME##_avx2(Args&&... args) {                    \
    return BODY(std::forward<Args>(args)...);                                     \
  }                                                                               \
  template <typename... Args>                                                     \
  decltype(auto) NAME(Args&&... args) {                                           \
    if (::lse::cpu::active_cpu_isa() == ::lse::cpu::CpuIsa::Avx2Fma) {            \
      return NAME##_avx2(std::forward<Args>(args)...);                            \
    }                                                                             \
    return NAME##_portable(std::forward<Args>(args)...);                          \
  }
#else
#define LSE_CPU_DISPATCH(NAME, BODY)                                              \
  template <typename... Args>                                                     \
  decltype(auto) NAME(Args&&... args) {                                           \
    return BODY(std::forward<Args>(args)...);                                     \
  }
#endif
