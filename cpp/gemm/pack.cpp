// Packing into micro-panels. Packed panels make every microkernel load unit-stride and aligned,
// put a whole KC-deep micro-panel in consecutive cache lines (so the hardware prefetcher streams
// it), and zero-pad the edges so the kernel never needs a bounds check on a packed operand.
#include "gemm/pack.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "gemm/microkernel.h"

namespace fusegrad {
namespace FG_ISA_NS {

void pack_a(const float* a, int64_t rs, int64_t cs, int64_t m, int64_t k, float* dst) {
  for (int64_t i0 = 0; i0 < m; i0 += kMR, dst += kMR * k) {
    const int live = static_cast<int>(std::min<int64_t>(kMR, m - i0));
    const float* src = a + i0 * rs;
    if (rs == 1 && live == kMR) {
      // Column-major A (a transposed view): each k step is MR consecutive floats.
      for (int64_t p = 0; p < k; ++p) {
        const float* s = src + p * cs;
        float* d = dst + p * kMR;
#pragma GCC unroll 16
        for (int r = 0; r < kMR; ++r) d[r] = s[r];
      }
    } else if (cs == 1) {
      // Row-major A: a transpose. Row by row, reading each row once and unit-stride; the writes
      // are strided by MR floats but all land in the panel, which stays in L1.
      for (int r = 0; r < live; ++r) {
        const float* s = src + r * rs;
        float* d = dst + r;
        for (int64_t p = 0; p < k; ++p) d[p * kMR] = s[p];
      }
      for (int r = live; r < kMR; ++r)
        for (int64_t p = 0; p < k; ++p) dst[p * kMR + r] = 0.0f;
    } else {
      for (int64_t p = 0; p < k; ++p)
        for (int r = 0; r < kMR; ++r) dst[p * kMR + r] = r < live ? src[r * rs + p * cs] : 0.0f;
    }
  }
}

void pack_b(const float* b, int64_t rs, int64_t cs, int64_t k, int64_t n, float* dst) {
  for (int64_t j0 = 0; j0 < n; j0 += kNR, dst += kNR * k) {
    const int live = static_cast<int>(std::min<int64_t>(kNR, n - j0));
    const float* src = b + j0 * cs;
    if (cs == 1) {
      // Row-major B: each k step is NR consecutive floats of one row.
      if (live == kNR) {
        for (int64_t p = 0; p < k; ++p) {
          const float* s = src + p * rs;
          float* d = dst + p * kNR;
#pragma GCC unroll 64
          for (int j = 0; j < kNR; ++j) d[j] = s[j];
        }
      } else {
        for (int64_t p = 0; p < k; ++p) {
          const float* s = src + p * rs;
          float* d = dst + p * kNR;
          for (int j = 0; j < kNR; ++j) d[j] = j < live ? s[j] : 0.0f;
        }
      }
    } else if (rs == 1) {
      // Column-major B (a transposed view): a transpose, column by column.
      for (int j = 0; j < live; ++j) {
        const float* s = src + j * cs;
        float* d = dst + j;
        for (int64_t p = 0; p < k; ++p) d[p * kNR] = s[p];
      }
      for (int j = live; j < kNR; ++j)
        for (int64_t p = 0; p < k; ++p) dst[p * kNR + j] = 0.0f;
    } else {
      for (int64_t p = 0; p < k; ++p)
        for (int j = 0; j < kNR; ++j) dst[p * kNR + j] = j < live ? src[p * rs + j * cs] : 0.0f;
    }
  }
}

PackBuffer::~PackBuffer() { std::free(data_); }

float* PackBuffer::get(int64_t floats) {
  if (floats > size_) {
    std::free(data_);
    data_ = nullptr;
    size_ = 0;
    // Rounded up to whole 4 KiB pages so that growing by a little reallocates rarely.
    const int64_t bytes = ((floats * 4 + 4095) / 4096) * 4096;
    data_ = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(bytes)));
    if (!data_) throw std::bad_alloc();
    size_ = bytes / 4;
  }
  return data_;
}

}  // namespace FG_ISA_NS
}  // namespace fusegrad
