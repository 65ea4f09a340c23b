// The gather micro-tile of backward-input's gather form (first layers, stride 1): R consecutive
// gx pixels × C_in channels, each the sum over taps and C_out of gy · w with C_out along the
// vector lanes, reduced by one transpose at the end. Reads gy from the zero-bordered, plane-split
// band copy that GatherWorker (backward_input_gather.h) builds.
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>

#include "conv/blocking.h"
#include "gemm/microkernel_impl.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

// One tile of the gather form (backward_input_gather.cpp has the layout of the copy it reads).
struct GatherTile {
  const float* g;        // the copy's first plane at the tile's first pixel
  const int64_t* off;    // per (tap, plane) step: floats from there to the first vector it reads
  int64_t steps;         // taps × planes
  const float* w;        // per step, C_in vectors of W weights (packed, zero past C_out)
  float* out;            // R × C_in floats
};

template <int R, int kCin>
void gather_tile(const GatherTile& t) {
  constexpr int kAcc = R * kCin, kSlots = (kAcc + W - 1) / W * W;
  VecF acc[kSlots];  // the slots past kAcc stay zero: they pad the last reduction block
#pragma GCC unroll 64
  for (int i = 0; i < kSlots; ++i) acc[i] = set1(0.0f);
  const float* w = t.w;
  for (int64_t step = 0; step < t.steps; ++step, w += kCin * W) {
    const float* g = t.g + t.off[step];
    VecF wv[kCin];
#pragma GCC unroll 4
    for (int ci = 0; ci < kCin; ++ci) wv[ci] = load(w + ci * W);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      VecF gv = load(g + r * W);
#if defined(__x86_64__)
      // One load per vector: left alone, GCC folds it into each of the C_in FMAs, tripling the loads.
      if constexpr (kCin > 1) asm("" : "+v"(gv.v));
#endif
#pragma GCC unroll 4
      for (int ci = 0; ci < kCin; ++ci) acc[r * kCin + ci] = fmadd(gv, wv[ci], acc[r * kCin + ci]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < kAcc; i += W) ukernel::store_w(t.out + i, sum_lanes(acc + i), std::min(W, kAcc - i));
}

// Pixels per gather tile for C_in channels (kGatherAcc).
constexpr int gather_rows(int cin) {
  int r = 1;
  while (2 * r * cin <= kGatherAcc) r *= 2;
  return r;
}

using GatherFn = void (*)(const GatherTile&);

template <int... Cs>
constexpr auto make_gather_table(std::integer_sequence<int, Cs...>) {
  struct Table { GatherFn fn[sizeof...(Cs)]; } table{{&gather_tile<gather_rows(Cs + 1), Cs + 1>...}};
  return table;
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
