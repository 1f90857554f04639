// CUDA implementation of lse_fast::focal_ce_loss: device guard, stream,
// outputs and the target check around the torch-free launchers in
// csrc/cuda/focal_ce_loss_cuda_kernel.cu. Built only against a CUDA-enabled torch.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <optional>

#include "cuda/focal_ce_loss_cuda_kernel.h"
#include "torch/focal_ce_loss_op.h"
#include "torch/tensor_views.h"

namespace lse::torch_ops {
namespace {

std::tuple<at::Tensor, at::Tensor> focal_ce_cuda_kernel(const at::Tensor& logits,
                                                        const at::Tensor& target_in, double gamma,
                                                        double beta, int64_t ignore_index,
                                                        int64_t reduction_code, bool compute_grad,
                                                        bool check_targets,
                                                        const std::optional<at::Tensor>& weight,
                                                        const std::optional<at::Tensor>& pixel_weight,
                                                        double ce_weight) {
  const Reduction reduction =
      check_focal_ce_input(logits, target_in, gamma, reduction_code, weight, pixel_weight, ce_weight);
  LSE_CHECK_DEVICE("focal_ce_loss", logits, at::kCUDA);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor target = target_in.contiguous();
  if (logits.numel() == 0) return focal_ce_outputs(logits, reduction, compute_grad, /*zeroed=*/true);
  const auto loss_opts = focal_loss_options(logits);
  const at::Tensor class_weight = focal_weight_view(weight, logits);
  const at::Tensor pixel_weights = focal_weight_view(pixel_weight, logits);
  const bool acc_double = logits.scalar_type() == at::kDouble;
  at::Tensor grad = compute_grad ? at::empty(logits.sizes(), logits.options()) : at::empty({0}, logits.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto u64 = logits.options().dtype(at::kUInt64);
  at::Tensor counters = at::empty({2}, u64);  // valid pixels, first bad index
  auto* valid = reinterpret_cast<unsigned long long*>(counters.data_ptr());
  // Summed class weight of the valid pixels: the divisor of the weighted mean.
  at::Tensor weight_sum = class_weight.defined() ? at::empty({}, logits.options().dtype(at::kDouble))
                                                 : at::Tensor();
  double* weight_sum_ptr = weight_sum.defined() ? weight_sum.data_ptr<double>() : nullptr;
  const auto target_kind = target.scalar_type() == at::kByte ? lse::cuda::TargetKind::UInt8
                                                              : lse::cuda::TargetKind::Int64;
  cudaError_t err = lse::cuda::focal_ce_count_targets_launch(
      target.const_data_ptr(), target_kind, target.numel(), ignore_index, logits.size(1), valid,
      valid + 1, class_weight.defined() ? class_weight.const_data_ptr() : nullptr, acc_double,
      weight_sum_ptr, stream);
  TORCH_CHECK(err == cudaSuccess, "lse_fast.focal_ce_loss: CUDA target check failed: ",
              cudaGetErrorString(err));

  at::Tensor loss_map = reduction == Reduction::None ? at::empty(target.sizes(), loss_opts) : at::Tensor();
  at::Tensor loss_sum = at::empty({}, logits.options().dtype(at::kDouble));
  lse::cuda::FocalCudaArgs args{};
  args.logits = logits.const_data_ptr();
  args.kind = float_kind(logits.scalar_type());
  args.geometry = pixel_geometry(logits);
  args.target = target.const_data_ptr();
  args.target_kind = target_kind;
  args.gamma = gamma, args.beta = beta, args.ce_weight = ce_weight, args.ignore_index = ignore_index;
  args.mean = reduction == Reduction::Mean;
  args.grad_scale = reduction == Reduction::MeanAll ? 1.0 / static_cast<double>(target.numel()) : 1.0;
  args.valid = valid;
  args.weight_sum = args.mean ? weight_sum_ptr : nullptr;
  args.class_weight = class_weight.defined() ? class_weight.const_data_ptr() : nullptr;
  args.pixel_weight = pixel_weights.defined() ? pixel_weights.const_data_ptr() : nullptr;
  args.loss_per_pixel = loss_map.defined() ? loss_map.data_ptr() : nullptr;
  args.grad = compute_grad ? grad.data_ptr() : nullptr;
  args.loss_sum = loss_sum.data_ptr<double>();
  err = lse::cuda::focal_ce_cuda_launch(args, stream);
  TORCH_CHECK(err == cudaSuccess, "lse_fast.focal_ce_loss: CUDA kernel launch failed: ",
              cudaGetErrorString(err));

  if (!check_targets) {
    // No host synchronisation (capturable in a CUDA graph): bad targets were
    // counted as ignored, and the mean divides on the device.
    if (reduction == Reduction::None) return {loss_map, grad};
    if (reduction == Reduction::Sum) return {loss_sum.to(loss_opts.dtype()), grad};
    if (reduction == Reduction::MeanAll) {
      return {(loss_sum / static_cast<double>(target.numel())).to(loss_opts.dtype()), grad};
    }
    const at::Tensor count = counters.narrow(0, 0, 1).squeeze(0).to(at::kDouble);
    // No valid pixel: 0 (the sum is 0). Else the valid count or the summed class weights.
    const at::Tensor divisor = weight_sum.defined() ? at::where(count > 0, weight_sum, 1.0) : count.clamp_min(1.0);
    return {(loss_sum / divisor).to(loss_opts.dtype()), grad};
  }
  // One synchronisation to report a bad target by value (the kernels treat
  // it as ignored, so nothing out of range was read).
  const at::Tensor host = counters.cpu();
  const auto first_bad = reinterpret_cast<const unsigned long long*>(host.const_data_ptr())[1];
  if (first_bad != std::numeric_limits<unsigned long long>::max()) {
    const int64_t index = static_cast<int64_t>(first_bad);
    report_bad_target(target.reshape(-1)[index].item<int64_t>(), index, logits.size(1), ignore_index);
  }
  const auto valid_count = static_cast<int64_t>(reinterpret_cast<const unsigned long long*>(host.const_data_ptr())[0]);
  if (reduction == Reduction::None) return {loss_map, grad};
  at::Tensor loss = loss_sum;
  if (reduction == Reduction::MeanAll) loss = loss_sum / static_cast<double>(target.numel());
  if (reduction == Reduction::Mean) {
    if (valid_count == 0) {
      loss = at::zeros_like(loss_sum);
    } else {
      loss = weight_sum.defined() ? loss_sum / weight_sum : loss_sum / static_cast<double>(valid_count);
    }
  }
  return {loss.to(loss_opts.dtype()), grad};
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_IMPL(lse_fast, CUDA, m) {
  m.impl("focal_ce_loss", &lse::torch_ops::focal_ce_cuda_kernel);
}
