// The backward pass in one call: any of gx, gw, gb. First layers run every pass image by image
// (backward_direct); the others call each pass in turn.
#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "conv/backward_bias.h"
#include "conv/backward_input_gather.h"
#include "conv/backward_weight.h"
#include "conv/blocking.h"
#include "conv/passes.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {
namespace {

// First layers with the weight gradient wanted (and the input's and bias's, when given): each
// thread takes whole images and runs every pass over one image before the next. The image's gy
// (86 KiB for a 26x26x32 output) then comes in from memory once, and the passes after the first
// find it in L2; as separate calls, each pass streams all of gy (11 MB at batch 128) in from L3
// or DRAM again, which in a training step cost as much as their FMAs. gx needs stride 1 (the
// gather form). gw arrives zeroed.
void backward_direct(const ConvShape& s, const float* x, const float* gy, const float* w, float* gx, float* gw,
                     float* gb) {
  const int64_t size = s.kh * s.kw * s.c * s.co, ohw = s.oh * s.ow;
  const PatchPlan patches(s);
  std::optional<GatherPlan> gather;
  if (gx) gather.emplace(s, w);
  const double flops = 2.0 * double(s.n * ohw) * double(size) * (gx ? 2 : 1);
  const int nthreads = std::min<int64_t>(threads_for(flops), s.n);
  std::vector<float> partials(static_cast<size_t>((nthreads - 1) * size), 0.0f);
  std::vector<double> bias_totals(gb ? static_cast<size_t>(nthreads * s.co) : 0, 0.0);
  run_on_threads(nthreads, [&](int tid) {
    float* dst = tid == 0 ? gw : partials.data() + (tid - 1) * size;
    std::optional<GatherWorker> worker;
    if (gx) worker.emplace(s, *gather);
    PatchWorker patch_worker(s, patches);
    const int64_t img0 = s.n * tid / nthreads, img1 = s.n * (tid + 1) / nthreads;
    for (int64_t img = img0; img < img1; ++img) {
      if (gx) {
        for (int64_t band = 0; band < gather->bands; ++band) {
          const bool last = band + 1 == gather->bands;
          const int64_t next_img = last ? (img + 1 < img1 ? img + 1 : -1) : img;
          worker->run(gy, gx, img, band, next_img, last ? 0 : band + 1);
        }
      }
      for (int64_t r = img * s.oh; r < (img + 1) * s.oh; r += patches.segment_rows)
        patch_worker.add_rows(x, gy, r, std::min((img + 1) * s.oh, r + patches.segment_rows), dst);
      if (gb) bias_rows(gy, s.co, img * ohw, (img + 1) * ohw, bias_totals.data() + tid * s.co);
    }
  });
  add_partials(gw, partials, nthreads, size);
  if (gb) sum_bias_totals(bias_totals, nthreads, s.co, gb);
}

}  // namespace

// All three gradients, each skipped where its pointer is null.
void conv_backward(const ConvShape& s, const float* x, const float* gy, const float* w, float* gx, float* gw,
                   float* gb) {
  const bool direct = gw && s.c > 0 && s.c <= kDirectMaxCin && (!gx || (s.sh == 1 && s.sw == 1)) &&
                      s.n * s.oh * s.ow > 0 && s.co > 0;
  if (direct) {
    std::memset(gw, 0, static_cast<size_t>(s.kh * s.kw * s.c * s.co) * sizeof(float));
    return backward_direct(s, x, gy, w, gx, gw, gb);
  }
  if (gx) conv_backward_input(s, gy, w, gx);
  if (gw) conv_backward_weight(s, x, gy, gw);
  if (gb) conv_backward_bias(gy, s.n * s.oh * s.ow, s.co, gb);
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
