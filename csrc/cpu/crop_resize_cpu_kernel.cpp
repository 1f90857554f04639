#include "cpu/crop_resize_cpu_kernel.h"

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/isa.h"

namespace lse::cpu {
namespace {

// One output row of one channel: F.interpolate's arithmetic (bilinear_blend).
template <typename T>
LSE_HD void bilinear_row_body(const T* r0, const T* r1, float ly, const int64_t* x0,
                              const int64_t* x1, const float* lx, int64_t ow, T* out) {
  using A = acc_t<T>;
  for (int64_t ox = 0; ox < ow; ++ox) {
    out[ox] = from_acc<T>(bilinear_blend<A>(ly, lx[ox], A(to_acc(r0[x0[ox]])), A(to_acc(r0[x1[ox]])),
                                            A(to_acc(r1[x0[ox]])), A(to_acc(r1[x1[ox]]))));
  }
}

LSE_CPU_DISPATCH(bilinear_row, bilinear_row_body)

}  // namespace

void crop_bilinear_taps(const CropBoxes& boxes, const CropImage& g, int64_t oh, int64_t ow,
                        bool align_corners, const AxisTaps& rows, const AxisTaps& cols) {
  for (int64_t k = 0; k < boxes.k; ++k) {
    const ResampleAxis ay = boxes.y_axis(k, oh, g.h, align_corners);
    for (int64_t oy = 0; oy < oh; ++oy) {
      const LinearTap t = linear_tap(ay, oy);
      rows.off0[k * oh + oy] = t.i0 * g.stride_h;
      rows.off1[k * oh + oy] = t.i1 * g.stride_h;
      rows.l1[k * oh + oy] = t.l1;
    }
    const ResampleAxis ax = boxes.x_axis(k, ow, g.w, align_corners);
    for (int64_t ox = 0; ox < ow; ++ox) {
      const LinearTap t = linear_tap(ax, ox);
      cols.off0[k * ow + ox] = t.i0 * g.stride_w;
      cols.off1[k * ow + ox] = t.i1 * g.stride_w;
      cols.l1[k * ow + ox] = t.l1;
    }
  }
}

void crop_nearest_taps(const CropBoxes& boxes, const CropImage& g, int64_t oh, int64_t ow,
                       const AxisTaps& rows, const AxisTaps& cols) {
  for (int64_t k = 0; k < boxes.k; ++k) {
    const ResampleAxis ay = boxes.y_axis(k, oh, g.h, false);
    for (int64_t oy = 0; oy < oh; ++oy) rows.off0[k * oh + oy] = nearest_tap(ay, oy) * g.stride_h;
    const ResampleAxis ax = boxes.x_axis(k, ow, g.w, false);
    for (int64_t ox = 0; ox < ow; ++ox) cols.off0[k * ow + ox] = nearest_tap(ax, ox) * g.stride_w;
  }
}

template <typename T>
void crop_bilinear_cpu(const T* input, const CropImage& g, const CropBoxes& boxes, int64_t oh,
                       int64_t ow, const AxisTaps& rows, const AxisTaps& cols, T* out,
                       int64_t begin, int64_t end) {
  for (int64_t u = begin; u < end; ++u) {
    const int64_t k = u / oh, oy = u - k * oh;
    const T* image = input + boxes.image(k) * g.stride_n;
    for (int64_t c = 0; c < g.c; ++c) {
      const T* plane = image + c * g.stride_c;
      bilinear_row(plane + rows.off0[u], plane + rows.off1[u], rows.l1[u], cols.off0 + k * ow,
                   cols.off1 + k * ow, cols.l1 + k * ow, ow, out + ((k * g.c + c) * oh + oy) * ow);
    }
  }
}

template <typename E>
void crop_nearest_cpu(const E* input, const CropImage& g, const CropBoxes& boxes, int64_t oh,
                      int64_t ow, const AxisTaps& rows, const AxisTaps& cols, E* out,
                      int64_t begin, int64_t end) {
  for (int64_t u = begin; u < end; ++u) {
    const int64_t k = u / oh, oy = u - k * oh;
    const int64_t* x = cols.off0 + k * ow;
    for (int64_t c = 0; c < g.c; ++c) {
      const E* row = input + boxes.image(k) * g.stride_n + c * g.stride_c + rows.off0[u];
      E* dst = out + ((k * g.c + c) * oh + oy) * ow;
      for (int64_t ox = 0; ox < ow; ++ox) dst[ox] = row[x[ox]];
    }
  }
}

template <typename T, typename A>
void crop_resize_backward_cpu(const T* grad_out, const CropImage& g, int64_t oh, int64_t ow,
                              bool nearest, const AxisTaps& rows, const AxisTaps& cols,
                              const int64_t* order, const int64_t* first, A* grad_in,
                              int64_t begin, int64_t end) {
  const int64_t plane_size = g.h * g.w;
  for (int64_t p = begin; p < end; ++p) {
    const int64_t n = p / g.c, c = p - n * g.c;
    A* dst = grad_in + p * plane_size;
    for (int64_t j = first[n]; j < first[n + 1]; ++j) {
      const int64_t k = order[j];
      const T* src = grad_out + (k * g.c + c) * oh * ow;
      const int64_t* x0 = cols.off0 + k * ow;
      const int64_t* x1 = cols.off1 + k * ow;
      const float* lx = cols.l1 + k * ow;
      for (int64_t oy = 0; oy < oh; ++oy) {
        const int64_t r = k * oh + oy;
        const T* go = src + oy * ow;
        A* d0 = dst + rows.off0[r];
        if (nearest) {
          for (int64_t ox = 0; ox < ow; ++ox) d0[x0[ox]] += A(to_acc(go[ox]));
          continue;
        }
        A* d1 = dst + rows.off1[r];
        const A l1y = rows.l1[r], l0y = A(1) - A(rows.l1[r]);
        for (int64_t ox = 0; ox < ow; ++ox) {
          const A v = A(to_acc(go[ox]));
          const A l1x = lx[ox], l0x = A(1) - A(lx[ox]);
          d0[x0[ox]] += l0y * l0x * v;
          d0[x1[ox]] += l0y * l1x * v;
          d1[x0[ox]] += l1y * l0x * v;
          d1[x1[ox]] += l1y * l1x * v;
        }
      }
    }
  }
}

#define LSE_INSTANTIATE_BILINEAR(T)                                                             \
  template void crop_bilinear_cpu<T>(const T*, const CropImage&, const CropBoxes&, int64_t,     \
                                     int64_t, const AxisTaps&, const AxisTaps&, T*, int64_t,    \
                                     int64_t);
LSE_INSTANTIATE_BILINEAR(float)
LSE_INSTANTIATE_BILINEAR(double)
LSE_INSTANTIATE_BILINEAR(half_t)
LSE_INSTANTIATE_BILINEAR(bfloat16_t)
#undef LSE_INSTANTIATE_BILINEAR

#define LSE_INSTANTIATE_NEAREST(E)                                                              \
  template void crop_nearest_cpu<E>(const E*, const CropImage&, const CropBoxes&, int64_t,      \
                                    int64_t, const AxisTaps&, const AxisTaps&, E*, int64_t,     \
                                    int64_t);
LSE_INSTANTIATE_NEAREST(uint8_t)
LSE_INSTANTIATE_NEAREST(uint16_t)
LSE_INSTANTIATE_NEAREST(uint32_t)
LSE_INSTANTIATE_NEAREST(uint64_t)
#undef LSE_INSTANTIATE_NEAREST

#define LSE_INSTANTIATE_BACKWARD(T, A)                                                          \
  template void crop_resize_backward_cpu<T, A>(const T*, const CropImage&, int64_t, int64_t,    \
                                               bool, const AxisTaps&, const AxisTaps&,          \
                                               const int64_t*, const int64_t*, A*, int64_t,     \
                                               int64_t);
LSE_INSTANTIATE_BACKWARD(float, float)
LSE_INSTANTIATE_BACKWARD(half_t, float)
LSE_INSTANTIATE_BACKWARD(bfloat16_t, float)
LSE_INSTANTIATE_BACKWARD(double, double)
#undef LSE_INSTANTIATE_BACKWARD

}  // namespace lse::cpu
