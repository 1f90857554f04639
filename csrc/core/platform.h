// Torch-free portability layer shared by the CPU and CUDA kernels: the
// host/device qualifier, bit casts, and the 16-bit float storage types.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__)
#define LSE_HD __host__ __device__ __forceinline__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#else
#define LSE_HD inline __attribute__((always_inline))
#endif

namespace lse {

LSE_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

LSE_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

// IEEE binary16 and bfloat16 storage. Layout-compatible with at::Half,
// at::BFloat16, __half and __nv_bfloat16 (one 16-bit payload), so the torch
// glue can reinterpret its data pointers as these types.
struct half_t {
  uint16_t bits;
};
struct bfloat16_t {
  uint16_t bits;
};
static_assert(sizeof(half_t) == 2 && sizeof(bfloat16_t) == 2, "16-bit storage types");

// Exact binary16 -> binary32 for every input (normals, subnormals, zeros,
// infinities, NaN). Branch-free so that loops over it vectorise: normals and
// infinities/NaN rebias the exponent by a multiply; subnormals are rebuilt by
// subtracting a magic bias from a float whose mantissa holds them.
LSE_HD float half_bits_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;  // exponent + mantissa, sign shifted out
  // Shift the 5-bit exponent into the 8-bit field and add 224 to the biased
  // exponent (so 31 -> 255 for inf/NaN), then scale by 2^-112 to fix normals.
  const float normal = bits_to_float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  // Subnormal: mantissa m placed under exponent 126 gives 0.5 + m * 2^-24.
  const float subnormal = bits_to_float((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t magnitude =
      two_w < (1u << 27) ? float_to_bits(subnormal) : float_to_bits(normal);
  return bits_to_float(sign | magnitude);
}

LSE_HD float to_float(float x) { return x; }

LSE_HD float to_float(half_t x) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(x.bits));
#else
  return half_bits_to_float(x.bits);
#endif
}

LSE_HD float to_float(bfloat16_t x) {
  return bits_to_float(static_cast<uint32_t>(x.bits) << 16);
}

// binary32 -> binary16, round to nearest even, overflow to inf, NaN kept
// (quiet). Branch-free: scaling by 2^112 then 2^-110 lets the float adder do
// the rounding of normals and subnormals alike.
LSE_HD uint16_t float_to_half_bits(float f) {
  const uint32_t w = float_to_bits(f);
  const uint32_t shl1_w = w + w;  // sign shifted out
  const uint32_t sign = w & 0x80000000u;
  const float magnitude = bits_to_float(shl1_w >> 1);
  float base = (magnitude * 0x1.0p+112f) * 0x1.0p-110f;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = bits_to_float((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = float_to_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

// binary32 -> bfloat16, round to nearest even, NaN kept (quiet).
LSE_HD uint16_t float_to_bf16_bits(float f) {
  const uint32_t w = float_to_bits(f);
  const uint32_t rounded = (w + 0x7FFFu + ((w >> 16) & 1u)) >> 16;
  const bool is_nan = (w & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<uint16_t>(is_nan ? ((w >> 16) | 0x0040u) : rounded);
}

template <typename T>
LSE_HD T from_float(float x);
template <>
LSE_HD float from_float<float>(float x) { return x; }
template <>
LSE_HD half_t from_float<half_t>(float x) {
#if defined(__CUDA_ARCH__)
  return half_t{__half_as_ushort(__float2half_rn(x))};
#else
  return half_t{float_to_half_bits(x)};
#endif
}
template <>
LSE_HD bfloat16_t from_float<bfloat16_t>(float x) { return bfloat16_t{float_to_bf16_bits(x)}; }

// Element types a kernel may be launched with; the torch glue maps
// ScalarType onto this so the launchers stay torch-free.
enum class FloatKind : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

// Kernels accumulate in double for double data and in float otherwise:
// acc_t<T> is that type (the one definition every kernel uses), to_acc
// widens a stored element, from_acc<T> rounds an accumulator back.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

LSE_HD double to_acc(double x) { return x; }
LSE_HD float to_acc(float x) { return x; }
LSE_HD float to_acc(half_t x) { return to_float(x); }
LSE_HD float to_acc(bfloat16_t x) { return to_float(x); }

template <typename T, typename A>
LSE_HD T from_acc(A x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return from_float<T>(static_cast<float>(x));
  }
}

}  // namespace lse
