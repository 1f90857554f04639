// lse_fast::score and lse_fast::score_upsampled: schemas, Meta kernels
// (torch.compile) and the CPU implementation, torch threading over the
// tiles of the torch-free kernel in csrc/cpu/score_cpu_kernel.cpp.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "core/dispatch.h"
#include "cpu/score_cpu_kernel.h"
#include "torch/score_op.h"
#include "torch/tensor_views.h"

namespace lse::torch_ops {
namespace {

// Threads `run_tiles(begin, end, partials)` over the tiles of geometry `g`
// (per-tile class partials), then reduces the partials in a fixed tile
// order, so the per-class sums do not depend on the thread count.
template <typename RunTiles>
void score_tiles(const PixelGeometry& g, at::Tensor& class_pixels, at::Tensor& class_confidence,
                 at::Tensor& class_entropy, const RunTiles& run_tiles) {
  const cpu::Tiling tiling = cpu::make_tiling(g);
  const auto opts = at::TensorOptions().device(at::kCPU);
  at::Tensor part_pixels = at::empty({tiling.total, g.c}, opts.dtype(at::kLong));
  at::Tensor part_conf = at::empty({tiling.total, g.c}, opts.dtype(at::kDouble));
  at::Tensor part_ent = at::empty({tiling.total, g.c}, opts.dtype(at::kDouble));
  const cpu::ScorePartials partials{part_pixels.data_ptr<int64_t>(), part_conf.data_ptr<double>(),
                                    part_ent.data_ptr<double>()};
  // Enough tiles per task to amortise scheduling (about 64K logits).
  const int64_t grain = std::max<int64_t>(1, 65536 / (g.c * cpu::kTile));
  at::parallel_for(0, tiling.total, grain,
                   [&](int64_t begin, int64_t end) { run_tiles(begin, end, partials); });
  cpu::score_cpu_reduce(g, partials, class_pixels.data_ptr<int64_t>(),
                        class_confidence.data_ptr<float>(), class_entropy.data_ptr<float>());
}

ScoreTuple score_meta(const at::Tensor& logits) {
  check_score_input(logits);
  return allocate_score_outputs(logits, logits.sym_size(2), logits.sym_size(3));
}

ScoreTuple score_upsampled_meta(const at::Tensor& logits, at::IntArrayRef size, bool /*align_corners*/) {
  const auto [out_h, out_w] = check_score_upsampled_input(logits, size);
  return allocate_score_outputs(logits, out_h, out_w);
}

ScoreTuple score_probs_meta(const at::Tensor& probs) {
  check_score_input(probs, "score_probs", "probs");
  return allocate_score_outputs(probs, probs.sym_size(2), probs.sym_size(3));
}

ScoreTuple score_probs_upsampled_meta(const at::Tensor& probs, at::IntArrayRef size, bool /*align_corners*/) {
  const auto [out_h, out_w] = check_score_upsampled_input(probs, size, "score_probs", "probs");
  return allocate_score_outputs(probs, out_h, out_w);
}

// The 16/32-bit FloatKinds score takes (float64 is rejected by its checks).
template <typename F>
void dispatch_score_dtype(const at::Tensor& logits, F&& f) {
  dispatch_type<float, half_t, bfloat16_t>(static_cast<int>(float_kind(logits.scalar_type())), f);
}

// score and score_probs on the CPU (after their checks).
ScoreTuple score_cpu_common(const at::Tensor& x, const char* op, cpu::ScoreFrom from) {
  TORCH_CHECK(x.device().type() == at::kCPU, "lse_fast.", op, ": `",
              from == cpu::ScoreFrom::Probs ? "probs" : "logits", "` must be on cpu, got ", x.device());
  LSE_CHECK_CPU_ISA(op);
  ScoreTuple result = allocate_score_outputs(x, x.size(2), x.size(3));
  auto& [confidence, label, entropy, class_pixels, class_confidence, class_entropy] = result;
  if (x.numel() == 0) return result;

  const PixelGeometry g = pixel_geometry(x);
  const cpu::ScoreOutputs out{confidence.data_ptr<float>(), label.data_ptr<int64_t>(),
                              entropy.data_ptr<float>()};
  dispatch_score_dtype(x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    score_tiles(g, class_pixels, class_confidence, class_entropy,
                [&](int64_t begin, int64_t end, const cpu::ScorePartials& partials) {
                  cpu::score_cpu_tiles(static_cast<const T*>(x.const_data_ptr()), g, begin, end, out,
                                       partials, from);
                });
  });
  return result;
}

// The upsampled forms on the CPU (after their checks).
ScoreTuple score_upsampled_cpu_common(const at::Tensor& x, int64_t out_h, int64_t out_w, bool align_corners,
                                      const char* op, cpu::ScoreFrom from) {
  TORCH_CHECK(x.device().type() == at::kCPU, "lse_fast.", op, ": `",
              from == cpu::ScoreFrom::Probs ? "probs" : "logits", "` must be on cpu, got ", x.device());
  LSE_CHECK_CPU_ISA(op);
  ScoreTuple result = allocate_score_outputs(x, out_h, out_w);
  auto& [confidence, label, entropy, class_pixels, class_confidence, class_entropy] = result;
  if (x.numel() == 0) return result;  // N == 0 (h, w > 0 is checked)

  cpu::UpsampledLogits u;
  u.n = x.size(0), u.c = x.size(1), u.h = x.size(2), u.w = x.size(3);
  u.stride_n = x.stride(0), u.stride_c = x.stride(1);
  u.stride_h = x.stride(2), u.stride_w = x.stride(3);
  u.out_h = out_h, u.out_w = out_w;
  u.align_corners = align_corners;
  const cpu::ScoreOutputs out{confidence.data_ptr<float>(), label.data_ptr<int64_t>(),
                              entropy.data_ptr<float>()};
  dispatch_score_dtype(x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    score_tiles(cpu::upsampled_geometry(u), class_pixels, class_confidence, class_entropy,
                [&](int64_t begin, int64_t end, const cpu::ScorePartials& partials) {
                  cpu::score_upsampled_cpu_tiles(static_cast<const T*>(x.const_data_ptr()), u, begin, end,
                                                 out, partials, from);
                });
  });
  return result;
}

ScoreTuple score_cpu_kernel(const at::Tensor& logits) {
  check_score_input(logits);
  return score_cpu_common(logits, "score", cpu::ScoreFrom::Logits);
}

ScoreTuple score_upsampled_cpu_kernel(const at::Tensor& logits, at::IntArrayRef size, bool align_corners) {
  const auto [out_h, out_w] = check_score_upsampled_input(logits, size);
  return score_upsampled_cpu_common(logits, out_h, out_w, align_corners, "score", cpu::ScoreFrom::Logits);
}

ScoreTuple score_probs_cpu_kernel(const at::Tensor& probs) {
  check_score_input(probs, "score_probs", "probs");
  return score_cpu_common(probs, "score_probs", cpu::ScoreFrom::Probs);
}

ScoreTuple score_probs_upsampled_cpu_kernel(const at::Tensor& probs, at::IntArrayRef size, bool align_corners) {
  const auto [out_h, out_w] = check_score_upsampled_input(probs, size, "score_probs", "probs");
  return score_upsampled_cpu_common(probs, out_h, out_w, align_corners, "score_probs", cpu::ScoreFrom::Probs);
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_FRAGMENT(lse_fast, m) {
  m.def(
      "score(Tensor logits) -> (Tensor confidence, Tensor label, Tensor entropy, "
      "Tensor class_pixels, Tensor class_confidence, Tensor class_entropy)");
  // score of the bilinear upsampling of the logits to `size` (F.interpolate's
  // align_corners), computed from the low-resolution logits without
  // materialising it.
  m.def(
      "score_upsampled(Tensor logits, int[2] size, bool align_corners=False) -> (Tensor confidence, "
      "Tensor label, Tensor entropy, Tensor class_pixels, Tensor class_confidence, Tensor class_entropy)");
  // The same outputs from probabilities (softmax outputs): max p, argmax,
  // -sum p log p / log C with 0 log 0 = 0.
  m.def(
      "score_probs(Tensor probs) -> (Tensor confidence, Tensor label, Tensor entropy, "
      "Tensor class_pixels, Tensor class_confidence, Tensor class_entropy)");
  // score_probs of the bilinear upsampling of the probabilities to `size`.
  m.def(
      "score_probs_upsampled(Tensor probs, int[2] size, bool align_corners=False) -> (Tensor confidence, "
      "Tensor label, Tensor entropy, Tensor class_pixels, Tensor class_confidence, Tensor class_entropy)");
}

TORCH_LIBRARY_IMPL(lse_fast, Meta, m) {
  m.impl("score", &lse::torch_ops::score_meta);
  m.impl("score_upsampled", &lse::torch_ops::score_upsampled_meta);
  m.impl("score_probs", &lse::torch_ops::score_probs_meta);
  m.impl("score_probs_upsampled", &lse::torch_ops::score_probs_upsampled_meta);
}

TORCH_LIBRARY_IMPL(lse_fast, CPU, m) {
  m.impl("score", &lse::torch_ops::score_cpu_kernel);
  m.impl("score_upsampled", &lse::torch_ops::score_upsampled_cpu_kernel);
  m.impl("score_probs", &lse::torch_ops::score_probs_cpu_kernel);
  m.impl("score_probs_upsampled", &lse::torch_ops::score_probs_upsampled_cpu_kernel);
}
