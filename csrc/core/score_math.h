// Per-pixel math of the fused scoring op, shared by the CPU and CUDA kernels.
//
// One pass over the C logits of a pixel keeps an online softmax state
// relative to the running maximum m:
//   s = sum_c exp(x_c - m)              (softmax denominator, >= 1)
//   t = sum_c (x_c - m) exp(x_c - m)    (<= 0)
// so that max-prob = 1 / s and entropy H = log s - t / s. Every exp argument
// is <= 0, so any finite logits (1e4 and -1e4 included) stay finite.
#pragma once

#include "core/fast_math.h"

namespace lse {

struct ScoreAcc {
  float m;    // running maximum logit
  float s;    // sum exp(x - m)
  float t;    // sum (x - m) exp(x - m)
  int32_t a;  // index of the first maximum (lowest index wins a tie)
};

struct PixelScore {
  float confidence;  // max softmax probability, in (0, 1]
  float entropy;     // entropy / log C, clamped to [0, 1]; 0 when C == 1
  int32_t label;
};

LSE_HD ScoreAcc score_init(float x0) { return ScoreAcc{x0, 1.0f, 0.0f, 0}; }

LSE_HD void score_update(ScoreAcc& acc, float x, int32_t c) {
  // Strictly greater: a tie keeps the earlier class.
  const bool up = x > acc.m;
  const float z = up ? acc.m - x : x - acc.m;  // <= 0 in both cases
  const float e = exp_nonpos(z);
  // New maximum: old terms are rescaled by e = exp(m_old - x) and their
  // offsets shift by z; the new maximum adds exp(0) = 1 and 0 to t.
  const float s_up = e * acc.s + 1.0f;
  const float t_up = e * (acc.t + z * acc.s);
  const float s_keep = acc.s + e;
  const float t_keep = acc.t + z * e;
  acc.s = up ? s_up : s_keep;
  acc.t = up ? t_up : t_keep;
  acc.m = up ? x : acc.m;
  acc.a = up ? c : acc.a;
}

// inv_log_c: 1 / log(C), or 0 when C == 1.
LSE_HD PixelScore score_finish(const ScoreAcc& acc, float inv_log_c) {
  const float inv_s = 1.0f / acc.s;
  const float h = (log_ge1(acc.s) - acc.t * inv_s) * inv_log_c;
  PixelScore r;
  r.confidence = inv_s;
  r.entropy = h < 0.0f ? 0.0f : (h > 1.0f ? 1.0f : h);  // NaN passes through
  r.label = acc.a;
  return r;
}

}  // namespace lse
