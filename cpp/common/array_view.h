// A strided array as an array library hands it over: its first element, shape and byte strides.
// Kernel-side code that must accept any layout (the GEMM's operands) takes these, so the layout
// policy lives with the kernels and the bindings only convert.
#pragma once
#include <cstdint>

namespace fusegrad {

constexpr int kMaxViewDims = 4;

struct ArrayView {
  void* data = nullptr;
  int ndim = 0;
  int64_t shape[kMaxViewDims] = {};
  int64_t strides[kMaxViewDims] = {};  // bytes; may be negative or zero
  int64_t itemsize = 4;

  int64_t size() const {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[d];
    return n;
  }
};

// The lowest and highest byte an array touches (nothing for an empty array: returns false).
inline bool byte_span(const ArrayView& v, intptr_t& lo, intptr_t& hi) {
  if (v.size() == 0) return false;
  lo = hi = reinterpret_cast<intptr_t>(v.data);
  for (int d = 0; d < v.ndim; ++d) {
    const intptr_t step = static_cast<intptr_t>(v.strides[d]) * (v.shape[d] - 1);
    (step < 0 ? lo : hi) += step;
  }
  hi += v.itemsize - 1;
  return true;
}

// Whether the byte ranges of two arrays intersect (conservative: views that interleave without
// sharing an element count as overlapping).
inline bool views_overlap(const ArrayView& a, const ArrayView& b) {
  intptr_t al, ah, bl, bh;
  if (!byte_span(a, al, ah) || !byte_span(b, bl, bh)) return false;
  return al <= bh && bl <= ah;
}

}  // namespace fusegrad
