// Pieces of the score op shared by its CPU and CUDA implementations.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "torch/checks.h"

namespace lse::torch_ops {

using ScoreTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

inline void check_score_input(const at::Tensor& logits) {
  LSE_CHECK_DIM("score", logits, 4, "[N, C, H, W]");
  LSE_CHECK_FLOATING("score", logits);
  LSE_CHECK_ARG("score", logits.size(1) > 0, "logits",
                "must have at least one class (size(1) = C > 0), got shape ", logits.sizes());
  LSE_CHECK_ARG("score", logits.size(1) <= INT32_MAX, "logits", "has too many classes (",
                logits.size(1), "); at most 2^31 - 1 are supported");
}

// Checks of score_upsampled: the logits as for score, then the output size.
inline std::pair<int64_t, int64_t> check_score_upsampled_input(const at::Tensor& logits,
                                                               at::IntArrayRef size) {
  check_score_input(logits);
  LSE_CHECK_ARG("score", logits.size(2) > 0 && logits.size(3) > 0, "logits",
                "must have h, w > 0 to be upsampled, got shape ", logits.sizes());
  return check_out_size("score", size, "size");
}

// Outputs in the order of the op's schema, per-pixel ones [N, h, w] (the
// logits' own h, w unless given); per-class sums start at zero.
inline ScoreTuple allocate_score_outputs(const at::Tensor& logits, int64_t h = -1, int64_t w = -1,
                                         bool zero_class_sums = true) {
  const int64_t n = logits.size(0), c = logits.size(1);
  h = h < 0 ? logits.size(2) : h;
  w = w < 0 ? logits.size(3) : w;
  const auto f32 = logits.options().dtype(at::kFloat);
  const auto i64 = logits.options().dtype(at::kLong);
  if (!zero_class_sums) {
    return {at::empty({n, h, w}, f32), at::empty({n, h, w}, i64), at::empty({n, h, w}, f32),
            at::empty({n, c}, i64),    at::empty({n, c}, f32),    at::empty({n, c}, f32)};
  }
  return {at::empty({n, h, w}, f32), at::empty({n, h, w}, i64), at::empty({n, h, w}, f32),
          at::zeros({n, c}, i64),    at::zeros({n, c}, f32),    at::zeros({n, c}, f32)};
}

}  // namespace lse::torch_ops
