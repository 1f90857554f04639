// The one dtype dispatch of every kernel, CPU and CUDA: calls f(Type<T>{})
// with T the index-th type of a list, so a launcher or glue site names its
// type list once instead of writing a switch. Torch-free (the glue maps
// at::ScalarType onto FloatKind or another index first).
//
//   dispatch_float(kind, [&](auto tag) {
//     using T = typename decltype(tag)::type;  // float, half_t, bfloat16_t, double
//     run<T>(...);
//   });
#pragma once

#include <cstdint>
#include <utility>

#include "core/platform.h"

namespace lse {

template <typename T>
struct Type {
  using type = T;
};

// f(Type<Ts[index]>{}); index must lie in [0, sizeof...(Ts)) (the glue's
// checks guarantee it; a larger index selects the last type).
template <typename First, typename... Rest, typename F>
decltype(auto) dispatch_type(int index, F&& f) {
  if constexpr (sizeof...(Rest) > 0) {
    if (index != 0) return dispatch_type<Rest...>(index - 1, std::forward<F>(f));
  }
  return std::forward<F>(f)(Type<First>{});
}

// The element types of FloatKind, in its order.
template <typename F>
decltype(auto) dispatch_float(FloatKind kind, F&& f) {
  return dispatch_type<float, half_t, bfloat16_t, double>(static_cast<int>(kind), std::forward<F>(f));
}

// Unsigned storage of an element of element_size bytes (1, 2, 4 or 8): the
// bit-for-bit copies of nearest resampling.
template <typename F>
decltype(auto) dispatch_bits(int element_size, F&& f) {
  const int index = element_size == 1 ? 0 : element_size == 2 ? 1 : element_size == 4 ? 2 : 3;
  return dispatch_type<uint8_t, uint16_t, uint32_t, uint64_t>(index, std::forward<F>(f));
}

}  // namespace lse
