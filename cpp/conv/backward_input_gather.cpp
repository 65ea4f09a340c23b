// Backward-input, gather form (backward_input_gather.h describes it).
#include "conv/backward_input_gather.h"

#include <algorithm>

#include "conv/backward_input.h"
#include "conv/geometry.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

GatherPlan::GatherPlan(const ConvShape& s, const float* w) {
  static const auto table = make_gather_table(std::make_integer_sequence<int, kDirectMaxCin>{});
  tile = table.fn[s.c - 1];
  rows = gather_rows(static_cast<int>(s.c));
  // The pixel that the last tap (KH-1, KW-1) of gx pixel (ih0, 0) reads is the copy's corner.
  ext_h = (s.kh - 1) * s.dh;
  ext_w = (s.kw - 1) * s.dw;
  top = s.pt - ext_h;
  left = s.pl - ext_w;
  copy_w = s.w + ext_w;
  planes = ceil_div(s.co, W);
  band_rows = std::clamp<int64_t>(kGatherBandBytes / (4 * copy_w * planes * W) - ext_h, 1, s.h);
  bands = ceil_div(s.h, band_rows);
  plane_floats = ((band_rows + ext_h) * copy_w + rows) * W;  // `rows` zero pixels of slack at the end
  q0 = std::max<int64_t>(0, -left);
  q1 = std::min(copy_w, s.ow - left);
  step_off.resize(static_cast<size_t>(s.kh * s.kw * planes));
  wpack.assign(step_off.size() * s.c * W, 0.0f);
  for (int64_t i = 0; i < s.kh; ++i)
    for (int64_t j = 0; j < s.kw; ++j)
      for (int64_t plane = 0; plane < planes; ++plane) {
        const int64_t step = (i * s.kw + j) * planes + plane;
        step_off[step] = plane * plane_floats + ((ext_h - i * s.dh) * copy_w + ext_w - j * s.dw) * W;
        for (int64_t ci = 0; ci < s.c; ++ci)
          for (int64_t l = 0; l < W && plane * W + l < s.co; ++l)
            wpack[(step * s.c + ci) * W + l] = w[((i * s.kw + j) * s.c + ci) * s.co + plane * W + l];
      }
}

void GatherWorker::run(const float* gy, float* gx, int64_t img, int64_t band, int64_t next_img, int64_t next_band) {
  const GatherPlan& p = plan_;
  const int64_t ih0 = band * p.band_rows, nb = std::min(s_.h, ih0 + p.band_rows) - ih0, co = s_.co;
  for (int64_t b = 0; b < nb + p.ext_h; ++b) {
    const int64_t gy_row = ih0 + p.top + b;
    if (gy_row < 0 || gy_row >= s_.oh || p.q0 >= p.q1) {
      for (int64_t plane = 0; plane < p.planes; ++plane)
        std::memset(copy_ + plane * p.plane_floats + b * p.copy_w * W, 0,
                    static_cast<size_t>(p.copy_w * W) * sizeof(float));
      continue;
    }
    const float* src = gy + ((img * s_.oh + gy_row) * s_.ow + p.left) * co;
    for (int64_t plane = 0; plane < p.planes; ++plane) {
      float* dst = copy_ + plane * p.plane_floats + b * p.copy_w * W;
      if (co - plane * W >= W) {
        for (int64_t q = p.q0; q < p.q1; ++q) store(dst + q * W, load(src + q * co + plane * W));
      } else {
        const int n = static_cast<int>(co - plane * W);
        for (int64_t q = p.q0; q < p.q1; ++q) store(dst + q * W, load_partial(src + q * co + plane * W, n));
      }
    }
  }
  // Tiles over positions b * copy_w + q of the band's gx rows, up to the last real pixel.
  const int64_t end = (nb - 1) * p.copy_w + s_.w;
  const char* pf = nullptr;
  int64_t pf_lines = 0, pf_per_tile = 0;
  if (next_img >= 0) {
    const int64_t first = next_band * p.band_rows + p.top;
    const int64_t lo = std::clamp<int64_t>(first, 0, s_.oh),
                  hi = std::clamp<int64_t>(first + p.band_rows + p.ext_h, 0, s_.oh);
    pf = reinterpret_cast<const char*>(gy + (next_img * s_.oh + lo) * s_.ow * co);
    pf_lines = (hi - lo) * s_.ow * co * 4 / 64;
    pf_per_tile = ceil_div(pf_lines, ceil_div(end, p.rows));
  }
  GatherTile t;
  t.off = p.step_off.data();
  t.steps = static_cast<int64_t>(p.step_off.size());
  t.w = p.wpack.data();
  for (int64_t pos = 0; pos < end; pos += p.rows) {
    for (int64_t l = 0; l < pf_per_tile && pf_lines > 0; ++l, --pf_lines, pf += 64) __builtin_prefetch(pf, 0, 2);
    t.g = copy_ + pos * W;
    t.out = out_.data() + pos * s_.c;
    p.tile(t);
  }
  for (int64_t b = 0; b < nb; ++b)
    std::memcpy(gx + ((img * s_.h + ih0 + b) * s_.w) * s_.c, out_.data() + b * p.copy_w * s_.c,
                static_cast<size_t>(s_.w * s_.c) * sizeof(float));
}

void backward_input_gather(const ConvShape& s, const float* gy, const float* w, float* gx) {
  const GatherPlan plan(s, w);
  const double unit_flops = 2.0 * double(plan.band_rows * s.w) * double(s.kh * s.kw * s.c * s.co);
  const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kThreadFlops / unit_flops));
  parallel_for(s.n * plan.bands, grain, [&](int64_t u0, int64_t u1) {
    GatherWorker worker(s, plan);
    for (int64_t u = u0; u < u1; ++u) {
      const bool last = u + 1 == u1;
      worker.run(gy, gx, u / plan.bands, u % plan.bands, last ? -1 : (u + 1) / plan.bands, (u + 1) % plan.bands);
    }
  });
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
