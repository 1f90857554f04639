// Argument checks that name the argument and say what is supported.
//
// Each op's checks are written once, in its csrc/torch/<op>_op.h, with
// these macros; its CPU and CUDA kernels and its Meta kernel (what
// torch.compile and FakeTensorMode run) all call them, so eager and
// compiled errors are the same text (tests/test_census_ops.py). Sizes are
// read as SymInts (sym_size), which the Meta kernel sees under dynamic
// shapes; in eager they are plain integers. Dtypes print as Python does
// ("torch.float32") and sizes as lists.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>

#include "cpu/isa.h"

namespace lse::torch_ops {

// A dtype as Python prints it.
inline std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kShort: return "torch.int16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(t);
  }
}

}  // namespace lse::torch_ops

#define LSE_CHECK_ARG(op, cond, name, ...) \
  TORCH_CHECK(cond, "lse_fast.", op, ": `", name, "` ", __VA_ARGS__)

#define LSE_CHECK_DIM(op, x, ndim, layout)                                                  \
  LSE_CHECK_ARG(op, (x).dim() == (ndim), #x, "must have ", ndim, " dimensions ", layout,   \
                ", got shape ", (x).sym_sizes())

#define LSE_CHECK_FLOATING(op, x)                                                           \
  LSE_CHECK_ARG(op,                                                                         \
                (x).scalar_type() == at::kFloat || (x).scalar_type() == at::kHalf ||        \
                    (x).scalar_type() == at::kBFloat16,                                     \
                #x, "must be float32, float16 or bfloat16, got ",                          \
                ::lse::torch_ops::dtype_name((x).scalar_type()))

#define LSE_CHECK_DEVICE(op, x, device_type)                                                \
  LSE_CHECK_ARG(op, (x).device().type() == (device_type), #x, "must be on ", device_type,   \
                ", got ", (x).device())

// Every CPU op calls this before its kernels: an invalid LSE_FAST_CPU_ISA
// (cpu/isa.h) is an error naming the variable, never a silent fallback.
#define LSE_CHECK_CPU_ISA(op)                                                              \
  TORCH_CHECK(::lse::cpu::cpu_isa_choice().error.empty(), "lse_fast.", op, ": ",            \
              ::lse::cpu::cpu_isa_choice().error)

namespace lse::torch_ops {

// An output (height, width): the taps are computed in float, exact for
// indices up to 2^24, so each side is in [1, 2^24].
inline std::pair<int64_t, int64_t> check_out_size(const char* op, at::IntArrayRef size,
                                                  const char* name) {
  constexpr int64_t kMaxSide = int64_t{1} << 24;
  LSE_CHECK_ARG(op, size.size() == 2 && size[0] > 0 && size[1] > 0 && size[0] <= kMaxSide && size[1] <= kMaxSide,
                name, "must be (height, width) with sizes in [1, 16777216], got ", size);
  return {size[0], size[1]};
}

}  // namespace lse::torch_ops
