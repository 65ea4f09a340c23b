// The register-blocked microkernel, written once on VecF and instantiated by each per-ISA file
// with that level's tile (microkernel.h). Every edge tile gets its own instantiation with exactly
// the live rows M <= MR and live vectors V <= NR / W, so edges cost no wasted FMAs beyond the
// last partial vector, and the accumulators of every instantiation are compile-time registers.
#pragma once
#include <utility>

#include "activation/activation_math.h"
#include "common/simd.h"
#include "gemm/microkernel.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace ukernel {

constexpr int W = kVecWidth;
constexpr int kNV = kNR / W;  // vectors per tile row
static_assert(kNR % W == 0, "NR must be a whole number of vectors");

inline VecF load_w(const float* p, int w) { return w == W ? load(p) : load_partial(p, w); }
inline void store_w(float* p, VecF x, int w) {
  if (w == W) store(p, x); else store_partial(p, x, w);
}

// Activation on the tile just stored: it is still in L1 (at most MR×NR floats = 1.5 KiB), so
// this is part of the store, not a pass over C in memory. Kept out of the FMA kernel so the
// kernel is instantiated per tile shape only, not per shape and activation.
template <Activation kind>
void activate_tile(float* c, int64_t ldc, int m, int n, float param) {
  const VecF pv = set1(param);
  for (int r = 0; r < m; ++r) {
    float* row = c + r * ldc;
    int j = 0;
    for (; j + W <= n; j += W) store(row + j, activation_forward<kind>(load(row + j), pv));
    if (j < n) store_partial(row + j, activation_forward<kind>(load_partial(row + j, n - j), pv), n - j);
  }
}

inline void activate(const MicroTile& t, int m) {
  with_activation(t.act, [&](auto k) {
    if constexpr (decltype(k)::value != Activation::none)
      activate_tile<decltype(k)::value>(t.c, t.ldc, m, t.n, t.act_param);
  });
}

// M live rows, V live vectors (the last one holds n - (V-1)*W lanes). kStridedA: A read in place
// with runtime strides instead of a packed panel. kMaskB: B is unpadded, so its last vector is
// loaded under a mask (a padded panel is read whole; its zero columns are simply not stored).
template <int M, int V, bool kStridedA, bool kMaskB>
void tile_kernel(const MicroTile& t, int64_t a_rs, int64_t a_cs) {
  VecF acc[M][V];
#pragma GCC unroll 64
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = set1(0.0f);

  const int last_w = t.n - (V - 1) * W;
  const float* a = t.a;
  const float* b = t.b;
  const int64_t ar = kStridedA ? a_rs : 1;
  const int64_t ac = kStridedA ? a_cs : kMR;
  const int64_t ldb = t.ldb;
  // Start fetching the C tile now: its lines are needed only after the k loop, and with a
  // power-of-two row stride they tend to have been evicted from L1 since the last K block.
#pragma GCC unroll 64
  for (int r = 0; r < M; ++r) {
    __builtin_prefetch(t.c + r * t.ldc, 1);
    __builtin_prefetch(t.c + r * t.ldc + kNR - 1, 1);
  }
#pragma GCC unroll 4
  for (int64_t p = 0; p < t.k; ++p) {
    VecF bv[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v)
      bv[v] = (kMaskB && v == V - 1) ? load_partial(b + v * W, last_w) : load(b + v * W);
#pragma GCC unroll 64
    for (int r = 0; r < M; ++r) {
      const VecF av = set1(a[r * ar]);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[r][v] = fmadd(av, bv[v], acc[r][v]);
    }
    a += ac;
    b += ldb;
  }

  // Epilogue: (C +) product (+ bias), stored with the last vector masked.
  VecF bias[V];
  if (t.bias) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) bias[v] = load_w(t.bias + v * W, v == V - 1 ? last_w : W);
  }
#pragma GCC unroll 64
  for (int r = 0; r < M; ++r) {
    float* row = t.c + r * t.ldc;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const int w = v == V - 1 ? last_w : W;
      VecF x = acc[r][v];
      if (t.load_c) x = x + load_w(row + v * W, w);
      if (t.bias) x = x + bias[v];
      store_w(row + v * W, x, w);
    }
  }
  if (t.act != Activation::none) activate(t, M);
}

using TileFn = void (*)(const MicroTile&, int64_t, int64_t);

template <bool kStridedA, bool kMaskB, int... Ms, int... Vs>
constexpr auto make_table(std::integer_sequence<int, Ms...>, std::integer_sequence<int, Vs...>) {
  struct Table { TileFn fn[sizeof...(Ms)][sizeof...(Vs)]; } table{};
  auto row = [&](auto m) {
    ((table.fn[decltype(m)::value][Vs] = &tile_kernel<decltype(m)::value + 1, Vs + 1, kStridedA, kMaskB>), ...);
  };
  (row(std::integral_constant<int, Ms>{}), ...);
  return table;
}

template <bool kStridedA, bool kMaskB>
inline void dispatch(const MicroTile& t, int64_t a_rs, int64_t a_cs) {
  static const auto table = make_table<kStridedA, kMaskB>(std::make_integer_sequence<int, kMR>{},
                                                           std::make_integer_sequence<int, kNV>{});
  const int v = (t.n + W - 1) / W;
  table.fn[t.m - 1][v - 1](t, a_rs, a_cs);
}

}  // namespace ukernel

// Defines the two entry points of microkernel.h for the level including this file.
#define FG_DEFINE_MICROKERNEL_ENTRY_POINTS                                                \
  void microkernel(const MicroTile& t) {                                                  \
    if (t.b_padded) ukernel::dispatch<false, false>(t, 0, 0);                             \
    else ukernel::dispatch<false, true>(t, 0, 0);                                         \
  }                                                                                       \
  void microkernel_strided_a(const MicroTile& t, int64_t a_rs, int64_t a_cs) {            \
    if (t.b_padded) ukernel::dispatch<true, false>(t, a_rs, a_cs);                        \
    else ukernel::dispatch<true, true>(t, a_rs, a_cs);                                    \
  }

}  // namespace FG_ISA_NS
}  // namespace fusegrad
