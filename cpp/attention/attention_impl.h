// What the attention kernels of one ISA level share: block sizes, the exp2 they use, and the
// per-row helpers for masks, causality and dropout. Included only by sources compiled per ISA.
//
// Blocks (floats; the reference CPUs have 32-48 KiB of L1d and 1-2 MiB of L2 per core):
//   kBlockQ = 48 query rows: a multiple of every level's MR (12, 6, 4), so the microkernel runs
//     full-height tiles; the Q rows (48×D) and the output rows being accumulated stay in L1/L2.
//   kBlockK = 256 keys (forward): a multiple of every NR (32, 16, 8), so a key block is a whole
//     number of packed K^T panels. The score tile is 48×256×4 = 48 KiB (L1 on a 48 KiB-L1 core,
//     L2 otherwise). Measured on the 2-core Xeon, one thread: 256 keys ran the forward ~7% faster
//     than 128 (half as many online-softmax rescales of the output rows, P·V products twice as
//     deep) and as fast as 512.
//   kBlockKB = 96 keys (backward): also a multiple of every MR, as the key block is the M side of
//     the dK and dV products. The backward keeps three 48×96 tiles (S/P, dP/dS, dropped P: 54 KiB)
//     and the dK, dV rows of its key block (2×96×D floats, 48 KiB at D = 64) in L1/L2; 192 keys
//     measured ~10% slower.
//   A head's K (and V) is packed once per head into K^T panels: Sk×D floats, 128 KiB at
//     S = 512, D = 64, which L2 holds while every query block of the head streams past it.
//     This is the only O(S·D) extra memory: nothing S×S is ever allocated.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "attention/attention.h"
#include "attention/philox.h"
#include "common/simd.h"
#include "gemm/microkernel.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace attn {

constexpr int kBlockQ = 48;
constexpr int kBlockK = 256;
constexpr int kBlockKB = 96;
static_assert(kBlockQ % kMR == 0 && kBlockKB % kMR == 0, "query/key blocks must be whole MR tiles");
static_assert(kBlockK % kNR == 0 && kBlockKB % kNR == 0, "key blocks must be whole packed panels");

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

alignas(64) inline const float kOnes[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
// Lanes [0, w) set.
inline MaskF lanes_below(int w) { return load_partial(kOnes, w) > set1(0.5f); }

inline VecF load_w(const float* p, int w) { return w == kVecWidth ? load(p) : load_partial(p, w); }
inline void store_w(float* p, VecF a, int w) {
  if (w == kVecWidth) store(p, a);
  else store_partial(p, a, w);
}

// 2^x for x <= 0 (scores minus their running max), relative error < 2e-7: x = n + f with
// |f| <= 1/2, 2^f by Cephes' exp2f polynomial (degree 6), scaled by 2^n. Below -127 the result
// is 0 (so -inf, a masked score, gives exactly 0). NaN stays NaN.
inline VecF exp2_fraction(VecF f) {
  VecF p = set1(1.535336188319500e-4f);
  p = fmadd(p, f, set1(1.339887440266574e-3f));
  p = fmadd(p, f, set1(9.618437357674640e-3f));
  p = fmadd(p, f, set1(5.550332471162809e-2f));
  p = fmadd(p, f, set1(2.402264791363012e-1f));
  p = fmadd(p, f, set1(6.931472028550421e-1f));
  return fmadd(p, f, set1(1.0f));
}
#if defined(__AVX512F__)
// vscalefps scales by 2^n directly; lanes below -127 (and -inf, whose f is NaN) are masked to 0,
// and not-less-or-equal is true for NaN, which passes through.
inline VecF exp2_nonpositive(VecF x) {
  const VecF n = round_nearest(x);
  const __mmask16 keep = _mm512_cmp_ps_mask(x.v, _mm512_set1_ps(-127.0f), _CMP_NLE_UQ);
  return {_mm512_maskz_scalef_ps(keep, exp2_fraction(x - n).v, n.v)};
}
#else
inline VecF exp2_nonpositive(VecF x) {
  x = max(set1(-127.0f), x);  // max(a, b) returns b when either is NaN: a NaN x passes
  const VecF n = round_nearest(x);
  return exp2_fraction(x - n) * pow2_integral(n);  // n = -127 builds +0.0
}
#endif

inline float exp2_scalar(float x) { return x < -127.0f ? 0.0f : std::exp2(x); }

// The largest lane.
inline float reduce_max(VecF a) {
#if defined(__AVX512F__)
  return _mm512_reduce_max_ps(a.v);
#elif defined(__AVX2__)
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
#else
  return a.v;
#endif
}

// Keys [j0, j0 + n) of query i that causality allows: the first `valid` of them.
inline int causal_valid(const AttentionProblem& p, int64_t i, int64_t j0, int n) {
  if (!p.causal) return n;
  const int64_t v = i - j0 + 1;
  return v <= 0 ? 0 : (v >= n ? n : static_cast<int>(v));
}

// The additive mask row of (b, h, i), from key 0, or null.
inline const float* mask_row(const AttentionProblem& p, int64_t b, int64_t h, int64_t i) {
  return p.mask ? p.mask + b * p.mask_sb + h * p.mask_sh + i * p.mask_si : nullptr;
}

// s[c] = s[c] * c2 + mask[c] * log2(e) for c < n (the scores in base-2 units); returns their max.
inline float scores_to_log2(float* s, const float* mask, int n, float c2) {
  const VecF cv = set1(c2), l2e = set1(kLog2e);
  VecF mx = set1(kNegInf);
  for (int c = 0; c < n; c += kVecWidth) {
    const int w = n - c < kVecWidth ? n - c : kVecWidth;
    VecF t = load_w(s + c, w) * cv;
    if (mask) t = fmadd(load_w(mask + c, w), l2e, t);
    store_w(s + c, t, w);
    if (w == kVecWidth) mx = max(t, mx);  // a partial last vector is done in scalars below
  }
  float m = reduce_max(mx);
  if (n % kVecWidth != 0) {
    for (int c = n - n % kVecWidth; c < n; ++c) m = s[c] > m ? s[c] : m;
  }
  return m;
}

// Philox4x32-10 (philox.h) of kPhiloxLanes consecutive counters (j4_0 + lane, i, h, b), all
// lanes at once: with AVX-512 or AVX2 the 32×32→64-bit products are vpmuludq on the even and
// the odd lanes, so 32 counters cost about as much as two scalar ones. out[w][lane] is word w.
constexpr int kPhiloxLanes = 32;

#if defined(__AVX512F__) || defined(__AVX2__)
#if defined(__AVX512F__)
using PhiloxVec = __m512i;
constexpr int kPhiloxWidth = 16;
inline PhiloxVec pv_set1(uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
inline PhiloxVec pv_xor(PhiloxVec a, PhiloxVec b) { return _mm512_xor_si512(a, b); }
// (hi, lo) 32-bit halves of the 64-bit products a * m, lane by lane.
inline void pv_mulhilo(PhiloxVec a, PhiloxVec m, PhiloxVec* hi, PhiloxVec* lo) {
  const __m512i even = _mm512_mul_epu32(a, m), odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}
inline PhiloxVec pv_iota(uint32_t base) {
  return _mm512_add_epi32(pv_set1(base), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}
inline void pv_store(uint32_t* p, PhiloxVec a) { _mm512_storeu_si512(p, a); }
#else
using PhiloxVec = __m256i;
constexpr int kPhiloxWidth = 8;
inline PhiloxVec pv_set1(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
inline PhiloxVec pv_xor(PhiloxVec a, PhiloxVec b) { return _mm256_xor_si256(a, b); }
inline void pv_mulhilo(PhiloxVec a, PhiloxVec m, PhiloxVec* hi, PhiloxVec* lo) {
  const __m256i even = _mm256_mul_epu32(a, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}
inline PhiloxVec pv_iota(uint32_t base) {
  return _mm256_add_epi32(pv_set1(base), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline void pv_store(uint32_t* p, PhiloxVec a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), a); }
#endif

inline void philox_lanes(uint64_t seed, uint32_t j4_0, uint32_t i, uint32_t h, uint32_t b,
                         uint32_t out[4][kPhiloxLanes]) {
  const PhiloxVec m0 = pv_set1(philox::kMul0), m1 = pv_set1(philox::kMul1);
  for (int l0 = 0; l0 < kPhiloxLanes; l0 += kPhiloxWidth) {
    PhiloxVec c0 = pv_iota(j4_0 + static_cast<uint32_t>(l0)), c1 = pv_set1(i), c2 = pv_set1(h), c3 = pv_set1(b);
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      PhiloxVec hi0, lo0, hi1, lo1;
      pv_mulhilo(c0, m0, &hi0, &lo0);
      pv_mulhilo(c2, m1, &hi1, &lo1);
      c0 = pv_xor(pv_xor(hi1, c1), pv_set1(k0));
      c2 = pv_xor(pv_xor(hi0, c3), pv_set1(k1));
      c1 = lo1;
      c3 = lo0;
      k0 += philox::kWeyl0;
      k1 += philox::kWeyl1;
    }
    pv_store(out[0] + l0, c0);
    pv_store(out[1] + l0, c1);
    pv_store(out[2] + l0, c2);
    pv_store(out[3] + l0, c3);
  }
}
#else
inline void philox_lanes(uint64_t seed, uint32_t j4_0, uint32_t i, uint32_t h, uint32_t b,
                         uint32_t out[4][kPhiloxLanes]) {
  for (int l = 0; l < kPhiloxLanes; ++l) {
    uint32_t c[4] = {j4_0 + static_cast<uint32_t>(l), i, h, b};
    philox::philox4x32_10(c, seed);
    for (int w = 0; w < 4; ++w) out[w][l] = c[w];
  }
}
#endif

// z[c] for c < n: 1/(1-p) where the dropout mask keeps (b, h, i, j0 + c), else 0. j0 is a multiple of 4.
inline void dropout_factors(const AttentionProblem& pr, int64_t b, int64_t h, int64_t i, int64_t j0, float* z, int n,
                            uint32_t thresh, float inv_keep) {
  alignas(64) uint32_t words[4][kPhiloxLanes];
  for (int c = 0; c < n; c += 4 * kPhiloxLanes) {
    philox_lanes(pr.seed, static_cast<uint32_t>((j0 + c) >> 2), static_cast<uint32_t>(i), static_cast<uint32_t>(h),
                 static_cast<uint32_t>(b), words);
    const int e_end = n - c < 4 * kPhiloxLanes ? n - c : 4 * kPhiloxLanes;
    for (int e = 0; e < e_end; ++e) z[c + e] = words[e & 3][e >> 2] >= thresh ? inv_keep : 0.0f;
  }
}

// Multiplies p[c] for c < n by the dropout factors of (b, h, i, j0 + c); z: n floats of scratch.
inline void apply_dropout(const AttentionProblem& pr, int64_t b, int64_t h, int64_t i, int64_t j0, float* p, int n,
                          uint32_t thresh, float inv_keep, float* z) {
  dropout_factors(pr, b, h, i, j0, z, n, thresh, inv_keep);
  for (int c = 0; c < n; c += kVecWidth) {
    const int w = n - c < kVecWidth ? n - c : kVecWidth;
    store_w(p + c, load_w(p + c, w) * load_w(z + c, w), w);
  }
}

// C[0:m, 0:n] (=|+=) A·B on the microkernel, A read in place (element (r, p) at
// a[r * a_rs + p * a_cs]), B row-major (k × n, row stride ldb) read in place, C row stride ldc.
inline void small_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                       int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  MicroTile t;
  t.k = k;
  t.ldb = ldb;
  t.b_padded = false;
  t.ldc = ldc;
  t.load_c = accumulate;
  for (int64_t j = 0; j < n; j += kNR) {
    t.n = static_cast<int>(n - j < kNR ? n - j : kNR);
    for (int64_t r = 0; r < m; r += kMR) {
      t.m = static_cast<int>(m - r < kMR ? m - r : kMR);
      t.a = a + r * a_rs;
      t.b = b + j;
      t.c = c + r * ldc + j;
      microkernel_strided_a(t, a_rs, a_cs);
    }
  }
}

// S[0:m, 0:n] = A · Kt for A (m × d, row stride lda) and n keys of a head's packed K^T panels
// (`panels` points at the panel of the first key; n <= a multiple of NR within the head).
inline void scores_gemm(int64_t m, int64_t n, int64_t d, const float* a, int64_t lda, const float* panels, float* s,
                        int64_t lds) {
  MicroTile t;
  t.k = d;
  t.ldb = kNR;
  t.b_padded = true;
  t.ldc = lds;
  for (int64_t j = 0; j < n; j += kNR) {
    t.n = static_cast<int>(n - j < kNR ? n - j : kNR);
    t.b = panels + j * d;
    for (int64_t r = 0; r < m; r += kMR) {
      t.m = static_cast<int>(m - r < kMR ? m - r : kMR);
      t.a = a + r * lda;
      t.c = s + r * lds + j;
      microkernel_strided_a(t, lda, 1);
    }
  }
}

void forward(const AttentionProblem& p, const float* q, const float* k, const float* v, float* out, float* lse);
void backward(const AttentionProblem& p, const float* q, const float* k, const float* v, const float* out,
              const float* lse, const float* grad_out, float* dq, float* dk, float* dv);
void layer_norm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                        int64_t rows, int64_t n, float eps);
void layer_norm_backward(const float* g, const float* x, const float* mean, const float* rstd, const float* w,
                         float* dx, float* dw, float* db, int64_t rows, int64_t n);
void embedding_backward(const int64_t* idx, int64_t count, const float* g, int64_t dim, float* dw, int64_t vocab,
                        int64_t padding_idx);

}  // namespace attn
}  // namespace FG_ISA_NS
}  // namespace fusegrad
