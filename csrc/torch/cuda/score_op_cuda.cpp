// CUDA implementation of lse_fast::score: device guard, stream and output
// allocation around the torch-free launcher in csrc/cuda/score_cuda_kernel.cu.
// Built only against a CUDA-enabled torch.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/score_cuda_kernel.h"
#include "torch/score_op.h"
#include "torch/tensor_views.h"

namespace lse::torch_ops {
namespace {

// Both ops: the direct score (upsample == nullptr) and the upsampled one,
// whose outputs are [N, H, W] for the geometry `g`.
ScoreTuple score_cuda_common(const at::Tensor& logits, int64_t out_h, int64_t out_w,
                             const PixelGeometry& g, const lse::cuda::ScoreUpsample* upsample) {
  LSE_CHECK_DEVICE("score", logits, at::kCUDA);
  LSE_CHECK_ARG("score", logits.size(1) <= lse::cuda::kScoreMaxClasses, "logits",
                "has ", logits.size(1), " classes; the CUDA kernel supports at most ",
                lse::cuda::kScoreMaxClasses);
  const c10::cuda::CUDAGuard guard(logits.device());
  const bool launches = logits.numel() > 0 && out_h * out_w > 0;
  // The kernel writes every output; zeros only when nothing is launched.
  ScoreTuple result = allocate_score_outputs(logits, out_h, out_w, /*zero_class_sums=*/!launches);
  auto& [confidence, label, entropy, class_pixels, class_confidence, class_entropy] = result;
  if (!launches) return result;

  // Per-class sums accumulate in double in the workspace; the kernel rounds
  // them into the outputs once (no zero fills or dtype copies here).
  at::Tensor workspace = at::empty(
      {static_cast<int64_t>((lse::cuda::score_workspace_bytes(logits.size(0), logits.size(1)) + 7) / 8)},
      logits.options().dtype(at::kDouble));
  lse::cuda::ScoreCudaArgs args{};
  args.logits = logits.const_data_ptr();
  args.kind = float_kind(logits.scalar_type());
  args.geometry = g;
  args.upsample = upsample;
  args.confidence = confidence.data_ptr<float>();
  args.label = label.data_ptr<int64_t>();
  args.entropy = entropy.data_ptr<float>();
  args.workspace = lse::cuda::make_score_workspace(workspace.data_ptr(), logits.size(0), logits.size(1));
  args.class_pixels = class_pixels.data_ptr<int64_t>();
  args.class_confidence = class_confidence.data_ptr<float>();
  args.class_entropy = class_entropy.data_ptr<float>();
  const cudaError_t err = lse::cuda::score_cuda_launch(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "lse_fast.score: CUDA kernel launch failed: ",
              cudaGetErrorString(err));
  return result;
}

ScoreTuple score_cuda_kernel(const at::Tensor& logits) {
  check_score_input(logits);
  return score_cuda_common(logits, logits.size(2), logits.size(3), pixel_geometry(logits), nullptr);
}

ScoreTuple score_upsampled_cuda_kernel(const at::Tensor& logits, at::IntArrayRef size) {
  const auto [out_h, out_w] = check_score_upsampled_input(logits, size);
  lse::cuda::ScoreUpsample up;
  up.y = upsample_axis(logits.size(2), out_h);
  up.x = upsample_axis(logits.size(3), out_w);
  up.stride_h = logits.stride(2), up.stride_w = logits.stride(3);
  PixelGeometry g;
  g.n = logits.size(0), g.c = logits.size(1), g.rows = out_h, g.cols = out_w;
  g.stride_n = logits.stride(0), g.stride_c = logits.stride(1);
  g.stride_row = 0, g.stride_col = 0;  // unused: pixels are read through `up`
  return score_cuda_common(logits, out_h, out_w, g, &up);
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_IMPL(lse_fast, CUDA, m) {
  m.impl("score", &lse::torch_ops::score_cuda_kernel);
  m.impl("score_upsampled", &lse::torch_ops::score_upsampled_cuda_kernel);
}
