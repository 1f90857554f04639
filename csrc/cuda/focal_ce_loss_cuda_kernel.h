// Torch-free CUDA launchers of the fused masked focal + cross-entropy loss.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dispatch.h"
#include "core/geometry.h"
#include "core/platform.h"

namespace lse::cuda {

enum class TargetKind : int { UInt8 = 0, Int64 = 1 };

// f(Type<uint8_t>{}) or f(Type<int64_t>{}) (core/dispatch.h).
template <typename F>
decltype(auto) dispatch_target(TargetKind kind, F&& f) {
  return dispatch_type<uint8_t, int64_t>(static_cast<int>(kind), std::forward<F>(f));
}

// Counts valid targets into *valid and stores the smallest flat index of a
// target outside [0, C) that is not ignore_index into *first_bad (both set
// by the launcher; *first_bad stays UINT64_MAX when there is none). With
// class_weight ([C] of float, or double when weight_is_double), also sums
// class_weight[target] over the valid pixels into *weight_sum (zeroed by the
// launcher; untouched when class_weight is nullptr). Reads targets only.
cudaError_t focal_ce_count_targets_launch(const void* target, TargetKind kind, int64_t pixels,
                                          int64_t ignore_index, int64_t num_classes,
                                          unsigned long long* valid,
                                          unsigned long long* first_bad,
                                          const void* class_weight, bool weight_is_double,
                                          double* weight_sum, cudaStream_t stream);

struct FocalCudaArgs {
  const void* logits;  // [N, C, H, W] with the strides in `geometry`
  FloatKind kind;      // Float64 computes in double
  PixelGeometry geometry;
  const void* target;  // contiguous [N, H * W]
  TargetKind target_kind;
  double gamma, beta, ce_weight;
  int64_t ignore_index;
  // Gradient scale: 1 / *weight_sum when weight_sum is set (class-weighted
  // "mean"), else 1 / *valid when `mean`, else grad_scale (1, or
  // 1 / (N * H * W) for "mean_all"). No valid pixel gives scale 0 in "mean".
  bool mean;
  double grad_scale;
  const unsigned long long* valid;   // from focal_ce_count_targets_launch
  const double* weight_sum;          // from focal_ce_count_targets_launch, or nullptr
  const void* class_weight;          // [C] of the accumulation type (double for Float64), or nullptr
  const void* pixel_weight;          // contiguous [N, H * W] of the accumulation type, or nullptr
  void* loss_per_pixel;              // [N, H * W] float (double for Float64) or nullptr; weighted
  void* grad;                        // contiguous [N, C, H * W] of the logits dtype, or nullptr
  double* loss_sum;                  // scalar accumulator, zeroed by the launcher
};

cudaError_t focal_ce_cuda_launch(const FocalCudaArgs& args, cudaStream_t stream);

}  // namespace lse::cuda
