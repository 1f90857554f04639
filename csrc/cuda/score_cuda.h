// Torch-free CUDA launcher of the fused scoring op.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/crop_math.h"
#include "core/geometry.h"
#include "core/platform.h"

namespace lse::cuda {

// The per-block class accumulators live in shared memory: 12 bytes a class.
constexpr int64_t kScoreMaxClasses = 4096;

// Scoring the bilinear (align_corners=False) upsampling of [N, C, h, w]
// logits: the taps of each output pixel come from core/crop_math.h.
struct ScoreUpsample {
  CropAxis y, x;              // upsample_axis(h, H), upsample_axis(w, W)
  int64_t stride_h, stride_w;  // element strides of the low-resolution logits
};

struct ScoreCudaArgs {
  const void* logits;  // [N, C, H, W] with the strides in `geometry`
  FloatKind kind;
  // Direct: the logits' geometry. Upsampled: rows x cols = the output H x W,
  // with the logits' stride_n and stride_c.
  PixelGeometry geometry;
  const ScoreUpsample* upsample;  // nullptr: score the logits as they are
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
