// lse_fast::crop_resize and crop_resize_backward: schemas, Meta kernels
// (torch.compile) and the CPU implementation: tap tables and torch
// threading around the torch-free kernels in csrc/cpu/crop_resize_cpu_kernel.cpp.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "core/dispatch.h"
#include "cpu/crop_resize_cpu_kernel.h"
#include "torch/crop_resize_op.h"
#include "torch/memory.h"
#include "torch/tensor_views.h"

namespace lse::torch_ops {
namespace {

// Tap tables of all boxes on both axes.
struct TapTables {
  std::vector<int64_t> r0, r1, c0, c1;
  std::vector<float> rl, cl;
  cpu::AxisTaps rows, cols;
  TapTables(int64_t k, int64_t oh, int64_t ow)
      : r0(k * oh), r1(k * oh), c0(k * ow), c1(k * ow), rl(k * oh), cl(k * ow) {
    rows = {r0.data(), r1.data(), rl.data()};
    cols = {c0.data(), c1.data(), cl.data()};
  }
};

TapTables make_taps(const CropBoxes& boxes, const CropImage& g, int64_t oh, int64_t ow,
                    CropMode mode, bool align_corners) {
  TapTables t(boxes.k, oh, ow);
  if (mode == CropMode::Nearest) {
    cpu::crop_nearest_taps(boxes, g, oh, ow, t.rows, t.cols);
  } else {
    cpu::crop_bilinear_taps(boxes, g, oh, ow, align_corners, t.rows, t.cols);
  }
  return t;
}

// Output rows per task: about 64K output elements.
int64_t row_grain(int64_t c, int64_t ow) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, c * ow)); }

template <typename T>
void bilinear_kernel_impl(const T* in, const CropImage& g, const CropBoxes& boxes,
                          int64_t oh, int64_t ow, const TapTables& taps, T* out) {
  at::parallel_for(0, boxes.k * oh, row_grain(g.c, ow), [&](int64_t begin, int64_t end) {
    cpu::crop_bilinear_cpu(in, g, boxes, oh, ow, taps.rows, taps.cols, out, begin, end);
  });
}

template <typename E>
void nearest_kernel_impl(const void* in, const CropImage& g, const CropBoxes& boxes,
                         int64_t oh, int64_t ow, const TapTables& taps, void* out) {
  at::parallel_for(0, boxes.k * oh, row_grain(g.c, ow), [&](int64_t begin, int64_t end) {
    cpu::crop_nearest_cpu(static_cast<const E*>(in), g, boxes, oh, ow, taps.rows, taps.cols,
                          static_cast<E*>(out), begin, end);
  });
}

at::Tensor crop_resize_meta(const at::Tensor& input, const at::Tensor& boxes, at::IntArrayRef size,
                            int64_t mode, bool /*align_corners*/) {
  check_crop_resize_input(input, mode);
  const auto [oh, ow] = check_out_size("crop_resize", size, "size");
  check_boxes_meta("crop_resize", boxes, input.device());
  return at::empty_symint({boxes.sym_size(0), input.sym_size(1), oh, ow}, input.options());
}

at::Tensor crop_resize_backward_meta(const at::Tensor& grad, const at::Tensor& boxes, at::IntArrayRef input_size,
                                     int64_t mode, bool /*align_corners*/) {
  check_crop_backward_meta(grad, boxes, input_size, mode);
  return at::empty(input_size, grad.options());
}

at::Tensor crop_resize_kernel(const at::Tensor& input, const at::Tensor& boxes, at::IntArrayRef size,
                              int64_t mode_code, bool align_corners) {
  const CropMode mode = check_crop_resize_input(input, mode_code);
  LSE_CHECK_DEVICE("crop_resize", input, at::kCPU);
  LSE_CHECK_CPU_ISA("crop_resize");
  const auto [oh, ow] = check_out_size("crop_resize", size, "size");
  const at::Tensor host_boxes =
      checked_host_boxes("crop_resize", boxes, input.device(), input.size(0), input.size(2), input.size(3));
  const int64_t k = host_boxes.size(0), c = input.size(1);
  at::Tensor out = empty_for_overwrite({k, c, oh, ow}, input.options());
  if (out.numel() == 0) return out;

  const CropImage g = crop_image(input);
  const CropBoxes bx{host_boxes.const_data_ptr<float>(), k};
  const TapTables taps = make_taps(bx, g, oh, ow, mode, align_corners);
  if (mode == CropMode::Nearest) {
    dispatch_bits(static_cast<int>(input.element_size()), [&](auto tag) {
      nearest_kernel_impl<typename decltype(tag)::type>(input.const_data_ptr(), g, bx, oh, ow, taps, out.data_ptr());
    });
  } else {
    dispatch_float(float_kind(input.scalar_type()), [&](auto tag) {
      using T = typename decltype(tag)::type;
      bilinear_kernel_impl(static_cast<const T*>(input.const_data_ptr()), g, bx, oh, ow, taps,
                           static_cast<T*>(out.data_ptr()));
    });
  }
  return out;
}

template <typename T, typename A>
void backward_kernel_impl(const T* grad_out, const CropImage& g, int64_t oh, int64_t ow,
                          CropMode mode, const TapTables& taps, const std::vector<int64_t>& order,
                          const std::vector<int64_t>& first, A* grad_in) {
  // Planes per task: about 64K gradient elements scattered (small inputs run inline).
  const int64_t per_plane = std::max<int64_t>(1, static_cast<int64_t>(order.size()) * oh * ow / std::max<int64_t>(1, g.n));
  const int64_t grain = std::max<int64_t>(1, 65536 / per_plane);
  at::parallel_for(0, g.n * g.c, grain, [&](int64_t begin, int64_t end) {
    cpu::crop_resize_backward_cpu(grad_out, g, oh, ow, mode == CropMode::Nearest, taps.rows, taps.cols,
                                  order.data(), first.data(), grad_in, begin, end);
  });
}

at::Tensor crop_resize_backward_kernel(const at::Tensor& grad, const at::Tensor& boxes,
                                       at::IntArrayRef input_size, int64_t mode_code, bool align_corners) {
  const at::Tensor host_boxes = check_crop_backward_input(grad, boxes, input_size, mode_code, at::kCPU);
  LSE_CHECK_CPU_ISA("crop_resize_backward");
  const int64_t k = host_boxes.size(0), oh = grad.size(2), ow = grad.size(3);
  const auto dt = grad.scalar_type();
  at::Tensor grad_in = zeroed_grad_accumulator(grad, input_size);
  if (grad.numel() == 0 || grad_in.numel() == 0) return grad_in.to(dt);

  const at::Tensor go = grad.contiguous();
  const CropImage g = contiguous_image(input_size);
  const CropBoxes bx{host_boxes.const_data_ptr<float>(), k};
  const CropMode mode = static_cast<CropMode>(mode_code);
  const TapTables taps = make_taps(bx, g, oh, ow, mode, align_corners);
  // Boxes grouped by image, in box order within an image.
  std::vector<int64_t> first(g.n + 1, 0), order(k);
  for (int64_t i = 0; i < k; ++i) ++first[bx.image(i) + 1];
  for (int64_t n = 0; n < g.n; ++n) first[n + 1] += first[n];
  std::vector<int64_t> fill(first.begin(), first.end() - 1);
  for (int64_t i = 0; i < k; ++i) order[fill[bx.image(i)]++] = i;

  dispatch_float(float_kind(dt), [&](auto tag) {
    using T = typename decltype(tag)::type;
    backward_kernel_impl(static_cast<const T*>(go.const_data_ptr()), g, oh, ow, mode, taps, order, first,
                         grad_in.data_ptr<acc_t<T>>());
  });
  return grad_in.scalar_type() == dt ? grad_in : grad_in.to(dt);
}

}  // namespace
}  // namespace lse::torch_ops

TORCH_LIBRARY_FRAGMENT(lse_fast, m) {
  // mode: 0 bilinear, 1 nearest ("nearest-exact"). boxes float32 [K, 5] on
  // the CPU or the input's device; output [K, C, oh, ow] contiguous.
  m.def("crop_resize(Tensor input, Tensor boxes, int[2] size, int mode, bool align_corners) -> Tensor");
  // Gradient w.r.t. crop_resize's input: [N, C, H, W] contiguous, grad's dtype.
  m.def(
      "crop_resize_backward(Tensor grad, Tensor boxes, int[4] input_size, int mode, "
      "bool align_corners) -> Tensor");
  // Meta-only twins (see lse_fast/ops/crop_resize.py): the fakes call them
  // with the boxes on the input's device.
  m.def("crop_resize_meta(Tensor input, Tensor boxes, int[2] size, int mode, bool align_corners) -> Tensor");
  m.def(
      "crop_resize_backward_meta(Tensor grad, Tensor boxes, int[4] input_size, int mode, "
      "bool align_corners) -> Tensor");
}

TORCH_LIBRARY_IMPL(lse_fast, Meta, m) {
  m.impl("crop_resize", &lse::torch_ops::crop_resize_meta);
  m.impl("crop_resize_backward", &lse::torch_ops::crop_resize_backward_meta);
  m.impl("crop_resize_meta", &lse::torch_ops::crop_resize_meta);
  m.impl("crop_resize_backward_meta", &lse::torch_ops::crop_resize_backward_meta);
}

TORCH_LIBRARY_IMPL(lse_fast, CPU, m) {
  m.impl("crop_resize", &lse::torch_ops::crop_resize_kernel);
  m.impl("crop_resize_backward", &lse::torch_ops::crop_resize_backward_kernel);
}
