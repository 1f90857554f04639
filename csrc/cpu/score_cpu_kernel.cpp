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
// (unit pixel stride, float), writing per-pixel outputs and the tile's
// per-class partial sums.
LSE_HD void score_tile_planes_body(const float* planes, int64_t plane_stride, int64_t num_classes,
                       int64_t len, float inv_log_c, float* conf, int64_t* label,
                       float* ent, int64_t* part_pixels, double* part_conf,
                       double* part_ent) {
  alignas(64) float m[kTile];
  alignas(64) float s[kTile];
  alignas(64) float t[kTile];
  alignas(64) int32_t a[kTile];

  for (int64_t p = 0; p < len; ++p) {
    const ScoreAcc acc = score_init(planes[p]);
    m[p] = acc.m, s[p] = acc.s, t[p] = acc.t, a[p] = acc.a;
  }
  for (int64_t c = 1; c < num_classes; ++c) {
    const float* x = planes + c * plane_stride;
    const int32_t ci = static_cast<int32_t>(c);
    for (int64_t p = 0; p < len; ++p) {
      ScoreAcc acc{m[p], s[p], t[p], a[p]};
      score_update(acc, x[p], ci);
      m[p] = acc.m, s[p] = acc.s, t[p] = acc.t, a[p] = acc.a;
    }
  }
  for (int64_t p = 0; p < len; ++p) {
    const PixelScore r = score_finish(ScoreAcc{m[p], s[p], t[p], a[p]}, inv_log_c);
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

// Upsampled logits of one tile into float planes dst[c * kTile + p]: rows
// r0_base/r1_base (class 0) with weight ly of the second, columns at the
// premultiplied offsets x0/x1 with weights lx of the second.
template <typename T>
LSE_HD void upsample_planes_body(int64_t stride_c, int64_t num_classes,
                                 const T* r0_base, const T* r1_base, float ly, const int64_t* x0,
                                 const int64_t* x1, const float* lx, int64_t len, float* dst) {
  for (int64_t c = 0; c < num_classes; ++c) {
    const T* r0 = r0_base + c * stride_c;
    const T* r1 = r1_base + c * stride_c;
    float* y = dst + c * kTile;
    for (int64_t p = 0; p < len; ++p) {
      y[p] = bilinear_blend<float>(ly, lx[p], to_float(r0[x0[p]]), to_float(r0[x1[p]]),
                                   to_float(r1[x0[p]]), to_float(r1[x1[p]]));
    }
  }
}

LSE_CPU_DISPATCH(upsample_planes, upsample_planes_body)

}  // namespace

template <typename T>
void score_cpu_tiles(const T* logits, const PixelGeometry& g, int64_t tile_begin,
                     int64_t tile_end, const ScoreOutputs& out, const ScorePartials& partials) {
  const Tiling tiling = make_tiling(g);
  const float inv_log_c = g.c > 1 ? static_cast<float>(1.0 / std::log(static_cast<double>(g.c))) : 0.0f;
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
    score_tile_planes(planes, plane_stride, g.c, t.len, inv_log_c, out.confidence + pix,
                      out.label + pix, out.entropy + pix, partials.pixels + tile * g.c,
                      partials.confidence + tile * g.c, partials.entropy + tile * g.c);
  }
}

template <typename T>
void score_upsampled_cpu_tiles(const T* logits, const UpsampledLogits& u, int64_t tile_begin,
                               int64_t tile_end, const ScoreOutputs& out,
                               const ScorePartials& partials) {
  const PixelGeometry g = upsampled_geometry(u);
  const Tiling tiling = make_tiling(g);
  const float inv_log_c = g.c > 1 ? static_cast<float>(1.0 / std::log(static_cast<double>(g.c))) : 0.0f;
  const ResampleAxis ay = upsample_axis(u.h, u.out_h), ax = upsample_axis(u.w, u.out_w);
  std::vector<int64_t> x0(static_cast<size_t>(u.out_w)), x1(static_cast<size_t>(u.out_w));
  std::vector<float> lx(static_cast<size_t>(u.out_w));
  for (int64_t x = 0; x < u.out_w; ++x) {
    const LinearTap t = linear_tap(ax, x);
    x0[x] = t.i0 * u.stride_w, x1[x] = t.i1 * u.stride_w, lx[x] = t.l1;
  }
  std::vector<float> buffer(static_cast<size_t>(g.c * kTile));
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const Tile t = tile_at(g, tiling, tile);
    const T* image = logits + t.n * u.stride_n;
    const LinearTap ty = linear_tap(ay, t.row);
    upsample_planes(u.stride_c, g.c, image + ty.i0 * u.stride_h, image + ty.i1 * u.stride_h,
                    ty.l1, x0.data() + t.col0, x1.data() + t.col0, lx.data() + t.col0, t.len,
                    buffer.data());
    const int64_t pix = t.n * g.pixels() + t.pixel;
    score_tile_planes(static_cast<const float*>(buffer.data()), int64_t{kTile}, g.c, t.len, inv_log_c,
                      out.confidence + pix, out.label + pix, out.entropy + pix,
                      partials.pixels + tile * g.c, partials.confidence + tile * g.c,
                      partials.entropy + tile * g.c);
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
                      int64_t* class_pixels, float* class_confidence, float* class_entropy) {
  const Tiling tiling = make_tiling(g);
  const size_t cells = static_cast<size_t>(tiling.total * g.c);
  std::vector<int64_t> pixels(cells);
  std::vector<double> conf(cells), ent(cells);
  const ScorePartials partials{pixels.data(), conf.data(), ent.data()};
  score_cpu_tiles(logits, g, 0, tiling.total, out, partials);
  score_cpu_reduce(g, partials, class_pixels, class_confidence, class_entropy);
}

#define LSE_INSTANTIATE(T)                                                                   \
  template void score_cpu_tiles<T>(const T*, const PixelGeometry&, int64_t, int64_t,          \
                                   const ScoreOutputs&, const ScorePartials&);                \
  template void score_cpu_serial<T>(const T*, const PixelGeometry&, const ScoreOutputs&,      \
                                    int64_t*, float*, float*);                                \
  template void score_upsampled_cpu_tiles<T>(const T*, const UpsampledLogits&, int64_t, int64_t, \
                                             const ScoreOutputs&, const ScorePartials&);
LSE_INSTANTIATE(float)
LSE_INSTANTIATE(half_t)
LSE_INSTANTIATE(bfloat16_t)
#undef LSE_INSTANTIATE

}  // namespace lse::cpu
