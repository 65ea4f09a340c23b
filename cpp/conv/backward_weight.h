// Backward-weight's plan and worker, shared by conv_backward_weight (backward_weight.cpp) and the
// fused first-layer backward (backward.cpp), which runs a worker image by image.
//
// gw (K × C_out) = Σ over output pixels of patch(pixel)ᵀ · gy(pixel). Element kk of a pixel's
// patch is the input float at a fixed offset (corner[kk]) from the pixel's patch corner, so a
// tile of R K rows × V vectors of C_out broadcasts its R patch values straight from the input:
// one pointer per K row, advanced by the stride, and no im2col copy. That copy cost first layers
// more than the 2*K*C_out FMAs of a pixel, and the others 10-15% of the pass (it wrote K floats
// per pixel, and the tiles then read them a cache line per pixel instead of C_in floats apart).
// The tile keeps its gw block in registers over a whole segment of pixels.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "conv/conv.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

// What every backward-weight segment shares, prepared once per call. The tiles read the input
// in "padded coordinates": x itself when every tap of every pixel lands inside it, else a copy of
// the rows a segment needs with the padding made of zeros (per thread and segment, so it is in L2
// when the tiles read it; a padded copy of all of x would be 19 MB for a 64x32x32x64 input,
// written to memory and read back).
struct PatchPlan {
  int64_t k;
  bool padded;
  int64_t row_pixels, ld;         // pixels and floats per input row where the tiles read
  int64_t span;                   // input rows under one output row's patches
  std::vector<int64_t> corner;    // HWIO order: kk = (i * KW + j) * C + ch
  // The tile: the wide tile (kWideMR K rows × two NR panels) when C_out spans more than one
  // panel, else the GEMM's kMR × NR.
  int tile_rows;
  int64_t tile_cols;
  int64_t segment_rows;           // output rows per segment (kPatchSegmentBytes)
  std::vector<std::pair<int64_t, int64_t>> group_rows, group_cols;  // per K group: output rows, columns

  explicit PatchPlan(const ConvShape& s);
};

// One thread's backward-weight segments: its padded copy and row offsets.
class PatchWorker {
 public:
  PatchWorker(const ConvShape& s, const PatchPlan& plan) : s_(s), plan_(plan) {}

  // dst (K × C_out) += patchesᵀ · gy over output rows [r0, r1) of the N*OH rows (row r is row
  // r % OH of image r / OH); a segment, as the tiles read its gy and input rows from L2.
  void add_rows(const float* x, const float* gy, int64_t r0, int64_t r1, float* dst);

 private:
  const ConvShape& s_;
  const PatchPlan& plan_;
  std::vector<float> copy_;
  std::vector<int64_t> row_off_, used_;
};

// Threads split the output rows: thread 0 accumulates into gw itself, thread t into
// partials[(t - 1) * size ...]; this adds the partials into gw.
void add_partials(float* gw, const std::vector<float>& partials, int nthreads, int64_t size);

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
