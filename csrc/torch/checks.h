// Argument checks that name the argument and say what is supported.
#pragma once

#include <ATen/ATen.h>

#include "cpu/isa.h"

#define LSE_CHECK_ARG(op, cond, name, ...) \
  TORCH_CHECK(cond, "lse_fast.", op, ": `", name, "` ", __VA_ARGS__)

#define LSE_CHECK_DIM(op, x, ndim, layout)                                                  \
  LSE_CHECK_ARG(op, (x).dim() == (ndim), #x, "must have ", ndim, " dimensions ", layout,   \
                ", got shape ", (x).sizes())

#define LSE_CHECK_FLOATING(op, x)                                                           \
  LSE_CHECK_ARG(op,                                                                         \
                (x).scalar_type() == at::kFloat || (x).scalar_type() == at::kHalf ||        \
                    (x).scalar_type() == at::kBFloat16,                                     \
                #x, "must be float32, float16 or bfloat16, got ", (x).scalar_type())

#define LSE_CHECK_DEVICE(op, x, device_type)                                                \
  LSE_CHECK_ARG(op, (x).device().type() == (device_type), #x, "must be on ", device_type,   \
                ", got ", (x).device())

// Every CPU op calls this before its kernels: an invalid LSE_FAST_CPU_ISA
// (cpu/isa.h) is an error naming the variable, never a silent fallback.
#define LSE_CHECK_CPU_ISA(op)                                                              \
  TORCH_CHECK(::lse::cpu::cpu_isa_choice().error.empty(), "lse_fast.", op, ": ",            \
              ::lse::cpu::cpu_isa_choice().error)
