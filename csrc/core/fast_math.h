// Branch-free exp and log used by every kernel (CPU and CUDA alike), so that
// the CPU tests exercise exactly the arithmetic the GPU runs. Written with
// selects instead of branches or libm calls so GCC vectorises loops over them
// without -ffast-math; accuracy is checked against libm in tests/cpp.
#pragma once

#include "core/platform.h"

namespace lse {

// exp(z) for z <= 0; returns 0 below -87.3 (where exp underflows float's
// normal range) and NaN for NaN. Max relative error about 2 ulp.
LSE_HD float exp_nonpos(float z) {
  constexpr float kLowest = -87.3f;
  constexpr float kLog2e = 1.44269504088896341f;
  // ln 2 split so that n * kLn2Hi is exact for |n| < 2^15 (Cody-Waite).
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  // zc is never NaN and never below kLowest, so n lies in [-126, 0] and the
  // scaled result below is always a normal float: no lane of a vectorised
  // loop ever produces a subnormal (which costs x86 a microcode assist).
  const float zc = z >= kLowest ? z : kLowest;
  const float n = (zc * kLog2e + kRound) - kRound;
  const float r = (zc - n * kLn2Hi) - n * kLn2Lo;  // |r| <= ln2 / 2
  // Minimax polynomial for (exp(r) - 1 - r) / r^2 on |r| <= ln2/2.
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * (r * r) + r + 1.0f;
  const float two_n = bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  // z - z is 0 for finite z and NaN for NaN, which it passes on.
  return z < kLowest ? 0.0f : er * two_n + (z - z);
}

// log(s) for finite s >= 1 (the softmax denominator, which is in [1, C]),
// and NaN for NaN (a NaN logit makes the denominator NaN, and the loss and
// entropy built on it must stay NaN). Max relative error about 2 ulp.
LSE_HD float log_ge1(float s) {
  constexpr float kSqrt2 = 1.41421356237309505f;
  const uint32_t bits = float_to_bits(s);
  const int32_t e = static_cast<int32_t>(bits >> 23) - 127;
  const float m = bits_to_float((bits & 0x007FFFFFu) | 0x3F800000u);  // [1, 2)
  const bool big = m > kSqrt2;
  const float mr = big ? m * 0.5f : m;  // [sqrt(1/2), sqrt(2)]
  const float er = static_cast<float>(big ? e + 1 : e);
  // log(1 + u) = u - u^2/2 + u^3 P(u) on u in [sqrt(1/2) - 1, sqrt(2) - 1]
  // (minimax P), with ln 2 split so that er * kLn2Hi is exact.
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  const float u = mr - 1.0f;  // exact
  const float u2 = u * u;
  float q = 7.0376836292e-2f;
  q = q * u - 1.1514610310e-1f;
  q = q * u + 1.1676998740e-1f;
  q = q * u - 1.2420140846e-1f;
  q = q * u + 1.4249322787e-1f;
  q = q * u - 1.6668057665e-1f;
  q = q * u + 2.0000714765e-1f;
  q = q * u - 2.4999993993e-1f;
  q = q * u + 3.3333331174e-1f;
  const float tail = (q * u * u2 + er * kLn2Lo) - 0.5f * u2;
  // s - s is 0 for finite s and NaN for NaN (whose bits would otherwise
  // decode as a finite exponent and mantissa): adding it passes NaN on and
  // leaves every finite result bit for bit unchanged.
  return ((u + tail) + er * kLn2Hi) + (s - s);
}

// log(x) for any positive normal float x: log_ge1's decomposition
// x = 2^e * m holds for every normal x, e negative included. Subnormals,
// zero and negatives are outside its domain.
LSE_HD float log_normal(float x) { return log_ge1(x); }

}  // namespace lse
