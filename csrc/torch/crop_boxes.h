// The boxes of the crop ops (crop_resize, crop_pseudo_labels): metadata
// checks (Meta kernels too) and the value checks of the eager kernels.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

#include "torch/checks.h"

namespace lse::torch_ops {

inline bool is_floating(at::ScalarType dt) {
  return dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble;
}

// Metadata of `boxes`: float32 [K, 5] on the CPU or on `device`.
inline void check_boxes_meta(const char* op, const at::Tensor& boxes, const at::Device& device) {
  LSE_CHECK_ARG(op, boxes.dim() == 2 && boxes.sym_size(1) == 5, "boxes",
                "must have shape [K, 5] with rows (batch_index, x1, y1, x2, y2), got shape ",
                boxes.sym_sizes());
  LSE_CHECK_ARG(op, boxes.scalar_type() == at::kFloat, "boxes", "must be float32, got ",
                dtype_name(boxes.scalar_type()));
  LSE_CHECK_ARG(op, boxes.device().is_cpu() || boxes.device() == device, "boxes",
                "must be on the CPU or on the input's device (", device, "), got ", boxes.device());
}

// Boxes as float32 [K, 5] on the host, with every row checked against an
// N x H x W input (metadata checked first). Boxes may live on the CPU or on
// the input's device; the latter costs one small device-to-host copy.
inline at::Tensor checked_host_boxes(const char* op, const at::Tensor& boxes,
                                     const at::Device& device, int64_t n, int64_t h, int64_t w) {
  check_boxes_meta(op, boxes, device);
  at::Tensor host = boxes.to(at::kCPU).contiguous();
  const float* b = host.const_data_ptr<float>();
  for (int64_t k = 0; k < host.size(0); ++k) {
    const float* r = b + 5 * k;
    bool finite = true;
    for (int i = 0; i < 5; ++i) finite = finite && std::isfinite(r[i]);
    LSE_CHECK_ARG(op, finite, "boxes", "row ", k, " has a non-finite value: (", r[0], ", ", r[1],
                  ", ", r[2], ", ", r[3], ", ", r[4], ")");
    LSE_CHECK_ARG(op, r[0] == std::floor(r[0]) && r[0] >= 0 && r[0] < n, "boxes", "row ", k,
                  ": batch index ", r[0], " is not an integer in [0, ", n, ")");
    LSE_CHECK_ARG(op, 0 <= r[1] && r[1] < r[3] && r[3] <= w && 0 <= r[2] && r[2] < r[4] && r[4] <= h,
                  "boxes", "row ", k, " = (x1=", r[1], ", y1=", r[2], ", x2=", r[3], ", y2=", r[4],
                  ") must satisfy 0 <= x1 < x2 <= ", w, " and 0 <= y1 < y2 <= ", h,
                  " (inside the ", h, "x", w, " image)");
  }
  return host;
}

}  // namespace lse::torch_ops
