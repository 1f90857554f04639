// Torch-free CUDA launcher of the fused scoring op.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/geometry.h"
#include "core/platform.h"

namespace lse::cuda {

// The per-block class accumulators live in shared memory: 12 bytes a class.
constexpr int64_t kScoreMaxClasses = 4096;

struct ScoreCudaArgs {
  const void* logits;  // [N, C, H, W] with the strides in `geometry`
  FloatKind kind;
  PixelGeometry geometry;
  float* confidence;   // [N, H * W]
  int64_t* label;      // [N, H * W]
  float* entropy;      // [N, H * W]
  int64_t* class_pixels;      // [N, C], set by the launcher
  double* class_confidence;   // [N, C] accumulators, set by the launcher
  double* class_entropy;      // [N, C] accumulators, set by the launcher
};

// Zeroes the class accumulators, launches the kernel on `stream` and returns
// the launch status. Requires N * H * W > 0 and 1 <= C <= kScoreMaxClasses.
cudaError_t score_cuda_launch(const ScoreCudaArgs& args, cudaStream_t stream);

}  // namespace lse::cuda
