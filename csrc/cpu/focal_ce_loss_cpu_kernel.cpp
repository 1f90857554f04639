#include "cpu/focal_ce_loss_cpu_kernel.h"

#include <type_traits>
#include <vector>

#include "core/focal_math.h"
#include "cpu/isa.h"


namespace lse::cpu {
namespace {

template <typename A>
struct TileIO {
  const A* planes;      // class c of pixel p at planes[c * plane_stride + p]
  int64_t plane_stride;
  const int32_t* cls;   // target class per pixel, -1 when not counted
  const A* weight;      // per-pixel weight (class weight x pixel weight), nullptr without
  int64_t num_classes;
  int64_t len;
  A gamma, beta, ce_weight, grad_scale;
  A* exps;              // scratch [C][kTile]
  A* loss;              // per-pixel loss out (ignored pixels 0)
};

// Loss of one tile and, when grad_out is set, the gradient scaled by
// grad_scale into grad_out[c * grad_stride + p] (already converted to T).
template <typename A, typename T>
LSE_HD double focal_tile_body(const TileIO<A>& io, T* grad_out, int64_t grad_stride) {
  alignas(64) A m[kTile];
  alignas(64) A s[kTile];
  alignas(64) A xt[kTile];
  alignas(64) A coef[kTile];
  const int64_t len = io.len;

  for (int64_t p = 0; p < len; ++p) m[p] = io.planes[p], xt[p] = io.planes[p];
  for (int64_t c = 1; c < io.num_classes; ++c) {
    const A* x = io.planes + c * io.plane_stride;
    const int32_t ci = static_cast<int32_t>(c);
    for (int64_t p = 0; p < len; ++p) {
      m[p] = x[p] > m[p] ? x[p] : m[p];
      xt[p] = io.cls[p] == ci ? x[p] : xt[p];
    }
  }
  for (int64_t p = 0; p < len; ++p) s[p] = A(0);
  for (int64_t c = 0; c < io.num_classes; ++c) {
    const A* x = io.planes + c * io.plane_stride;
    A* e = io.exps + c * kTile;
    for (int64_t p = 0; p < len; ++p) {
      e[p] = exp_nonpos_t(x[p] - m[p]);
      s[p] += e[p];
    }
  }
  double total = 0.0;
  if (io.weight == nullptr) {
    for (int64_t p = 0; p < len; ++p) {
      const bool valid = io.cls[p] >= 0;
      const FocalTerms<A> f =
          focal_terms<A>(focal_log_pt(xt[p], m[p], s[p]), io.gamma, io.beta, io.ce_weight);
      io.loss[p] = valid ? f.loss : A(0);
      coef[p] = valid ? f.dloss_dL * io.grad_scale : A(0);
      s[p] = A(1) / s[p];  // reused as 1 / sum
    }
  } else {
    for (int64_t p = 0; p < len; ++p) {
      const bool valid = io.cls[p] >= 0;
      const FocalTerms<A> f =
          focal_terms<A>(focal_log_pt(xt[p], m[p], s[p]), io.gamma, io.beta, io.ce_weight);
      xt[p] = valid ? f.loss : A(0);  // reused as the unweighted loss
      coef[p] = valid ? f.dloss_dL : A(0);
      s[p] = A(1) / s[p];
    }
    // The weights in a loop of their own: the loop above reads and writes
    // only local arrays, so it vectorises as the unweighted one.
    for (int64_t p = 0; p < len; ++p) {
      const bool valid = io.cls[p] >= 0;
      const A w = io.weight[p];
      io.loss[p] = valid ? w * xt[p] : A(0);
      coef[p] = valid ? (w * coef[p]) * io.grad_scale : A(0);
    }
  }
  for (int64_t p = 0; p < len; ++p) total += static_cast<double>(io.loss[p]);
  if (grad_out != nullptr) {
    for (int64_t c = 0; c < io.num_classes; ++c) {
      const A* e = io.exps + c * kTile;
      T* g = grad_out + c * grad_stride;
      const int32_t ci = static_cast<int32_t>(c);
      for (int64_t p = 0; p < len; ++p) {
        const A delta = io.cls[p] == ci ? A(1) : A(0);
        const A v = coef[p] * (delta - e[p] * s[p]);
        if constexpr (std::is_same_v<A, double>) {
          g[p] = v;
        } else {
          g[p] = from_float<T>(v);
        }
      }
    }
  }
  return total;
}

LSE_CPU_DISPATCH(focal_tile, focal_tile_body)

}  // namespace

template <typename Tgt, typename W>
TargetCheck focal_ce_count_targets(const Tgt* target, int64_t begin, int64_t end,
                                   int64_t ignore_index, int64_t num_classes, const W* class_weight) {
  TargetCheck r;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t t = static_cast<int64_t>(target[i]);
    const bool in_range = t >= 0 && t < num_classes;
    r.valid += (in_range && t != ignore_index) ? 1 : 0;
    if (!in_range && t != ignore_index && r.first_bad < 0) r.first_bad = i;
  }
  if (class_weight != nullptr) {
    // Separate loop: the unweighted count above stays branch-free.
    for (int64_t i = begin; i < end; ++i) {
      const int32_t c = focal_class(target[i], ignore_index, num_classes);
      if (c >= 0) r.weight_sum += static_cast<double>(class_weight[c]);
    }
  }
  return r;
}

template <typename T, typename Tgt>
void focal_ce_cpu_tiles(const T* logits, const PixelGeometry& g, const Tgt* target,
                        const FocalArgs<FocalAcc<T>>& args, int64_t tile_begin, int64_t tile_end,
                        FocalAcc<T>* loss_per_pixel, T* grad, double* partial_loss) {
  using A = FocalAcc<T>;
  const Tiling tiling = make_tiling(g);
  const int64_t pixels = g.pixels();
  const bool in_place = std::is_same_v<T, A> && g.stride_col == 1;
  std::vector<A> gathered(in_place ? 0 : static_cast<size_t>(g.c * kTile));
  std::vector<A> exps(static_cast<size_t>(g.c * kTile));
  std::vector<A> tile_loss(loss_per_pixel == nullptr ? kTile : 0);
  int32_t cls[kTile];
  alignas(64) A weight[kTile];

  TileIO<A> io;
  io.cls = cls;
  const bool weighted = args.class_weight != nullptr || args.pixel_weight != nullptr;
  io.weight = weighted ? weight : nullptr;
  io.num_classes = g.c;
  io.gamma = static_cast<A>(args.gamma);
  io.beta = static_cast<A>(args.beta);
  io.ce_weight = static_cast<A>(args.ce_weight);
  io.grad_scale = static_cast<A>(args.grad_scale);
  io.exps = exps.data();

  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const Tile t = tile_at(g, tiling, tile);
    const T* src = logits + t.input_offset;
    if constexpr (std::is_same_v<T, A>) {
      if (in_place) io.planes = src, io.plane_stride = g.stride_c;
    }
    if (!in_place) {
      gather_planes(src, g.stride_c, g.stride_col, g.c, t.len, gathered.data());
      io.planes = gathered.data(), io.plane_stride = kTile;
    }
    const Tgt* tgt = target + t.n * pixels + t.pixel;
    for (int64_t p = 0; p < t.len; ++p) cls[p] = focal_class(tgt[p], args.ignore_index, g.c);
    // Weight of each pixel (class weight of its target x pixel weight), read
    // here with the targets: the logits are still read once.
    const A* pw = args.pixel_weight != nullptr ? args.pixel_weight + t.n * pixels + t.pixel : nullptr;
    const A* cw = args.class_weight;
    if (weighted) {
      for (int64_t p = 0; p < t.len; ++p) {
        const A wc = (cw != nullptr && cls[p] >= 0) ? cw[cls[p]] : A(1);
        weight[p] = pw != nullptr ? wc * pw[p] : wc;
      }
    }
    io.len = t.len;
    io.loss = loss_per_pixel != nullptr ? loss_per_pixel + t.n * pixels + t.pixel : tile_loss.data();
    T* grad_tile = grad != nullptr ? grad + t.n * g.c * pixels + t.pixel : nullptr;
    partial_loss[tile] = focal_tile(io, grad_tile, pixels);
  }
}

double focal_ce_cpu_reduce(const double* partial_loss, int64_t tiles) {
  double total = 0.0;
  for (int64_t i = 0; i < tiles; ++i) total += partial_loss[i];
  return total;
}

#define LSE_INSTANTIATE(T, Tgt)                                                              \
  template void focal_ce_cpu_tiles<T, Tgt>(const T*, const PixelGeometry&, const Tgt*,        \
                                           const FocalArgs<FocalAcc<T>>&, int64_t, int64_t,      \
                                           FocalAcc<T>*, T*, double*);
#define LSE_INSTANTIATE_TARGET(Tgt)                                                          \
  template TargetCheck focal_ce_count_targets<Tgt, float>(const Tgt*, int64_t, int64_t,      \
                                                          int64_t, int64_t, const float*);    \
  template TargetCheck focal_ce_count_targets<Tgt, double>(const Tgt*, int64_t, int64_t,     \
                                                           int64_t, int64_t, const double*);  \
  LSE_INSTANTIATE(float, Tgt)                                                                \
  LSE_INSTANTIATE(half_t, Tgt)                                                               \
  LSE_INSTANTIATE(bfloat16_t, Tgt) LSE_INSTANTIATE(double, Tgt)
LSE_INSTANTIATE_TARGET(uint8_t)
LSE_INSTANTIATE_TARGET(int64_t)
#undef LSE_INSTANTIATE_TARGET
#undef LSE_INSTANTIATE

}  // namespace lse::cpu
