// CUDA kernels of the fused focal + CE loss. Same per-pixel math as the CPU
// kernel (core/focal_math.h). One thread per pixel; consecutive threads read
// consecutive pixels of a class plane (coalesced for NCHW) and write the
// gradient in NCHW order. Loss sums are reduced per block (warp shuffles,
// then shared memory) and added to global memory with one atomic per block.
#include "cuda/focal_ce_loss_cuda_kernel.h"

#include <type_traits>

#include "core/dispatch.h"
#include "core/focal_math.h"

namespace lse::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

template <typename V>
__device__ __forceinline__ V block_sum(V v, V* shared /* [kThreads / 32] */) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  V total = V(0);
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
  }
  return total;  // valid in thread 0
}

template <typename Tgt, typename W>
__global__ void __launch_bounds__(kThreads)
    count_targets_kernel(const Tgt* __restrict__ target, int64_t pixels, int64_t ignore_index,
                         int64_t num_classes, unsigned long long* valid,
                         unsigned long long* first_bad, const W* __restrict__ class_weight,
                         double* weight_sum) {
  __shared__ unsigned long long partial[kThreads / 32];
  __shared__ double partial_w[kThreads / 32];
  unsigned long long count = 0;
  double wsum = 0.0;
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  for (int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x; i < pixels; i += stride) {
    const int64_t t = static_cast<int64_t>(target[i]);
    const bool in_range = t >= 0 && t < num_classes;
    if (in_range && t != ignore_index) {
      ++count;
      if (class_weight != nullptr) wsum += static_cast<double>(class_weight[t]);
    }
    if (!in_range && t != ignore_index) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
  const unsigned long long total = block_sum(count, partial);
  if (threadIdx.x == 0 && total != 0) atomicAdd(valid, total);
  if (class_weight != nullptr) {
    const double wtotal = block_sum(wsum, partial_w);
    // NaN and negative sums are added too (they must propagate).
    if (threadIdx.x == 0) atomicAdd(weight_sum, wtotal);
  }
}

template <typename T, typename Tgt>
__global__ void __launch_bounds__(kThreads)
    focal_ce_kernel(const T* __restrict__ logits, PixelGeometry g, const Tgt* __restrict__ target,
                    double gamma_d, double beta_d, double ce_weight_d, int64_t ignore_index,
                    bool mean, double grad_scale, const unsigned long long* __restrict__ valid,
                    const double* __restrict__ weight_sum, const acc_t<T>* __restrict__ class_weight,
                    const acc_t<T>* __restrict__ pixel_weight, void* loss_per_pixel,
                    T* __restrict__ grad, double* loss_sum) {
  using A = acc_t<T>;
  __shared__ double partial[kThreads / 32];
  const A gamma = static_cast<A>(gamma_d), beta = static_cast<A>(beta_d);
  const A ce_weight = static_cast<A>(ce_weight_d);
  const int64_t pixels = g.rows * g.cols;
  const int64_t gp = int64_t{blockIdx.x} * kThreads + threadIdx.x;  // flat pixel over the batch
  const int num_classes = static_cast<int>(g.c);

  double my_loss = 0.0;
  if (gp < g.n * pixels) {
    const int64_t n = gp / pixels;
    const int64_t q = gp - n * pixels;
    const T* x = logits + n * g.stride_n + g.pixel_offset(q);
    const int32_t cls = focal_class(target[gp], ignore_index, g.c);

    A m = to_acc(*x), xt = m;
#pragma unroll 4
    for (int c = 1; c < num_classes; ++c) {
      const A v = to_acc(x[c * g.stride_c]);
      m = v > m ? v : m;
      xt = c == cls ? v : xt;
    }
    A s = A(0);
#pragma unroll 4
    for (int c = 0; c < num_classes; ++c) s += exp_nonpos_t(to_acc(x[c * g.stride_c]) - m);
    const FocalTerms<A> f = focal_terms<A>(focal_log_pt(xt, m, s), gamma, beta, ce_weight);
    const bool is_valid = cls >= 0;
    A w = (class_weight != nullptr && is_valid) ? class_weight[cls] : A(1);
    if (pixel_weight != nullptr) w *= pixel_weight[gp];
    const A loss = is_valid ? w * f.loss : A(0);
    my_loss = static_cast<double>(loss);
    if (loss_per_pixel != nullptr) static_cast<A*>(loss_per_pixel)[gp] = loss;
    if (grad != nullptr) {
      A scale = static_cast<A>(grad_scale);
      if (mean) {
        const unsigned long long count = *valid;
        const A divisor = weight_sum != nullptr ? static_cast<A>(*weight_sum) : static_cast<A>(count);
        scale = count > 0 ? A(1) / divisor : A(0);
      }
      const A coef = is_valid ? (w * f.dloss_dL) * scale : A(0);
      const A inv_s = A(1) / s;
      T* g_out = grad + n * g.c * pixels + q;
#pragma unroll 4
      for (int c = 0; c < num_classes; ++c) {
        const A p = exp_nonpos_t(to_acc(x[c * g.stride_c]) - m) * inv_s;
        const A delta = c == cls ? A(1) : A(0);
        g_out[int64_t{c} * pixels] = from_acc<T>(coef * (delta - p));
      }
    }
  }
  const double total = block_sum(my_loss, partial);
  if (threadIdx.x == 0 && total != 0.0) atomicAdd(loss_sum, total);
}

template <typename Tgt, typename W>
cudaError_t count_launch(const Tgt* target, int64_t pixels, int64_t ignore_index,
                         int64_t num_classes, unsigned long long* valid,
                         unsigned long long* first_bad, const W* class_weight,
                         double* weight_sum, cudaStream_t stream) {
  const int64_t blocks64 = (pixels + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(blocks64 < 4096 ? blocks64 : 4096);
  count_targets_kernel<Tgt, W><<<blocks, kThreads, 0, stream>>>(
      target, pixels, ignore_index, num_classes, valid, first_bad, class_weight, weight_sum);
  return cudaGetLastError();
}

template <typename T, typename Tgt>
cudaError_t loss_launch(const FocalCudaArgs& a, cudaStream_t stream) {
  const int64_t blocks = (a.geometry.n * a.geometry.rows * a.geometry.cols + kThreads - 1) / kThreads;
  if (blocks > INT32_MAX) return cudaErrorInvalidConfiguration;
  focal_ce_kernel<T, Tgt><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const T*>(a.logits), a.geometry, static_cast<const Tgt*>(a.target), a.gamma,
      a.beta, a.ce_weight, a.ignore_index, a.mean, a.grad_scale, a.valid, a.weight_sum,
      static_cast<const acc_t<T>*>(a.class_weight), static_cast<const acc_t<T>*>(a.pixel_weight),
      a.loss_per_pixel, static_cast<T*>(a.grad), a.loss_sum);
  return cudaGetLastError();
}

}  // namespace

cudaError_t focal_ce_count_targets_launch(const void* target, TargetKind kind, int64_t pixels,
                                          int64_t ignore_index, int64_t num_classes,
                                          unsigned long long* valid,
                                          unsigned long long* first_bad,
                                          const void* class_weight, bool weight_is_double,
                                          double* weight_sum, cudaStream_t stream) {
  if (pixels <= 0 || (class_weight != nullptr && weight_sum == nullptr)) return cudaErrorInvalidValue;
  cudaError_t err = cudaMemsetAsync(valid, 0, sizeof(unsigned long long), stream);
  if (err == cudaSuccess) err = cudaMemsetAsync(first_bad, 0xff, sizeof(unsigned long long), stream);
  if (err == cudaSuccess && weight_sum != nullptr) err = cudaMemsetAsync(weight_sum, 0, sizeof(double), stream);
  if (err != cudaSuccess) return err;
  return dispatch_target(kind, [&](auto tag) {
    using Tgt = typename decltype(tag)::type;
    const Tgt* t = static_cast<const Tgt*>(target);
    if (weight_is_double) {
      return count_launch(t, pixels, ignore_index, num_classes, valid, first_bad,
                          static_cast<const double*>(class_weight), weight_sum, stream);
    }
    return count_launch(t, pixels, ignore_index, num_classes, valid, first_bad,
                        static_cast<const float*>(class_weight), weight_sum, stream);
  });
}

cudaError_t focal_ce_cuda_launch(const FocalCudaArgs& args, cudaStream_t stream) {
  const PixelGeometry& g = args.geometry;
  if (g.c < 1 || g.c > INT32_MAX || g.n * g.rows * g.cols <= 0) return cudaErrorInvalidValue;
  const cudaError_t err = cudaMemsetAsync(args.loss_sum, 0, sizeof(double), stream);
  if (err != cudaSuccess) return err;
  return dispatch_float(args.kind, [&](auto tag) {
    return dispatch_target(args.target_kind, [&](auto target_tag) {
      return loss_launch<typename decltype(tag)::type, typename decltype(target_tag)::type>(args, stream);
    });
  });
}

}  // namespace lse::cuda
