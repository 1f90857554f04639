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

// Scores tiles [tile_begin, tile_end). T is float, half_t or bfloat16_t.
template <typename T>
void score_cpu_tiles(const T* logits, const PixelGeometry& g, int64_t tile_begin,
                     int64_t tile_end, const ScoreOutputs& out, const ScorePartials& partials);

// Sums the partial rows of each image into [N, C] outputs.
void score_cpu_reduce(const PixelGeometry& g, const ScorePartials& partials,
                      int64_t* class_pixels, float* class_confidence, float* class_entropy);

// Whole op on the calling thread (used by the C++ tests): allocates the
// partials, scores every tile and reduces.
template <typename T>
void score_cpu_serial(const T* logits, const PixelGeometry& g, const ScoreOutputs& out,
                      int64_t* class_pixels, float* class_confidence, float* class_entropy);

}  // namespace lse::cpu
