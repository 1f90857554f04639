// CUDA kernel of crop_pseudo_labels: one thread per output pixel, the CPU
// kernel's arithmetic (core/resample.h taps composed with the upsampling).
#include "cuda/crop_pseudo_labels_cuda_kernel.h"

#include <math.h>

#include "cuda/launch.h"

namespace lse::cuda {
namespace {

struct PseudoLabelGeometry {
  int64_t c, h, w, image_h, image_w, oh, ow;
  bool align_corners;  // of the upsampling and the bilinear crop
};

// The CPU kernel's arithmetic per pixel: label = argmax over classes of
// sum_a wy[a] * (sum_b wx[b] * p[c, ry[a], rx[b]]); filter from the
// upsampled probabilities at the nearest full-resolution pixel (both under
// the zero-weight-tap rule; a pixel whose resampled probabilities are not
// all finite is ignored, in either). The filter
// is decided first, so its taps are dead before the label's are live (fewer
// registers), and a filtered pixel skips the label loop. Offsets are in
// Index (int32 when a probability plane has fewer than 2^31 elements).
template <typename Index>
__global__ void __launch_bounds__(kThreads)
    crop_pseudo_labels_kernel(const float* __restrict__ probs, PseudoLabelGeometry g, CropBoxes boxes,
                              const float* __restrict__ thresholds, uint8_t ignore_index,
                              uint8_t* __restrict__ out, int64_t total) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= total) return;
  const int64_t ox = i % g.ow, oy = (i / g.ow) % g.oh, k = i / (g.ow * g.oh);
  const Index plane = static_cast<Index>(g.h * g.w);
  const float* image = probs + boxes.image(k) * g.c * static_cast<int64_t>(plane);
  const ResampleAxis up_y = upsample_axis(g.h, g.image_h, g.align_corners);
  const ResampleAxis up_x = upsample_axis(g.w, g.image_w, g.align_corners);

  {
    // The filter's nearest crop has no align_corners.
    const ResampleAxis ny = boxes.y_axis(k, g.oh, g.image_h, false);
    const ResampleAxis nx = boxes.x_axis(k, g.ow, g.image_w, false);
    // Zero-weight-tap rule: a tap of weight 0 reads a pixel of weight > 0.
    const LinearTap fy = drop_zero_weight_tap(linear_tap(up_y, nearest_tap(ny, oy)));
    const LinearTap fx = drop_zero_weight_tap(linear_tap(up_x, nearest_tap(nx, ox)));
    const Index r0 = static_cast<Index>(fy.i0 * g.w), r1 = static_cast<Index>(fy.i1 * g.w);
    const Index x0 = static_cast<Index>(fx.i0), x1 = static_cast<Index>(fx.i1);
    float fmax = -1.0f, ent = 0.0f;
    int farg = 0;
    const float* p = image;
    for (int64_t c = 0; c < g.c; ++c, p += plane) {
      const float v =
          bilinear_blend<float>(fy.l1, fx.l1, p[r0 + x0], p[r0 + x1], p[r1 + x0], p[r1 + x1]);
      if (v > fmax) fmax = v, farg = static_cast<int>(c);
      ent += entropy_term(v);
    }
    // ent is NaN where a probability is not finite: the pixel is ignored.
    const float e = g.c > 1 ? ent / log_normal(static_cast<float>(g.c)) : ent * 0.0f;
    if (!(e <= thresholds[farg])) {
      out[i] = ignore_index;
      return;
    }
  }

  const ResampleAxis cy = boxes.y_axis(k, g.oh, g.image_h, g.align_corners);
  const ResampleAxis cx = boxes.x_axis(k, g.ow, g.image_w, g.align_corners);
  const LinearTap ty = drop_zero_weight_tap(linear_tap(cy, oy));
  const LinearTap tx = drop_zero_weight_tap(linear_tap(cx, ox));
  const ComposedTaps rows = compose_taps(ty, drop_zero_weight_tap(linear_tap(up_y, ty.i0)),
                                         drop_zero_weight_tap(linear_tap(up_y, ty.i1)));
  const ComposedTaps cols = compose_taps(tx, drop_zero_weight_tap(linear_tap(up_x, tx.i0)),
                                         drop_zero_weight_tap(linear_tap(up_x, tx.i1)));
  Index row_off[4], col_off[4];
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    row_off[a] = static_cast<Index>(rows.idx[a] * g.w);
    col_off[a] = static_cast<Index>(cols.idx[a]);
  }
  float best = -INFINITY, sum = 0.0f;  // sum over classes: finite iff every value is
  int label = 0;
  const float* p = image;
  for (int64_t c = 0; c < g.c; ++c, p += plane) {
    float h[4];
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const float* r = p + row_off[a];
      h[a] = four_tap_sum(cols.w, r[col_off[0]], r[col_off[1]], r[col_off[2]], r[col_off[3]]);
    }
    const float v = four_tap_sum(rows.w, h[0], h[1], h[2], h[3]);
    if (v > best) best = v, label = static_cast<int>(c);
    sum += v;
  }
  out[i] = sum - sum == 0.0f ? static_cast<uint8_t>(label) : ignore_index;
}

}  // namespace

cudaError_t crop_pseudo_labels_launch(const float* probs, int64_t n, int64_t c, int64_t h, int64_t w,
                                      int64_t image_h, int64_t image_w, const float* boxes, int64_t k,
                                      int64_t oh, int64_t ow, const float* thresholds,
                                      uint8_t ignore_index, bool align_corners, uint8_t* out,
                                      cudaStream_t stream) {
  const int64_t total = k * oh * ow;
  if (total == 0) return cudaSuccess;
  (void)n;
  const PseudoLabelGeometry g{c, h, w, image_h, image_w, oh, ow, align_corners};
  if (h * w <= INT32_MAX) {
    crop_pseudo_labels_kernel<int32_t><<<blocks_for(total), kThreads, 0, stream>>>(
        probs, g, CropBoxes{boxes, k}, thresholds, ignore_index, out, total);
  } else {
    crop_pseudo_labels_kernel<int64_t><<<blocks_for(total), kThreads, 0, stream>>>(
        probs, g, CropBoxes{boxes, k}, thresholds, ignore_index, out, total);
  }
  return cudaGetLastError();
}

}  // namespace lse::cuda
