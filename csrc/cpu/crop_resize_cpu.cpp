#include "cpu/crop_resize_cpu.h"

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
    const CropAxis ay = boxes.y_axis(k, oh, g.h, align_corners);
    for (int64_t oy = 0; oy < oh; ++oy) {
      const LinearTap t = linear_tap(ay, oy);
      rows.off0[k * oh + oy] = t.i0 * g.stride_h;
      rows.off1[k * oh + oy] = t.i1 * g.stride_h;
      rows.l1[k * oh + oy] = t.l1;
    }
    const CropAxis ax = boxes.x_axis(k, ow, g.w, align_corners);
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
    const CropAxis ay = boxes.y_axis(k, oh, g.h, false);
    for (int64_t oy = 0; oy < oh; ++oy) rows.off0[k * oh + oy] = nearest_tap(ay, oy) * g.stride_h;
    const CropAxis ax = boxes.x_axis(k, ow, g.w, false);
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

namespace {

// Row caches of one pseudo-label work unit.
struct PseudoLabelScratch {
  // Slots of crop-resized-horizontally low-resolution rows, [slot][c][ox].
  static constexpr int kSlots = 4;
  std::vector<float> slots;
  int64_t slot_row[kSlots];
  // Composed horizontal taps of the box, [ox][4].
  std::vector<int64_t> col_idx;
  std::vector<float> col_w;
  std::vector<int64_t> nearest_col;  // full-res column of each output column
  // Best class so far per output column.
  std::vector<float> best;
  std::vector<int32_t> arg;
  // The filter of one full-resolution row over the box's columns.
  int64_t filter_row = -1;
  std::vector<uint8_t> filter;
  std::vector<float> fmax, fent;
  std::vector<int32_t> farg;
  std::vector<LinearTap> fcol;  // upsampling taps of those columns
};

// The three hot loops of a pseudo-label unit; always inlined into the
// unit's body, so each ISA variant of the unit has its own compile of them.

// out[c][ox] = sum_b w[ox][b] * p[c][row][idx[ox][b]]
LSE_HD void pl_horizontal(const float* plane0, int64_t plane_stride, int64_t c, const int64_t* idx,
                          const float* w, int64_t ow, float* out) {
  for (int64_t cc = 0; cc < c; ++cc) {
    const float* p = plane0 + cc * plane_stride;
    float* o = out + cc * ow;
    for (int64_t ox = 0; ox < ow; ++ox) {
      const int64_t* i = idx + 4 * ox;
      const float* ww = w + 4 * ox;
      o[ox] = four_tap_sum(ww, p[i[0]], p[i[1]], p[i[2]], p[i[3]]);
    }
  }
}

// argmax over c of sum_a w[a] * h[a][c][ox]; the lowest class wins a tie
LSE_HD void pl_vertical_argmax(const float* const* h, const float* w, int64_t c, int64_t ow,
                               float* best, int32_t* arg) {
  for (int64_t ox = 0; ox < ow; ++ox) best[ox] = -std::numeric_limits<float>::infinity(), arg[ox] = 0;
  for (int64_t cc = 0; cc < c; ++cc) {
    const int64_t o = cc * ow;
    const int32_t label = static_cast<int32_t>(cc);
    for (int64_t ox = 0; ox < ow; ++ox) {
      const float v = four_tap_sum(w, h[0][o + ox], h[1][o + ox], h[2][o + ox], h[3][o + ox]);
      const bool better = v > best[ox];
      best[ox] = better ? v : best[ox];
      arg[ox] = better ? label : arg[ox];
    }
  }
}

// Filter of a full-resolution row: upsampled P per column, its argmax and entropy
LSE_HD void pl_filter_row(const float* image, int64_t plane_stride, int64_t c, int64_t w,
                          const LinearTap& ry, const LinearTap* cols, int64_t len, float* fmax,
                          float* fent, int32_t* farg) {
  for (int64_t j = 0; j < len; ++j) fmax[j] = -1.0f, fent[j] = 0.0f, farg[j] = 0;
  for (int64_t cc = 0; cc < c; ++cc) {
    const float* r0 = image + cc * plane_stride + ry.i0 * w;
    const float* r1 = image + cc * plane_stride + ry.i1 * w;
    const int32_t label = static_cast<int32_t>(cc);
    for (int64_t j = 0; j < len; ++j) {
      const float p = bilinear_blend<float>(ry.l1, cols[j].l1, r0[cols[j].i0], r0[cols[j].i1],
                                            r1[cols[j].i0], r1[cols[j].i1]);
      const bool better = p > fmax[j];
      fmax[j] = better ? p : fmax[j];
      farg[j] = better ? label : farg[j];
      fent[j] += entropy_term(p);
    }
  }
}

LSE_HD void pseudo_label_unit_body(const PseudoLabelArgs& a, int64_t unit, PseudoLabelScratch& s) {
  const int64_t blocks = pseudo_label_blocks(a.oh);
  const int64_t k = unit / blocks;
  const int64_t oy0 = (unit - k * blocks) * kPseudoLabelRows;
  const int64_t oy1 = std::min(a.oh, oy0 + kPseudoLabelRows);
  const int64_t c = a.c, ow = a.ow, plane = a.h * a.w;
  const float* image = a.probs + a.boxes.image(k) * c * plane;
  const float log_c = c > 1 ? log_normal(static_cast<float>(c)) : 1.0f;

  // Full-resolution -> low-resolution upsampling axes (identity when equal).
  const CropAxis up_y = upsample_axis(a.h, a.image_h);
  const CropAxis up_x = upsample_axis(a.w, a.image_w);
  const CropAxis cy = a.boxes.y_axis(k, a.oh, a.image_h, false);
  const CropAxis cx = a.boxes.x_axis(k, ow, a.image_w, false);

  s.col_idx.resize(4 * ow);
  s.col_w.resize(4 * ow);
  s.nearest_col.resize(ow);
  for (int64_t ox = 0; ox < ow; ++ox) {
    const LinearTap t = linear_tap(cx, ox);
    const ComposedTaps ct = compose_taps(t, linear_tap(up_x, t.i0), linear_tap(up_x, t.i1));
    for (int b = 0; b < 4; ++b) s.col_idx[4 * ox + b] = ct.idx[b], s.col_w[4 * ox + b] = ct.w[b];
    s.nearest_col[ox] = nearest_tap(cx, ox) - cx.lo;
  }
  const int64_t flen = cx.hi - cx.lo + 1;
  s.fcol.resize(flen);
  for (int64_t j = 0; j < flen; ++j) s.fcol[j] = linear_tap(up_x, cx.lo + j);
  s.filter.resize(flen), s.fmax.resize(flen), s.fent.resize(flen), s.farg.resize(flen);
  s.filter_row = -1;
  s.slots.resize(PseudoLabelScratch::kSlots * c * ow);
  for (int i = 0; i < PseudoLabelScratch::kSlots; ++i) s.slot_row[i] = -1;
  s.best.resize(ow), s.arg.resize(ow);

  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const LinearTap t = linear_tap(cy, oy);
    const ComposedTaps rt = compose_taps(t, linear_tap(up_y, t.i0), linear_tap(up_y, t.i1));
    // Find or fill a slot for each of the four low-resolution rows.
    const float* h[4];
    bool needed[PseudoLabelScratch::kSlots] = {false, false, false, false};
    int which[4];
    for (int b = 0; b < 4; ++b) {
      which[b] = -1;
      for (int i = 0; i < PseudoLabelScratch::kSlots; ++i) {
        if (s.slot_row[i] == rt.idx[b]) which[b] = i;
      }
      if (which[b] >= 0) needed[which[b]] = true;
    }
    for (int b = 0; b < 4; ++b) {
      if (which[b] >= 0) continue;
      int free_slot = 0;
      while (needed[free_slot]) ++free_slot;  // at most 3 others are needed
      needed[free_slot] = true;
      s.slot_row[free_slot] = rt.idx[b];
      pl_horizontal(image + rt.idx[b] * a.w, plane, c, s.col_idx.data(), s.col_w.data(), ow,
                        s.slots.data() + free_slot * c * ow);
      for (int b2 = b; b2 < 4; ++b2) {
        if (rt.idx[b2] == rt.idx[b]) which[b2] = free_slot;
      }
    }
    for (int b = 0; b < 4; ++b) h[b] = s.slots.data() + which[b] * c * ow;
    pl_vertical_argmax(h, rt.w, c, ow, s.best.data(), s.arg.data());

    const int64_t fy = nearest_tap(cy, oy);
    if (fy != s.filter_row) {
      s.filter_row = fy;
      pl_filter_row(image, plane, c, a.w, linear_tap(up_y, fy), s.fcol.data(), flen,
                        s.fmax.data(), s.fent.data(), s.farg.data());
      for (int64_t j = 0; j < flen; ++j) {
        const float e = c > 1 ? s.fent[j] / log_c : 0.0f;
        s.filter[j] = e <= a.thresholds[s.farg[j]];
      }
    }
    uint8_t* out = a.out + (k * a.oh + oy) * ow;
    for (int64_t ox = 0; ox < ow; ++ox) {
      out[ox] = s.filter[s.nearest_col[ox]] ? static_cast<uint8_t>(s.arg[ox]) : a.ignore_index;
    }
  }
}

LSE_CPU_DISPATCH(pseudo_label_unit, pseudo_label_unit_body)

}  // namespace

void crop_pseudo_labels_cpu(const PseudoLabelArgs& args, int64_t begin, int64_t end) {
  PseudoLabelScratch scratch;
  for (int64_t u = begin; u < end; ++u) pseudo_label_unit(args, u, scratch);
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
