// The loop shared by every elementwise kernel: y[i] = f(inputs at i) over n contiguous floats,
// vectorised, threaded in cache-line chunks, with masked tails.
//
// Outputs of 16 MiB and more (half the reference L3) are written with non-temporal stores: such an
// output cannot stay cached anyway, and streaming it saves the read-for-ownership of every line,
// a third of the traffic of a one-input map.
#pragma once
#include <cstdint>

#include "common/simd.h"
#include "common/threads.h"

namespace fusegrad {
namespace FG_ISA_NS {

constexpr int64_t kElementwiseGrain = 1 << 16;         // floats per thread before a 2nd is worth it
constexpr int64_t kStreamingStoreBytes = 16ll << 20;
constexpr int64_t kFloatsPerLine = 16;

// compute(i, width) returns the result vector for elements [i, i + width), loading its inputs
// with load() when width == kVecWidth and load_partial() otherwise.
template <class Compute>
void map_to(float* y, int64_t n, Compute compute) {
  const bool stream = n * 4 >= kStreamingStoreBytes && reinterpret_cast<uintptr_t>(y) % 4 == 0;
  const int64_t lines = (n + kFloatsPerLine - 1) / kFloatsPerLine;
  parallel_for(lines, kElementwiseGrain / kFloatsPerLine, [&](int64_t first, int64_t last) {
    const int64_t end = std::min(n, last * kFloatsPerLine);
    int64_t i = first * kFloatsPerLine;
    if (stream) {
      while (i < end && reinterpret_cast<uintptr_t>(y + i) % 64 != 0) {
        const int64_t to_aligned = (64 - reinterpret_cast<uintptr_t>(y + i) % 64) / 4;
        const int w = static_cast<int>(std::min<int64_t>({int64_t(kVecWidth), end - i, to_aligned}));
        store_partial(y + i, compute(i, w), w);
        i += w;
      }
      for (; i + kVecWidth <= end; i += kVecWidth) stream_store(y + i, compute(i, kVecWidth));
      stream_fence();
    } else {
      for (; i + kVecWidth <= end; i += kVecWidth) store(y + i, compute(i, kVecWidth));
    }
    if (i < end) {
      const int w = static_cast<int>(end - i);
      store_partial(y + i, compute(i, w), w);
    }
  });
}

// Loads `width` floats at p: a full vector or a masked partial one.
inline VecF load_n(const float* p, int width) {
  return width == kVecWidth ? load(p) : load_partial(p, width);
}

}  // namespace FG_ISA_NS
}  // namespace fusegrad
