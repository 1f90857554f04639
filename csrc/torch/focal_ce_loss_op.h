// lse_fast::focal_ce_loss, the torch side shared by its Meta, CPU and CUDA
// kernels: the checks (the one place they are written) and the outputs.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "torch/checks.h"

namespace lse::torch_ops {

// 3 (mean_all): the sum divided by N * H * W, ignored pixels included
// (mmseg's default); 1 (mean) divides by the valid pixels, or by the summed
// class weights of the valid pixels when `weight` is given.
enum class Reduction : int64_t { None = 0, Mean = 1, Sum = 2, MeanAll = 3 };

inline bool is_float_dtype(at::ScalarType dt) {
  return dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble;
}

inline Reduction check_focal_ce_input(const at::Tensor& logits, const at::Tensor& target,
                                      double gamma, int64_t reduction,
                                      const std::optional<at::Tensor>& weight,
                                      const std::optional<at::Tensor>& pixel_weight,
                                      double ce_weight) {
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
  LSE_CHECK_ARG("focal_ce_loss", reduction >= 0 && reduction <= 3, "reduction",
                "code must be 0 (none), 1 (mean), 2 (sum) or 3 (mean_all), got ", reduction);
  LSE_CHECK_ARG("focal_ce_loss", std::isfinite(ce_weight), "ce_weight",
                "must be a finite number, got ", ce_weight);
  if (weight.has_value()) {
    const at::Tensor& w = *weight;
    LSE_CHECK_ARG("focal_ce_loss", w.dim() == 1 && w.sym_size(0) == logits.sym_size(1), "weight",
                  "must be a per-class weight of shape [C] = [", logits.sym_size(1),
                  "] to match logits ", logits.sym_sizes(), ", got shape ", w.sym_sizes());
    LSE_CHECK_ARG("focal_ce_loss", is_float_dtype(w.scalar_type()), "weight",
                  "must be float32, float16, bfloat16 or float64, got ", dtype_name(w.scalar_type()));
    LSE_CHECK_ARG("focal_ce_loss", w.device() == logits.device(), "weight",
                  "must be on the same device as logits (", logits.device(), "), got ", w.device());
  }
  if (pixel_weight.has_value()) {
    const at::Tensor& w = *pixel_weight;
    LSE_CHECK_ARG("focal_ce_loss",
                  w.dim() == 3 && w.sym_size(0) == logits.sym_size(0) &&
                      w.sym_size(1) == logits.sym_size(2) && w.sym_size(2) == logits.sym_size(3),
                  "pixel_weight", "must have shape [N, H, W] = [", logits.sym_size(0), ", ",
                  logits.sym_size(2), ", ", logits.sym_size(3), "] to match logits ",
                  logits.sym_sizes(), ", got shape ", w.sym_sizes());
    LSE_CHECK_ARG("focal_ce_loss", is_float_dtype(w.scalar_type()), "pixel_weight",
                  "must be float32, float16, bfloat16 or float64, got ", dtype_name(w.scalar_type()));
    LSE_CHECK_ARG("focal_ce_loss", w.device() == logits.device(), "pixel_weight",
                  "must be on the same device as logits (", logits.device(), "), got ", w.device());
  }
  return static_cast<Reduction>(reduction);
}

// The loss dtype: float64 for float64 logits, else float32.
inline at::TensorOptions focal_loss_options(const at::Tensor& logits) {
  return logits.options().dtype(logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
}

// A weight as the kernels read it: contiguous, in the accumulation dtype
// (float64 for float64 logits, else float32); no copy when it already is.
// Undefined when absent.
inline at::Tensor focal_weight_view(const std::optional<at::Tensor>& w, const at::Tensor& logits) {
  if (!w.has_value()) return at::Tensor();
  return w->to(focal_loss_options(logits).dtype()).contiguous();
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
