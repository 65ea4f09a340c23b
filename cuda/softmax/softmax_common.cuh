// What the softmax family's kernels share: vector loads, the reductions within a group of lanes and
// within a block, and the choice of the short-row configuration.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "common/launch.cuh"
#include "common/vec.cuh"

namespace fusegrad::cuda::softmax_detail {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr unsigned kFullMask = 0xffffffffu;

// Short rows (len <= kWarpRowMax) are held in the registers of one warp: 32 values per lane at most.
constexpr int64_t kWarpRowMax = 1024;
// Threads per block of the short-row kernels: 8 warps, 8 resident blocks fill a Hopper SM.
constexpr int kRowThreads = 256;
// Threads per block of the long-row kernels (a block per row): 16 warps, enough loads in flight
// per row without making the block reductions long.
constexpr int kBlockThreads = 512;
// Iterations of a strided loop over global memory unrolled together: four independent loads in
// flight per thread (16 with float4), enough to cover memory latency at these occupancies.
constexpr int kUnroll = 4;

template <int kW, class Smem>
__device__ __forceinline__ void load_shared(const Smem& smem, int64_t i, float (&r)[kW]) {
  if constexpr (kW == 4) {
    const float4 a = shared_as<float4>(smem)[i];
    r[0] = a.x, r[1] = a.y, r[2] = a.z, r[3] = a.w;
  } else {
    r[0] = smem[i];
  }
}

template <int kW, class Smem>
__device__ __forceinline__ void store_shared(const Smem& smem, int64_t i, const float (&r)[kW]) {
  if constexpr (kW == 4) shared_as<float4>(smem)[i] = make_float4(r[0], r[1], r[2], r[3]);
  else smem[i] = r[0];
}

// fmaxf skips NaN, as the CPU's row maximum does: a NaN surfaces in the exponentials instead.
struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct Sum {
  template <class T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Min {
  template <class T>
  __device__ T operator()(T a, T b) const { return b < a ? b : a; }
};

// Op over the kWidth lanes of a group (a power of two <= 32); every lane gets the result.
template <int kWidth, class T, class Op>
__device__ __forceinline__ T group_reduce(T v, Op op) {
#pragma unroll
  for (int off = kWidth / 2; off > 0; off /= 2) v = op(v, __shfl_xor_sync(kFullMask, v, off, kWidth));
  return v;
}

// Op over the whole (1-D) block, returned to every thread: butterflies within each warp, then every
// thread combines the warps' values in warp order, so all threads agree and the result does not
// depend on timing. Ends with a barrier, so the next call may reuse the scratch at once.
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T v, Op op) {
  FG_SHARED(T, scratch, [32]);
  v = group_reduce<32>(v, op);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  T r = scratch[0];
  for (unsigned w = 1; w < blockDim.x / 32; ++w) r = op(r, scratch[w]);
  __syncthreads();
  return r;
}

// ---- online softmax statistics ---------------------------------------------------------------------
// (m, s): the largest value seen and the sum of exp(x - m) over the values seen, so one pass over
// the data gives both. In the exponents a max of -inf (nothing but -inf seen yet) counts as 0, so
// -inf - -inf never makes a NaN; a NaN value makes s NaN, and fmaxf skips it in m, as the CPU's
// row maximum does, so rows come out as the CPU's three-pass kernels give them (NaN included).

__device__ __forceinline__ float exponent_base(float m) { return m == kNegInf ? 0.0f : m; }

// Adds kW values. The sum is rescaled only when the max grows: one exponential per value.
template <int kW>
__device__ __forceinline__ void online_add(float& m, float& s, const float (&a)[kW]) {
  float top = m;
#pragma unroll
  for (int l = 0; l < kW; ++l) top = fmaxf(top, a[l]);
  if (top > m) s *= expf(m - top), m = top;
  const float base = exponent_base(m);
#pragma unroll
  for (int l = 0; l < kW; ++l) s += expf(a[l] - base);
}

// (m, s) combined with (m2, s2).
__device__ __forceinline__ void online_merge(float& m, float& s, float m2, float s2) {
  const float top = fmaxf(m, m2), base = exponent_base(top);
  s = s * expf(m - base) + s2 * expf(m2 - base);
  m = top;
}

// (m, s) over the whole (1-D) block, returned to every thread: butterflies within each warp, then
// every thread merges the warps' pairs in warp order (a fixed order: all threads agree). Ends with
// a barrier, so the scratch may be reused at once.
__device__ __forceinline__ void block_merge(float& m, float& s) {
  FG_SHARED(float, warp_m, [32]);
  FG_SHARED(float, warp_s, [32]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    const float m2 = __shfl_xor_sync(kFullMask, m, off), s2 = __shfl_xor_sync(kFullMask, s, off);
    online_merge(m, s, m2, s2);
  }
  if (threadIdx.x % 32 == 0) warp_m[threadIdx.x / 32] = m, warp_s[threadIdx.x / 32] = s;
  __syncthreads();
  m = warp_m[0], s = warp_s[0];
  for (unsigned w = 1; w < blockDim.x / 32; ++w) online_merge(m, s, warp_m[w], warp_s[w]);
  __syncthreads();
}

template <int N>
using Int = std::integral_constant<int, N>;

// Calls f(Int<kWidth>, Int<kPer>) for a short row of `len` (1..kWarpRowMax) elements: kWidth lanes
// (a power of two up to 32) hold kPer values each, kWidth * kPer the next power of two >= len.
// Rows of up to 16 elements share a warp (32 / kWidth rows), so their lanes are not left idle.
template <class F>
void with_row_config(int64_t len, F&& f) {
  if (len <= 1) f(Int<1>{}, Int<1>{});
  else if (len <= 2) f(Int<2>{}, Int<1>{});
  else if (len <= 4) f(Int<4>{}, Int<1>{});
  else if (len <= 8) f(Int<8>{}, Int<1>{});
  else if (len <= 16) f(Int<16>{}, Int<1>{});
  else if (len <= 32) f(Int<32>{}, Int<1>{});
  else if (len <= 64) f(Int<32>{}, Int<2>{});
  else if (len <= 128) f(Int<32>{}, Int<4>{});
  else if (len <= 256) f(Int<32>{}, Int<8>{});
  else if (len <= 512) f(Int<32>{}, Int<16>{});
  else f(Int<32>{}, Int<32>{});
}

}  // namespace fusegrad::cuda::softmax_detail
