// Forward: y = act(conv(x, w) + bias) as an implicit GEMM on the indirect tile (conv.h has the
// formulation), its tiles taken class by class so that none reads padding.
#include <algorithm>
#include <vector>

#include "conv/forward.h"
#include "conv/passes.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

ForwardPlan::ForwardPlan(const ConvShape& shape, const float* w)
    : s(shape), k(s.kh * s.kw * s.c), np(ceil_div(s.co, kNR)) {
  float* packed = wpack.get(std::max<int64_t>(np * k * kNR, 1));
  if (k > 0) pack_b(w, s.co, 1, k, s.co, packed);
  bp = packed;
  run_plan = plan_runs(s);
  offsets = run_offsets(s, run_plan);
  zeros.assign(static_cast<size_t>(std::max<int64_t>(run_plan.len, 1)), 0.0f);
  pixels = classify_pixels(s, run_plan, offsets);
  tile_shape(s.co, run_plan.len, rows, panels);
}

void conv_forward(const ConvShape& s, const float* x, const float* w, const float* bias, Activation act, float* y) {
  const int64_t m_total = s.n * s.oh * s.ow;
  if (m_total == 0 || s.co == 0) return;
  const ForwardPlan plan(s, w);
  const std::vector<PixelClass>& classes = plan.pixels.classes;
  const int R = plan.rows;
  const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kThreadFlops / plan.tile_flops()));
  if (classes.size() == 1) {
    // No padding: raster order, whose tiles run on across rows and images with no class ends.
    parallel_for(ceil_div(m_total, R), grain, [&](int64_t g0, int64_t g1) {
      RasterWorker worker(plan);
      for (int64_t g = g0; g < g1; ++g)
        worker.tile(x, g * R, static_cast<int>(std::min<int64_t>(R, m_total - g * R)), y + g * R * s.co, bias, act);
    });
    return;
  }
  // Tiles never mix classes: each class ends in its own partial tile.
  std::vector<int64_t> first_tile(classes.size() + 1, 0);
  for (size_t cls = 0; cls < classes.size(); ++cls)
    first_tile[cls + 1] = first_tile[cls] + ceil_div(s.n * static_cast<int64_t>(classes[cls].pixels.size()), R);
  parallel_for(first_tile.back(), grain, [&](int64_t g0, int64_t g1) {
    ClassWorker worker(plan);
    int32_t cls = 0;
    for (int64_t g = g0; g < g1; ++g) {
      while (first_tile[cls + 1] <= g) ++cls;
      const int64_t i0 = (g - first_tile[cls]) * R, count = s.n * static_cast<int64_t>(classes[cls].pixels.size());
      worker.tile(x, cls, i0, static_cast<int>(std::min<int64_t>(R, count - i0)), y, bias, act);
    }
  });
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
