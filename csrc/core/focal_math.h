// Per-pixel math of the fused masked focal + cross-entropy loss (LSE paper,
// Eq. 4, 5, 7), shared by the CPU and CUDA kernels. With L = log p_t <= 0 the
// log-probability of the pseudo-label t:
//   ce   = -L
//   fl   = (1 - p_t)^gamma * ce
//   loss = ce_weight * ce + beta * fl
// and the gradient w.r.t. logit c is dloss/dL * (delta_ct - p_c), where
//   dloss/dL = -ce_weight + beta * (gamma p_t (1 - p_t)^(gamma - 1) L - (1 - p_t)^gamma).
// ce_weight = 1 (the paper's loss) gives bit-identical results to the form
// without it; ce_weight = 0, beta = 1 is the focal term alone (kornia's
// focal_loss without alpha). Per-pixel weights (class weight of the target,
// pixel weight) multiply both outputs in the kernels.
// A is the accumulation type: float (float32/16/bf16 logits) or double.
#pragma once

#include <math.h>

#include "core/fast_math.h"

namespace lse {

LSE_HD float exp_nonpos_t(float z) { return exp_nonpos(z); }
LSE_HD double exp_nonpos_t(double z) { return ::exp(z); }
LSE_HD float log_ge1_t(float s) { return log_ge1(s); }
LSE_HD double log_ge1_t(double s) { return ::log(s); }

template <typename A>
struct FocalTerms {
  A loss;      // ce_weight * ce + beta * fl
  A dloss_dL;  // derivative of loss w.r.t. L = log p_t
};

// gamma >= 0. Exact limits where p_t rounds to 1 (q = 0): fl = 0 and the
// gamma term is 0 (q^(gamma-1) L -> -q^gamma -> 0).
template <typename A>
LSE_HD FocalTerms<A> focal_terms(A log_pt, A gamma, A beta, A ce_weight = A(1)) {
  const A p = exp_nonpos_t(log_pt);
  const A q = A(1) - p;
  const bool q_pos = q > A(0);
  const A inv_q = q_pos ? A(1) / q : A(1);
  const A log_q = -log_ge1_t(inv_q);  // log q for q in (0, 1]
  const A q_gamma = q_pos ? exp_nonpos_t(gamma * log_q) : (gamma == A(0) ? A(1) : A(0));
  const A ce = -log_pt;
  const A gamma_term = q_pos ? gamma * p * (q_gamma * inv_q) * log_pt : A(0);
  FocalTerms<A> r;
  r.loss = ce_weight * ce + beta * (q_gamma * ce);
  r.dloss_dL = -ce_weight + beta * (gamma_term - q_gamma);
  return r;
}

// log p_t = x_t - m - log(sum_c exp(x_c - m)) for the maximum logit m and
// the softmax denominator s, clamped to <= 0 (it can round a hair above 0
// when p_t ~ 1). NaN is kept: a NaN or +inf logit makes s NaN, and the loss
// and gradient of that pixel must be NaN as in the reference, not 0.
template <typename A>
LSE_HD A focal_log_pt(A x_target, A m, A s) {
  const A log_pt = x_target - m - log_ge1_t(s);
  return log_pt > A(0) ? A(0) : log_pt;
}

// Target of a pixel as a class index, or -1 when ignored or out of [0, C)
// (out-of-range targets are reported by the validation pass, never read).
template <typename Tgt>
LSE_HD int32_t focal_class(Tgt target, int64_t ignore_index, int64_t num_classes) {
  const int64_t t = static_cast<int64_t>(target);
  return (t == ignore_index || t < 0 || t >= num_classes) ? -1 : static_cast<int32_t>(t);
}

}  // namespace lse
