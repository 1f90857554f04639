// lse_fast::score and lse_fast::score_upsampled, the torch side shared by
// their Meta, CPU and CUDA kernels: the checks (the one place they are
// written) and the outputs.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "torch/checks.h"

namespace lse::torch_ops {

using ScoreTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Checks of the scored tensor: `op` is "score" (argument `logits`) or
// "score_probs" (argument `probs`).
inline void check_score_input(const at::Tensor& x, const char* op = "score", const char* name = "logits") {
  LSE_CHECK_ARG(op, x.dim() == 4, name, "must have 4 dimensions [N, C, H, W], got shape ", x.sym_sizes());
  const auto dt = x.scalar_type();
  LSE_CHECK_ARG(op, dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, name,
                "must be float32, float16 or bfloat16, got ", dtype_name(dt));
  LSE_CHECK_ARG(op, x.sym_size(1) > 0, name,
                "must have at least one class (size(1) = C > 0), got shape ", x.sym_sizes());
  LSE_CHECK_ARG(op, x.sym_size(1) <= INT32_MAX, name, "has too many classes (", x.sym_size(1),
                "); at most 2^31 - 1 are supported");
}

// Checks of the upsampled forms: the input as above, then the output size.
// align_corners is a bool: every value is valid (the wrappers reject
// non-bools by name).
inline std::pair<int64_t, int64_t> check_score_upsampled_input(const at::Tensor& x, at::IntArrayRef size,
                                                               const char* op = "score",
                                                               const char* name = "logits") {
  check_score_input(x, op, name);
  LSE_CHECK_ARG(op, x.sym_size(2) > 0 && x.sym_size(3) > 0, name,
                "must have h, w > 0 to be upsampled, got shape ", x.sym_sizes());
  return check_out_size(op, size, "size");
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
