// CUDA kernels of crop_resize and its backward. Same tap math as the CPU
// kernels (core/resample.h). One thread per output pixel, looping over the
// channels with the pixel's taps computed once; consecutive threads write
// consecutive output columns.
#include "cuda/crop_resize_cuda_kernel.h"

#include "core/dispatch.h"
#include "cuda/launch.h"

namespace lse::cuda {
namespace {

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


}  // namespace

cudaError_t crop_bilinear_launch(const void* input, FloatKind kind, const CropImage& image,
                                 const float* boxes, int64_t k, int64_t oh, int64_t ow,
                                 bool align_corners, void* out, cudaStream_t stream) {
  const int64_t total = k * oh * ow;  // one thread per output pixel, all channels
  if (total == 0 || image.c == 0) return cudaSuccess;
  const CropBoxes b{boxes, k};
  dispatch_float(kind, [&](auto tag) {
    using T = typename decltype(tag)::type;
    crop_bilinear_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
        static_cast<const T*>(input), image, b, oh, ow, align_corners, static_cast<T*>(out), total);
  });
  return cudaGetLastError();
}

cudaError_t crop_nearest_launch(const void* input, int element_size, const CropImage& image,
                                const float* boxes, int64_t k, int64_t oh, int64_t ow, void* out,
                                cudaStream_t stream) {
  const int64_t total = k * oh * ow;  // one thread per output pixel, all channels
  if (total == 0 || image.c == 0) return cudaSuccess;
  if (element_size != 1 && element_size != 2 && element_size != 4 && element_size != 8) {
    return cudaErrorInvalidValue;
  }
  const CropBoxes b{boxes, k};
  dispatch_bits(element_size, [&](auto tag) {
    using E = typename decltype(tag)::type;
    crop_nearest_kernel<<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const E*>(input), image, b, oh,
                                                                    ow, static_cast<E*>(out), total);
  });
  return cudaGetLastError();
}

cudaError_t crop_backward_launch(const void* grad_out, FloatKind kind, const CropImage& g,
                                 const float* boxes, int64_t k, int64_t oh, int64_t ow, bool nearest,
                                 bool align_corners, void* grad_in, cudaStream_t stream) {
  const int64_t total = k * oh * ow;  // one thread per output pixel, all channels
  if (total == 0 || g.c == 0) return cudaSuccess;
  const CropBoxes b{boxes, k};
  dispatch_float(kind, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    crop_backward_kernel<<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const T*>(grad_out), g, b, oh, ow,
                                                                     nearest, align_corners, static_cast<A*>(grad_in),
                                                                     total);
  });
  return cudaGetLastError();
}

}  // namespace lse::cuda
