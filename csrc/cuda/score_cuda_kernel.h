// Torch-free CUDA launcher of the fused scoring op.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/resample.h"
#include "core/geometry.h"
#include "core/platform.h"

namespace lse::cuda {

// The per-block class accumulators live in shared memory: 12 bytes a class.
constexpr int64_t kScoreMaxClasses = 4096;

// Scoring the bilinear upsampling of [N, C, h, w] logits (or
// probabilities): the taps of each output pixel come from core/resample.h.
struct ScoreUpsample {
  ResampleAxis y, x;           // upsample_axis(h, H, align_corners), upsample_axis(w, W, align_corners)
  int64_t stride_h, stride_w;  // element strides of the low-resolution logits
};

// Per-class accumulators of one call, zeroed by the launcher: [N * C] each
// and a block counter, carved from one buffer of score_workspace_bytes.
struct ScoreWorkspace {
  unsigned long long* pixels;
  double* confidence;
  double* entropy;
  unsigned* done;
};

inline size_t score_workspace_bytes(int64_t n, int64_t c) {
  return static_cast<size_t>(n * c) * (sizeof(unsigned long long) + 2 * sizeof(double)) + sizeof(unsigned);
}

// Carves the workspace out of `buffer` (8-byte aligned, score_workspace_bytes).
inline ScoreWorkspace make_score_workspace(void* buffer, int64_t n, int64_t c) {
  auto* base = static_cast<unsigned long long*>(buffer);
  const int64_t cells = n * c;
  ScoreWorkspace w;
  w.pixels = base;
  w.confidence = reinterpret_cast<double*>(base + cells);
  w.entropy = w.confidence + cells;
  w.done = reinterpret_cast<unsigned*>(w.entropy + cells);
  return w;
}

struct ScoreCudaArgs {
  const void* logits;  // [N, C, H, W] with the strides in `geometry`
  FloatKind kind;
  // Direct: the logits' geometry. Upsampled: rows x cols = the output H x W,
  // with the logits' stride_n and stride_c.
  PixelGeometry geometry;
  const ScoreUpsample* upsample;  // nullptr: score the logits as they are
  bool probs;                     // the values are probabilities (score_probs), not logits
  float* confidence;   // [N, H * W]
  int64_t* label;      // [N, H * W]
  float* entropy;      // [N, H * W]
  ScoreWorkspace workspace;    // zeroed by the launcher
  int64_t* class_pixels;       // [N, C] outputs, written by the kernel's last block
  float* class_confidence;     // [N, C]
  float* class_entropy;        // [N, C]
};

// Zeroes the workspace (one memset), launches the kernel on `stream` (it
// writes every output) and returns the launch status. Requires N * H * W > 0 and 1 <= C <= kScoreMaxClasses.
cudaError_t score_cuda_launch(const ScoreCudaArgs& args, cudaStream_t stream);

}  // namespace lse::cuda
