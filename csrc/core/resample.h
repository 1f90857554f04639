// Sampling math of the crop ops, shared by the CPU and CUDA kernels: where
// output pixel `dst` of a box resized to `out_size` reads its input.
//
// A box axis covers the input interval [start, end). For an integer box the
// taps are exactly those of F.interpolate on the cropped slice (bilinear with
// either align_corners, and "nearest-exact"); a fractional box shifts them by
// its fractional start. Taps never leave the pixels the box touches,
// [floor(start), ceil(end) - 1], as F.interpolate's never leave the slice.
#pragma once

#include <math.h>

#include <cstdint>

#include "core/fast_math.h"
#include "core/platform.h"

namespace lse {

struct ResampleAxis {
  int64_t lo = 0;      // floor(start): input index of the box's first pixel
  int64_t hi = 0;      // last input index a tap may read
  float frac = 0.0f;   // start - lo, in [0, 1)
  float scale = 0.0f;  // input pixels per output pixel (F.interpolate's scale)
  bool align_corners = false;
};

// Requires 0 <= start < end <= limit and out_size >= 1 (the glue checks boxes).
LSE_HD ResampleAxis make_resample_axis(float start, float end, int64_t out_size, int64_t limit,
                               bool align_corners) {
  ResampleAxis a;
  const float lo = floorf(start);
  a.lo = static_cast<int64_t>(lo);
  a.frac = start - lo;
  int64_t top = static_cast<int64_t>(ceilf(end));
  top = top < limit ? top : limit;
  a.hi = top - 1;
  const float extent = end - start;
  if (align_corners) {
    a.scale = out_size > 1 ? (extent - 1.0f) / static_cast<float>(out_size - 1) : 0.0f;
  } else {
    a.scale = extent / static_cast<float>(out_size);
  }
  a.align_corners = align_corners;
  return a;
}

// The axis of a bilinear upsampling of `in` pixels to `out` with either
// align_corners: linear_tap on it gives exactly F.interpolate's taps (the
// whole map is a box [0, in)). Used by crop_pseudo_labels and the upsampled
// score.
LSE_HD ResampleAxis upsample_axis(int64_t in, int64_t out, bool align_corners = false) {
  return make_resample_axis(0.0f, static_cast<float>(in), out, in, align_corners);
}

// Two neighbouring input indices and the weight of the second.
struct LinearTap {
  int64_t i0 = 0, i1 = 0;
  float l1 = 0.0f;  // weight of i1; i0 has 1 - l1
};

LSE_HD LinearTap linear_tap(const ResampleAxis& a, int64_t dst) {
  const float d = static_cast<float>(dst);
  float src = a.align_corners ? a.scale * d : a.scale * (d + 0.5f) - 0.5f;
  src = src < 0.0f ? 0.0f : src;
  const float u = a.frac + src;
  const float cell = floorf(u);
  LinearTap t;
  int64_t i0 = a.lo + static_cast<int64_t>(cell);
  i0 = i0 < a.hi ? i0 : a.hi;
  t.i0 = i0;
  t.i1 = i0 < a.hi ? i0 + 1 : a.hi;
  t.l1 = u - cell;
  return t;
}

// F.interpolate's bilinear arithmetic in the accumulation type A, with
// weights l1y (of the second row) and l1x (of the second column):
//   l0y * (l0x * a + l1x * b) + l1y * (l0x * c + l1x * d)
// where a, b are the first row's two taps and c, d the second row's. The one
// blend of every bilinear kernel (crop_resize, the pseudo-label filter, the
// upsampled score), CPU and CUDA.
template <typename A>
LSE_HD A bilinear_blend(float l1y, float l1x, A a, A b, A c, A d) {
  const A wy1 = l1y, wy0 = A(1) - A(l1y), wx1 = l1x, wx0 = A(1) - A(l1x);
  return wy0 * (wx0 * a + wx1 * b) + wy1 * (wx0 * c + wx1 * d);
}

// The zero-weight-tap rule of the scoring resamplers (the upsampled score
// and score_probs, crop_pseudo_labels): a tap whose weight is exactly 0
// (the second tap of an exact source position: borders, clamped taps,
// align_corners=True grid points) contributes nothing, so a -inf logit (or
// a NaN or inf) there cannot turn the value into 0 * -inf = NaN. A tap with
// a weight > 0 counts as usual: -inf there makes the value -inf (p = 0).
// On finite values the result equals the plain weighted sum (w * x = 0 for
// w = 0, up to the sign of a zero). crop_resize keeps F.interpolate's plain
// arithmetic (bilinear_blend), where 0 * -inf is NaN.
template <typename A>
LSE_HD A live_tap(A w, A x) {
  return w != A(0) ? w * x : A(0);
}

// bilinear_blend under the zero-weight-tap rule, in the same order. Only
// the second row's and second column's weights (l1y, l1x) can be 0: the
// first ones, 1 - l1 with l1 in [0, 1), are > 0.
template <typename A>
LSE_HD A bilinear_blend_live(float l1y, float l1x, A a, A b, A c, A d) {
  const A wy1 = l1y, wy0 = A(1) - A(l1y), wx1 = l1x, wx0 = A(1) - A(l1x);
  const A top = wx0 * a + live_tap(wx1, b);
  return l1y != 0.0f ? wy0 * top + wy1 * (wx0 * c + live_tap(wx1, d)) : wy0 * top;
}

// Sum of four taps with weights w[0..3], added in this order:
// ((w0 a + w1 b) + w2 c) + w3 d. The one 4-tap sum of the composed taps.
LSE_HD float four_tap_sum(const float* w, float a, float b, float c, float d) {
  return ((w[0] * a + w[1] * b) + w[2] * c) + w[3] * d;
}

// The zero-weight-tap rule where only finiteness matters (crop_pseudo_labels,
// which ignores a pixel whose resampled probabilities are not finite): a
// tap of weight 0 reads the first tap's pixel instead (weight 1 - l1 > 0),
// so the plain blend is finite iff every tap of weight > 0 is, at no cost
// in the hot loops. Finite values are unchanged (0 * x = 0 either way).
LSE_HD LinearTap drop_zero_weight_tap(LinearTap t) {
  t.i1 = t.l1 != 0.0f ? t.i1 : t.i0;
  return t;
}

// "nearest-exact": floor((dst + 0.5) * scale), the product taken in double
// and rounded to float as PyTorch's kernels do.
LSE_HD int64_t nearest_tap(const ResampleAxis& a, int64_t dst) {
  const float rel = static_cast<float>((static_cast<double>(dst) + 0.5) * static_cast<double>(a.scale));
  const int64_t i = a.lo + static_cast<int64_t>(floorf(a.frac + rel));
  return i < a.hi ? i : a.hi;
}

// A crop of an upsampled map, read straight from the low-resolution map: the
// crop's bilinear tap on the full-resolution axis composed with the
// upsampling's taps of both full-resolution neighbours. Four (index, weight)
// pairs on the low-resolution axis; weights sum to 1.
struct ComposedTaps {
  int64_t idx[4];
  float w[4];
};

// With taps passed through drop_zero_weight_tap, every composed tap of
// weight 0 reads a pixel that a tap of weight > 0 reads too.
LSE_HD ComposedTaps compose_taps(const LinearTap& crop, const LinearTap& up0, const LinearTap& up1) {
  const float l0 = 1.0f - crop.l1;
  ComposedTaps t;
  t.idx[0] = up0.i0, t.w[0] = l0 * (1.0f - up0.l1);
  t.idx[1] = up0.i1, t.w[1] = l0 * up0.l1;
  t.idx[2] = up1.i0, t.w[2] = crop.l1 * (1.0f - up1.l1);
  t.idx[3] = up1.i1, t.w[3] = crop.l1 * up1.l1;
  return t;
}

// -p log p for a probability p (0 for p <= FLT_MIN: the term is below
// 1e-36, and log_ge1's decomposition needs a normal float). NaN for a
// non-finite p (NaN, +-inf), so that crop_pseudo_labels ignores a pixel
// whose resampled probabilities are not all finite.
LSE_HD float entropy_term(float p) {
  constexpr float kMinNormal = 1.17549435e-38f;
  const float safe = p > kMinNormal ? p : 1.0f;
  const float term = p > kMinNormal ? -p * log_normal(safe) : 0.0f;
  return term + (p - p);  // p - p: 0 for finite p, NaN for NaN and +-inf
}

// An [N, C, H, W] tensor with arbitrary element strides.
struct CropImage {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t stride_n = 0, stride_c = 0, stride_h = 0, stride_w = 0;
};

// Boxes: K rows (batch_index, x1, y1, x2, y2), already validated.
struct CropBoxes {
  const float* data = nullptr;
  int64_t k = 0;
  LSE_HD int64_t image(int64_t i) const { return static_cast<int64_t>(data[5 * i]); }
  LSE_HD ResampleAxis x_axis(int64_t i, int64_t out, int64_t limit, bool align) const {
    return make_resample_axis(data[5 * i + 1], data[5 * i + 3], out, limit, align);
  }
  LSE_HD ResampleAxis y_axis(int64_t i, int64_t out, int64_t limit, bool align) const {
    return make_resample_axis(data[5 * i + 2], data[5 * i + 4], out, limit, align);
  }
};

}  // namespace lse
