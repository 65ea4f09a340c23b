// A small float vector type for the ISA this file is being compiled for.
//
// Kernels that are the same algorithm at every ISA level (elementwise maps, reductions, optimizer
// updates) are written once on VecF and compiled per level; kernels whose shape depends on the
// register file (GEMM microkernels) use intrinsics directly instead. Semantics worth knowing:
//   max(a, b) / min(a, b) return b when either is NaN (as the x86 instructions do), so
//   max(zero, x) propagates a NaN in x.
//   select(m, a, b) is m ? a : b per lane.
// This header must be included only from sources compiled per ISA (FG_ISA_NS is defined there).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifndef FG_ISA_NS
#error "simd.h is for sources compiled once per ISA level (see FG_MULTI_ISA_SOURCES)"
#endif

namespace fusegrad {
namespace FG_ISA_NS {

#if defined(__AVX512F__)

constexpr int kVecWidth = 16;
struct VecF { __m512 v; };
struct MaskF { __mmask16 m; };

inline __mmask16 tail_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
inline VecF load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline VecF load_partial(const float* p, int n) { return {_mm512_maskz_loadu_ps(tail_mask(n), p)}; }
inline void store(float* p, VecF a) { _mm512_storeu_ps(p, a.v); }
inline void store_partial(float* p, VecF a, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), a.v); }
inline VecF set1(float x) { return {_mm512_set1_ps(x)}; }
inline VecF operator+(VecF a, VecF b) { return {_mm512_add_ps(a.v, b.v)}; }
inline VecF operator-(VecF a, VecF b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline VecF operator*(VecF a, VecF b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline VecF operator/(VecF a, VecF b) { return {_mm512_div_ps(a.v, b.v)}; }
inline VecF fmadd(VecF a, VecF b, VecF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline VecF max(VecF a, VecF b) { return {_mm512_max_ps(a.v, b.v)}; }
inline VecF min(VecF a, VecF b) { return {_mm512_min_ps(a.v, b.v)}; }
inline VecF sqrt(VecF a) { return {_mm512_sqrt_ps(a.v)}; }
inline VecF abs(VecF a) { return {_mm512_abs_ps(a.v)}; }
inline MaskF operator>(VecF a, VecF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ)}; }
inline MaskF operator<(VecF a, VecF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ)}; }
inline MaskF operator>=(VecF a, VecF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GE_OQ)}; }
inline VecF select(MaskF m, VecF a, VecF b) { return {_mm512_mask_blend_ps(m.m, b.v, a.v)}; }
inline VecF round_nearest(VecF a) {
  return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
// 2^n for integral-valued n in [-126, 127], built in the exponent field.
inline VecF pow2_integral(VecF n) {
  const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}
inline float reduce_add(VecF a) { return _mm512_reduce_add_ps(a.v); }
// Lane i of the result is the sum of v[i]'s lanes, for kVecWidth vectors v: a transpose folded
// into the adds, 45 instructions for 16 sums where reducing each vector alone takes 8 apiece.
inline VecF sum_lanes(const VecF* v) {
  __m512 pairs[8], quads[4];
  // Per 128-bit block: lanes [x0+x2, y0+y2, x1+x3, y1+y3] of x = v[2i], y = v[2i+1].
  for (int i = 0; i < 8; ++i)
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i].v, v[2 * i + 1].v),
                             _mm512_unpackhi_ps(v[2 * i].v, v[2 * i + 1].v));
  // Per 128-bit block b: lane j is the sum of block b of v[4i + j].
  for (int i = 0; i < 4; ++i)
    quads[i] = _mm512_add_ps(_mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // Add the four blocks: each step adds blocks pairwise and packs two vectors into one.
  const auto fold = [](__m512 a, __m512 b) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
  };
  return {fold(fold(quads[0], quads[1]), fold(quads[2], quads[3]))};
}
// Non-temporal store: p must be 64-byte aligned. Bypasses the caches, so a large output does not
// evict the inputs and costs no read-for-ownership; needs stream_fence() before others read it.
inline void stream_store(float* p, VecF a) { _mm512_stream_ps(p, a.v); }
inline void stream_fence() { _mm_sfence(); }

#elif defined(__AVX2__) && defined(__FMA__)

constexpr int kVecWidth = 8;
struct VecF { __m256 v; };
struct MaskF { __m256 m; };

inline __m256i tail_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline VecF load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline VecF load_partial(const float* p, int n) { return {_mm256_maskload_ps(p, tail_mask(n))}; }
inline void store(float* p, VecF a) { _mm256_storeu_ps(p, a.v); }
inline void store_partial(float* p, VecF a, int n) { _mm256_maskstore_ps(p, tail_mask(n), a.v); }
inline VecF set1(float x) { return {_mm256_set1_ps(x)}; }
inline VecF operator+(VecF a, VecF b) { return {_mm256_add_ps(a.v, b.v)}; }
inline VecF operator-(VecF a, VecF b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline VecF operator*(VecF a, VecF b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline VecF operator/(VecF a, VecF b) { return {_mm256_div_ps(a.v, b.v)}; }
inline VecF fmadd(VecF a, VecF b, VecF c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline VecF max(VecF a, VecF b) { return {_mm256_max_ps(a.v, b.v)}; }
inline VecF min(VecF a, VecF b) { return {_mm256_min_ps(a.v, b.v)}; }
inline VecF sqrt(VecF a) { return {_mm256_sqrt_ps(a.v)}; }
inline VecF abs(VecF a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
inline MaskF operator>(VecF a, VecF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ)}; }
inline MaskF operator<(VecF a, VecF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ)}; }
inline MaskF operator>=(VecF a, VecF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GE_OQ)}; }
inline VecF select(MaskF m, VecF a, VecF b) { return {_mm256_blendv_ps(b.v, a.v, m.m)}; }
inline VecF round_nearest(VecF a) {
  return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline VecF pow2_integral(VecF n) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
}
inline float reduce_add(VecF a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// Lane i of the result is the sum of v[i]'s lanes (see the AVX-512 version).
inline VecF sum_lanes(const VecF* v) {
  __m256 pairs[4], quads[2];
  for (int i = 0; i < 4; ++i)
    pairs[i] = _mm256_add_ps(_mm256_unpacklo_ps(v[2 * i].v, v[2 * i + 1].v),
                             _mm256_unpackhi_ps(v[2 * i].v, v[2 * i + 1].v));
  for (int i = 0; i < 2; ++i)
    quads[i] = _mm256_add_ps(_mm256_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  return {_mm256_add_ps(_mm256_permute2f128_ps(quads[0], quads[1], 0x20),
                        _mm256_permute2f128_ps(quads[0], quads[1], 0x31))};
}
inline void stream_store(float* p, VecF a) { _mm256_stream_ps(p, a.v); }  // p 32-byte aligned
inline void stream_fence() { _mm_sfence(); }

#else  // generic: one lane of portable C++; the compiler vectorises the loops it can.

constexpr int kVecWidth = 1;
struct VecF { float v; };
struct MaskF { bool m; };

inline VecF load(const float* p) { return {*p}; }
inline VecF load_partial(const float* p, int n) { return {n > 0 ? *p : 0.0f}; }
inline void store(float* p, VecF a) { *p = a.v; }
inline void store_partial(float* p, VecF a, int n) { if (n > 0) *p = a.v; }
inline VecF set1(float x) { return {x}; }
inline VecF operator+(VecF a, VecF b) { return {a.v + b.v}; }
inline VecF operator-(VecF a, VecF b) { return {a.v - b.v}; }
inline VecF operator*(VecF a, VecF b) { return {a.v * b.v}; }
inline VecF operator/(VecF a, VecF b) { return {a.v / b.v}; }
inline VecF fmadd(VecF a, VecF b, VecF c) { return {a.v * b.v + c.v}; }
inline VecF max(VecF a, VecF b) { return {a.v > b.v ? a.v : b.v}; }
inline VecF min(VecF a, VecF b) { return {a.v < b.v ? a.v : b.v}; }
inline VecF sqrt(VecF a) { return {__builtin_sqrtf(a.v)}; }
inline VecF abs(VecF a) { return {__builtin_fabsf(a.v)}; }
inline MaskF operator>(VecF a, VecF b) { return {a.v > b.v}; }
inline MaskF operator<(VecF a, VecF b) { return {a.v < b.v}; }
inline MaskF operator>=(VecF a, VecF b) { return {a.v >= b.v}; }
inline VecF select(MaskF m, VecF a, VecF b) { return {m.m ? a.v : b.v}; }
inline VecF round_nearest(VecF a) { return {__builtin_nearbyintf(a.v)}; }
inline VecF pow2_integral(VecF n) {
  const int32_t bits = (static_cast<int32_t>(n.v) + 127) << 23;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return {r};
}
inline float reduce_add(VecF a) { return a.v; }
inline VecF sum_lanes(const VecF* v) { return v[0]; }
inline void stream_store(float* p, VecF a) { *p = a.v; }
inline void stream_fence() {}

#endif

inline VecF operator-(VecF a) { return set1(0.0f) - a; }

}  // namespace FG_ISA_NS
}  // namespace fusegrad
