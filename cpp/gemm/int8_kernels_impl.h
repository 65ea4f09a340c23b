// Pieces every int8 path shares, compiled into each path's own file with that file's flags: the
// two A packings and the requantizing epilogue. They live in an unnamed namespace so each file
// keeps its own copy (an inline function compiled with -mavx512vnni must never stand in for the
// generic level's).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

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

// A micro-panel as MR plain rows of kc_pad bytes (an AMX A tile reads 16 of them, 64 bytes each).
template <int MR>
void pack_a_rows(const uint8_t* a, int64_t lda, int rows, int64_t k, int64_t kc_pad, uint8_t* dst) {
  for (int r = 0; r < MR; ++r) {
    uint8_t* d = dst + r * kc_pad;
    if (r < rows) {
      std::memcpy(d, a + r * lda, k);
      std::memset(d + k, 0, kc_pad - k);
    } else {
      std::memset(d, 0, kc_pad);
    }
  }
}

// The saturating range of each narrow output type.
template <Int8Out kOut> struct OutType;
template <> struct OutType<Int8Out::s32> { using T = int32_t; };
template <> struct OutType<Int8Out::f32> { using T = float; };
template <> struct OutType<Int8Out::u8> { using T = uint8_t; static constexpr float lo = 0.0f, hi = 255.0f; };
template <> struct OutType<Int8Out::s8> { using T = int8_t; static constexpr float lo = -128.0f, hi = 127.0f; };

// One row, written so the compiler vectorises it (the branches are template arguments).
template <Int8Out kOut, bool kRelu, bool kBias>
void epilogue_row(const int32_t* acc, int64_t n, typename OutType<kOut>::T* out, const Int8Epilogue& e,
                  const int32_t* colsum, const float* scale, const float* bias) {
  const uint32_t zp = static_cast<uint32_t>(e.a_zero_point);
  for (int64_t j = 0; j < n; ++j) {
    // acc and zp·colsum may each wrap int32 while their difference, the true sum, fits: unsigned
    // arithmetic wraps by definition and the cast back gives that difference.
    const int32_t c = static_cast<int32_t>(static_cast<uint32_t>(acc[j]) - zp * static_cast<uint32_t>(colsum[j]));
    if constexpr (kOut == Int8Out::s32) {
      out[j] = kRelu ? std::max(c, 0) : c;
    } else {
      float v = static_cast<float>(c) * scale[j];
      if constexpr (kBias) v += bias[j];
      if constexpr (kRelu) v = v > 0.0f ? v : 0.0f;
      if constexpr (kOut == Int8Out::f32) {
        out[j] = v;
      } else {
        float q = std::nearbyint(v * e.inv_out_scale) + static_cast<float>(e.out_zero_point);
        q = std::min(std::max(q, OutType<kOut>::lo), OutType<kOut>::hi);
        out[j] = static_cast<typename OutType<kOut>::T>(static_cast<int32_t>(q));
      }
    }
  }
}

template <Int8Out kOut, bool kRelu, bool kBias>
void epilogue_block(const int32_t* acc, int64_t ldacc, int64_t m, int64_t n, void* out, int64_t ldo,
                    const Int8Epilogue& e, int64_t col0) {
  using T = typename OutType<kOut>::T;
  T* o = static_cast<T*>(out);
  const float* scale = e.scale ? e.scale + col0 : nullptr;
  const float* bias = e.bias ? e.bias + col0 : nullptr;
  for (int64_t i = 0; i < m; ++i)
    epilogue_row<kOut, kRelu, kBias>(acc + i * ldacc, n, o + i * ldo, e, e.colsum + col0, scale, bias);
}

template <Int8Out kOut>
void epilogue_for(const int32_t* acc, int64_t ldacc, int64_t m, int64_t n, void* out, int64_t ldo,
                  const Int8Epilogue& e, int64_t col0) {
  const bool bias = e.bias != nullptr && kOut != Int8Out::s32;
  if (e.relu) {
    if (bias) epilogue_block<kOut, true, true>(acc, ldacc, m, n, out, ldo, e, col0);
    else epilogue_block<kOut, true, false>(acc, ldacc, m, n, out, ldo, e, col0);
  } else {
    if (bias) epilogue_block<kOut, false, true>(acc, ldacc, m, n, out, ldo, e, col0);
    else epilogue_block<kOut, false, false>(acc, ldacc, m, n, out, ldo, e, col0);
  }
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
