// Pieces of the crop ops shared by their CPU and CUDA implementations:
// argument checks (box values included) and the views the kernels take.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <tuple>
#include <utility>

#include "cpu/crop_resize_cpu.h"
#include "torch/checks.h"

namespace lse::torch_ops {

enum class CropMode : int64_t { Bilinear = 0, Nearest = 1 };

// Metadata of `boxes`: float32 [K, 5] on the CPU or on `device`.
inline void check_boxes_meta(const char* op, const at::Tensor& boxes, const at::Device& device) {
  LSE_CHECK_ARG(op, boxes.dim() == 2 && boxes.size(1) == 5, "boxes",
                "must have shape [K, 5] with rows (batch_index, x1, y1, x2, y2), got shape ",
                boxes.sizes());
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

inline bool is_floating(at::ScalarType dt) {
  return dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble;
}

// Metadata checks of crop_resize in their order: input, mode, size, boxes.
inline CropMode check_crop_resize_input(const at::Tensor& input, int64_t mode) {
  LSE_CHECK_DIM("crop_resize", input, 4, "[N, C, H, W] ([N, H, W] is taken by lse_fast.ops.crop_resize)");
  LSE_CHECK_ARG("crop_resize", mode == 0 || mode == 1, "mode",
                "code must be 0 (bilinear) or 1 (nearest), got ", mode);
  const auto dt = input.scalar_type();
  if (mode == 0) {
    LSE_CHECK_ARG("crop_resize", is_floating(dt), "input",
                  "must be float32, float16, bfloat16 or float64 for mode='bilinear', got ",
                  dtype_name(dt), "; integer and bool inputs require mode='nearest'");
  } else {
    LSE_CHECK_ARG("crop_resize", is_floating(dt) || dt == at::kByte || dt == at::kBool || dt == at::kLong,
                  "input", "must be float32, float16, bfloat16, float64, uint8, bool or int64, got ",
                  dtype_name(dt));
  }
  LSE_CHECK_ARG("crop_resize", input.size(2) > 0 && input.size(3) > 0, "input",
                "has an empty image, shape ", input.sizes());
  return static_cast<CropMode>(mode);
}

// Checks of crop_resize_backward; returns the validated host boxes.
inline at::Tensor check_crop_backward_input(const at::Tensor& grad, const at::Tensor& boxes,
                                            at::IntArrayRef input_size, int64_t mode,
                                            at::DeviceType device_type) {
  const char* op = "crop_resize_backward";
  LSE_CHECK_ARG(op, input_size.size() == 4, "input_size", "must be [N, C, H, W], got ", input_size);
  LSE_CHECK_DIM(op, grad, 4, "[K, C, oh, ow]");
  LSE_CHECK_DEVICE(op, grad, device_type);
  LSE_CHECK_ARG(op, mode == 0 || mode == 1, "mode", "code must be 0 or 1, got ", mode);
  const auto dt = grad.scalar_type();
  LSE_CHECK_ARG(op, is_floating(dt), "grad", "must be float32, float16, bfloat16 or float64, got ",
                dtype_name(dt));
  at::Tensor host = checked_host_boxes(op, boxes, grad.device(), input_size[0], input_size[2], input_size[3]);
  LSE_CHECK_ARG(op, grad.size(0) == host.size(0) && grad.size(1) == input_size[1], "grad",
                "must have shape [K, C, oh, ow] = [", host.size(0), ", ", input_size[1],
                ", oh, ow], got ", grad.sizes());
  return host;
}

// The gradient accumulator: float32, or float64 for float64 gradients.
inline at::Tensor zeroed_grad_accumulator(const at::Tensor& grad, at::IntArrayRef input_size) {
  return at::zeros(input_size, grad.options().dtype(grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
}

inline CropImage crop_image(const at::Tensor& t) {
  CropImage g;
  g.n = t.size(0), g.c = t.size(1), g.h = t.size(2), g.w = t.size(3);
  g.stride_n = t.stride(0), g.stride_c = t.stride(1), g.stride_h = t.stride(2), g.stride_w = t.stride(3);
  return g;
}

inline CropImage contiguous_image(at::IntArrayRef sizes) {
  CropImage g;
  g.n = sizes[0], g.c = sizes[1], g.h = sizes[2], g.w = sizes[3];
  g.stride_w = 1, g.stride_h = g.w, g.stride_c = g.h * g.w, g.stride_n = g.c * g.h * g.w;
  return g;
}

inline void check_crop_pseudo_labels_input(const at::Tensor& probs, const at::Tensor& thresholds,
                                           int64_t ignore_index) {
  const char* op = "crop_pseudo_labels";
  LSE_CHECK_DIM(op, probs, 4, "[N, C, h, w]");
  const auto dt = probs.scalar_type();
  LSE_CHECK_ARG(op, is_floating(dt), "probs", "must be float32, float16, bfloat16 or float64, got ",
                dtype_name(dt));
  LSE_CHECK_ARG(op, probs.size(1) > 0 && probs.size(2) > 0 && probs.size(3) > 0, "probs",
                "must have C, h, w > 0, got shape ", probs.sizes());
  LSE_CHECK_ARG(op, probs.size(1) <= 255, "probs", "has ", probs.size(1),
                " classes; uint8 pseudo-labels hold at most 255");
  LSE_CHECK_ARG(op, thresholds.dim() == 1 && thresholds.size(0) == probs.size(1) &&
                        thresholds.scalar_type() == at::kFloat,
                "thresholds", "must be float32 of shape [C] = [", probs.size(1), "], got ",
                dtype_name(thresholds.scalar_type()), " ", thresholds.sizes());
  LSE_CHECK_ARG(op, thresholds.device().is_cpu() || thresholds.device() == probs.device(),
                "thresholds", "must be on the CPU or the device of probs (", probs.device(),
                "), got ", thresholds.device());
  LSE_CHECK_ARG(op, ignore_index >= probs.size(1) && ignore_index <= 255, "ignore_index",
                "must be in [C, 255] = [", probs.size(1), ", 255], got ", ignore_index);
}

// Every check of a crop_pseudo_labels call, box values included.
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
