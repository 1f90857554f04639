// Torch-free CPU kernels of crop_resize (forward and backward). The torch
// glue validates boxes, allocates outputs and splits the work units across
// threads; every unit writes disjoint output.
#pragma once

#include <cstdint>

#include "core/resample.h"
#include "core/platform.h"

namespace lse::cpu {

// Taps of every box along both output axes, element offsets premultiplied
// by the input strides. Bilinear uses (off0, off1, l1); nearest uses off0.
struct AxisTaps {
  int64_t* off0;  // [K * out]
  int64_t* off1;  // [K * out]
  float* l1;      // [K * out]
};

void crop_bilinear_taps(const CropBoxes& boxes, const CropImage& g, int64_t oh, int64_t ow,
                        bool align_corners, const AxisTaps& rows, const AxisTaps& cols);
void crop_nearest_taps(const CropBoxes& boxes, const CropImage& g, int64_t oh, int64_t ow,
                       const AxisTaps& rows, const AxisTaps& cols);

// Forward, over work units u = box * oh + output_row in [begin, end). The
// output is [K, C, oh, ow] contiguous. T: float, double, half_t, bfloat16_t.
template <typename T>
void crop_bilinear_cpu(const T* input, const CropImage& g, const CropBoxes& boxes, int64_t oh,
                       int64_t ow, const AxisTaps& rows, const AxisTaps& cols, T* out,
                       int64_t begin, int64_t end);

// Nearest copies elements bit for bit: E is an unsigned storage type of the
// element's size (uint8_t, uint16_t, uint32_t, uint64_t).
template <typename E>
void crop_nearest_cpu(const E* input, const CropImage& g, const CropBoxes& boxes, int64_t oh,
                      int64_t ow, const AxisTaps& rows, const AxisTaps& cols, E* out,
                      int64_t begin, int64_t end);

// Backward: accumulates grad_out [K, C, oh, ow] (contiguous, type T) into
// grad_in [N, C, H, W] (contiguous, A = float or double) over the planes
// p = n * C + c in [begin, end). `order` lists the boxes grouped by image,
// image n's being order[first[n] .. first[n + 1]); within an image they are
// added in box order, so the result does not depend on the thread count.
// Taps are those of crop_*_taps for a contiguous grad_in geometry.
template <typename T, typename A>
void crop_resize_backward_cpu(const T* grad_out, const CropImage& g, int64_t oh, int64_t ow,
                              bool nearest, const AxisTaps& rows, const AxisTaps& cols,
                              const int64_t* order, const int64_t* first, A* grad_in,
                              int64_t begin, int64_t end);

}  // namespace lse::cpu
