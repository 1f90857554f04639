// lse_fast::score and lse_fast::score_upsampled, the torch side shared by
// their Meta, CPU and CUDA kernels: the checks (the one place they are
// written) and the outputs.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "torch/checks.h"

namespace lse::torch_ops {

using ScoreTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

inline void check_score_input(const at::Tensor& logits) {
  LSE_CHECK_DIM("score", logits, 4, "[N, C, H, W]");
  LSE_CHECK_FLOATING("score", logits);
  LSE_CHECK_ARG("score", logits.sym_size(1) > 0, "logits",
                "must have at least one class (size(1) = C > 0), got shape ", logits.sym_sizes());
  LSE_CHECK_ARG("score", logits.sym_size(1) <= INT32_MAX, "logits", "has too many classes (",
                logits.sym_size(1), "); at most 2^31 - 1 are supported");
}

// Checks of score_upsampled: the logits as for score, then the output size.
inline std::pair<int64_t, int64_t> check_score_upsampled_input(const at::Tensor& logits,
                                                               at::IntArrayRef size) {
  check_score_input(logits);
  LSE_CHECK_ARG("score", logits.sym_size(2) > 0 && logits.sym_size(3) > 0, "logits",
                "must have h, w > 0 to be upsampled, got shape ", logits.sym_sizes());
  return check_out_size("score", size, "size");
}

// Outputs in the order of the op's schema, per-pixel ones [N, h, w]; the
// per-class sums start at zero unless the kernel writes them all.
inline ScoreTuple allocate_score_outputs(const at::Tensor& logits, const c10::SymInt& h,
                                         const c10::SymInt& w, bool zero_class_sums = true) {
  const c10::SymInt n = logits.sym_size(0), c = logits.sym_size(1);
  const auto f32 = logits.options().dtype(at::kFloat);
  const auto i64 = logits.options().dtype(at::kLong);
  const auto sums = [&](const at::TensorOptions& o) {
    return zero_class_sums ? at::zeros_symint({n, c}, o) : at::empty_symint({n, c}, o);
  };
  return {at::empty_symint({n, h, w}, f32), at::empty_symint({n, h, w}, i64), at::empty_symint({n, h, w}, f32),
          sums(i64), sums(f32), sums(f32)};
}

}  // namespace lse::torch_ops
