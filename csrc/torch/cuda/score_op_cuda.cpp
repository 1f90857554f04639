// CUDA implementation of lse_fast::score and score_probs (direct and
// upsampled): device guard, stream and output
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

// Every form: the direct score (upsample == nullptr) and the upsampled one,
// whose outputs are [N, H, W] for the geometry `g`; logits or (probs)
// probabilities.
ScoreTuple score_cuda_common(const at::Tensor& x, int64_t out_h, int64_t out_w, const PixelGeometry& g,
                             const lse::cuda::ScoreUpsample* upsample, bool probs) {
  const char* op = probs ? "score_probs" : "score";
  const char* name = probs ? "probs" : "logits";
  LSE_CHECK_ARG(op, x.device().type() == at::kCUDA, name, "must be on cuda, got ", x.device());
  LSE_CHECK_ARG(op, x.size(1) <= lse::cuda::kScoreMaxClasses, name, "has ", x.size(1),
                " classes; the CUDA kernel supports at most ", lse::cuda::kScoreMaxClasses);
  const c10::cuda::CUDAGuard guard(x.device());
  const bool launches = x.numel() > 0 && out_h * out_w > 0;
  // The kernel writes every output; zeros only when nothing is launched.
  ScoreTuple result = allocate_score_outputs(x, out_h, out_w, /*zero_class_sums=*/!launches);
  auto& [confidence, label, entropy, class_pixels, class_confidence, class_entropy] = result;
  if (!launches) return result;

  // Per-class sums accumulate in double in the workspace; the kernel rounds
  // them into the outputs once (no zero fills or dtype copies here).
  at::Tensor workspace = at::empty(
      {static_cast<int64_t>((lse::cuda::score_workspace_bytes(x.size(0), x.size(1)) + 7) / 8)},
      x.options().dtype(at::kDouble));
  lse::cuda::ScoreCudaArgs args{};
  args.logits = x.const_data_ptr();
  args.kind = float_kind(x.scalar_type());
  args.geometry = g;
  args.upsample = upsample;
  args.probs = probs;
  args.confidence = confidence.data_ptr<float>();
  args.label = label.data_ptr<int64_t>();
  args.entropy = entropy.data_ptr<float>();
  args.workspace = lse::cuda::make_score_workspace(workspace.data_ptr(), x.size(0), x.size(1));
  args.class_pixels = class_pixels.data_ptr<int64_t>();
  args.class_confidence = class_confidence.data_ptr<float>();
  args.class_entropy = class_entropy.data_ptr<float>();
  const cudaError_t err = lse::cuda::score_cuda_launch(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "lse_fast.", op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
  return result;
}

ScoreTuple score_upsampled_cuda_common(const at::Tensor& x, int64_t out_h, int64_t out_w, bool align_corners,
                                       bool probs) {
  lse::cuda::ScoreUpsample up;
  up.y = upsample_axis(x.size(2), out_h, align_corners);
  up.x = upsample_axis(x.size(3), out_w, align_corners);
  up.stride_h = x.stride(2), up.stride_w = x.stride(3);
  PixelGeometry g;
  g.n = x.size(0), g.c = x.size(1), g.rows = out_h, g.cols = out_w;
  g.stride_n = x.stride(0), g.stride_c = x.stride(1);
  g.stride_row = 0, g.stride_col = 0;  // unused: pixels are read through `up`
  return score_cuda_common(x, out_h, out_w, g, &up, probs);
}

ScoreTuple score_cuda_kernel(const at::Tensor& logits) {
  check_score_input(logits);
  return score_cuda_common(logits, logits.size(2), logits.size(3), pixel_geometry(logits), nullptr, false);
}

ScoreTuple score_upsampled_cuda_kernel(const at::Tensor& logits, at::IntArrayRef size, bool align_corners) {
  const auto [out_h, out_w] = check_score_upsampled_input(logits, size);
  return score_upsampled_cuda_common(logits, out_h, out_w, align_corners, false);
}

ScoreTuple score_probs_cuda_kernel(const at::Tensor& probs) {
  check_score_input(probs, "score_probs", "probs");
  return score_cuda_common(probs, probs.size(2), probs.size(3), pixel_geometry(probs), nullptr, true);
}

ScoreTuple score_probs_upsampled_cuda_kernel(const at::Tensor& probs, at::IntArrayRef size, bool align_corners) {
  const auto [out_h, out_w] = check_score_upsampled_input(probs, size, "score_probs", "probs");
  return score_upsampled_cuda_common(probs, out_h, out_w, align_corners, true);
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_IMPL(lse_fast, CUDA, m) {
  m.impl("score", &lse::torch_ops::score_cuda_kernel);
  m.impl("score_upsampled", &lse::torch_ops::score_upsampled_cuda_kernel);
  m.impl("score_probs", &lse::torch_ops::score_probs_cuda_kernel);
  m.impl("score_probs_upsampled", &lse::torch_ops::score_probs_upsampled_cuda_kernel);
}
