// What the pooling .cu files share (pool.cu: max and average; pool_global.cu: global average):
// the thread layout's constants and launch shape and 32-bit division (channel-vector loads and
// stores: common/vec.cuh). One thread layout serves every kernel: threadIdx.x runs over the channel vectors of
// a pixel (float4 where C % 4 == 0 and every array is 16-byte aligned, single floats otherwise)
// and threadIdx.y over pixels. A warp then reads whole channel runs of neighbouring pixels:
// 16-byte loads, coalesced for any C, and every thread busy even when C is 1 or 3. Blocks walk
// the pixels in a grid-stride loop sized to fill the GPU once. Internal to those files (an
// unnamed namespace: each has its own copy).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "common/cuda_check.cuh"
#include "common/launch.cuh"
#include "common/vec.cuh"

namespace fusegrad::cuda {
namespace {

// 8 warps: 8 resident blocks fill a Hopper SM (2048 threads), and up to 256 channel vectors of one
// pixel fit in a block row.
constexpr int kThreads = 256;
// At least 4 resident blocks (1024 threads, half the SM) to keep enough loads in flight: caps the
// kernels at 64 registers.
constexpr int kMinBlocks = 4;
// Window positions a thread's loop takes per step: enough independent loads in flight to cover
// memory latency at that occupancy (a 2x2 window is one step).
constexpr int kUnroll = 4;

// ---- indexing ------------------------------------------------------------------------------------

// q / d, with q % d in rem: in 32 bits when both fit (a 64-bit division costs several 32-bit ones,
// and these run once per pixel).
__device__ __forceinline__ int64_t divmod(int64_t q, int64_t d, int64_t& rem) {
  if (((q | d) >> 31) == 0) {
    const uint32_t a = static_cast<uint32_t>(q), b = static_cast<uint32_t>(d), quot = a / b;
    rem = a - quot * b;
    return quot;
  }
  const int64_t quot = q / d;
  rem = q - quot * d;
  return quot;
}

__device__ __forceinline__ int64_t first_pixel() { return int64_t(blockIdx.x) * blockDim.y + threadIdx.y; }
__device__ __forceinline__ int64_t pixel_stride() { return int64_t(gridDim.x) * blockDim.y; }

// ---- launching -------------------------------------------------------------------------------------

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether the float4 kernels apply: C a multiple of 4 and every array 16-byte aligned.
inline bool vectorised(int64_t c, std::initializer_list<const void*> arrays) {
  if (c % 4 != 0) return false;
  for (const void* p : arrays)
    if (p != nullptr && !aligned16(p)) return false;
  return true;
}

// Block (channel vectors, pixels) and a grid that covers `pixels` once or fills the GPU.
struct PixelLaunch {
  dim3 grid, block;
};

inline PixelLaunch pixel_launch(int64_t pixels, int64_t vectors, int device) {
  const int tx = static_cast<int>(std::min<int64_t>(vectors, kThreads));
  const int ty = kThreads / tx;
  return {dim3(grid_for(pixels, ty, device)), dim3(tx, ty)};
}

}  // namespace
}  // namespace fusegrad::cuda
