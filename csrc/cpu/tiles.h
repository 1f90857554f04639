// Tiling shared by the CPU kernels. The pixels of every image are cut into
// tiles of at most kTile pixels along one row (rows x cols as in
// PixelGeometry). A tile is processed independently and writes one row of
// partial sums, so any set of tiles can run on any thread and partials added
// in tile order give results independent of the thread count.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/geometry.h"
#include "core/platform.h"
#include "cpu/isa.h"

namespace lse::cpu {

constexpr int64_t kTile = 256;

struct Tiling {
  int64_t per_row = 0;    // tiles in one row of pixels
  int64_t per_image = 0;  // tiles in one image
  int64_t total = 0;      // tiles in the batch
};

inline Tiling make_tiling(const PixelGeometry& g) {
  Tiling t;
  t.per_row = (g.cols + kTile - 1) / kTile;
  t.per_image = t.per_row * g.rows;
  t.total = t.per_image * g.n;
  return t;
}

struct Tile {
  int64_t n, row, col0, len;
  int64_t pixel;         // index of the tile's first pixel within its image
  int64_t input_offset;  // element offset of its first pixel's class 0
};

inline Tile tile_at(const PixelGeometry& g, const Tiling& tiling, int64_t tile) {
  Tile t;
  t.n = tile / tiling.per_image;
  const int64_t in_image = tile - t.n * tiling.per_image;
  t.row = in_image / tiling.per_row;
  t.col0 = (in_image - t.row * tiling.per_row) * kTile;
  t.len = g.cols - t.col0 < kTile ? g.cols - t.col0 : kTile;
  t.pixel = t.row * g.cols + t.col0;
  t.input_offset = t.n * g.stride_n + t.row * g.stride_row + t.col0 * g.stride_col;
  return t;
}

namespace detail {
template <typename A, typename T>
LSE_HD void gather_planes_body(const T* src, int64_t stride_c, int64_t stride_p,
                               int64_t num_classes, int64_t len, A* dst) {
  for (int64_t c = 0; c < num_classes; ++c) {
    const T* x = src + c * stride_c;
    A* y = dst + c * kTile;
    for (int64_t p = 0; p < len; ++p) {
      if constexpr (std::is_same_v<T, A>) {
        y[p] = x[p * stride_p];
      } else {
        y[p] = to_float(x[p * stride_p]);
      }
    }
  }
}

LSE_CPU_DISPATCH(gather_planes_dispatch, gather_planes_body)
}  // namespace detail

// Copies a tile's logits into planes dst[c * kTile + p] of the accumulation
// type A (float, or double for double input), converting the dtype and
// gathering strided pixels (e.g. channels_last).
template <typename A, typename T>
void gather_planes(const T* src, int64_t stride_c, int64_t stride_p, int64_t num_classes,
                   int64_t len, A* dst) {
  detail::gather_planes_dispatch(src, stride_c, stride_p, num_classes, len, dst);
}

}  // namespace lse::cpu
