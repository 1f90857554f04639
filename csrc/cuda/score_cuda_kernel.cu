// CUDA kernel of the fused scoring ops (score, score_probs). Same per-pixel
// math as the CPU kernel (core/score_math.h: ScoreAcc for logits, ProbAcc
// for probabilities), read directly or through the bilinear upsampling taps
// (core/resample.h, either align_corners) for the upsampled forms.
//
// Layout: thread i of a block handles pixels base + k * kThreads + i for
// k < kPixelsPerThread, so a warp reads 32 consecutive pixels of one class
// plane per load (coalesced for NCHW). Per-class sums go to shared memory
// (one warp-wide atomic when all 32 lanes predict the same class, which is
// the common case in segmentation maps, else one atomic per lane) and each
// block adds its C sums to global memory once, in double.
#include "cuda/score_cuda_kernel.h"

#include "core/dispatch.h"
#include "core/resample.h"
#include "core/score_math.h"

namespace lse::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPixelsPerThread = 8;
constexpr int64_t kPixelsPerBlock = int64_t{kThreads} * kPixelsPerThread;
constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__device__ __forceinline__ float load(const T* p) {
  return to_float(*p);
}
template <>
__device__ __forceinline__ float load<float>(const float* p) {
  return __ldg(p);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Scores of output pixel q: its class values read directly, or (kUpsample)
// each blended from its four low-resolution taps, computed once per pixel;
// through the online softmax (logits) or ProbAcc (kProbs, probabilities).
template <bool kProbs>
struct PixelAcc;
template <>
struct PixelAcc<false> {
  ScoreAcc acc;
  __device__ __forceinline__ void init(float x) { acc = score_init(x); }
  __device__ __forceinline__ void update(float x, int c) { score_update(acc, x, c); }
  __device__ __forceinline__ PixelScore finish(float inv_log_c) const { return score_finish(acc, inv_log_c); }
};
template <>
struct PixelAcc<true> {
  ProbAcc acc;
  __device__ __forceinline__ void init(float x) { acc = prob_init(x); }
  __device__ __forceinline__ void update(float x, int c) { prob_update(acc, x, c); }
  __device__ __forceinline__ PixelScore finish(float inv_log_c) const { return prob_finish(acc, inv_log_c); }
};

template <typename T, bool kUpsample, bool kProbs>
__device__ __forceinline__ PixelScore score_pixel(const T* image, const PixelGeometry& g,
                                                  const ScoreUpsample& up, int64_t q, float inv_log_c) {
  const int num_classes = static_cast<int>(g.c);
  if constexpr (kUpsample) {
    const int64_t row = q / g.cols;
    const LinearTap ty = linear_tap(up.y, row), tx = linear_tap(up.x, q - row * g.cols);
    const T* r0 = image + ty.i0 * up.stride_h;
    const T* r1 = image + ty.i1 * up.stride_h;
    const int64_t x0 = tx.i0 * up.stride_w, x1 = tx.i1 * up.stride_w;
    auto value = [&](int c) {
      const int64_t o = int64_t{c} * g.stride_c;
      return bilinear_blend_live<float>(ty.l1, tx.l1, load(r0 + o + x0), load(r0 + o + x1),
                                        load(r1 + o + x0), load(r1 + o + x1));
    };
    PixelAcc<kProbs> acc;
    acc.init(value(0));
#pragma unroll 2
    for (int c = 1; c < num_classes; ++c) acc.update(value(c), c);
    return acc.finish(inv_log_c);
  } else {
    const T* x = image + g.pixel_offset(q);
    PixelAcc<kProbs> acc;
    acc.init(load(x));
#pragma unroll 4
    for (int c = 1; c < num_classes; ++c) acc.update(load(x + c * g.stride_c), c);
    return acc.finish(inv_log_c);
  }
}

// Grid: blocks_per_image blocks per image (sized from the SM count by the
// launcher), each striding over the image's chunks of kPixelsPerBlock
// pixels. Per-class sums stay in shared memory (warp sums in float, block
// sums in double) and each block adds them to the zeroed workspace once;
// the last block to finish converts the workspace into the op's outputs, so
// one memset and this kernel are the whole launch.
template <typename T, bool kUpsample, bool kProbs>
__global__ void __launch_bounds__(kThreads)
    score_kernel(const T* __restrict__ logits, PixelGeometry g, ScoreUpsample up, int64_t blocks_per_image,
                 float inv_log_c, float* __restrict__ confidence, int64_t* __restrict__ label,
                 float* __restrict__ entropy, ScoreWorkspace ws, int64_t* __restrict__ class_pixels,
                 float* __restrict__ class_confidence, float* __restrict__ class_entropy) {
  extern __shared__ unsigned char smem_raw[];
  const int num_classes = static_cast<int>(g.c);
  double* s_conf = reinterpret_cast<double*>(smem_raw);
  double* s_ent = s_conf + num_classes;
  unsigned* s_count = reinterpret_cast<unsigned*>(s_ent + num_classes);
  for (int c = threadIdx.x; c < num_classes; c += kThreads) {
    s_conf[c] = 0.0, s_ent[c] = 0.0, s_count[c] = 0u;
  }
  __syncthreads();

  const int64_t n = blockIdx.x / blocks_per_image;
  const int64_t pixels = g.rows * g.cols;
  const int64_t chunks = (pixels + kPixelsPerBlock - 1) / kPixelsPerBlock;
  const T* image = logits + n * g.stride_n;
  const int lane = threadIdx.x & 31;

  for (int64_t chunk = blockIdx.x - n * blocks_per_image; chunk < chunks; chunk += blocks_per_image) {
    const int64_t first = chunk * kPixelsPerBlock;
    // Every lane runs every iteration (the bounds are block-uniform), so the
    // full-mask warp intrinsics below are safe; out-of-range lanes carry -1.
    for (int k = 0; k < kPixelsPerThread; ++k) {
      const int64_t q = first + int64_t{k} * kThreads + threadIdx.x;
      int cls = -1;
      float conf = 0.0f, ent = 0.0f;
      if (q < pixels) {
        const PixelScore r = score_pixel<T, kUpsample, kProbs>(image, g, up, q, inv_log_c);
        const int64_t out = n * pixels + q;
        confidence[out] = r.confidence;
        entropy[out] = r.entropy;
        label[out] = r.label;
        cls = r.label, conf = r.confidence, ent = r.entropy;
      }
      const int cls0 = __shfl_sync(kFullMask, cls, 0);
      if (__all_sync(kFullMask, cls == cls0 && cls >= 0)) {
        const float conf_sum = warp_sum(conf);
        const float ent_sum = warp_sum(ent);
        if (lane == 0) {
          atomicAdd(&s_conf[cls], static_cast<double>(conf_sum));
          atomicAdd(&s_ent[cls], static_cast<double>(ent_sum));
          atomicAdd(&s_count[cls], 32u);
        }
      } else if (cls >= 0) {
        atomicAdd(&s_conf[cls], static_cast<double>(conf));
        atomicAdd(&s_ent[cls], static_cast<double>(ent));
        atomicAdd(&s_count[cls], 1u);
      }
    }
  }
  __syncthreads();

  for (int c = threadIdx.x; c < num_classes; c += kThreads) {
    const unsigned count = s_count[c];
    if (count != 0u) {
      const int64_t i = n * num_classes + c;
      atomicAdd(&ws.pixels[i], static_cast<unsigned long long>(count));
      atomicAdd(&ws.confidence[i], s_conf[c]);
      atomicAdd(&ws.entropy[i], s_ent[c]);
    }
  }
  // Last block out: every block's sums are in the workspace (each block
  // fences its atomics before taking a ticket); convert them to the outputs.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(ws.done, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int64_t cells = g.n * num_classes;
  for (int64_t i = threadIdx.x; i < cells; i += kThreads) {
    class_pixels[i] = static_cast<int64_t>(__ldcg(&ws.pixels[i]));
    class_confidence[i] = static_cast<float>(__ldcg(&ws.confidence[i]));
    class_entropy[i] = static_cast<float>(__ldcg(&ws.entropy[i]));
  }
}

// Resident blocks of 256 threads per SM to aim for (2048 threads per SM on
// sm_80/sm_90), and the SM count of the current device (cached per device).
constexpr int kBlocksPerSm = 2048 / kThreads;

int sm_count() {
  static int cached[64] = {0};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 108;
  if (device < 0 || device >= 64) return 108;
  if (cached[device] == 0) {
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) sms = 108;
    cached[device] = sms;
  }
  return cached[device];
}

template <typename T, bool kProbs>
cudaError_t launch(const ScoreCudaArgs& a, cudaStream_t stream) {
  const PixelGeometry& g = a.geometry;
  const int64_t chunks = (g.rows * g.cols + kPixelsPerBlock - 1) / kPixelsPerBlock;
  // Enough blocks for about one full wave of the device, spread over the images.
  const int64_t wave = int64_t{sm_count()} * kBlocksPerSm;
  int64_t blocks_per_image = (wave + g.n - 1) / g.n;
  blocks_per_image = blocks_per_image < chunks ? blocks_per_image : chunks;
  blocks_per_image = blocks_per_image > 0 ? blocks_per_image : 1;
  const int64_t blocks = blocks_per_image * g.n;
  if (blocks > INT32_MAX) return cudaErrorInvalidConfiguration;
  const size_t smem = static_cast<size_t>(g.c) * (2 * sizeof(double) + sizeof(unsigned));
  const float inv_log_c = g.c > 1 ? static_cast<float>(1.0 / log(static_cast<double>(g.c))) : 0.0f;
  if (a.upsample != nullptr) {
    score_kernel<T, true, kProbs><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(
        static_cast<const T*>(a.logits), g, *a.upsample, blocks_per_image, inv_log_c, a.confidence,
        a.label, a.entropy, a.workspace, a.class_pixels, a.class_confidence, a.class_entropy);
  } else {
    score_kernel<T, false, kProbs><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(
        static_cast<const T*>(a.logits), g, ScoreUpsample{}, blocks_per_image, inv_log_c, a.confidence,
        a.label, a.entropy, a.workspace, a.class_pixels, a.class_confidence, a.class_entropy);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t score_cuda_launch(const ScoreCudaArgs& args, cudaStream_t stream) {
  const PixelGeometry& g = args.geometry;
  if (g.c < 1 || g.c > kScoreMaxClasses || g.n * g.rows * g.cols <= 0) return cudaErrorInvalidValue;
  const cudaError_t err = cudaMemsetAsync(args.workspace.pixels, 0, score_workspace_bytes(g.n, g.c), stream);
  if (err != cudaSuccess) return err;
  if (args.kind == FloatKind::Float64) return cudaErrorInvalidValue;  // the op takes 16/32-bit logits
  // FloatKind's first three types (Float64 is excluded above).
  return dispatch_type<float, half_t, bfloat16_t>(static_cast<int>(args.kind), [&](auto tag) {
    using T = typename decltype(tag)::type;
    return args.probs ? launch<T, true>(args, stream) : launch<T, false>(args, stream);
  });
}

}  // namespace lse::cuda
