// The convolutions' GEMM operands (the interface of cuda/gemm/operand.cuh): gathers that read x,
// the output gradient g or the weights where a K×L operand element lives, zeros for padding and
// for taps that miss the input. Four elements along the channel dimension are one 16-byte load
// when the channel count is a multiple of 4 and the array is 16-byte aligned (`vec`); otherwise,
// and at the edges, each element is found and loaded alone (first layers with C_in = 1 or 3).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "conv/conv.cuh"

namespace fusegrad::cuda {

// x[img, iy, ix, c], or 0 outside the image.
__device__ __forceinline__ float pixel(const ConvDims& d, const float* x, int64_t img, int64_t iy, int64_t ix, int64_t c) {
  return iy >= 0 && iy < d.h && ix >= 0 && ix < d.w ? x[((img * d.h + iy) * d.w + ix) * d.ci + c] : 0.0f;
}

// Forward A, K×M: element (k = (ky, kx, ci), m = (img, oy, ox)) = x[img, oy·sh−pt+ky·dh, ox·sw−pl+kx·dw, ci].
struct Im2colOperand {
  static constexpr bool kKContig = true;
  ConvDims d;
  const float* x;
  bool vec;  // C_in % 4 == 0 and x 16-byte aligned: four k of one tap are one float4

  __device__ __forceinline__ float4 load4(int64_t, int64_t k, int64_t m, int64_t k_end) const {
    float4 r = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (m >= d.n * d.oh * d.ow) return r;
    const int64_t ox = m % d.ow, rest = m / d.ow, oy = rest % d.oh, img = rest / d.oh;
    const int64_t iy0 = oy * d.sh - d.pt, ix0 = ox * d.sw - d.pl;
    if (vec && k + 4 <= k_end) {
      const int64_t tap = k / d.ci, c = k % d.ci, iy = iy0 + tap / d.kw * d.dh, ix = ix0 + tap % d.kw * d.dw;
      if (iy >= 0 && iy < d.h && ix >= 0 && ix < d.w)
        r = *reinterpret_cast<const float4*>(x + ((img * d.h + iy) * d.w + ix) * d.ci + c);
      return r;
    }
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t kk = k + e, tap = kk / d.ci;
      if (kk < k_end) v[e] = pixel(d, x, img, iy0 + tap / d.kw * d.dh, ix0 + tap % d.kw * d.dw, kk % d.ci);
    }
    return make_float4(v[0], v[1], v[2], v[3]);
  }
};

// Backward-input A, K×M: element (k = (ky, kx, co), m = (img, y, x)) = g[img, oy, ox, co] where
// oy·sh = y + pt − ky·dh (and likewise ox), 0 where that has no integer solution in range.
struct DgradOperand {
  static constexpr bool kKContig = true;
  ConvDims d;
  const float* g;
  bool vec;  // C_out % 4 == 0 and g 16-byte aligned

  // The offset of g[img, oy, ox, 0] for tap (ky, kx) of pixel (img, y, x), or -1.
  __device__ __forceinline__ int64_t source(int64_t img, int64_t y, int64_t x, int64_t tap) const {
    const int64_t ty = y + d.pt - tap / d.kw * d.dh, tx = x + d.pl - tap % d.kw * d.dw;
    if (ty < 0 || tx < 0 || ty % d.sh != 0 || tx % d.sw != 0) return -1;
    const int64_t oy = ty / d.sh, ox = tx / d.sw;
    return oy < d.oh && ox < d.ow ? ((img * d.oh + oy) * d.ow + ox) * d.co : -1;
  }
  __device__ __forceinline__ float4 load4(int64_t, int64_t k, int64_t m, int64_t k_end) const {
    float4 r = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (m >= d.n * d.h * d.w) return r;
    const int64_t x = m % d.w, rest = m / d.w, y = rest % d.h, img = rest / d.h;
    if (vec && k + 4 <= k_end) {
      const int64_t at = source(img, y, x, k / d.co);
      if (at >= 0) r = *reinterpret_cast<const float4*>(g + at + k % d.co);
      return r;
    }
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t kk = k + e;
      const int64_t at = kk < k_end ? source(img, y, x, kk / d.co) : -1;
      if (at >= 0) v[e] = g[at + kk % d.co];
    }
    return make_float4(v[0], v[1], v[2], v[3]);
  }
};

// Backward-input B, K×C_in: element (k = (ky, kx, co), ci) = w[ky, kx, ci, co]: contiguous along
// k within a tap.
struct DgradWeightOperand {
  static constexpr bool kKContig = true;
  ConvDims d;
  const float* w;
  bool vec;  // C_out % 4 == 0 and w 16-byte aligned

  __device__ __forceinline__ float4 load4(int64_t, int64_t k, int64_t ci, int64_t k_end) const {
    float4 r = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (ci >= d.ci) return r;
    if (vec && k + 4 <= k_end) return *reinterpret_cast<const float4*>(w + (k / d.co * d.ci + ci) * d.co + k % d.co);
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t kk = k + e;
      if (kk < k_end) v[e] = w[(kk / d.co * d.ci + ci) * d.co + kk % d.co];
    }
    return make_float4(v[0], v[1], v[2], v[3]);
  }
};

// Backward-weight A, K×M: element (k = (img, oy, ox), m = (ky, kx, ci)) = x[img, oy·sh−pt+ky·dh,
// ox·sw−pl+kx·dw, ci]: contiguous along m (ci) within a tap.
struct WgradOperand {
  static constexpr bool kKContig = false;
  ConvDims d;
  const float* x;
  bool vec;  // C_in % 4 == 0 and x 16-byte aligned

  __device__ __forceinline__ float4 load4(int64_t, int64_t k, int64_t m, int64_t k_end) const {
    float4 r = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const int64_t rows = d.kh * d.kw * d.ci;
    if (k >= k_end || m >= rows) return r;
    const int64_t ox = k % d.ow, rest = k / d.ow, oy = rest % d.oh, img = rest / d.oh;
    const int64_t iy0 = oy * d.sh - d.pt, ix0 = ox * d.sw - d.pl;
    if (vec && m + 4 <= rows) {
      const int64_t tap = m / d.ci, iy = iy0 + tap / d.kw * d.dh, ix = ix0 + tap % d.kw * d.dw;
      if (iy >= 0 && iy < d.h && ix >= 0 && ix < d.w)
        r = *reinterpret_cast<const float4*>(x + ((img * d.h + iy) * d.w + ix) * d.ci + m % d.ci);
      return r;
    }
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t mm = m + e, tap = mm / d.ci;
      if (mm < rows) v[e] = pixel(d, x, img, iy0 + tap / d.kw * d.dh, ix0 + tap % d.kw * d.dw, mm % d.ci);
    }
    return make_float4(v[0], v[1], v[2], v[3]);
  }
};

}  // namespace fusegrad::cuda
