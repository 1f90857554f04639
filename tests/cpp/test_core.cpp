// Unit tests of the torch-free core: the shared per-pixel math (the same
// functions the CUDA kernels call) and the CPU scoring kernel, checked
// against double-precision libm computations. Run by CTest.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/fast_math.h"
#include "core/focal_math.h"
#include "core/geometry.h"
#include "core/platform.h"
#include "core/resample.h"
#include "core/score_math.h"
#include "cpu/focal_ce_loss_cpu_kernel.h"
#include "cpu/isa.h"
#include "cpu/score_cpu_kernel.h"

namespace {

int g_failures = 0;

#define EXPECT(cond, ...)                                             \
  do {                                                                \
    if (!(cond)) {                                                    \
      ++g_failures;                                                   \
      std::fprintf(stderr, "%s:%d: EXPECT(%s) failed: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                              \
      std::fprintf(stderr, "\n");                                     \
    }                                                                 \
  } while (0)

double ulp_error(float got, double want) {
  const double ulp = std::ldexp(1.0, std::ilogb(static_cast<float>(want)) - 23);
  return std::fabs(got - want) / ulp;
}

void test_exp_nonpos() {
  double worst = 0.0;
  float worst_at = 0.0f;
  // Every float in [-87.3, 0] at a stride, plus the boundaries.
  for (float z = 0.0f; z >= -87.3f; z = std::nextafter(z, -100.0f) - 1.0e-4f * std::fabs(z) - 1e-7f) {
    const double want = std::exp(static_cast<double>(z));
    if (want < 1.2e-38) continue;  // below float's normal range
    const double err = ulp_error(lse::exp_nonpos(z), want);
    if (err > worst) worst = err, worst_at = z;
  }
  EXPECT(worst <= 2.0, "max error %.2f ulp at z=%.9g", worst, worst_at);
  EXPECT(lse::exp_nonpos(0.0f) == 1.0f, "exp(0) = %.9g", lse::exp_nonpos(0.0f));
  EXPECT(lse::exp_nonpos(-88.0f) == 0.0f, "exp(-88) flushed to 0");
  EXPECT(lse::exp_nonpos(-2.0e4f) == 0.0f, "exp(-2e4) = 0");
  EXPECT(lse::exp_nonpos(-INFINITY) == 0.0f, "exp(-inf) = 0");
  EXPECT(std::isnan(lse::exp_nonpos(NAN)), "exp(NaN) is NaN");
}

void test_log_ge1() {
  double worst = 0.0;
  float worst_at = 1.0f;
  for (float s = 1.0f; s < 1.0e6f; s = std::nextafter(s, 2e6f) + s * 1.0e-5f) {
    const double want = std::log(static_cast<double>(s));
    const double err = s == 1.0f ? std::fabs(lse::log_ge1(s)) : ulp_error(lse::log_ge1(s), want);
    if (err > worst) worst = err, worst_at = s;
  }
  EXPECT(worst <= 2.0, "max error %.2f ulp at s=%.9g", worst, worst_at);
  EXPECT(lse::log_ge1(1.0f) == 0.0f, "log(1) = %.9g", lse::log_ge1(1.0f));
  // A NaN softmax denominator (from a NaN logit) must not decode as a number.
  EXPECT(std::isnan(lse::log_ge1(NAN)), "log(NaN) is NaN");
  EXPECT(std::isnan(lse::focal_log_pt(1.0f, 2.0f, NAN)), "log p_t of a NaN denominator is NaN");
  EXPECT(lse::focal_log_pt(1.0f, 1.0f, 1.0f) == 0.0f, "log p_t clamped to <= 0");
  // Relative accuracy just above 1, where the entropy of confident pixels lives.
  for (float eps : {1e-7f, 1e-5f, 1e-3f}) {
    const float s = 1.0f + eps;
    const double want = std::log1p(static_cast<double>(s) - 1.0);
    EXPECT(std::fabs(lse::log_ge1(s) - want) <= 4e-7 * want, "log(1+%g) rel err", eps);
  }
}

double half_reference(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int e = (h >> 10) & 0x1f;
  const int m = h & 0x3ff;
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -24);
  if (e == 31) return m ? NAN : sign * INFINITY;
  return sign * std::ldexp(1024.0 + m, e - 25);
}

void test_half_conversion() {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float got = lse::to_float(lse::half_t{static_cast<uint16_t>(h)});
    const double want = half_reference(static_cast<uint16_t>(h));
    const bool ok = std::isnan(want) ? std::isnan(got)
                                     : (got == want && std::signbit(got) == std::signbit(want));
    if (!ok && bad++ < 5) std::fprintf(stderr, "half 0x%04x -> %.9g, want %.9g\n", h, got, want);
  }
  EXPECT(bad == 0, "%d of 65536 half values converted wrongly", bad);
  EXPECT(lse::to_float(lse::bfloat16_t{0x3f80}) == 1.0f, "bf16 1.0");
  EXPECT(lse::to_float(lse::bfloat16_t{0xc049}) == -3.140625f, "bf16 -3.140625");
}

// Round-to-nearest-even of a double to binary16, as bits (reference).
uint16_t half_round_reference(float f) {
  if (std::isnan(f)) return static_cast<uint16_t>((std::signbit(f) ? 0x8000 : 0) | 0x7e00);
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return sign | 0x7c00;
  if (a < std::ldexp(1.0, -14)) {  // subnormal (may round up to the smallest normal)
    return sign | static_cast<uint16_t>(std::nearbyint(a / std::ldexp(1.0, -24)));
  }
  int e = std::ilogb(a);
  double m = std::nearbyint(a / std::ldexp(1.0, e - 10));
  if (m == 2048.0) m = 1024.0, ++e;
  if (e > 15) return sign | 0x7c00;
  return sign | static_cast<uint16_t>(((e + 15) << 10) | (static_cast<int>(m) - 1024));
}

void test_float_to_16bit() {
  std::mt19937 rng(3);
  int bad = 0;
  std::vector<float> values = {0.0f, -0.0f, 1.0f, 65504.0f, 65519.99f, 65520.0f, 1e-8f, 2.98023224e-8f,
                               5.96046448e-8f, 6.09755516e-5f, 6.10351562e-5f, INFINITY, -INFINITY, NAN};
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t bits = static_cast<uint32_t>(rng());
    const float f = lse::bits_to_float(bits);
    if (std::fabs(f) < 1e6f || std::isnan(f)) values.push_back(f);
  }
  for (float f : values) {
    const uint16_t got = lse::float_to_half_bits(f), want = half_round_reference(f);
    const bool ok = std::isnan(f) ? ((got & 0x7c00) == 0x7c00 && (got & 0x3ff) != 0) : got == want;
    if (!ok && bad++ < 5) std::fprintf(stderr, "half(%.9g) = 0x%04x, want 0x%04x\n", f, got, want);
    // bf16: round-trip error at most half an ulp of the 8-bit mantissa.
    const float b = lse::to_float(lse::bfloat16_t{lse::float_to_bf16_bits(f)});
    if (std::isfinite(f) && std::fabs(f) < 3e38f) {
      const int e = f == 0.0f ? -126 : std::max(std::ilogb(f), -126);  // subnormals: fixed step
      const double ulp = std::ldexp(1.0, e - 7);
      if (std::fabs(static_cast<double>(b) - f) > 0.5 * ulp && bad++ < 5)
        std::fprintf(stderr, "bf16(%.9g) = %.9g\n", f, b);
    }
  }
  EXPECT(bad == 0, "%d conversions wrong", bad);
}

void test_focal_terms() {
  // Loss against the formula in double, dloss/dL against a central difference.
  double worst_loss = 0, worst_grad = 0;
  for (double gamma : {0.0, 0.5, 1.0, 2.0, 3.0}) {
    for (double beta : {0.0, 0.1, 1.0}) {
      for (double lp = -12.0; lp < 0.0; lp += 0.37) {
        auto loss = [&](double l) {
          const double q = 1.0 - std::exp(l);
          return -l + beta * std::pow(q, gamma) * -l;
        };
        const auto fd = lse::focal_terms<double>(lp, gamma, beta);
        const auto ff = lse::focal_terms<float>(static_cast<float>(lp), static_cast<float>(gamma),
                                                static_cast<float>(beta));
        const double h = 1e-6;
        const double dnum = (loss(lp + h) - loss(lp - h)) / (2 * h);
        worst_loss = std::max(worst_loss, std::fabs(fd.loss - loss(lp)) / std::max(1.0, loss(lp)));
        worst_grad = std::max(worst_grad, std::fabs(fd.dloss_dL - dnum));
        EXPECT(std::fabs(ff.loss - loss(lp)) <= 2e-6 * std::max(1.0, loss(lp)), "float loss g=%g b=%g L=%g", gamma, beta, lp);
        EXPECT(std::fabs(ff.dloss_dL - fd.dloss_dL) <= 2e-6 * std::max(1.0, std::fabs(fd.dloss_dL)),
               "float dloss/dL g=%g b=%g L=%g: %g vs %g", gamma, beta, lp, ff.dloss_dL, fd.dloss_dL);
      }
      // p_t == 1 exactly: no NaN, zero focal term.
      const auto one = lse::focal_terms<float>(0.0f, static_cast<float>(gamma), static_cast<float>(beta));
      EXPECT(one.loss == 0.0f && std::isfinite(one.dloss_dL), "L = 0, gamma %g", gamma);
    }
  }
  EXPECT(worst_loss <= 1e-12, "double loss error %g", worst_loss);
  EXPECT(worst_grad <= 1e-6, "double dloss/dL vs finite difference %g", worst_grad);
}

void test_focal_kernel() {
  // Tiny problem through the CPU kernel vs the per-pixel formula in double,
  // with class weights, pixel weights and ce_weight 0.5 (the "mean" over the
  // summed class weights of the valid pixels).
  const int64_t n = 2, c = 5, h = 3, w = 301;
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> x(n * c * h * w);
  for (float& v : x) v = dist(rng);
  std::vector<int64_t> t(n * h * w);
  for (auto& v : t) v = (rng() % 7 == 0) ? 255 : static_cast<int64_t>(rng() % c);
  const int64_t sizes[4] = {n, c, h, w}, strides[4] = {c * h * w, h * w, w, 1};
  const lse::PixelGeometry g = lse::make_pixel_geometry(sizes, strides);
  std::vector<float> cw(c), pw(n * h * w);
  std::uniform_real_distribution<float> unit(0.25f, 2.0f);
  for (float& v : cw) v = unit(rng);
  for (float& v : pw) v = unit(rng);
  const auto check = lse::cpu::focal_ce_count_targets(t.data(), 0, n * h * w, 255, c, cw.data());
  double want_wsum = 0;
  for (int64_t i = 0; i < n * h * w; ++i) want_wsum += t[i] == 255 ? 0.0 : cw[t[i]];
  EXPECT(std::fabs(check.weight_sum - want_wsum) <= 1e-9 * want_wsum, "weight sum %.9g want %.9g",
         check.weight_sum, want_wsum);
  lse::cpu::FocalArgs<float> args;
  args.ce_weight = 0.5;
  args.class_weight = cw.data();
  args.pixel_weight = pw.data();
  args.grad_scale = 1.0 / check.weight_sum;
  std::vector<float> loss(n * h * w), grad(x.size());
  std::vector<double> partial(lse::cpu::make_tiling(g).total);
  lse::cpu::focal_ce_cpu_tiles(x.data(), g, t.data(), args, 0, partial.size(), loss.data(), grad.data(), partial.data());
  double total = 0, worst_grad = 0;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t p = 0; p < h * w; ++p) {
      const int64_t tt = t[b * h * w + p];
      double m = -1e300, s = 0;
      for (int64_t k = 0; k < c; ++k) m = std::max(m, static_cast<double>(x[(b * c + k) * h * w + p]));
      for (int64_t k = 0; k < c; ++k) s += std::exp(x[(b * c + k) * h * w + p] - m);
      if (tt == 255) {
        EXPECT(loss[b * h * w + p] == 0.0f, "ignored pixel has loss");
        continue;
      }
      const double lp = x[(b * c + tt) * h * w + p] - m - std::log(s);
      const auto f = lse::focal_terms<double>(lp, 3.0, 0.1, 0.5);
      const double wp = static_cast<double>(cw[tt]) * pw[b * h * w + p];
      total += wp * f.loss;
      for (int64_t k = 0; k < c; ++k) {
        const double pk = std::exp(x[(b * c + k) * h * w + p] - m) / s;
        const double want = wp * f.dloss_dL * ((k == tt) - pk) / check.weight_sum;
        worst_grad = std::max(worst_grad, std::fabs(grad[(b * c + k) * h * w + p] - want));
      }
    }
  const double got = lse::cpu::focal_ce_cpu_reduce(partial.data(), partial.size());
  EXPECT(std::fabs(got - total) <= 1e-5 * total, "loss sum %.9g want %.9g", got, total);
  EXPECT(worst_grad <= 1e-9, "gradient max abs error %g", worst_grad);
  t[7] = 9;
  EXPECT(lse::cpu::focal_ce_count_targets(t.data(), 0, n * h * w, 255, c, static_cast<const float*>(nullptr))
                 .first_bad == 7,
         "bad target found");
}

struct Truth {
  double confidence, entropy;
  int label;
};

Truth truth(const std::vector<float>& x) {
  const int c = static_cast<int>(x.size());
  int arg = 0;
  for (int i = 1; i < c; ++i)
    if (x[i] > x[arg]) arg = i;
  double d = 0.0;
  for (float v : x) d += std::exp(static_cast<double>(v) - x[arg]);
  double h = 0.0;
  for (float v : x) {
    const double lp = static_cast<double>(v) - x[arg] - std::log(d);
    h -= std::exp(lp) * lp;
  }
  return {1.0 / d, c > 1 ? h / std::log(static_cast<double>(c)) : 0.0, arg};
}

lse::PixelScore score_pixel(const std::vector<float>& x) {
  lse::ScoreAcc acc = lse::score_init(x[0]);
  for (size_t c = 1; c < x.size(); ++c) lse::score_update(acc, x[c], static_cast<int32_t>(c));
  const float inv = x.size() > 1 ? static_cast<float>(1.0 / std::log(static_cast<double>(x.size()))) : 0.0f;
  return lse::score_finish(acc, inv);
}

void test_score_pixel() {
  std::mt19937 rng(7);
  double worst_conf = 0, worst_ent = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const int c = 1 + static_cast<int>(rng() % 40);
    const float scale = std::array<float, 4>{0.1f, 3.0f, 30.0f, 1.0e4f}[trial % 4];
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> x(c);
    for (float& v : x) v = dist(rng);
    const Truth want = truth(x);
    const lse::PixelScore got = score_pixel(x);
    EXPECT(got.label == want.label, "label %d want %d (C=%d)", got.label, want.label, c);
    worst_conf = std::max(worst_conf, std::fabs(got.confidence - want.confidence));
    worst_ent = std::max(worst_ent, std::fabs(got.entropy - want.entropy));
    if (g_failures > 10) return;
  }
  EXPECT(worst_conf <= 1e-6, "confidence max abs error %.3g", worst_conf);
  EXPECT(worst_ent <= 2e-6, "entropy max abs error %.3g", worst_ent);

  // Ties: the lowest index wins; uniform logits give confidence 1/C, entropy 1.
  const lse::PixelScore tie = score_pixel({1.0f, 5.0f, 2.0f, 5.0f, 5.0f});
  EXPECT(tie.label == 1, "tie label %d", tie.label);
  const lse::PixelScore flat = score_pixel(std::vector<float>(19, 0.25f));
  EXPECT(flat.label == 0 && std::fabs(flat.confidence - 1.0 / 19) < 1e-7 &&
             std::fabs(flat.entropy - 1.0) < 1e-6,
         "uniform: label %d conf %.9g ent %.9g", flat.label, flat.confidence, flat.entropy);
  // Extremes stay finite.
  const lse::PixelScore ext = score_pixel({-1.0e4f, 1.0e4f, 0.0f, 1.0e4f, -1.0e4f});
  EXPECT(ext.label == 1 && std::fabs(ext.confidence - 0.5f) < 1e-7 &&
             std::fabs(ext.entropy - std::log(2.0) / std::log(5.0)) < 1e-6,
         "extreme: label %d conf %.9g ent %.9g", ext.label, ext.confidence, ext.entropy);
  const lse::PixelScore one = score_pixel({3.0f});
  EXPECT(one.label == 0 && one.confidence == 1.0f && one.entropy == 0.0f, "C == 1");
  const lse::PixelScore nan = score_pixel({0.0f, NAN, 1.0f});
  EXPECT(std::isnan(nan.confidence) && std::isnan(nan.entropy), "NaN logits give NaN scores");

  // -inf logits are p = 0 (0 log 0 = 0), first classes included; all -inf
  // and +inf have no softmax (NaN), as in the CUDA kernels that share this.
  const float ninf = -INFINITY;
  const lse::PixelScore first = score_pixel({ninf, ninf, 0.0f, ninf});
  EXPECT(first.label == 2 && first.confidence == 1.0f && first.entropy == 0.0f,
         "-inf first: label %d conf %.9g ent %.9g", first.label, first.confidence, first.entropy);
  const lse::PixelScore half = score_pixel({ninf, 1.0f, ninf, 1.0f});
  EXPECT(half.label == 1 && std::fabs(half.confidence - 0.5f) < 1e-7 &&
             std::fabs(half.entropy - std::log(2.0) / std::log(4.0)) < 1e-6,
         "-inf mixed: label %d conf %.9g ent %.9g", half.label, half.confidence, half.entropy);
  const lse::PixelScore dead = score_pixel({ninf, ninf, ninf});
  EXPECT(std::isnan(dead.confidence) && std::isnan(dead.entropy), "all -inf gives NaN");
  const lse::PixelScore pinf = score_pixel({0.0f, INFINITY, ninf});
  EXPECT(std::isnan(pinf.confidence) && std::isnan(pinf.entropy), "+inf gives NaN");

  // Probabilities (score_probs): exact for p = 0; NaN and inf give NaN.
  const auto prob_pixel = [](const std::vector<float>& p) {
    lse::ProbAcc acc = lse::prob_init(p[0]);
    for (size_t c = 1; c < p.size(); ++c) lse::prob_update(acc, p[c], static_cast<int32_t>(c));
    return lse::prob_finish(acc, static_cast<float>(1.0 / std::log(static_cast<double>(p.size()))));
  };
  const lse::PixelScore pz = prob_pixel({0.0f, 0.25f, 0.0f, 0.75f});
  const double hz = -(0.25 * std::log(0.25) + 0.75 * std::log(0.75)) / std::log(4.0);
  EXPECT(pz.label == 3 && pz.confidence == 0.75f && std::fabs(pz.entropy - hz) < 1e-6,
         "probs: label %d conf %.9g ent %.9g", pz.label, pz.confidence, pz.entropy);
  const lse::PixelScore pn = prob_pixel({0.5f, NAN, 0.5f});
  EXPECT(std::isnan(pn.confidence) && std::isnan(pn.entropy), "NaN probability gives NaN");
}

// Whole CPU kernel on a strided layout vs per-pixel double truth.
template <typename T>
void check_kernel(const char* name, int64_t n, int64_t c, int64_t h, int64_t w, bool channels_last,
                  const std::function<T(float)>& cast, const std::function<float(T)>& back) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 4.0f);
  std::vector<T> data(static_cast<size_t>(n * c * h * w));
  for (T& v : data) v = cast(dist(rng));
  int64_t strides[4];
  if (channels_last) {
    strides[0] = h * w * c, strides[1] = 1, strides[2] = w * c, strides[3] = c;
  } else {
    strides[0] = c * h * w, strides[1] = h * w, strides[2] = w, strides[3] = 1;
  }
  const int64_t sizes[4] = {n, c, h, w};
  const lse::PixelGeometry g = lse::make_pixel_geometry(sizes, strides);
  const size_t pix = static_cast<size_t>(n * h * w);
  std::vector<float> conf(pix), ent(pix), cls_conf(n * c), cls_ent(n * c);
  std::vector<int64_t> label(pix), cls_pix(n * c);
  lse::cpu::score_cpu_serial(data.data(), g, {conf.data(), label.data(), ent.data()},
                             cls_pix.data(), cls_conf.data(), cls_ent.data());

  std::vector<double> want_conf(n * c, 0.0), want_ent(n * c, 0.0);
  std::vector<int64_t> want_pix(n * c, 0);
  int bad = 0;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        std::vector<float> v(c);
        for (int64_t k = 0; k < c; ++k)
          v[k] = back(data[b * strides[0] + k * strides[1] + y * strides[2] + x * strides[3]]);
        const Truth t = truth(v);
        const size_t i = static_cast<size_t>((b * h + y) * w + x);
        if (label[i] != t.label || std::fabs(conf[i] - t.confidence) > 1e-6 ||
            std::fabs(ent[i] - t.entropy) > 2e-6) {
          ++bad;
        }
        want_pix[b * c + t.label] += 1;
        want_conf[b * c + t.label] += t.confidence;
        want_ent[b * c + t.label] += t.entropy;
      }
  EXPECT(bad == 0, "%s: %d pixels differ from truth", name, bad);
  for (int64_t i = 0; i < n * c; ++i) {
    EXPECT(cls_pix[i] == want_pix[i], "%s: class_pixels[%ld] %ld want %ld", name, (long)i,
           (long)cls_pix[i], (long)want_pix[i]);
    EXPECT(std::fabs(cls_conf[i] - want_conf[i]) <= 1e-5 * std::max(1.0, want_conf[i]),
           "%s: class_confidence[%ld] %.9g want %.9g", name, (long)i, cls_conf[i], want_conf[i]);
    EXPECT(std::fabs(cls_ent[i] - want_ent[i]) <= 1e-5 * std::max(1.0, want_ent[i]),
           "%s: class_entropy[%ld] %.9g want %.9g", name, (long)i, cls_ent[i], want_ent[i]);
  }
}

void test_kernel() {
  const std::function<float(float)> id = [](float v) { return v; };
  check_kernel<float>("f32 nchw", 2, 19, 13, 300, false, id, id);
  check_kernel<float>("f32 nhwc", 2, 19, 13, 300, true, id, id);
  check_kernel<float>("f32 C=1", 1, 1, 5, 7, false, id, id);
  check_kernel<float>("f32 C=2 W=1", 3, 2, 17, 1, false, id, id);
  const std::function<lse::bfloat16_t(float)> to_bf = [](float v) {
    return lse::bfloat16_t{static_cast<uint16_t>(lse::float_to_bits(v) >> 16)};
  };
  const std::function<float(lse::bfloat16_t)> from_bf = [](lse::bfloat16_t v) { return lse::to_float(v); };
  check_kernel<lse::bfloat16_t>("bf16 nchw", 2, 7, 9, 259, false, to_bf, from_bf);
  check_kernel<lse::bfloat16_t>("bf16 nhwc", 1, 7, 9, 31, true, to_bf, from_bf);
}

void test_geometry() {
  const int64_t sizes[4] = {2, 3, 4, 5};
  const int64_t contiguous[4] = {60, 20, 5, 1};
  lse::PixelGeometry g = lse::make_pixel_geometry(sizes, contiguous);
  EXPECT(g.rows == 1 && g.cols == 20 && g.stride_col == 1, "contiguous fuses H and W");
  const int64_t channels_last[4] = {60, 1, 15, 3};
  g = lse::make_pixel_geometry(sizes, channels_last);
  EXPECT(g.rows == 1 && g.cols == 20 && g.stride_col == 3, "channels_last fuses H and W");
  const int64_t sliced[4] = {120, 40, 10, 1};  // x[..., :5] of a wider tensor
  g = lse::make_pixel_geometry(sizes, sliced);
  EXPECT(g.rows == 4 && g.cols == 5 && g.stride_row == 10, "sliced keeps rows");
}

// log_normal on (0, 1), where crop_pseudo_labels takes -p log p of probabilities.
void test_log_normal() {
  double worst = 0.0;
  float worst_at = 1.0f;
  for (float x = 1.2e-38f; x < 1.0f; x = std::nextafter(x, 2.0f) + x * 1.0e-4f) {
    const double want = std::log(static_cast<double>(x));
    const double err = ulp_error(lse::log_normal(x), want);
    if (err > worst) worst = err, worst_at = x;
  }
  EXPECT(worst <= 2.0, "max error %.2f ulp at x=%.9g", worst, worst_at);
  EXPECT(lse::entropy_term(0.0f) == 0.0f && lse::entropy_term(1.0f) == 0.0f, "entr(0) = entr(1) = 0");
  EXPECT(std::fabs(lse::entropy_term(0.5f) - 0.5 * std::log(2.0)) < 1e-7, "entr(0.5)");
}

// Crop taps of an integer box against the closed forms of F.interpolate on
// the slice: bilinear src = max(0, (dst + 0.5) * in / out - 0.5) (or
// dst * (in - 1) / (out - 1) with align_corners) and nearest-exact
// floor((dst + 0.5) * in / out), away from float rounding ties.
void test_crop_taps() {
  for (int in : {1, 2, 7, 37, 256}) {
    for (int out : {1, 3, 59, 97, 512}) {
      for (int start : {0, 5}) {
        for (bool align : {false, true}) {
          const lse::ResampleAxis a = lse::make_resample_axis(float(start), float(start + in), out, start + in + 3, align);
          for (int d = 0; d < out; ++d) {
            double src = align ? (out > 1 ? d * double(in - 1) / (out - 1) : 0.0) : (d + 0.5) * in / out - 0.5;
            src = std::max(src, 0.0);
            const int64_t i0 = std::min<int64_t>(start + static_cast<int64_t>(std::floor(src)), start + in - 1);
            const lse::LinearTap t = lse::linear_tap(a, d);
            const double frac = src - std::floor(src);
            if (frac > 1e-5 && frac < 1 - 1e-5) {
              EXPECT(t.i0 == i0, "in=%d out=%d start=%d d=%d: i0 %lld != %lld", in, out, start, d,
                     static_cast<long long>(t.i0), static_cast<long long>(i0));
              EXPECT(std::fabs(t.l1 - frac) < 1e-4, "lambda %g != %g", t.l1, frac);
            }
            EXPECT(t.i1 <= start + in - 1 && t.i0 >= start, "taps stay inside the box");
            const double exact = (d + 0.5) * in / out;
            if (!align && exact - std::floor(exact) > 1e-5) {
              const int64_t want = std::min<int64_t>(start + static_cast<int64_t>(std::floor(exact)), start + in - 1);
              EXPECT(lse::nearest_tap(a, d) == want, "nearest in=%d out=%d d=%d", in, out, d);
            }
          }
        }
      }
    }
  }
}

// The zero-weight-tap rule of the scoring resamplers: a tap of weight
// exactly 0 adds nothing (a -inf, inf or NaN there stays out), a tap of
// weight > 0 counts (-inf there makes the value -inf); finite values blend
// as bilinear_blend does.
void test_zero_weight_taps() {
  const float inf = INFINITY, nan = NAN;
  EXPECT(lse::live_tap(0.0f, -inf) == 0.0f && lse::live_tap(0.0f, nan) == 0.0f, "0 * -inf / NaN adds 0");
  EXPECT(lse::live_tap(0.25f, -inf) == -inf && std::isnan(lse::live_tap(0.25f, nan)), "w > 0 counts");
  // l1x = 0: the second column is out; l1y = 0: the second row is out.
  EXPECT(lse::bilinear_blend_live<float>(0.0f, 0.0f, 2.0f, -inf, -inf, nan) == 2.0f, "exact position");
  EXPECT(lse::bilinear_blend_live<float>(0.5f, 0.0f, 2.0f, -inf, 4.0f, nan) == 3.0f, "exact column");
  EXPECT(lse::bilinear_blend_live<float>(0.0f, 0.5f, 2.0f, 4.0f, -inf, -inf) == 3.0f, "exact row");
  EXPECT(lse::bilinear_blend_live<float>(0.5f, 0.5f, 2.0f, 4.0f, -inf, 1.0f) == -inf, "-inf at w > 0");
  EXPECT(std::isnan(lse::bilinear_blend<float>(0.0f, 0.0f, 2.0f, -inf, 0.0f, 0.0f)), "plain blend: 0 * -inf");
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> v(-5.0f, 5.0f), l(0.0f, 1.0f);
  for (int i = 0; i < 1000; ++i) {
    const float ly = i % 3 == 0 ? 0.0f : l(rng), lx = i % 5 == 0 ? 0.0f : l(rng);
    const float a = v(rng), b = v(rng), c = v(rng), d = v(rng);
    const float want = lse::bilinear_blend<float>(ly, lx, a, b, c, d);
    const float got = lse::bilinear_blend_live<float>(ly, lx, a, b, c, d);
    EXPECT(got == want, "finite blend %g != %g", got, want);
    const double wd = lse::bilinear_blend<double>(ly, lx, a, b, c, d);
    EXPECT(lse::bilinear_blend_live<double>(ly, lx, a, b, c, d) == wd, "double blend");
  }
  // crop_pseudo_labels: zero-weight taps re-read a tap of weight > 0, so a
  // composed value is finite iff every tap of weight > 0 reads a finite value.
  const float row[4] = {0.25f, 0.5f, NAN, 0.75f};  // index 2 is bad
  int bad_pixels = 0, good_pixels = 0, zero_taps = 0;
  for (bool align : {false, true}) {
  const int64_t full = align ? 7 : 8;  // exact scale 1/2 either way
  const lse::ResampleAxis up = lse::upsample_axis(4, full, align);
  for (const lse::ResampleAxis& crop : {lse::upsample_axis(full, full, align),
                                        lse::make_resample_axis(1.0f, 6.0f, 11, full, align)}) {
  for (int d = 0; d < (crop.scale == 1.0f ? full : 11); ++d) {
    const lse::LinearTap t = lse::drop_zero_weight_tap(lse::linear_tap(crop, d));
    const lse::LinearTap u0 = lse::drop_zero_weight_tap(lse::linear_tap(up, t.i0));
    const lse::LinearTap u1 = lse::drop_zero_weight_tap(lse::linear_tap(up, t.i1));
    const lse::ComposedTaps ct = lse::compose_taps(t, u0, u1);
    bool reads_bad = false;  // a tap of weight > 0 reads index 2
    for (int b = 0; b < 4; ++b) {
      if (ct.w[b] > 0.0f && ct.idx[b] == 2) reads_bad = true;
      if (ct.w[b] == 0.0f) {
        ++zero_taps;
        bool covered = false;
        for (int b2 = 0; b2 < 4; ++b2) covered |= ct.w[b2] > 0.0f && ct.idx[b2] == ct.idx[b];
        EXPECT(covered, "d=%d: a zero-weight tap reads a pixel no tap of weight > 0 reads", d);
      }
    }
    const float val = lse::four_tap_sum(ct.w, row[ct.idx[0]], row[ct.idx[1]], row[ct.idx[2]], row[ct.idx[3]]);
    EXPECT(std::isnan(val) == reads_bad, "d=%d: value %g, reads the NaN with weight > 0: %d", d, val, reads_bad);
    ++(reads_bad ? bad_pixels : good_pixels);
  }
  }
  }
  EXPECT(bad_pixels > 0 && good_pixels > 0 && zero_taps > 0, "cases %d %d %d", bad_pixels, good_pixels, zero_taps);
  EXPECT(lse::entropy_term(0.0f) == 0.0f && std::isnan(lse::entropy_term(nan)) && std::isnan(lse::entropy_term(inf)) &&
             std::isnan(lse::entropy_term(-inf)),
         "entropy_term: 0 log 0 = 0, non-finite p gives NaN");
}

}  // namespace

void test_cpu_isa_parse() {
  using lse::cpu::CpuIsa;
  using lse::cpu::parse_cpu_isa;
  for (bool has : {false, true}) {
    const CpuIsa best = has ? CpuIsa::Avx2Fma : CpuIsa::Portable;
    EXPECT(parse_cpu_isa(nullptr, has).isa == best && parse_cpu_isa(nullptr, has).error.empty(), "unset");
    EXPECT(parse_cpu_isa("", has).isa == best, "empty");
    EXPECT(parse_cpu_isa("auto", has).isa == best, "auto");
    EXPECT(parse_cpu_isa("portable", has).isa == CpuIsa::Portable && parse_cpu_isa("portable", has).error.empty(),
           "portable");
  }
  EXPECT(parse_cpu_isa("avx2", true).isa == CpuIsa::Avx2Fma, "avx2 on an AVX2 CPU");
  EXPECT(!parse_cpu_isa("avx2", false).error.empty(), "avx2 without AVX2 is an error");
  const auto bad = parse_cpu_isa("AVX512", true);
  EXPECT(bad.error.find("LSE_FAST_CPU_ISA") != std::string::npos && bad.error.find("'AVX512'") != std::string::npos,
         "bad value named: %s", bad.error.c_str());
}

int main() {
  const std::vector<std::pair<const char*, void (*)()>> tests = {
      {"exp_nonpos", test_exp_nonpos},     {"log_ge1", test_log_ge1},
      {"half_conversion", test_half_conversion}, {"score_pixel", test_score_pixel},
      {"geometry", test_geometry},         {"score_cpu_kernel", test_kernel},
      {"float_to_16bit", test_float_to_16bit}, {"focal_terms", test_focal_terms},
      {"focal_cpu_kernel", test_focal_kernel}, {"log_normal", test_log_normal},
      {"crop_taps", test_crop_taps},       {"cpu_isa_parse", test_cpu_isa_parse},
      {"zero_weight_taps", test_zero_weight_taps},
  };
  for (const auto& [name, fn] : tests) {
    const int before = g_failures;
    fn();
    std::printf("%-20s %s\n", name, g_failures == before ? "ok" : "FAILED");
  }
  std::printf("%d failure(s)\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
