// Backward-input's gather form (stride 1, C_in <= kDirectMaxCin: first layers): its plan and
// worker, shared by backward_input_gather (backward_input_gather.cpp) and the fused first-layer
// backward (backward.cpp), which runs a worker band by band between its other passes.
//
// Every gx pixel sums its taps' dot products over C_out, gx[p, ci] = Σ_tap Σ_co gy[p - tap, co] ·
// w[tap, ci, co], with C_out along the vector lanes. A tile of R consecutive pixels keeps R*C_in
// accumulators, and one transposing reduction (sum_lanes) turns each W of them into W consecutive
// output floats (a pixel's channels are consecutive, and so are a row's pixels). The scatter form
// spends 16 FMA lanes on K = 9 for C_in = 1 and then adds each patch into gx with
// read-modify-writes; here no lane is idle for C_out a multiple of W, and each gx float is written
// once.
//
// gy is read from a copy of a band of its rows, zero-bordered, split into planes of W channels:
//   - a pixel's taps that fall outside gy read zeros, so border pixels need no tests;
//   - a tile's R pixels are R vectors W floats apart, read at fixed displacements from one
//     pointer (with C_out floats between pixels, GCC kept R pointers and spilled them);
//   - the last plane's lanes past C_out are zeros, so no load needs a mask;
//   - the tiles run on across the copy's rows, the KW-1 border columns between two rows
//     included: their outputs are dropped, and no row is left with a tail of smaller tiles.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "conv/blocking.h"
#include "conv/conv.h"
#include "conv/tiles/gather.h"
#include "gemm/pack.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

// What every gather unit (a band of one image's gx rows) shares, prepared once per call.
struct GatherPlan {
  GatherFn tile;
  int rows;                          // pixels per tile
  int64_t ext_h, ext_w, top, left;   // copy row b, column q hold gy pixel (ih0 + top + b, left + q)
  int64_t copy_w;                    // pixels per row of the copy
  int64_t planes;                    // planes of W channels of gy
  int64_t band_rows, bands;          // gx rows per band; bands per image
  int64_t plane_floats;              // floats per plane of the copy
  int64_t q0, q1;                    // the copy's columns that gy fills
  std::vector<int64_t> step_off;     // per (tap, plane) step, as GatherTile::off
  std::vector<float> wpack;          // per step, C_in vectors of W weights

  GatherPlan(const ConvShape& s, const float* w);
};

// One thread's gather units: its band copy and output rows.
class GatherWorker {
 public:
  // The copy is 64-byte aligned, as every plane and pixel in it then is: a tile's loads never
  // straddle two cache lines (with malloc's 16-byte alignment they all did, at 60% of the speed).
  GatherWorker(const ConvShape& s, const GatherPlan& plan)
      : s_(s), plan_(plan), copy_(copy_buffer_.get(plan.planes * plan.plane_floats)),
        out_(static_cast<size_t>((plan.band_rows * plan.copy_w + plan.rows) * s.c)) {
    std::memset(copy_, 0, static_cast<size_t>(plan.planes * plan.plane_floats) * sizeof(float));
  }

  // gx rows of band `band` of image img. next_img/next_band: the unit this thread runs next (or
  // next_img < 0), whose gy rows the tiles prefetch into L2 as they go: the copy then finds them
  // there instead of stalling on every line (a third of the pass when measured without).
  void run(const float* gy, float* gx, int64_t img, int64_t band, int64_t next_img, int64_t next_band);

 private:
  const ConvShape& s_;
  const GatherPlan& plan_;
  PackBuffer copy_buffer_;
  float* copy_;
  std::vector<float> out_;
};

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
