#include "cpu/score_cpu_kernel.h"

#include <cmath>
#include <type_traits>
#include <vector>

#include "core/resample.h"
#include "core/score_math.h"
#include "cpu/isa.h"

// The hot loops are compiled twice, for AVX2+FMA and for the baseline ISA,
// and cpu/isa.h picks one at run time (the CPU's features, or
// LSE_FAST_CPU_ISA), so a portable build still runs 8-wide where it can.

namespace lse::cpu {
namespace {

// Scores `len` pixels whose class-c values are planes[c * plane_stride + p]
// (unit pixel stride, float) or, with kBlend, the vertical blend
// (1 - ly) * planes[...] + ly * planes1[...] of two horizontally resampled
// rows (the outer step of bilinear_blend), writing per-pixel outputs and the
// tile's per-class partial sums. kProbs: the values are probabilities
// (ProbAcc) instead of logits (ScoreAcc).
template <bool kProbs, bool kBlend>
LSE_HD void score_tile_planes_body(std::bool_constant<kProbs>, std::bool_constant<kBlend>,
                                   const float* planes, const float* planes1, float ly,
                                   int64_t plane_stride, int64_t num_classes, int64_t len,
                                   float inv_log_c, float* conf, int64_t* label, float* ent,
                                   int64_t* part_pixels, double* part_conf, double* part_ent) {
  alignas(64) float m[kTile];  // ScoreAcc::m or ProbAcc::best
  alignas(64) float s[kTile];  // ScoreAcc::s (unused for probabilities)
  alignas(64) float t[kTile];  // ScoreAcc::t or ProbAcc::h
  alignas(64) int32_t a[kTile];
  const float wy1 = ly, wy0 = 1.0f - ly;

  for (int64_t p = 0; p < len; ++p) {
    float x;
    if constexpr (kBlend) {
      x = wy0 * planes[p] + wy1 * planes1[p];
    } else {
      x = planes[p];
    }
    if constexpr (kProbs) {
      const ProbAcc acc = prob_init(x);
      m[p] = acc.best, t[p] = acc.h, a[p] = acc.a;
    } else {
      const ScoreAcc acc = score_init(x);
      m[p] = acc.m, s[p] = acc.s, t[p] = acc.t, a[p] = acc.a;
    }
  }
  for (int64_t c = 1; c < num_classes; ++c) {
    const float* x0 = planes + c * plane_stride;
    const float* x1 = planes1 + c * plane_stride;
    const int32_t ci = static_cast<int32_t>(c);
    for (int64_t p = 0; p < len; ++p) {
      float x;
      if constexpr (kBlend) {
        x = wy0 * x0[p] + wy1 * x1[p];
      } else {
        x = x0[p];
      }
      if constexpr (kProbs) {
        ProbAcc acc{m[p], t[p], a[p]};
        prob_update(acc, x, ci);
        m[p] = acc.best, t[p] = acc.h, a[p] = acc.a;
      } else {
        ScoreAcc acc{m[p], s[p], t[p], a[p]};
        score_update(acc, x, ci);
        m[p] = acc.m, s[p] = acc.s, t[p] = acc.t, a[p] = acc.a;
      }
    }
  }
  for (int64_t p = 0; p < len; ++p) {
    PixelScore r;
    if constexpr (kProbs) {
      r = prob_finish(ProbAcc{m[p], t[p], a[p]}, inv_log_c);
    } else {
      r = score_finish(ScoreAcc{m[p], s[p], t[p], a[p]}, inv_log_c);
    }
    conf[p] = r.confidence;
    ent[p] = r.entropy;
    label[p] = r.label;
  }
  // Scatter into the class partials: data-dependent, kept scalar.
  for (int64_t c = 0; c < num_classes; ++c) {
    part_pixels[c] = 0, part_conf[c] = 0.0, part_ent[c] = 0.0;
  }
  for (int64_t p = 0; p < len; ++p) {
    const int32_t l = a[p];
    part_pixels[l] += 1;
    part_conf[l] += conf[p];
    part_ent[l] += ent[p];
  }
}

LSE_CPU_DISPATCH(score_tile_planes, score_tile_planes_body)

// Scores one tile with the variant of `from` (kBlend as given).
template <bool kBlend>
void score_tile(ScoreFrom from, std::bool_constant<kBlend> blend, const float* planes,
                const float* planes1, float ly, int64_t plane_stride, int64_t num_classes,
                int64_t len, float inv_log_c, float* conf, int64_t* label, float* ent,
                int64_t* part_pixels, double* part_conf, double* part_ent) {
  if (from == ScoreFrom::Probs) {
    score_tile_planes(std::true_type{}, blend, planes, planes1, ly, plane_stride, num_classes, len,
                      inv_log_c, conf, label, ent, part_pixels, part_conf, part_ent);
  } else {
    score_tile_planes(std::false_type{}, blend, planes, planes1, ly, plane_stride, num_classes, len,
                      inv_log_c, conf, label, ent, part_pixels, part_conf, part_ent);
  }
}

// Horizontal resampling of one low-resolution row (class 0 at `row`, class c
// at row + c * stride_c) at a tile's output columns into float planes
// dst[c * kTile + p]: (1 - lx) * row[x0] + lx * row[x1], the inner step of
// bilinear_blend_live (a tap of weight lx = 0 adds nothing), with the
// columns' premultiplied offsets x0/x1.
template <typename T>
LSE_HD void resample_row_body(const T* row, int64_t stride_c, int64_t num_classes, const int64_t* x0,
                              const int64_t* x1, const float* lx, int64_t len, float* dst) {
  for (int64_t c = 0; c < num_classes; ++c) {
    const T* r = row + c * stride_c;
    float* y = dst + c * kTile;
    for (int64_t p = 0; p < len; ++p) {
      const float wx1 = lx[p], wx0 = 1.0f - lx[p];
      y[p] = wx0 * to_float(r[x0[p]]) + live_tap(wx1, to_float(r[x1[p]]));  // zero-weight-tap rule
    }
  }
}

LSE_CPU_DISPATCH(resample_row, resample_row_body)

float inverse_log_classes(int64_t c) {
  return c > 1 ? static_cast<float>(1.0 / std::log(static_cast<double>(c))) : 0.0f;
}

}  // namespace

template <typename T>
void score_cpu_tiles(const T* logits, const PixelGeometry& g, int64_t tile_begin,
                     int64_t tile_end, const ScoreOutputs& out, const ScorePartials& partials,
                     ScoreFrom from) {
  const Tiling tiling = make_tiling(g);
  const float inv_log_c = inverse_log_classes(g.c);
  // Float logits with unit pixel stride are read in place; anything else is
  // first gathered into float planes.
  const bool in_place = std::is_same_v<T, float> && g.stride_col == 1;
  std::vector<float> buffer(in_place ? 0 : static_cast<size_t>(g.c * kTile));

  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const Tile t = tile_at(g, tiling, tile);
    const T* src = logits + t.input_offset;
    const float* planes = buffer.data();
    int64_t plane_stride = kTile;
    if constexpr (std::is_same_v<T, float>) {
      if (in_place) planes = src, plane_stride = g.stride_c;
    }
    if (!in_place) gather_planes(src, g.stride_c, g.stride_col, g.c, t.len, buffer.data());

    const int64_t pix = t.n * g.pixels() + t.pixel;
    score_tile(from, std::false_type{}, planes, planes, 0.0f, plane_stride, g.c, t.len, inv_log_c,
               out.confidence + pix, out.label + pix, out.entropy + pix, partials.pixels + tile * g.c,
               partials.confidence + tile * g.c, partials.entropy + tile * g.c);
  }
}

template <typename T>
void score_upsampled_cpu_tiles(const T* logits, const UpsampledLogits& u, int64_t tile_begin,
                               int64_t tile_end, const ScoreOutputs& out,
                               const ScorePartials& partials, ScoreFrom from) {
  const PixelGeometry g = upsampled_geometry(u);
  const Tiling tiling = make_tiling(g);
  const float inv_log_c = inverse_log_classes(g.c);
  const ResampleAxis ay = upsample_axis(u.h, u.out_h, u.align_corners);
  const ResampleAxis ax = upsample_axis(u.w, u.out_w, u.align_corners);
  std::vector<int64_t> x0(static_cast<size_t>(u.out_w)), x1(static_cast<size_t>(u.out_w));
  std::vector<float> lx(static_cast<size_t>(u.out_w));
  for (int64_t x = 0; x < u.out_w; ++x) {
    const LinearTap t = linear_tap(ax, x);
    x0[x] = t.i0 * u.stride_w, x1[x] = t.i1 * u.stride_w, lx[x] = t.l1;
  }
  // Two cached horizontally resampled rows per tile column: consecutive
  // output rows of a column read the same low-resolution rows (8 output
  // rows per pair at 8x), so each is resampled once, not once per output row.
  const int64_t slot_size = g.c * kTile;
  std::vector<float> rows(static_cast<size_t>(2 * tiling.per_row * slot_size));
  std::vector<int64_t> row_key(static_cast<size_t>(2 * tiling.per_row), -1);  // n * h + low-res row
  const auto resampled = [&](const Tile& t, int64_t column, int64_t low_row, int64_t keep) {
    const int64_t key = t.n * u.h + low_row;
    int64_t* keys = row_key.data() + 2 * column;
    int slot = keys[0] == key ? 0 : (keys[1] == key ? 1 : -1);
    if (slot < 0) {
      slot = keys[0] == keep ? 1 : 0;  // never evict the other row this tile reads
      keys[slot] = key;
      resample_row(logits + t.n * u.stride_n + low_row * u.stride_h, u.stride_c, g.c, x0.data() + t.col0,
                   x1.data() + t.col0, lx.data() + t.col0, t.len,
                   rows.data() + (2 * column + slot) * slot_size);
    }
    return static_cast<const float*>(rows.data() + (2 * column + slot) * slot_size);
  };
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const Tile t = tile_at(g, tiling, tile);
    const int64_t column = t.col0 / kTile;
    const LinearTap ty = linear_tap(ay, t.row);
    const float* r0 = resampled(t, column, ty.i0, -1);
    const int64_t pix = t.n * g.pixels() + t.pixel;
    if (ty.l1 == 0.0f) {
      // Zero-weight-tap rule: an exact source row is that row alone (the
      // blend 1 * r0 + 0 * r1 would make a -inf in r1 NaN).
      score_tile(from, std::false_type{}, r0, r0, 0.0f, int64_t{kTile}, g.c, t.len, inv_log_c,
                 out.confidence + pix, out.label + pix, out.entropy + pix, partials.pixels + tile * g.c,
                 partials.confidence + tile * g.c, partials.entropy + tile * g.c);
      continue;
    }
    const float* r1 = resampled(t, column, ty.i1, t.n * u.h + ty.i0);
    score_tile(from, std::true_type{}, r0, r1, ty.l1, int64_t{kTile}, g.c, t.len, inv_log_c,
               out.confidence + pix, out.label + pix, out.entropy + pix, partials.pixels + tile * g.c,
               partials.confidence + tile * g.c, partials.entropy + tile * g.c);
  }
}

void score_cpu_reduce(const PixelGeometry& g, const ScorePartials& partials,
                      int64_t* class_pixels, float* class_confidence, float* class_entropy) {
  const Tiling tiling = make_tiling(g);
  std::vector<double> conf(static_cast<size_t>(g.c)), ent(static_cast<size_t>(g.c));
  for (int64_t n = 0; n < g.n; ++n) {
    int64_t* pixels = class_pixels + n * g.c;
    for (int64_t c = 0; c < g.c; ++c) pixels[c] = 0, conf[c] = 0.0, ent[c] = 0.0;
    for (int64_t tile = n * tiling.per_image; tile < (n + 1) * tiling.per_image; ++tile) {
      const int64_t* pp = partials.pixels + tile * g.c;
      const double* pc = partials.confidence + tile * g.c;
      const double* pe = partials.entropy + tile * g.c;
      for (int64_t c = 0; c < g.c; ++c) pixels[c] += pp[c], conf[c] += pc[c], ent[c] += pe[c];
    }
    for (int64_t c = 0; c < g.c; ++c) {
      class_confidence[n * g.c + c] = static_cast<float>(conf[c]);
      class_entropy[n * g.c + c] = static_cast<float>(ent[c]);
    }
  }
}

template <typename T>
void score_cpu_serial(const T* logits, const PixelGeometry& g, const ScoreOutputs& out,
                      int64_t* class_pixels, float* class_confidence, float* class_entropy,
                      ScoreFrom from) {
  const Tiling tiling = make_tiling(g);
  const size_t cells = static_cast<size_t>(tiling.total * g.c);
  std::vector<int64_t> pixels(cells);
  std::vector<double> conf(cells), ent(cells);
  const ScorePartials partials{pixels.data(), conf.data(), ent.data()};
  score_cpu_tiles(logits, g, 0, tiling.total, out, partials, from);
  score_cpu_reduce(g, partials, class_pixels, class_confidence, class_entropy);
}

#define LSE_INSTANTIATE(T)                                                                   \
  template void score_cpu_tiles<T>(const T*, const PixelGeometry&, int64_t, int64_t,          \
                                   const ScoreOutputs&, const ScorePartials&, ScoreFrom);     \
  template void score_cpu_serial<T>(const T*, const PixelGeometry&, const ScoreOutputs&,      \
                                    int64_t*, float*, float*, ScoreFrom);                     \
  template void score_upsampled_cpu_tiles<T>(const T*, const UpsampledLogits&, int64_t, int64_t, \
                                             const ScoreOutputs&, const ScorePartials&, ScoreFrom);
LSE_INSTANTIATE(float)
LSE_INSTANTIATE(half_t)
LSE_INSTANTIATE(bfloat16_t)
#undef LSE_INSTANTIATE

}  // namespace lse::cpu
