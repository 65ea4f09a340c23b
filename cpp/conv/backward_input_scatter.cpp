// Backward-input, scatter form (small C_in): patch gradients P (pixels × K) = gy · wᵀ in row
// tiles, each added into gx tap by tap right away: from the registers when runs are whole panels
// long, else from a tile buffer still in L1. Threads take whole images, so no two threads ever add
// into the same gx pixel; within a thread the rows of a tile add in order, so overlapping patches
// are summed.
#include <algorithm>
#include <cstring>
#include <vector>

#include "conv/backward_input.h"
#include "conv/blocking.h"
#include "conv/geometry.h"
#include "conv/tiles/indirect.h"
#include "gemm/microkernel.h"
#include "gemm/pack.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {
namespace {

// dst[0:n] += src[0:n].
void add_into(float* dst, const float* src, int64_t n) {
  if (n < W) {
    // First layers' runs (3 or 9 floats): a masked load and a masked store per run cost more
    // than these scalar adds (Zen 4 runs masked stores several times slower than plain ones).
    for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
    return;
  }
  int64_t i = 0;
  for (; i + W <= n; i += W) store(dst + i, load(dst + i) + load(src + i));
  if (i < n) store_partial(dst + i, load_partial(dst + i, int(n - i)) + load_partial(src + i, int(n - i)), int(n - i));
}

}  // namespace

void backward_input_scatter(const ConvShape& s, const float* gy, const float* w, float* gx) {
  const int64_t k = s.kh * s.kw * s.c, ohw = s.oh * s.ow, hwc = s.h * s.w * s.c;
  const int64_t np = ceil_div(k, kNR), ldp = np * kNR;
  PackBuffer wpack;
  float* bp = wpack.get(std::max<int64_t>(np * s.co * kNR, 1));
  // B = wᵀ (C_out × K): element (co, kk) at w[kk * C_out + co], a column-major view.
  if (s.co > 0) pack_b(w, 1, s.co, s.co, k, bp);
  const RunPlan run_plan = plan_runs(s);
  const std::vector<int64_t> offsets = run_offsets(s, run_plan);
  const double image_flops = 2.0 * double(ohw) * double(k) * double(std::max<int64_t>(s.co, 1));
  const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kThreadFlops / std::max(image_flops, 1.0)));

  if (run_plan.len % kNR == 0) {
    // Every NR-column panel of P lies inside one run, so a row's panel is NR consecutive floats
    // of gx: the indirect tile adds it there straight from its registers (per-row C pointers),
    // with no tile buffer and no second pass.
    parallel_for(s.n, grain, [&](int64_t n0, int64_t n1) {
      const std::vector<float> zeros(static_cast<size_t>(s.co), 0.0f);
      std::vector<float> scratch(static_cast<size_t>(kNR));
      const float* a[kConvMR];
      float* crow[kConvMR];
      const int64_t* orow[kConvMR];
      float* gxrow[kConvMR];
      IndirectTile t;
      t.ntaps = 1;
      t.run_len = s.co;
      t.a = a;
      t.c = crow;
      t.accumulate = true;
      int64_t img = n0, pix = 0;  // of the tile's next row
      for (int64_t m0 = n0 * ohw; m0 < n1 * ohw; m0 += kConvMR) {
        const int live = static_cast<int>(std::min<int64_t>(kConvMR, n1 * ohw - m0));
        for (int r = 0; r < kConvMR; ++r) {
          if (r < live) {
            if (pix == 0) std::memset(gx + img * hwc, 0, static_cast<size_t>(hwc) * sizeof(float));
            a[r] = gy + (m0 + r) * s.co;
            orow[r] = offsets.data() + pix * run_plan.runs;
            gxrow[r] = gx + img * hwc;
            if (++pix == ohw) pix = 0, ++img;
          } else {
            a[r] = zeros.data();
            orow[r] = nullptr;
          }
        }
        t.m = live;
        for (int64_t jp = 0; jp < np; ++jp) {
          const int64_t run = jp * kNR / run_plan.len, col = jp * kNR - run * run_plan.len;
          for (int r = 0; r < kConvMR; ++r)
            crow[r] = orow[r] && orow[r][run] >= 0 ? gxrow[r] + orow[r][run] + col : scratch.data();
          t.b = bp + jp * s.co * kNR;
          t.n = kNR;
          run_indirect(t, kConvMR);
        }
      }
    });
    return;
  }

  parallel_for(s.n, grain, [&](int64_t n0, int64_t n1) {
    PackBuffer tile_buffer;
    float* patch_grads = tile_buffer.get(kMR * ldp);  // kMR rows of P, ldp floats apart
    // The thread's images are one run of gy rows: tiles run on across image boundaries, so only
    // the thread's last tile is partial (per image, 13x13 pixels would leave 7 of 12 rows idle
    // in every 15th tile). Each image's gx is zeroed just before its first row adds into it.
    const int64_t m_begin = n0 * ohw, m_end = n1 * ohw;
    int64_t img = n0, pix = 0;  // of the next row to add in
    std::memset(gx + n0 * hwc, 0, static_cast<size_t>(hwc) * sizeof(float));
    for (int64_t m0 = m_begin; m0 < m_end; m0 += kMR) {
      const int live = static_cast<int>(std::min<int64_t>(kMR, m_end - m0));
      MicroTile t;
      t.k = s.co;
      t.a = gy + m0 * s.co;
      t.ldb = kNR;
      t.b_padded = true;
      t.ldc = ldp;
      t.m = live;
      for (int64_t jp = 0; jp < np; ++jp) {
        t.b = bp + jp * s.co * kNR;
        t.c = patch_grads + jp * kNR;
        // Whole vectors: the tile buffer has room for them, the zero padding of B makes the extra
        // columns zeros, and a masked store per row (Zen 4: several times slower) is avoided.
        t.n = static_cast<int>(std::min<int64_t>(kNR, ceil_div(k - jp * kNR, W) * W));
        microkernel_strided_a(t, s.co, 1);
      }
      for (int r = 0; r < live; ++r) {
        float* gxi = gx + img * hwc;
        const int64_t* o = offsets.data() + pix * run_plan.runs;
        const float* row_grads = patch_grads + r * ldp;
        for (int64_t run = 0; run < run_plan.runs; ++run)
          if (o[run] >= 0) add_into(gxi + o[run], row_grads + run * run_plan.len, run_plan.len);
        if (++pix == ohw && ++img < n1) {
          pix = 0;
          std::memset(gx + img * hwc, 0, static_cast<size_t>(hwc) * sizeof(float));
        }
      }
    }
  });
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
