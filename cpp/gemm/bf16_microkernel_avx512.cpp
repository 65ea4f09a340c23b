// The AVX-512 BF16 micro-tile: 12 rows × 32 columns of C in 24 zmm accumulators. Each K pair
// step loads one 128-byte pair row of the B panel (two zmm of 16 column pairs) and broadcasts
// one dword pair of each A row; vdpbf16ps adds both products of a pair into the fp32 lane, so a
// step is 24 instructions for 768 multiply-adds, twice the fp32 kernel's 384 per 24 FMAs, with
// the same loads per instruction (2 vector loads and 12 broadcasts against 24 arithmetic ops).
// That doubling holds only where vdpbf16ps issues as often as vfmadd231ps. On the Sapphire/
// Emerald Rapids KVM guest measured, 24 independent chains of zmm vdpbf16ps ran at about a
// quarter of the rate of zmm FMAs (1.0 against 4.0 G instructions/s), i.e. half the fp32
// multiply-adds per second, and this path reached 0.6-0.8x of the fp32 GEMM there; a ymm form
// (6×32, 24 ymm accumulators) measured slower still (0.35x). Where AMX exists it takes over.
#include <immintrin.h>

#include <utility>

#include "gemm/bf16_kernels.h"

#if !defined(__AVX512BF16__)
#error "bf16_microkernel_avx512.cpp needs -mavx512bf16 (FG_EXTENSION_FLAGS_bf16_microkernel_avx512)"
#endif

namespace fusegrad {
namespace isa_avx512_ext {
namespace {

constexpr int MR = kBf16MRAvx512;

inline __mmask16 lanes(int w) { return static_cast<__mmask16>(w >= 16 ? 0xffffu : w <= 0 ? 0u : (1u << w) - 1u); }

// M live rows; the B panel is zero-padded, so both vectors are always computed and only the
// store is masked to n columns.
template <int M>
void tile_kernel(const Bf16Tile& t) {
  __m512 acc[M][2];
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  const uint32_t* a = reinterpret_cast<const uint32_t*>(t.a);
  const uint16_t* b = t.b;
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r) {
    __builtin_prefetch(t.c + r * t.ldc, 1);
    __builtin_prefetch(t.c + r * t.ldc + kBf16NR - 1, 1);
  }
  const int64_t pairs = t.k / 2;
#pragma GCC unroll 2
  for (int64_t q = 0; q < pairs; ++q) {
    const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b));
    const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 32));
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) {
      const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a[r])));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
    }
    a += MR;
    b += 2 * kBf16NR;
  }
  const __mmask16 m0 = lanes(t.n), m1 = lanes(t.n - 16);
  __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
  if (t.bias) {
    bias0 = _mm512_maskz_loadu_ps(m0, t.bias);
    bias1 = _mm512_maskz_loadu_ps(m1, t.bias + 16);
  }
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r) {
    float* row = t.c + r * t.ldc;
    __m512 x0 = acc[r][0], x1 = acc[r][1];
    if (t.load_c) {
      x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, row));
      x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, row + 16));
    }
    if (t.bias) {
      x0 = _mm512_add_ps(x0, bias0);
      x1 = _mm512_add_ps(x1, bias1);
    }
    _mm512_mask_storeu_ps(row, m0, x0);
    _mm512_mask_storeu_ps(row + 16, m1, x1);
  }
  if (t.act != Activation::none) bf16_activate(t);
}

using TileFn = void (*)(const Bf16Tile&);

template <int... Ms>
constexpr auto make_table(std::integer_sequence<int, Ms...>) {
  struct Table { TileFn fn[sizeof...(Ms)]; } table{{&tile_kernel<Ms + 1>...}};
  return table;
}

}  // namespace

void bf16_microkernel_avx512(const Bf16Tile& t) {
  static constexpr auto table = make_table(std::make_integer_sequence<int, MR>{});
  table.fn[t.m - 1](t);
}

}  // namespace isa_avx512_ext
}  // namespace fusegrad
