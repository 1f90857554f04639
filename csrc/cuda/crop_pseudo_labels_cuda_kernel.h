// Torch-free CUDA launcher of crop_pseudo_labels. Boxes are float32 [K, 5]
// in device memory, already validated by the glue.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/resample.h"

namespace lse::cuda {

// Pseudo-labels [K, oh, ow] uint8 from contiguous float32 probs [N, C, h, w]
// of images of image_h x image_w pixels; thresholds float32 [C] on the device.
// align_corners: F.interpolate's flag of the upsampling and the bilinear crop.
cudaError_t crop_pseudo_labels_launch(const float* probs, int64_t n, int64_t c, int64_t h, int64_t w,
                                      int64_t image_h, int64_t image_w, const float* boxes, int64_t k,
                                      int64_t oh, int64_t ow, const float* thresholds,
                                      uint8_t ignore_index, bool align_corners, uint8_t* out,
                                      cudaStream_t stream);

}  // namespace lse::cuda
