// Backward-input, phase form (any stride). Input pixels with ih ≡ phase_h (mod sh),
// iw ≡ phase_w (mod sw) receive gradient only from the taps (i, j) with
// (phase_h + pt - i*dh) ≡ 0 (mod sh) and (phase_w + pl - j*dw) ≡ 0 (mod sw), each from the single
// output pixel oh = (ih + pt - i*dh) / sh, ow likewise. One indirect GEMM per phase: rows = that
// phase's input pixels, K = its taps × C_out, B = those taps of w transposed. No FMA is spent on
// the zeros a strided transposed convolution would insert.
#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "conv/backward_input.h"
#include "conv/blocking.h"
#include "conv/geometry.h"
#include "conv/tiles/indirect.h"
#include "gemm/pack.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace conv {

void backward_input_phases(const ConvShape& s, const float* gy, const float* w, float* gx) {
  const int64_t taps = s.kh * s.kw, ohw = s.oh * s.ow, np = ceil_div(s.c, kNR);
  // wt[tap][co][ci] = w[tap][ci][co]: each tap's K×N block of the transposed convolution.
  std::vector<float> wt(static_cast<size_t>(taps * s.co * s.c));
  for (int64_t tp = 0; tp < taps; ++tp)
    for (int64_t ci = 0; ci < s.c; ++ci)
      for (int64_t co = 0; co < s.co; ++co)
        wt[(tp * s.co + co) * s.c + ci] = w[(tp * s.c + ci) * s.co + co];
  const std::vector<float> zeros(static_cast<size_t>(std::max<int64_t>(s.co, 1)), 0.0f);
  PackBuffer wpack;
  std::vector<float> gathered;
  std::vector<int64_t> gy_off;

  // Phases past the input's size have no pixels: with a stride larger than the image (say 100000
  // on a 1x1 input) looping over all sh × sw phases would take minutes for nothing.
  for (int64_t phase_h = 0; phase_h < std::min(s.sh, s.h); ++phase_h) {
    for (int64_t phase_w = 0; phase_w < std::min(s.sw, s.w); ++phase_w) {
      // The phase's input pixels: phase_rows × phase_cols of them, every sh-th row and sw-th column.
      const int64_t phase_rows = s.h > phase_h ? ceil_div(s.h - phase_h, s.sh) : 0;
      const int64_t phase_cols = s.w > phase_w ? ceil_div(s.w - phase_w, s.sw) : 0;
      if (phase_rows == 0 || phase_cols == 0) continue;
      std::vector<std::pair<int64_t, int64_t>> phase_taps;  // (i, j)
      for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j)
          if (pos_mod(phase_h + s.pt - i * s.dh, s.sh) == 0 && pos_mod(phase_w + s.pl - j * s.dw, s.sw) == 0)
            phase_taps.emplace_back(i, j);
      const int64_t nt = static_cast<int64_t>(phase_taps.size()), k = nt * s.co;
      float* bp = wpack.get(std::max<int64_t>(np * k * kNR, 1));
      if (k > 0) {
        gathered.resize(static_cast<size_t>(k * s.c));
        for (int64_t tap = 0; tap < nt; ++tap) {
          const int64_t tp = phase_taps[tap].first * s.kw + phase_taps[tap].second;
          std::memcpy(gathered.data() + tap * s.co * s.c, wt.data() + tp * s.co * s.c,
                      static_cast<size_t>(s.co * s.c) * sizeof(float));
        }
        pack_b(gathered.data(), s.c, 1, k, s.c, bp);
      }
      // For each pixel of the phase (row-major in phase_rows × phase_cols) and phase tap: the gy
      // pixel's offset within one image, or -1 where that output pixel lies outside gy.
      gy_off.assign(static_cast<size_t>(phase_rows * phase_cols * std::max<int64_t>(nt, 1)), -1);
      for (int64_t row = 0; row < phase_rows; ++row)
        for (int64_t col = 0; col < phase_cols; ++col)
          for (int64_t tap = 0; tap < nt; ++tap) {
            const int64_t ih = phase_h + row * s.sh, iw = phase_w + col * s.sw;
            // The output pixel's row and column, times the stride.
            const int64_t oy_sh = ih + s.pt - phase_taps[tap].first * s.dh;
            const int64_t ox_sw = iw + s.pl - phase_taps[tap].second * s.dw;
            if (oy_sh < 0 || ox_sw < 0) continue;
            const int64_t oy = oy_sh / s.sh, ox = ox_sw / s.sw;
            if (oy < s.oh && ox < s.ow) gy_off[(row * phase_cols + col) * nt + tap] = (oy * s.ow + ox) * s.co;
          }

      int tile_rows, tile_panels;
      tile_shape(s.c, s.co, tile_rows, tile_panels);
      const int64_t per_image = phase_rows * phase_cols, m_total = s.n * per_image;
      const int64_t groups = ceil_div(m_total, tile_rows);
      const double group_flops = 2.0 * tile_rows * double(std::max<int64_t>(k, 1)) * double(s.c);
      const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(kThreadFlops / group_flops));
      parallel_for(groups, grain, [&](int64_t g0, int64_t g1) {
        const int R = tile_rows;
        std::vector<const float*> a(static_cast<size_t>(std::max<int64_t>(nt, 1) * R));
        std::vector<float> scratch(static_cast<size_t>((np + 1) * kNR));
        float* crow[kMaxTileRows];
        IndirectTile t;
        t.ntaps = nt;
        t.run_len = s.co;
        t.a = a.data();
        t.b_panel = k * kNR;
        t.c = crow;
        for (int64_t g = g0; g < g1; ++g) {
          const int64_t m0 = g * R;
          const int live = static_cast<int>(std::min<int64_t>(R, m_total - m0));
          int64_t img = m0 / per_image, q = m0 % per_image;  // q: the pixel's index in the phase
          for (int r = 0; r < R; ++r) {
            if (r < live) {
              const float* base = gy + img * ohw * s.co;
              const int64_t* o = gy_off.data() + q * nt;
              for (int64_t tap = 0; tap < nt; ++tap) a[tap * R + r] = o[tap] >= 0 ? base + o[tap] : zeros.data();
              const int64_t ih = phase_h + (q / phase_cols) * s.sh, iw = phase_w + (q % phase_cols) * s.sw;
              crow[r] = gx + ((img * s.h + ih) * s.w + iw) * s.c;
              if (++q == per_image) q = 0, ++img;
            } else {
              for (int64_t tap = 0; tap < nt; ++tap) a[tap * R + r] = zeros.data();
              crow[r] = scratch.data();
            }
          }
          t.m = live;
          for (int64_t jp = 0; jp < np; jp += tile_panels) {
            t.b = bp + jp * k * kNR;
            t.c_col = jp * kNR;
            t.n = static_cast<int>(std::min<int64_t>(tile_panels * kNR, s.c - jp * kNR));
            run_indirect(t, R);
          }
        }
      });
    }
  }
}

}  // namespace conv
}  // namespace FG_ISA_NS
}  // namespace fusegrad
