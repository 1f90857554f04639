// lse_fast::focal_ce_loss: schema, Meta kernel (torch.compile) and the CPU
// implementation, torch threading over the torch-free kernel in
// csrc/cpu/focal_ce_loss_cpu_kernel.cpp.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "core/dispatch.h"
#include "cpu/focal_ce_loss_cpu_kernel.h"
#include "torch/focal_ce_loss_op.h"
#include "torch/memory.h"
#include "torch/tensor_views.h"

namespace lse::torch_ops {
namespace {

constexpr int64_t kTargetChunk = 1 << 16;

template <typename Tgt, typename W>
cpu::TargetCheck count_targets(const Tgt* target, int64_t pixels, int64_t ignore_index,
                               int64_t num_classes, const W* class_weight) {
  const int64_t chunks = (pixels + kTargetChunk - 1) / kTargetChunk;
  std::vector<cpu::TargetCheck> parts(static_cast<size_t>(chunks));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      parts[i] = cpu::focal_ce_count_targets(target, i * kTargetChunk,
                                             std::min(pixels, (i + 1) * kTargetChunk),
                                             ignore_index, num_classes, class_weight);
    }
  });
  cpu::TargetCheck total;
  for (const auto& p : parts) {  // in chunk order: independent of the thread count
    total.valid += p.valid;
    total.weight_sum += p.weight_sum;
    if (total.first_bad < 0) total.first_bad = p.first_bad;
  }
  return total;
}

template <typename T, typename Tgt>
std::tuple<at::Tensor, at::Tensor> focal_ce_cpu_kernel_impl(const at::Tensor& logits,
                                                            const at::Tensor& target,
                                                            double gamma, double beta,
                                                            int64_t ignore_index,
                                                            Reduction reduction,
                                                            bool compute_grad, bool check_targets,
                                                            const at::Tensor& class_weight,
                                                            const at::Tensor& pixel_weight,
                                                            double ce_weight) {
  using Acc = cpu::FocalAcc<T>;
  const PixelGeometry g = pixel_geometry(logits);
  const Tgt* tgt = target.const_data_ptr<Tgt>();
  const int64_t pixels = target.numel();
  const Acc* cw = class_weight.defined() ? class_weight.const_data_ptr<Acc>() : nullptr;
  const cpu::TargetCheck check = count_targets(tgt, pixels, ignore_index, g.c, cw);
  if (check_targets && check.first_bad >= 0) {
    report_bad_target(static_cast<int64_t>(tgt[check.first_bad]), check.first_bad, g.c, ignore_index);
  }

  const auto loss_opts = focal_loss_options(logits);
  at::Tensor loss_map = reduction == Reduction::None
                            ? at::empty({logits.size(0), logits.size(2), logits.size(3)}, loss_opts)
                            : at::Tensor();
  at::Tensor grad = compute_grad ? ReusableCpuBuffer::empty(logits.sizes(), logits.options())
                                  : at::empty({0}, logits.options());
  const int64_t tiles = cpu::make_tiling(g).total;
  std::vector<double> partial(static_cast<size_t>(tiles));

  // The divisor of the mean: valid pixels, or their summed class weights
  // (F.cross_entropy(weight=)); pixel weights never enter it (mmseg). With
  // no valid pixel the mean is 0; a zero or NaN summed weight of valid
  // pixels divides as IEEE does (inf or NaN), as F.cross_entropy.
  const double mean_divisor = cw != nullptr ? check.weight_sum : static_cast<double>(check.valid);
  double divisor = 1.0;
  if (reduction == Reduction::Mean) divisor = mean_divisor;
  if (reduction == Reduction::MeanAll) divisor = static_cast<double>(pixels);
  const bool zero_mean = reduction == Reduction::Mean && check.valid == 0;
  cpu::FocalArgs<Acc> args;
  args.gamma = gamma, args.beta = beta, args.ce_weight = ce_weight, args.ignore_index = ignore_index;
  args.grad_scale = zero_mean ? 0.0 : 1.0 / divisor;
  args.class_weight = cw;
  args.pixel_weight = pixel_weight.defined() ? pixel_weight.const_data_ptr<Acc>() : nullptr;
  const T* x = reinterpret_cast<const T*>(logits.const_data_ptr());
  T* grad_ptr = compute_grad ? reinterpret_cast<T*>(grad.data_ptr()) : nullptr;
  Acc* loss_ptr = loss_map.defined() ? loss_map.data_ptr<Acc>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, 32768 / (g.c * cpu::kTile));
  at::parallel_for(0, tiles, grain, [&](int64_t begin, int64_t end) {
    cpu::focal_ce_cpu_tiles(x, g, tgt, args, begin, end, loss_ptr, grad_ptr, partial.data());
  });
  if (reduction == Reduction::None) return {loss_map, grad};
  double total = cpu::focal_ce_cpu_reduce(partial.data(), tiles);
  total = zero_mean ? 0.0 : total / divisor;
  return {at::scalar_tensor(total, loss_opts), grad};
}

std::tuple<at::Tensor, at::Tensor> focal_ce_meta(const at::Tensor& logits, const at::Tensor& target,
                                                 double gamma, double /*beta*/, int64_t /*ignore_index*/,
                                                 int64_t reduction_code, bool compute_grad,
                                                 bool /*check_targets*/,
                                                 const std::optional<at::Tensor>& weight,
                                                 const std::optional<at::Tensor>& pixel_weight,
                                                 double ce_weight) {
  const Reduction reduction =
      check_focal_ce_input(logits, target, gamma, reduction_code, weight, pixel_weight, ce_weight);
  return focal_ce_outputs(logits, reduction, compute_grad, /*zeroed=*/false);
}

std::tuple<at::Tensor, at::Tensor> focal_ce_cpu_kernel(const at::Tensor& logits,
                                                       const at::Tensor& target_in, double gamma,
                                                       double beta, int64_t ignore_index,
                                                       int64_t reduction_code, bool compute_grad,
                                                       bool check_targets,
                                                       const std::optional<at::Tensor>& weight,
                                                       const std::optional<at::Tensor>& pixel_weight,
                                                       double ce_weight) {
  const Reduction reduction =
      check_focal_ce_input(logits, target_in, gamma, reduction_code, weight, pixel_weight, ce_weight);
  LSE_CHECK_DEVICE("focal_ce_loss", logits, at::kCPU);
  LSE_CHECK_CPU_ISA("focal_ce_loss");
  const at::Tensor target = target_in.contiguous();
  if (logits.numel() == 0) return focal_ce_outputs(logits, reduction, compute_grad, /*zeroed=*/true);
  const at::Tensor class_weight = focal_weight_view(weight, logits);
  const at::Tensor pixel_weights = focal_weight_view(pixel_weight, logits);
  return dispatch_float(float_kind(logits.scalar_type()), [&](auto tag) {
    return dispatch_type<uint8_t, int64_t>(target.scalar_type() == at::kByte ? 0 : 1, [&](auto target_tag) {
      return focal_ce_cpu_kernel_impl<typename decltype(tag)::type, typename decltype(target_tag)::type>(
          logits, target, gamma, beta, ignore_index, reduction, compute_grad, check_targets, class_weight,
          pixel_weights, ce_weight);
    });
  });
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_FRAGMENT(lse_fast, m) {
  // reduction: 0 none, 1 mean (over valid pixels, or over the summed class
  // weights of the valid pixels with `weight`), 2 sum, 3 mean_all (over
  // N * H * W). Per pixel: pixel_weight[n, h, w] * weight[target] *
  // (ce_weight * CE + beta * FL); weights are constants (no gradient). grad_logits is dloss/dlogits (scaled
  // for the reduction), computed in the same pass; empty when compute_grad
  // is false. check_targets=false skips the report of a target outside
  // [0, C) that is not ignore_index (such pixels count as ignored) and with
  // it the CUDA host synchronisation.
  m.def(
      "focal_ce_loss(Tensor logits, Tensor target, float gamma, float beta, int ignore_index, "
      "int reduction, bool compute_grad, bool check_targets=True, Tensor? weight=None, "
      "Tensor? pixel_weight=None, float ce_weight=1.0) -> (Tensor loss, Tensor grad_logits)");
}

TORCH_LIBRARY_IMPL(lse_fast, Meta, m) {
  m.impl("focal_ce_loss", &lse::torch_ops::focal_ce_meta);
}

TORCH_LIBRARY_IMPL(lse_fast, CPU, m) {
  m.impl("focal_ce_loss", &lse::torch_ops::focal_ce_cpu_kernel);
}
