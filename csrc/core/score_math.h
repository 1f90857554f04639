// Per-pixel math of the fused scoring op, shared by the CPU and CUDA kernels.
//
// One pass over the C logits of a pixel keeps an online softmax state
// relative to the running maximum m:
//   s = sum_c exp(x_c - m)              (softmax denominator, >= 1)
//   t = sum_c (x_c - m) exp(x_c - m)    (<= 0)
// so that max-prob = 1 / s and entropy H = log s - t / s. Every exp argument
// is <= 0, so any finite logits (1e4 and -1e4 included) stay finite.
//
// Non-finite logits: -inf is a valid logit (p = 0, the log of a probability
// that is exactly 0) and contributes 0 to s and to t (0 log 0 = 0). A pixel
// whose maximum is not finite (every logit -inf, or a +inf logit) and a
// pixel with a NaN logit give NaN confidence and entropy, as softmax does.
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

// The lowest running maximum: a first logit of -inf starts the state at
// -FLT_MAX, so no offset below is ever -inf - -inf = NaN. A final maximum of
// -FLT_MAX therefore means "every logit -inf" (a pixel whose largest logit
// is exactly -FLT_MAX reads as such too).
constexpr float kScoreLowestMax = -3.40282347e38f;

// Lower bound of the offsets z below: exp_nonpos is exactly 0 there, and
// z * s stays finite for any s <= 2^31, so a -inf logit adds 0 * z = 0 to t
// instead of 0 * -inf = NaN. Offsets below -87.3 already give e = 0, so the
// clamp changes no finite result. One max per class: the hot loop's only
// cost of the -inf rule.
constexpr float kScoreMinOffset = -1e20f;

LSE_HD ScoreAcc score_init(float x0) {
  return ScoreAcc{x0 < kScoreLowestMax ? kScoreLowestMax : x0, 1.0f, 0.0f, 0};  // NaN stays NaN
}

LSE_HD void score_update(ScoreAcc& acc, float x, int32_t c) {
  // Strictly greater: a tie keeps the earlier class.
  const bool up = x > acc.m;
  const float zr = up ? acc.m - x : x - acc.m;  // <= 0 in both cases, or NaN
  const float z = zr < kScoreMinOffset ? kScoreMinOffset : zr;  // -inf -> finite; NaN stays NaN
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
  // No softmax where every logit is -inf (m = kScoreLowestMax) or one is
  // +inf (m = +inf); NaN logits make s NaN. bad: 0, or NaN for those.
  const bool dead = acc.m == kScoreLowestMax;
  const float bad = dead ? bits_to_float(0x7FC00000u) : (acc.m - acc.m) * 0.0f;
  const float inv_s = 1.0f / acc.s + bad;
  const float h = (log_ge1(acc.s) - acc.t * inv_s) * inv_log_c + bad;
  PixelScore r;
  r.confidence = inv_s;
  r.entropy = h < 0.0f ? 0.0f : (h > 1.0f ? 1.0f : h);  // NaN passes through
  r.label = acc.a;
  return r;
}

// The same outputs from probabilities p_c (softmax outputs) instead of
// logits: confidence = max p, label = first argmax, entropy = -sum p log p
// / log C with 0 log 0 = 0 (exact for p = 0, no epsilon). A NaN or infinite
// probability makes confidence and entropy NaN. Probabilities are not
// checked to lie in [0, 1] or to sum to 1 (a data-dependent check).
struct ProbAcc {
  float best;  // largest probability so far
  float h;     // sum -p log p (NaN once a NaN or inf probability is seen)
  int32_t a;   // index of the first maximum
};

// -p log p, 0 for p = 0 (and below FLT_MIN), NaN for NaN and +-inf.
LSE_HD float prob_entropy_term(float p) {
  constexpr float kMinNormal = 1.17549435e-38f;
  const float safe = p > kMinNormal ? p : 1.0f;
  const float term = p > kMinNormal ? -p * log_normal(safe) : 0.0f;
  return term + (p - p);  // p - p: 0 for finite p, NaN for NaN and inf
}

LSE_HD ProbAcc prob_init(float p0) { return ProbAcc{p0, prob_entropy_term(p0), 0}; }

LSE_HD void prob_update(ProbAcc& acc, float p, int32_t c) {
  const bool up = p > acc.best;  // strictly: a tie keeps the earlier class
  acc.best = up ? p : acc.best;
  acc.a = up ? c : acc.a;
  acc.h += prob_entropy_term(p);
}

LSE_HD PixelScore prob_finish(const ProbAcc& acc, float inv_log_c) {
  const float bad = (acc.h - acc.h) * 0.0f;  // NaN once any probability was not finite
  const float h = acc.h * inv_log_c + bad;
  PixelScore r;
  r.confidence = acc.best + bad;
  r.entropy = h < 0.0f ? 0.0f : (h > 1.0f ? 1.0f : h);  // NaN passes through
  r.label = acc.a;
  return r;
}

}  // namespace lse
