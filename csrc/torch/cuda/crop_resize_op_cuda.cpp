// CUDA implementation of lse_fast::crop_resize and its backward: device
// guard, stream, box upload and output allocation around the torch-free
// launchers in csrc/cuda/crop_resize_cuda_kernel.cu.
// Built only against a CUDA-enabled torch. Box values are checked on the
// host, so boxes given on the GPU cost one small synchronising copy.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/crop_resize_cuda_kernel.h"
#include "torch/crop_resize_op.h"
#include "torch/cuda/cuda_glue.h"
#include "torch/tensor_views.h"

namespace lse::torch_ops {
namespace {

at::Tensor crop_resize_cuda_kernel(const at::Tensor& input, const at::Tensor& boxes, at::IntArrayRef size,
                                   int64_t mode_code, bool align_corners) {
  const CropMode mode = check_crop_resize_input(input, mode_code);
  LSE_CHECK_DEVICE("crop_resize", input, at::kCUDA);
  const auto [oh, ow] = check_out_size("crop_resize", size, "size");
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor host_boxes =
      checked_host_boxes("crop_resize", boxes, input.device(), input.size(0), input.size(2), input.size(3));
  const int64_t k = host_boxes.size(0);
  at::Tensor out = at::empty({k, input.size(1), oh, ow}, input.options());
  if (out.numel() == 0) return out;
  const at::Tensor dev_boxes = device_boxes(boxes, host_boxes, input.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const CropImage g = crop_image(input);
  if (mode == CropMode::Nearest) {
    check_launch("crop_resize",
                 lse::cuda::crop_nearest_launch(input.const_data_ptr(), static_cast<int>(input.element_size()), g,
                                                dev_boxes.const_data_ptr<float>(), k, oh, ow, out.data_ptr(), stream));
  } else {
    check_launch("crop_resize",
                 lse::cuda::crop_bilinear_launch(input.const_data_ptr(), float_kind(input.scalar_type()), g,
                                                 dev_boxes.const_data_ptr<float>(), k, oh, ow, align_corners,
                                                 out.data_ptr(), stream));
  }
  return out;
}

at::Tensor crop_resize_backward_cuda_kernel(const at::Tensor& grad, const at::Tensor& boxes,
                                            at::IntArrayRef input_size, int64_t mode_code, bool align_corners) {
  const char* op = "crop_resize_backward";
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor host_boxes = check_crop_backward_input(grad, boxes, input_size, mode_code, at::kCUDA);
  const int64_t k = host_boxes.size(0), oh = grad.size(2), ow = grad.size(3);
  const auto dt = grad.scalar_type();
  at::Tensor grad_in = zeroed_grad_accumulator(grad, input_size);
  if (grad.numel() == 0 || grad_in.numel() == 0) return grad_in.to(dt);
  const at::Tensor go = grad.contiguous();
  const at::Tensor dev_boxes = device_boxes(boxes, host_boxes, grad.device());
  check_launch(op, lse::cuda::crop_backward_launch(go.const_data_ptr(), float_kind(dt), contiguous_image(input_size),
                                                   dev_boxes.const_data_ptr<float>(), k, oh, ow,
                                                   mode_code == static_cast<int64_t>(CropMode::Nearest), align_corners,
                                                   grad_in.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return grad_in.scalar_type() == dt ? grad_in : grad_in.to(dt);
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_IMPL(lse_fast, CUDA, m) {
  m.impl("crop_resize", &lse::torch_ops::crop_resize_cuda_kernel);
  m.impl("crop_resize_backward", &lse::torch_ops::crop_resize_backward_cuda_kernel);
}
