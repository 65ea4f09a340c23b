// The pooled size along one axis: PyTorch's pooling_output_shape, shared by the CPU geometry
// (pool_geometry.cpp) and the CUDA bindings' last check. Header-only and free of ISA code, so
// nvcc compiles it too.
#pragma once
#include <cstdint>

namespace fusegrad {

// Outputs of pooling `in` positions padded by `pad` on each side with a window of `k` taps
// `dil` apart, stride `stride`; the caller has checked that the dilated window fits the padded
// input. ceil_mode rounds the last partial window in, unless it would start past the input and
// its left padding (PyTorch's rule: every window starts inside the input or the left padding).
inline int64_t pooled_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil, bool ceil_mode) {
  // Divisions rounded up without forming a + stride - 1, which a stride near 2^63 would overflow.
  const auto ceil_div = [stride](int64_t a) { return a / stride + (a % stride != 0); };
  const int64_t span = in + 2 * pad - dil * (k - 1) - 1;
  int64_t out = (ceil_mode ? ceil_div(span) : span / stride) + 1;
  if (ceil_mode && out - 1 >= ceil_div(in + pad)) --out;  // (out - 1) * stride >= in + pad
  return out;
}

}  // namespace fusegrad
