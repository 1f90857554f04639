// lse_fast::crop_pseudo_labels: schema, Meta kernel (torch.compile) and the
// CPU implementation, torch threading around the torch-free kernel in
// csrc/cpu/crop_pseudo_labels_cpu_kernel.cpp.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/crop_pseudo_labels_cpu_kernel.h"
#include "torch/crop_pseudo_labels_op.h"
#include "torch/memory.h"

namespace lse::torch_ops {
namespace {

at::Tensor crop_pseudo_labels_meta(const at::Tensor& probs, const at::Tensor& boxes, at::IntArrayRef size,
                                   const at::Tensor& thresholds, at::IntArrayRef image_size, int64_t ignore_index,
                                   bool /*align_corners*/) {
  const auto [oh, ow] = check_crop_pseudo_labels_meta(probs, boxes, size, thresholds, image_size, ignore_index);
  return at::empty_symint({boxes.sym_size(0), oh, ow}, probs.options().dtype(at::kByte));
}

at::Tensor crop_pseudo_labels_kernel(const at::Tensor& probs, const at::Tensor& boxes, at::IntArrayRef size,
                                     const at::Tensor& thresholds, at::IntArrayRef image_size,
                                     int64_t ignore_index, bool align_corners) {
  const PseudoLabelCall call =
      check_crop_pseudo_labels_call(probs, boxes, size, thresholds, image_size, ignore_index, at::kCPU);
  LSE_CHECK_CPU_ISA("crop_pseudo_labels");
  const at::Tensor& host_boxes = call.host_boxes;
  const int64_t k = host_boxes.size(0), oh = call.oh, ow = call.ow, H = call.image_h, W = call.image_w;
  at::Tensor out = empty_for_overwrite({k, oh, ow}, probs.options().dtype(at::kByte));
  if (out.numel() == 0) return out;

  const at::Tensor p = probs.to(at::kFloat).contiguous();
  const at::Tensor thr = thresholds.to(at::kCPU).contiguous();
  cpu::PseudoLabelArgs args;
  args.probs = p.const_data_ptr<float>();
  args.n = p.size(0), args.c = p.size(1), args.h = p.size(2), args.w = p.size(3);
  args.image_h = H, args.image_w = W;
  args.boxes = {host_boxes.const_data_ptr<float>(), k};
  args.oh = oh, args.ow = ow;
  args.thresholds = thr.const_data_ptr<float>();
  args.ignore_index = static_cast<uint8_t>(ignore_index);
  args.align_corners = align_corners;
  args.out = out.data_ptr<uint8_t>();
  // Row blocks per task: about 64K class values (small inputs run inline).
  const int64_t grain = std::max<int64_t>(1, 65536 / (cpu::kPseudoLabelRows * ow * args.c));
  at::parallel_for(0, k * cpu::pseudo_label_blocks(oh), grain, [&](int64_t begin, int64_t end) {
    cpu::crop_pseudo_labels_cpu(args, begin, end);
  });
  return out;
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_FRAGMENT(lse_fast, m) {
  // uint8 [K, oh, ow] pseudo-labels of boxes given at image_size from
  // probabilities at any resolution.
  m.def(
      "crop_pseudo_labels(Tensor probs, Tensor boxes, int[2] size, Tensor thresholds, "
      "int[2] image_size, int ignore_index, bool align_corners=False) -> Tensor");
  // Meta-only twin (see lse_fast/ops/crop_pseudo_labels.py).
  m.def(
      "crop_pseudo_labels_meta(Tensor probs, Tensor boxes, int[2] size, Tensor thresholds, "
      "int[2] image_size, int ignore_index, bool align_corners=False) -> Tensor");
}

TORCH_LIBRARY_IMPL(lse_fast, Meta, m) {
  m.impl("crop_pseudo_labels", &lse::torch_ops::crop_pseudo_labels_meta);
  m.impl("crop_pseudo_labels_meta", &lse::torch_ops::crop_pseudo_labels_meta);
}

TORCH_LIBRARY_IMPL(lse_fast, CPU, m) {
  m.impl("crop_pseudo_labels", &lse::torch_ops::crop_pseudo_labels_kernel);
}
