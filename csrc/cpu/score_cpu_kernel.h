// Torch-free CPU kernel of the fused scoring op.
//
// Works on the tiles of cpu/tiles.h: a tile is scored independently and
// writes its per-pixel outputs plus one row of per-class partial sums;
// score_cpu_reduce adds the partial rows in tile order, which makes the
// result independent of the number of threads.
#pragma once

#include <cstdint>

#include "core/geometry.h"
#include "core/platform.h"
#include "cpu/tiles.h"

namespace lse::cpu {

// Per-pixel outputs, each [N, rows * cols] contiguous.
struct ScoreOutputs {
  float* confidence;
  int64_t* label;
  float* entropy;
};

// Per-tile per-class partial sums, each [make_tiling(g).total, C] contiguous.
struct ScorePartials {
  int64_t* pixels;
  double* confidence;
  double* entropy;
};

// What the scored values are: logits (score: online softmax, core/score_math.h
// ScoreAcc) or probabilities (score_probs: max, argmax and -sum p log p,
// ProbAcc).
enum class ScoreFrom : int { Logits = 0, Probs = 1 };

// Scores tiles [tile_begin, tile_end). T is float, half_t or bfloat16_t.
template <typename T>
void score_cpu_tiles(const T* logits, const PixelGeometry& g, int64_t tile_begin,
                     int64_t tile_end, const ScoreOutputs& out, const ScorePartials& partials,
                     ScoreFrom from = ScoreFrom::Logits);

// [N, C, h, w] logits (or probabilities) with element strides, scored as
// their bilinear upsampling to out_h x out_w, never materialised.
struct UpsampledLogits {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t stride_n = 0, stride_c = 0, stride_h = 0, stride_w = 0;
  int64_t out_h = 0, out_w = 0;
  bool align_corners = false;  // F.interpolate's flag
};

// The geometry of the upsampled map ([N, C, out_h, out_w] rows x cols) that
// the tiling, the outputs and score_cpu_reduce of the upsampled score use.
inline PixelGeometry upsampled_geometry(const UpsampledLogits& u) {
  PixelGeometry g;
  g.n = u.n, g.c = u.c, g.rows = u.out_h, g.cols = u.out_w;
  g.stride_n = u.c * u.out_h * u.out_w, g.stride_c = u.out_h * u.out_w;
  g.stride_row = u.out_w, g.stride_col = 1;
  return g;
}

// Scores tiles [tile_begin, tile_end) of make_tiling(upsampled_geometry(u)):
// per tile, the upsampled values of its pixels (core/resample.h taps, the
// arithmetic of bilinear_blend, in float) go through the same per-pixel math
// as score (or score_probs). Each low-resolution row is blended horizontally
// once per tile column (cached while consecutive output rows read it), and
// the vertical blend is fused into the scoring loop.
template <typename T>
void score_upsampled_cpu_tiles(const T* logits, const UpsampledLogits& u, int64_t tile_begin,
                               int64_t tile_end, const ScoreOutputs& out,
                               const ScorePartials& partials, ScoreFrom from = ScoreFrom::Logits);

// Sums the partial rows of each image into [N, C] outputs.
void score_cpu_reduce(const PixelGeometry& g, const ScorePartials& partials,
                      int64_t* class_pixels, float* class_confidence, float* class_entropy);

// Whole op on the calling thread (used by the C++ tests): allocates the
// partials, scores every tile and reduces.
template <typename T>
void score_cpu_serial(const T* logits, const PixelGeometry& g, const ScoreOutputs& out,
                      int64_t* class_pixels, float* class_confidence, float* class_entropy,
                      ScoreFrom from = ScoreFrom::Logits);

}  // namespace lse::cpu
