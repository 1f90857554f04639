// Torch-free CPU kernel of the fused masked focal + cross-entropy loss.
//
// Two passes, both parallel over fixed chunks so the results do not depend
// on the thread count beyond float rounding:
//   1. focal_ce_count_targets: valid-pixel count and, with class weights,
//      the summed weight of the valid targets (the mean's divisor, needed
//      for the gradient scale before any gradient is written) and the first
//      target outside [0, C) that is not ignore_index. Reads the targets
//      only, never the logits.
//   2. focal_ce_cpu_tiles: per tile of cpu/tiles.h, max,
//      log-sum-exp, loss and (optionally) the gradient, plus one partial loss
//      sum per tile that focal_ce_cpu_reduce adds in tile order.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/geometry.h"
#include "core/platform.h"
#include "cpu/tiles.h"

namespace lse::cpu {

struct TargetCheck {
  int64_t valid = 0;        // pixels whose target is in [0, C)
  int64_t first_bad = -1;   // flat index of the first out-of-range target, or -1
  double weight_sum = 0.0;  // sum of class_weight[target] over valid pixels (0 without)
};

// Targets [begin, end) of a contiguous [N * H * W] target array.
// class_weight: [C] or nullptr (then weight_sum stays 0).
template <typename Tgt, typename W>
TargetCheck focal_ce_count_targets(const Tgt* target, int64_t begin, int64_t end,
                                   int64_t ignore_index, int64_t num_classes, const W* class_weight);

// Accumulation (and loss) type: double for double logits, else float.
template <typename T>
using FocalAcc = acc_t<T>;

template <typename A>
struct FocalArgs {
  double gamma = 3.0;
  double beta = 0.1;
  double ce_weight = 1.0;
  int64_t ignore_index = 255;
  double grad_scale = 1.0;          // 1 / divisor of "mean" / "mean_all", else 1
  const A* class_weight = nullptr;  // [C] or nullptr (all 1)
  const A* pixel_weight = nullptr;  // contiguous [N, H * W] or nullptr (all 1)
};

// T: float, half_t, bfloat16_t (float math) or double (double math).
// Tgt: uint8_t or int64_t, contiguous [N, H * W].
// loss_per_pixel: [N, H * W] of FocalAcc<T> (0 at ignored pixels; weighted) or nullptr.
// grad: contiguous [N, C, H * W] of T, or nullptr to skip the gradient.
// partial_loss: [make_tiling(g).total] per-tile loss sums.
template <typename T, typename Tgt>
void focal_ce_cpu_tiles(const T* logits, const PixelGeometry& g, const Tgt* target,
                        const FocalArgs<FocalAcc<T>>& args, int64_t tile_begin, int64_t tile_end,
                        FocalAcc<T>* loss_per_pixel, T* grad, double* partial_loss);

double focal_ce_cpu_reduce(const double* partial_loss, int64_t tiles);

}  // namespace lse::cpu
