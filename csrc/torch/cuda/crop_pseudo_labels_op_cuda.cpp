// CUDA implementation of lse_fast::crop_pseudo_labels: device guard,
// stream, box upload and output allocation around the torch-free launcher in
// csrc/cuda/crop_pseudo_labels_cuda_kernel.cu. Built only against a
// CUDA-enabled torch. Box values are checked on the host, so boxes given on
// the GPU cost one small synchronising copy.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/crop_pseudo_labels_cuda_kernel.h"
#include "torch/crop_pseudo_labels_op.h"
#include "torch/cuda/cuda_glue.h"

namespace lse::torch_ops {
namespace {

at::Tensor crop_pseudo_labels_cuda_kernel(const at::Tensor& probs, const at::Tensor& boxes, at::IntArrayRef size,
                                          const at::Tensor& thresholds, at::IntArrayRef image_size,
                                          int64_t ignore_index, bool align_corners) {
  const char* op = "crop_pseudo_labels";
  const PseudoLabelCall call =
      check_crop_pseudo_labels_call(probs, boxes, size, thresholds, image_size, ignore_index, at::kCUDA);
  const c10::cuda::CUDAGuard guard(probs.device());
  const at::Tensor& host_boxes = call.host_boxes;
  const int64_t k = host_boxes.size(0), oh = call.oh, ow = call.ow, H = call.image_h, W = call.image_w;
  at::Tensor out = at::empty({k, oh, ow}, probs.options().dtype(at::kByte));
  if (out.numel() == 0) return out;
  const at::Tensor p = probs.to(at::kFloat).contiguous();
  const at::Tensor thr = thresholds.to(probs.device()).contiguous();
  const at::Tensor dev_boxes = device_boxes(boxes, host_boxes, probs.device());
  check_launch(op, lse::cuda::crop_pseudo_labels_launch(
                       p.const_data_ptr<float>(), p.size(0), p.size(1), p.size(2), p.size(3), H, W,
                       dev_boxes.const_data_ptr<float>(), k, oh, ow, thr.const_data_ptr<float>(),
                       static_cast<uint8_t>(ignore_index), align_corners, out.data_ptr<uint8_t>(),
                       c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_IMPL(lse_fast, CUDA, m) {
  m.impl("crop_pseudo_labels", &lse::torch_ops::crop_pseudo_labels_cuda_kernel);
}
