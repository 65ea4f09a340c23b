// Packing into micro-panels. Packed panels make every microkernel load unit-stride and aligned,
// put a whole KC-deep micro-panel in consecutive cache lines (so the hardware prefetcher streams
// it), and zero-pad the edges so the kernel never needs a bounds check on a packed operand.
#include "gemm/pack.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "gemm/microkernel.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

#if defined(__AVX512F__)
// In-register transpose of a 16×16 block: r[i] holds row i on entry and column i on exit.
// Three rounds of shuffles: pairs of rows interleaved (unpack), then 4×4 blocks within each
// 128-bit lane (shuffle_ps), then the 128-bit lanes across the four groups (shuffle_f32x4).
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // u[4g + e]: rows 4g..4g+3 at column 4L + e of each 128-bit lane L.
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int e = 0; e < 4; ++e) {
    const __m512 even01 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x88);   // lanes 0, 2 of groups 0, 1
    const __m512 even23 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x88);
    const __m512 odd01 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xDD);    // lanes 1, 3
    const __m512 odd23 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xDD);
    r[e] = _mm512_shuffle_f32x4(even01, even23, 0x88);
    r[8 + e] = _mm512_shuffle_f32x4(even01, even23, 0xDD);
    r[4 + e] = _mm512_shuffle_f32x4(odd01, odd23, 0x88);
    r[12 + e] = _mm512_shuffle_f32x4(odd01, odd23, 0xDD);
  }
}

// Transposes `rows` (<= 16) unit-stride source lines of `k` floats (line i at src + i * ld) into
// k steps of `width` floats at dst + p * step (lines past `rows` written as zeros). This is the
// packing of a row-major A into MR-row panels and of a column-major B into NR-column panels.
inline void transpose_lines(const float* src, int64_t ld, int rows, int64_t k, float* dst,
                            int64_t step, int width) {
  const __mmask16 out_mask = static_cast<__mmask16>((1u << width) - 1u);
  __m512 r[16];
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_loadu_ps(src + i * ld + p) : _mm512_setzero_ps();
    transpose16(r);
    for (int q = 0; q < 16; ++q) _mm512_mask_storeu_ps(dst + (p + q) * step, out_mask, r[q]);
  }
  if (p < k) {
    const int rem = static_cast<int>(k - p);
    const __mmask16 in_mask = static_cast<__mmask16>((1u << rem) - 1u);
    for (int i = 0; i < 16; ++i)
      r[i] = i < rows ? _mm512_maskz_loadu_ps(in_mask, src + i * ld + p) : _mm512_setzero_ps();
    transpose16(r);
    for (int q = 0; q < rem; ++q) _mm512_mask_storeu_ps(dst + (p + q) * step, out_mask, r[q]);
  }
}
#endif

// Column-major A (a transposed view): k step p of panel q is the MR consecutive floats at
// a + p * cs + q * MR. The k steps are the outer loop, so each source line is read once, whole,
// and split between the panels; panel by panel, a long stride (e.g. 2 KiB, the gate gradients of
// an LSTM's weight-gradient GEMM) would map every line of a panel to a few L1 sets and re-read
// each line from L2 once per panel.
void pack_a_column_major(const float* a, int64_t cs, int64_t m, int64_t k, float* dst) {
  const int64_t full = m / kMR;
  const int tail = static_cast<int>(m - full * kMR);
  for (int64_t p = 0; p < k; ++p) {
    const float* s = a + p * cs;
    float* d = dst + p * kMR;
    for (int64_t q = 0; q < full; ++q, s += kMR, d += kMR * k) std::memcpy(d, s, kMR * sizeof(float));
    if (tail)
      for (int r = 0; r < kMR; ++r) d[r] = r < tail ? s[r] : 0.0f;
  }
}

}  // namespace

void pack_a(const float* a, int64_t rs, int64_t cs, int64_t m, int64_t k, float* dst) {
  if (rs == 1 && cs != 1) {
    pack_a_column_major(a, cs, m, k, dst);
    return;
  }
  for (int64_t i0 = 0; i0 < m; i0 += kMR, dst += kMR * k) {
    const int live = static_cast<int>(std::min<int64_t>(kMR, m - i0));
    const float* src = a + i0 * rs;
    if (cs == 1) {
#if defined(__AVX512F__)
      static_assert(kMR <= 16, "one 16x16 transpose per 16 k steps");
      transpose_lines(src, rs, live, k, dst, kMR, kMR);
      continue;
#endif
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
        for (int64_t p = 0; p < k; ++p) std::memcpy(dst + p * kNR, src + p * rs, kNR * sizeof(float));
      } else {
        for (int64_t p = 0; p < k; ++p) {
          const float* s = src + p * rs;
          float* d = dst + p * kNR;
          for (int j = 0; j < kNR; ++j) d[j] = j < live ? s[j] : 0.0f;
        }
      }
    } else if (rs == 1) {
#if defined(__AVX512F__)
      static_assert(kNR % 16 == 0, "whole 16x16 transposes per panel");
      for (int h = 0; h < kNR; h += 16)
        transpose_lines(src + h * cs, cs, std::max(0, std::min(16, live - h)), k, dst + h, kNR, 16);
      continue;
#endif
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
