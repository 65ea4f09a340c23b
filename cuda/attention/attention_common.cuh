// What the attention kernels share: the kernel-side problem, the tiling constants, the score
// bias (mask + causal + bounds), the dropout bits (philox.h, the CPU's generator) and the
// cooperative tile loads. See attention_forward.cu for the layout these serve.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <mutex>
#include <set>
#include <type_traits>
#include <utility>

#include "attention/attention.cuh"
#include "attention/philox.h"  // cpp/attention/philox.h: __host__ __device__ under nvcc
#include "common/cuda_check.cuh"
#include "common/launch.cuh"

namespace fusegrad::cuda::attention_detail {

constexpr int kWarps = 4, kThreads = kWarps * 32;
// Keys (forward, dQ) or queries (dK/dV) streamed through shared memory per step: one per lane.
constexpr int kTile = 32;
constexpr float kNegInf = -INFINITY;
constexpr int kMaxD = 256;

// AttentionArgs as the kernels take it (by value), with dropout's threshold and scale folded in.
struct Params {
  const float* q;
  const float* k;
  const float* v;
  int64_t heads, sq, sk;
  int d;
  float scale;
  bool causal;
  const float* mask;
  int64_t mask_sb, mask_sh, mask_si;
  bool dropout;
  uint32_t threshold;  // philox::threshold(p): keep iff the word >= threshold
  float keep_scale;    // 1 / (1 - p)
  uint64_t seed;
};

inline Params make_params(const AttentionArgs& a, const float* q, const float* k, const float* v) {
  Params p{q, k, v, a.heads, a.sq, a.sk, static_cast<int>(a.d), a.scale, a.causal, a.mask, a.mask_sb, a.mask_sh,
           a.mask_si, a.dropout_p > 0.0f, philox::threshold(a.dropout_p), 1.0f / (1.0f - a.dropout_p), a.seed};
  return p;
}

// Rows a warp owns and d-columns a lane owns: D up to 64 takes 16 rows per warp (64 per CTA),
// up to 128 takes 8 and up to 256 takes 4, so the per-lane accumulators stay near 32-64 floats.
template <int kDPL>
constexpr int rows_per_warp() {
  return kDPL <= 2 ? 16 : (kDPL <= 4 ? 8 : 4);
}

// The additive term of score (i, j) of head (b, h): the mask, -inf where causal forbids it, and
// -inf outside the problem (rows and keys past the ends of a partial tile).
__device__ __forceinline__ float score_bias(const Params& p, int64_t b, int64_t h, int64_t i, int64_t j) {
  if (i >= p.sq || j >= p.sk || (p.causal && j > i)) return kNegInf;
  return p.mask ? p.mask[b * p.mask_sb + h * p.mask_sh + i * p.mask_si + j] : 0.0f;
}

// Dropout keep bits when a warp owns kRows queries row0.. and lane L holds key j0 + L (j0 % 4 == 0):
// bit r = keep(query row0 + r, key j0 + lane). One Philox call serves four keys, so lane L draws
// (query row0 + 4t + L / 8, keys j0 + 4 (L % 8) ..) for t < kRows / 4 and the bits are shuffled to
// the lanes that hold those keys: kRows / 4 calls per lane instead of kRows.
template <int kRows>
__device__ __forceinline__ uint32_t keep_bits_query_rows(const Params& p, int64_t b, int64_t h, int64_t row0,
                                                         int64_t j0, int lane) {
  static_assert(kRows % 4 == 0, "rows per warp must be a multiple of 4");
  unsigned words[kRows / 4];
#pragma unroll
  for (int t = 0; t < kRows / 4; ++t)
    words[t] = philox::keep4(p.seed, b, h, row0 + 4 * t + lane / 8, j0 / 4 + lane % 8, p.threshold);
  uint32_t bits = 0;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const unsigned w = __shfl_sync(0xffffffffu, words[r / 4], (r % 4) * 8 + lane / 4);
    bits |= ((w >> (lane % 4)) & 1u) << r;
  }
  return bits;
}

// The same when a warp owns kRows keys j0.. (j0 % 4 == 0) and the lane holds query i:
// bit r = keep(query i, key j0 + r), four keys per Philox call, no exchange needed.
template <int kRows>
__device__ __forceinline__ uint32_t keep_bits_key_rows(const Params& p, int64_t b, int64_t h, int64_t i, int64_t j0) {
  uint32_t bits = 0;
#pragma unroll
  for (int t = 0; t < kRows / 4; ++t) bits |= philox::keep4(p.seed, b, h, i, j0 / 4 + t, p.threshold) << (4 * t);
  return bits;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Shared-memory rows hold D padded to a multiple of 4 with zeros (dp), so the dot products read
// float4s whatever D is. Tiles a lane reads a row of (lane-owned rows) get a leading dimension of an
// odd number of float4s (kv_ld): the 8 lanes of a 16-byte load phase then hit 8 different bank
// groups. Tiles read by broadcast or by consecutive lanes use dp.
__host__ __device__ __forceinline__ int padded(int64_t d) { return static_cast<int>((d + 3) / 4 * 4); }
__host__ __device__ __forceinline__ int kv_ld(int64_t d) { return (padded(d) / 4 | 1) * 4; }

// rows x d floats of a (.., d) row-major array into shared memory rows of ld floats (columns d..dp
// zeroed), by the whole block (consecutive threads take consecutive floats: coalesced); rows at or
// past `valid` are zeros. S is float* under nvcc and the emulator's checked span.
template <class S>
__device__ __forceinline__ void load_tile(S dst, int ld, const float* src, int64_t valid, int rows, int d) {
  const int dp = padded(d);
  for (int t = threadIdx.x; t < rows * dp; t += blockDim.x) {
    const int r = t / dp, c = t - r * dp;
    dst[r * ld + c] = r < valid && c < d ? src[int64_t(r) * d + c] : 0.0f;
  }
}

// The float4 at shared offset `at` (a multiple of 4 floats).
template <class S>
__device__ __forceinline__ float4 lds4(S base, int at) {
  return shared_as<float4>(base + at)[0];
}

__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  return fmaf(a.w, b.w, fmaf(a.z, b.z, fmaf(a.y, b.y, fmaf(a.x, b.x, acc))));
}

// acc[r][c] += p[r] (4 consecutive streamed rows t..t+3, as a float4) times rows[t..t+3][c]:
// the accumulation step of every kernel, kRows x kDPL x 4 FMAs per kRows + 4 kDPL shared loads.
template <int kRows, int kDPL, class S, class P>
__device__ __forceinline__ void accumulate4(float (&acc)[kRows][kDPL], P strip, int t, S rows, int ld, int d,
                                            int lane) {
  float col[4][kDPL];
#pragma unroll
  for (int u = 0; u < 4; ++u)
#pragma unroll
    for (int c = 0; c < kDPL; ++c) col[u][c] = lane + 32 * c < d ? rows[(t + u) * ld + lane + 32 * c] : 0.0f;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float4 p = lds4(strip, r * kTile + t);
#pragma unroll
    for (int c = 0; c < kDPL; ++c)
      acc[r][c] = fmaf(p.w, col[3][c], fmaf(p.z, col[2][c], fmaf(p.y, col[1][c], fmaf(p.x, col[0][c], acc[r][c]))));
  }
}

// fn(std::integral_constant<int, kDPL>) with kDPL = ceil(d / 32), the d-columns per lane.
template <class Fn>
void with_columns(int64_t d, Fn&& fn) {
  switch ((d + 31) / 32) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 5: fn(std::integral_constant<int, 5>{}); break;
    case 6: fn(std::integral_constant<int, 6>{}); break;
    case 7: fn(std::integral_constant<int, 7>{}); break;
    default: fn(std::integral_constant<int, 8>{}); break;
  }
}

// Lets `kernel` use `bytes` of dynamic shared memory (over the default 48 KiB), once per kernel and
// device; callers pass the most that kernel's instantiation can ask for.
inline void allow_smem(const void* kernel, size_t bytes, int device) {
  if (bytes <= 48 * 1024) return;
  static std::mutex mutex;
  static std::set<std::pair<const void*, int>> done;
  std::lock_guard<std::mutex> lock(mutex);
  if (done.count({kernel, device})) return;
  FG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  done.insert({kernel, device});
}

}  // namespace fusegrad::cuda::attention_detail
