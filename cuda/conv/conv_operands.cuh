// The convolutions' GEMM operands (the interface of cuda/gemm/operand.cuh): gathers that read x,
// the output gradient g or the weights where a K×L operand element lives, zeros for padding and
// for taps that miss the input. Four elements along the channel dimension are one 16-byte load
// when the channel count is a multiple of 4 and the array is 16-byte aligned (`vec`); otherwise,
// and at the edges, each element is found and loaded alone (first layers with C_in = 1 or 3).
//
// Groups (ConvDims): a pixel of x holds ci·groups channels and one of g co·groups, so pixels are
// that far apart; the batch item z of a forward or backward-input is the group, whose channels
// start z·ci (x) or z·co (g, w) into each pixel or weight row.
//
// Index arithmetic: a thread's l (a pixel, or a weight row) is fixed, so its coordinates are
// worked out once (Row); per step only k is split, into (tap, channel) or (image, oy, ox), with
// FastDivmod: a multiply-high and a shift instead of a 64-bit division (~70 instructions each,
// which would outnumber the step's 64 FMAs). GEMM row and K indices stay below 2^31
// (conv_index checks); offsets into the arrays are 64-bit.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "conv/conv.cuh"

namespace fusegrad::cuda {

// n / d and n % d for 0 <= n < 2^31 and a divisor 1 <= d < 2^31 fixed on the host: q =
// umulhi(n, m) >> s with m = ceil(2^(31+l) / d), l = ceil(log2 d) (CUTLASS's FastDivmod).
struct FastDivmod {
  uint32_t d = 1, mul = 0, shift = 0;
  FastDivmod() = default;
  explicit FastDivmod(int64_t divisor) : d(static_cast<uint32_t>(divisor)) {
    if (d == 1) return;
    uint32_t log2 = 0;
    while ((uint64_t{1} << log2) < d) ++log2;
    const uint64_t p = 31 + log2;
    mul = static_cast<uint32_t>(((uint64_t{1} << p) + d - 1) / d);
    shift = static_cast<uint32_t>(p - 32);
  }
  __device__ __forceinline__ int div(int64_t n) const {
    return d == 1 ? static_cast<int>(n) : static_cast<int>(__umulhi(static_cast<uint32_t>(n), mul) >> shift);
  }
  __device__ __forceinline__ void divmod(int64_t n, int& q, int& r) const {
    q = div(n);
    r = static_cast<int>(n) - q * static_cast<int>(d);
  }
};

// ConvDims with the divisors the gathers use.
struct ConvIndex {
  ConvDims d;
  FastDivmod ci, co, kw, oh, ow, h, w, sh, sw;
};

// Host: the index helpers for d, or std::invalid_argument when an index the gathers split would
// reach 2^31 (pixel counts N·H·W, N·OH·OW, depths KH·KW·C, and all groups' C_out, the weight's
// row stride).
inline ConvIndex conv_index(const ConvDims& d) {
  const int64_t limit = int64_t{1} << 31;
  const int64_t sizes[] = {d.n * d.h * d.w, d.n * d.oh * d.ow, d.kh * d.kw * d.ci, d.kh * d.kw * d.co, d.co * d.groups};
  for (const int64_t v : sizes)
    if (v >= limit)
      throw std::invalid_argument("conv: " + std::to_string(v) +
                                  " pixels or taps x channels are more than the CUDA kernels index (2^31 - 1)");
  ConvIndex c;
  c.d = d;
  c.ci = FastDivmod(d.ci > 0 ? d.ci : 1), c.co = FastDivmod(d.co > 0 ? d.co : 1), c.kw = FastDivmod(d.kw > 0 ? d.kw : 1);
  c.oh = FastDivmod(d.oh > 0 ? d.oh : 1), c.ow = FastDivmod(d.ow > 0 ? d.ow : 1);
  c.h = FastDivmod(d.h > 0 ? d.h : 1), c.w = FastDivmod(d.w > 0 ? d.w : 1);
  // The strides divide ty = y + pt − ky·dh <= H − 1 + pt (and likewise along x): a stride past
  // that bound gives quotient 0 and remainder ty, as the bound itself does, which keeps every
  // divisor below 2^31 (strides may be up to 2^62).
  const auto capped = [](int64_t stride, int64_t bound) {
    return FastDivmod(std::max<int64_t>(1, std::min({stride, bound, limit - 1})));
  };
  c.sh = capped(d.sh, d.h + d.pt), c.sw = capped(d.sw, d.w + d.pl);
  return c;
}

// Forward A, K×M: element (k = (ky, kx, ci), m = (img, oy, ox)) = x[img, oy·sh−pt+ky·dh, ox·sw−pl+kx·dw, ci].
struct Im2colOperand {
  static constexpr bool kKContig = true;
  ConvIndex c;
  const float* x;
  bool vec;  // C_in % 4 == 0 and x 16-byte aligned: four k of one tap are one float4

  // Only the output pixel: its image and coordinates are split out again each step (two
  // FastDivmods), which kept the 128-register SimtLarge kernel free of spills where holding
  // them did not.
  struct Row {
    int m;  // the output pixel, or -1 past the last one
  };
  __device__ __forceinline__ Row row(int64_t m) const {
    return {m < c.d.n * c.d.oh * c.d.ow ? static_cast<int>(m) : -1};
  }
  // x at depth k (tap, channel) for output pixel (img, oy, ox) = row.m, or null in the padding
  __device__ __forceinline__ const float* at(const float* image, int iy0, int ix0, int64_t k) const {
    int tap, ch, ky, kx;
    c.ci.divmod(k, tap, ch);
    c.kw.divmod(tap, ky, kx);
    const int64_t iy = iy0 + ky * c.d.dh, ix = ix0 + kx * c.d.dw;
    return iy >= 0 && iy < c.d.h && ix >= 0 && ix < c.d.w ? image + (iy * c.d.w + ix) * c.d.ci * c.d.groups + ch
                                                          : nullptr;
  }
  __device__ __forceinline__ float4 load4(const Row& r, int64_t z, int64_t k, int64_t k_end) const {
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (r.m < 0) return v;
    int rest, ox, img, oy;
    c.ow.divmod(r.m, rest, ox);
    c.oh.divmod(rest, img, oy);
    const float* image = x + (img * c.d.h * c.d.w * c.d.groups + z) * c.d.ci;
    const int iy0 = static_cast<int>(oy * c.d.sh - c.d.pt), ix0 = static_cast<int>(ox * c.d.sw - c.d.pl);
    if (vec && k + 4 <= k_end) {
      const float* p = at(image, iy0, ix0, k);
      return p ? *reinterpret_cast<const float4*>(p) : v;
    }
    float e[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float* p = k + i < k_end ? at(image, iy0, ix0, k + i) : nullptr;
      if (p) e[i] = *p;
    }
    return make_float4(e[0], e[1], e[2], e[3]);
  }
};

// Forward B, K×C_out: w read as its (KH·KW·C_in) × C_out row-major matrix (group z: columns
// z·co on of rows ld = co·groups apart). The same as a StridedOperand, with its row kept as a
// 32-bit column (C_out < 2^31), which is what kept the forward kernel's SimtLarge instantiation
// within 128 registers.
struct WeightOperand {
  static constexpr bool kKContig = false;
  const float* w;
  int co, ld;  // one group's columns; the row stride, C_out of all groups (< 2^31 too)
  bool vec;    // C_out % 4 == 0 and w 16-byte aligned

  struct Row {
    int col;
  };
  __device__ __forceinline__ Row row(int64_t col) const { return {static_cast<int>(col < co ? col : co)}; }
  __device__ __forceinline__ float4 load4(const Row& r, int64_t z, int64_t k, int64_t k_end) const {
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const int live = k < k_end ? min(co - r.col, 4) : 0;
    const float* p = w + k * ld + z * co + r.col;
    if (vec && live == 4) return *reinterpret_cast<const float4*>(p);
    if (live > 0) v.x = p[0];
    if (live > 1) v.y = p[1];
    if (live > 2) v.z = p[2];
    if (live > 3) v.w = p[3];
    return v;
  }
};

// Backward-input A, K×M: element (k = (ky, kx, co), m = (img, y, x)) = g[img, oy, ox, co] where
// oy·sh = y + pt − ky·dh (and likewise ox), 0 where that has no integer solution in range.
struct DgradOperand {
  static constexpr bool kKContig = true;
  ConvIndex c;
  const float* g;
  bool vec;  // C_out % 4 == 0 and g 16-byte aligned

  struct Row {
    const float* image;  // g[img], or null past the last input pixel
    int ty0, tx0;        // y + pt, x + pl
  };
  __device__ __forceinline__ Row row(int64_t m) const {
    if (m >= c.d.n * c.d.h * c.d.w) return {nullptr, 0, 0};
    int rest, x, img, y;
    c.w.divmod(m, rest, x);
    c.h.divmod(rest, img, y);
    return {g + img * c.d.oh * c.d.ow * c.d.co * c.d.groups, static_cast<int>(y + c.d.pt),
            static_cast<int>(x + c.d.pl)};
  }
  // g at depth k for the pixel of r, image the group's first channel of r's image.
  __device__ __forceinline__ const float* at(const float* image, const Row& r, int64_t k) const {
    int tap, ch, ky, kx, oy, ox, ry, rx;
    c.co.divmod(k, tap, ch);
    c.kw.divmod(tap, ky, kx);
    const int ty = r.ty0 - ky * static_cast<int>(c.d.dh), tx = r.tx0 - kx * static_cast<int>(c.d.dw);
    if (ty < 0 || tx < 0) return nullptr;
    c.sh.divmod(ty, oy, ry);
    c.sw.divmod(tx, ox, rx);
    return ry == 0 && rx == 0 && oy < c.d.oh && ox < c.d.ow ? image + (oy * c.d.ow + ox) * c.d.co * c.d.groups + ch
                                                            : nullptr;
  }
  __device__ __forceinline__ float4 load4(const Row& r, int64_t z, int64_t k, int64_t k_end) const {
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (r.image == nullptr) return v;
    const float* image = r.image + z * c.d.co;
    if (vec && k + 4 <= k_end) {
      const float* p = at(image, r, k);
      return p ? *reinterpret_cast<const float4*>(p) : v;
    }
    float e[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float* p = k + i < k_end ? at(image, r, k + i) : nullptr;
      if (p) e[i] = *p;
    }
    return make_float4(e[0], e[1], e[2], e[3]);
  }
};

// Backward-input B, K×C_in: element (k = (ky, kx, co), ci) = w[ky, kx, ci, z·co + co] for group
// z: contiguous along k within a tap.
struct DgradWeightOperand {
  static constexpr bool kKContig = true;
  ConvIndex c;
  const float* w;
  bool vec;  // C_out % 4 == 0 and w 16-byte aligned

  struct Row {
    const float* column;  // w[0, 0, ci], or null past the last input channel
  };
  __device__ __forceinline__ Row row(int64_t ci) const {
    return {ci < c.d.ci ? w + ci * c.d.co * c.d.groups : nullptr};
  }
  __device__ __forceinline__ const float* at(const float* column, int64_t k) const {
    int tap, ch;
    c.co.divmod(k, tap, ch);
    return column + tap * c.d.ci * c.d.co * c.d.groups + ch;
  }
  __device__ __forceinline__ float4 load4(const Row& r, int64_t z, int64_t k, int64_t k_end) const {
    if (r.column == nullptr) return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float* column = r.column + z * c.d.co;
    if (vec && k + 4 <= k_end) return *reinterpret_cast<const float4*>(at(column, k));
    float e[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (k + i < k_end) e[i] = *at(column, k + i);
    return make_float4(e[0], e[1], e[2], e[3]);
  }
};

// Backward-weight A, K×M: element (k = (img, oy, ox), m = (ky, kx, ci)) = x[img, oy·sh−pt+ky·dh,
// ox·sw−pl+kx·dw, ci]: contiguous along m (ci) within a tap. Its batch items are K splits, so a
// group's x is the pointer the host passes (already offset to the group's first channel).
struct WgradOperand {
  static constexpr bool kKContig = false;
  ConvIndex c;
  const float* x;
  bool vec;  // C_in % 4 == 0 and x 16-byte aligned

  struct Row {
    int64_t m;     // the first of the four rows of dw
    int dy, dx;    // ky·dh − pt, kx·dw − pl of that row's tap
    int ch, live;  // its channel; how many of the four rows exist (0 to 4)
  };
  __device__ __forceinline__ Row row(int64_t m) const {
    const int64_t rows = c.d.kh * c.d.kw * c.d.ci;
    Row r{m, 0, 0, 0, static_cast<int>(m >= rows ? 0 : rows - m >= 4 ? 4 : rows - m)};
    if (r.live == 0) return r;
    int tap, ky, kx;
    c.ci.divmod(m, tap, r.ch);
    c.kw.divmod(tap, ky, kx);
    r.dy = static_cast<int>(ky * c.d.dh - c.d.pt), r.dx = static_cast<int>(kx * c.d.dw - c.d.pl);
    return r;
  }
  __device__ __forceinline__ float4 load4(const Row& r, int64_t, int64_t k, int64_t k_end) const {
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (r.live == 0 || k >= k_end) return v;
    int rest, ox, img, oy;
    c.ow.divmod(k, rest, ox);
    c.oh.divmod(rest, img, oy);
    const int64_t iy0 = oy * c.d.sh, ix0 = ox * c.d.sw;
    const int64_t cs = c.d.ci * c.d.groups;  // floats from one pixel to the next
    const float* image = x + img * c.d.h * c.d.w * cs;
    if (vec && r.live == 4) {
      const int64_t iy = iy0 + r.dy, ix = ix0 + r.dx;
      if (iy >= 0 && iy < c.d.h && ix >= 0 && ix < c.d.w)
        v = *reinterpret_cast<const float4*>(image + (iy * c.d.w + ix) * cs + r.ch);
      return v;
    }
    float e[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (i >= r.live) break;
      int tap, ch, ky, kx;
      c.ci.divmod(r.m + i, tap, ch);
      c.kw.divmod(tap, ky, kx);
      const int64_t iy = iy0 + ky * c.d.dh - c.d.pt, ix = ix0 + kx * c.d.dw - c.d.pl;
      if (iy >= 0 && iy < c.d.h && ix >= 0 && ix < c.d.w) e[i] = image[(iy * c.d.w + ix) * cs + ch];
    }
    return make_float4(e[0], e[1], e[2], e[3]);
  }
};

}  // namespace fusegrad::cuda
