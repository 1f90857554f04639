// Views of torch tensors in the torch-free core's terms.
#pragma once

#include <ATen/ATen.h>

#include "core/geometry.h"
#include "core/platform.h"

namespace lse::torch_ops {

// The [N, C, H, W] geometry of `t`, with H and W fused where the strides allow.
inline PixelGeometry pixel_geometry(const at::Tensor& t) {
  const int64_t sizes[4] = {t.size(0), t.size(1), t.size(2), t.size(3)};
  const int64_t strides[4] = {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
  return make_pixel_geometry(sizes, strides);
}

inline FloatKind float_kind(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return FloatKind::Float32;
    case at::kHalf: return FloatKind::Float16;
    case at::kBFloat16: return FloatKind::BFloat16;
    case at::kDouble: return FloatKind::Float64;
    default: TORCH_CHECK(false, "lse_fast: unsupported dtype ", t);
  }
}

}  // namespace lse::torch_ops
