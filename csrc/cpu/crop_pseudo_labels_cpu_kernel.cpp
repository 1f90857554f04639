#include "cpu/crop_pseudo_labels_cpu_kernel.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu/isa.h"

namespace lse::cpu {

namespace {

// Row caches of one pseudo-label work unit.
struct PseudoLabelScratch {
  // Slots of crop-resized-horizontally low-resolution rows, [slot][c][ox].
  static constexpr int kSlots = 4;
  std::vector<float> slots;
  std::vector<float> slot_sum;  // [slot][ox]: sum over classes (finite iff every value is)
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

// out[c][ox] = sum_b w[ox][b] * p[c][row][idx[ox][b]]; sum[ox]: the sum of
// those over c, finite iff they all are (the non-finite rule, checked once
// per low-resolution row instead of once per output pixel).
LSE_HD void pl_horizontal(const float* plane0, int64_t plane_stride, int64_t c, const int64_t* idx,
                          const float* w, int64_t ow, float* out, float* sum) {
  for (int64_t ox = 0; ox < ow; ++ox) sum[ox] = 0.0f;
  for (int64_t cc = 0; cc < c; ++cc) {
    const float* p = plane0 + cc * plane_stride;
    float* o = out + cc * ow;
    for (int64_t ox = 0; ox < ow; ++ox) {
      const int64_t* i = idx + 4 * ox;
      const float* ww = w + 4 * ox;
      o[ox] = four_tap_sum(ww, p[i[0]], p[i[1]], p[i[2]], p[i[3]]);
      sum[ox] += o[ox];
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
  const ResampleAxis up_y = upsample_axis(a.h, a.image_h, a.align_corners);
  const ResampleAxis up_x = upsample_axis(a.w, a.image_w, a.align_corners);
  // Bilinear crop axes (the label) and nearest crop axes (the filter, whose
  // taps do not depend on align_corners).
  const ResampleAxis cy = a.boxes.y_axis(k, a.oh, a.image_h, a.align_corners);
  const ResampleAxis cx = a.boxes.x_axis(k, ow, a.image_w, a.align_corners);
  const ResampleAxis ny = a.boxes.y_axis(k, a.oh, a.image_h, false);
  const ResampleAxis nx = a.boxes.x_axis(k, ow, a.image_w, false);

  s.col_idx.resize(4 * ow);
  s.col_w.resize(4 * ow);
  s.nearest_col.resize(ow);
  for (int64_t ox = 0; ox < ow; ++ox) {
    // Zero-weight-tap rule: a tap of weight 0 reads a pixel of weight > 0.
    const LinearTap t = drop_zero_weight_tap(linear_tap(cx, ox));
    const ComposedTaps ct = compose_taps(t, drop_zero_weight_tap(linear_tap(up_x, t.i0)),
                                         drop_zero_weight_tap(linear_tap(up_x, t.i1)));
    for (int b = 0; b < 4; ++b) s.col_idx[4 * ox + b] = ct.idx[b], s.col_w[4 * ox + b] = ct.w[b];
    s.nearest_col[ox] = nearest_tap(nx, ox) - nx.lo;
  }
  const int64_t flen = nx.hi - nx.lo + 1;
  s.fcol.resize(flen);
  for (int64_t j = 0; j < flen; ++j) s.fcol[j] = drop_zero_weight_tap(linear_tap(up_x, nx.lo + j));
  s.filter.resize(flen), s.fmax.resize(flen), s.fent.resize(flen), s.farg.resize(flen);
  s.filter_row = -1;
  s.slots.resize(PseudoLabelScratch::kSlots * c * ow);
  s.slot_sum.resize(PseudoLabelScratch::kSlots * ow);
  for (int i = 0; i < PseudoLabelScratch::kSlots; ++i) s.slot_row[i] = -1;
  s.best.resize(ow), s.arg.resize(ow);

  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const LinearTap t = drop_zero_weight_tap(linear_tap(cy, oy));
    const ComposedTaps rt = compose_taps(t, drop_zero_weight_tap(linear_tap(up_y, t.i0)),
                                         drop_zero_weight_tap(linear_tap(up_y, t.i1)));
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
                    s.slots.data() + free_slot * c * ow, s.slot_sum.data() + free_slot * ow);
      for (int b2 = b; b2 < 4; ++b2) {
        if (rt.idx[b2] == rt.idx[b]) which[b2] = free_slot;
      }
    }
    const float* hs[4];
    for (int b = 0; b < 4; ++b) h[b] = s.slots.data() + which[b] * c * ow, hs[b] = s.slot_sum.data() + which[b] * ow;
    pl_vertical_argmax(h, rt.w, c, ow, s.best.data(), s.arg.data());

    const int64_t fy = nearest_tap(ny, oy);
    if (fy != s.filter_row) {
      s.filter_row = fy;
      pl_filter_row(image, plane, c, a.w, drop_zero_weight_tap(linear_tap(up_y, fy)), s.fcol.data(), flen,
                        s.fmax.data(), s.fent.data(), s.farg.data());
      for (int64_t j = 0; j < flen; ++j) {
        // fent is NaN where a probability is not finite: e <= t is false.
        const float e = c > 1 ? s.fent[j] / log_c : s.fent[j] * 0.0f;
        s.filter[j] = e <= a.thresholds[s.farg[j]];
      }
    }
    uint8_t* out = a.out + (k * a.oh + oy) * ow;
    for (int64_t ox = 0; ox < ow; ++ox) {
      // Every row read (zero-weight ones read a row of weight > 0) finite.
      const float sum = (hs[0][ox] + hs[1][ox]) + (hs[2][ox] + hs[3][ox]);
      const bool finite = sum - sum == 0.0f;
      out[ox] = s.filter[s.nearest_col[ox]] && finite ? static_cast<uint8_t>(s.arg[ox]) : a.ignore_index;
    }
  }
}

LSE_CPU_DISPATCH(pseudo_label_unit, pseudo_label_unit_body)

}  // namespace

void crop_pseudo_labels_cpu(const PseudoLabelArgs& args, int64_t begin, int64_t end) {
  PseudoLabelScratch scratch;
  for (int64_t u = begin; u < end; ++u) pseudo_label_unit(args, u, scratch);
}

}  // namespace lse::cpu
