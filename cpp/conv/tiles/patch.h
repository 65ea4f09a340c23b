// The patch micro-tile of backward-weight: an R × (V vectors of C_out) block of gw, kept in
// registers over a whole segment of output pixels. Each K row's patch value is broadcast straight
// from the input (or its zero-padded copy) at a fixed offset from the pixel's patch corner, so no
// im2col matrix is built.
#pragma once
#include <cstdint>
#include <utility>

#include "conv/blocking.h"
#include "gemm/microkernel_impl.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

// R K rows × V vectors of C_out (the last one n - (V-1)*W lanes wide), added into gw.
struct PatchTile {
  const float* const* k_rows;  // R pointers: each K row's float at patch corner 0
  const int64_t* row_off;     // per output row of the segment: floats from patch corner 0 to its first pixel's
  const int64_t* used;        // the segment's rows that the tile runs over (null: all nused of them,
  int64_t nused, x0, x1;      // whole), and of each the pixels [x0, x1): where some of its taps land inside
  int64_t ow;                 // pixels per output row
  int64_t pixel_step;         // floats from one pixel's patch corner to the next one's
  const float* gy;            // gy at the segment's first pixel, this tile's first column; rows of ldg floats
  int64_t ldg;
  float* c;                   // gw at the tile's first row and column; rows of ldc floats
  int64_t ldc;
  int n;                      // live columns
};

template <int R, int V>
void patch_tile(const PatchTile& t) {
  VecF acc[R][V];
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = set1(0.0f);
  const int last_w = t.n - (V - 1) * W;
  const auto pixels = [&](int64_t off, const float* g, int64_t count) __attribute__((always_inline)) {
    for (int64_t xo = 0; xo < count; ++xo, off += t.pixel_step, g += t.ldg) {
      VecF bv[V];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) bv[v] = ukernel::load_w(g + v * W, v == V - 1 ? last_w : W);
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) {
        const VecF av = set1(t.k_rows[r][off]);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[r][v] = fmadd(av, bv[v], acc[r][v]);
      }
    }
  };
  if (!t.used) {
    // Every row, whole: gy runs on from one row to the next (no per-row address arithmetic, which
    // cost 5% on 4-pixel rows).
    for (int64_t y = 0; y < t.nused; ++y) pixels(t.row_off[y], t.gy + y * t.ow * t.ldg, t.ow);
  } else {
    for (int64_t u = 0; u < t.nused; ++u) {
      const int64_t y = t.used[u];
      pixels(t.row_off[y] + t.x0 * t.pixel_step, t.gy + (y * t.ow + t.x0) * t.ldg, t.x1 - t.x0);
    }
  }
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      float* dst = t.c + r * t.ldc + v * W;
      const int lanes = v == V - 1 ? last_w : W;
      ukernel::store_w(dst, acc[r][v] + ukernel::load_w(dst, lanes), lanes);
    }
}

using PatchFn = void (*)(const PatchTile&);

template <int... Rs, int... Vs>
constexpr auto make_patch_table(std::integer_sequence<int, Rs...>, std::integer_sequence<int, Vs...>) {
  struct Table { PatchFn fn[sizeof...(Rs)][sizeof...(Vs)]; } table{};
  auto row = [&](auto r) { ((table.fn[decltype(r)::value][Vs] = &patch_tile<decltype(r)::value + 1, Vs + 1>), ...); };
  (row(std::integral_constant<int, Rs>{}), ...);
  return table;
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
