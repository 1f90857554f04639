// Pieces of the focal_ce_loss op shared by its CPU and CUDA implementations.
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
                "logits", "must be float32, float16, bfloat16 or float64, got ", dt);
  LSE_CHECK_ARG("focal_ce_loss", logits.size(1) > 0, "logits",
                "must have at least one class (size(1) = C > 0), got shape ", logits.sizes());
  LSE_CHECK_DIM("focal_ce_loss", target, 3, "[N, H, W]");
  LSE_CHECK_ARG("focal_ce_loss",
                target.scalar_type() == at::kLong || target.scalar_type() == at::kByte, "target",
                "must be int64 or uint8, got ", target.scalar_type());
  LSE_CHECK_ARG("focal_ce_loss",
                target.size(0) == logits.size(0) && target.size(1) == logits.size(2) &&
                    target.size(2) == logits.size(3),
                "target", "must have shape [N, H, W] = [", logits.size(0), ", ", logits.size(2),
                ", ", logits.size(3), "] to match logits ", logits.sizes(), ", got ",
                target.sizes());
  LSE_CHECK_ARG("focal_ce_loss", target.device() == logits.device(), "target",
                "must be on the same device as logits (", logits.device(), "), got ",
                target.device());
  LSE_CHECK_ARG("focal_ce_loss", gamma >= 0.0, "gamma", "must be >= 0, got ", gamma);
  LSE_CHECK_ARG("focal_ce_loss", reduction >= 0 && reduction <= 2, "reduction",
                "code must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
  return static_cast<Reduction>(reduction);
}

}  // namespace lse::torch_ops
