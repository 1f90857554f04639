// lse_fast::crop_pseudo_labels, the torch side shared by its Meta, CPU and
// CUDA kernels: the checks, the one place they are written.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <utility>

#include "torch/crop_boxes.h"

namespace lse::torch_ops {

inline void check_crop_pseudo_labels_input(const at::Tensor& probs, const at::Tensor& thresholds,
                                           int64_t ignore_index) {
  const char* op = "crop_pseudo_labels";
  LSE_CHECK_DIM(op, probs, 4, "[N, C, h, w]");
  const auto dt = probs.scalar_type();
  LSE_CHECK_ARG(op, is_floating(dt), "probs", "must be float32, float16, bfloat16 or float64, got ",
                dtype_name(dt));
  LSE_CHECK_ARG(op, probs.sym_size(1) > 0 && probs.sym_size(2) > 0 && probs.sym_size(3) > 0, "probs",
                "must have C, h, w > 0, got shape ", probs.sym_sizes());
  LSE_CHECK_ARG(op, probs.sym_size(1) <= 255, "probs", "has ", probs.sym_size(1),
                " classes; uint8 pseudo-labels hold at most 255");
  LSE_CHECK_ARG(op, thresholds.dim() == 1 && thresholds.sym_size(0) == probs.sym_size(1) &&
                        thresholds.scalar_type() == at::kFloat,
                "thresholds", "must be float32 of shape [C] = [", probs.sym_size(1), "], got ",
                dtype_name(thresholds.scalar_type()), " ", thresholds.sym_sizes());
  LSE_CHECK_ARG(op, thresholds.device().is_cpu() || thresholds.device() == probs.device(),
                "thresholds", "must be on the CPU or the device of probs (", probs.device(),
                "), got ", thresholds.device());
  LSE_CHECK_ARG(op, ignore_index >= probs.sym_size(1) && ignore_index <= 255, "ignore_index",
                "must be in [C, 255] = [", probs.sym_size(1), ", 255], got ", ignore_index);
}

// Metadata checks of a call (the Meta kernel); returns (oh, ow).
inline std::pair<int64_t, int64_t> check_crop_pseudo_labels_meta(const at::Tensor& probs, const at::Tensor& boxes,
                                                                  at::IntArrayRef size, const at::Tensor& thresholds,
                                                                  at::IntArrayRef image_size, int64_t ignore_index) {
  const char* op = "crop_pseudo_labels";
  check_crop_pseudo_labels_input(probs, thresholds, ignore_index);
  const auto out = check_out_size(op, size, "size");
  check_out_size(op, image_size, "image_size");
  check_boxes_meta(op, boxes, probs.device());
  return out;
}

// Every check of a crop_pseudo_labels call, box values included (eager).
struct PseudoLabelCall {
  int64_t oh = 0, ow = 0, image_h = 0, image_w = 0;
  at::Tensor host_boxes;
};

inline PseudoLabelCall check_crop_pseudo_labels_call(const at::Tensor& probs, const at::Tensor& boxes,
                                                     at::IntArrayRef size, const at::Tensor& thresholds,
                                                     at::IntArrayRef image_size, int64_t ignore_index,
                                                     at::DeviceType device_type) {
  const char* op = "crop_pseudo_labels";
  check_crop_pseudo_labels_input(probs, thresholds, ignore_index);
  LSE_CHECK_DEVICE(op, probs, device_type);
  PseudoLabelCall call;
  std::tie(call.oh, call.ow) = check_out_size(op, size, "size");
  std::tie(call.image_h, call.image_w) = check_out_size(op, image_size, "image_size");
  call.host_boxes = checked_host_boxes(op, boxes, probs.device(), probs.size(0), call.image_h, call.image_w);
  return call;
}

}  // namespace lse::torch_ops
