// Pieces every int8 path shares, compiled into each path's own file with that file's flags: the
// A packings and the requantizing epilogue (AVX-512 intrinsics where the file has them). They live in an unnamed namespace so each file
// keeps its own copy (an inline function compiled with -mavx512vnni must never stand in for the
// generic level's).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "gemm/int8_gemm.h"

#ifndef FG_ISA_NS
#error "int8_kernels_impl.h is for the int8 kernel files"
#endif

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

// A micro-panel for the broadcast kernels (generic, VNNI): per group of 4 k's, MR rows × 4 bytes,
// so one 32-bit load is one row's four bytes for vpdpbusd's broadcast operand.
template <int MR>
void pack_a_interleaved(const uint8_t* a, int64_t lda, int rows, int64_t k, int64_t kc_pad, uint8_t* dst) {
  const int64_t groups = kc_pad / kInt8KGroup, full = k / kInt8KGroup;
  for (int64_t g = 0; g < groups; ++g) {
    uint8_t* d = dst + g * MR * 4;
    for (int r = 0; r < MR; ++r) {
      uint8_t* dr = d + r * 4;
      if (r < rows && g < full) {
        std::memcpy(dr, a + r * lda + g * 4, 4);
      } else {
        for (int l = 0; l < 4; ++l) {
          const int64_t p = g * 4 + l;
          dr[l] = (r < rows && p < k) ? a[r * lda + p] : 0;
        }
      }
    }
  }
}

// A micro-panel as consecutive AMX A tiles: per 64 bytes of depth, MR rows × 64 bytes, so each
// tile load reads 1 KiB of contiguous memory, in the order the kernel consumes it.
template <int MR>
void pack_a_tiles(const uint8_t* a, int64_t lda, int rows, int64_t k, int64_t kc_pad, uint8_t* dst) {
  constexpr int64_t kStep = 64;
  for (int64_t p0 = 0; p0 < kc_pad; p0 += kStep) {
    uint8_t* d = dst + p0 * MR;
    const int64_t live = std::max<int64_t>(0, std::min(kStep, k - p0));
    for (int r = 0; r < MR; ++r, d += kStep) {
      const int64_t n = r < rows ? live : 0;
      if (n == kStep) {
        std::memcpy(d, a + r * lda + p0, kStep);  // the common case: one 64-byte copy
      } else {
        if (n) std::memcpy(d, a + r * lda + p0, n);
        std::memset(d + n, 0, kStep - n);
      }
    }
  }
}

// The saturating range of each narrow output type.
template <Int8Out kOut> struct OutType;
template <> struct OutType<Int8Out::s32> { using T = int32_t; };
template <> struct OutType<Int8Out::f32> { using T = float; };
template <> struct OutType<Int8Out::u8> { using T = uint8_t; static constexpr float lo = 0.0f, hi = 255.0f; };
template <> struct OutType<Int8Out::s8> { using T = int8_t; static constexpr float lo = -128.0f, hi = 127.0f; };

// Columns whose epilogue factors are prepared at once (3 KiB on the stack), then applied to every
// row of the block: the zero-point correction zp · colsum[n] (so no row multiplies it again) and,
// for a requantized output, scale and bias already divided by out_scale (multiplied by its
// inverse), so a value is one multiply-add away from rounding.
constexpr int64_t kEpilogueCols = 256;

struct ColumnFactors {
  alignas(64) int32_t corr[kEpilogueCols];
  alignas(64) float scale[kEpilogueCols];
  alignas(64) float bias[kEpilogueCols];
};

void prepare_columns(const Int8Epilogue& e, int64_t col0, int64_t n, ColumnFactors& f) {
  const uint32_t zp = static_cast<uint32_t>(e.a_zero_point);
  const bool requant = e.out == Int8Out::u8 || e.out == Int8Out::s8;
  for (int64_t j = 0; j < n; ++j) {
    // zp·colsum may wrap int32 while acc − zp·colsum, the true sum, fits: unsigned arithmetic
    // wraps by definition, and the row kernels subtract the same way.
    f.corr[j] = static_cast<int32_t>(zp * static_cast<uint32_t>(e.colsum[col0 + j]));
    if (e.out == Int8Out::s32) continue;
    const float scale = e.scale[col0 + j], bias = e.bias ? e.bias[col0 + j] : 0.0f;
    f.scale[j] = requant ? scale * e.inv_out_scale : scale;
    f.bias[j] = requant ? bias * e.inv_out_scale : bias;
  }
}

inline int32_t corrected(int32_t acc, int32_t corr) {
  return static_cast<int32_t>(static_cast<uint32_t>(acc) - static_cast<uint32_t>(corr));
}

#if defined(__AVX512F__)
// One row, 16 columns a step, the last step masked. Requantized values are clamped to the
// output range (less the zero point) in float before rounding, so out-of-range values never reach
// the float-to-int conversion, which would turn them into INT_MIN. A narrow output goes 64 columns
// at a time where it can: the four vectors' values, already in range, are packed to bytes with
// two saturating packs (exact here) and put back in column order by one dword permutation, one
// 64-byte store instead of four narrowing stores (each two shuffle-port uops on Intel cores).
template <Int8Out kOut, bool kRelu>
void epilogue_row(const int32_t* acc, int64_t n, typename OutType<kOut>::T* out, const Int8Epilogue& e,
                  const ColumnFactors& f) {
  constexpr bool kNarrow = kOut == Int8Out::u8 || kOut == Int8Out::s8;
  __m512 lo = _mm512_setzero_ps(), hi = lo;
  __m512i zp = _mm512_setzero_si512();
  if constexpr (kNarrow) {
    lo = _mm512_set1_ps(OutType<kOut>::lo - static_cast<float>(e.out_zero_point));
    hi = _mm512_set1_ps(OutType<kOut>::hi - static_cast<float>(e.out_zero_point));
    zp = _mm512_set1_epi32(e.out_zero_point);
  }
  const auto corrected_at = [&](int64_t j, __mmask16 mask) {
    return _mm512_sub_epi32(_mm512_maskz_loadu_epi32(mask, acc + j), _mm512_load_si512(f.corr + j));
  };
  const auto value_at = [&](int64_t j, __mmask16 mask) {
    __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(corrected_at(j, mask)), _mm512_load_ps(f.scale + j),
                               _mm512_load_ps(f.bias + j));
    return kRelu ? _mm512_max_ps(v, _mm512_setzero_ps()) : v;
  };
  const auto quantized_at = [&](int64_t j, __mmask16 mask) {  // round half to even
    return _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(value_at(j, mask), lo), hi)), zp);
  };
  int64_t j = 0;
  if constexpr (kNarrow) {
    // Packed dword 4l + v holds columns 4l .. 4l + 3 of vector v; column order wants it at 4v + l.
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (; j + 64 <= n; j += 64) {
      const __m512i q0 = quantized_at(j, 0xffff), q1 = quantized_at(j + 16, 0xffff);
      const __m512i q2 = quantized_at(j + 32, 0xffff), q3 = quantized_at(j + 48, 0xffff);
      const __m512i bytes = kOut == Int8Out::u8
                                ? _mm512_packus_epi16(_mm512_packus_epi32(q0, q1), _mm512_packus_epi32(q2, q3))
                                : _mm512_packs_epi16(_mm512_packs_epi32(q0, q1), _mm512_packs_epi32(q2, q3));
      _mm512_storeu_si512(out + j, _mm512_permutexvar_epi32(order, bytes));
    }
  }
  for (; j < n; j += 16) {
    const __mmask16 mask = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1);
    if constexpr (kOut == Int8Out::s32) {
      const __m512i c = corrected_at(j, mask);
      _mm512_mask_storeu_epi32(out + j, mask, kRelu ? _mm512_max_epi32(c, _mm512_setzero_si512()) : c);
    } else if constexpr (kOut == Int8Out::f32) {
      _mm512_mask_storeu_ps(out + j, mask, value_at(j, mask));
    } else if constexpr (kOut == Int8Out::u8) {
      _mm512_mask_cvtusepi32_storeu_epi8(out + j, mask, quantized_at(j, mask));
    } else {
      _mm512_mask_cvtsepi32_storeu_epi8(out + j, mask, quantized_at(j, mask));
    }
  }
}
#else
template <Int8Out kOut, bool kRelu>
void epilogue_row(const int32_t* acc, int64_t n, typename OutType<kOut>::T* out, const Int8Epilogue& e,
                  const ColumnFactors& f) {
  for (int64_t j = 0; j < n; ++j) {
    const int32_t c = corrected(acc[j], f.corr[j]);
    if constexpr (kOut == Int8Out::s32) {
      out[j] = kRelu ? std::max(c, 0) : c;
    } else {
      float v = static_cast<float>(c) * f.scale[j] + f.bias[j];
      if constexpr (kRelu) v = v > 0.0f ? v : 0.0f;
      if constexpr (kOut == Int8Out::f32) {
        out[j] = v;
      } else {
        const float zp = static_cast<float>(e.out_zero_point);
        v = std::min(std::max(v, OutType<kOut>::lo - zp), OutType<kOut>::hi - zp);
        out[j] = static_cast<typename OutType<kOut>::T>(static_cast<int32_t>(std::nearbyint(v)) + e.out_zero_point);
      }
    }
  }
}
#endif

template <Int8Out kOut, bool kRelu>
void epilogue_block(const int32_t* acc, int64_t ldacc, int64_t m, int64_t n, void* out, int64_t ldo,
                    const Int8Epilogue& e, int64_t col0) {
  using T = typename OutType<kOut>::T;
  ColumnFactors f;
  for (int64_t j0 = 0; j0 < n; j0 += kEpilogueCols) {
    const int64_t cols = std::min(kEpilogueCols, n - j0);
    prepare_columns(e, col0 + j0, cols, f);
    for (int64_t i = 0; i < m; ++i)
      epilogue_row<kOut, kRelu>(acc + i * ldacc + j0, cols, static_cast<T*>(out) + i * ldo + j0, e, f);
  }
}

template <Int8Out kOut>
void epilogue_for(const int32_t* acc, int64_t ldacc, int64_t m, int64_t n, void* out, int64_t ldo,
                  const Int8Epilogue& e, int64_t col0) {
  if (e.relu) epilogue_block<kOut, true>(acc, ldacc, m, n, out, ldo, e, col0);
  else epilogue_block<kOut, false>(acc, ldacc, m, n, out, ldo, e, col0);
}

void epilogue(const int32_t* acc, int64_t ldacc, int64_t m, int64_t n, void* out, int64_t ldo,
              const Int8Epilogue& e, int64_t col0) {
  switch (e.out) {
    case Int8Out::s32: return epilogue_for<Int8Out::s32>(acc, ldacc, m, n, out, ldo, e, col0);
    case Int8Out::f32: return epilogue_for<Int8Out::f32>(acc, ldacc, m, n, out, ldo, e, col0);
    case Int8Out::u8: return epilogue_for<Int8Out::u8>(acc, ldacc, m, n, out, ldo, e, col0);
    default: return epilogue_for<Int8Out::s8>(acc, ldacc, m, n, out, ldo, e, col0);
  }
}

}  // namespace
}  // namespace FG_ISA_NS
}  // namespace fusegrad
