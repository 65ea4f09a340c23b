// Depthwise convolution kernels (depthwise.h): loops over pixels and taps around one inner
// multiply-add along the channels. Rows of output (or input, for backward-input) are split
// between threads; the weight gradient sums per-thread partials.
#include "conv/depthwise.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/threads.h"
#include "conv/blocking.h"

namespace fusegrad {
namespace FG_ISA_NS {
namespace {

// acc[g·m + q] += a[g] · b[g·m + q] over C = groups·m outputs: the one inner loop. m = 1 (the
// common case) is a plain vector multiply-add.
inline void madd(float* __restrict__ acc, const float* __restrict__ a, const float* __restrict__ b, int64_t groups,
                 int64_t m) {
  if (m == 1) {
#pragma omp simd
    for (int64_t c = 0; c < groups; ++c) acc[c] += a[c] * b[c];
    return;
  }
  for (int64_t g = 0; g < groups; ++g) {
    const float v = a[g];
#pragma omp simd
    for (int64_t q = 0; q < m; ++q) acc[g * m + q] += v * b[g * m + q];
  }
}

// acc[g] += Σ_q a[g·m + q] · b[g·m + q]: backward-input's inner loop (each input channel gathers
// from its m outputs).
inline void madd_reduce(float* __restrict__ acc, const float* __restrict__ a, const float* __restrict__ b,
                        int64_t groups, int64_t m) {
  if (m == 1) {
#pragma omp simd
    for (int64_t c = 0; c < groups; ++c) acc[c] += a[c] * b[c];
    return;
  }
  for (int64_t g = 0; g < groups; ++g) {
    float s = 0.0f;
    for (int64_t q = 0; q < m; ++q) s += a[g * m + q] * b[g * m + q];
    acc[g] += s;
  }
}

// Calls fn(tap, iy, ix) for the taps (tap = i·KW + j) of output pixel (oy, ox) that land inside
// the input.
template <class Fn>
inline void for_taps_inside(const ConvShape& s, int64_t oy, int64_t ox, Fn&& fn) {
  for (int64_t i = 0; i < s.kh; ++i) {
    const int64_t iy = oy * s.sh - s.pt + i * s.dh;
    if (iy < 0 || iy >= s.h) continue;
    for (int64_t j = 0; j < s.kw; ++j) {
      const int64_t ix = ox * s.sw - s.pl + j * s.dw;
      if (ix >= 0 && ix < s.w) fn(i * s.kw + j, iy, ix);
    }
  }
}

// Rows per thread chunk: enough multiply-adds (~kThreadFlops) to pay for waking a thread.
int64_t row_grain(const ConvShape& s, int64_t width, int64_t channels) {
  const double row = 2.0 * double(width) * double(s.kh * s.kw) * double(std::max<int64_t>(channels, 1));
  return std::max<int64_t>(1, static_cast<int64_t>(conv::kThreadFlops / std::max(row, 1.0)));
}

void forward(const ConvShape& s, int64_t groups, const float* x, const float* w, const float* bias, float* y) {
  const int64_t ci = groups, co = groups * s.co;
  parallel_for(s.n * s.oh, row_grain(s, s.ow, co), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t img = r / s.oh, oy = r % s.oh;
      for (int64_t ox = 0; ox < s.ow; ++ox) {
        float* out = y + (r * s.ow + ox) * co;
        if (bias) std::memcpy(out, bias, sizeof(float) * co);
        else std::memset(out, 0, sizeof(float) * co);
        for_taps_inside(s, oy, ox, [&](int64_t tap, int64_t iy, int64_t ix) {
          madd(out, x + ((img * s.h + iy) * s.w + ix) * ci, w + tap * co, groups, s.co);
        });
      }
    }
  });
}

// Each input pixel gathers from the outputs whose taps land on it: tap i reads output row oy
// where oy·sh = iy + pt − i·dh. No scatter, so rows split between threads without conflicts.
void backward_input(const ConvShape& s, int64_t groups, const float* gy, const float* w, float* gx) {
  const int64_t ci = groups, co = groups * s.co;
  parallel_for(s.n * s.h, row_grain(s, s.w, co), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t img = r / s.h, iy = r % s.h;
      for (int64_t ix = 0; ix < s.w; ++ix) {
        float* acc = gx + (r * s.w + ix) * ci;
        std::memset(acc, 0, sizeof(float) * ci);
        for (int64_t i = 0; i < s.kh; ++i) {
          const int64_t ty = iy + s.pt - i * s.dh;
          if (ty < 0 || ty % s.sh != 0 || ty / s.sh >= s.oh) continue;
          for (int64_t j = 0; j < s.kw; ++j) {
            const int64_t tx = ix + s.pl - j * s.dw;
            if (tx < 0 || tx % s.sw != 0 || tx / s.sw >= s.ow) continue;
            const float* g = gy + ((img * s.oh + ty / s.sh) * s.ow + tx / s.sw) * co;
            madd_reduce(acc, g, w + (i * s.kw + j) * co, groups, s.co);
          }
        }
      }
    }
  });
}

// Each thread sums its rows of output pixels into its own gw (KH·KW·C_out floats, a few KiB);
// the partials are added at the end in thread order.
void backward_weight(const ConvShape& s, int64_t groups, const float* x, const float* gy, float* gw) {
  const int64_t ci = groups, co = groups * s.co, size = s.kh * s.kw * co, rows = s.n * s.oh;
  const double flops = 2.0 * double(rows * s.ow) * double(size);
  const int nthreads = static_cast<int>(std::min<int64_t>(conv::threads_for(flops), std::max<int64_t>(rows, 1)));
  std::vector<float> partials(static_cast<size_t>(nthreads * size), 0.0f);
  run_on_threads(nthreads, [&](int tid) {
    float* acc = partials.data() + tid * size;
    for (int64_t r = rows * tid / nthreads; r < rows * (tid + 1) / nthreads; ++r) {
      const int64_t img = r / s.oh, oy = r % s.oh;
      for (int64_t ox = 0; ox < s.ow; ++ox) {
        const float* g = gy + (r * s.ow + ox) * co;
        for_taps_inside(s, oy, ox, [&](int64_t tap, int64_t iy, int64_t ix) {
          madd(acc + tap * co, x + ((img * s.h + iy) * s.w + ix) * ci, g, groups, s.co);
        });
      }
    }
  });
  std::memcpy(gw, partials.data(), sizeof(float) * size);
  for (int t = 1; t < nthreads; ++t)
    for (int64_t e = 0; e < size; ++e) gw[e] += partials[t * size + e];
}

}  // namespace

extern const DepthwiseKernels depthwise_kernels{forward, backward_input, backward_weight};

}  // namespace FG_ISA_NS
}  // namespace fusegrad
