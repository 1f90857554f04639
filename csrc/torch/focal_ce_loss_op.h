// lse_fast::focal_ce_loss, the torch side shared by its Meta, CPU and CUDA
// kernels: the checks (the one place they are written) and the outputs.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "torch/checks.h"

namespace lse::torch_ops {

enum class Reduction : int64_t { None = 0, Mean = 1, Sum = 2 };

inline Reduction check_focal_ce_input(const at::Tensor& logits, const at::Tensor& target,
                                      double gamma, int64_t reduction) {
  LSE_CHECK_DIM("focal_ce_loss", logits, 4, "[N, C, H, W]");
  const auto dt = logits.scalar_type();
  LSE_CHECK_ARG("focal_ce_loss",
                dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble,
                "logits", "must be float32, float16, bfloat16 or float64, got ", dtype_name(dt));
  LSE_CHECK_ARG("focal_ce_loss", logits.sym_size(1) > 0, "logits",
                "must have at least one class (size(1) = C > 0), got shape ", logits.sym_sizes());
  LSE_CHECK_DIM("focal_ce_loss", target, 3, "[N, H, W]");
  LSE_CHECK_ARG("focal_ce_loss",
                target.scalar_type() == at::kLong || target.scalar_type() == at::kByte, "target",
                "must be int64 or uint8, got ", dtype_name(target.scalar_type()));
  LSE_CHECK_ARG("focal_ce_loss",
                target.sym_size(0) == logits.sym_size(0) && target.sym_size(1) == logits.sym_size(2) &&
                    target.sym_size(2) == logits.sym_size(3),
                "target", "must have shape [N, H, W] = [", logits.sym_size(0), ", ", logits.sym_size(2),
                ", ", logits.sym_size(3), "] to match logits ", logits.sym_sizes(), ", got ",
                target.sym_sizes());
  LSE_CHECK_ARG("focal_ce_loss", target.device() == logits.device(), "target",
                "must be on the same device as logits (", logits.device(), "), got ",
                target.device());
  LSE_CHECK_ARG("focal_ce_loss", gamma >= 0.0, "gamma", "must be >= 0, got ", gamma);
  LSE_CHECK_ARG("focal_ce_loss", reduction >= 0 && reduction <= 2, "reduction",
                "code must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
  return static_cast<Reduction>(reduction);
}

// The loss dtype: float64 for float64 logits, else float32.
inline at::TensorOptions focal_loss_options(const at::Tensor& logits) {
  return logits.options().dtype(logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
}

// The outputs as the schema gives them: the loss ([N, H, W] for "none",
// else a scalar) and the gradient (logits-shaped, or empty without
// compute_grad), zero-filled where `zeroed` (logits with no elements).
inline std::tuple<at::Tensor, at::Tensor> focal_ce_outputs(const at::Tensor& logits, Reduction reduction,
                                                           bool compute_grad, bool zeroed) {
  const auto loss_opts = focal_loss_options(logits);
  const auto make = [&](c10::SymIntArrayRef sizes, const at::TensorOptions& o) {
    return zeroed ? at::zeros_symint(sizes, o) : at::empty_symint(sizes, o);
  };
  const c10::SymInt n = logits.sym_size(0), h = logits.sym_size(2), w = logits.sym_size(3);
  at::Tensor loss = reduction == Reduction::None ? make({n, h, w}, loss_opts) : make({}, loss_opts);
  at::Tensor grad = compute_grad ? make(logits.sym_sizes(), logits.options()) : at::empty({0}, logits.options());
  return {loss, grad};
}

[[noreturn]] inline void report_bad_target(int64_t value, int64_t index, int64_t num_classes,
                                           int64_t ignore_index) {
  TORCH_CHECK(false, "lse_fast.focal_ce_loss: `target` value ", value, " at flat index ", index,
              " is outside [0, ", num_classes, ") and is not ignore_index (", ignore_index, ")");
  __builtin_unreachable();
}

}  // namespace lse::torch_ops
