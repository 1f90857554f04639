// CUDA kernels of the crop ops. Same tap math as the CPU kernels
// (core/crop_math.h). One thread per output element (pixel for the
// pseudo-labels); consecutive threads write consecutive output columns.
#include "cuda/crop_resize_cuda.h"

#include <type_traits>

namespace lse::cuda {
namespace {

constexpr int kThreads = 256;

unsigned int blocks_for(int64_t count) {
  return static_cast<unsigned int>((count + kThreads - 1) / kThreads);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    crop_bilinear_kernel(const T* __restrict__ input, CropImage g, CropBoxes boxes, int64_t oh,
                         int64_t ow, bool align_corners, T* __restrict__ out, int64_t total) {
  using A = acc_t<T>;
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= total) return;
  const int64_t ox = i % ow, oy = (i / ow) % oh, c = (i / (ow * oh)) % g.c, k = i / (ow * oh * g.c);
  const LinearTap ty = linear_tap(boxes.y_axis(k, oh, g.h, align_corners), oy);
  const LinearTap tx = linear_tap(boxes.x_axis(k, ow, g.w, align_corners), ox);
  const T* plane = input + boxes.image(k) * g.stride_n + c * g.stride_c;
  const T* r0 = plane + ty.i0 * g.stride_h;
  const T* r1 = plane + ty.i1 * g.stride_h;
  const int64_t x0 = tx.i0 * g.stride_w, x1 = tx.i1 * g.stride_w;
  out[i] = from_acc<T>(bilinear_blend<A>(ty.l1, tx.l1, A(to_acc(r0[x0])), A(to_acc(r0[x1])),
                                         A(to_acc(r1[x0])), A(to_acc(r1[x1]))));
}

template <typename E>
__global__ void __launch_bounds__(kThreads)
    crop_nearest_kernel(const E* __restrict__ input, CropImage g, CropBoxes boxes, int64_t oh,
                        int64_t ow, E* __restrict__ out, int64_t total) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= total) return;
  const int64_t ox = i % ow, oy = (i / ow) % oh, c = (i / (ow * oh)) % g.c, k = i / (ow * oh * g.c);
  const int64_t y = nearest_tap(boxes.y_axis(k, oh, g.h, false), oy);
  const int64_t x = nearest_tap(boxes.x_axis(k, ow, g.w, false), ox);
  out[i] = input[boxes.image(k) * g.stride_n + c * g.stride_c + y * g.stride_h + x * g.stride_w];
}

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    crop_backward_kernel(const T* __restrict__ grad_out, CropImage g, CropBoxes boxes, int64_t oh,
                         int64_t ow, bool nearest, bool align_corners, A* __restrict__ grad_in,
                         int64_t total) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= total) return;
  const int64_t ox = i % ow, oy = (i / ow) % oh, c = (i / (ow * oh)) % g.c, k = i / (ow * oh * g.c);
  A* plane = grad_in + boxes.image(k) * g.stride_n + c * g.stride_c;
  const A v = A(to_acc(grad_out[i]));
  if (nearest) {
    const int64_t y = nearest_tap(boxes.y_axis(k, oh, g.h, false), oy);
    const int64_t x = nearest_tap(boxes.x_axis(k, ow, g.w, false), ox);
    atomicAdd(plane + y * g.stride_h + x * g.stride_w, v);
    return;
  }
  const LinearTap ty = linear_tap(boxes.y_axis(k, oh, g.h, align_corners), oy);
  const LinearTap tx = linear_tap(boxes.x_axis(k, ow, g.w, align_corners), ox);
  const A l1y = ty.l1, l0y = A(1) - A(ty.l1), l1x = tx.l1, l0x = A(1) - A(tx.l1);
  A* r0 = plane + ty.i0 * g.stride_h;
  A* r1 = plane + ty.i1 * g.stride_h;
  atomicAdd(r0 + tx.i0 * g.stride_w, l0y * l0x * v);
  atomicAdd(r0 + tx.i1 * g.stride_w, l0y * l1x * v);
  atomicAdd(r1 + tx.i0 * g.stride_w, l1y * l0x * v);
  atomicAdd(r1 + tx.i1 * g.stride_w, l1y * l1x * v);
}

struct PseudoLabelGeometry {
  int64_t c, h, w, image_h, image_w, oh, ow;
};

// The CPU kernel's arithmetic per pixel: label = argmax over classes of
// sum_a wy[a] * (sum_b wx[b] * p[c, ry[a], rx[b]]); filter from the
// upsampled probabilities at the nearest full-resolution pixel.
__global__ void __launch_bounds__(kThreads)
    crop_pseudo_labels_kernel(const float* __restrict__ probs, PseudoLabelGeometry g, CropBoxes boxes,
                              const float* __restrict__ thresholds, uint8_t ignore_index,
                              uint8_t* __restrict__ out, int64_t total) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= total) return;
  const int64_t ox = i % g.ow, oy = (i / g.ow) % g.oh, k = i / (g.ow * g.oh);
  const int64_t plane = g.h * g.w;
  const float* image = probs + boxes.image(k) * g.c * plane;
  const CropAxis up_y = make_crop_axis(0.0f, static_cast<float>(g.h), g.image_h, g.h, false);
  const CropAxis up_x = make_crop_axis(0.0f, static_cast<float>(g.w), g.image_w, g.w, false);
  const CropAxis cy = boxes.y_axis(k, g.oh, g.image_h, false);
  const CropAxis cx = boxes.x_axis(k, g.ow, g.image_w, false);

  const LinearTap ty = linear_tap(cy, oy), tx = linear_tap(cx, ox);
  const ComposedTaps rows = compose_taps(ty, linear_tap(up_y, ty.i0), linear_tap(up_y, ty.i1));
  const ComposedTaps cols = compose_taps(tx, linear_tap(up_x, tx.i0), linear_tap(up_x, tx.i1));
  float best = -INFINITY;
  int label = 0;
  for (int64_t c = 0; c < g.c; ++c) {
    const float* p = image + c * plane;
    float h[4];
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const float* r = p + rows.idx[a] * g.w;
      h[a] = four_tap_sum(cols.w, r[cols.idx[0]], r[cols.idx[1]], r[cols.idx[2]], r[cols.idx[3]]);
    }
    const float v = four_tap_sum(rows.w, h[0], h[1], h[2], h[3]);
    if (v > best) best = v, label = static_cast<int>(c);
  }

  const LinearTap fy = linear_tap(up_y, nearest_tap(cy, oy));
  const LinearTap fx = linear_tap(up_x, nearest_tap(cx, ox));
  float fmax = -1.0f, ent = 0.0f;
  int farg = 0;
  for (int64_t c = 0; c < g.c; ++c) {
    const float* r0 = image + c * plane + fy.i0 * g.w;
    const float* r1 = image + c * plane + fy.i1 * g.w;
    const float p = bilinear_blend<float>(fy.l1, fx.l1, r0[fx.i0], r0[fx.i1], r1[fx.i0], r1[fx.i1]);
    if (p > fmax) fmax = p, farg = static_cast<int>(c);
    ent += entropy_term(p);
  }
  const float e = g.c > 1 ? ent / log_normal(static_cast<float>(g.c)) : 0.0f;
  out[i] = e <= thresholds[farg] ? static_cast<uint8_t>(label) : ignore_index;
}

}  // namespace

cudaError_t crop_bilinear_launch(const void* input, FloatKind kind, const CropImage& image,
                                 const float* boxes, int64_t k, int64_t oh, int64_t ow,
                                 bool align_corners, void* out, cudaStream_t stream) {
  const int64_t total = k * image.c * oh * ow;
  if (total == 0) return cudaSuccess;
  const CropBoxes b{boxes, k};
  switch (kind) {
    case FloatKind::Float32:
      crop_bilinear_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
          static_cast<const float*>(input), image, b, oh, ow, align_corners, static_cast<float*>(out), total);
      break;
    case FloatKind::Float64:
      crop_bilinear_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
          static_cast<const double*>(input), image, b, oh, ow, align_corners, static_cast<double*>(out), total);
      break;
    case FloatKind::Float16:
      crop_bilinear_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
          static_cast<const half_t*>(input), image, b, oh, ow, align_corners, static_cast<half_t*>(out), total);
      break;
    case FloatKind::BFloat16:
      crop_bilinear_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
          static_cast<const bfloat16_t*>(input), image, b, oh, ow, align_corners,
          static_cast<bfloat16_t*>(out), total);
      break;
  }
  return cudaGetLastError();
}

cudaError_t crop_nearest_launch(const void* input, int element_size, const CropImage& image,
                                const float* boxes, int64_t k, int64_t oh, int64_t ow, void* out,
                                cudaStream_t stream) {
  const int64_t total = k * image.c * oh * ow;
  if (total == 0) return cudaSuccess;
  const CropBoxes b{boxes, k};
  const unsigned int blocks = blocks_for(total);
  switch (element_size) {
    case 1:
      crop_nearest_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint8_t*>(input), image, b, oh, ow,
                                                           static_cast<uint8_t*>(out), total);
      break;
    case 2:
      crop_nearest_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint16_t*>(input), image, b, oh, ow,
                                                           static_cast<uint16_t*>(out), total);
      break;
    case 4:
      crop_nearest_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint32_t*>(input), image, b, oh, ow,
                                                           static_cast<uint32_t*>(out), total);
      break;
    case 8:
      crop_nearest_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint64_t*>(input), image, b, oh, ow,
                                                           static_cast<uint64_t*>(out), total);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t crop_backward_launch(const void* grad_out, FloatKind kind, const CropImage& g,
                                 const float* boxes, int64_t k, int64_t oh, int64_t ow, bool nearest,
                                 bool align_corners, void* grad_in, cudaStream_t stream) {
  const int64_t total = k * g.c * oh * ow;
  if (total == 0) return cudaSuccess;
  const CropBoxes b{boxes, k};
  const unsigned int blocks = blocks_for(total);
  switch (kind) {
    case FloatKind::Float32:
      crop_backward_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const float*>(grad_out), g, b, oh, ow,
                                                            nearest, align_corners, static_cast<float*>(grad_in), total);
      break;
    case FloatKind::Float64:
      crop_backward_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const double*>(grad_out), g, b, oh, ow,
                                                            nearest, align_corners, static_cast<double*>(grad_in), total);
      break;
    case FloatKind::Float16:
      crop_backward_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const half_t*>(grad_out), g, b, oh, ow,
                                                            nearest, align_corners, static_cast<float*>(grad_in), total);
      break;
    case FloatKind::BFloat16:
      crop_backward_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const bfloat16_t*>(grad_out), g, b, oh, ow,
                                                            nearest, align_corners, static_cast<float*>(grad_in), total);
      break;
  }
  return cudaGetLastError();
}

cudaError_t crop_pseudo_labels_launch(const float* probs, int64_t n, int64_t c, int64_t h, int64_t w,
                                      int64_t image_h, int64_t image_w, const float* boxes, int64_t k,
                                      int64_t oh, int64_t ow, const float* thresholds,
                                      uint8_t ignore_index, uint8_t* out, cudaStream_t stream) {
  const int64_t total = k * oh * ow;
  if (total == 0) return cudaSuccess;
  (void)n;
  const PseudoLabelGeometry g{c, h, w, image_h, image_w, oh, ow};
  crop_pseudo_labels_kernel<<<blocks_for(total), kThreads, 0, stream>>>(probs, g, CropBoxes{boxes, k}, thresholds,
                                                                        ignore_index, out, total);
  return cudaGetLastError();
}

}  // namespace lse::cuda
