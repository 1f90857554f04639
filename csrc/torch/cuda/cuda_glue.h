// Pieces of the CUDA glue shared by the ops (built only against a
// CUDA-enabled torch).
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

namespace lse::torch_ops {

// Boxes on `device`: as given when already there, else the validated host copy uploaded.
inline at::Tensor device_boxes(const at::Tensor& boxes, const at::Tensor& host_boxes, const at::Device& device) {
  return boxes.device() == device ? boxes.contiguous() : host_boxes.to(device);
}

inline void check_launch(const char* op, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, "lse_fast.", op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace lse::torch_ops
