// How the kernels see an [N, C, H, W] tensor: N images of C planes of
// `rows` x `cols` pixels with arbitrary element strides. Where H and W can be
// fused (a plain or channels_last layout), the glue passes rows == 1 and
// cols == H * W so the kernels walk long unit- or C-strided pixel runs.
#pragma once

#include <cstdint>

#include "core/platform.h"

namespace lse {

struct PixelGeometry {
  int64_t n = 0, c = 0, rows = 0, cols = 0;
  int64_t stride_n = 0, stride_c = 0, stride_row = 0, stride_col = 0;

  LSE_HD int64_t pixels() const { return rows * cols; }

  // Element offset, within one image, of the first class of pixel q
  // (q in [0, pixels()), row-major over rows x cols).
  LSE_HD int64_t pixel_offset(int64_t q) const {
    if (rows == 1) return q * stride_col;
    const int64_t row = q / cols;
    return row * stride_row + (q - row * cols) * stride_col;
  }
};

// Builds the geometry of an [N, C, H, W] view from its sizes and strides,
// fusing H and W whenever one pixel stride walks both.
inline PixelGeometry make_pixel_geometry(const int64_t sizes[4], const int64_t strides[4]) {
  PixelGeometry g;
  g.n = sizes[0];
  g.c = sizes[1];
  g.stride_n = strides[0];
  g.stride_c = strides[1];
  const int64_t h = sizes[2], w = sizes[3];
  if (w == 1) {
    g.rows = 1, g.cols = h, g.stride_row = 0, g.stride_col = strides[2];
  } else if (h == 1 || strides[2] == w * strides[3]) {
    g.rows = 1, g.cols = h * w, g.stride_row = 0, g.stride_col = strides[3];
  } else {
    g.rows = h, g.cols = w, g.stride_row = strides[2], g.stride_col = strides[3];
  }
  return g;
}

}  // namespace lse
