// CUDA implementation of lse_fast::focal_ce_loss: device guard, stream,
// outputs and the target check around the torch-free launchers in
// csrc/cuda/focal_ce_loss_cuda_kernel.cu. Built only against a CUDA-enabled torch.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "cuda/focal_ce_loss_cuda_kernel.h"
#include "torch/focal_ce_loss_op.h"
#include "torch/tensor_views.h"

namespace lse::torch_ops {
namespace {

std::tuple<at::Tensor, at::Tensor> focal_ce_cuda_kernel(const at::Tensor& logits,
                                                        const at::Tensor& target_in, double gamma,
                                                        double beta, int64_t ignore_index,
                                                        int64_t reduction_code, bool compute_grad,
                                                        bool check_targets) {
  const Reduction reduction = check_focal_ce_input(logits, target_in, gamma, reduction_code);
  LSE_CHECK_DEVICE("focal_ce_loss", logits, at::kCUDA);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor target = target_in.contiguous();
  if (logits.numel() == 0) return focal_ce_outputs(logits, reduction, compute_grad, /*zeroed=*/true);
  const auto loss_opts = focal_loss_options(logits);
  at::Tensor grad = compute_grad ? at::empty(logits.sizes(), logits.options()) : at::empty({0}, logits.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto u64 = logits.options().dtype(at::kUInt64);
  at::Tensor counters = at::empty({2}, u64);  // valid pixels, first bad index
  auto* valid = reinterpret_cast<unsigned long long*>(counters.data_ptr());
  const auto target_kind = target.scalar_type() == at::kByte ? lse::cuda::TargetKind::UInt8
                                                              : lse::cuda::TargetKind::Int64;
  cudaError_t err = lse::cuda::focal_ce_count_targets_launch(
      target.const_data_ptr(), target_kind, target.numel(), ignore_index, logits.size(1), valid,
      valid + 1, stream);
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
  args.gamma = gamma, args.beta = beta, args.ignore_index = ignore_index;
  args.mean = reduction == Reduction::Mean;
  args.valid = valid;
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
    const at::Tensor count = counters.narrow(0, 0, 1).squeeze(0).to(at::kDouble).clamp_min(1.0);
    return {(loss_sum / count).to(loss_opts.dtype()), grad};
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
  at::Tensor loss = reduction == Reduction::Mean
                        ? (valid_count > 0 ? loss_sum / static_cast<double>(valid_count) : at::zeros_like(loss_sum))
                        : loss_sum;
  return {loss.to(loss_opts.dtype()), grad};
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_IMPL(lse_fast, CUDA, m) {
  m.impl("focal_ce_loss", &lse::torch_ops::focal_ce_cuda_kernel);
}
