// Packing of int8 weights (B, K×N) into the panel layout of int8_gemm.h, once per weight, with
// the column sums the zero-point correction needs. Compiled once: it runs once per weight, not
// per call, so it is written for clarity over speed.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "common/threads.h"
#include "gemm/int8_gemm.h"

namespace fusegrad {
namespace {

template <class T>
std::shared_ptr<T> aligned_zeroed(int64_t count) {
  const size_t bytes = ((static_cast<size_t>(count) * sizeof(T) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes == 0 ? 64 : bytes);
  return std::shared_ptr<T>(static_cast<T*>(p), [](T* q) { std::free(q); });
}

}  // namespace

Int8PackedWeight int8_pack_weight(const int8_t* b, int64_t k, int64_t n, int64_t rs, int64_t cs) {
  Int8PackedWeight w;
  w.k = k;
  w.n = n;
  w.k4 = (k + kInt8KGroup - 1) / kInt8KGroup * kInt8KGroup;
  w.panels = (n + kInt8PanelCols - 1) / kInt8PanelCols;
  w.data = aligned_zeroed<int8_t>(w.panels * w.panel_bytes() + kInt8PanelSlack);
  w.colsum = aligned_zeroed<int32_t>(w.panels * kInt8PanelCols);
  int8_t* data = w.data.get();
  int32_t* colsum = w.colsum.get();
  const int64_t panel_bytes = w.panel_bytes();
  parallel_for(w.panels, 16, [&](int64_t p0, int64_t p1) {
    for (int64_t jp = p0; jp < p1; ++jp) {
      int8_t* dst = data + jp * panel_bytes;
      const int64_t cols = std::min<int64_t>(kInt8PanelCols, n - jp * kInt8PanelCols);
      for (int64_t c = 0; c < cols; ++c) {
        const int8_t* src = b + (jp * kInt8PanelCols + c) * cs;
        int32_t sum = 0;
        for (int64_t p = 0; p < k; ++p) {
          const int8_t v = src[p * rs];
          dst[(p / 4) * 64 + c * 4 + (p % 4)] = v;
          sum += v;
        }
        colsum[jp * kInt8PanelCols + c] = sum;
      }
    }
  });
  return w;
}

}  // namespace fusegrad
