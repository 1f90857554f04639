// Torch-free CUDA launchers of crop_resize and its backward. Boxes are float32 [K, 5] in
// device memory, already validated by the glue.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/resample.h"
#include "core/platform.h"

namespace lse::cuda {

// Forward: out [K, C, oh, ow] contiguous, input with the strides of `image`.
// kind selects the element type of a bilinear resize.
cudaError_t crop_bilinear_launch(const void* input, FloatKind kind, const CropImage& image,
                                 const float* boxes, int64_t k, int64_t oh, int64_t ow,
                                 bool align_corners, void* out, cudaStream_t stream);

// Nearest copies elements of element_size bytes (1, 2, 4 or 8) bit for bit.
cudaError_t crop_nearest_launch(const void* input, int element_size, const CropImage& image,
                                const float* boxes, int64_t k, int64_t oh, int64_t ow, void* out,
                                cudaStream_t stream);

// Backward: adds grad_out [K, C, oh, ow] (contiguous, `kind`) into grad_in
// [N, C, H, W] (contiguous, zeroed by the caller; float, or double for
// Float64) with atomics.
cudaError_t crop_backward_launch(const void* grad_out, FloatKind kind, const CropImage& grad_in_geometry,
                                 const float* boxes, int64_t k, int64_t oh, int64_t ow, bool nearest,
                                 bool align_corners, void* grad_in, cudaStream_t stream);

}  // namespace lse::cuda
