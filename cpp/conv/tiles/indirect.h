// The indirect micro-tile: an MR×NR block of an implicit GEMM whose A rows are gathered through
// pointers into the input (or gy), so no patch matrix is ever built. The forward, the phase form
// of backward-input and the scatter form's GEMM all run on it. Instantiated per row count, vector
// count and fixed run length; run_indirect picks the instantiation at run time.
#pragma once
#include <cstdint>
#include <utility>

#include "activation/activation.h"
#include "conv/blocking.h"
#include "gemm/microkernel_impl.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

// One MR×NR output tile of an implicit GEMM whose A rows are gathered through pointers:
// for tap t and row r, a[t * R + r] points at `run_len` contiguous floats (an input pixel's
// channels, a kernel row's merged taps, a gy pixel's C_out, or a zero row for padding). B is a
// packed panel of (ntaps * run_len) × kNR floats.
// Every one of the R rows is computed; rows past `m` read zeros and store to a scratch row,
// so one instantiation per vector count serves every tile.
struct IndirectTile {
  int64_t ntaps = 0, run_len = 0;
  const float* const* a = nullptr;
  const float* b = nullptr;
  int64_t b_panel = 0;        // floats from one packed B panel to the next (wide tile)
  float* const* c = nullptr;  // R row pointers
  int64_t c_col = 0;          // column offset of this panel, added to every row pointer
  int m = 0, n = 0;           // live rows (for the activation) and live columns
  const float* bias = nullptr;
  Activation act = Activation::none;
  float act_param = 0.0f;
  // When set, `a` holds just R pointers, one per row (where the row's first tap starts), and tap
  // t of row r starts at a[r] + tap_off[t]: for tiles whose pixels have the same taps inside the
  // image, this replaces the R × ntaps pointer table that otherwise costs a sixth of a first
  // layer's time.
  const int64_t* tap_off = nullptr;
  // When set, tap t reads B from b + tap_b[t] (run r of B starts at r * run_len * NR floats): the
  // tile then reads only those taps of B, skipping the ones that fall on padding for all its rows.
  // Unset, the taps read B one after another.
  const int64_t* tap_b = nullptr;
  bool accumulate = false;    // add the product to what the C rows hold (no bias or activation then)
};

template <Activation kind>
void activate_rows(const IndirectTile& t) {
  const VecF pv = set1(t.act_param);
  for (int r = 0; r < t.m; ++r) {
    float* row = t.c[r] + t.c_col;
    int j = 0;
    for (; j + W <= t.n; j += W) store(row + j, activation_forward<kind>(load(row + j), pv));
    if (j < t.n) store_partial(row + j, activation_forward<kind>(load_partial(row + j, t.n - j), pv), t.n - j);
  }
}

template <int R, int V, int kRunLen>
void indirect_tile(const IndirectTile& t) {
  VecF acc[R][V];
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = set1(0.0f);

  // Start fetching the output rows now: they are written only after the tap loop, and in a large
  // output they have long left the caches (the GEMM microkernel does the same with its C tile).
  // Not for fixed short runs (first layers): their tap loop is too short for the lines to arrive
  // much before the stores, and the prefetches measured 5-10% slower there.
  if constexpr (kRunLen == 0) {
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r) {
      __builtin_prefetch(t.c[r] + t.c_col, 1);
      __builtin_prefetch(t.c[r] + t.c_col + V * W - 1, 1);
    }
  }
  const float* b = t.b;
  // One step of the run: NR columns of B against one float of each row.
  const auto step = [&](const float* const* rows, int64_t pos) __attribute__((always_inline)) {
    VecF bv[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) bv[v] = load(b + (v / kNV) * t.b_panel + (v % kNV) * W);
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r) {
      const VecF av = set1(rows[r][pos]);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[r][v] = fmadd(av, bv[v], acc[r][v]);
    }
    b += kNR;
  };
  for (int64_t tap = 0; tap < t.ntaps; ++tap) {
    const float* rows[R];
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r) rows[r] = t.tap_off ? t.a[r] + t.tap_off[tap] : t.a[tap * R + r];
    if (t.tap_b) b = t.b + t.tap_b[tap];
    if constexpr (kRunLen > 0) {
#pragma GCC unroll 16
      for (int pos = 0; pos < kRunLen; ++pos) step(rows, pos);
    } else {
      // Not unrolled: an unrolled copy made GCC spill row pointers and B vectors to the stack.
#pragma GCC unroll 1
      for (int64_t pos = 0; pos < t.run_len; ++pos) step(rows, pos);
    }
  }

  const int last_w = t.n - (V - 1) * W;
  VecF bias[V];
  if (t.bias) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) bias[v] = ukernel::load_w(t.bias + v * W, v == V - 1 ? last_w : W);
  }
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r) {
    float* row = t.c[r] + t.c_col;
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      VecF x = acc[r][v];
      if (t.accumulate) x = x + ukernel::load_w(row + v * W, v == V - 1 ? last_w : W);
      if (t.bias) x = x + bias[v];
      ukernel::store_w(row + v * W, x, v == V - 1 ? last_w : W);
    }
  }
  if (t.act != Activation::none) {
    with_activation(t.act, [&](auto kind) {
      if constexpr (decltype(kind)::value != Activation::none) activate_rows<decltype(kind)::value>(t);
    });
  }
}

using IndirectFn = void (*)(const IndirectTile&);

template <int R, int... Vs, int... Cs>
constexpr auto make_indirect_table(std::integer_sequence<int, Vs...>, std::integer_sequence<int, Cs...>) {
  struct Table { IndirectFn fn[sizeof...(Vs)][sizeof...(Cs)]; } table{};
  auto row = [&](auto v) {
    int i = 0;
    ((table.fn[decltype(v)::value][i++] = &indirect_tile<R, decltype(v)::value + 1, Cs>), ...);
  };
  (row(std::integral_constant<int, Vs>{}), ...);
  return table;
}

// rows: as tile_shape chose them for t.n columns and runs of t.run_len floats. The tables are static
// locals of an inline function in this ISA level's namespace: one set per level, shared by every
// file that runs the tile. Kept out of line (a call per tile and panel): inlined into the workers'
// loops it measured no faster, and the fused max-pool 1-2% slower.
__attribute__((noinline)) inline void run_indirect(const IndirectTile& t, int rows) {
  static const auto narrow = make_indirect_table<kConvMR>(std::make_integer_sequence<int, kNV>{}, FixedLens{});
  static const auto tall = make_indirect_table<kFixedRunMR>(std::make_integer_sequence<int, kNV>{}, FixedLens{});
  static const auto wide = make_indirect_table<kWideMR>(std::make_integer_sequence<int, kMaxV>{}, FixedLens{});
  const int v = (t.n + W - 1) / W;
  const int cv = fixed_len_index(t.run_len);
  if (rows == kWideMR && kHasWideTile) wide.fn[v - 1][cv](t);
  else if (rows == kFixedRunMR && cv > 0) tall.fn[v - 1][cv](t);
  else narrow.fn[v - 1][cv](t);
}

// Rows per tile and NR panels per tile for an indirect GEMM with n output columns, reading its
// A rows in runs of run_len floats.
inline void tile_shape(int64_t n, int64_t run_len, int& rows, int& panels) {
  const bool wide = kHasWideTile && n > kNR;
  rows = wide ? kWideMR : fixed_len_index(run_len) > 0 ? kFixedRunMR : kConvMR;
  panels = wide ? 2 : 1;
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
