// CUDA implementation of lse_fast::score: device guard, stream and output
// allocation around the torch-free launcher in csrc/cuda/score_cuda.cu.
// Built only against a CUDA-enabled torch.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/score_cuda.h"
#include "torch/score_common.h"
#include "torch/tensor_utils.h"

namespace lse::torch_ops {
namespace {

ScoreTuple score_cuda_kernel(const at::Tensor& logits) {
  check_score_input(logits);
  LSE_CHECK_DEVICE("score", logits, at::kCUDA);
  LSE_CHECK_ARG("score", logits.size(1) <= lse::cuda::kScoreMaxClasses, "logits",
                "has ", logits.size(1), " classes; the CUDA kernel supports at most ",
                lse::cuda::kScoreMaxClasses);
  const c10::cuda::CUDAGuard guard(logits.device());
  ScoreTuple result = allocate_score_outputs(logits);
  auto& [confidence, label, entropy, class_pixels, class_confidence, class_entropy] = result;
  if (logits.numel() == 0) return result;

  // Per-class sums accumulate in double across blocks, then round once.
  at::Tensor conf_acc = at::empty(class_confidence.sizes(), class_confidence.options().dtype(at::kDouble));
  at::Tensor ent_acc = at::empty(class_entropy.sizes(), class_entropy.options().dtype(at::kDouble));
  lse::cuda::ScoreCudaArgs args{};
  args.logits = logits.const_data_ptr();
  args.kind = float_kind(logits.scalar_type());
  args.geometry = pixel_geometry(logits);
  args.confidence = confidence.data_ptr<float>();
  args.label = label.data_ptr<int64_t>();
  args.entropy = entropy.data_ptr<float>();
  args.class_pixels = class_pixels.data_ptr<int64_t>();
  args.class_confidence = conf_acc.data_ptr<double>();
  args.class_entropy = ent_acc.data_ptr<double>();
  const cudaError_t err = lse::cuda::score_cuda_launch(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "lse_fast.score: CUDA kernel launch failed: ",
              cudaGetErrorString(err));
  class_confidence.copy_(conf_acc);
  class_entropy.copy_(ent_acc);
  return result;
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_IMPL(lse_fast, CUDA, m) {
  m.impl("score", &lse::torch_ops::score_cuda_kernel);
}
