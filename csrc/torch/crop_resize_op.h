// lse_fast::crop_resize and crop_resize_backward, the torch side shared by
// their Meta, CPU and CUDA kernels: the checks (the one place they are
// written) and the views the kernels take.
#pragma once

#include <ATen/ATen.h>

#include <utility>

#include "core/resample.h"
#include "torch/crop_boxes.h"

namespace lse::torch_ops {

enum class CropMode : int64_t { Bilinear = 0, Nearest = 1 };

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
  LSE_CHECK_ARG("crop_resize", input.sym_size(2) > 0 && input.sym_size(3) > 0, "input",
                "has an empty image, shape ", input.sym_sizes());
  return static_cast<CropMode>(mode);
}

// Metadata checks of crop_resize_backward (Meta kernel and eager).
inline void check_crop_backward_meta(const at::Tensor& grad, const at::Tensor& boxes, at::IntArrayRef input_size,
                                     int64_t mode) {
  const char* op = "crop_resize_backward";
  LSE_CHECK_ARG(op, input_size.size() == 4, "input_size", "must be [N, C, H, W], got ", input_size);
  LSE_CHECK_DIM(op, grad, 4, "[K, C, oh, ow]");
  LSE_CHECK_ARG(op, mode == 0 || mode == 1, "mode", "code must be 0 or 1, got ", mode);
  const auto dt = grad.scalar_type();
  LSE_CHECK_ARG(op, is_floating(dt), "grad", "must be float32, float16, bfloat16 or float64, got ",
                dtype_name(dt));
  check_boxes_meta(op, boxes, grad.device());
  LSE_CHECK_ARG(op, grad.sym_size(0) == boxes.sym_size(0) && grad.sym_size(1) == input_size[1], "grad",
                "must have shape [K, C, oh, ow] = [", boxes.sym_size(0), ", ", input_size[1],
                ", oh, ow], got ", grad.sym_sizes());
}

// Every check of a crop_resize_backward call; returns the validated host boxes.
inline at::Tensor check_crop_backward_input(const at::Tensor& grad, const at::Tensor& boxes,
                                            at::IntArrayRef input_size, int64_t mode,
                                            at::DeviceType device_type) {
  check_crop_backward_meta(grad, boxes, input_size, mode);
  LSE_CHECK_DEVICE("crop_resize_backward", grad, device_type);
  return checked_host_boxes("crop_resize_backward", boxes, grad.device(), input_size[0], input_size[2],
                            input_size[3]);
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

}  // namespace lse::torch_ops
