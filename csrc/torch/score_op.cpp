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

ScoreTuple score_upsampled_meta(const at::Tensor& logits, at::IntArrayRef size) {
  const auto [out_h, out_w] = check_score_upsampled_input(logits, size);
  return allocate_score_outputs(logits, out_h, out_w);
}

// The 16/32-bit FloatKinds score takes (float64 is rejected by its checks).
template <typename F>
void dispatch_score_dtype(const at::Tensor& logits, F&& f) {
  dispatch_type<float, half_t, bfloat16_t>(static_cast<int>(float_kind(logits.scalar_type())), f);
}

ScoreTuple score_cpu_kernel(const at::Tensor& logits) {
  check_score_input(logits);
  LSE_CHECK_DEVICE("score", logits, at::kCPU);
  LSE_CHECK_CPU_ISA("score");
  ScoreTuple result = allocate_score_outputs(logits, logits.size(2), logits.size(3));
  auto& [confidence, label, entropy, class_pixels, class_confidence, class_entropy] = result;
  if (logits.numel() == 0) return result;

  const PixelGeometry g = pixel_geometry(logits);
  const cpu::ScoreOutputs out{confidence.data_ptr<float>(), label.data_ptr<int64_t>(),
                              entropy.data_ptr<float>()};
  dispatch_score_dtype(logits, [&](auto tag) {
    using T = typename decltype(tag)::type;
    score_tiles(g, class_pixels, class_confidence, class_entropy,
                [&](int64_t begin, int64_t end, const cpu::ScorePartials& partials) {
                  cpu::score_cpu_tiles(static_cast<const T*>(logits.const_data_ptr()), g, begin, end, out,
                                       partials);
                });
  });
  return result;
}

ScoreTuple score_upsampled_cpu_kernel(const at::Tensor& logits, at::IntArrayRef size) {
  const auto [out_h, out_w] = check_score_upsampled_input(logits, size);
  LSE_CHECK_DEVICE("score", logits, at::kCPU);
  LSE_CHECK_CPU_ISA("score");
  ScoreTuple result = allocate_score_outputs(logits, out_h, out_w);
  auto& [confidence, label, entropy, class_pixels, class_confidence, class_entropy] = result;
  if (logits.numel() == 0) return result;  // N == 0 (h, w > 0 is checked)

  cpu::UpsampledLogits u;
  u.n = logits.size(0), u.c = logits.size(1), u.h = logits.size(2), u.w = logits.size(3);
  u.stride_n = logits.stride(0), u.stride_c = logits.stride(1);
  u.stride_h = logits.stride(2), u.stride_w = logits.stride(3);
  u.out_h = out_h, u.out_w = out_w;
  const cpu::ScoreOutputs out{confidence.data_ptr<float>(), label.data_ptr<int64_t>(),
                              entropy.data_ptr<float>()};
  dispatch_score_dtype(logits, [&](auto tag) {
    using T = typename decltype(tag)::type;
    score_tiles(cpu::upsampled_geometry(u), class_pixels, class_confidence, class_entropy,
                [&](int64_t begin, int64_t end, const cpu::ScorePartials& partials) {
                  cpu::score_upsampled_cpu_tiles(static_cast<const T*>(logits.const_data_ptr()), u, begin, end,
                                                 out, partials);
                });
  });
  return result;
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_FRAGMENT(lse_fast, m) {
  m.def(
      "score(Tensor logits) -> (Tensor confidence, Tensor label, Tensor entropy, "
      "Tensor class_pixels, Tensor class_confidence, Tensor class_entropy)");
  // score of the bilinear (align_corners=False) upsampling of the logits to
  // `size`, computed from the low-resolution logits without materialising it.
  m.def(
      "score_upsampled(Tensor logits, int[2] size) -> (Tensor confidence, Tensor label, "
      "Tensor entropy, Tensor class_pixels, Tensor class_confidence, Tensor class_entropy)");
}

TORCH_LIBRARY_IMPL(lse_fast, Meta, m) {
  m.impl("score", &lse::torch_ops::score_meta);
  m.impl("score_upsampled", &lse::torch_ops::score_upsampled_meta);
}

TORCH_LIBRARY_IMPL(lse_fast, CPU, m) {
  m.impl("score", &lse::torch_ops::score_cpu_kernel);
  m.impl("score_upsampled", &lse::torch_ops::score_upsampled_cpu_kernel);
}
