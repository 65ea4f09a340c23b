// Packing for the bf16 GEMM's fast paths: operands of any strides, fp32 or bf16, into the panel
// layouts of bf16_gemm.h. fp32 is rounded to bf16 here, with vcvtne2ps2bf16 (round to nearest
// even, as bf16_from_float), so the rounding costs one instruction per 32 values of a pass over
// the operand that packing makes anyway. Unit-stride lines take vector paths; other strides
// (transposed views) a scalar path that reads along the operand's contiguous direction.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "gemm/bf16_kernels.h"

#if !defined(__AVX512BF16__)
#error "bf16_pack.cpp needs -mavx512bf16 (FG_EXTENSION_FLAGS_bf16_pack)"
#endif

namespace fusegrad {
namespace isa_avx512_ext {
namespace {

inline uint16_t to_bf16(float x) { return bf16_from_float(x); }
inline uint16_t to_bf16(uint16_t h) { return h; }

// Up to 32 elements of one unit-stride line as 32 bf16 (lanes past `count` zero).
inline __m512i load32(const float* src, int count) {
  const __mmask16 lo = static_cast<__mmask16>(count >= 16 ? 0xffffu : (1u << count) - 1u);
  const __mmask16 hi = static_cast<__mmask16>(count >= 32 ? 0xffffu : count <= 16 ? 0u : (1u << (count - 16)) - 1u);
  const __m512 l = _mm512_maskz_loadu_ps(lo, src), h = _mm512_maskz_loadu_ps(hi, src + 16);
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(h, l));
}
inline __m512i load32(const uint16_t* src, int count) {
  const __mmask32 mask = count >= 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << count) - 1u);
  return _mm512_maskz_loadu_epi16(mask, src);
}

// `count` elements of a line with element stride `step` as bf16 at dst.
template <class T>
void convert_line(const T* src, int64_t step, int64_t count, uint16_t* dst) {
  if (step == 1) {
    int64_t p = 0;
    for (; p + 32 <= count; p += 32) _mm512_storeu_si512(dst + p, load32(src + p, 32));
    if (p < count) {
      const int rest = static_cast<int>(count - p);
      _mm512_mask_storeu_epi16(dst + p, static_cast<__mmask32>((1ull << rest) - 1u), load32(src + p, rest));
    }
    return;
  }
  for (int64_t p = 0; p < count; ++p) dst[p] = to_bf16(src[p * step]);
}

// Thread-local staging line: one row of A or column of B, kp bf16.
uint16_t* staging(int64_t elements) {
  static thread_local std::vector<uint16_t> line;
  if (static_cast<int64_t>(line.size()) < elements) line.resize(static_cast<size_t>(elements));
  return line.data();
}

template <class T>
void pack_a_pairs(const T* a, int64_t rs, int64_t cs, int64_t m, int64_t k, int64_t kp, uint16_t* dst) {
  constexpr int MR = kBf16MRAvx512;
  for (int64_t i0 = 0; i0 < m; i0 += MR, dst += MR * kp) {
    const int live = static_cast<int>(std::min<int64_t>(MR, m - i0));
    const T* src = a + i0 * rs;
    if (live < MR || k < kp) std::memset(dst, 0, sizeof(uint16_t) * MR * kp);
    if (rs == 1 && cs != 1) {
      // Column-major A: each k step is `live` consecutive elements, converted as one vector.
      alignas(64) uint16_t step[32];
      for (int64_t p = 0; p < k; ++p) {
        _mm512_store_si512(step, load32(src + p * cs, live));
        for (int r = 0; r < live; ++r) dst[(p >> 1) * 2 * MR + 2 * r + (p & 1)] = step[r];
      }
      continue;
    }
    // Row by row through a staging line: each row converted unit-stride, then its dword pairs
    // spread MR dwords apart.
    uint16_t* line = staging(kp);
    uint32_t* d32 = reinterpret_cast<uint32_t*>(dst);
    for (int r = 0; r < live; ++r) {
      convert_line(src + r * rs, cs, k, line);
      std::memset(line + k, 0, sizeof(uint16_t) * (kp - k));  // the odd K's partner
      for (int64_t q = 0; q < kp / 2; ++q) {
        uint32_t pair;
        std::memcpy(&pair, line + 2 * q, 4);
        d32[q * MR + r] = pair;
      }
    }
  }
}

template <class T>
void pack_a_tiles(const T* a, int64_t rs, int64_t cs, int64_t m, int64_t k, int64_t kp, uint16_t* dst) {
  constexpr int MR = kBf16MRAmx, kTile = 16 * kAmxK;  // one A tile: 16 rows of 32 bf16
  const int64_t steps = kp / kAmxK;
  for (int64_t i0 = 0; i0 < m; i0 += MR, dst += MR * kp) {
    const int live = static_cast<int>(std::min<int64_t>(MR, m - i0));
    const T* src = a + i0 * rs;
    if (live < MR || k < kp || (rs == 1 && cs != 1)) std::memset(dst, 0, sizeof(uint16_t) * MR * kp);
    if (rs == 1 && cs != 1) {
      // Column-major A: each k step is `live` consecutive elements, converted as one vector.
      alignas(64) uint16_t step[32];
      for (int64_t p = 0; p < k; ++p) {
        _mm512_store_si512(step, load32(src + p * cs, live));
        uint16_t* d = dst + (p / kAmxK) * 2 * kTile + p % kAmxK;
        for (int r = 0; r < live; ++r) d[(r / 16) * kTile + (r % 16) * kAmxK] = step[r];
      }
      continue;
    }
    for (int r = 0; r < live; ++r) {
      const T* row = src + r * rs;
      uint16_t* d = dst + (r / 16) * kTile + (r % 16) * kAmxK;
      for (int64_t s = 0; s < steps; ++s) {
        const int64_t p = s * kAmxK;
        if (p >= k) break;
        convert_line(row + p * cs, cs, std::min<int64_t>(kAmxK, k - p), d + s * 2 * kTile);
      }
    }
  }
}

template <class T>
void pack_b(const T* b, int64_t rs, int64_t cs, int64_t k, int64_t n, int64_t kp, uint16_t* dst) {
  constexpr int NR = kBf16NR;
  // Word i of the two outputs: column i / 2 (+ 16 for the second) of row 2q (even i) or 2q+1.
  alignas(64) static constexpr uint16_t kLow[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                                    8,  40, 9,  41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static constexpr uint16_t kHigh[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                     24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i low = _mm512_load_si512(kLow), high = _mm512_load_si512(kHigh);
  for (int64_t j0 = 0; j0 < n; j0 += NR, dst += NR * kp) {
    const int live = static_cast<int>(std::min<int64_t>(NR, n - j0));
    const T* src = b + j0 * cs;
    if (cs == 1) {
      // Row-major B: two rows at a time, interleaved into dword pairs.
      for (int64_t q = 0; q < kp / 2; ++q) {
        const int64_t p = 2 * q;
        const __m512i r0 = p < k ? load32(src + p * rs, live) : _mm512_setzero_si512();
        const __m512i r1 = p + 1 < k ? load32(src + (p + 1) * rs, live) : _mm512_setzero_si512();
        _mm512_storeu_si512(dst + q * 2 * NR, _mm512_permutex2var_epi16(r0, low, r1));
        _mm512_storeu_si512(dst + q * 2 * NR + NR, _mm512_permutex2var_epi16(r0, high, r1));
      }
      continue;
    }
    // Column-major (a transposed view, as a Linear layer's weight.T) or any strides: column by
    // column, each converted along K into a staging line (vector code where K is unit-stride),
    // then its dword pairs spread NR dwords apart.
    if (live < NR) std::memset(dst, 0, sizeof(uint16_t) * NR * kp);
    uint16_t* line = staging(kp);
    uint32_t* d32 = reinterpret_cast<uint32_t*>(dst);
    for (int j = 0; j < live; ++j) {
      convert_line(src + j * cs, rs, k, line);
      std::memset(line + k, 0, sizeof(uint16_t) * (kp - k));
      for (int64_t q = 0; q < kp / 2; ++q) {
        uint32_t pair;
        std::memcpy(&pair, line + 2 * q, 4);
        d32[q * NR + j] = pair;
      }
    }
  }
}

template <class Fn>
void with_element_type(const Bf16Operand& x, const void* base, Fn&& fn) {
  if (x.bf16) fn(static_cast<const uint16_t*>(base));
  else fn(static_cast<const float*>(base));
}

}  // namespace

void bf16_pack_a_pairs(const Bf16Operand& x, const void* base, int64_t m, int64_t k, int64_t kp, uint16_t* dst) {
  with_element_type(x, base, [&](auto a) { pack_a_pairs(a, x.rs, x.cs, m, k, kp, dst); });
}

void bf16_pack_a_tiles(const Bf16Operand& x, const void* base, int64_t m, int64_t k, int64_t kp, uint16_t* dst) {
  with_element_type(x, base, [&](auto a) { pack_a_tiles(a, x.rs, x.cs, m, k, kp, dst); });
}

void bf16_pack_b(const Bf16Operand& x, const void* base, int64_t k, int64_t n, int64_t kp, uint16_t* dst) {
  with_element_type(x, base, [&](auto b) { pack_b(b, x.rs, x.cs, k, n, kp, dst); });
}

}  // namespace isa_avx512_ext
}  // namespace fusegrad
