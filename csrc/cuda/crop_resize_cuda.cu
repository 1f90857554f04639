// CUDA kernels of the crop ops. Same tap math as the CPU kernels
// (core/crop_math.h). One thread per output pixel, looping over the
// channels with the pixel's taps computed once; consecutive threads write
// consecutive output columns.
#include "cuda/crop_resize_cuda.h"

#include <type_traits>

namespace lse::cuda {
namespace {

constexpr int kThreads = 256;

unsigned int blocks_for(int64_t count) {
  return static_cast<unsigned int>((count + kThreads - 1) / kThreads);
}

// One thread per output pixel (k, oy, ox): its taps are computed once and
// reused for every channel (the taps are the costly part; the channel loop
// is two loads and three FMAs per tap pair). Consecutive threads write
// consecutive output columns of each channel plane.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    crop_bilinear_kernel(const T* __restrict__ input, CropImage g, CropBoxes boxes, int64_t oh,
                         int64_t ow, bool align_corners, T* __restrict__ out, int64_t total) {
  using A = acc_t<T>;
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= total) return;
  const int64_t ox = i % ow, oy = (i / ow) % oh, k = i / (ow * oh);
  const LinearTap ty = linear_tap(boxes.y_axis(k, oh, g.h, align_corners), oy);
  const LinearTap tx = linear_tap(boxes.x_axis(k, ow, g.w, align_corners), ox);
  const T* image = input + boxes.image(k) * g.stride_n;
  const int64_t o00 = ty.i0 * g.stride_h + tx.i0 * g.stride_w, o01 = ty.i0 * g.stride_h + tx.i1 * g.stride_w;
  const int64_t o10 = ty.i1 * g.stride_h + tx.i0 * g.stride_w, o11 = ty.i1 * g.stride_h + tx.i1 * g.stride_w;
  const int64_t plane = oh * ow;
  T* dst = out + k * g.c * plane + oy * ow + ox;
  for (int64_t c = 0; c < g.c; ++c) {
    const T* p = image + c * g.stride_c;
    dst[c * plane] = from_acc<T>(bilinear_blend<A>(ty.l1, tx.l1, A(to_acc(p[o00])), A(to_acc(p[o01])),
                                                   A(to_acc(p[o10])), A(to_acc(p[o11]))));
  }
}

template <typename E>
__global__ void __launch_bounds__(kThreads)
    crop_nearest_kernel(const E* __restrict__ input, CropImage g, CropBoxes boxes, int64_t oh,
                        int64_t ow, E* __restrict__ out, int64_t total) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= total) return;
  const int64_t ox = i % ow, oy = (i / ow) % oh, k = i / (ow * oh);
  const int64_t y = nearest_tap(boxes.y_axis(k, oh, g.h, false), oy);
  const int64_t x = nearest_tap(boxes.x_axis(k, ow, g.w, false), ox);
  const E* src = input + boxes.image(k) * g.stride_n + y * g.stride_h + x * g.stride_w;
  const int64_t plane = oh * ow;
  E* dst = out + k * g.c * plane + oy * ow + ox;
  for (int64_t c = 0; c < g.c; ++c) dst[c * plane] = src[c * g.stride_c];
}

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    crop_backward_kernel(const T* __restrict__ grad_out, CropImage g, CropBoxes boxes, int64_t oh,
                         int64_t ow, bool nearest, bool align_corners, A* __restrict__ grad_in,
                         int64_t total) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= total) return;
  const int64_t ox = i % ow, oy = (i / ow) % oh, k = i / (ow * oh);
  A* image = grad_in + boxes.image(k) * g.stride_n;
  const int64_t plane = oh * ow;
  const T* src = grad_out + k * g.c * plane + oy * ow + ox;
  if (nearest) {
    const int64_t y = nearest_tap(boxes.y_axis(k, oh, g.h, false), oy);
    const int64_t x = nearest_tap(boxes.x_axis(k, ow, g.w, false), ox);
    A* d = image + y * g.stride_h + x * g.stride_w;
    for (int64_t c = 0; c < g.c; ++c) atomicAdd(d + c * g.stride_c, A(to_acc(src[c * plane])));
    return;
  }
  const LinearTap ty = linear_tap(boxes.y_axis(k, oh, g.h, align_corners), oy);
  const LinearTap tx = linear_tap(boxes.x_axis(k, ow, g.w, align_corners), ox);
  const A l1y = ty.l1, l0y = A(1) - A(ty.l1), l1x = tx.l1, l0x = A(1) - A(tx.l1);
  const A w00 = l0y * l0x, w01 = l0y * l1x, w10 = l1y * l0x, w11 = l1y * l1x;
  const int64_t o00 = ty.i0 * g.stride_h + tx.i0 * g.stride_w, o01 = ty.i0 * g.stride_h + tx.i1 * g.stride_w;
  const int64_t o10 = ty.i1 * g.stride_h + tx.i0 * g.stride_w, o11 = ty.i1 * g.stride_h + tx.i1 * g.stride_w;
  for (int64_t c = 0; c < g.c; ++c) {
    A* p = image + c * g.stride_c;
    const A v = A(to_acc(src[c * plane]));
    atomicAdd(p + o00, w00 * v);
    atomicAdd(p + o01, w01 * v);
    atomicAdd(p + o10, w10 * v);
    atomicAdd(p + o11, w11 * v);
  }
}

struct PseudoLabelGeometry {
  int64_t c, h, w, image_h, image_w, oh, ow;
};

// The CPU kernel's arithmetic per pixel: label = argmax over classes of
// sum_a wy[a] * (sum_b wx[b] * p[c, ry[a], rx[b]]); filter from the
// upsampled probabilities at the nearest full-resolution pixel. The filter
// is decided first, so its taps are dead before the label's are live (fewer
// registers), and a filtered pixel skips the label loop. Offsets are in
// Index (int32 when a probability plane has fewer than 2^31 elements).
template <typename Index>
__global__ void __launch_bounds__(kThreads)
    crop_pseudo_labels_kernel(const float* __restrict__ probs, PseudoLabelGeometry g, CropBoxes boxes,
                              const float* __restrict__ thresholds, uint8_t ignore_index,
                              uint8_t* __restrict__ out, int64_t total) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= total) return;
  const int64_t ox = i % g.ow, oy = (i / g.ow) % g.oh, k = i / (g.ow * g.oh);
  const Index plane = static_cast<Index>(g.h * g.w);
  const float* image = probs + boxes.image(k) * g.c * static_cast<int64_t>(plane);
  const CropAxis up_y = upsample_axis(g.h, g.image_h);
  const CropAxis up_x = upsample_axis(g.w, g.image_w);
  const CropAxis cy = boxes.y_axis(k, g.oh, g.image_h, false);
  const CropAxis cx = boxes.x_axis(k, g.ow, g.image_w, false);

  {
    const LinearTap fy = linear_tap(up_y, nearest_tap(cy, oy));
    const LinearTap fx = linear_tap(up_x, nearest_tap(cx, ox));
    const Index r0 = static_cast<Index>(fy.i0 * g.w), r1 = static_cast<Index>(fy.i1 * g.w);
    const Index x0 = static_cast<Index>(fx.i0), x1 = static_cast<Index>(fx.i1);
    float fmax = -1.0f, ent = 0.0f;
    int farg = 0;
    const float* p = image;
    for (int64_t c = 0; c < g.c; ++c, p += plane) {
      const float v = bilinear_blend<float>(fy.l1, fx.l1, p[r0 + x0], p[r0 + x1], p[r1 + x0], p[r1 + x1]);
      if (v > fmax) fmax = v, farg = static_cast<int>(c);
      ent += entropy_term(v);
    }
    const float e = g.c > 1 ? ent / log_normal(static_cast<float>(g.c)) : 0.0f;
    if (!(e <= thresholds[farg])) {
      out[i] = ignore_index;
      return;
    }
  }

  const LinearTap ty = linear_tap(cy, oy), tx = linear_tap(cx, ox);
  const ComposedTaps rows = compose_taps(ty, linear_tap(up_y, ty.i0), linear_tap(up_y, ty.i1));
  const ComposedTaps cols = compose_taps(tx, linear_tap(up_x, tx.i0), linear_tap(up_x, tx.i1));
  Index row_off[4], col_off[4];
#pragma unroll
  for (int a = 0; a < 4; ++a) {
    row_off[a] = static_cast<Index>(rows.idx[a] * g.w);
    col_off[a] = static_cast<Index>(cols.idx[a]);
  }
  float best = -INFINITY;
  int label = 0;
  const float* p = image;
  for (int64_t c = 0; c < g.c; ++c, p += plane) {
    float h[4];
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const float* r = p + row_off[a];
      h[a] = four_tap_sum(cols.w, r[col_off[0]], r[col_off[1]], r[col_off[2]], r[col_off[3]]);
    }
    const float v = four_tap_sum(rows.w, h[0], h[1], h[2], h[3]);
    if (v > best) best = v, label = static_cast<int>(c);
  }
  out[i] = static_cast<uint8_t>(label);
}

}  // namespace

cudaError_t crop_bilinear_launch(const void* input, FloatKind kind, const CropImage& image,
                                 const float* boxes, int64_t k, int64_t oh, int64_t ow,
                                 bool align_corners, void* out, cudaStream_t stream) {
  const int64_t total = k * oh * ow;  // one thread per output pixel, all channels
  if (total == 0 || image.c == 0) return cudaSuccess;
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
  const int64_t total = k * oh * ow;  // one thread per output pixel, all channels
  if (total == 0 || image.c == 0) return cudaSuccess;
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
  const int64_t total = k * oh * ow;  // one thread per output pixel, all channels
  if (total == 0 || g.c == 0) return cudaSuccess;
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
  if (h * w <= INT32_MAX) {
    crop_pseudo_labels_kernel<int32_t><<<blocks_for(total), kThreads, 0, stream>>>(
        probs, g, CropBoxes{boxes, k}, thresholds, ignore_index, out, total);
  } else {
    crop_pseudo_labels_kernel<int64_t><<<blocks_for(total), kThreads, 0, stream>>>(
        probs, g, CropBoxes{boxes, k}, thresholds, ignore_index, out, total);
  }
  return cudaGetLastError();
}

}  // namespace lse::cuda
